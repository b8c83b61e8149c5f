# The embedded demo: two IHC slides built from skimage's sample image and a small
# DAB classifier trained on them. Used when config points at resources/demo/.


rule demo_slide:
    output:
        "resources/demo/slides/demo_{variant}.tiff",
    log:
        "logs/demo/slide_{variant}.log",
    benchmark:
        "benchmarks/demo/slide_{variant}.tsv"
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/demo_slide.py"


rule demo_model:
    input:
        expand("resources/demo/slides/demo_{variant}.tiff", variant=DEMO_VARIANTS),
    output:
        directory("resources/demo/model"),
    log:
        "logs/demo/model.log",
    benchmark:
        "benchmarks/demo/model.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        epochs=config["demo"]["epochs"],
        seed=config["demo"]["seed"],
    script:
        "../scripts/demo_model.py"


rule demo_keras_model:
    input:
        "resources/demo/model",
    output:
        directory("resources/demo/model_keras"),
    log:
        "logs/demo/model_keras.log",
    benchmark:
        "benchmarks/demo/model_keras.tsv"
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../scripts/demo_keras_model.py"
