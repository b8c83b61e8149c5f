# Mask jobs: one per (slide, method, chunk of tiles_per_job tiles). The model loads
# once per job. Overlay jobs follow the same chunks.

for chunk_index, chunk in enumerate(PLAN.chunks):

    rule:
        name:
            f"masks_{chunk_index}"
        input:
            tiles=chunk_tile_pngs(chunk),
            model=config["model"]["path"],
        output:
            masks=chunk_paths(chunk, "masks", ".npy"),
            meta=chunk_paths(chunk, "masks", ".json"),
            raw=chunk_paths(chunk, "masks", ".raw.npy") if config["save_raw"] else [],
        log:
            f"logs/masks/{chunk.slide}/{{method}}/{chunk.label}.log",
        benchmark:
            f"benchmarks/masks/{chunk.slide}/{{method}}/{chunk.label}.tsv"
        conda:
            MASK_ENV
        threads: config["threads"]
        resources:
            mem_mb=config["mask_resources"]["mem_mb"],
            runtime=config["mask_resources"]["runtime"],
            gpu=MASK_GPU,
        params:
            method=method_json,
            class_idx=config["model"]["class_idx"],
            device=config["device"],
            engine=config["engine"],
            memory_budget_mb=config["memory_budget_mb"],
            preprocessing=config["model"]["preprocessing"],
        script:
            "../scripts/masks.py"

    rule:
        name:
            f"overlays_{chunk_index}"
        input:
            tiles=chunk_tile_pngs(chunk),
            masks=chunk_paths(chunk, "masks", ".npy"),
        output:
            overlays=chunk_paths(chunk, "overlays", ".png"),
            heatmaps=chunk_paths(chunk, "heatmaps", ".png"),
        log:
            f"logs/overlays/{chunk.slide}/{{method}}/{chunk.label}.log",
        benchmark:
            f"benchmarks/overlays/{chunk.slide}/{{method}}/{chunk.label}.tsv"
        conda:
            "../envs/base.yaml"
        script:
            "../scripts/overlays.py"
