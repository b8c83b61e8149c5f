"""The ``reference`` baseline: removed pixels come from a tile of the same slide that the model gives
another class.

A constant baseline (white glass, black, a blur, the mean colour) removes evidence for one class only:
on an IHC slide, deleting a DAB-negative tile's pixels to white leaves it negative, so its deletion
curve (and the random order's) stays flat.  The reference baseline replaces them by the pixels of a
tile the model classifies otherwise, which removes the evidence of whichever class the tile has.

Choice, per slide and explained class ``c``: the slide's tiles (tile-table order) are visited in the
order ``np.random.default_rng(seed).permutation(n_tiles)``, scored in blocks of
:data:`SEARCH_BLOCK`, and the first tile whose predicted class (argmax of the softmax) is not ``c``
is ``c``'s reference.  The order depends only on the slide and the seed, so every evaluate job of
the slide picks the same tile; ``evaluation.csv``'s ``reference_tile`` column records it per row.
A slide with no tile of another class is one error line.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import check
from ..layout import tile_chunk_in
from ..metrics import MetricInputs

SEARCH_BLOCK = 16  # tiles scored at a time while looking for a reference


class SlideTiles:
    """Every tile of one slide, read on demand: ``names`` in tile-table order; :meth:`read` their pixels."""

    def __init__(self, table_path: str, tile_dir: str) -> None:
        from ..tables import read_tile_table

        rows = read_tile_table(table_path)
        self.names: list[str] = [row["tile"] for row in rows]
        self._chunk = {row["tile"]: row["chunk"] for row in rows}
        self._dir = tile_dir

    def read(self, names: Sequence[str]) -> np.ndarray:
        """Raw uint8 ``(len(names), H, W, 3)`` tiles, in the order of ``names``."""
        from ..results import read_tile_chunk

        out: dict[str, np.ndarray] = {}
        for chunk in dict.fromkeys(self._chunk[name] for name in names):
            tiles = read_tile_chunk(tile_chunk_in(self._dir, chunk))
            wanted = set(names)
            out.update({n: img for n, img in zip(tiles.names, tiles.images) if n in wanted})
        return np.stack([out[name] for name in names])


def choose_references(
    score: Any, slide_tiles: Any, classes: Sequence[int], seed: int, slide: str, labels: Sequence[str] | None = None
) -> dict[int, str]:
    """Explained class → the name of its reference tile (see the module); ``score``: raw uint8 tiles →
    ``(N, K)`` probabilities (stain normalisation included).  No tile of another class: one error line."""
    needed = sorted({int(c) for c in classes})
    names = list(slide_tiles.names)
    order = np.random.default_rng(seed).permutation(len(names))
    found: dict[int, str] = {}
    for start in range(0, len(order), SEARCH_BLOCK):
        block = [names[i] for i in order[start : start + SEARCH_BLOCK]]
        predicted = score(slide_tiles.read(block)).argmax(axis=1)
        for c in needed:
            other = [name for name, p in zip(block, predicted) if p != c]
            if c not in found and other:
                found[c] = other[0]
        if len(found) == len(needed):
            break
    missing = [c for c in needed if c not in found]
    label = (labels[missing[0]] if labels is not None else str(missing[0])) if missing else ""
    check(
        not missing,
        f"config field 'evaluate.baseline': 'reference' needs a tile the model gives another class than "
        f"{label!r}, and slide '{slide}' has none (all {len(names)} tiles are {label!r}); "
        "choose white, black, blur or mean",
    )
    return found


def reference_names(inputs: MetricInputs) -> list[str]:
    """The reference tile of each of the chunk's tiles (by its explained class), chosen once per slide and classes."""
    from .scoring import TileScorer

    def choose() -> dict[int, str]:
        check(inputs.slide_tiles is not None, "evaluate.baseline 'reference': the job gave no slide tiles to choose from")
        score = TileScorer(inputs.scorer, inputs.device, inputs.memory_budget)
        labels = getattr(score.saliency.model, "outcome_labels", None)
        return choose_references(
            lambda tiles: score(score.normalize(tiles)), inputs.slide_tiles, inputs.classes, inputs.settings["seed"],
            inputs.slide, labels,
        )  # fmt: skip

    chosen = inputs.once("reference_tiles", choose, per="classes")
    return [chosen[int(c)] for c in inputs.classes]


def reference_images(inputs: MetricInputs) -> np.ndarray:
    """Raw uint8 ``(N, H, W, 3)``: each tile's reference tile (:func:`reference_names`)."""
    names = reference_names(inputs)
    unique = list(dict.fromkeys(names))
    images = dict(zip(unique, inputs.once("reference_images", lambda: inputs.slide_tiles.read(unique), per="classes")))
    return np.stack([images[name] for name in names])
