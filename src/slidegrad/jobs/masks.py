"""The mask job: one (slide, chunk, method); the model loads once, one results file is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..config import MethodSpec
from ..errors import InputError, check, listed, nonfinite_tiles
from ..methods import get_method, reduce
from ..model import model_params
from ..progress import LOGGER, Progress
from ..results import read_tile_chunk, write_mask_chunk
from ..tables import read_tile_table, row_geometry
from .common import budget_bytes, claim_device, load_with_threads, software_versions
from .summary import mask_stats


@dataclass
class ChunkInput:
    """What a model job over one chunk starts from: the loaded model, the chunk's tile-table rows,
    their tile names, level-0 ``x``, ``y`` ``(N,)`` and the tiles, uint8 ``(N, H, W, 3)``."""

    model: Any
    rows: list[dict[str, str]]
    names: list[str]
    x: np.ndarray
    y: np.ndarray
    images: np.ndarray


def load_chunk(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_file: str,
    load_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> ChunkInput:
    """Pin ``threads``, load the model once and read ``chunk``'s tiles from ``tile_file`` (the chunk's
    tiles, :func:`slidegrad.results.write_tile_chunk`); a chunk with no tiles, tiles other than the
    table's, or tiles of another size than the model's ``tile_px``, is an :class:`InputError`."""
    model = load_with_threads(model_params(model_path), threads, load_options)
    rows = read_tile_table(table_path, chunk)
    names = [row["tile"] for row in rows]
    check(bool(names), f"tile table '{table_path}': no tiles in {chunk}")
    tiles = read_tile_chunk(tile_file, names)
    images = tiles.images
    if model.tile_px is not None:
        check(
            images.shape[1] == model.tile_px,
            f"model '{model_path}': expects {model.tile_px} px tiles, got {images.shape[1]} px tiles",
        )
    return ChunkInput(model, rows, names, tiles.x, tiles.y, images)


def model_input(model: Any, model_path: str, images: np.ndarray, slide: str, names: Sequence[str]) -> np.ndarray:
    """Tiles as the model sees them: its stain normaliser (if any), then its preprocessing → float32
    ``(N, H, W, 3)``.  A tile the normaliser cannot normalise is one InputError line naming it."""
    from ..model import get_preprocess_fn
    from ..stain import BlankTileError

    try:
        return get_preprocess_fn(model)(images)
    except BlankTileError as err:
        raise InputError(
            f"model '{model_path}': stain normalizer {model.normalizer.method!r} cannot normalise slide '{slide}' "
            f"tile(s) {listed([names[i] for i in err.indices])}: blank (no stain or no contrast)"
        ) from None


def run_mask_job(
    model_path: str,
    table_path: str,
    chunk: str,
    tile_file: str,
    method: MethodSpec,
    out_file: str,
    class_idx: int | None = None,
    device: str = "auto",
    engine: str = "native",
    threads: int | None = None,
    memory_budget_mb: int | None = None,
    save_raw: bool = False,
    load_options: dict[str, Any] | None = None,
    lock_dir: str | None = None,
) -> None:
    """Load the model once, compute ``method`` for every tile of ``chunk`` (its tiles: ``tile_file``),
    write one results file, ``out_file`` (:func:`slidegrad.results.write_mask_chunk`).

    ``load_options``: :func:`~slidegrad.model.load_model` keywords (preprocessing, architecture, allow_code,
    tile_px).  On CUDA the job takes a GPU of its own (lock files in ``lock_dir``).  NaN or inf model
    outputs or attributions are an error naming the slide, tiles and model.

    It holds the masks (``(N, H, W)`` float32 in [0, 1]; a ``signed`` method's in [−1, 1]), the channel-reduced
    attributions (signed: the sign kept), with
    ``save_raw`` the raw attributions, and per tile a record: class, probabilities, mask statistics,
    geometry; the method's parameters, model hash and provenance once for the job.
    """
    from ..completeness import completeness_errors
    from ..saliency import NonFiniteError, SaliencyMap

    job = load_chunk(model_path, table_path, chunk, tile_file, load_options, threads)
    model, rows, names, images = job.model, job.rows, job.names, job.images
    batch = model_input(model, model_path, images, rows[0]["slide"], names)
    if model.normalizer is not None:
        from ..model import describe_preprocessing

        prep = describe_preprocessing(model.preprocessing)
        LOGGER.info("stain normalizer %s, then %s preprocessing", model.normalizer.describe(), prep)
    budget = budget_bytes(memory_budget_mb)
    chosen, _lock = claim_device(device, lock_dir, model.framework)
    sal = SaliencyMap(model, class_idx=class_idx, device=chosen, engine=engine, memory_budget=budget)
    spec = get_method(method.name)
    layer, prefix = _layer_and_prefix(sal.backend, spec, method)
    LOGGER.info("%s (%s engine%s) on %s: %s", method.id, engine, f", layer {layer}" if layer else "", chunk, method.params)
    try:
        probabilities = sal.probabilities(batch)
        classes = sal.resolve_classes(batch, probabilities=probabilities)
        progress = Progress(method.id, len(names))
        result = sal.explain(
            batch, method.name, class_idx=classes, smooth=method.smooth, progress=progress, signed=method.signed,
            **method.params,
        )  # fmt: skip
    except NonFiniteError as err:
        raise nonfinite_tiles(model_path, err.what, rows[0]["slide"], [names[i] for i in err.indices]) from None
    masks, raws, ran = result.masks, result.raws, result.engine
    completeness = completeness_errors(
        sal.backend, batch, classes, raws, spec, method.params, method.smooth, ran.item_batch, ran.scores
    )
    provenance = {
        "engine": engine, "device": chosen, "gradcam_layer": ran.layer, "prefix_tokens": prefix,
        "stain_normalizer": model.normalizer.record() if model.normalizer else None, **software_versions(model.framework),
    }  # fmt: skip
    adaptive = method.params.get("tolerance") and not method.smooth  # IG's adaptive steps: each tile's count
    steps = (ran.tile_steps or []) if adaptive else []
    records = []
    for i, row in enumerate(rows):
        k = int(classes[i])
        records.append({
            "class_idx": k, "class_label": model.outcome_labels[k], "probability": float(probabilities[i, k]),
            "probabilities": [float(p) for p in probabilities[i]], "completeness_error": completeness[i],
            **mask_stats(masks[i], method.signed), **({"ig_steps": steps[i]} if len(steps) == len(names) else {}), **row_geometry(row),
        })  # fmt: skip
    attributions = np.stack([reduce(spec, raw, method.signed) for raw in raws])
    write_mask_chunk(
        out_file, names, job.x, job.y, masks, attributions, records, {**_method_record(method, model), **provenance},
        raw=np.stack(raws) if save_raw else None,
    )  # fmt: skip


def _layer_and_prefix(backend: Any, spec: Any, method: MethodSpec) -> tuple[str | None, int | None]:
    """The layer a layer-reading method (Grad-CAM) uses, and the prefix tokens its maps drop: a vision
    transformer's maps on patch tokens (a token layer, or the attention) drop them (``None`` otherwise)."""
    layer = backend.gradcam_layer(method.params.get("layer")) if spec.layer else None
    on_tokens = spec.layer and backend.token_prefix() is not None and layer not in backend.conv_layer_names()
    prefix = backend.token_prefix() if on_tokens or spec.kind == "attention" else None
    return layer, prefix


def _method_record(method: MethodSpec, model: Any) -> dict[str, Any]:
    """A mask file's method and model fields (the same for every tile of a job)."""
    return {
        "method": method.id, "method_name": method.name, "smooth": method.smooth, "signed": method.signed,
        "params": method.params,
        "backend": model.framework, "outcome_labels": model.outcome_labels, "model_sha256": model.sha256,
    }  # fmt: skip


