"""Compute every method's masks for one SmallCNN in one framework (run as a subprocess).

    python tests/parity_maps.py {torch|tensorflow} weights.npz tiles.npy out.npz

The parity test runs it once per framework so torch and TensorFlow never share
a process, then compares the outputs.
"""

from __future__ import annotations

import sys

import numpy as np

import slidegrad as sg

CLASS_IDX = 1
SMOOTH = {"smooth": True, "nsamples": 5, "seed": 7}
GRADCAM_LAYER = {"torch": "features.3", "tensorflow": "conv1"}
METHODS = {
    "vanilla": ("vanilla", {}),
    "integrated_gradients": ("integrated_gradients", {}),
    "guided_integrated_gradients": ("guided_integrated_gradients", {}),
    "blur_integrated_gradients": ("blur_integrated_gradients", {}),
    "xrai": ("xrai", {}),
    "xrai_fast": ("xrai_fast", {}),
    "gradcam": ("gradcam", {}),
    "vanilla_smooth": ("vanilla", SMOOTH),
    "integrated_gradients_smooth": ("integrated_gradients", SMOOTH),
    "guided_integrated_gradients_smooth": ("guided_integrated_gradients", SMOOTH),
    "blur_integrated_gradients_smooth": ("blur_integrated_gradients", {**SMOOTH, "nsamples": 2}),
    "gradcam_smooth": ("gradcam", SMOOTH),
}


def build(framework: str, state: dict[str, np.ndarray], tile_px: int):
    if framework == "torch":
        import torch

        from slidegrad.torch_nets import SmallCNN

        widths = tuple(v.shape[0] for k, v in state.items() if k.startswith("features.") and k.endswith(".weight"))
        model = SmallCNN(n_classes=state["head.weight"].shape[0], widths=widths)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        return model.eval()
    from slidegrad.keras_nets import port_small_cnn

    return port_small_cnn(state, tile_px)


def main(framework: str, weights: str, tiles: str, out: str) -> None:
    state = dict(np.load(weights))
    images = np.load(tiles)
    model = build(framework, state, images.shape[1])
    batch = sg.model.scale(images)
    sal = sg.SaliencyMap(model, class_idx=CLASS_IDX)
    results = {"probabilities": sal.backend.probabilities(batch)}
    for key, (method, params) in METHODS.items():
        if method == "gradcam":
            params = {**params, "layer": GRADCAM_LAYER[framework]}
        results[key] = sal.get(batch, method, **params)
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
