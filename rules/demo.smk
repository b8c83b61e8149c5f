# The embedded demo: two IHC slides built from skimage's sample image and a small
# DAB classifier trained on them. Used when config points at resources/demo/: the demo's
# inputs, built once and shared by every outdir (their logs go to the run's outdir).


rule demo_slide:
    output:
        "resources/demo/slides/demo_{variant}.tiff",
    log:
        LAYOUT.log("demo/slide_{variant}"),
    benchmark:
        LAYOUT.benchmark("demo/slide_{variant}")
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
        LAYOUT.log("demo/model"),
    benchmark:
        LAYOUT.benchmark("demo/model")
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
        LAYOUT.log("demo/model_keras"),
    benchmark:
        LAYOUT.benchmark("demo/model_keras")
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../scripts/demo_keras_model.py"


rule demo_vit_model:
    input:
        expand("resources/demo/slides/demo_{variant}.tiff", variant=DEMO_VARIANTS),
    output:
        directory("resources/demo/vit"),
    log:
        LAYOUT.log("demo/vit"),
    benchmark:
        LAYOUT.benchmark("demo/vit")
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
        "../scripts/demo_vit_model.py"
