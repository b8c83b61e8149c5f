"""Keras twins of :mod:`slidegrad.torch_nets`, and weight porting from PyTorch state dicts.

Porting takes the state dict as numpy arrays (``{name: ndarray}``, e.g. from
``weights.npz``), so this module never imports torch.  Layouts: a torch conv
kernel ``(out, in, kh, kw)`` becomes Keras ``(kh, kw, in, out)``; a linear
weight ``(out, in)`` becomes a Dense kernel ``(in, out)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import check


def small_cnn(n_classes: int = 2, widths: Sequence[int] = (8, 16, 32), tile_px: int | None = None):
    """Keras Functional twin of :class:`slidegrad.torch_nets.SmallCNN` (channels-last, logits out)."""
    import keras

    inputs = keras.Input((tile_px, tile_px, 3), name="image")
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(n_classes, name="head")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def port_small_cnn(state: dict[str, np.ndarray], tile_px: int | None = None):
    """Build :func:`small_cnn` and load a torch ``SmallCNN`` state dict into it."""
    conv_names = sorted(
        (k[: -len(".weight")] for k in state if k.startswith("features.") and k.endswith(".weight")),
        key=lambda name: int(name.split(".")[1]),
    )
    check(bool(conv_names) and "head.weight" in state, "weights: not a SmallCNN state dict")
    widths = [int(state[f"{name}.weight"].shape[0]) for name in conv_names]
    n_classes = int(state["head.weight"].shape[0])
    model = small_cnn(n_classes, widths, tile_px)
    for i, name in enumerate(conv_names):
        kernel = np.transpose(state[f"{name}.weight"], (2, 3, 1, 0))
        model.get_layer(f"conv{i}").set_weights([kernel, state[f"{name}.bias"]])
    model.get_layer("head").set_weights([state["head.weight"].T, state["head.bias"]])
    return model
