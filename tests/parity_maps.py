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
# Guided IG moves, at every round, the features whose |gradient| is at most a quantile: a threshold, so
# the map is not continuous in the gradient.  In a batch, TensorFlow's kernels change a tile's gradient
# by ~1e-11 with the batch's other tiles; that can flip one feature past the threshold and send the
# path elsewhere (relative L2 ~0.4 between batch and single-tile maps on an AMD EPYC, while torch gives
# bitwise-equal gradients either way).  PAIR's algorithm, not a port bug: here each framework runs it through
# the PAIR engine, one image (tile or noisy sample) per model call; native against PAIR is tested within
# each framework (tests/test_native.py, tests/tf/test_native_tf.py).
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
    "gradcam_plusplus": ("gradcam_plusplus", {}),
    "hirescam": ("hirescam", {}),
    "layercam": ("layercam", {}),
    "scorecam": ("scorecam", {}),
    "occlusion": ("occlusion", {"size": 24}),
    "rise": ("rise", {"n_masks": 200}),
    "input_x_gradient": ("input_x_gradient", {}),
    "gradient_shap": ("gradient_shap", {"n_samples": 8, "stdevs": 0.05}),
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
    one_at_a_time = sg.SaliencyMap(model, class_idx=CLASS_IDX, engine="pair")
    results = {"probabilities": sal.backend.probabilities(batch)}
    for key, (method, params) in METHODS.items():
        if sg.methods.get_method(method).layer:
            params = {**params, "layer": GRADCAM_LAYER[framework]}
        engine = one_at_a_time if method == "guided_integrated_gradients" else sal  # see CLASS_IDX's note
        results[key] = engine.get(batch, method, **params)
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
