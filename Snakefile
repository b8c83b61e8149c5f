# slidegrad: saliency maps for whole-slide-image tile classifiers.
# slides × tiles × methods → masks, overlays, heatmaps, a summary table and one figure per slide;
# with evaluate.metrics, evaluation.csv and one evaluation figure per slide.
#
# With no --configfile this runs the embedded demo (config.yaml). A user's config file
# replaces it entirely: fields it leaves out get the schema's defaults, not the demo's.


if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/tiles.smk"
include: "rules/masks.smk"
include: "rules/report.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets,
