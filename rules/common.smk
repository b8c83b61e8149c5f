# Input functions, wildcard constraints and the plan the DAG expands over.
# All logic lives in the slidegrad library (src/slidegrad); this file only asks it.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from slidegrad.errors import InputError
from slidegrad import workflow as sgw

try:
    PLAN = sgw.build_plan(config)
except InputError as err:
    raise WorkflowError(f"slidegrad: error: {err}") from None

config = PLAN.config
OUT = config["outdir"]
MASK_ENV = f"../envs/{PLAN.backend}.yaml"
DEMO_VARIANTS = ["a", "b"]
MASK_GPU = config["mask_resources"].get("gpu", 1 if config["device"] == "cuda" else 0)


wildcard_constraints:
    slide=sgw.SLIDE_NAME,
    tile=sgw.TILE_NAME,
    method="|".join(PLAN.method_ids),
    variant="|".join(DEMO_VARIANTS),


def tile_png(slide, tile):
    return f"{OUT}/tiles/{slide}/{tile}.png"


def per_tile(kind, slide, method, tile, ext):
    """Path of one per-tile output: masks, overlays or heatmaps."""
    return f"{OUT}/{kind}/{slide}/{method}/{tile}{ext}"


def chunk_tile_names(chunk):
    return [tile.name for tile in chunk.tiles]


def chunk_paths(chunk, kind, ext):
    """Outputs of a chunk's job; the method stays a wildcard."""
    return [
        per_tile(kind, chunk.slide, "{method}", name, ext)
        for name in chunk_tile_names(chunk)
    ]


def chunk_tile_pngs(chunk):
    return [tile_png(chunk.slide, name) for name in chunk_tile_names(chunk)]


def slide_tile_pngs(slide):
    return [tile_png(slide, tile.name) for tile in PLAN.tiles[slide]]


def slide_path(slide):
    return PLAN.slides[slide].path


def geometry_inputs():
    """The model, when tile_px/tile_um must be read from its params.json."""
    if config.get("tile_px") is None or config.get("tile_um") is None:
        return [config["model"]["path"]]
    return []


def method_json(wildcards):
    return PLAN.method(wildcards.method).to_json()


def mask_targets():
    """Every (slide, tile, method) as dicts of mask, meta and tile paths."""
    return [
        {
            "slide": slide,
            "tile": tile.name,
            "method": method,
            "mask": per_tile("masks", slide, method, tile.name, ".npy"),
            "meta": per_tile("masks", slide, method, tile.name, ".json"),
        }
        for slide, tiles in PLAN.tiles.items()
        for tile in tiles
        for method in PLAN.method_ids
    ]


def summary_inputs(wildcards):
    return [t[key] for t in mask_targets() for key in ("mask", "meta")]


def figure_layout(wildcards):
    """Tile names, tile PNGs, masks per method (tile order) and the label sidecars of a slide."""
    names = [tile.name for tile in PLAN.tiles[wildcards.slide]]
    first = PLAN.method_ids[0]
    return {
        "tile_names": names,
        "tile_pngs": slide_tile_pngs(wildcards.slide),
        "method_ids": PLAN.method_ids,
        "method_titles": [m.title for m in PLAN.methods],
        "mask_paths": {
            m: [per_tile("masks", wildcards.slide, m, n, ".npy") for n in names]
            for m in PLAN.method_ids
        },
        "meta_paths": [
            per_tile("masks", wildcards.slide, first, n, ".json") for n in names
        ],
    }


def figure_inputs(wildcards):
    layout = figure_layout(wildcards)
    masks = [p for paths in layout["mask_paths"].values() for p in paths]
    return layout["tile_pngs"] + masks + layout["meta_paths"]


def all_targets():
    targets = [f"{OUT}/summary.csv"]
    targets += expand(
        f"{OUT}/figures/{{slide}}.{{ext}}", slide=PLAN.tiles, ext=["pdf", "png"]
    )
    for t in mask_targets():
        for kind in ("overlays", "heatmaps"):
            targets.append(per_tile(kind, t["slide"], t["method"], t["tile"], ".png"))
    return targets
