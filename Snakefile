# slidegrad: saliency maps for whole-slide-image tile classifiers.
# slides × tiles × methods → masks, overlays, heatmaps, a summary table and one figure per slide.


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/tiles.smk"
include: "rules/masks.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,
