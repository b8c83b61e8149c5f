# The summary table and one comparison figure per slide.


rule summary:
    input:
        summary_inputs,
    output:
        f"{OUT}/summary.csv",
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    conda:
        "../envs/base.yaml"
    params:
        targets=mask_targets(),
    script:
        "../scripts/summary.py"


rule figure:
    input:
        figure_inputs,
    output:
        pdf=f"{OUT}/figures/{{slide}}.pdf",
        png=f"{OUT}/figures/{{slide}}.png",
    log:
        "logs/figures/{slide}.log",
    benchmark:
        "benchmarks/figures/{slide}.tsv"
    conda:
        "../envs/base.yaml"
    params:
        layout=figure_layout,
    script:
        "../scripts/figure.py"
