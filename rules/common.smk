# Input functions, wildcard constraints and the plan the DAG expands over.
# All logic lives in the slidegrad library (src/slidegrad); this file only asks it.
#
# Each rule's params: hold every value that changes its output, so Snakemake reruns
# exactly the jobs a config change affects. Values that change no output (threads,
# memory_budget_mb, which GPU a job takes) come from the config at run time and rerun
# nothing.
import math
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from slidegrad.devices import visible_gpu_count
from slidegrad.errors import InputError
from slidegrad.layout import Layout
from slidegrad.methods_text import CAPTIONS as CAPTION_TEXTS
from slidegrad.planning import build_plan, mask_gpus, model_options
from slidegrad.tables import CHUNK_NAME, SLIDE_NAME, table_chunks

try:
    PLAN = build_plan(config, open_slides=workflow.is_main_process)
except InputError as err:
    raise WorkflowError(f"slidegrad: error: {err}") from None
for warning in PLAN.warnings if workflow.is_main_process else []:
    logger.warning(f"slidegrad: warning: {warning}")

config = PLAN.config
OUT = config["outdir"]
LAYOUT = Layout(OUT)
MODE = PLAN.selection["mode"]
MASK_ENV = f"../envs/{PLAN.framework}.yaml"
DEMO_VARIANTS = ["a", "b"]
FORMATS = config["figure"]["formats"]
CAPTIONS = list(CAPTION_TEXTS)
MASK_GPU = mask_gpus(config, visible_gpu_count())


wildcard_constraints:
    slide=SLIDE_NAME,
    chunk=CHUNK_NAME,
    method="|".join(PLAN.method_ids),
    variant="|".join(DEMO_VARIANTS),
    ext="|".join(FORMATS),


def slide_chunks(slide):
    """Chunk labels of a slide's mask jobs (in grid/random/top_k mode, once its tiles checkpoint ran)."""
    if PLAN.dynamic:
        return table_chunks(checkpoints.tiles.get(slide=slide).output.table)
    return PLAN.static_chunks(slide)


def tiles_inputs(wildcards):
    """The slide (or .tfrecords file); the model when top_k scores tiles with it, or when
    tile_px/tile_um come from its params.json."""
    inputs = {"source": PLAN.slides[wildcards.slide].path}
    geometry_from_model = config["tile_px"] is None or config["tile_um"] is None
    if MODE == "top_k" or geometry_from_model:
        inputs["model"] = config["model"]["path"]
    return inputs


def tiles_params(wildcards):
    return PLAN.tiles_params(wildcards.slide)


def mask_method(wildcards):
    return PLAN.mask_method(wildcards.method)


def chunk_masks(wildcards):
    """A chunk's mask files, one per method (in method order)."""
    return [
        LAYOUT.mask_file(wildcards.slide, wildcards.chunk, m) for m in PLAN.method_ids
    ]


def slide_masks(slide, n_chunks=None):
    """Mask files of a slide's first ``n_chunks`` chunks (all: None), chunk by chunk."""
    return [
        LAYOUT.mask_file(slide, chunk, method)
        for chunk in slide_chunks(slide)[:n_chunks]
        for method in PLAN.method_ids
    ]


def figure_chunks():
    """How many of a slide's first chunks hold the tiles its figure shows (figure.max_tiles)."""
    return math.ceil(config["figure"]["max_tiles"] / config["tiles_per_job"])


def picture_limit():
    """The pictures jobs draw a slide's first this many tiles (None: every tile)."""
    return None if config["pictures"] == "all" else config["figure"]["max_tiles"]


def picture_chunks(slide):
    """The chunks pictures jobs run for (config pictures: figure, all or none)."""
    if config["pictures"] == "none":
        return []
    chunks = slide_chunks(slide)
    return chunks if config["pictures"] == "all" else chunks[: figure_chunks()]


def summary_inputs(wildcards):
    tables = [LAYOUT.tile_table(slide) for slide in PLAN.slides]
    return tables + [d for slide in PLAN.slides for d in slide_masks(slide)]


def caption(name):
    """A report caption the methods_text job writes (absolute: it lies under outdir, not beside the rules)."""
    return str(Path(LAYOUT.caption(name)).resolve())


def report_figures(pattern, name, category):
    """A figure's files, one per figure.formats (``pattern`` has ``{ext}``); the first of png, svg, pdf
    goes into the report, with the caption ``name``, one subcategory per slide."""
    shown = next(ext for ext in ("png", "svg", "pdf") if ext in FORMATS)
    files = []
    for ext in FORMATS:
        path = pattern.replace("{ext}", ext)
        if ext == shown:
            path = report(
                path,
                caption=caption(name),
                category=category,
                subcategory="{slide}",
                labels={"slide": "{slide}"},
            )
        files.append(path)
    return files


def figure_inputs(wildcards):
    """The slide's tile table and tiles, and the masks of the chunks its first figure.max_tiles rows lie in."""
    slide = wildcards.slide
    return [LAYOUT.tile_table(slide), LAYOUT.tile_dir(slide)] + slide_masks(
        slide, figure_chunks()
    )


def overview_inputs(wildcards):
    """The slide's tile table and tile folder (with the record of the slide file its tiles came
    from), its mask files (the boxes' classes; the mosaics where there are no slide maps) and its
    slide maps and prediction heatmap where the run makes them.  The slide itself is the tiles
    job's input, not this one's: a slide deleted or changed mid-run is then one slidegrad line
    from this job (it checks the record), not Snakemake's missing-input report; a slide newer
    than its tile table still reruns the tiles job, hence this one."""
    slide = wildcards.slide
    inputs = {"table": LAYOUT.tile_table(slide), "tiles": LAYOUT.tile_dir(slide)}
    if PLAN.slide_maps:
        first = PLAN.method_ids[0]
        inputs["masks"] = [
            LAYOUT.mask_file(slide, chunk, first) for chunk in slide_chunks(slide)
        ]
        inputs["slide_maps"] = overview_slide_maps(slide)
    else:
        inputs["masks"] = slide_masks(slide)
    if PLAN.prediction_maps:
        inputs["prediction_map"] = LAYOUT.prediction_map(slide, "npz")
    return inputs


def overview_slide_maps(slide):
    """The slide maps (.npz) of the overview's methods (figure.methods), in order; none without slide maps."""
    if not PLAN.slide_maps:
        return []
    return [LAYOUT.slide_map(slide, m.id, "npz") for m in PLAN.figure_methods]


def slide_map_inputs(wildcards):
    """The slide's tile table and folder (with the record of its slide file) and one method's mask files."""
    slide = wildcards.slide
    return {
        "table": LAYOUT.tile_table(slide),
        "tiles": LAYOUT.tile_dir(slide),
        "masks": [
            LAYOUT.mask_file(slide, chunk, wildcards.method)
            for chunk in slide_chunks(slide)
        ],
    }


def prediction_map_inputs(wildcards):
    """As slide_map_inputs, for the first method (top_k: the tile folder's scores of every tissue tile)."""
    slide = wildcards.slide
    inputs = {"table": LAYOUT.tile_table(slide), "tiles": LAYOUT.tile_dir(slide)}
    if MODE != "top_k":
        first = PLAN.method_ids[0]
        inputs["masks"] = [
            LAYOUT.mask_file(slide, chunk, first) for chunk in slide_chunks(slide)
        ]
    return inputs


def qupath_inputs(wildcards):
    """The summary (Parquet) and, when the run evaluates, evaluation.csv."""
    inputs = {"summary": LAYOUT.summary("parquet")}
    if PLAN.evaluating:
        inputs["evaluation"] = LAYOUT.evaluation()
    return inputs


def slide_path(wildcards):
    return PLAN.slides[wildcards.slide].path


def slide_mpp(wildcards):
    """The sample sheet's µm/px for the slide (None: the slide's own)."""
    return PLAN.slides[wildcards.slide].mpp


def evaluation_files(slide, ext):
    """A slide's evaluate-job outputs, chunk by chunk: rows (csv) or curves (npz)."""
    return [LAYOUT.evaluation_chunk(slide, chunk, ext) for chunk in slide_chunks(slide)]


def slide_evaluation_tables(wildcards):
    return evaluation_files(wildcards.slide, "csv")


def slide_evaluation_curves(wildcards):
    return evaluation_files(wildcards.slide, "npz")


def evaluation_tables(wildcards):
    """Every evaluate job's rows: slide by slide (sample-sheet order), chunk by chunk."""
    return [table for slide in PLAN.slides for table in evaluation_files(slide, "csv")]


def methods_text_inputs(wildcards):
    """The summary, and the evaluation table where the run evaluates (the methods text reports its flags)."""
    inputs = {"summary": LAYOUT.summary("csv")}
    if PLAN.evaluating:
        inputs["evaluation"] = LAYOUT.evaluation()
    return inputs


def all_targets(wildcards):
    targets = [LAYOUT.summary("csv"), LAYOUT.methods_text()]
    if PLAN.evaluating:
        targets.append(LAYOUT.evaluation())
    for slide in PLAN.slides:
        targets += [LAYOUT.figure(slide, ext) for ext in FORMATS]
        if MODE != "tfrecords":  # TFRecords: tiles, no slide to draw or place them on
            targets += [LAYOUT.overview(slide, ext) for ext in FORMATS]
            targets.append(LAYOUT.qupath(slide))
        if PLAN.slide_maps:
            targets += [
                LAYOUT.slide_map(slide, method, ext)
                for method in PLAN.method_ids
                for ext in ("tiff", "png")
            ]
        if PLAN.prediction_maps:
            targets += [LAYOUT.prediction_map(slide, ext) for ext in FORMATS]
            targets.append(LAYOUT.prediction_map(slide, "npz"))
        if PLAN.evaluating:
            targets += [LAYOUT.evaluation_figure(slide, ext) for ext in FORMATS]
        targets += [
            LAYOUT.picture_dir(kind, slide, chunk)
            for chunk in picture_chunks(slide)
            for kind in ("overlays", "heatmaps")
        ]
    return targets
