# Mask jobs: one per (slide, chunk of tiles_per_job tiles, method); the model loads
# once per job, which writes one results file (masks, attributions, per-tile records).
# Picture jobs, one per chunk, draw every method's overlay and heatmap PNGs for the
# tiles `pictures` asks for (light: grouped on a cluster, see profiles/slurm). A mask job on CUDA declares gpu=1 and takes a GPU of
# its own: `--resources gpu=N` runs at most N at once, one per device.


rule masks:
    input:
        table=LAYOUT.tile_table("{slide}"),
        tiles=LAYOUT.tile_dir("{slide}"),
        model=config["model"]["path"],
    output:
        LAYOUT.mask_file("{slide}", "{chunk}", "{method}"),
    log:
        LAYOUT.log("masks/{slide}/{chunk}/{method}"),
    benchmark:
        LAYOUT.benchmark("masks/{slide}/{chunk}/{method}")
    conda:
        MASK_ENV
    threads: config["threads"]
    resources:
        mem_mb=config["mask_resources"]["mem_mb"],
        runtime=config["mask_resources"]["runtime"],
        gpu=MASK_GPU,
    params:
        tile_file=LAYOUT.tile_chunk("{slide}", "{chunk}"),
        method=mask_method,
        class_idx=config["model"]["class_idx"],
        device=config["device"],
        engine=config["engine"],
        load_options=model_options(config),
        save_raw=config["save_raw"],
    script:
        "../scripts/masks.py"


rule pictures:
    input:
        table=LAYOUT.tile_table("{slide}"),
        tiles=LAYOUT.tile_dir("{slide}"),
        masks=chunk_masks,
    output:
        overlays=directory(LAYOUT.picture_dir("overlays", "{slide}", "{chunk}")),
        heatmaps=directory(LAYOUT.picture_dir("heatmaps", "{slide}", "{chunk}")),
    log:
        LAYOUT.log("pictures/{slide}/{chunk}"),
    benchmark:
        LAYOUT.benchmark("pictures/{slide}/{chunk}")
    group:
        "pictures"
    conda:
        "../envs/base.yaml"
    params:
        method_ids=PLAN.method_ids,
        limit=picture_limit(),
        cmap=config["figure"]["cmap"],
        alpha=config["figure"]["alpha"],
    script:
        "../scripts/pictures.py"
