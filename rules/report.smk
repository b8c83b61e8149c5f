# The summary table, one comparison figure and one overview per slide, and the methods
# paragraph with the report's captions. Outputs marked report() go into
# `snakemake --report results/report.html` with captions the methods job writes from
# the run's own parameters and versions.


rule summary:
    input:
        summary_inputs,
    output:
        csv=report(
            LAYOUT.summary("csv"),
            caption=caption("summary"),
            category="Tables",
            labels={"table": "summary"},
        ),
        parquet=LAYOUT.summary("parquet"),
    log:
        LAYOUT.log("summary"),
    benchmark:
        LAYOUT.benchmark("summary")
    conda:
        "../envs/base.yaml"
    params:
        tables=[LAYOUT.tile_table(slide) for slide in PLAN.slides],
        method_ids=PLAN.method_ids,
    script:
        "../scripts/summary.py"


rule figure:
    input:
        figure_inputs,
    output:
        report_figures(LAYOUT.figure("{slide}", "{ext}"), "figure", "Saliency maps"),
    log:
        LAYOUT.log("figures/{slide}"),
    benchmark:
        LAYOUT.benchmark("figures/{slide}")
    conda:
        "../envs/base.yaml"
    params:
        method_ids=[m.id for m in PLAN.figure_methods],
        method_titles=[m.title for m in PLAN.figure_methods],
        max_tiles=config["figure"]["max_tiles"],
        overlay=config["figure"]["overlay"],
        cmap=config["figure"]["cmap"],
        alpha=config["figure"]["alpha"],
        dpi=config["figure"]["dpi"],
    script:
        "../scripts/figure.py"


rule overview:
    input:
        unpack(overview_inputs),
    output:
        report_figures(
            LAYOUT.overview("{slide}", "{ext}"), "overview", "Slide overviews"
        ),
    log:
        LAYOUT.log("overview/{slide}"),
    benchmark:
        LAYOUT.benchmark("overview/{slide}")
    conda:
        "../envs/base.yaml"
    params:
        slide_path=slide_path,
        mpp=slide_mpp,
        method_ids=[m.id for m in PLAN.figure_methods],
        method_titles=[m.title for m in PLAN.figure_methods],
        mosaic=PLAN.dynamic or PLAN.slide_maps,
        cmap=config["slide_map" if PLAN.slide_maps else "figure"]["cmap"],
        dpi=config["figure"]["dpi"],
    script:
        "../scripts/overview.py"


rule methods_text:
    input:
        unpack(methods_text_inputs),
    output:
        methods=LAYOUT.methods_text(),
        captions=[LAYOUT.caption(name) for name in CAPTIONS],
    log:
        LAYOUT.log("methods_text"),
    benchmark:
        LAYOUT.benchmark("methods_text")
    conda:
        "../envs/base.yaml"
    params:
        names=CAPTIONS,
        class_idx=config["model"]["class_idx"],
        evaluate=config["evaluate"],
        figure={key: config["figure"][key] for key in ("overlay", "cmap", "alpha")},
    script:
        "../scripts/methods_text.py"
