"""The evaluation metrics slidegrad offers: one declaration each, the contract they share.

A metric is declared once, as a :class:`Metric` in :data:`METRICS`; the rest follows
from that declaration: the evaluate job's loop (:mod:`slidegrad.evaluate.jobs`), the
columns of ``evaluation.csv`` (:func:`metric_columns`), the config schema's
``evaluate`` section (:func:`evaluate_schema`: the metric enum and the options each
metric reads), what a config must set (:attr:`Metric.needs`), the figure's panels and
curves (:mod:`slidegrad.evaluate.figure`) and the methods paragraph with its
references (:func:`evaluation_paragraph`, :func:`metric_references`).

Every metric computes through one contract: a function in its own module of
:mod:`slidegrad.evaluate` takes a :class:`MetricInputs` (one method's masks of one
chunk, and the chunk's tiles, model and settings) and returns a :class:`MetricResult`
(per-tile columns and curves).  Those functions wrap the library's metric functions
(:func:`~slidegrad.evaluate.deletion_insertion`, ...), so the maths lives in one place.

To add a metric: write its ``compute`` (and ``chance``) function in its module, then
:func:`register` a :class:`Metric` below; nothing else names it.

This module stays light (no numpy-heavy imports): the config and the Snakefile read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

from .errors import check

if TYPE_CHECKING:
    import numpy as np

    from .config import MethodSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Panel:
    """One panel of the evaluation figure's metric row: ``column``'s values per method.

    ``title``: the panel's title (an arrow says which way is better); ``reference``: the column
    holding the chance level (its mean is drawn dashed), a fixed threshold, or ``None``.
    """

    column: str
    title: str
    reference: str | float | None = None


@dataclass(frozen=True)
class Flat:
    """A metric's check that its removal moves the explained class at all (:mod:`slidegrad.evaluate.informative`).

    ``flag``: the ``evaluation.csv`` column saying a class is uninformative (several metrics may share one:
    deletion and insertion share the baseline's); ``chance``: the metric's chance column in the explained
    class's probability units, which equals the unmodified tile's probability when removal changes nothing
    (an AUC of a flat curve, a mean over flat points); ``what``: the methods text's name of what did not move.
    """

    flag: str
    chance: str
    what: str


@dataclass
class MetricInputs:
    """What a metric gets: one method's masks of one chunk, and that chunk's tiles, model and settings.

    ``scorer``: a :class:`~slidegrad.saliency.SaliencyMap` of the job's model (on the job's device,
    batches under its memory budget); ``tiles``: raw uint8 ``(N, H, W, 3)``; ``batch``: the same tiles
    preprocessed, float32 ``(N, H, W, 3)``; ``settings``: the config's ``evaluate`` section (defaults
    filled in); ``slide`` and ``names``: the slide and its N tile names; ``device`` / ``memory_budget``:
    the job's (bytes; for models a metric builds, e.g. randomised copies); ``slide_tiles``: every tile of
    the slide, read on demand (:class:`~slidegrad.evaluate.reference.SlideTiles`; the reference baseline's).

    Per method (``None`` in :attr:`Metric.prepare`'s call): ``method``, the :class:`~slidegrad.config.MethodSpec`;
    ``masks``: ``(N, H, W)`` in [0, 1] (a signed method's in [−1, 1]: positive evidence > 0); ``classes``:
    ``(N,)`` int64, the class each mask explains.
    """

    scorer: Any
    tiles: np.ndarray
    batch: np.ndarray
    settings: Mapping[str, Any]
    slide: str
    names: Sequence[str]
    device: str = "auto"
    memory_budget: int | None = None
    slide_tiles: Any = None
    method: MethodSpec | None = None
    masks: np.ndarray | None = None
    classes: np.ndarray | None = None
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def for_method(self, method: MethodSpec, masks: np.ndarray, classes: np.ndarray) -> MetricInputs:
        """These inputs for one method's ``masks`` explaining ``classes`` (the cache is shared)."""
        return replace(self, method=method, masks=masks, classes=classes)

    @property
    def method_options(self) -> dict[str, Any]:
        """The method's parameters, ``smooth`` and (when set) ``signed``, as :meth:`SaliencyMap.get` takes them."""
        check(self.method is not None, "MetricInputs.method: no method (a prepare call has none)")
        return {"smooth": self.method.smooth, **({"signed": True} if self.method.signed else {}), **self.method.params}

    def once(self, key: str, compute: Callable[[], T], per: str = "method") -> T:
        """``compute()`` the first time ``key`` is asked for, then the stored value.

        ``per``: what the value depends on besides the chunk: ``"method"`` (this method's masks),
        ``"classes"`` (only the explained classes: a chance level, the same for every method that
        explains the same classes) or ``"chunk"`` (nothing else, e.g. a ground truth).
        """
        check(per in ("method", "classes", "chunk"), f"once: per must be method, classes or chunk, got {per!r}")
        scope: tuple[Any, ...] = ()
        if per == "method":
            scope = (self.method.id if self.method is not None else None,)
        elif per == "classes":
            scope = tuple(int(c) for c in (self.classes if self.classes is not None else ()))
        full_key = (key, per, *scope)
        if full_key not in self.cache:
            self.cache[full_key] = compute()
        return self.cache[full_key]


@dataclass(frozen=True)
class MetricResult:
    """What a metric returns: ``columns``: column name → ``(N,)`` values (float, or bool);
    ``curves``: curve kind → ``(N, K)`` curves, saved in the chunk's ``.npz`` for the figure;
    ``curve_x``: curve kind → its ``(K,)`` x positions where they are not ``linspace(0, 1, K)``."""

    columns: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    curve_x: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """One evaluation metric, declared once.

    ``name``: its name in ``evaluate.metrics``; ``description``: one line for the config schema.
    ``columns``: its columns of ``evaluation.csv``, in order (its chance level's included).
    ``compute``: ``"module:function"`` (a module of :mod:`slidegrad.evaluate`, or a dotted module path),
    ``(MetricInputs) → MetricResult``:
    the method's own columns (and curves).  ``chance``: the same for its chance level (the masks unused;
    computed once per set of explained classes; its curves are saved as ``{kind}_chance``), or ``None``.
    ``compute`` and ``chance`` together return exactly ``columns``.  ``prepare``: ``"module:function"``,
    ``(MetricInputs) → None``, run once per chunk before any method (to fail early), or ``None``.
    ``panels``: its panels in the figure; ``curve``: the x-axis label of its curve plot (its curve kind
    is its name), or curve kind → x-axis label where it has several kinds (``None``: no curve plot).  ``citation`` (``"Petsiuk et al. 2018"``), ``reference`` (the
    full reference) and ``text`` (``settings → phrase`` for the methods paragraph; ``""``: said by
    another metric's phrase): the methods text.  ``flat``: its check that removal moves the class
    (:class:`Flat`), or ``None``.  ``options``: the ``evaluate`` options it reads → their
    JSON schema; ``needs``: options that must not be null when it runs → what to set.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    compute: str
    text: Callable[[Mapping[str, Any]], str]
    chance: str | None = None
    prepare: str | None = None
    panels: tuple[Panel, ...] = ()
    curve: str | Mapping[str, str] | None = None
    citation: str | None = None
    reference: str | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    needs: Mapping[str, str] = field(default_factory=dict)
    flat: Flat | None = None

    def function(self, role: str) -> Callable[..., Any] | None:
        """The ``compute``, ``chance`` or ``prepare`` function (``None`` where the metric has none)."""
        target = getattr(self, role)
        return None if target is None else getattr(importlib.import_module(self.module(role)), target.split(":")[1])

    def curve_kinds(self) -> dict[str, str]:
        """Curve kind → x-axis label of the curve plots this metric saves (``{}`` for none)."""
        if self.curve is None:
            return {}
        return {self.name: self.curve} if isinstance(self.curve, str) else dict(self.curve)

    def module(self, role: str = "compute") -> str:
        """The module holding the ``role`` function: ``slidegrad.evaluate.<module>``, or ``<module>`` itself
        where it has a dot (a metric declared outside slidegrad)."""
        module = getattr(self, role).split(":")[0]
        return module if "." in module else f"slidegrad.evaluate.{module}"


METRICS: dict[str, Metric] = {}
"""Every metric by name, in the order of ``evaluation.csv``'s columns, the figure's panels and the
methods paragraph; see :func:`register`."""


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS`; its declaration is all slidegrad needs."""
    where = f"metric {metric.name}"
    check(metric.name.isidentifier(), f"{where}: a metric name must be a Python identifier")
    check(metric.name not in METRICS, f"{where}: already registered")
    for role in ("compute", "chance", "prepare"):
        target = getattr(metric, role)
        check(target is None or target.count(":") == 1, f"{where}: {role} must be 'module:function', got {target!r}")
    taken = {c: m.name for m in METRICS.values() for c in m.columns}
    clash = [c for c in metric.columns if c in taken]
    owner = taken[clash[0]] if clash else ""
    check(not clash, f"{where}: column(s) {', '.join(clash)} already belong to metric {owner}")
    check({p.column for p in metric.panels} <= set(metric.columns), f"{where}: a panel shows a column it does not have")
    for option, schema in metric.options.items():
        other = next((m for m in METRICS.values() if option in m.options), None)
        check(
            other is None or dict(other.options[option]) == dict(schema),
            f"{where}: option {option!r} has another schema in metric {other.name if other else ''}",
        )
    check(set(metric.needs) <= set(metric.options), f"{where}: needs an option it does not read")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; an unknown name is one error line listing the metrics."""
    check(name in METRICS, f"metric {name!r}: unknown; expected one of {', '.join(METRICS)}")
    return METRICS[name]


def chosen(names: Sequence[str]) -> list[Metric]:
    """The metrics among ``names``, in registry order (unknown names are an error)."""
    for name in names:
        get_metric(name)
    return [m for m in METRICS.values() if m.name in names]


def metric_columns(names: Sequence[str]) -> list[str]:
    """The columns of the metrics ``names``, in registry order."""
    return [c for m in chosen(names) for c in m.columns]


def uses_baseline(names: Sequence[str]) -> bool:
    """Whether any of the metrics ``names`` removes pixels to ``evaluate.baseline`` (reads that option)."""
    return any("baseline" in m.options for m in chosen(names))


def flag_columns(names: Sequence[str]) -> list[str]:
    """The uninformative-class flags (:class:`Flat`) of the metrics ``names``, in registry order."""
    return list(dict.fromkeys(m.flat.flag for m in chosen(names) if m.flat))


def flagged_columns() -> dict[str, str]:
    """Column → the flag whose classes its pooled means leave out (every metric with a :class:`Flat`)."""
    return {c: m.flat.flag for m in METRICS.values() if m.flat for c in m.columns}


def flag_chances() -> dict[str, list[str]]:
    """Flag → its metrics' chance columns, in registry order (the first present decides)."""
    out: dict[str, list[str]] = {}
    for m in METRICS.values():
        if m.flat:
            out.setdefault(m.flat.flag, []).append(m.flat.chance)
    return out


# -- config ---------------------------------------------------------------------------------------
def evaluate_schema() -> dict[str, Any]:
    """The ``properties`` of the config schema's ``evaluate`` section: ``metrics`` (an enum of the
    registered names) and every option a metric reads, in registry order."""
    names = list(METRICS)
    summary = ", ".join(f"{m.name} ({m.description})" for m in METRICS.values())
    properties: dict[str, Any] = {
        "metrics": {
            "type": "array",
            "items": {"enum": names},
            "uniqueItems": True,
            "default": [],
            "description": f"{summary}; [] turns evaluation off",
        }
    }
    for metric in METRICS.values():
        for option, schema in metric.options.items():
            properties.setdefault(option, dict(schema))
    return properties


def check_needs(section: Mapping[str, Any]) -> list[str]:
    """Raise where a chosen metric needs an option the ``evaluate`` ``section`` leaves null; return a
    warning line for each such option set while no chosen metric reads it."""
    metrics = chosen(section["metrics"])
    for metric in metrics:
        for option, what in metric.needs.items():
            check(
                section.get(option) is not None,
                f"config field 'evaluate.{option}': metric '{metric.name}' needs one: {what}",
            )
    warnings = []
    needed = dict.fromkeys(option for m in METRICS.values() for option in m.needs)
    for option in needed:
        readers = [m.name for m in METRICS.values() if option in m.options]
        if section.get(option) is not None and not any(m.name in readers for m in metrics):
            named = " or ".join(f"'{name}'" for name in readers)
            warnings.append(f"config field 'evaluate.{option}': set, but {named} is not in evaluate.metrics; unused")
    return warnings


# -- methods text ---------------------------------------------------------------------------------
def evaluation_paragraph(settings: Mapping[str, Any]) -> str:
    """The methods paragraph of the metrics in ``settings['metrics']`` (the ``evaluate`` section)."""
    parts = [text for text in (m.text(settings) for m in chosen(settings["metrics"])) if text]
    text = "Faithfulness of every map was measured by " + "; ".join(parts) + "."
    whats = list(dict.fromkeys(m.flat.what for m in chosen(settings["metrics"]) if m.flat))
    if whats:
        text += (
            " A class whose chance level did not move (mean |chance − the class's probability on the unmodified "
            f"tile| ≤ 0.01 over the slide's tiles of that class; chance: {'; '.join(whats)}) was flagged "
            "uninformative for that removal and left out of pooled means of its metrics."
        )
    return text


def metric_references(names: Sequence[str]) -> dict[str, str]:
    """Citation → full reference of the metrics ``names`` that have both, in registry order."""
    return {m.citation: m.reference for m in chosen(names) if m.citation and m.reference}


# -- the metrics --------------------------------------------------------------------------------
_SEED = {
    "type": "integer",
    "default": 0,
    "description": "random pixel order (chance level), the reference baseline's tiles, PIC's random seed pixels, "
    "ROAD's noise and random map, sanity's re-initialisation, stability's noise",
}
_CURVE_OPTIONS: dict[str, Mapping[str, Any]] = {
    "steps": {"type": "integer", "minimum": 1, "default": 20, "description": "deletion/insertion: steps of the curves"},
    "baseline": {
        "enum": ["white", "black", "blur", "mean", "reference"],
        "default": "white",
        "description": "deletion/insertion: what removed pixels become (white: glass; reference: the pixels of "
        "a tile of the slide the model gives another class, chosen by seed)",
    },
    "sigma": {"type": "number", "exclusiveMinimum": 0, "default": 8.0, "description": "baseline blur: Gaussian sigma in px"},
    "seed": _SEED,
}
_PETSIUK = ("Petsiuk et al. 2018", "Petsiuk, Das & Saenko, RISE, BMVC 2018")
_BASELINE_WHAT = "for the baseline, the random order's deletion AUC (insertion's without deletion)"


def _curves_text(settings: Mapping[str, Any]) -> str:
    """Deletion and insertion share one phrase (said by the first of them that runs)."""
    baseline = f"{settings.get('baseline', 'white')} baseline"
    if settings.get("baseline") == "blur":
        baseline = f"blur (σ = {settings.get('sigma')} px) baseline"
    elif settings.get("baseline") == "reference":
        baseline = (
            "reference baseline (the pixels of a tile of the same slide that the model gives another class, "
            "drawn per slide and explained class in a seeded random order)"
        )
    kinds = " and ".join(k for k in ("deletion", "insertion") if k in settings["metrics"])
    return (
        f"{kinds} curves (Petsiuk et al. 2018; {settings.get('steps')} steps, {baseline}, softmax "
        "probability of the explained class, AUC by the trapezoid rule), each against the same curve in a "
        f"seeded random pixel order (seed {settings.get('seed')})"
    )


def _pointing_text(settings: Mapping[str, Any]) -> str:
    truth = settings.get("ground_truth")
    what = f"DAB (rgb2hed > {settings.get('dab_threshold')})" if truth == "dab" else "the given masks"
    return (
        f"the share of each map's top {100 * settings.get('top', 0.1):g}% of pixels inside {what}, over the tile's "
        "share (pointing ratio; 1 is chance)"
    )


def _road_text(settings: Mapping[str, Any]) -> str:
    percentiles = settings.get("road_percentiles") or []
    return (
        f"ROAD (Rong et al. 2022; noisy linear imputation of the removed pixels in the model's input, noise "
        f"σ = {settings.get('road_noise')}, seed {settings.get('seed')}; most- and least-relevant-first removal "
        f"at the {', '.join(f'{p:g}' for p in percentiles)}th percentiles of the map, score (LeRF − MoRF) / 2 of "
        "the explained class's softmax probability, as pytorch-grad-cam's ROADCombined), against a seeded "
        "random map"
    )


def _stability_text(settings: Mapping[str, Any]) -> str:
    perturbations = settings.get("perturbations") or {}
    radius = perturbations.get("radius")
    return (
        f"max-sensitivity (Yeh et al. 2019; {perturbations.get('n')} uniform "
        f"perturbations of radius {radius if radius is not None else '0.02 × the input range'})"
    )


for _metric in (
    Metric(
        "deletion", "Petsiuk 2018; with a random-order chance level",
        columns=("deletion_auc", "deletion_chance"),
        compute="perturbation:deletion_result", chance="perturbation:deletion_chance",
        panels=(Panel("deletion_auc", "deletion AUC ↓", "deletion_chance"),), curve="fraction of pixels removed",
        citation=_PETSIUK[0], reference=_PETSIUK[1], text=_curves_text, options=_CURVE_OPTIONS,
        flat=Flat("uninformative", "deletion_chance", _BASELINE_WHAT),
    ),
    Metric(
        "insertion", "Petsiuk 2018; with a random-order chance level",
        columns=("insertion_auc", "insertion_chance"),
        compute="perturbation:insertion_result", chance="perturbation:insertion_chance",
        panels=(Panel("insertion_auc", "insertion AUC ↑", "insertion_chance"),), curve="fraction of pixels restored",
        citation=_PETSIUK[0], reference=_PETSIUK[1], options=_CURVE_OPTIONS,
        text=lambda settings: "" if "deletion" in settings["metrics"] else _curves_text(settings),
        flat=Flat("uninformative", "insertion_chance", _BASELINE_WHAT),
    ),
    Metric(
        "pic", "SIC and AIC, Kapishnikov 2019",
        columns=("sic", "sic_chance", "aic", "aic_chance"),
        compute="pic:pic_result", chance="pic:pic_chance",
        panels=(Panel("sic", "SIC AUC ↑", "sic_chance"), Panel("aic", "AIC AUC ↑", "aic_chance")),
        citation="Kapishnikov et al. 2019",
        reference="Kapishnikov et al., XRAI: better attributions through regions, ICCV 2019",
        text=lambda _: "SIC and AIC (Kapishnikov et al. 2019, PAIR's thresholds), against a seeded random map",
        options={"seed": _SEED},
    ),
    Metric(
        "pointing", "needs ground_truth",
        columns=("pointing_ratio", "pointing_chance"),
        compute="perturbation:pointing_result", chance="perturbation:pointing_chance",
        prepare="perturbation:load_ground_truth",
        panels=(Panel("pointing_ratio", "pointing ratio ↑", "pointing_chance"),),
        text=_pointing_text,
        options={
            "ground_truth": {
                "type": ["string", "null"], "minLength": 1, "default": None,
                "description": "pointing: 'dab' (rgb2hed DAB > dab_threshold) or a folder of {slide}/{tile}.png masks "
                "(non-zero: inside)",
            },
            "dab_threshold": {
                "type": "number", "default": 0.05, "description": "ground_truth dab: threshold on rgb2hed's DAB channel",
            },
            "top": {
                "type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.1,
                "description": "pointing: fraction of the mask's top pixels",
            },
        },
        needs={"ground_truth": "'dab' or a folder of {slide}/{tile}.png masks"},
    ),
    Metric(
        "road", "ROAD, Rong 2022: MoRF/LeRF with noisy linear imputation; with a random-map chance level",
        columns=("road_morf", "road_lerf", "road", "road_chance", "road_chance_morf"),
        compute="road:road_result", chance="road:road_chance",
        panels=(Panel("road", "ROAD ↑", "road_chance"),),
        curve={"road_morf": "fraction imputed, most relevant first", "road_lerf": "fraction imputed, least relevant first"},
        citation="Rong et al. 2022",
        reference="Rong, Leemann, Borisov, Kasneci & Kasneci, A consistent and efficient evaluation strategy for "
        "attribution methods, ICML 2022",
        text=_road_text,
        flat=Flat("road_uninformative", "road_chance_morf", "for ROAD's imputation, the random map's mean MoRF probability"),
        options={
            "road_percentiles": {
                "type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                "minItems": 1, "uniqueItems": True, "default": [10, 20, 30, 40, 50, 60, 70, 80, 90],
                "description": "road: percentiles of the map; MoRF removes the pixels at or above each",
            },
            "road_noise": {
                "type": "number", "minimum": 0, "default": 0.01,
                "description": "road: std of the imputation's Gaussian noise, in the model's input units",
            },
            "seed": _SEED,
        },
    ),
    Metric(
        "sanity", "model randomisation, Adebayo 2018",
        columns=("sanity_spearman", "sanity_ssim", "sanity_passes"),
        compute="sanity:sanity_result",
        panels=(Panel("sanity_spearman", "sanity: Spearman vs random model ↓", 0.5),),  # sanity.SANITY_THRESHOLD
        citation="Adebayo et al. 2018", reference="Adebayo et al., Sanity checks for saliency maps, NeurIPS 2018",
        text=lambda _: (
            "a cascading model-randomisation test (Adebayo et al. 2018; Spearman correlation of |attribution| "
            "with the fully randomised model's, passing below 0.5)"
        ),
        options={"seed": _SEED},
    ),
    Metric(
        "stability", "max-sensitivity, Yeh 2019",
        columns=("max_sensitivity",),
        compute="stability:stability_result",
        panels=(Panel("max_sensitivity", "max-sensitivity ↓"),),
        citation="Yeh et al. 2019",
        reference="Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019",
        text=_stability_text,
        options={
            "perturbations": {
                "type": "object", "additionalProperties": False, "description": "stability: input perturbations",
                "properties": {
                    "n": {"type": "integer", "minimum": 1, "default": 10, "description": "perturbed copies per tile"},
                    "radius": {
                        "type": ["number", "null"], "minimum": 0, "default": None,
                        "description": "uniform noise half-width in preprocessed units; "
                        "null: 0.02 x the tiles' value range",
                    },
                },
                "default": {},
            },
            "seed": _SEED,
        },
    ),
):  # fmt: skip
    register(_metric)
del _metric
