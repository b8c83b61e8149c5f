"""Where every output of a run lives: all of it under ``outdir``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


TILE_SOURCE = "source.json"  # in a slide's tile folder, beside its chunk files
TILE_SCORES = "scores.npz"  # top_k: every tissue tile's class probabilities, in the tile folder


def tile_chunk_in(tile_dir: str | os.PathLike[str], chunk: str) -> str:
    """A chunk's tile file in a slide's tile folder (the tiles job knows its folder, not the outdir)."""
    return f"{os.fspath(tile_dir)}/{chunk}.npz"


@dataclass(frozen=True)
class Layout:
    """Paths under ``outdir``; arguments may be wildcard patterns (``"{slide}"``).

    Files grow with jobs, not with tiles (:mod:`slidegrad.results`), so a cohort's DAG and tree stay small:

    * ``tiles/{slide}.csv`` (the tile table) and ``tiles/{slide}/{chunk}.npz`` (the chunk's tiles),
      ``source.json`` (the slide file read) and, in top_k mode, ``scores.npz`` (every tissue tile's scores);
    * ``masks/{slide}/{method}/{chunk}.npz``: a mask job's masks, attributions and per-tile records;
    * ``overlays/…`` and ``heatmaps/{slide}/{chunk}/{method}/{tile}.png`` for the tiles ``pictures`` asks for;
    * ``slide_maps/{slide}/{method}.{tiff,png}`` and ``slide_maps/{slide}/predictions.{npz,png}``;
    * ``qupath/{slide}.geojson``: the explained tiles as QuPath detections;
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

    def tile_chunk(self, slide: str, chunk: str) -> str:
        """A chunk's tiles (:func:`slidegrad.results.write_tile_chunk`), in the slide's tile folder."""
        return tile_chunk_in(self.tile_dir(slide), chunk)

    def tile_scores(self, slide: str) -> str:
        """top_k: the class probabilities of every tissue tile the tiles job scored."""
        return f"{self.tile_dir(slide)}/{TILE_SCORES}"

    def mask_file(self, slide: str, chunk: str, method: str) -> str:
        """A mask job's results (:func:`slidegrad.results.write_mask_chunk`)."""
        return f"{self.outdir}/masks/{slide}/{method}/{chunk}.npz"

    def slide_map(self, slide: str, method: str, ext: str) -> str:
        """A slide-level saliency map: ``tiff`` (pyramidal, aligned with the slide) or ``png`` (over the thumbnail)."""
        return f"{self.outdir}/slide_maps/{slide}/{method}.{ext}"

    def prediction_map(self, slide: str, ext: str) -> str:
        """The slide's prediction heatmap: ``npz`` (the maps) or a figure format."""
        return f"{self.outdir}/slide_maps/{slide}/predictions.{ext}"

    def qupath(self, slide: str) -> str:
        """The slide's explained tiles as a GeoJSON FeatureCollection of QuPath detections."""
        return f"{self.outdir}/qupath/{slide}.geojson"

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
        subs = ("tiles", "masks", "overlays", "heatmaps", "slide_maps", "qupath", "evaluation", "figures", "report",
                "logs", "benchmarks")  # fmt: skip
        return [self.outdir] + [f"{self.outdir}/{sub}" for sub in subs]


def written_by(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(rule, output)`` for a file a job wrote under an outdir (the names of :class:`Layout`), from its
    place there: ``output`` is what that job declared, the thing to delete so that a rerun recomputes the
    file (a mask file, the tiles folder, an evaluation chunk file).  ``None`` for any other file."""
    p = Path(path)
    parts = p.parts
    if len(parts) >= 4 and parts[-4] == "masks" and p.suffix == ".npz":
        return "masks", str(p)  # masks/{slide}/{method}/{chunk}.npz
    if len(parts) >= 3 and parts[-3] == "tiles" and p.suffix == ".npz":
        return "tiles", str(p.parent)  # tiles/{slide}/{chunk}.npz
    if len(parts) >= 2 and parts[-2] == "tiles" and p.suffix == ".csv":
        return "tiles", str(p)  # tiles/{slide}.csv
    if len(parts) >= 3 and parts[-3] == "evaluation" and p.suffix in (".csv", ".npz"):
        return "evaluate", str(p)  # evaluation/{slide}/{chunk}.csv
    return None
