"""Whole-slide grid run: one synthetic 0.25 µm/px slide, every tissue tile, the whole workflow.

Issue 26 item 6.  Builds (once, cached in the work folder) a pyramidal Aperio-style TIFF of at
least 40,000 × 40,000 px from skimage's real IHC image (upscaled to the demo's physical scale; each
2048-px block a random flip/transpose and offset of it with a stain-intensity jitter and a light
counterstain tint, laid on white glass in a few irregular tissue sections), written tile by tile
(JPEG): no level is ever a whole array in memory.  Then runs the repository's Snakefile on it in
grid mode (``tiles: {mode: grid}``) with the demo CNN, and reports:

* DAG build: ``snakemake -n`` wall time before the run (the grid's mask jobs are unknown until the
  tiles checkpoint ran) and after it (the whole DAG, nothing to do); the time to the first job, and
  from the tiles checkpoint's end to the next job (the re-plan over every chunk);
* files written under the outdir, in total and per tile·method, by top-level folder;
* each rule's summed job seconds (``benchmark:`` TSVs, column ``s``) and share; the ratio of
  everything but mask jobs to mask jobs (target ≤ 10 %);
* each rule's peak memory (``max_rss``; target ≤ 2 GB at 10,000 tiles for the slide-level jobs);
* sizes of slide-map TIFFs, GeoJSON, the report, ``summary.parquet`` (found by glob);
* tiles per second of the tiles job.

Rules are whatever folders ``benchmarks/`` holds, files are counted by walking the outdir, so new
rules and layouts need no change here.

The demo model's geometry (``params.json``: 128 px tiles of 128 µm, so 512 level-0 px at 0.25
µm/px) allows at most 78 × 78 = 6,084 grid tiles on a 40,000-px side, so the default ``--size``
(``auto``) is the smallest side ≥ 40,000 px whose slide is predicted to hold ``--min-tiles``
(10,000) tissue tiles: the workflow's own tissue rule (Otsu on the thumbnail) on a 1/16-scale
render, which matched the written files to ±1 tile at 8,000, 16,384 and 24,576 px.  With the
defaults that is 61,952 px (10,203 tiles predicted): a ~370 MB file, plus ~3.6 GB of temporary
lower levels beside it while it is written.  Prints markdown tables and writes every number to
``<workdir>/wholeslide_<size>.json`` (``…_dry.json`` with ``--dry``).

    .venv/bin/python bench/wholeslide_bench.py --size 8000 --cores 1     # quick trial (76 tiles, ~1 min)
    .venv/bin/python bench/wholeslide_bench.py                           # the full run (≥ 10,000 tiles)
    .venv/bin/python bench/wholeslide_bench.py --dry                     # slide + DAG timing only

The model: ``--model`` if given, else ``resources/demo/model`` when the workflow's ``demo_model``
rule has built it, else the same library call (``slidegrad.demo.train_demo_model`` on the two demo
slides, 6 epochs, seed 0) into ``<workdir>/model``, kept for reruns.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MPP = 0.25
MIN_SIDE = 40_000
TIFF_TILE = 256  # TIFF tile side, as write_pyramidal_tiff's default
MIN_LEVEL_SIZE = 512  # write_pyramidal_tiff's default: levels while the shorter side is >= this
BLOCK = 2048  # level-0 px per texture block (one flip/offset/jitter each)
CELL = 32  # level-0 px per cell of the tissue layout
GLASS = (238, 237, 235)  # white glass, RGB
TINT = (210, 190, 235)  # a light counterstain multiplied into the tissue (see SyntheticSlide)
GENERATOR_VERSION = 1  # bump when the slide's content changes, so cached slides are rebuilt
MASK_FOLDER = "masks"  # benchmarks/<rule>/…: the mask jobs' folder


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


def obtain_model(arg: str | None, workdir: Path, threads: int) -> tuple[Path, str]:
    """The demo CNN's folder, and where it came from (``--model``, the workflow's rule output, trained here)."""
    if arg:
        return Path(arg).resolve(), "--model"
    built = REPO / "resources/demo/model"
    if (built / "weights.pt").exists() and (built / "params.json").exists():
        return built, "resources/demo/model (the workflow's demo_model rule)"
    model = workdir / "model"
    if (model / "weights.pt").exists() and (model / "params.json").exists():
        return model, f"{model} (trained by an earlier run of this bench)"
    print(f"training the demo model into {model} (slidegrad.demo.train_demo_model, as rule demo_model) ...", flush=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from slidegrad import demo\n"
        "root = Path(sys.argv[2]); root.mkdir(parents=True, exist_ok=True); paths = []\n"
        "for v in demo.VARIANTS:\n"
        "    p = root / f'demo_{v}.tiff'; paths.append(p)\n"
        "    p.exists() or demo.write_demo_slide(p, v)\n"
        "print(demo.train_demo_model(paths, sys.argv[3], threads=int(sys.argv[4])))\n"
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(REPO / "src"), str(workdir / "demo_slides"), str(model), str(threads)],
        check=True,
    )
    print(f"  trained in {time.perf_counter() - start:.0f} s", flush=True)
    return model, f"{model} (trained now, {time.perf_counter() - start:.0f} s)"


def model_geometry(model: Path) -> tuple[int, float]:
    params = json.loads((model / "params.json").read_text())
    tile_px, tile_um = params["tile_px"], params["tile_um"]
    if not isinstance(tile_um, (int, float)):
        sys.exit(f"the model's tile_um is {tile_um!r}; this bench needs microns (a number)")
    return int(tile_px), float(tile_um)


# --------------------------------------------------------------------------
# the synthetic slide
# --------------------------------------------------------------------------


def texture_upscale() -> int:
    """Level-0 px per source pixel of the IHC image, so a µm of tissue looks as on the demo slides.

    The demo draws the 512-px image mirrored 2 × 2 on 4096 px at 0.5 µm/px: 2 µm per source pixel.
    """
    from slidegrad import demo

    return round(demo.DEMO_SIZE / (2 * 512) * demo.DEMO_MPP / MPP)


class SyntheticSlide:
    """The bench slide's pixels, one row strip at a time (deterministic for a seed), at level 0 or, for
    :func:`predicted_tissue_tiles`, at ``1 / scale`` of it (a power of 2 up to :data:`CELL`).

    Tissue texture: skimage's IHC image upscaled (bicubic) ×:func:`texture_upscale`; every
    :data:`BLOCK`-px square block is one of the 8 flips/transposes of a random square of it, with a
    stain-intensity jitter (a gamma per block, a little per channel) and a light counterstain ``tint``
    (multiplied in, so the IHC image's near-white stroma is not taken for glass).  Layout: a few
    elliptical tissue sections with noisy borders on a :data:`CELL`-px grid (``alpha``, 0–255),
    thresholded so that ``tissue`` of the area is tissue; the border cells blend with glass.
    """

    def __init__(
        self, size: int, seed: int = 0, tissue: float = 0.7, tint: tuple[int, int, int] = TINT, scale: int = 1
    ) -> None:
        from PIL import Image
        from skimage.data import immunohistochemistry

        assert scale in (1, 2, 4, 8, 16, 32) and CELL % scale == 0
        self.size, self.scale = size, scale
        self.width = -(-size // scale)
        self.block, self.cell = BLOCK // scale, CELL // scale
        rng = np.random.default_rng(seed)
        src = immunohistochemistry()
        side = src.shape[0] * texture_upscale()
        self.texture = np.asarray(Image.fromarray(src).resize((side // scale,) * 2, Image.Resampling.BICUBIC))
        nb = -(-size // BLOCK)
        self.variant = rng.integers(0, 8, (nb, nb))  # bit 0: flip rows, bit 1: flip columns, bit 2: transpose
        self.offset = rng.integers(0, side - BLOCK + 1, (nb, nb, 2)) // scale
        gamma = rng.uniform(0.8, 1.2, (nb, nb, 1)) * rng.uniform(0.95, 1.05, (nb, nb, 3))
        levels = np.arange(256) / 255.0
        lut = 255 * levels[None, None, None, :] ** gamma[..., None] * (np.asarray(tint, float) / 255)[:, None]
        self.lut = np.rint(lut).astype(np.uint8)  # (nb, nb, 3, 256)
        self.glass = np.clip(rng.normal(GLASS, 1.2, (512, 2 * BLOCK, 3)), 0, 255).astype(np.uint8)
        self.glass_offset = rng.integers(0, (512 - TIFF_TILE + 1, BLOCK + 1), (nb, nb, 2))
        self.alpha = tissue_layout(-(-size // CELL), rng, tissue)

    def _tissue(self, bi: int, bj: int, y: int, h: int, w: int) -> Any:
        """Rows ``[y, y + h)``, columns ``[0, w)`` of block (bi, bj), a PIL image."""
        from PIL import Image

        v, b = int(self.variant[bi, bj]), self.block
        rows = (b - y - h, b - y) if v & 1 else (y, y + h)
        cols = (b - w, b) if v & 2 else (0, w)
        oy, ox = self.offset[bi, bj]
        if v & 4:  # the block is the transpose of the texture's square: read columns as rows
            rows, cols = cols, rows
        square = self.texture[oy + rows[0] : oy + rows[1], ox + cols[0] : ox + cols[1]]
        image = Image.fromarray(np.ascontiguousarray(square))
        if v & 4:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        if v & 1:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if v & 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image.point(self.lut[bi, bj].reshape(-1).tolist())

    def _glass(self, bi: int, bj: int, h: int, w: int) -> Any:
        from PIL import Image

        gy, gx = self.glass_offset[bi, bj]
        return Image.fromarray(np.ascontiguousarray(self.glass[gy : gy + h, gx : gx + w]))

    def strip(self, y0: int, h: int) -> Any:
        """Rows ``[y0, y0 + h)`` (at this scale), a PIL RGB image :attr:`width` wide; ``y0`` a multiple of
        the cell, the strip within one block row."""
        from PIL import Image

        out = Image.new("RGB", (self.width, h))
        bi, y_in = divmod(y0, self.block)
        assert y_in + h <= self.block and y0 % self.cell == 0
        cells = self.alpha[y0 // self.cell : -(-(y0 + h) // self.cell)]
        for bj, x0 in enumerate(range(0, self.width, self.block)):
            w = min(self.block, self.width - x0)
            a = cells[:, x0 // self.cell : -(-(x0 + w) // self.cell)]
            if a.min() == 255:
                block = self._tissue(bi, bj, y_in, h, w)
            elif a.max() == 0:
                block = self._glass(bi, bj, h, w)
            else:
                mask = Image.fromarray(a).resize((a.shape[1] * self.cell, a.shape[0] * self.cell), Image.NEAREST)
                tissue, glass = self._tissue(bi, bj, y_in, h, w), self._glass(bi, bj, h, w)
                block = Image.composite(tissue, glass, mask.crop((0, 0, w, h)))
            out.paste(block, (x0, 0))
        return out

    def render(self) -> np.ndarray:
        """The whole slide at this scale, uint8 ``(width, width, 3)`` (for small renders only)."""
        out = np.empty((self.width, self.width, 3), np.uint8)
        rows = min(self.block, TIFF_TILE)  # the level-0 strip height: the glass texture is 512 rows
        for y0 in range(0, self.width, rows):
            h = min(rows, self.width - y0)
            out[y0 : y0 + h] = np.asarray(self.strip(y0, h))
        return out


class RenderedSlide:
    """Just enough of :class:`slidegrad.slide.WSI` for :func:`slidegrad.tiling.tissue_tiles`: the grid
    geometry of a ``size`` × ``size`` slide and a thumbnail (OpenSlide's: Lanczos) of a render."""

    def __init__(self, size: int, render: np.ndarray, extract: int) -> None:
        self.path, self.dimensions, self.render = "(bench layout)", (size, size), render
        self.extract_px = self.stride_px = extract
        self.grid_shape = (grid_count(size, extract),) * 2

    def grid_to_xy(self, col: int, row: int) -> tuple[int, int]:
        return col * self.stride_px, row * self.stride_px

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        from PIL import Image

        image = Image.fromarray(self.render)
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return np.asarray(image)


def predicted_tissue_tiles(size: int, seed: int, tissue: float, extract: int, min_tissue: float) -> int:
    """The workflow's tissue tiles (``slidegrad.tiling.tissue_tiles``: Otsu on the thumbnail) of the slide
    these arguments make, from a render at 1/2 … 1/32 scale (≤ 4096 px a side), without writing it."""
    from slidegrad.tiling import tissue_tiles

    scale = 1
    while size / scale > 4096 and scale < CELL:
        scale *= 2
    render = SyntheticSlide(size, seed, tissue, scale=scale).render()
    return len(tissue_tiles(RenderedSlide(size, render, extract), min_tissue=min_tissue))


def tissue_layout(n: int, rng: np.random.Generator, tissue: float) -> np.ndarray:
    """uint8 ``(n, n)`` tissue opacity on the cell grid: 3–4 elliptical sections with noisy borders;
    ``tissue`` of the cells ≥ 128."""
    from scipy.ndimage import gaussian_filter

    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n
    envelope = np.full((n, n), -np.inf, np.float32)
    for _ in range(int(rng.integers(3, 5))):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        ry, rx = rng.uniform(0.25, 0.45, 2)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        envelope = np.maximum(envelope, 1 - (u / rx) ** 2 - (v / ry) ** 2)
    noise = gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma=max(1.0, n / 60))
    field = envelope + 0.25 * noise / noise.std()
    threshold = np.quantile(field, 1 - tissue)
    ramp = 0.03
    return np.clip(np.rint(127.5 + 127.5 * (field - threshold) / ramp), 0, 255).astype(np.uint8)


def grid_count(size: int, extract: int) -> int:
    """Grid tiles along one side (WSI.grid_shape's rule, stride = extract)."""
    return 0 if size < extract else (size - extract) // extract + 1


def auto_size(extract: int, min_tiles: int, min_tissue: float, seed: int, tissue: float) -> tuple[int, int]:
    """The smallest side ≥ :data:`MIN_SIDE` (a multiple of ``extract``) whose slide is predicted to hold
    ≥ ``min_tiles`` tissue tiles (:func:`predicted_tissue_tiles`, with a 1 % margin); and that prediction."""
    cols = max(math.ceil(MIN_SIDE / extract), math.ceil(math.sqrt(min_tiles / tissue)))
    while True:
        size = cols * extract
        predicted = predicted_tissue_tiles(size, seed, tissue, extract, min_tissue)
        if predicted >= 1.01 * min_tiles or size >= 400_000:  # 1 % margin: the render is not the file
            return size, predicted
        cols += max(1, math.ceil(cols * (math.sqrt(min_tiles / max(predicted, 1)) - 1)))


def _level_shapes(size: int) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level, as write_pyramidal_tiff's ``_pyramid_levels``."""
    shapes = [(size, size)]
    while True:
        h, w = shapes[-1]
        if min((h + 1) // 2, (w + 1) // 2) < MIN_LEVEL_SIZE:
            return shapes
        shapes.append(((h + 1) // 2, (w + 1) // 2))


class Level:
    """One pyramid level below level 0, filled top to bottom by row strips, then read back by row strips:
    in memory when small, else in a temporary raw file (plain reads and writes, so its pages are the
    kernel's cache, not this process's memory)."""

    IN_MEMORY = 64 * 2**20

    def __init__(self, shape: tuple[int, int], path: Path) -> None:
        self.shape = (*shape, 3)
        self.row_bytes = shape[1] * 3
        self.filled = 0
        self.path: Path | None = None
        if shape[0] * self.row_bytes <= self.IN_MEMORY:
            self.array: np.ndarray | None = np.empty(self.shape, np.uint8)
        else:
            self.array = None
            self.path = path
            self.handle = open(path, "w+b")

    def put(self, y0: int, rows: np.ndarray) -> None:
        assert y0 == self.filled, (y0, self.filled)
        if self.array is not None:
            self.array[y0 : y0 + rows.shape[0]] = rows
        else:
            self.handle.write(np.ascontiguousarray(rows).tobytes())
        self.filled += rows.shape[0]

    def rows(self, y0: int, n: int) -> np.ndarray:
        n = min(n, self.shape[0] - y0)
        if self.array is not None:
            return self.array[y0 : y0 + n]
        self.handle.seek(y0 * self.row_bytes)
        data = self.handle.read(n * self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(n, *self.shape[1:])

    def strips(self, rows: int = TIFF_TILE) -> Iterator[tuple[int, np.ndarray]]:
        assert self.filled == self.shape[0]
        for y0 in range(0, self.shape[0], rows):
            yield y0, self.rows(y0, rows)

    def close(self) -> None:
        if self.path is not None:
            self.handle.close()
            self.path.unlink(missing_ok=True)
        self.array = None


def halve(image: Any) -> np.ndarray:
    """write_pyramidal_tiff's 2 × 2 mean (``slidegrad.slide._halve``: rounded half up, odd edges repeated),
    by PIL's ``reduce(2)``, which gives the same bytes about 20 × faster (:func:`check_halve`)."""
    from PIL import Image

    image = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(image.reduce(2))


def check_halve() -> None:
    from slidegrad.slide import _halve

    rng = np.random.default_rng(1)
    for shape in ((64, 96), (63, 97), (1, 5), (5, 1)):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        assert np.array_equal(halve(image), _halve(image)), f"PIL reduce(2) differs from _halve at {shape}"


def _tiles(strips: Iterator[tuple[int, Any]], below: Level | None) -> Iterator[np.ndarray]:
    """The TIFF tiles of a level, row-major, from its row strips (arrays or PIL images, each
    :data:`TIFF_TILE` tall but the last); each strip, halved, goes into the next level on the way."""
    for y0, strip in strips:
        if below is not None:
            below.put(y0 // 2, halve(strip))
        strip = np.asarray(strip)
        for x0 in range(0, strip.shape[1], TIFF_TILE):
            yield strip[:, x0 : x0 + TIFF_TILE]


def write_slide(path: Path, size: int, seed: int, tissue: float, quality: int, workers: int) -> dict[str, Any]:
    """Write the bench slide at ``path`` as an SVS look-alike (write_pyramidal_tiff's layout with an Aperio
    description): level 0 tiled, a stripped thumbnail page, then half-size tiled levels (2 × 2 means), JPEG.

    Streaming: level 0 is made one 256-row strip at a time and encoded tile by tile; its strips, halved
    on the way, fill level 1, which (like every level over :attr:`Level.IN_MEMORY`) waits in a temporary
    raw file beside ``path``; the smaller levels are made from it before the thumbnail page.  Returns
    timings and the process's peak RSS."""
    import tifffile

    check_halve()
    start = time.perf_counter()
    slide = SyntheticSlide(size, seed, tissue)
    setup_s = time.perf_counter() - start
    shapes = _level_shapes(size)
    description = (
        f"Aperio Image Library v12.0.0\r\n{size}x{size} [0,0 {size}x{size}] ({TIFF_TILE}x{TIFF_TILE}) "
        f"JPEG/RGB Q={quality}|AppMag = 40|MPP = {MPP}"
    )
    raw_bytes = sum(h * w * 3 for h, w in shapes)
    common: dict[str, Any] = dict(
        photometric="rgb", compression="jpeg", compressionargs={"level": quality}, resolution=(1e4 / MPP, 1e4 / MPP),
        resolutionunit="CENTIMETER", metadata=None, software="slidegrad", maxworkers=workers,
    )  # fmt: skip
    partial = path.with_name(path.name + ".partial")

    def level0_strips() -> Iterator[tuple[int, Any]]:
        for y0 in range(0, size, TIFF_TILE):
            yield y0, slide.strip(y0, min(TIFF_TILE, size - y0))

    levels = [Level(shape, path.with_name(f"{path.name}.level{i}.raw")) for i, shape in enumerate(shapes[1:], 1)]
    try:
        with tifffile.TiffWriter(partial, bigtiff=raw_bytes > 2**32 - 2**28) as tw:
            t0 = time.perf_counter()
            tw.write(
                _tiles(level0_strips(), levels[0] if levels else None), shape=(size, size, 3), dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE), description=description, **common,
            )  # fmt: skip
            level0_s = time.perf_counter() - t0
            for upper, lower in zip(levels, levels[1:]):  # every smaller level, before the thumbnail page needs them
                for y0, strip in upper.strips(2 * TIFF_TILE):
                    lower.put(y0 // 2, halve(strip))
            if levels:
                thumbnail = levels[-1].rows(0, levels[-1].shape[0])
                while max(thumbnail.shape[:2]) > 1024:
                    thumbnail = halve(thumbnail)
                tw.write(thumbnail, rowsperstrip=16, **common)
            for level in levels:
                tw.write(
                    _tiles(level.strips(), None), shape=level.shape, dtype=np.uint8,
                    tile=(TIFF_TILE, TIFF_TILE), subfiletype=0, **common,
                )  # fmt: skip
        os.replace(partial, path)
    finally:
        for level in levels:
            level.close()
        partial.unlink(missing_ok=True)
    return {
        "size": size, "seed": seed, "tissue": tissue, "jpeg_quality": quality, "workers": workers,
        "levels": [list(s) for s in shapes], "setup_s": round(setup_s, 2), "level0_s": round(level0_s, 2),
        "seconds": round(time.perf_counter() - start, 2), "bytes": path.stat().st_size, "raw_bytes": raw_bytes,
        "scratch_bytes": sum(h * w * 3 for h, w in shapes[1:] if h * w * 3 > Level.IN_MEMORY),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }  # fmt: skip


def _write_slide_child(*args: Any) -> dict[str, Any]:
    return write_slide(*args)


def count_tissue_tiles(path: Path, tile_px: int, tile_um: float, min_tissue: float) -> tuple[int, int, dict]:
    """The workflow's own count (slidegrad.tiling.tissue_tiles on the written file), the grid size, and what
    OpenSlide reports."""
    from slidegrad.slide import WSI
    from slidegrad.tiling import tissue_tiles

    with WSI(path, tile_px, tile_um) as wsi:
        cols, rows = wsi.grid_shape
        found = tissue_tiles(wsi, min_tissue=min_tissue)
        info = {"vendor": wsi.vendor, "mpp": wsi.mpp, "backend": wsi.backend, "extract_px": wsi.extract_px,
                "read_level": wsi.level, "level_count": len(wsi._slide.level_dimensions)}  # fmt: skip
    return len(found), cols * rows, info


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def write_project(run: Path, slide: Path, name: str, model: Path, args: argparse.Namespace) -> Path:
    with open(run / "samples.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["slide", "path"], [name, str(slide)]])
    config = {
        "samples": str(run / "samples.csv"),
        "tiles": {"mode": "grid", "min_tissue": args.min_tissue},
        "model": {"path": str(model)},
        "methods": args.methods,
        "tiles_per_job": args.tiles_per_job,
        "threads": args.threads,
        "device": args.device,
        "outdir": str(run / "results"),
        "evaluate": {"metrics": []},
    }
    import yaml

    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_env(run: Path, real_scontrol: bool) -> dict[str, str]:
    """The SLURM plugin runs ``scontrol show config`` at every snakemake start (about 9 s where no controller
    answers; README, "A slow start without a controller"); a local run puts a failing stub first on PATH,
    as the tests do, unless ``--real-scontrol``."""
    env = dict(os.environ)
    if not real_scontrol:
        stub = run / "no-scontrol"
        stub.mkdir(exist_ok=True)
        (stub / "scontrol").write_text("#!/bin/sh\necho 'scontrol: disabled for this bench' >&2\nexit 1\n")
        (stub / "scontrol").chmod(0o755)
        env["PATH"] = f"{stub}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake_cmd(run: Path, configfile: Path, cores: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(run),
            "--configfile", str(configfile), "--cores", str(cores), *extra]  # fmt: skip


def dry_run(run: Path, configfile: Path, cores: int, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    cmd = snakemake_cmd(run, configfile, cores, "-n", "--quiet", "rules")
    result = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{result.stderr[-3000:]}{result.stdout[-2000:]}")
    jobs = {}
    for line in result.stdout.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "job":
            jobs[m.group(1)] = int(m.group(2))
    return {"seconds": round(seconds, 2), "jobs": jobs}


JOB_START = re.compile(r"^\s*(?:local)?(rule|checkpoint) (\w+):")
JOB_DONE = re.compile(r"^\s*Finished job(?:id)?:? (\d+)")
JOB_ID = re.compile(r"^\s*jobid: (\d+)")


def run_workflow(run: Path, configfile: Path, cores: int, env: dict[str, str]) -> dict[str, Any]:
    """Run snakemake, every output line timestamped (seconds since start) into ``run/snakemake.log``."""
    cmd = snakemake_cmd(run, configfile, cores, "--show-failed-logs", "--rerun-incomplete")
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
    wall = time.perf_counter() - start
    with open(run / "snakemake.log", "w") as handle:
        handle.writelines(f"{t:9.2f}  {line}\n" for t, line in lines)
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-60:])
        sys.exit(f"snakemake failed (exit {proc.returncode}); log: {run / 'snakemake.log'}\n{tail}")
    starts: list[tuple[float, str, int | None]] = []  # (time, rule, jobid)
    done: dict[int, float] = {}
    for t, line in lines:
        if m := JOB_START.match(line):
            starts.append((t, m.group(2), None))
        elif (m := JOB_ID.match(line)) and starts and starts[-1][2] is None:
            starts[-1] = (starts[-1][0], starts[-1][1], int(m.group(1)))
        elif m := JOB_DONE.match(line):
            done[int(m.group(1))] = t
    timing: dict[str, Any] = {"wall_s": round(wall, 2), "jobs_started": len(starts)}
    if starts:
        timing["first_job_s"] = round(starts[0][0], 2)
        timing["first_job_rule"] = starts[0][1]
    tiles_job = next((s for s in starts if s[1] == "tiles"), None)
    if tiles_job and tiles_job[2] in done:
        end = done[tiles_job[2]]
        after = next((s for s in starts if s[0] >= end), None)
        timing["tiles_checkpoint_end_s"] = round(end, 2)
        if after:
            timing["replan_after_checkpoint_s"] = round(after[0] - end, 2)
    return timing


# --------------------------------------------------------------------------
# what the run wrote
# --------------------------------------------------------------------------


def file_counts(outdir: Path) -> dict[str, dict[str, int]]:
    """Files and bytes under ``outdir``, by top-level folder ("." for files directly in it)."""
    counts: dict[str, dict[str, int]] = {}
    for root, _, files in os.walk(outdir):
        rel = Path(root).relative_to(outdir).parts
        top = rel[0] if rel else "."
        entry = counts.setdefault(top, {"files": 0, "bytes": 0})
        for name in files:
            entry["files"] += 1
            entry["bytes"] += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
    return dict(sorted(counts.items()))


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def rule_benchmarks(outdir: Path) -> dict[str, dict[str, Any]]:
    """Per rule folder under ``benchmarks/`` (``benchmarks/summary.tsv`` → ``summary``): jobs, summed ``s``,
    mean and max ``s``, peak ``max_rss`` (MB), summed ``cpu_time``."""
    root = outdir / "benchmarks"
    rules: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        with open(path) as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        seconds = sum(_number(r.get("s", "")) or 0.0 for r in rows) / len(rows)  # mean over repeats
        rss = [v for r in rows if (v := _number(r.get("max_rss", ""))) is not None]
        cpu = [v for r in rows if (v := _number(r.get("cpu_time", ""))) is not None]
        entry = rules.setdefault(rule, {"jobs": 0, "s": 0.0, "max_job_s": 0.0, "max_rss_mb": None, "cpu_s": 0.0,
                                        "max_rss_job": None})  # fmt: skip
        entry["jobs"] += 1
        entry["s"] += seconds
        entry["max_job_s"] = max(entry["max_job_s"], seconds)
        entry["cpu_s"] += sum(cpu) / len(cpu) if cpu else 0.0
        if rss and (entry["max_rss_mb"] is None or max(rss) > entry["max_rss_mb"]):
            entry["max_rss_mb"] = max(rss)
            entry["max_rss_job"] = str(path.relative_to(root))
    return rules


SIZE_PATTERNS = {
    "slide-map TIFFs (*.tif, *.tiff)": ("*.tif", "*.tiff"),
    "GeoJSON (*.geojson)": ("*.geojson",),
    "report (report*.html, *.zip)": ("report*.html", "*.zip"),
    "summary.parquet": ("summary.parquet",),
}


def output_sizes(outdir: Path) -> dict[str, dict[str, Any]]:
    sizes = {}
    for label, patterns in SIZE_PATTERNS.items():
        files = sorted({p for pattern in patterns for p in outdir.rglob(pattern) if p.is_file()})
        if files:
            largest = max(files, key=lambda p: p.stat().st_size)
            sizes[label] = {
                "files": len(files),
                "bytes": sum(p.stat().st_size for p in files),
                "largest": str(largest.relative_to(outdir)),
                "largest_bytes": largest.stat().st_size,
            }
    return sizes


def tiles_in_tables(outdir: Path) -> int | None:
    """Rows of the tile tables (``tiles/*.csv``, wherever a ``tiles`` folder holds them)."""
    tables = [p for p in outdir.rglob("*.csv") if p.parent.name == "tiles"]
    if not tables:
        return None
    total = 0
    for table in tables:
        with open(table) as handle:
            total += sum(1 for _ in csv.DictReader(handle))
    return total


def make_report(run: Path, configfile: Path, outdir: Path, env: dict[str, str]) -> dict[str, Any]:
    target = outdir / "report.html"
    start = time.perf_counter()
    result = subprocess.run(
        snakemake_cmd(run, configfile, 1, "--report", str(target)), cwd=run, env=env, capture_output=True, text=True
    )
    seconds = round(time.perf_counter() - start, 2)
    if result.returncode != 0:
        return {"seconds": seconds, "error": (result.stderr or result.stdout).strip().splitlines()[-1:]}
    return {"seconds": seconds, "bytes": target.stat().st_size if target.exists() else None}


# --------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------


TARGETS = {"files_per_tile_method": 0.05, "nonmask_over_mask": 0.10, "peak_rss_nonmask_mb": 2048}


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """The numbers with targets (issue 26), each with ``met``."""
    tm = res["tiles"] * len(res["methods"])
    files, rules = res["files"], res["rules"]
    all_s = sum(r["s"] for r in rules.values())
    mask_s = rules.get(MASK_FOLDER, {}).get("s", 0.0)
    out: dict[str, Any] = {
        "tile_methods": tm,
        "files": sum(c["files"] for c in files.values()),
        "files_per_tile_method": sum(c["files"] for c in files.values()) / tm,
        "files_per_tile_method_without_logs_benchmarks": sum(
            c["files"] for top, c in files.items() if top not in ("logs", "benchmarks")
        ) / tm,
        "job_s": all_s,
        "mask_job_s": mask_s,
        "nonmask_over_mask": (all_s - mask_s) / mask_s if mask_s else None,
        "nonmask_over_mask_cpu": _cpu_ratio(rules),
        "peak_rss_nonmask_mb": max((r["max_rss_mb"] or 0 for n, r in rules.items() if n != MASK_FOLDER), default=None),
    }
    out["met"] = {key: out[key] is not None and out[key] <= bar for key, bar in TARGETS.items()}
    return out


def _cpu_ratio(rules: dict[str, Any]) -> float | None:
    """(everything but mask jobs) / (mask jobs) by the jobs' CPU seconds (``cpu_time``): less sensitive than
    wall seconds to what else the machine runs meanwhile."""
    all_cpu = sum(r["cpu_s"] for r in rules.values())
    mask_cpu = rules.get(MASK_FOLDER, {}).get("cpu_s", 0.0)
    return (all_cpu - mask_cpu) / mask_cpu if mask_cpu else None


def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:,.1f}"


def print_report(res: dict[str, Any]) -> None:
    tm = res["tiles"] * len(res["methods"])
    print()
    print(f"### Whole-slide grid run: {res['size']:,} × {res['size']:,} px at {MPP} µm/px, "
          f"{res['tiles']:,} tissue tiles × {len(res['methods'])} methods = {tm:,} tile·methods, "
          f"tiles_per_job {res['tiles_per_job']}, --cores {res['cores']}")  # fmt: skip
    g = res["slide"]
    print()
    print("| slide | value |")
    print("|---|---|")
    print(f"| file | {_mb(g['bytes'])} MB JPEG q{g['jpeg_quality']}, {len(g['levels'])} levels; "
          f"raw pixels {_mb(g['raw_bytes'])} MB |")  # fmt: skip
    print(f"| generation | {g['seconds']:.1f} s (level 0 {g['level0_s']:.1f} s), peak RSS {g['peak_rss_mb']:.0f} MB, "
          f"temporary file {_mb(g['scratch_bytes'])} MB{' (cached)' if g.get('cached') else ''} |")  # fmt: skip
    print(f"| grid | {res['grid_tiles']:,} tiles of {res['extract_px']} px; tissue (min_tissue {res['min_tissue']}): "
          f"{res['tiles']:,} ({res['predicted_tiles']:,} predicted from the layout) |")  # fmt: skip
    d = res["dag"]
    print()
    print("| timing | s |")
    print("|---|---|")
    print(f"| `snakemake -n` before the run (grid: mask jobs unknown) | {d['before']['seconds']:.1f} |")
    if "after" in d:
        print(f"| `snakemake -n` after the run (whole DAG, nothing to do) | {d['after']['seconds']:.1f} |")
    if "run" in res:
        r = res["run"]
        labels = {
            "first_job_s": "start to the first job",
            "tiles_checkpoint_end_s": "start to the tiles checkpoint's end",
            "replan_after_checkpoint_s": "tiles checkpoint's end to the next job (re-plan)",
            "wall_s": "total wall",
        }
        for key, label in labels.items():
            if key in r:
                print(f"| {label} | {r[key]:.1f} |")
        if res.get("report"):
            failed = f" (failed: {res['report']['error']})" if "error" in res["report"] else ""
            print(f"| `snakemake --report`{failed} | {res['report']['seconds']:.1f} |")
        if res.get("tiles_per_s"):
            print(f"| tiles job: tiles per second | {res['tiles_per_s']:.1f} |")
    if "files" not in res:
        return
    files = res["files"]
    print()
    print("| folder | files | per tile·method | MB |")
    print("|---|---:|---:|---:|")
    for top, c in files.items():
        print(f"| `{top}` | {c['files']:,} | {c['files'] / tm:.3f} | {_mb(c['bytes'])} |")
    total = sum(c["files"] for c in files.values())
    core = sum(c["files"] for top, c in files.items() if top not in ("logs", "benchmarks"))
    print(f"| **all** | {total:,} | **{total / tm:.3f}** | {_mb(sum(c['bytes'] for c in files.values()))} |")
    print(f"| **all but logs/, benchmarks/** | {core:,} | **{core / tm:.3f}** | – |")
    h = res["headline"]
    print(f"\ntarget ≤ {TARGETS['files_per_tile_method']} files per tile·method: "
          f"{'met' if h['met']['files_per_tile_method'] else 'missed'}")  # fmt: skip
    rules = res["rules"]
    all_s = sum(r["s"] for r in rules.values())
    print()
    print("| rule (benchmarks/ folder) | jobs | job s (sum) | share | mean s/job | max s/job | cpu s (sum) | peak max_rss MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in sorted(rules.items(), key=lambda kv: -kv[1]["s"]):
        rss = "–" if r["max_rss_mb"] is None else f"{r['max_rss_mb']:,.0f}"
        share = 100 * r["s"] / max(all_s, 1e-9)
        print(f"| `{name}` | {r['jobs']:,} | {r['s']:.1f} | {share:.1f} % | {r['s'] / r['jobs']:.2f} | "
              f"{r['max_job_s']:.1f} | {r['cpu_s']:.1f} | {rss} |")  # fmt: skip
    met = {key: "met" if ok else "missed" for key, ok in h["met"].items()}
    if h["nonmask_over_mask"] is not None:
        print(f"\n(everything but mask jobs) / (mask jobs) = {all_s - h['mask_job_s']:.1f} / {h['mask_job_s']:.1f} s"
              f" = **{100 * h['nonmask_over_mask']:.1f} %** (target ≤ 10 %: {met['nonmask_over_mask']})")  # fmt: skip
    if h.get("nonmask_over_mask_cpu") is not None:
        print(f"by CPU seconds (cpu_time): **{100 * h['nonmask_over_mask_cpu']:.1f} %**")
    if h["peak_rss_nonmask_mb"] is not None:
        print(f"peak max_rss of any job but masks: {h['peak_rss_nonmask_mb']:,.0f} MB "
              f"(target ≤ 2 GB at 10,000 tiles: {met['peak_rss_nonmask_mb']})")  # fmt: skip
    if res["sizes"]:
        print()
        print("| output | files | MB | largest |")
        print("|---|---:|---:|---|")
        for label, s in res["sizes"].items():
            print(f"| {label} | {s['files']} | {_mb(s['bytes'])} | `{s['largest']}` ({_mb(s['largest_bytes'])} MB) |")


# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", help="slide side in px, or 'auto' (default): the smallest side "
                        f">= {MIN_SIDE:,} with >= --min-tiles tissue tiles")  # fmt: skip
    parser.add_argument("--min-tiles", type=int, default=10_000, help="auto size: tissue tiles wanted (default 10,000)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--methods", nargs="+", default=["vanilla", "gradcam"])
    parser.add_argument("--tiles-per-job", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="config threads: per mask job (default 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--min-tissue", type=float, default=0.5, help="tiles.min_tissue (default 0.5)")
    parser.add_argument("--tissue", type=float, default=0.7, help="share of the slide's area that is tissue (0.7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality of the slide (85)")
    parser.add_argument("--gen-workers", type=int, default=1, help="threads encoding the slide's JPEG tiles (1)")
    parser.add_argument("--model", help="model folder (default: resources/demo/model, else trained into the workdir)")
    parser.add_argument("--keep", action="store_true", help="keep the run's outdir (default: removed once counted)")
    parser.add_argument("--dry", action="store_true", help="only build the slide and time the DAG (snakemake -n)")
    parser.add_argument("--no-report", action="store_true", help="skip snakemake --report")
    parser.add_argument("--real-scontrol", action="store_true", help="keep SLURM's scontrol on PATH (snakemake_env)")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model, model_source = obtain_model(args.model, workdir, min(2, args.cores))
    tile_px, tile_um = model_geometry(model)
    extract = round(tile_um / MPP)
    print(f"model: {model_source}; tile_px {tile_px}, tile_um {tile_um:g} → {extract} level-0 px at {MPP} µm/px")

    if args.size == "auto":
        size, predicted = auto_size(extract, args.min_tiles, args.min_tissue, args.seed, args.tissue)
        side_max = grid_count(MIN_SIDE, extract)
        print(f"size auto: {MIN_SIDE:,} px holds {side_max}² = {side_max**2:,} grid tiles at most; "
              f"{size:,} px predicts {predicted:,} tissue tiles (≥ {args.min_tiles:,})")  # fmt: skip
    else:
        size = int(args.size)
        predicted = predicted_tissue_tiles(size, args.seed, args.tissue, extract, args.min_tissue)

    name = f"wsb{size}"
    slides = workdir / "slides"
    slides.mkdir(exist_ok=True)
    key = f"{name}_t{args.tissue:g}_s{args.seed}_q{args.quality}_v{GENERATOR_VERSION}"
    slide_path = slides / f"{key}.svs"
    stats_path = slides / f"{key}.json"
    if slide_path.exists() and stats_path.exists():
        gen = {**json.loads(stats_path.read_text()), "cached": True}
        print(f"slide: {slide_path} (cached; generated in {gen['seconds']:.1f} s)")
    else:
        print(f"writing the slide {slide_path} ({size:,} × {size:,} px) ...", flush=True)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # its own peak RSS
            job = (slide_path, size, args.seed, args.tissue, args.quality, args.gen_workers)
            gen = pool.submit(_write_slide_child, *job).result()
        stats_path.write_text(json.dumps(gen, indent=1) + "\n")
        print(f"  {gen['seconds']:.1f} s, {gen['bytes'] / 2**20:,.1f} MB, peak RSS {gen['peak_rss_mb']:.0f} MB")
    n_tiles, grid_tiles, info = count_tissue_tiles(slide_path, tile_px, tile_um, args.min_tissue)
    print(f"OpenSlide: {info}; grid {grid_tiles:,} tiles, tissue tiles {n_tiles:,} (predicted {predicted:,})")
    if n_tiles < args.min_tiles and args.size == "auto":
        print(f"warning: {n_tiles:,} tissue tiles < --min-tiles {args.min_tiles:,}")

    res: dict[str, Any] = {
        "size": size, "mpp": MPP, "slide_path": str(slide_path), "slide": gen, "openslide": info,
        "model": str(model), "tile_px": tile_px, "tile_um": tile_um, "extract_px": extract,
        "grid_tiles": grid_tiles, "tiles": n_tiles, "predicted_tiles": predicted, "min_tissue": args.min_tissue,
        "methods": args.methods, "tiles_per_job": args.tiles_per_job, "cores": args.cores, "threads": args.threads,
        "dag": {},
    }  # fmt: skip
    run = workdir / f"run_{name}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir()
    configfile = write_project(run, slide_path, name, model, args)
    env = snakemake_env(run, args.real_scontrol)
    res["dag"]["before"] = dry_run(run, configfile, args.cores, env)
    print(f"snakemake -n: {res['dag']['before']['seconds']:.1f} s, jobs {res['dag']['before']['jobs']}", flush=True)
    if not args.dry:
        print(f"running snakemake --cores {args.cores} (log: {run / 'snakemake.log'}) ...", flush=True)
        res["run"] = run_workflow(run, configfile, args.cores, env)
        res["dag"]["after"] = dry_run(run, configfile, args.cores, env)
        outdir = run / "results"
        res["tiles_in_tables"] = tiles_in_tables(outdir)
        if res["tiles_in_tables"] is not None and res["tiles_in_tables"] != n_tiles:
            print(f"warning: the tile tables hold {res['tiles_in_tables']:,} tiles, not {n_tiles:,}; using theirs")
            res["tiles"] = res["tiles_in_tables"]
        res["files"] = file_counts(outdir)
        res["rules"] = rule_benchmarks(outdir)
        tiles_rule = res["rules"].get("tiles")
        res["tiles_per_s"] = round(res["tiles"] / tiles_rule["s"], 2) if tiles_rule and tiles_rule["s"] else None
        res["report"] = None if args.no_report else make_report(run, configfile, outdir, env)
        res["sizes"] = output_sizes(outdir)
        res["headline"] = headline(res)
        if not args.keep:
            shutil.rmtree(outdir)
    out = workdir / f"wholeslide_{size}{'_dry' if args.dry else ''}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print_report(res)
    print(f"\nnumbers: {out}")


if __name__ == "__main__":
    main()
