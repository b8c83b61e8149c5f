"""The saliency methods slidegrad offers: one declaration each, their defaults and normalization.

A method is declared once, as a :class:`Method` in :data:`METHODS`; the rest
follows from that declaration: ``SaliencyMap.<name>`` (signature and docstring
from the defaults), the native function in the method's own module (:attr:`Method.native`), PAIR's
call (:class:`PairCall`, read by :mod:`slidegrad.engines.pair`), figure titles, the methods text
(citation, reference, phrase), the layer its sidecar records, its completeness check
(:attr:`Method.path_start`), the config entry's JSON schema (:func:`method_schema`) and the parameter
checks (:func:`resolve_params`; types and ranges in :data:`PARAMS`).  Nothing else compares method
names (``tests/test_method_units.py`` checks).

Defaults follow Slideflow's ``slideflow.grad.SaliencyMap`` (which calls PAIR's
``saliency.core``); PAIR's own defaults apply where Slideflow sets none.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import InputError, check, is_int

LOGGER = logging.getLogger("slidegrad")

ENGINES = ("native", "pair")
"""The engines that compute attributions (:mod:`slidegrad.engines`)."""

KINDS = ("gradient", "xrai", "gradcam", "attention", "probability")
"""Kinds of raw map; each has its normalization (:func:`normalize`)."""

SIGNED_KINDS = ("gradient",)
"""Kinds whose maps have a sign worth keeping: ``signed=True`` (:func:`signed_p99`) is for these only
(see :attr:`Method.signable`)."""


@dataclass(frozen=True)
class PairCall:
    """How PAIR's ``saliency.core`` computes a method (interpreted by :mod:`slidegrad.engines.pair`).

    ``cls``: the ``saliency.core`` class whose ``GetMask`` / ``GetSmoothedMask`` is called;
    ``params``: method parameters passed to it as keywords of the same name;
    ``extra``: fixed keywords; ``hook``: keywords built from PAIR objects or the image —
    ``"black_baseline"``: ``x_baseline`` of zeros; ``"xrai_parameters"``:
    ``extra_parameters=XRAIParameters(steps=steps, algorithm=method.algorithm)``.
    ``first_channel``: PAIR returns one map repeated over the channels (its 3-D Grad-CAM): keep the first.
    """

    cls: str
    params: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    hook: str | None = None
    first_channel: bool = False


@dataclass(frozen=True)
class Method:
    """One attribution method, declared once.

    ``kind`` decides normalization: ``gradient`` maps are ``(H, W, C)`` and are
    reduced with :func:`grayscale_p99`; ``xrai`` maps are ``(H, W)`` region
    scores (:func:`xrai_p99`); ``gradcam`` maps are ``(H, W)`` in [0, 1]
    (:func:`max_scaled`); ``attention`` maps are ``(H, W)`` ≥ 0 on a vision transformer's patch tokens
    (:func:`min_max_scaled`); ``probability`` maps are ``(H, W)`` ≥ 0 on the input's pixels, in units of the
    class probability (RISE's expected probability given the pixel is kept; :func:`min_max_scaled`, and no
    prefix tokens dropped as for ``attention``).

    ``title``: figure column title (``"IG"``).  ``description``: one line, the
    docstring of ``SaliencyMap.<name>``.  ``native``: ``"module:function"`` naming the function
    ``(engine, x, classes, params, method)`` → raw maps (:mod:`slidegrad.engines.native.protocol`) in the
    method's own module under :mod:`slidegrad.engines` (e.g. ``"native.cam:gradcam"``,
    ``"attention:attention_rollout"``).
    ``pair``: how PAIR computes it (``None``: PAIR has no such method; native engine only).
    ``layer``: the method reads a layer's activations (the CAMs): its sidecar records the layer.
    ``transformer``: it needs a vision transformer (reads its attention); ``SaliencyMap.all`` skips it
    on other models.
    ``citation`` (``"Simonyan et al. 2014"``), ``reference`` (the full reference), ``phrase`` (its
    name in a methods paragraph) and ``baseline`` (how its path starts, said there): the report's
    methods text (:mod:`slidegrad.methods_text`).  ``defaults``: parameter → default, in signature order
    (types and ranges in :data:`PARAMS`).  ``smoothable``: takes ``smooth=True``
    (SmoothGrad).  ``algorithm``: a variant the native function and PAIR read
    (XRAI's region selection: ``"full"`` or ``"fast"``).
    ``path_start``: where the method's integration path starts, one of :data:`PATH_STARTS` (``"black"``:
    zeros; ``"blurred"``: the tile blurred at the last σ), which :mod:`slidegrad.completeness` checks the
    map's total against; ``None``: not a path method (no completeness error).
    ``noise_dtype``: the dtype of SmoothGrad's noisy copies in the native engine (``"float64"`` where the
    method's finite differences need PAIR's precision: Blur IG).
    """

    name: str
    kind: str
    title: str
    description: str
    native: str
    pair: PairCall | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    smoothable: bool = True
    algorithm: str | None = None
    layer: bool = False
    transformer: bool = False
    citation: str | None = None
    reference: str | None = None
    phrase: str | None = None
    baseline: str | None = None
    path_start: str | None = None
    noise_dtype: str = "float32"

    @property
    def signable(self) -> bool:
        """Takes ``signed=True``: its raw maps carry a sign per pixel (kind in :data:`SIGNED_KINDS`)."""
        return self.kind in SIGNED_KINDS


PATH_STARTS = ("black", "blurred")
"""Where a path method's integration starts (:attr:`Method.path_start`; see :mod:`slidegrad.completeness`)."""


@dataclass(frozen=True)
class Param:
    """A method parameter's type and range.

    ``kind``: ``int``, ``float`` (an int is accepted too), ``bool``, ``layer`` (a
    string or ``None``) or ``choice`` (one of the strings ``choices``); bools are never
    numbers.  ``low``/``high`` bound numbers, inclusively unless ``low_open``/``high_open``.  ``engine``: the only engine whose
    result it can change (``None``: every engine).  ``aliases``: old names of choices, old → new (accepted
    with a warning, see :func:`resolve_params`).  ``phrase``: how the methods paragraph
    (:mod:`slidegrad.methods_text`) says a value: a format string (``"{} integration steps"``), a mapping
    value → text (``""``: unsaid), or a callable value → text; ``None``: ``"<name> <value>"``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    engine: str | None = None
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False)
    phrase: Any = field(default=None, compare=False)

    def describe(self) -> str:
        """What is expected, e.g. ``an integer ≥ 1`` or ``a number > 0 and ≤ 1``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "layer":
            return "a layer name or null"
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        bounds = [
            f"{sign} {bound}"
            for bound, sign in ((self.low, ">" if self.low_open else "≥"), (self.high, "<" if self.high_open else "≤"))
            if bound is not None
        ]
        return f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(bounds)}".strip()

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this type and lies in this range."""
        if self.kind == "bool":
            return isinstance(value, (bool, np.bool_))
        if self.kind == "layer":
            return value is None or isinstance(value, str)
        if self.kind == "choice":
            return isinstance(value, str) and (value in self.choices or value in self.aliases)
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        number = is_int(value) or (self.kind == "float" and real)
        if not number or not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def convert(self, value: Any) -> Any:
        """``value`` as a plain Python ``int``/``float``/``bool`` (JSON-safe), kept as is otherwise."""
        return {"int": int, "float": float, "bool": bool, "choice": str}.get(self.kind, lambda v: v)(value)

    def schema(self) -> dict[str, Any]:
        """JSON schema (draft 2020-12) of a value: its type and bounds."""
        if self.kind == "choice":
            return {"type": "string", "enum": [*self.choices, *self.aliases]}
        if self.kind in ("bool", "layer"):
            return {"type": "boolean" if self.kind == "bool" else ["string", "null"]}
        out: dict[str, Any] = {"type": "integer" if self.kind == "int" else "number"}
        if self.low is not None:
            out["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None:
            out["exclusiveMaximum" if self.high_open else "maximum"] = self.high
        return out


INTEGRATION_RULES = ("riemann_mean", "trapezoid", "gauss_legendre")
"""IG's quadrature rules: PAIR's mean over ``linspace(0, 1, steps)`` (both ends, every step weight 1/steps; the
default), the trapezoid rule on the same nodes (the two ends weighted half), or Gauss–Legendre nodes on
[0, 1] (``steps`` nodes; exact on polynomials of degree ≤ 2·steps − 1); see
:func:`slidegrad.engines.native.quadrature`."""

INTEGRATION_ALIASES = {"riemann_trapezoid": "riemann_mean"}
"""Old names of the rules (deprecated: accepted with a warning): ``riemann_trapezoid`` was PAIR's mean."""

_INTEGRATION_PHRASES = {  # the default (riemann_mean, and its old name in older mask files) is unsaid
    "riemann_mean": "", "riemann_trapezoid": "", "trapezoid": "trapezoid rule", "gauss_legendre": "Gauss–Legendre quadrature",
}  # fmt: skip


def _stride_phrase(stride: int) -> str:
    return "moved by 1 px" if stride == 1 else f"moved by {stride} px (the sum over every position estimated)"


PARAMS: dict[str, Param] = {
    "x_steps": Param("int", 1, phrase="{} integration steps"),
    "batch_size": Param("int", 1, engine="pair"),  # PAIR's model-call batch; native batches by memory budget
    "max_dist": Param("float", 0, 1, phrase="max_dist {}"),
    "fraction": Param("float", 0, 1, low_open=True, phrase="fraction {}"),
    "max_sigma": Param("float", 0, low_open=True, phrase="blur up to σ = {} px"),
    "steps": Param("int", 1, phrase="{} steps"),
    "grad_step": Param("float", 0, low_open=True, phrase="gradient step {}"),
    "sqrt": Param("bool", phrase={True: "square-root-spaced σ", False: "linearly spaced σ"}),
    "layer": Param("layer"),
    "stdev_spread": Param("float", 0, phrase="noise σ = {} × the input range"),
    "nsamples": Param("int", 1, phrase="{} noisy samples"),
    "magnitude": Param("bool", phrase={True: "squared gradients", False: "signed gradients"}),
    "seed": Param("int", 0, 2**32 - 1, phrase="seed {}"),
    # the IG path's quadrature; the pair engine computes only riemann_mean (and refuses the others)
    "integration": Param("choice", choices=INTEGRATION_RULES, aliases=INTEGRATION_ALIASES, phrase=_INTEGRATION_PHRASES),
    # adaptive IG (native engine): tiles whose completeness error exceeds tolerance rerun with 2× steps,
    # up to max_steps; 0: fixed steps (PAIR's)
    "tolerance": Param("float", 0, phrase="steps doubled per tile until its completeness error ≤ {}"),
    "max_steps": Param("int", 1, phrase="at most {} steps"),
    # attention rollout: how a block's heads are fused, and the share of lowest fused weights dropped
    "head_fusion": Param("choice", choices=("mean", "max", "min"), phrase="heads fused by their {}"),
    "discard_ratio": Param("float", 0, 1, high_open=True, phrase="lowest {} of the fused attention discarded"),
    # occlusion: the window's side in pixels, and the value it fills in
    "size": Param("int", 1, phrase="a {} px window"),
    "value": Param("float", phrase="filled with {}"),
    # RISE: random masks, the side of their coarse grid, and the probability a grid cell is kept
    "n_masks": Param("int", 1, phrase="{} random masks"),
    "grid": Param("int", 1, phrase="a {0} × {0} grid"),
    "p": Param("float", 0, 1, low_open=True, phrase="cells kept with p = {}"),
    # GradientSHAP: samples per tile, and the σ of the Gaussian noise added to the input
    "n_samples": Param("int", 1, phrase="{} samples"),
    "stdevs": Param("float", 0, phrase="input noise σ = {}"),
    "stride": Param("int", 1, phrase=_stride_phrase),  # occlusion's window step; > 1: native engine only (PAIR slides by 1)
}
"""Every method parameter's type and range (one entry per name, shared by the methods using it)."""

SMOOTH_DEFAULTS: dict[str, Any] = {"stdev_spread": 0.15, "nsamples": 25, "magnitude": True, "seed": 0}
"""SmoothGrad's parameters (any method with ``smooth=True``): PAIR's noise, Slideflow's sample count."""

METHODS: dict[str, Method] = {}
"""Every method by name, in the order of figure columns and :meth:`SaliencyMap.all`; see :func:`register`."""


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`; its declaration is all slidegrad needs.

    ``SaliencyMap.<name>``, config entries, the schema and figure titles follow.  The
    engines must be able to compute it: ``method.native`` names its native function
    (``"module:function"``) and ``method.pair`` a ``saliency.core`` class (or ``None``: native only).
    """
    where = f"method {method.name}"
    check(method.name.isidentifier(), f"{where}: a method name must be a Python identifier")
    check(method.name not in METHODS, f"{where}: already registered")
    check(method.kind in KINDS, f"{where}: kind {method.kind!r} is not one of {', '.join(KINDS)}")
    check(":" in method.native, f"{where}: native {method.native!r} is not 'module:function'")
    check(
        method.path_start in (None, *PATH_STARTS),
        f"{where}: path_start {method.path_start!r} is not one of {', '.join(PATH_STARTS)} or None",
    )
    unknown = sorted(set(method.defaults) - set(PARAMS))
    check(not unknown, f"{where}: parameter(s) {', '.join(unknown)} are not in PARAMS")
    for key, value in method.defaults.items():
        check(PARAMS[key].accepts(value), f"{where}: default {key}={value!r} is not {PARAMS[key].describe()}")
    extra = sorted(set(method.pair.params if method.pair else ()) - set(method.defaults))
    check(not extra, f"{where}: PAIR keywords {', '.join(extra)} are not parameters of the method")
    METHODS[method.name] = method
    return method


_BLACK_IG = PairCall("IntegratedGradients", ("x_steps", "batch_size"), hook="black_baseline")
_XRAI = PairCall("XRAI", ("batch_size",), hook="xrai_parameters")
_XRAI_DEFAULTS = {"batch_size": 20, "steps": 100, "integration": "riemann_mean"}
for _method in (
    Method(
        "vanilla", "gradient", "Gradient",
        "Gradient of the class logit with respect to the input.",
        native="native.gradients:vanilla", pair=PairCall("GradientSaliency"),
        citation="Simonyan et al. 2014", reference="Simonyan, Vedaldi & Zisserman, Deep inside convolutional networks, ICLR Workshop 2014",
        phrase="vanilla gradients",
    ),
    Method(
        "integrated_gradients", "gradient", "IG",
        "Integrated gradients from a black (zero) baseline.",
        native="native.integrated:integrated_gradients", pair=_BLACK_IG,
        citation="Sundararajan et al. 2017", reference="Sundararajan, Taly & Yan, Axiomatic attribution for deep networks, ICML 2017",
        phrase="integrated gradients", baseline="black baseline", path_start="black",
        defaults={
            "x_steps": 25, "batch_size": 20, "integration": "riemann_mean", "tolerance": 0.0, "max_steps": 128,
        },
    ),
    Method(
        "guided_integrated_gradients", "gradient", "Guided IG",
        "Guided integrated gradients (Kapishnikov et al. 2021) from a black baseline.",
        native="native.guided:guided_integrated_gradients",
        citation="Kapishnikov et al. 2021", reference="Kapishnikov et al., Guided integrated gradients, CVPR 2021",
        phrase="guided integrated gradients", baseline="black baseline", path_start="black",
        pair=PairCall("GuidedIG", ("x_steps", "max_dist", "fraction"), hook="black_baseline"),
        defaults={"x_steps": 25, "max_dist": 1.0, "fraction": 0.5},
    ),
    Method(
        "blur_integrated_gradients", "gradient", "Blur IG",
        "Blur IG (Xu et al. 2020): integrated gradients along a path of Gaussian blurs.",
        native="native.blur:blur_integrated_gradients",
        citation="Xu et al. 2020", reference="Xu, Venugopalan & Sundararajan, Attribution in scale and space, CVPR 2020",
        phrase="blur integrated gradients", path_start="blurred", noise_dtype="float64",
        pair=PairCall("BlurIG", ("max_sigma", "steps", "grad_step", "sqrt", "batch_size")),
        defaults={"batch_size": 20, "max_sigma": 50.0, "steps": 100, "grad_step": 0.01, "sqrt": False},
    ),
    Method(
        "xrai", "xrai", "XRAI",
        "XRAI (full algorithm): integrated gradients summed over Felzenszwalb regions, ranked greedily.",
        native="native.xrai:xrai", pair=_XRAI, defaults=dict(_XRAI_DEFAULTS), smoothable=False, algorithm="full",
        citation="Kapishnikov et al. 2019", reference="Kapishnikov et al., XRAI: better attributions through regions, ICCV 2019",
        phrase="XRAI", baseline="integrated gradients from a black and a white baseline",
    ),
    Method(
        "xrai_fast", "xrai", "XRAI (fast)",
        "XRAI, fast algorithm: regions ranked once by their mean attribution.",
        native="native.xrai:xrai", pair=_XRAI, defaults=dict(_XRAI_DEFAULTS), smoothable=False, algorithm="fast",
        citation="Kapishnikov et al. 2019", reference="Kapishnikov et al., XRAI: better attributions through regions, ICCV 2019",
        phrase="fast XRAI", baseline="integrated gradients from a black and a white baseline",
    ),
    Method(
        "gradcam", "gradcam", "Grad-CAM",
        "Grad-CAM on ``layer`` (``None``: the last convolutional layer), resized to the input.",
        native="native.cam:gradcam",
        pair=PairCall("GradCam", extra={"should_resize": True, "three_dims": True}, first_channel=True),
        citation="Selvaraju et al. 2017", reference="Selvaraju et al., Grad-CAM, ICCV 2017",
        phrase="Grad-CAM",
        defaults={"layer": None}, layer=True,
    ),
    Method(
        "gradcam_plusplus", "gradcam", "Grad-CAM++",
        "Grad-CAM++ on ``layer`` (``None``: the last convolutional layer): channels weighted by their positive "
        "gradients, each scaled by the closed-form α of Chattopadhay et al.; resized to the input.",
        native="native.cam:gradcam_plusplus", pair=None,
        citation="Chattopadhay et al. 2018",
        reference="Chattopadhay, Sarkar, Howlader & Balasubramanian, Grad-CAM++: generalized gradient-based "
        "visual explanations for deep convolutional networks, WACV 2018",
        phrase="Grad-CAM++",
        defaults={"layer": None}, layer=True,
    ),
    Method(
        "hirescam", "gradcam", "HiResCAM",
        "HiResCAM on ``layer`` (``None``: the last convolutional layer): the gradient times the activation at "
        "every position, summed over channels (no averaging of the gradient); resized to the input.",
        native="native.cam:hirescam", pair=None,
        citation="Draelos & Carin 2020",
        reference="Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional "
        "neural networks, arXiv:2011.08891, 2020",
        phrase="HiResCAM",
        defaults={"layer": None}, layer=True,
    ),
    Method(
        "layercam", "gradcam", "LayerCAM",
        "LayerCAM on ``layer`` (``None``: the last convolutional layer): the positive gradient times the "
        "activation at every position, summed over channels; resized to the input.",
        native="native.cam:layercam", pair=None,
        citation="Jiang et al. 2021",
        reference="Jiang, Zhang, Hou, Cheng & Wei, LayerCAM: exploring hierarchical class activation maps for "
        "localization, IEEE TIP 2021",
        phrase="LayerCAM",
        defaults={"layer": None}, layer=True,
    ),
    Method(
        "scorecam", "gradcam", "Score-CAM",
        "Score-CAM on ``layer`` (``None``: the last convolutional layer), gradient-free: each channel, upsampled "
        "and min-max scaled, masks the input; the softmax over channels of the masked inputs' class logits "
        "weights the channels (one forward pass per tile and channel); resized to the input.",
        native="native.cam:scorecam", pair=None,
        citation="Wang et al. 2020",
        reference="Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, Score-CAM: score-weighted visual explanations "
        "for convolutional neural networks, CVPR Workshops 2020",
        phrase="Score-CAM",
        defaults={"layer": None}, layer=True,
    ),
    Method(
        "occlusion", "gradient", "Occlusion",
        "Occlusion: a ``size`` × ``size`` window of ``value`` slid over the input every ``stride`` pixels (and "
        "at the last position); each pixel sums the class logit's drop of the windows covering it (PAIR's, "
        "stride 1); stride > 1 (native engine only) estimates that sum: the pixel's mean drop times its count "
        "of stride-1 windows; forward passes only.",
        native="native.occlusion:occlusion", pair=PairCall("Occlusion", ("size", "value")),
        citation="Zeiler & Fergus 2014",
        reference="Zeiler & Fergus, Visualizing and understanding convolutional networks, ECCV 2014",
        phrase="occlusion",
        defaults={"size": 15, "value": 0.0, "stride": 1},
    ),
    Method(
        "rise", "probability", "RISE",
        "RISE: the class probability averaged over ``n_masks`` random masks (``grid`` × ``grid`` cells, each "
        "kept with probability ``p``, upsampled bilinearly and shifted at random), each mask weighted by the "
        "probability of the tile masked by it, / (``n_masks`` · ``p``); the masks are drawn once per call "
        "with numpy's Generator(``seed``) and shared by every tile.  Defaults: the paper's for ResNet-50 "
        "(s = 7, p1 = 0.5, N = 4000).  Forward passes only.",
        native="native.rise:rise", pair=None, smoothable=False,
        citation="Petsiuk et al. 2018",
        reference="Petsiuk, Das & Saenko, RISE: randomized input sampling for explanation of black-box models, "
        "BMVC 2018",
        phrase="RISE",
        defaults={"n_masks": 4000, "grid": 7, "p": 0.5, "seed": 0},
    ),
    Method(
        "input_x_gradient", "gradient", "Input × Gradient",
        "Input × gradient (Captum's InputXGradient): the class logit's gradient at the tile times the tile.",
        native="native.input_x_gradient:input_x_gradient", pair=None,
        citation="Shrikumar et al. 2017",
        reference="Shrikumar, Greenside & Kundaje, Learning important features through propagating activation "
        "differences, ICML 2017",
        phrase="input × gradient",
    ),
    Method(
        "gradient_shap", "gradient", "GradientSHAP",
        "GradientSHAP (Captum's GradientShap): the mean over ``n_samples`` draws of ∇f(b + α (x̃ − b)) ⊙ "
        "(x̃ − b), with b drawn from three baselines per tile (black: zeros, as IG's; white: the tile's "
        "maximum, as XRAI's; the tile blurred with a Gaussian of σ = 8 px), α ~ U(0, 1) and x̃ = x + "
        "N(0, ``stdevs``²) noise; drawn with numpy's Generator(``seed``), the same draws for every tile.  "
        "Defaults: Captum's (5 samples, no noise).",
        native="native.gradient_shap:gradient_shap", pair=None, smoothable=False,
        citation="Lundberg & Lee 2017",
        reference="Lundberg & Lee, A unified approach to interpreting model predictions, NeurIPS 2017",
        phrase="GradientSHAP", baseline="baselines black, white and the tile blurred (σ = 8 px)",
        defaults={"n_samples": 5, "stdevs": 0.0, "seed": 0},
    ),
    Method(
        "attention_rollout", "attention", "Rollout",
        "Attention rollout (Abnar & Zuidema 2020) of a vision transformer: the CLS token's attention to each "
        "patch through every block, heads fused by ``head_fusion``, the lowest ``discard_ratio`` dropped, "
        "the residual path as (A + I) / 2.",
        native="attention:attention_rollout", pair=None, defaults={"head_fusion": "mean", "discard_ratio": 0.0},
        transformer=True,
        citation="Abnar & Zuidema 2020", reference="Abnar & Zuidema, Quantifying attention flow in transformers, ACL 2020",
        phrase="attention rollout",
    ),
    Method(
        "transformer_attribution", "attention", "Transformer attr.",
        "Gradient-weighted attention (Chefer, Gur & Wolf 2021, generic attention-model explainability) of a "
        "vision transformer: R ← R + mean_heads(relu(∇A ⊙ A)) · R over the blocks; the CLS row over the patches.",
        native="attention:transformer_attribution", pair=None, transformer=True,
        citation="Chefer et al. 2021", reference="Chefer, Gur & Wolf, Generic attention-model explainability for interpreting bi-modal and encoder-decoder transformers, ICCV 2021",
        phrase="gradient-weighted attention relevance",
    ),
):  # fmt: skip
    register(_method)
del _method


def title(name: str, smooth: bool = False, signed: bool = False) -> str:
    """Short column title for figures, e.g. ``"IG"``, ``"Gradient (smooth)"``, ``"IG (signed)"``."""
    suffix = ", ".join(word for word, on in (("smooth", smooth), ("signed", signed)) if on)
    return (METHODS[name].title if name in METHODS else name) + (f" ({suffix})" if suffix else "")


def default_id(name: str, smooth: bool = False, signed: bool = False) -> str:
    """A config entry's default id (its output folder): ``name``, ``name_smooth``, ``name_signed``,
    ``name_smooth_signed``."""
    return name + ("_smooth" if smooth is True else "") + ("_signed" if signed is True else "")


def check_signed(method: Method, signed: Any) -> bool:
    """``signed`` as a bool, if ``method`` takes it (:attr:`Method.signable`); else one InputError line."""
    check(
        isinstance(signed, (bool, np.bool_)),
        f"method {method.name}: field 'signed' must be true or false, got {signed!r}",
    )
    signables = ", ".join(m.name for m in METHODS.values() if m.signable)
    check(
        not signed or method.signable,
        f"method {method.name}: field 'signed' is only for gradient methods ({signables}); "
        f"{method.name}'s maps (kind {method.kind}) have no sign",
    )
    return bool(signed)


def get_method(name: str) -> Method:
    """Look a method up by name; unknown names list the known ones."""
    check(name in METHODS, f"method: unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_params(method: Method, params: dict[str, Any], smooth: bool, signed: bool = False) -> dict[str, Any]:
    """Method defaults overlaid with ``params``, each checked against :data:`PARAMS`;
    smoothing keys are allowed only with ``smooth``; ``signed`` only for gradient methods (:func:`check_signed`)."""
    check_signed(method, signed)
    allowed = set(method.defaults) | (set(SMOOTH_DEFAULTS) if smooth else set())
    unknown = sorted(set(params) - allowed)
    check(
        not unknown,
        f"method {method.name}: unknown parameter(s) {', '.join(unknown)}; expected any of "
        f"{', '.join(sorted(allowed)) or '(none)'}",
    )
    check(not smooth or method.smoothable, f"method {method.name}: does not support smooth=True")
    resolved = {**method.defaults, **(SMOOTH_DEFAULTS if smooth else {})}
    for key, value in params.items():
        spec = PARAMS[key]
        if not spec.accepts(value):
            raise InputError(f"method {method.name}: parameter {key!r} must be {spec.describe()}, got {value!r}")
        if isinstance(value, str) and value in spec.aliases:
            LOGGER.warning(
                "method %s: %s %r is an old name (deprecated); use %r, the same rule", method.name, key, value,
                spec.aliases[value],
            )  # fmt: skip
            value = spec.aliases[value]
        resolved[key] = spec.convert(value)
    return resolved


def output_params(method: Method, params: dict[str, Any], engine: str) -> dict[str, Any]:
    """The parameters of ``params`` (as :func:`resolve_params` gives them) that can change ``engine``'s result.

    Drops those of another engine (:attr:`Param.engine`): ``batch_size`` only batches
    PAIR's model calls, so the native engine (batched by memory budget) gives the same
    maps for every ``batch_size``.
    """
    check(engine in ENGINES, f"engine: unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    unknown = sorted(set(params) - set(method.defaults) - set(SMOOTH_DEFAULTS))
    check(not unknown, f"method {method.name}: unknown parameter(s) {', '.join(unknown)}")
    return {key: value for key, value in params.items() if PARAMS[key].engine in (None, engine)}


def method_schema() -> dict[str, Any]:
    """JSON schema (draft 2020-12) of one entry of the workflow config's ``methods:`` list.

    A method name, or ``{name, id, smooth, signed, <parameters>}`` with each parameter's type
    and bounds from :data:`PARAMS` and its default where every method using it agrees.
    Which parameters a method takes is left to :func:`resolve_params` (its messages name
    the method).
    """
    names = list(METHODS)
    properties: dict[str, Any] = {
        "name": {"type": "string", "enum": names},
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "output folder; default name[_smooth][_signed]"},
        "smooth": {"type": "boolean", "default": False, "description": "SmoothGrad (not for XRAI)"},
        "signed": {
            "type": "boolean", "default": False,
            "description": "keep the sign: masks in [-1, 1], drawn with a diverging colour map (gradient methods only)",
        },
    }
    for key, spec in PARAMS.items():
        users = [m.name for m in METHODS.values() if key in m.defaults]
        defaults = [m.defaults[key] for m in METHODS.values() if key in m.defaults]
        if key in SMOOTH_DEFAULTS:
            users.append("any with smooth: true")
            defaults.append(SMOOTH_DEFAULTS[key])
        entry = {**spec.schema(), "description": f"{spec.describe()}; {', '.join(users)}"}
        if spec.engine is not None:
            entry["description"] += f" ({spec.engine} engine only)"
        if defaults and all(d == defaults[0] and type(d) is type(defaults[0]) for d in defaults):
            entry["default"] = defaults[0]
        properties[key] = entry
    return {
        "description": "a method name, or a mapping with its name, an id, smooth, signed and parameters",
        "oneOf": [
            {"type": "string", "enum": names},
            {"type": "object", "required": ["name"], "properties": properties},
        ],
    }


def grayscale_p99(attr: np.ndarray, percentile: float = 99) -> np.ndarray:
    """PAIR's ``VisualizeImageGrayscale``: ``(H, W, C)`` → ``(H, W)`` float32 in [0, 1].

    Sum of absolute values over channels, scaled to [min, p99] and clipped.
    """
    image_2d = np.sum(np.abs(attr), axis=-1)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    if vmax <= vmin:
        return np.zeros(image_2d.shape, np.float32)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1).astype(np.float32)


def signed_p99(attr: np.ndarray, percentile: float = 99) -> np.ndarray:
    """Signed gradient maps: ``(H, W, C)`` → ``(H, W)`` float32 in [−1, 1], positive and negative evidence apart.

    The channel sum (no absolute value) divided by the ``percentile`` of its absolute values (their
    maximum where that percentile is 0: a sparse map), clipped to [−1, 1]; 0 stays 0 (an all-zero map
    stays zero).

    PAIR's ``VisualizeImageDiverging`` sums the channels too but maps ``[−span, span]`` to [0, 1] around
    0.5: ``(s + span) / (2·span)``, with ``span = |percentile(s)|`` of the *signed* sum, then clips to
    [−1, 1] (so values below −span go below 0, down to −1 at −3·span).  Here the span is the
    percentile of ``|s|`` (symmetric in the sign) and the output is centred on 0:
    ``PAIR = (ours + 1) / 2`` wherever ``s ≥ −span`` and both take the same span.
    """
    image_2d = np.sum(attr, axis=-1, dtype=np.float64) if attr.ndim == 3 else np.asarray(attr, np.float64)
    span = float(np.percentile(np.abs(image_2d), percentile))
    if not span > 0:
        span = float(np.abs(image_2d).max())
    if not span > 0:
        return np.zeros(image_2d.shape, np.float32)
    return np.clip(image_2d / span, -1, 1).astype(np.float32)


def xrai_p99(attr: np.ndarray, percentile: float = 99) -> np.ndarray:
    """Slideflow's XRAI normalization: ``(m − min) / (p99 − min)`` clipped to [0, 1]."""
    vmax = np.percentile(attr, percentile)
    vmin = np.min(attr)
    if vmax <= vmin:
        return np.zeros(attr.shape, np.float32)
    return np.clip((attr - vmin) / (vmax - vmin), 0, 1).astype(np.float32)


def max_scaled(attr: np.ndarray) -> np.ndarray:
    """Grad-CAM maps: ReLU'd and divided by their max; all-zero stays zero. In [0, 1]."""
    attr = np.maximum(attr, 0)
    peak = attr.max()
    return (attr / peak if peak > 0 else np.zeros_like(attr)).astype(np.float32)


def min_max_scaled(attr: np.ndarray) -> np.ndarray:
    """Attention maps (≥ 0, with an offset shared by every patch): ``(m − min) / (max − min)``; flat maps are 0."""
    low, high = float(np.min(attr)), float(np.max(attr))
    if not high > low:
        return np.zeros(attr.shape, np.float32)
    return ((attr - low) / (high - low)).astype(np.float32)


NORMALIZERS = {
    "gradient": grayscale_p99, "xrai": xrai_p99, "gradcam": max_scaled, "attention": min_max_scaled,
    "probability": min_max_scaled,
}  # fmt: skip


def normalize(method: Method, raw: np.ndarray, signed: bool = False) -> np.ndarray:
    """Raw attribution of one image → ``(H, W)`` float32 mask in [0, 1]; with ``signed`` (gradient methods,
    :func:`check_signed`) in [−1, 1] (:func:`signed_p99`)."""
    if check_signed(method, signed):
        return signed_p99(raw)
    return NORMALIZERS[method.kind](raw)


# Channel reductions: the (H, W) map each normalizer scales (before its per-image scaling).
REDUCERS = {
    "gradient": lambda attr: np.sum(np.abs(attr), axis=-1),
    "xrai": lambda attr: attr,
    "gradcam": lambda attr: np.maximum(attr, 0),
    "attention": lambda attr: attr,
    "probability": lambda attr: attr,
}


def reduce(method: Method, raw: np.ndarray, signed: bool = False) -> np.ndarray:
    """Raw attribution of one image → ``(H, W)`` float32, channel-reduced but not scaled: the values
    :func:`normalize` scales per image (gradient maps: sum of |attribution| over channels, with ``signed``
    the plain sum over channels, sign kept; Grad-CAM: the ReLU'd map; XRAI, attention and probability (RISE)
    maps: the map itself).  Slide maps scale these once per slide."""
    if check_signed(method, signed):
        return np.sum(raw, axis=-1, dtype=np.float32)
    return np.asarray(REDUCERS[method.kind](raw), np.float32)
