"""Port the demo model to Keras (same architecture and weights): the TensorFlow twin."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from slidegrad.demo import write_keras_twin  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(write_keras_twin, torch_dir=snakemake.input[0], out_dir=snakemake.output[0])
