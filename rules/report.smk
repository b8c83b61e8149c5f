# The summary table and one comparison figure per slide.


rule summary:
    input:
        summary_inputs,
    output:
        LAYOUT.summary(),
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
        pdf=LAYOUT.figure("{slide}", "pdf"),
        png=LAYOUT.figure("{slide}", "png"),
    log:
        LAYOUT.log("figures/{slide}"),
    benchmark:
        LAYOUT.benchmark("figures/{slide}")
    conda:
        "../envs/base.yaml"
    params:
        method_ids=PLAN.method_ids,
        method_titles=[m.title for m in PLAN.methods],
        max_tiles=config["figure_max_tiles"],
    script:
        "../scripts/figure.py"
