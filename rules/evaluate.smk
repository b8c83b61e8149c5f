# Evaluation (config `evaluate.metrics`; off while empty): one job per (slide, chunk)
# loads the model once and scores every method's masks of the chunk (deletion /
# insertion with their random-order chance, PIC, pointing, sanity, stability).
# Then evaluation.csv and one curves + metrics figure per slide.


rule evaluate:
    input:
        table=LAYOUT.tile_table("{slide}"),
        tiles=LAYOUT.tile_dir("{slide}"),
        model=config["model"]["path"],
        masks=chunk_masks,
    output:
        table=LAYOUT.evaluation_chunk("{slide}", "{chunk}", "csv"),
        curves=LAYOUT.evaluation_chunk("{slide}", "{chunk}", "npz"),
    log:
        LAYOUT.log("evaluate/{slide}/{chunk}"),
    benchmark:
        LAYOUT.benchmark("evaluate/{slide}/{chunk}")
    conda:
        MASK_ENV
    threads: config["threads"]
    resources:
        mem_mb=config["mask_resources"]["mem_mb"],
        runtime=config["mask_resources"]["runtime"],
        gpu=MASK_GPU,
    params:
        tile_file=LAYOUT.tile_chunk("{slide}", "{chunk}"),
        evaluation=PLAN.evaluate_params(),
        method_ids=PLAN.method_ids,
        device=config["device"],
        load_options=model_options(config),
    script:
        "../scripts/evaluate.py"


rule evaluation_table:
    input:
        evaluation_tables,
    output:
        report(
            LAYOUT.evaluation(),
            caption=caption("evaluation"),
            category="Tables",
            labels={"table": "evaluation"},
        ),
    log:
        LAYOUT.log("evaluation"),
    benchmark:
        LAYOUT.benchmark("evaluation")
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/evaluation_table.py"


rule evaluation_figure:
    input:
        tables=slide_evaluation_tables,
        curves=slide_evaluation_curves,
    output:
        report_figures(
            LAYOUT.evaluation_figure("{slide}", "{ext}"),
            "evaluation_figure",
            "Evaluation",
        ),
    log:
        LAYOUT.log("figures/evaluation/{slide}"),
    benchmark:
        LAYOUT.benchmark("figures/evaluation/{slide}")
    conda:
        "../envs/base.yaml"
    params:
        method_ids=PLAN.method_ids,
        method_titles=[m.title for m in PLAN.methods],
        dpi=config["figure"]["dpi"],
    script:
        "../scripts/evaluation_figure.py"
