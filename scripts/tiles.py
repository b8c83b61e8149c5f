"""Extract a slide's selected tiles to PNG."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.jobs import extract_tiles  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402
from slidegrad.workflow import tile_geometry  # noqa: E402

tile_px, tile_um = tile_geometry(snakemake.config)
run_job(
    extract_tiles,
    slide_path=snakemake.input.slide,
    tile_names=snakemake.params.tile_names,
    out_paths=list(snakemake.output),
    tile_px=tile_px,
    tile_um=tile_um,
    mpp=snakemake.params.mpp,
    stride_div=snakemake.config["stride_div"],
)
