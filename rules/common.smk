# Input functions, wildcard constraints and the plan the DAG expands over.
# All logic lives in the slidegrad library (src/slidegrad); this file only asks it.
import math
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from slidegrad.errors import InputError
from slidegrad import workflow as sgw

try:
    PLAN = sgw.build_plan(config)
except InputError as err:
    raise WorkflowError(f"slidegrad: error: {err}") from None
for warning in PLAN.warnings:
    logger.warning(f"slidegrad: warning: {warning}")

config = PLAN.config
OUT = config["outdir"]
LAYOUT = sgw.Layout(OUT)
MODE = PLAN.selection["mode"]
MASK_ENV = f"../envs/{PLAN.backend}.yaml"
DEMO_VARIANTS = ["a", "b"]
MASK_GPU = config["mask_resources"].get("gpu", 1 if config["device"] == "cuda" else 0)
# static modes know every slide's chunks now; grid/random/top_k learn them from the checkpoint
STATIC_CHUNKS = {
    slide: [
        chunk.label
        for chunk in sgw.chunk_tiles({slide: tiles}, config["tiles_per_job"])
    ]
    for slide, tiles in PLAN.tiles.items()
}


wildcard_constraints:
    slide=sgw.SLIDE_NAME,
    chunk=sgw.CHUNK_NAME,
    method="|".join(PLAN.method_ids),
    variant="|".join(DEMO_VARIANTS),


def slide_chunks(slide):
    """Chunk labels of a slide's mask jobs (in grid/random/top_k mode, once its tiles checkpoint ran)."""
    if PLAN.dynamic:
        return sgw.table_chunks(checkpoints.tiles.get(slide=slide).output.table)
    return STATIC_CHUNKS[slide]


def geometry_inputs():
    """The model, when tile_px/tile_um must be read from its params.json."""
    if config.get("tile_px") is None or config.get("tile_um") is None:
        return [config["model"]["path"]]
    return []


def tiles_inputs(wildcards):
    """The slide (or .tfrecords file); the configured table (table, tfrecords mode); the model
    for top_k, or for tile_px/tile_um when the config sets none."""
    inputs = {
        "source": PLAN.slides[wildcards.slide].path,
        "geometry": geometry_inputs(),
    }
    if not PLAN.dynamic:
        inputs["table"] = PLAN.selection["path"]
    if MODE == "top_k":
        inputs["model"] = config["model"]["path"]
    return inputs


def method_json(wildcards):
    return PLAN.method(wildcards.method).to_json()


def chunk_masks(wildcards):
    """A chunk's mask folders, one per method (in method order)."""
    return [
        LAYOUT.mask_dir(wildcards.slide, wildcards.chunk, m) for m in PLAN.method_ids
    ]


def slide_masks(slide, n_chunks=None):
    """Mask folders of a slide's first ``n_chunks`` chunks (all: None), chunk by chunk."""
    return [
        LAYOUT.mask_dir(slide, chunk, method)
        for chunk in slide_chunks(slide)[:n_chunks]
        for method in PLAN.method_ids
    ]


def summary_inputs(wildcards):
    tables = [LAYOUT.tile_table(slide) for slide in PLAN.slides]
    return tables + [d for slide in PLAN.slides for d in slide_masks(slide)]


def figure_inputs(wildcards):
    """The slide's tile table and tiles, and the masks of the chunks its first figure_max_tiles rows lie in."""
    n_chunks = math.ceil(config["figure_max_tiles"] / config["tiles_per_job"])
    slide = wildcards.slide
    return [LAYOUT.tile_table(slide), LAYOUT.tile_dir(slide)] + slide_masks(
        slide, n_chunks
    )


def all_targets(wildcards):
    targets = [LAYOUT.summary()]
    for slide in PLAN.slides:
        targets += [LAYOUT.figure(slide, ext) for ext in ("pdf", "png")]
        targets += [
            LAYOUT.picture_dir(kind, slide, chunk)
            for chunk in slide_chunks(slide)
            for kind in ("overlays", "heatmaps")
        ]
    return targets
