"""Prediction heatmaps: each tile's class probabilities as slide maps, one per class (the library part).

This is what Slideflow's ``sf.Heatmap`` shows.  Tiles' probabilities (the model's softmax outputs,
``(N, C)`` in [0, 1]) are streamed into a :class:`PredictionCanvas` chunk by chunk; it holds one
weighted sum per class and one shared weight, all of map size (:class:`~slidegrad.slide_map.MapGeometry`,
``map_um`` µm per map pixel), so memory is O(C × map) and nothing of the slide's level-0 size.
:func:`prediction_figure` draws the maps, :func:`prediction_overlay` gives one class's map over the
thumbnail as an image, and :func:`write_prediction_npz` / :func:`read_prediction_npz` store them.

Alignment: the saliency slide map's rule (:class:`~slidegrad.slide_map.SlideCanvas`).  A tile's
probability is spread evenly over its own level-0 square ``[x, x + extract_px) × [y, y + extract_px)``;
a map pixel gets the area-weighted mean over the tiles covering it (weight = covered area in map
pixels), so where tiles overlap (``stride_div > 1``) the map is the mean of the overlapping tiles'
probabilities (``stride_div²`` of them inside the grid), and NaN (transparent) where no tile lies.

Where this matches Slideflow (``slideflow/heatmap.py``, ``Heatmap.plot`` and ``Heatmap.save``, as of
slideflow/slideflow 7f5a40b, July 2025):

* one map per class of the model's outcomes, the value being the tile's predicted probability;
* colour map ``coolwarm`` on a fixed range ``vmin=0, vmax=1`` (Slideflow's ``TwoSlopeNorm`` with
  ``vcenter=0.5`` is linear on [0, 1], so the same colours as ``Normalize(0, 1)``): 0.5 is the
  neutral midpoint, blue toward 0, red toward 1, comparable across slides and classes;
* the map drawn over the slide's thumbnail at a constant opacity ``heatmap_alpha=0.6`` inside tiles,
  not smoothed (Slideflow's ``interpolation='none'``; here map pixels are area-averaged onto the
  thumbnail's pixels), nothing drawn where no tile was predicted (Slideflow masks those grid cells);
* the maps stored in a ``.npz`` for later plotting (Slideflow's ``save_npz``: a ``'predictions'``
  grid ``(grid rows, grid cols, C)``).

Where it differs:

* **Tile placement with stride_div > 1.**  Slideflow's prediction grid has one cell per tile
  position, ``stride = extract_px / stride_div`` apart, and (since its ``calculate_heatmap_extent``)
  draws cell ``(i, j)`` as a ``stride``-wide square offset by ``(extract_px − stride) / 2``: the
  tile's central square, ``1 / stride_div`` of its side, centred on the tile's centre.  Its cells never overlap,
  so nothing is averaged, and each tile's value covers only its centre square (its extent also ends
  at ``stride · n`` rather than offset + ``stride · n``, which squeezes the grid by that offset over
  the slide; older releases stretched the grid over the whole thumbnail).  Here each tile covers
  its whole square and overlaps are averaged by area, so the map is smoother and lines up with the
  saliency slide map and the tile boxes of the overview figure.  With ``stride_div = 1`` both place
  each tile's value over its own square (here resampled to ``map_um`` map pixels).
* **Resolution.**  Slideflow's map has one pixel per grid cell; here the map has ``map_um`` µm
  pixels whatever the tile size, the same grid as the saliency slide map.
* **Figure.**  Slideflow saves one figure per class (``{slide}-{i}.png``, plus a ``-solid`` copy at
  opacity 1) over the colour thumbnail; here one figure has one panel per class over a
  faded greyscale thumbnail (so coolwarm's reds are not confused with eosin), with panel titles,
  a shared colour bar labelled "probability" and a µm scale bar.  Slideflow's
  ``plot_with_logit_cmap`` (up to three classes as the R, G, B channels of one image) and its
  uncertainty map are not provided.
"""

from __future__ import annotations

import numbers
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError, check, first_line, quote
from .slide_map import MapGeometry, _Canvas, _coverage

__all__ = [
    "PREDICTION_CMAP",
    "PREDICTION_ALPHA",
    "PredictionCanvas",
    "PredictionMapFile",
    "prediction_maps",
    "prediction_overlay",
    "prediction_figure",
    "write_prediction_npz",
    "read_prediction_npz",
]

PREDICTION_CMAP = "coolwarm"  # Slideflow's Heatmap default
PREDICTION_ALPHA = 0.6  # Slideflow's heatmap_alpha: the map's opacity inside tiles
PROBABILITY_TOLERANCE = 1e-6  # probabilities up to this far outside [0, 1] are float noise (then clipped)
THUMB_CONTRAST = 0.6  # the thumbnail under the maps: its luma at this contrast, towards white
NPZ_VERSION = 1
NPZ_KEYS = ("version", "maps", "labels", "width", "height", "mpp", "map_um")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: reruns write the same bytes


class PredictionCanvas(_Canvas):
    """Class-probability maps being stitched: ``(C, rows, cols)`` weighted sums and one ``(rows, cols)`` weight.

    Memory is ``(C + 1) × rows × cols`` float64 (:attr:`nbytes`), whatever the number of tiles.
    :meth:`add_many` takes one chunk of tiles at a time; :meth:`result` gives the maps so far.
    ``tiles`` counts the tiles added.
    """

    def __init__(self, geometry: MapGeometry, n_classes: int) -> None:
        check(
            isinstance(geometry, MapGeometry), f"prediction map: expected a MapGeometry, got {type(geometry).__name__}"
        )
        ok = isinstance(n_classes, numbers.Integral) and not isinstance(n_classes, bool) and n_classes >= 1
        check(ok, f"prediction map: n_classes must be an integer >= 1, got {n_classes!r}")
        self.geometry = geometry
        self.n_classes = int(n_classes)
        self._sum = np.zeros((self.n_classes, *geometry.shape), np.float64)
        self._weight = np.zeros(geometry.shape, np.float64)
        self.tiles = 0

    def add_many(self, coords: Any, extract_px: float, probabilities: Any) -> None:
        """Stitch a chunk: ``coords`` ``(N, 2)`` level-0 ``(x, y)`` top-left corners, each tile ``extract_px``
        level-0 px a side, ``probabilities`` ``(N, C)`` in [0, 1].

        Every tile is checked before any is added: a bad chunk raises one InputError line and adds
        nothing.  Values within 1e-6 of [0, 1] are clipped into it; NaN, inf or anything further out
        is refused (naming the first such tile), as is a tile outside the slide.
        """
        probs = _check_probabilities(probabilities, self.n_classes)
        points = np.asarray(coords)
        n = probs.shape[0]
        check(
            points.ndim == 2 and points.shape[1:] == (2,) and points.shape[0] == n,
            f"prediction map: coords must be (N, 2) level-0 (x, y) for {n} tiles' probabilities, "
            f"got shape {points.shape}",
        )
        check(
            points.dtype.kind in "iuf",
            f"prediction map: coords must be numbers (level-0 x, y), got dtype {points.dtype}",
        )
        _check_range(probs, points)
        boxes = [self.geometry.tile_box(p[0].item(), p[1].item(), extract_px) for p in points]
        for box, p in zip(boxes, np.clip(probs, 0.0, 1.0)):
            left, top, right, bottom = box
            row0, rows = _coverage(top, bottom, 1)
            col0, cols = _coverage(left, right, 1)
            rows = rows[: self._weight.shape[0] - row0, 0]  # float crumbs past the map only
            cols = cols[: self._weight.shape[1] - col0, 0]
            block = np.outer(rows, cols)
            r_end, c_end = row0 + block.shape[0], col0 + block.shape[1]
            self._sum[:, row0:r_end, col0:c_end] += p[:, None, None] * block
            self._weight[row0:r_end, col0:c_end] += block
            self.tiles += 1

    def result(self) -> np.ndarray:
        """``(C, rows, cols)`` float32: each class's area-weighted mean probability; NaN where no tile lies."""
        out = np.full(self._sum.shape, np.nan, np.float32)
        covered = self._weight > 0
        out[:, covered] = self._sum[:, covered] / self._weight[covered]
        return out


def _check_probabilities(probabilities: Any, n_classes: int | None = None) -> np.ndarray:
    """``probabilities`` as a float64 ``(N, C)`` array (C = ``n_classes`` when given), or one InputError line."""
    array = np.asarray(probabilities)
    check(
        array.dtype.kind in "biuf",
        f"prediction map: probabilities must be numbers, got dtype {array.dtype}",
    )
    check(
        array.ndim == 2 and array.shape[1] >= 1,
        f"prediction map: probabilities must be (N, C) (tiles × classes), got shape {array.shape}",
    )
    check(
        n_classes is None or array.shape[1] == n_classes,
        f"prediction map: probabilities have {array.shape[1]} classes, expected {n_classes} (shape {array.shape})",
    )
    return array.astype(np.float64, copy=False)


def _check_range(probs: np.ndarray, points: np.ndarray) -> None:
    """One InputError line naming the first tile whose probabilities are not finite or not in [0, 1]."""
    finite = np.isfinite(probs).all(axis=1)
    inside = finite & (probs >= -PROBABILITY_TOLERANCE).all(axis=1) & (probs <= 1 + PROBABILITY_TOLERANCE).all(axis=1)
    if inside.all():
        return
    i = int(np.argmin(inside))
    where = f"prediction map: tile {i} at x={points[i, 0].item()}, y={points[i, 1].item()}"
    if not finite[i]:
        raise InputError(f"{where}: probabilities hold NaN or inf; expected finite probabilities in [0, 1]")
    values = ", ".join(f"{v:.6g}" for v in probs[i])
    raise InputError(f"{where}: probabilities ({values}) are outside [0, 1]; expected softmax/sigmoid outputs")


def prediction_maps(geometry: MapGeometry, coords: Any, extract_px: float, probabilities: Any) -> np.ndarray:
    """Tiles' class probabilities as ``(C, rows, cols)`` float32 slide maps (see the module docstring).

    ``coords``: ``(N, 2)`` level-0 ``(x, y)`` top-left corners; ``extract_px``: the tiles' side in
    level-0 pixels; ``probabilities``: ``(N, C)`` in [0, 1].  Each tile's probability is spread over
    its square, overlapping tiles are averaged by covered area, and pixels no tile covers are NaN.
    For tiles streamed in chunks, use :class:`PredictionCanvas` (this is one :meth:`~PredictionCanvas.add_many`).
    """
    probs = _check_probabilities(probabilities)
    canvas = PredictionCanvas(geometry, probs.shape[1])
    canvas.add_many(coords, extract_px, probs)
    return canvas.result()


# -- checks shared by the figure, the overlay and the file ------------------------------------------
def _check_maps(maps: Any, geometry: MapGeometry, where: str = "prediction map") -> np.ndarray:
    """``maps`` as float32 ``(C, rows, cols)`` on ``geometry``'s grid, values in [0, 1] or NaN; else one line."""
    check(isinstance(geometry, MapGeometry), f"{where}: expected a MapGeometry, got {type(geometry).__name__}")
    array = np.asarray(maps)
    check(array.dtype.kind in "biuf", f"{where}: maps must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    check(
        array.ndim == 3 and array.shape[0] >= 1 and array.shape[1:] == geometry.shape,
        f"{where}: maps must be (C, rows, cols) with (rows, cols) = the geometry's {geometry.shape}, "
        f"got shape {array.shape}",
    )
    finite = array[~np.isnan(array)]
    check(
        bool(((finite >= 0) & (finite <= 1)).all()),
        f"{where}: map values must be probabilities in [0, 1] or NaN (no tile)",
    )
    return array


def _check_labels(labels: Any, n_classes: int, where: str = "prediction map") -> list[str]:
    ok = not isinstance(labels, (str, bytes)) and isinstance(labels, Sequence | np.ndarray)
    check(ok, f"{where}: labels must be a list of class names, got {type(labels).__name__}")
    names = [str(label) for label in labels]
    check(len(names) == n_classes, f"{where}: {len(names)} labels for {n_classes} class maps; expected one per class")
    return names


def _faded(thumbnail: np.ndarray, contrast: float = THUMB_CONTRAST) -> np.ndarray:
    """The thumbnail in grey: its luma at ``contrast``, towards white (uint8 RGB)."""
    luma = thumbnail[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = 255 - contrast * (255 - luma)
    return np.repeat(np.clip(grey.round(), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _check_thumbnail(thumbnail: Any, geometry: MapGeometry) -> np.ndarray:
    image = np.asarray(thumbnail)
    check(
        image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and min(image.shape[:2]) > 0,
        f"prediction map: thumbnail must be uint8 (h, w, 3), got {image.dtype} {image.shape}",
    )
    h, w = image.shape[:2]
    check(
        abs(h - w * geometry.height / geometry.width) <= 1.0 + 1e-9,
        f"prediction map: thumbnail {w} x {h} px does not have the slide's aspect "
        f"({geometry.width} x {geometry.height}); expected a thumbnail of the whole slide",
    )
    return image


def prediction_overlay(
    thumbnail: np.ndarray,
    class_map: np.ndarray,
    geometry: MapGeometry,
    cmap: str = PREDICTION_CMAP,
    alpha: float = PREDICTION_ALPHA,
    fade: bool = True,
) -> np.ndarray:
    """One class's probability map over the slide thumbnail: uint8 RGB ``(h, w, 3)``, the thumbnail's size.

    ``class_map``: ``(rows, cols)`` probabilities in [0, 1], NaN outside tiles (one entry of
    :func:`prediction_maps`), drawn as is (no rescaling: 0 and 1 are the colour map's ends).
    :func:`slidegrad.slide_map.map_overlay` blends it at ``alpha`` inside tiles; outside tiles the
    thumbnail shows unchanged.  ``fade``: the thumbnail in light grey (as in :func:`prediction_figure`),
    else in colour (Slideflow's look).  For a transparent RGBA layer of the map alone, use
    :func:`slidegrad.slide_map.map_rgba` with ``cmap``.
    """
    from .slide_map import map_overlay

    image = _check_thumbnail(thumbnail, geometry)
    maps = _check_maps(np.asarray(class_map)[None], geometry)
    return map_overlay(_faded(image) if fade else image, maps[0], geometry, cmap, alpha)


def _blended_cmap(cmap: str, alpha: float) -> Any:
    """``cmap``'s colours at ``alpha`` over white: the colour bar as the maps look over the light background."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colours = colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return ListedColormap((1 - alpha) + alpha * colours, name=f"{cmap}_alpha")


def _panel_grid(n_panels: int) -> tuple[int, int]:
    """``(rows, cols)`` of panels: one row up to 3 classes, 2 x 2 for 4, then rows of 3 (4 past 9 classes)."""
    n_cols = n_panels if n_panels <= 3 else 2 if n_panels == 4 else 3 if n_panels <= 9 else 4
    return -(-n_panels // n_cols), n_cols


def prediction_figure(
    thumbnail: np.ndarray,
    maps: np.ndarray,
    labels: Sequence[str],
    geometry: MapGeometry,
    out_paths: Sequence[str | os.PathLike[str]],
    cmap: str = PREDICTION_CMAP,
    alpha: float = PREDICTION_ALPHA,
    title: str = "",
    dpi: int = 300,
    panel_inches: float = 2.4,
) -> Any:
    """The prediction heatmap figure: one panel per class, each the class's probability over the slide.

    ``thumbnail``: uint8 ``(h, w, 3)`` of the whole slide; ``maps``: ``(C, rows, cols)`` from
    :func:`prediction_maps` (or :func:`read_prediction_npz`); ``labels``: C class names (the panel
    titles).  Each panel is :func:`prediction_overlay` (the faded thumbnail, the map at ``alpha``
    inside tiles, the slide as is outside them) with a µm scale bar; one colour bar (``cmap`` on
    [0, 1], drawn at ``alpha`` over white, as the maps look over the background) labelled
    "probability".  Saved to each of ``out_paths`` (.png, .pdf or .svg; png at ``dpi``) with
    :func:`slidegrad.plot.save_figures`, so reruns are byte-identical; ``out_paths`` may be empty.

    Returns the :class:`matplotlib.figure.Figure` (not registered with pyplot: nothing to close).
    """
    from matplotlib import patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from . import plot
    from .slide_map import map_overlay

    plot.check_cmap(cmap)
    alpha = plot.check_alpha(alpha)
    image = _check_thumbnail(thumbnail, geometry)
    array = _check_maps(maps, geometry)
    names = _check_labels(labels, array.shape[0])
    check(
        isinstance(panel_inches, numbers.Real) and not isinstance(panel_inches, bool) and panel_inches > 0,
        f"prediction figure: panel_inches must be a number > 0, got {panel_inches!r}",
    )
    check(
        not isinstance(out_paths, (str, bytes, os.PathLike)),
        f"prediction figure: out_paths must be a list of file names, got {out_paths!r}",
    )
    for path in out_paths:
        check(
            Path(path).suffix.lower() in plot.FIGURE_FORMATS,
            f"figure {quote(path)}: expected a .pdf, .png or .svg file name",
        )
    h, w = image.shape[:2]
    grey = _faded(image)
    n_rows, n_cols = _panel_grid(len(names))
    aspect = h / w
    bar_inches = 0.75
    fig = Figure(
        figsize=(panel_inches * n_cols + bar_inches, panel_inches * aspect * n_rows + (0.55 if title else 0.3)),
        layout="constrained",
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    um_per_px = float(geometry.mpp) * geometry.width / w  # type: ignore[arg-type]
    halo = [patheffects.withStroke(linewidth=1.6, foreground="white")]  # readable over dark tissue
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_axis_off()
            continue
        ax.imshow(map_overlay(grey, array[i], geometry, cmap, alpha), extent=(0, w, h, 0), interpolation="antialiased")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.4)
        ax.set_title(names[i], fontsize=8)
        plot.add_scale_bar(ax, um_per_px, w)
        ax.lines[-1].set_path_effects(halo)
        ax.texts[-1].set_path_effects(halo)
        ax.texts[-1].set_fontsize(6)
    shown = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=_blended_cmap(cmap, alpha))
    bar = fig.colorbar(shown, ax=axes, shrink=0.8 if n_rows == 1 else 0.5, fraction=0.05, pad=0.02, aspect=18)
    bar.set_label("probability", fontsize=7)
    bar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=6, width=0.4, length=2)
    bar.outline.set_linewidth(0.4)
    if title:
        fig.suptitle(title, fontsize=8)
    plot.save_figures(fig, list(out_paths), dpi=dpi)
    return fig


# -- the .npz file ---------------------------------------------------------------------------------
class PredictionMapFile(NamedTuple):
    """What :func:`read_prediction_npz` returns."""

    maps: np.ndarray  # (C, rows, cols) float32, probabilities in [0, 1], NaN where no tile lies
    labels: list[str]  # C class names
    geometry: MapGeometry


def write_prediction_npz(
    path: str | os.PathLike[str], maps: np.ndarray, labels: Sequence[str], geometry: MapGeometry
) -> None:
    """Store the maps, their class labels and geometry in one ``.npz``, atomically and deterministically.

    Keys: ``maps`` float32 ``(C, rows, cols)``, ``labels`` unicode ``(C,)``, ``width``, ``height``
    (int64, the slide's level-0 size), ``mpp``, ``map_um`` (float64) and ``version`` (1).  Readable
    with ``np.load(path, allow_pickle=False)``; members are deflated and dated 1980-01-01, so
    rewriting the same maps gives the same bytes.
    """
    from .files import atomic_write

    array = _check_maps(maps, geometry)
    names = _check_labels(labels, array.shape[0])
    members = {
        "version": np.array(NPZ_VERSION, np.int64),
        "maps": np.ascontiguousarray(array, np.float32),
        "labels": np.array(names, dtype=np.str_),
        "width": np.array(geometry.width, np.int64),
        "height": np.array(geometry.height, np.int64),
        "mpp": np.array(geometry.mpp, np.float64),
        "map_um": np.array(geometry.map_um, np.float64),
    }
    with atomic_write(path, "wb", where=f"prediction map {quote(path)}") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, value in members.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)


_LOAD_ERRORS = (ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)  # a short or garbled .npz


def read_prediction_npz(path: str | os.PathLike[str]) -> PredictionMapFile:
    """The maps, labels and geometry :func:`write_prediction_npz` stored in ``path``.

    A missing, unreadable, truncated or corrupt file, or one that is not such a file (keys, shapes,
    values), raises one InputError line naming it (:func:`slidegrad.failures.corrupt_file`).
    """
    from .failures import corrupt_file

    what = "prediction map"
    name = quote(path)
    check(Path(path).is_file(), f"{what} {name}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy
            raise InputError(f"{what} {name}: not a .npz archive; expected a file written by write_prediction_npz")
        with data:
            missing = [key for key in NPZ_KEYS if key not in data.files]
            if missing:
                raise InputError(
                    f"{what} {name}: not a slidegrad prediction map file (no {', '.join(missing)}); "
                    f"expected keys {', '.join(NPZ_KEYS)}"
                )
            loaded = {key: data[key] for key in NPZ_KEYS}  # members are read (and checked) here
    except InputError:
        raise
    except _LOAD_ERRORS as err:
        raise corrupt_file(path, what, err) from None
    except OSError as err:
        raise InputError(f"{what} {name}: cannot read ({first_line(err)})") from None
    version = loaded["version"]
    check(
        version.shape == () and version.dtype.kind in "iu" and int(version) == NPZ_VERSION,
        f"{what} {name}: format version {version!r}, expected {NPZ_VERSION}",
    )
    try:
        scalars = [loaded[key] for key in ("width", "height", "mpp", "map_um")]
        if any(value.shape != () or value.dtype.kind not in "iuf" for value in scalars):
            raise InputError("width, height, mpp and map_um must be numbers")
        width, height, mpp, map_um = (value.item() for value in scalars)
        geometry = MapGeometry(width, height, mpp, map_um)
        maps = _check_maps(loaded["maps"], geometry, where="maps")
        labels_array = loaded["labels"]
        if labels_array.dtype.kind != "U" or labels_array.ndim != 1:
            raise InputError(f"labels must be a 1-D array of strings, got {labels_array.dtype} {labels_array.shape}")
        labels = _check_labels(labels_array.tolist(), maps.shape[0], where="labels")
    except InputError as err:
        raise InputError(f"{what} {name}: {first_line(err, 300)}") from None
    return PredictionMapFile(maps, labels, geometry)
