# slidegrad: saliency maps for whole-slide-image tile classifiers.
# slides × tiles × methods → masks, a summary table, one figure and one overview per slide, slide-level
# saliency and prediction maps (grid mode), QuPath detections, the tiles' overlays and heatmaps;
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
include: "rules/slide_maps.smk"
include: "rules/report.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets,


# A failed run ends with one line per failed job, also in {outdir}/failures.csv; a successful
# run removes that file (see README, "When jobs fail").
onerror:
    from slidegrad.failures import report_failures

    report_failures(workflow, OUT, logger.error)


onsuccess:
    from slidegrad.failures import forget_failures

    forget_failures(OUT)
