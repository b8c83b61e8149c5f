"""A run's stored results: one file per job, not one per tile.

* A tiles job writes, per chunk of ``tiles_per_job`` tiles, one ``.npz`` of the chunk's tiles
  (:func:`write_tile_chunk`): ``images`` uint8 ``(N, H, W, 3)``, ``tile`` names and level-0 ``x``, ``y``.
* A mask job (one slide, chunk and method) writes one ``.npz`` (:func:`write_mask_chunk`):

  ========================  ==========================================================================
  ``masks``                 ``(N, H, W)`` float32 in [0, 1], each tile scaled on its own (figures);
                            a ``signed`` method's (the job record says) in [−1, 1], the sign kept
  ``attributions``          ``(N, H, W)`` float32, the channel-reduced raw attribution before that
                            scaling (:func:`slidegrad.methods.reduce`; slide maps scale it per slide)
  ``raw``                   with ``save_raw``: the raw attributions, ``(N, H, W, C)`` or ``(N, H, W)``, in
                            the method's dtype
  ``tile``, ``x``, ``y``    the tiles' names and level-0 top-left corners, ``(N,)``
  ``records``               one JSON object per tile, a line each: class, probabilities, mask stats,
                            geometry (what a per-tile ``.json`` sidecar once held)
  ``job``                   one JSON object: the method (``method``, ``method_name``, ``smooth``,
                            ``signed``), its parameters, the model and the provenance (the same for
                            every tile of the job)
  ========================  ==========================================================================

Why ``.npz`` and not a zarr store: a job's output is then one file, which Snakemake tracks, removes on
failure and reruns as one file (a zarr v3 store is a folder of a ``zarr.json`` plus a file per chunk,
so a job would write several inodes, or a shard rewritten on every append); numpy alone reads it in
every rule's environment; a job writes its arrays once, whole, and readers want a chunk whole, so
zarr's partial reads and appends buy nothing here.  Masks are stored uncompressed (float data barely
compresses; reading stays a copy), tiles with zlib, as PNG would.

:func:`load` reads a slide's results for one method in one call.  Only :class:`~slidegrad.layout.Layout`
knows where the files are.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import InputError, check, quote
from .files import atomic_write
from .layout import Layout

__all__ = ["TileChunk", "TileScores", "MaskChunk", "Results", "write_tile_chunk", "read_tile_chunk", "write_tile_scores",
           "read_tile_scores", "write_mask_chunk", "read_mask_chunk", "read_mask_records", "iter_mask_chunks", "load"]  # fmt: skip

MASK_ARRAYS = ("masks", "attributions", "raw")
_READ_ERRORS = (ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error)


@dataclass
class TileChunk:
    """A chunk's tiles: ``names`` (N), level-0 ``x``, ``y`` int64 ``(N,)``, ``images`` uint8 ``(N, H, W, 3)``."""

    names: list[str]
    x: np.ndarray
    y: np.ndarray
    images: np.ndarray


@dataclass
class MaskChunk:
    """One mask job's results (see the module docstring); arrays not asked for are ``None``.

    ``records``: one dict per tile, the job's fields (``job``) merged into each, so a record is what a
    tile's sidecar held: ``tile``, ``class_idx``, ``class_label``, ``probability``, ``probabilities``, ``mask_mean``,
    ``mask_max``, ``top10_mass`` (signed masks: of ``|mask|``, and ``positive_share``), ``completeness_error``, the
    geometry, ``method``, ``signed``, ``params``, ``outcome_labels``,
    ``model_sha256`` and the provenance."""

    path: Path
    names: list[str]
    x: np.ndarray
    y: np.ndarray
    records: list[dict[str, Any]]
    masks: np.ndarray | None = None
    attributions: np.ndarray | None = None
    raw: np.ndarray | None = None


def _savez(path: str | os.PathLike[str], compressed: bool, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path, "wb", os_errors=True) as handle:  # a full disk: the job's ENOSPC line
        (np.savez_compressed if compressed else np.savez)(handle, **arrays)


def _corrupt(path: str | os.PathLike[str], what: str, err: BaseException) -> InputError:
    from .failures import corrupt_file

    return corrupt_file(path, what, err)


class _Npz:
    """An ``.npz`` open for reading; a missing, truncated or corrupt file, or a missing key, is one
    InputError line naming the file (and the rule that wrote it)."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path, self.what = Path(path), what
        check(self.path.is_file(), f"{what} {quote(self.path)}: file not found (did the job that writes it run?)")
        try:
            self.npz = np.load(self.path, allow_pickle=False)
        except _READ_ERRORS as err:
            raise _corrupt(self.path, what, err) from None

    def __enter__(self) -> _Npz:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.npz.close()

    def has(self, key: str) -> bool:
        return key in self.npz.files

    def get(self, key: str) -> np.ndarray:
        try:
            return self.npz[key]
        except _READ_ERRORS as err:
            if isinstance(err, KeyError):
                raise InputError(f"{self.what} {quote(self.path)}: no array {key!r}; was it written by this version?") from None
            raise _corrupt(self.path, self.what, err) from None

    def json(self, key: str) -> Any:
        try:
            return json.loads(str(self.get(key)))
        except ValueError as err:
            raise _corrupt(self.path, self.what, err) from None


def _coords(names: Sequence[str], x: Sequence[int], y: Sequence[int]) -> dict[str, np.ndarray]:
    check(len(names) == len(x) == len(y), f"results: {len(names)} tile names for {len(x)} x and {len(y)} y")
    return {"tile": np.array(list(names), dtype=str), "x": np.asarray(x, np.int64), "y": np.asarray(y, np.int64)}


# -- tiles ------------------------------------------------------------------------------------------
def write_tile_chunk(path: str | os.PathLike[str], names: Sequence[str], x: Sequence[int], y: Sequence[int],
                     images: np.ndarray) -> None:  # fmt: skip
    """One chunk's tiles as an ``.npz`` (atomic, zlib): ``images`` uint8 ``(N, H, W, 3)``."""
    images = np.asarray(images)
    check(
        images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3 and len(images) == len(names),
        f"tile chunk {quote(path)}: expected {len(names)} uint8 (H, W, 3) tiles, got {images.dtype} {images.shape}",
    )
    _savez(path, True, {**_coords(names, x, y), "images": images})


def read_tile_chunk(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> TileChunk:
    """A chunk's tiles; ``names``: the tiles the tile table gives for it, checked against the file's."""
    with _Npz(path, "tile chunk") as npz:
        chunk = TileChunk(
            [str(n) for n in npz.get("tile")], npz.get("x"), npz.get("y"), npz.get("images")
        )  # fmt: skip
    if names is not None:
        check(
            list(names) == chunk.names,
            f"tile chunk {quote(path)}: holds tiles {_few(chunk.names)}, the tile table says {_few(names)}; "
            "delete the slide's tile table and rerun to tile it again",
        )
    return chunk


@dataclass
class TileScores:
    """top_k: every tissue tile the tiles job scored: level-0 ``x``, ``y`` int64 ``(N,)``, ``probabilities``
    float32 ``(N, C)``, the class ``labels`` (C) and the tiles' side ``extract_px`` in level-0 px."""

    x: np.ndarray
    y: np.ndarray
    probabilities: np.ndarray
    labels: list[str]
    extract_px: int


def write_tile_scores(
    path: str | os.PathLike[str], coords: Sequence[tuple[int, int]], probabilities: np.ndarray,
    labels: Sequence[str], extract_px: int,
) -> None:  # fmt: skip
    """top_k's scores of every tissue tile (``coords`` level-0 ``(x, y)``, ``probabilities`` ``(N, C)``), atomically."""
    xy = np.asarray(coords, np.int64).reshape(-1, 2)
    probs = np.asarray(probabilities, np.float32)
    check(probs.shape == (len(xy), len(labels)), f"tile scores {quote(path)}: expected ({len(xy)}, {len(labels)}) probabilities, got {probs.shape}")
    _savez(path, True, {"x": xy[:, 0], "y": xy[:, 1], "probabilities": probs,
                        "labels": np.array([str(v) for v in labels], dtype=str), "extract_px": np.int64(extract_px)})  # fmt: skip


def read_tile_scores(path: str | os.PathLike[str]) -> TileScores:
    """What :func:`write_tile_scores` wrote."""
    with _Npz(path, "tile scores") as npz:
        return TileScores(
            npz.get("x"), npz.get("y"), npz.get("probabilities"), [str(v) for v in npz.get("labels")],
            int(npz.get("extract_px")),
        )  # fmt: skip


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(list(names)[:3])
    return f"[{shown}{', …' if len(names) > 3 else ''}] ({len(names)})"


# -- masks ------------------------------------------------------------------------------------------
def write_mask_chunk(
    path: str | os.PathLike[str],
    names: Sequence[str],
    x: Sequence[int],
    y: Sequence[int],
    masks: np.ndarray,
    attributions: np.ndarray,
    records: Sequence[dict[str, Any]],
    job: dict[str, Any],
    raw: np.ndarray | None = None,
) -> None:
    """One mask job's ``.npz`` (atomic; see the module docstring for the keys).  ``records``: one
    JSON-able dict per tile; ``job``: the fields shared by every tile."""
    n = len(names)
    for what, array in (("masks", masks), ("attributions", attributions)):
        check(
            array.ndim == 3 and len(array) == n,
            f"mask file {quote(path)}: {what} must be (N, H, W) for {n} tiles, got {array.shape}",
        )
    check(len(records) == n, f"mask file {quote(path)}: {len(records)} records for {n} tiles")
    lines = "\n".join(json.dumps(r, sort_keys=True, allow_nan=False) for r in records)
    arrays = {
        **_coords(names, x, y), "masks": np.asarray(masks, np.float32),
        "attributions": np.asarray(attributions, np.float32), "records": np.array(lines),
        "job": np.array(json.dumps(job, sort_keys=True, allow_nan=False)),
    }  # fmt: skip
    if raw is not None:
        arrays["raw"] = np.asarray(raw)  # as the method gave it (XRAI's is float64)
    _savez(path, False, arrays)


def read_mask_chunk(path: str | os.PathLike[str], arrays: Sequence[str] = ("masks",)) -> MaskChunk:
    """One mask job's results, with the ``arrays`` asked for (of ``masks``, ``attributions``, ``raw``;
    ``raw`` is ``None`` where the job ran without ``save_raw``)."""
    unknown = [a for a in arrays if a not in MASK_ARRAYS]
    check(not unknown, f"results: unknown array(s) {unknown}; expected some of {list(MASK_ARRAYS)}")
    with _Npz(path, "mask file") as npz:
        names = [str(n) for n in npz.get("tile")]
        job = npz.json("job")
        text = str(npz.get("records"))
        try:
            lines = text.split("\n") if names else []
            records = [{**job, **json.loads(line), "tile": name} for name, line in zip(names, lines)]
        except (ValueError, TypeError) as err:  # not JSON, or a line that is no object
            raise _corrupt(path, "mask file", err) from None
        chunk = MaskChunk(Path(path), names, npz.get("x"), npz.get("y"), records)
        for key in arrays:
            if key != "raw" or npz.has("raw"):
                setattr(chunk, key, npz.get(key))
    lengths = {len(lines), len(chunk.x), len(chunk.y)} | {len(getattr(chunk, a)) for a in arrays if getattr(chunk, a) is not None}
    check(lengths <= {len(names)}, f"mask file {quote(path)}: its arrays disagree on the number of tiles")
    return chunk


def read_mask_records(path: str | os.PathLike[str], keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """A mask file's per-tile records (no arrays read); a record missing one of ``keys`` is an InputError."""
    records = read_mask_chunk(path, arrays=()).records
    for record in records[:1]:
        missing = [k for k in keys if k not in record]
        check(not missing, f"mask file {quote(path)}: records miss key(s) {', '.join(missing)}")
    return records


# -- a slide's results ------------------------------------------------------------------------------
@dataclass
class Results:
    """A slide's results for one method, tiles in tile-table order.

    ``masks``: ``(N, H, W)`` float32 in [0, 1] (each tile scaled on its own; a signed method's in [−1, 1]);
    ``attributions``: ``(N, H, W)``
    float32 channel-reduced raw attributions (when asked for, else ``None``); ``tiles``: a pandas
    DataFrame, one row per tile: ``tile``, ``x``, ``y`` (level-0 px, top-left), ``chunk``, ``class_idx``,
    ``class_label``, ``probability``, ``p_<label>`` per class, ``mask_mean``, ``mask_max``, ``top10_mass``,
    ``positive_share`` (signed methods; else ``None``), ``completeness_error`` and the geometry (``tile_px``, ``tile_um``, ``mpp``, ``level``, ``extract_px``)."""

    masks: np.ndarray
    tiles: Any
    attributions: np.ndarray | None = None
    files: list[Path] = field(default_factory=list)


def slide_chunks(outdir: str, slide: str) -> dict[str, list[str]]:
    """The slide's chunk labels and each chunk's tile names, in tile-table order."""
    from .tables import read_tile_table

    table = Layout(outdir).tile_table(slide)
    check(Path(table).is_file(), f"results: slide {slide!r} has no tile table {quote(table)} (did its tiles job run?)")
    chunks: dict[str, list[str]] = {}
    for row in read_tile_table(table):
        chunks.setdefault(row["chunk"], []).append(row["tile"])
    return chunks


def iter_mask_chunks(
    outdir: str, slide: str, method: str, arrays: Sequence[str] = ("masks",)
) -> Iterator[MaskChunk]:
    """The slide's mask files for ``method``, chunk by chunk (one in memory at a time); a file holding
    other tiles than its chunk's rows of the tile table is an InputError."""
    layout = Layout(outdir)
    for chunk, names in slide_chunks(outdir, slide).items():
        result = read_mask_chunk(layout.mask_file(slide, chunk, method), arrays)
        check(
            result.names == names,
            f"mask file {quote(result.path)}: holds tiles {_few(result.names)}, the tile table "
            f"{quote(layout.tile_table(slide))} gives {_few(names)} for {chunk}; delete it and rerun",
        )
        yield result


TILE_COLUMNS = ("class_idx", "class_label", "probability")
STAT_COLUMNS = ("mask_mean", "mask_max", "top10_mass", "positive_share", "completeness_error")
GEOMETRY_KEYS = ("tile_px", "tile_um", "mpp", "level", "extract_px")


def load(outdir: str, slide: str, method: str, attributions: bool = False) -> Results:
    """A slide's masks for ``method`` and the table of its tiles, in one call (see :class:`Results`).

    ``outdir``: the run's output folder; ``method``: a method id of the run (e.g. ``"gradcam"``,
    ``"vanilla_smooth"``).  ``attributions``: also read the channel-reduced raw attributions.
    A missing or corrupt file is one InputError line naming it."""
    import pandas as pd

    wanted = ("masks", "attributions") if attributions else ("masks",)
    masks, raws, rows, files = [], [], [], []
    for chunk_label, chunk in zip(slide_chunks(outdir, slide), iter_mask_chunks(outdir, slide, method, wanted)):
        files.append(chunk.path)
        masks.append(chunk.masks)
        if attributions:
            raws.append(chunk.attributions)
        for name, x, y, record in zip(chunk.names, chunk.x, chunk.y, chunk.records):
            labels = record.get("outcome_labels") or []
            row = {"tile": name, "x": int(x), "y": int(y), "chunk": chunk_label}
            row.update({k: record.get(k) for k in TILE_COLUMNS})
            row.update({f"p_{label}": p for label, p in zip(labels, record.get("probabilities") or [])})
            row.update({k: record.get(k) for k in STAT_COLUMNS + GEOMETRY_KEYS})
            rows.append(row)
    check(bool(rows), f"results: slide {slide!r} has no tiles")
    return Results(
        np.concatenate(masks), pd.DataFrame(rows), np.concatenate(raws) if attributions else None, files
    )  # fmt: skip
