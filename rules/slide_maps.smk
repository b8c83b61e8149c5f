# Slide-level outputs (config `slide_map`): per slide and method, the saliency of every tile
# stitched into one map, scaled once for the whole slide (a pyramidal TIFF aligned with the
# slide, a PNG over its thumbnail); per slide, the prediction heatmap; and per slide the
# explained tiles as QuPath detections. Each job streams the slide's result files chunk by
# chunk, so its memory is the map's, not the slide's.


rule slide_map:
    input:
        unpack(slide_map_inputs),
    output:
        tiff=LAYOUT.slide_map("{slide}", "{method}", "tiff"),
        png=report(
            LAYOUT.slide_map("{slide}", "{method}", "png"),
            caption=caption("slide_map"),
            category="Slide maps",
            subcategory="{slide}",
            labels={"slide": "{slide}", "map": "{method}"},
        ),
        npz=LAYOUT.slide_map("{slide}", "{method}", "npz"),
    log:
        LAYOUT.log("slide_map/{slide}/{method}"),
    benchmark:
        LAYOUT.benchmark("slide_map/{slide}/{method}")
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=2000,
    params:
        slide_path=slide_path,
        mpp=slide_mpp,
        map_um=config["slide_map"]["map_um"],
        percentile=config["slide_map"]["percentile"],
        cmap=config["slide_map"]["cmap"],
        alpha=config["slide_map"]["alpha"],
    script:
        "../scripts/slide_map.py"


rule prediction_map:
    input:
        unpack(prediction_map_inputs),
    output:
        npz=LAYOUT.prediction_map("{slide}", "npz"),
        figures=report_figures(
            LAYOUT.prediction_map("{slide}", "{ext}"),
            "prediction_map",
            "Slide maps",
        ),
    log:
        LAYOUT.log("prediction_map/{slide}"),
    benchmark:
        LAYOUT.benchmark("prediction_map/{slide}")
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=2000,
    params:
        slide_path=slide_path,
        mpp=slide_mpp,
        method_id=PLAN.method_ids[0],
        scores=MODE == "top_k",
        map_um=config["slide_map"]["map_um"],
        dpi=config["figure"]["dpi"],
    script:
        "../scripts/prediction_map.py"


rule qupath:
    input:
        unpack(qupath_inputs),
    output:
        LAYOUT.qupath("{slide}"),
    log:
        LAYOUT.log("qupath/{slide}"),
    benchmark:
        LAYOUT.benchmark("qupath/{slide}")
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/qupath.py"
