"""Where every output of a run lives: all of it under ``outdir``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


TILE_SOURCE = "source.json"  # in a slide's tile folder, beside its PNGs


@dataclass(frozen=True)
class Layout:
    """Paths under ``outdir``; arguments may be wildcard patterns (``"{slide}"``).

    Snakemake tracks folders, one per job, not one file per tile, so DAGs of 100k
    tiles × methods stay fast:

    * ``tiles/{slide}.csv`` (the tile table) and ``tiles/{slide}/{tile}.png``;
    * ``masks/{slide}/{chunk}/{method}/{tile}.npy`` + ``{tile}.json`` sidecar;
    * ``overlays/…`` and ``heatmaps/{slide}/{chunk}/{method}/{tile}.png``;
    * ``figures/{slide}.{pdf,png,svg}``, ``figures/overview/{slide}.…``, ``summary.csv`` + ``.parquet``;
    * ``methods.md`` and ``report/*.rst`` (the report's captions);
    * with ``evaluate.metrics``: ``evaluation/{slide}/{chunk}.csv`` + ``.npz`` (curves),
      ``evaluation.csv`` and ``figures/evaluation/{slide}.{pdf,png}``;
    * ``logs/{rule}/….log`` and ``benchmarks/{rule}/….tsv``, one per job;
    * ``failures.csv`` after a failed run (:mod:`slidegrad.failures`; a successful run removes it).
    """

    outdir: str

    def tile_table(self, slide: str) -> str:
        return f"{self.outdir}/tiles/{slide}.csv"

    def tile_dir(self, slide: str) -> str:
        return f"{self.outdir}/tiles/{slide}"

    def tile_source(self, slide: str) -> str:
        """What the slide file was when the tiles job read it (:mod:`slidegrad.sources`)."""
        return f"{self.tile_dir(slide)}/{TILE_SOURCE}"

    def mask_dir(self, slide: str, chunk: str, method: str) -> str:
        return f"{self.outdir}/masks/{slide}/{chunk}/{method}"

    def picture_dir(self, kind: str, slide: str, chunk: str) -> str:
        """``kind`` is ``overlays`` or ``heatmaps``: one folder per method inside."""
        return f"{self.outdir}/{kind}/{slide}/{chunk}"

    def summary(self, ext: str = "csv") -> str:
        """``summary.csv``, or the same table as ``summary.parquet``."""
        return f"{self.outdir}/summary.{ext}"

    def overview(self, slide: str, ext: str) -> str:
        """A slide's overview: thumbnail, tissue outline, tile boxes (and saliency mosaics)."""
        return f"{self.outdir}/figures/overview/{slide}.{ext}"

    def methods_text(self) -> str:
        """The methods paragraph for a paper, from the run's own parameters and versions."""
        return f"{self.outdir}/methods.md"

    def caption(self, name: str) -> str:
        """A report caption (reStructuredText, Jinja-templated by Snakemake), written by the methods job."""
        return f"{self.outdir}/report/{name}.rst"

    def figure(self, slide: str, ext: str) -> str:
        return f"{self.outdir}/figures/{slide}.{ext}"

    def evaluation_chunk(self, slide: str, chunk: str, ext: str = "csv") -> str:
        """An evaluate job's rows (``csv``) or curves (``npz``)."""
        return f"{self.outdir}/evaluation/{slide}/{chunk}.{ext}"

    def evaluation(self) -> str:
        return f"{self.outdir}/evaluation.csv"

    def failures(self) -> str:
        """The last failed run's failed jobs (slidegrad.failures): slide, rule, message, log."""
        return f"{self.outdir}/failures.csv"

    def log_dir(self) -> str:
        return f"{self.outdir}/logs"

    def evaluation_figure(self, slide: str, ext: str) -> str:
        return f"{self.outdir}/figures/evaluation/{slide}.{ext}"

    def log(self, job: str) -> str:
        """A job's log, ``job`` like ``masks/{slide}/{chunk}/{method}``."""
        return f"{self.outdir}/logs/{job}.log"

    def benchmark(self, job: str) -> str:
        """A job's Snakemake benchmark table."""
        return f"{self.outdir}/benchmarks/{job}.tsv"

    def gpu_locks(self) -> str:
        """Lock files by which concurrent jobs of a run each take their own GPU."""
        return f"{self.outdir}/.slidegrad/gpu-locks"

    def folders(self) -> list[str]:
        """``outdir`` and the folders the jobs write directly inside it."""
        subs = ("tiles", "masks", "overlays", "heatmaps", "evaluation", "figures", "report", "logs", "benchmarks")
        return [self.outdir] + [f"{self.outdir}/{sub}" for sub in subs]


def written_by(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(rule, output)`` for a file a job wrote under an outdir (the names of :class:`Layout`), from its
    place there: ``output`` is what that job declared, the thing to delete so that a rerun recomputes the
    file (a mask's whole folder, the tiles folder, an evaluation chunk file).  ``None`` for any other file."""
    p = Path(path)
    parts = p.parts
    if len(parts) >= 5 and parts[-5] == "masks" and p.suffix in (".npy", ".json"):
        return "masks", str(p.parent)  # masks/{slide}/{chunk}/{method}/{tile}.npy
    if len(parts) >= 3 and parts[-3] == "tiles" and p.suffix == ".png":
        return "tiles", str(p.parent)  # tiles/{slide}/{tile}.png
    if len(parts) >= 2 and parts[-2] == "tiles" and p.suffix == ".csv":
        return "tiles", str(p)  # tiles/{slide}.csv
    if len(parts) >= 3 and parts[-3] == "evaluation" and p.suffix in (".csv", ".npz"):
        return "evaluate", str(p)  # evaluation/{slide}/{chunk}.csv
    return None
