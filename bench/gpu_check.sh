#!/usr/bin/env bash
# One-shot GPU check (about 5 minutes on one H100-class GPU), from the repository root:
#
#     bash bench/gpu_check.sh            # needs a CUDA device torch can see
#     bash bench/gpu_check.sh --cpu      # the same steps on the CPU, tiny sizes, 3 methods (checks the script)
#
# 1. the native-vs-PAIR parity tests and the integration-rule tests on CUDA (SaliencyMap's
#    device "auto" picks CUDA when torch sees one);
# 2. byte-identical reruns on CUDA under torch.use_deterministic_algorithms (segment sums
#    are a one-hot matmul there; index_add_ would raise);
# 3. bench/saliency_bench.py on 64 tiles of ResNet-18 at 224 px: native against PAIR's
#    per-tile loop for every method (PAIR timed on the first 4 tiles, reported per tile).
# Targets: guided IG and SmoothGrad >= 20x PAIR (the PAIR/native column).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVICE=cuda TILES=64 PAIR_TILES=4 TESTS=(tests/test_native.py -k "parity" tests/test_integration_rules.py) METHODS=()
if [[ "${1:-}" == "--cpu" ]]; then
    DEVICE=cpu TILES=2 PAIR_TILES=1 TESTS=(tests/test_integration_rules.py -k "linear or unknown")
    METHODS=(--methods vanilla integrated_gradients gradcam)
else
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check: FAILED: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA device" \
             "(CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES:-}'); use --cpu to check the script only" >&2
        exit 2
    fi
    "$PY" -c 'import torch; print("gpu_check: CUDA device", torch.cuda.get_device_name(0), "torch", torch.__version__)'
fi
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # cuBLAS: deterministic results need a fixed workspace

# Parity is checked in full float32: on Ampere and later GPUs torch runs convolutions in TF32 by
# default (10-bit mantissa), and guided IG's path (which features move first) and XRAI's region
# ranking follow tiny gradient differences, so TF32 maps of two engines that batch differently
# drift apart (measured on an H100: guided IG correlation 0.895, XRAI rank correlation 0.994).
FP32_DIR=$(mktemp -d)
printf 'import torch\n\ntorch.backends.cuda.matmul.allow_tf32 = False\ntorch.backends.cudnn.allow_tf32 = False\n' \
    > "$FP32_DIR/sitecustomize.py"
echo "== 1. parity tests on $DEVICE (float32: TF32 off)"
PYTHONPATH="$FP32_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
if [[ "$DEVICE" == cuda ]]; then
    echo "== 1b. the same parity tests with torch's default TF32 (reported, not required)"
    "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || echo "gpu_check: parity under TF32 fails (see above)"
fi

echo "== 2. byte-identical reruns on $DEVICE (deterministic algorithms)"
"$PY" - "$DEVICE" <<'EOF'
import sys

import numpy as np
import torch

import slidegrad as sg
from slidegrad.torch_nets import ResNet18

device = sys.argv[1]
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
torch.manual_seed(0)
model = ResNet18(n_classes=2).eval()
x = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
sal = sg.SaliencyMap(model, class_idx=1, device=device)
for method, params in (("integrated_gradients", {"x_steps": 8}), ("vanilla", {"smooth": True, "nsamples": 4})):
    _, first = sal.attributions(x, method, **params)
    _, again = sal.attributions(x, method, **params)
    same = all(np.array_equal(a, b) for a, b in zip(first, again))
    print(f"{method}: reruns byte-identical: {same}")
    if not same:
        sys.exit(f"gpu_check: FAILED: {method} reruns differ on {device}")
EOF

echo "== 3. benchmark: ResNet-18, $TILES tiles at 224 px on $DEVICE"
"$PY" bench/saliency_bench.py --model resnet18 --tiles "$TILES" --device "$DEVICE" --pair-tiles "$PAIR_TILES" \
    --single-reps 0 "${METHODS[@]}"
echo "gpu_check: done"
