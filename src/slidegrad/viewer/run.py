"""What the viewer knows of a run: its slides, methods, maps, explained tiles and evaluation rows.

Every file the viewer reads is named here from :class:`~slidegrad.layout.Layout` and the run's config
(the sample sheet's slides, the model): a request only ever names a slide, a method, a class, a tile
or a level, each checked against what the run has (:class:`NotFound` otherwise); no request's text
becomes a path.  :meth:`Run.output_file` is the one place a request's path is resolved, and it
refuses anything whose real path leaves the outdir (``..``, absolute paths, symlinks out).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, check, quote
from ..layout import Layout


LAYER_CACHE = 32  # layer Deep Zoom generators kept (slide, layer, colour map)


class NotFound(Exception):
    """A request names something the run does not have (HTTP 404)."""


@functools.cache
def _rgba_deepzoom_classes() -> tuple[Any, Any]:
    import openslide
    from openslide.deepzoom import DeepZoomGenerator
    from PIL import Image

    lanczos = getattr(Image, "Resampling", Image).LANCZOS

    class PyramidImageSlide(openslide.ImageSlide):  # type: ignore[misc]
        """``openslide.ImageSlide`` over an RGBA image with a pyramid: level ``k`` is the image
        LANCZOS-halved ``k`` times (``ceil(W / 2^k) × ceil(H / 2^k)``, downsample exactly ``2^k``) down
        to one Deep Zoom tile, so that ``DeepZoomGenerator`` reads a lower level's tile from a small
        level as it does from a slide's pyramid, not the whole map (one level: 120 ms a tile at 2k px).
        Level 0 is the image itself; ``read_region`` crops the level asked for, transparent beyond the
        image as ``ImageSlide``'s (no shared state: requests run in threads)."""

        def __init__(self, image: Any) -> None:
            super().__init__(image)
            self._levels = [image]
            while max(self._levels[-1].size) > 254:
                w, h = self._levels[-1].size
                self._levels.append(self._levels[-1].resize(((w + 1) // 2, (h + 1) // 2), lanczos))

        @property
        def level_count(self) -> int:
            return len(self._levels)

        @property
        def level_dimensions(self) -> tuple[tuple[int, int], ...]:
            return tuple(level.size for level in self._levels)

        @property
        def level_downsamples(self) -> tuple[float, ...]:
            return tuple(float(2**k) for k in range(len(self._levels)))

        def get_best_level_for_downsample(self, downsample: float) -> int:
            return max(k for k in range(len(self._levels)) if 2**k <= downsample * (1 + 1e-9) or k == 0)

        def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
            if not (0 <= level < len(self._levels)):
                raise openslide.OpenSlideError("Invalid level")
            x, y = location[0] >> level, location[1] >> level  # level-0 → level k: exact (2^k)
            return self._levels[level].crop((x, y, x + size[0], y + size[1]))  # zeros (transparent) beyond

    class RGBADeepZoom(DeepZoomGenerator):  # type: ignore[misc]
        """OpenSlide's ``DeepZoomGenerator`` whose tiles keep their alpha.

        ``DeepZoomGenerator.get_tile`` composites every tile onto an opaque background (white by
        default; checked with openslide-python 1.4.7), which would hide the slide outside a layer's
        tiles.  This ``get_tile`` is the same but for that step: the generator's own level and tile
        arithmetic (``get_tile_coordinates``, ``get_tile_dimensions``), ``read_region`` of the slide
        (RGBA, transparent beyond the image) and LANCZOS where the level read is not the tile's size
        (Pillow resizes RGBA premultiplied, so transparent pixels do not bleed black).  It resizes to
        exactly ``get_tile_dimensions`` where ``get_tile``'s ``thumbnail`` keeps the aspect ratio and can
        come out a pixel short (a 517 × 300 region to 130 × 75 gives 129 × 75).
        """

        def get_tile(self, level: int, address: tuple[int, int]) -> Any:
            location, slide_level, size = self.get_tile_coordinates(level, address)
            tile = self._osr.read_region(location, slide_level, size)
            z_size = self.get_tile_dimensions(level, address)
            if tile.size != z_size:
                tile = tile.resize(z_size, lanczos)
            return tile

    return PyramidImageSlide, RGBADeepZoom


def rgba_deepzoom(rgba: np.ndarray) -> Any:
    """Deep Zoom over an RGBA image (``(rows, cols, 4)`` uint8): the alpha-keeping ``DeepZoomGenerator``
    above over an ``openslide.ImageSlide`` of it with a pyramid; 254 px tiles, 1 px overlap, no bounds
    (the slide's).  The full-resolution Deep Zoom level is the image, pixel for pixel."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8))
    image.load()
    slide_class, generator_class = _rgba_deepzoom_classes()
    return generator_class(slide_class(image), tile_size=254, overlap=1, limit_bounds=False)


@dataclass
class SlideInfo:
    """One slide of the run: where its file is, its level-0 size, the tiles' geometry and outputs."""

    name: str
    path: Path
    mpp: float | None
    width: int = 0
    height: int = 0
    geometry: dict[str, Any] = field(default_factory=dict)  # tile_px, tile_um, mpp, level, extract_px
    methods: list[str] = field(default_factory=list)  # method ids with mask files
    map_methods: list[str] = field(default_factory=list)  # method ids with a slide map
    classes: list[str] = field(default_factory=list)  # prediction map's class labels
    tiles: list[dict[str, Any]] = field(default_factory=list)  # explained tiles (tile table + records)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    check(path.is_file(), f"view: config {quote(path)} not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"view: config {quote(path)} is not YAML: {str(err).splitlines()[0]}") from None
    check(isinstance(config, dict), f"view: config {quote(path)} must be a mapping")
    return config


class Run:
    """A run's outputs under ``outdir`` with its config (``config``: the Snakefile's config file) and model.

    ``workdir``: the folder Snakemake ran in, against which the config's relative paths (sample sheet,
    slides, model) resolve; default the config file's folder's, else the current folder.
    """

    def __init__(
        self,
        outdir: str | os.PathLike[str],
        config: str | os.PathLike[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        samples: str | os.PathLike[str] | None = None,
    ) -> None:
        self.outdir = Path(outdir).resolve()
        check(self.outdir.is_dir(), f"view: outdir {quote(outdir)} is not a folder")
        self.layout = Layout(str(self.outdir))
        self._lock = threading.Lock()
        self._cache: dict[tuple, Any] = {}
        self._layers: OrderedDict[tuple, Any] = OrderedDict()
        config_path = Path(config).resolve() if config else None
        self.config = _read_config(config_path)
        self.workdir = Path(workdir).resolve() if workdir else Path.cwd().resolve()
        sheet = samples or self.config.get("samples")
        check(bool(sheet), "view: no sample sheet: give --config (the run's config.yaml) or --samples")
        from ..tables import read_samples

        sheet_path = self._resolve(sheet)
        self.samples_path = sheet_path
        samples_rows = read_samples(str(sheet_path))
        model_path = model or (self.config.get("model") or {}).get("path")
        self.model_path = self._resolve(model_path) if model_path else None
        self.slides: dict[str, SlideInfo] = {}
        for name, row in samples_rows.items():
            if Path(self.layout.tile_table(name)).is_file():
                self.slides[name] = self._slide(name, self._resolve(row.path), row.mpp)
        check(bool(self.slides), f"view: no slide of {quote(sheet_path)} has a tile table under {quote(self.outdir)}")
        self.evaluation = self._evaluation()

    # -- paths ------------------------------------------------------------------------------
    def _resolve(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        return (p if p.is_absolute() else self.workdir / p).resolve()

    def output_file(self, relative: str) -> Path:
        """A file under the outdir by its relative path (a URL's); NotFound for anything else: ``..``,
        an absolute path, a symlink whose target leaves the outdir, a folder, a missing file."""
        if not relative or relative.startswith(("/", "\\")) or "\x00" in relative or ":" in relative:
            raise NotFound(relative)
        parts = Path(relative).parts
        if any(part in ("..", ".") for part in parts):
            raise NotFound(relative)
        path = (self.outdir / relative).resolve()
        if not _inside(path, self.outdir) or not path.is_file():
            raise NotFound(relative)
        return path

    # -- slides -----------------------------------------------------------------------------
    def _slide(self, name: str, path: Path, mpp: float | None) -> SlideInfo:
        from ..tables import read_tile_table, row_geometry

        info = SlideInfo(name, path, mpp)
        rows = read_tile_table(self.layout.tile_table(name))
        if rows:
            info.geometry = row_geometry(rows[0])
        masks_root = Path(self.layout.mask_file(name, "c", "m")).parent.parent
        methods = sorted(p.name for p in masks_root.iterdir() if p.is_dir()) if masks_root.is_dir() else []
        info.methods = methods
        info.map_methods = [m for m in methods if Path(self.layout.slide_map(name, m, "npz")).is_file()]
        if Path(self.layout.prediction_map(name, "npz")).is_file():
            info.classes = list(self.prediction(name).labels)
        records: dict[str, dict[str, Any]] = {}
        for method in methods[:1]:
            from ..results import iter_mask_chunks

            try:
                for chunk in iter_mask_chunks(str(self.outdir), name, method, ()):
                    for record in chunk.records:
                        records[record["tile"]] = record
            except InputError:
                pass
        for row in rows:
            record = records.get(row["tile"])
            if record is None:
                continue
            info.tiles.append({
                "tile": row["tile"], "x": int(row["x"]), "y": int(row["y"]), "chunk": row["chunk"],
                "size": float(row.get("extract_px") or info.geometry.get("extract_px") or 0),
                "class_idx": record.get("class_idx"), "class_label": record.get("class_label"),
                "probabilities": record.get("probabilities"), "labels": record.get("outcome_labels"),
            })  # fmt: skip
        return info

    def slide(self, name: str) -> SlideInfo:
        if name not in self.slides:
            raise NotFound(f"slide {name!r}")
        return self.slides[name]

    def method(self, slide: SlideInfo, method: str, need_map: bool = False) -> str:
        if method not in (slide.map_methods if need_map else slide.methods):
            raise NotFound(f"method {method!r} of slide {slide.name!r}")
        return method

    def tile(self, slide: SlideInfo, tile: str) -> dict[str, Any]:
        for t in slide.tiles:
            if t["tile"] == tile:
                return t
        raise NotFound(f"tile {tile!r} of slide {slide.name!r}")

    def tile_at(self, slide: SlideInfo, x: float, y: float) -> dict[str, Any] | None:
        """The explained tile under level-0 ``(x, y)`` (the last one drawn where tiles overlap)."""
        found = None
        for t in slide.tiles:
            if t["x"] <= x < t["x"] + t["size"] and t["y"] <= y < t["y"] + t["size"]:
                found = t
        return found

    # -- cached readers ---------------------------------------------------------------------
    def _cached(self, key: tuple, make: Any) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
        return value

    def deepzoom(self, slide: SlideInfo) -> Any:
        """OpenSlide's own DeepZoomGenerator over the slide file (254 px tiles, 1 px overlap, no bounds)."""

        def make() -> Any:
            import openslide
            from openslide.deepzoom import DeepZoomGenerator

            try:
                handle = openslide.OpenSlide(str(slide.path))
            except (openslide.OpenSlideError, OSError) as err:
                raise InputError(f"view: slide {quote(slide.path)}: {err}") from None
            slide.width, slide.height = handle.dimensions
            return DeepZoomGenerator(handle, tile_size=254, overlap=1, limit_bounds=False)

        return self._cached(("dz", slide.name), make)

    def layer_deepzoom(self, slide: SlideInfo, kind: str, key: str, cmap: str) -> Any:
        """A layer (a method's saliency map or a class's prediction map, coloured with ``cmap``) as Deep
        Zoom: :func:`rgba_deepzoom`: ``openslide.ImageSlide`` of the map's RGBA image, one level-0
        pixel per map pixel (``cols × rows``), 254 px tiles, 1 px overlap, like the slide's.  The last
        :data:`LAYER_CACHE` generators are kept (a 2k-px map's RGBA image is ~16 MB)."""
        from ..slide_map import map_rgba

        signed = False
        if kind == "saliency":
            method = self.method(slide, key, need_map=True)
            values, signed = self.saliency_map(slide, method)[0], self.map_signed(slide, method)
        elif kind == "prediction":
            if not slide.classes or not key.isdigit() or int(key) >= len(slide.classes):
                raise NotFound(f"class {key!r} of slide {slide.name!r}")
            values = self.prediction(slide.name).maps[int(key)]
        else:
            raise NotFound(f"layer kind {kind!r}")
        cache_key = (slide.name, kind, key, cmap)
        with self._lock:
            if cache_key in self._layers:
                self._layers.move_to_end(cache_key)
                return self._layers[cache_key]
        dz = rgba_deepzoom(map_rgba(values, cmap, signed))  # signed: in plot.signed_cmap(cmap), on [-1, 1]
        with self._lock:
            self._layers[cache_key] = dz
            while len(self._layers) > LAYER_CACHE:
                self._layers.popitem(last=False)
        return dz

    def saliency_map(self, slide: SlideInfo, method: str) -> tuple[np.ndarray, float, Any]:
        """``(values in [0, 1] with NaN outside tiles, raw values, geometry)`` of a method's slide map
        (a signed map's values in [−1, 1], :meth:`map_signed`)."""
        from ..slide_map import read_map_npz
        from ..slide_map import normalise

        def make() -> Any:
            values, scale, geometry = read_map_npz(self.layout.slide_map(slide.name, method, "npz"))
            return normalise(values, scale, self.map_signed(slide, method)), values, geometry

        return self._cached(("map", slide.name, method), make)

    def map_signed(self, slide: SlideInfo, method: str) -> bool:
        """Whether a method's slide map is signed (its ``.npz`` says; drawn with a diverging colour map)."""
        from ..slide_map import read_map_signed

        path = self.layout.slide_map(slide.name, method, "npz")
        return self._cached(("map_signed", slide.name, method), lambda: read_map_signed(path))

    def prediction(self, name: str) -> Any:
        from ..prediction_map import read_prediction_npz

        return self._cached(("pred", name), lambda: read_prediction_npz(self.layout.prediction_map(name, "npz")))

    def _evaluation(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Evaluation rows by ``(slide, tile)`` (empty without ``evaluation.csv``)."""
        path = Path(self.layout.evaluation())
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if not path.is_file():
            return rows
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                rows.setdefault((row.get("slide", ""), row.get("tile", "")), []).append(dict(row))
        return rows

    def masks(self, slide: SlideInfo, tile: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The tile's mask and record for every method of the run: ``{method: {mask, record}}``."""
        from ..results import read_mask_chunk

        out = {}
        for method in slide.methods:
            chunk = self._cached(
                ("chunk", slide.name, method, tile["chunk"]),
                lambda: read_mask_chunk(self.layout.mask_file(slide.name, tile["chunk"], method), ("masks",)),
            )
            if tile["tile"] in chunk.names:
                i = chunk.names.index(tile["tile"])
                out[method] = {"mask": chunk.masks[i], "record": chunk.records[i]}
        return out

    def tile_image(self, slide: SlideInfo, tile: dict[str, Any]) -> np.ndarray:
        from ..results import read_tile_chunk

        chunk = self._cached(
            ("tiles", slide.name, tile["chunk"]),
            lambda: read_tile_chunk(self.layout.tile_chunk(slide.name, tile["chunk"])),
        )
        if tile["tile"] not in chunk.names:
            raise NotFound(f"tile {tile['tile']!r} image")
        return chunk.images[chunk.names.index(tile["tile"])]

    # -- summaries --------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        from ..plot import DIVERGING_CMAP

        slides = []
        for s in self.slides.values():
            self.deepzoom(s)  # sets width, height
            layers = []
            for m in s.map_methods:
                _, _, g = self.saliency_map(s, m)
                layers.append({"kind": "saliency", "key": m, "label": m, "map_width": g.shape[1] * g.scale,
                               "cmap": DIVERGING_CMAP if self.map_signed(s, m) else "inferno"})  # fmt: skip
            if s.classes:
                pred = self.prediction(s.name)
                g = pred.geometry
                for k, label in enumerate(s.classes):
                    layers.append({"kind": "prediction", "key": str(k), "label": f"p({label})",
                                   "map_width": g.shape[1] * g.scale, "cmap": "coolwarm"})  # fmt: skip
            slides.append({
                "name": s.name, "width": s.width, "height": s.height, "methods": s.methods, "layers": layers,
                "extract_px": s.geometry.get("extract_px"), "tiles": s.tiles,
            })  # fmt: skip
        return {"slides": slides, "model": self.model_path is not None}


def value_at(values: np.ndarray, geometry: Any, x: float, y: float) -> float | None:
    """A map's value at level-0 ``(x, y)``; None outside the map or where no tile covers it."""
    r, c = int(math.floor(y / geometry.scale)), int(math.floor(x / geometry.scale))
    if not (0 <= r < values.shape[-2] and 0 <= c < values.shape[-1]):
        return None
    v = float(values[..., r, c]) if values.ndim == 2 else None
    return None if v is None or math.isnan(v) else v


def to_json(value: Any) -> Any:
    """Numpy scalars and arrays made JSON-safe (NaN → None)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, np.integer):
        return int(value)
    return value


json_dumps = json.dumps
