"""Write one embedded demo slide (pyramidal TIFF built from skimage's IHC image)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from slidegrad.demo import write_demo_slide  # noqa: E402
from slidegrad.scripting import run_job  # noqa: E402

run_job(write_demo_slide, path=snakemake.output[0], variant=snakemake.wildcards.variant)
