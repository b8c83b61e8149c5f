"""A methods paragraph for a paper, and the Snakemake report's captions, from what a run really did.

Everything comes from the run's outputs, not from the config: the mask files' records
(each method's parameters as run, the engine, device, Grad-CAM layer, model hash,
tile geometry and software versions, via ``summary.csv``'s ``mask`` column), plus
the settings the outputs cannot tell (the evaluation's, the figures' colour map).

:func:`write_methods` writes ``methods.md`` (Markdown) and one reStructuredText
caption per report entry; Snakemake renders each caption with Jinja, so a caption
may say ``{{ snakemake.wildcards.slide }}``.
"""

from __future__ import annotations

import csv
import json
from typing import Any, Sequence

from .backends import FRAMEWORKS
from .errors import check
from .files import write_text
from .methods import METHODS, PARAMS
from .metrics import evaluation_paragraph, metric_references

SMOOTH_CITATION = "Smilkov et al. 2017"
PHRASES = {key: param.phrase for key, param in PARAMS.items() if param.phrase is not None}
"""How the paragraph says each parameter's value (declared with the parameter: :attr:`slidegrad.methods.Param.phrase`)."""
ADAPTIVE_ONLY = {"tolerance", "max_steps"}  # unsaid with tolerance 0 (fixed steps)
HIDDEN = {"batch_size", "layer"}  # change no result / reported from the mask file's gradcam_layer instead
REFERENCES = {  # the methods' own are on their declarations (slidegrad.methods); the metrics' on theirs (.metrics)
    **{m.citation: m.reference for m in METHODS.values() if m.citation and m.reference},
    "Smilkov et al. 2017": "Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv:1706.03825",
}


def _joined(values: Sequence[str]) -> str:
    values = list(dict.fromkeys(values))
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _detail(key: str, value: Any) -> str:
    phrase = PHRASES.get(key, key + " {}")
    if callable(phrase):
        return phrase(value)
    if isinstance(phrase, dict):
        return phrase[value] if value in phrase else phrase[bool(value)]
    return phrase.format(json.dumps(value) if isinstance(value, bool) else value)


def method_phrase(meta: dict[str, Any]) -> tuple[str, list[str]]:
    """One method as run (from its mask file's record): ``(phrase, citations)``."""
    name, smooth, params = meta["method_name"], meta["smooth"], meta["params"]
    method = METHODS.get(name)
    cites = [method.citation] if method is not None and method.citation else []
    hidden = HIDDEN if params.get("tolerance") else HIDDEN | ADAPTIVE_ONLY
    details = [d for d in (_detail(k, v) for k, v in sorted(params.items()) if k not in hidden) if d]
    if method is not None and method.baseline:
        details.insert(0, method.baseline)
    if meta.get("prefix_tokens") is not None:
        details.insert(0, f"on the patch tokens ({meta['prefix_tokens']} prefix token(s) dropped)")
    if meta.get("gradcam_layer"):
        details.insert(0, f"layer {meta['gradcam_layer']}")
    phrase = method.phrase if method is not None and method.phrase else name
    if smooth:
        phrase = f"SmoothGrad of {phrase}"
        cites.append(SMOOTH_CITATION)
    if meta.get("signed"):
        phrase = f"signed {phrase}"
    inside = "; ".join(part for part in ("; ".join(cites), ", ".join(details)) if part)
    return (f"{phrase} ({inside})" if inside else phrase), cites


def _flags_in_run(evaluation_path: str) -> str:
    """The sentence on which classes this run flagged uninformative (from ``evaluation.csv``)."""
    from .evaluate.informative import flagged_sentence  # not at import: the Snakefile imports this module

    with open(evaluation_path, newline="") as handle:
        return flagged_sentence(list(csv.DictReader(handle)))


def _rows(summary_path: str) -> list[dict[str, str]]:
    with open(summary_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    check(bool(rows), f"summary '{summary_path}': no rows; nothing to describe")
    return rows


def _method_records(rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The first tile's record of each method id, in summary order (from its mask file)."""
    from .results import read_mask_records  # not at import: the Snakefile imports this module for CAPTIONS

    metas: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["method"] not in metas:
            records = {r["tile"]: r for r in read_mask_records(row["mask"])}
            check(row["tile"] in records, f"mask file '{row['mask']}': no tile {row['tile']} (summary row)")
            metas[row["method"]] = records[row["tile"]]
    return metas


def methods_paragraphs(
    summary_path: str, class_idx: Any = None, evaluate: dict[str, Any] | None = None, evaluation_path: str | None = None
) -> tuple[list[str], list[str]]:
    """``(paragraphs, references)`` describing the run whose ``summary.csv`` is at ``summary_path``.

    ``class_idx``: the config's (``None``: each tile's predicted class was explained);
    ``evaluate``: the config's ``evaluate`` section (its metrics, if any, get a paragraph);
    ``evaluation_path``: the run's ``evaluation.csv``, whose flags the paragraph reports (which classes this
    run found uninformative for which removal).
    """
    rows = _rows(summary_path)
    metas = _method_records(rows)
    first = next(iter(metas.values()))
    n_tiles = len({(r["slide"], r["tile"]) for r in rows})
    n_slides = len({r["slide"] for r in rows})
    framework = FRAMEWORKS[first["framework"]].title if first["framework"] in FRAMEWORKS else first["framework"]
    geometry = _joined([
        f"{r['tile_px']} × {r['tile_px']} px covering {r['tile_um']} µm"
        + (f" (read at pyramid level {r['level']} of slides at {r['mpp']} µm/px)" if r["mpp"] else "")
        for r in rows
    ])  # fmt: skip
    explained = (
        "each tile's predicted class" if class_idx is None else f"class {first['outcome_labels'][int(class_idx)]}"
    )
    phrases, cites = [], []
    for meta in metas.values():
        phrase, method_cites = method_phrase(meta)
        phrases.append(phrase)
        cites += method_cites
    engines = _joined([f"{r['engine']} engine on {r['device']}" for r in rows])
    kinds = {m.kind for m in (METHODS.get(meta["method_name"]) for meta in metas.values()) if m}
    signed = any(meta.get("signed") for meta in metas.values())
    saliency = (
        f"Saliency maps were computed with slidegrad {first['slidegrad_version']} (PAIR saliency "
        f"{first['pair_version']}, {framework} {first['framework_version']}) for {n_tiles} tiles from "
        f"{n_slides} slide{'s' if n_slides > 1 else ''}. Tiles were {geometry}. The classifier "
        f"(SHA-256 {first['model_sha256']}; classes {_joined(first['outcome_labels'])}) was explained for "
        f"{explained}.{_stain_sentence(first.get('stain_normalizer'))} Methods: {'; '.join(phrases)}. "
        f"Maps were computed by slidegrad's {engines}. "
        "Gradient maps sum the absolute attribution over colour channels and are scaled to [minimum, "
        "99th percentile]; XRAI maps are scaled the same way; Grad-CAM maps are rectified and divided by "
        "their maximum; "
        + ("attention maps are scaled to [minimum, maximum]; " if "attention" in kinds else "")
        + ("maps of expected class probability are scaled to [minimum, maximum]; " if "probability" in kinds else "")
        + ("all unsigned maps are clipped to [0, 1]. " if signed else "all maps are clipped to [0, 1].")
        + (
            "Signed gradient maps keep the sign: the attribution summed over colour channels, divided by the 99th "
            "percentile of its absolute value and clipped to [−1, 1] (positive values support the explained "
            "class, negative values speak against it), and are drawn with a diverging colour map centred on 0."
            if signed else ""
        )
    )  # fmt: skip
    paragraphs, metric_refs = [saliency], {}
    metrics = list((evaluate or {}).get("metrics") or [])
    if metrics:
        paragraphs.append(evaluation_paragraph({**(evaluate or {}), "metrics": metrics}))
        if evaluation_path:
            paragraphs[-1] += " " + _flags_in_run(evaluation_path)
        metric_refs = metric_references(metrics)
        cites += list(metric_refs)
    known = {**metric_refs, **REFERENCES}  # PIC's citation is XRAI's: the method's reference wins
    references = [known[c] for c in dict.fromkeys(cites) if c in known]
    return paragraphs, references


def _stain_sentence(record: dict[str, Any] | None) -> str:
    """`` Tiles were stain-normalised …`` (leading space) from a mask record's ``stain_normalizer``; ``""`` without one."""
    if not record:
        return ""
    name = "Macenko" if record["method"].startswith("macenko") else "Reinhard"
    return (
        f" Tiles were stain-normalised as in training ({name}, Slideflow's {record['method']}; fit: "
        f"{record['fit_source']}) before preprocessing; attributions are with respect to the normalised tile "
        "and are shown over the original."
    )


def _rst(text: str) -> str:
    """Plain text as reStructuredText (no markup, no Jinja)."""
    for char in "\\*_`|":
        text = text.replace(char, "\\" + char)
    return text.replace("{{", "{ {").replace("{%", "{ %")


CAPTIONS = {
    "figure": "Saliency maps of slide **{{ snakemake.wildcards.slide }}**: its first tiles in rows (tile, "
    "explained class and its probability), the tile with a µm scale bar, then one column per method "
    "({view}, colour map {cmap}, maps in [0, 1]).",
    "overview": "Overview of slide **{{ snakemake.wildcards.slide }}**: thumbnail with the tissue outline and "
    "every explained tile's box, coloured by its predicted class (opacity: probability); in grid, random "
    "and top_k modes, each method's maps stitched at their tiles' places.",
    "evaluation_figure": "Faithfulness of the maps of slide **{{ snakemake.wildcards.slide }}**: mean "
    "deletion and insertion curves per method against a random pixel order (dashed), per explained class, "
    "and per metric each method's tiles, mean ± SD and the chance level.",
    "evaluation": "One row per slide × tile × method: each metric and its chance level.",
    "slide_map": "Slide-level saliency of **{{ snakemake.wildcards.method }}** on slide **{{ snakemake.wildcards.slide }}**: "
    "every tile's channel-reduced attribution stitched at its place (overlaps averaged), scaled once for the "
    "whole slide (its 99th percentile of |attribution| is 1), over the slide's thumbnail; the TIFF is the "
    "same map as a pyramidal image aligned with the slide.",
    "prediction_map": "Prediction heatmap of slide **{{ snakemake.wildcards.slide }}**: each tile's "
    "probability of each class at its place (one panel per class, colour map coolwarm on [0, 1]), over the "
    "slide's thumbnail.",
    "summary": "One row per slide × tile × method: explained class and class probabilities, mask "
    "statistics, parameters and provenance.",
}


def write_methods(
    summary_path: str,
    out_markdown: str,
    caption_paths: dict[str, str],
    class_idx: Any = None,
    evaluate: dict[str, Any] | None = None,
    figure: dict[str, Any] | None = None,
    evaluation_path: str | None = None,
) -> None:
    """``methods.md`` and the report captions (``caption_paths``: caption name → path; names in :data:`CAPTIONS`);
    ``evaluation_path``: the run's ``evaluation.csv`` where it evaluates (its flags are reported)."""
    paragraphs, references = methods_paragraphs(summary_path, class_idx, evaluate, evaluation_path)
    markdown = "# Methods\n\n" + "\n\n".join(paragraphs) + "\n\n## References\n\n"
    markdown += "".join(f"- {ref}\n" for ref in references)
    write_text(out_markdown, markdown)
    figure = figure or {}
    view = f"overlays at opacity {figure.get('alpha')}" if figure.get("overlay") else "heatmaps"
    body = "\n\n".join(_rst(p) for p in paragraphs)
    refs = "\n".join(f"- {_rst(ref)}" for ref in references)
    if any(meta.get("signed") for meta in _method_records(_rows(summary_path)).values()):
        view += "; signed maps in [−1, 1], diverging colour map centred on 0"
    for name, path in caption_paths.items():
        lead = CAPTIONS[name].replace("{view}", view).replace("{cmap}", str(figure.get("cmap", "inferno")))
        write_text(path, f"{lead}\n\n{body}\n\nReferences:\n\n{refs}\n")
