"""Stain normalisation as Slideflow applies it before a model's preprocessing.

A Slideflow model trained with ``hp.normalizer`` saw every tile normalised, then
preprocessed; so does slidegrad, and saliency is taken with respect to that input.
The normalisers work on uint8 RGB tiles on the host (numpy), the same for PyTorch
and Keras models, and follow Slideflow 3.0's numpy implementations step for step:

* ``reinhard_fast``: Reinhard colour transfer in CIE L*a*b* (sRGB, D65): each
  channel is shifted and scaled from the tile's mean and std to the fit's
  ``target_means`` / ``target_stds``;
* ``reinhard``: the same after brightness standardisation (every value scaled so
  the tile's 90th percentile becomes 255);
* ``reinhard_mask`` / ``reinhard_fast_mask``: pixels with ``L* / 100 ≥ 0.93``
  (glass) keep their (brightness-standardised) colour;
* ``macenko`` / ``macenko_fast``: Macenko's stain separation in optical density
  (``-ln((I + 1) / 255)``, pixels with every OD ≥ β = 0.15, angles at the
  α = 1 and 99 percentiles), concentrations rescaled so their 99th percentile
  matches ``target_concentrations``, recomposed with ``stain_matrix_target``;
  ``macenko`` standardises brightness first, ``macenko_fast`` does not.

The fit comes from ``params.json``'s ``norm_fit`` (Slideflow writes it), else the
preset named by ``hp.normalizer_source`` (``v1``, ``v2``, ``v3``), else Slideflow's
default preset ``v3``.  Presets are Slideflow's fitted values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .backends import get_framework
from .errors import InputError, check, listed

METHODS = ("reinhard", "reinhard_fast", "reinhard_mask", "reinhard_fast_mask", "macenko", "macenko_fast")
"""Normalisers slidegrad applies (Slideflow's names)."""

NOT_SUPPORTED = {
    "vahadane": "Slideflow's Vahadane needs SPAMS, which has no maintained PyPI release",
    "vahadane_spams": "Slideflow's Vahadane needs SPAMS, which has no maintained PyPI release",
    "vahadane_sklearn": "its dictionary learning is randomised, so tiles would not normalise reproducibly",
    "augment": "it is a training-time augmentation, not applied at inference",
    "cyclegan": "it needs Slideflow's CycleGAN weights",
}
NO_NORMALIZER = (None, "", "none", "None")
PRESET_DEFAULT = "v3"

FIT_KEYS = {
    "reinhard": ("target_means", "target_stds"),
    "macenko": ("stain_matrix_target", "target_concentrations"),
}
FIT_SHAPES = {
    "target_means": (3,),
    "target_stds": (3,),
    "stain_matrix_target": (3, 2),
    "target_concentrations": (2,),
}

# Slideflow 3.0's fitted presets (sf.norm.utils.fit_presets), per preset family.
PRESETS: dict[str, dict[str, dict[str, list]]] = {
    "reinhard": {
        "v1": {"target_means": [72.272896, 22.99831, -13.860236], "target_stds": [15.594496, 9.642087, 9.290526]},
        "v2": {"target_means": [72.909996, 20.8268, -4.9465137], "target_stds": [18.560713, 14.889295, 5.6756697]},
        "v3": {"target_means": [65.22132, 28.934267, -14.142519], "target_stds": [15.800227, 9.263783, 6.0213304]},
    },
    "reinhard_fast": {
        "v1": {"target_means": [63.71194, 20.716246, -12.290746], "target_stds": [14.52781, 8.344005, 8.300264]},
        "v2": {"target_means": [69.20197, 19.82498, -4.690998], "target_stds": [17.71583, 14.156416, 5.4176064]},
        "v3": {"target_means": [58.12343, 26.483482, -12.701005], "target_stds": [14.675022, 7.5744166, 5.226378]},
    },
    "macenko": {
        "v1": {
            "stain_matrix_target": [[0.63111544, 0.24816133], [0.6962834, 0.8226449], [0.34188122, 0.5115382]],
            "target_concentrations": [1.4423684, 0.9685806],
        },
        "v2": {
            "stain_matrix_target": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
            "target_concentrations": [1.9705, 1.0308],
        },
        "v3": {
            "stain_matrix_target": [[0.5062568, 0.2218694], [0.75322306, 0.8652155], [0.40691733, 0.42241502]],
            "target_concentrations": [1.7656903, 1.2797493],
        },
    },
    "macenko_fast": {
        "v1": {
            "stain_matrix_target": [[0.6148019, 0.21480364], [0.7010872, 0.82317936], [0.36124164, 0.5255809]],
            "target_concentrations": [1.8029537, 0.9606744],
        },
        "v2": {
            "stain_matrix_target": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
            "target_concentrations": [1.9705, 1.0308],
        },
        "v3": {
            "stain_matrix_target": [[0.52000326, 0.2623537], [0.73508584, 0.83495414], [0.4249617, 0.4630997]],
            "target_concentrations": [2.0259454, 1.4088874],
        },
    },
}
PRESET_FAMILY = {
    "reinhard": "reinhard",
    "reinhard_mask": "reinhard",
    "reinhard_fast": "reinhard_fast",
    "reinhard_fast_mask": "reinhard_fast",
    "macenko": "macenko",
    "macenko_fast": "macenko_fast",
}

MASK_THRESHOLD = 0.93  # reinhard_*mask: L*/100 at or above this is glass and keeps its colour
MACENKO_ALPHA = 1.0  # percentile of the stain angles
MACENKO_BETA = 0.15  # OD below this in any channel: transparent, left out of the stain fit
BRIGHTNESS_PERCENTILE = 90

# sRGB (D65) ↔ XYZ, and the D65 white point (2° observer).
_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_XYZ_TO_RGB = np.array(
    [[3.24048134, -1.53715152, -0.49853633], [-0.96925495, 1.87599, 0.04155593], [0.05564664, -0.20404134, 1.05731107]]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


class BlankTileError(InputError):
    """A normaliser cannot normalise some tiles (``indices`` into the batch): no stain or no contrast."""

    def __init__(self, message: str, indices: list[int]) -> None:
        super().__init__(message)
        self.indices = indices


# -- colour space ---------------------------------------------------------------------
def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] ``(…, 3)`` → CIE L*a*b* (D65), in ``rgb``'s float dtype; L* in [0, 100]."""
    dtype = rgb.dtype
    linear = np.where(rgb > 0.04045, np.power((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)
    xyz = (linear @ _RGB_TO_XYZ.T.astype(dtype)) / _WHITE_D65.astype(dtype)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), xyz * 7.787 + 16.0 / 116.0).astype(dtype)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) ``(…, 3)`` float64 → sRGB clipped to [0, 1]."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([lab[..., 1] / 500.0 + fy, fy, np.clip(fy - lab[..., 2] / 200.0, 0, None)], -1)
    xyz = np.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _WHITE_D65
    linear = xyz @ _XYZ_TO_RGB.T
    rgb = np.where(linear > 0.0031308, np.power(np.clip(linear, 0, None), 1.0 / 2.4) * 1.055 - 0.055, linear * 12.92)
    return np.clip(rgb, 0, 1)


def standardize_brightness(tile: np.ndarray, percentile: str = "linear") -> np.ndarray:
    """uint8 ``(…, 3)`` scaled so its 90th percentile (over every value) becomes 255, clipped, uint8.

    ``percentile``: numpy's method; Slideflow's numpy and PyTorch code interpolate (``linear``),
    its TensorFlow code takes the ``nearest`` value (``tfp.stats.percentile``'s default).
    """
    top = np.percentile(tile, BRIGHTNESS_PERCENTILE, method=percentile)
    if top <= 0:
        raise ZeroDivisionError("the tile is black")
    return np.clip(tile * 255.0 / top, 0, 255).astype(np.uint8)


# -- the normalisers, one tile at a time -------------------------------------------------
def reinhard(
    tile: np.ndarray,
    target_means: np.ndarray,
    target_stds: np.ndarray,
    *,
    brightness: bool = True,
    mask_threshold: float | None = None,
    percentile: str = "linear",
) -> np.ndarray:
    """Reinhard colour transfer of one uint8 ``(H, W, 3)`` tile in L*a*b* → uint8 ``(H, W, 3)``.

    ``brightness``: standardise brightness first (``reinhard``); ``mask_threshold``: leave pixels with
    ``L*/100 ≥`` it unchanged (``reinhard_mask``).  A tile with a constant channel cannot be normalised.
    """
    if brightness:
        tile = standardize_brightness(tile, percentile)
    lab = rgb_to_lab(tile.astype(np.float32) / np.float32(255))
    flat = lab.reshape(-1, 3).astype(np.float64)
    means, stds = flat.mean(axis=0), flat.std(axis=0)
    if not np.all(stds > 0):
        raise ZeroDivisionError("a colour channel is constant")
    normalised = (lab - means) * (np.asarray(target_stds, np.float64) / stds) + np.asarray(target_means, np.float64)
    rgb = np.clip((lab_to_rgb(normalised) * 255).astype(np.int32), 0, 255).astype(np.uint8)
    if mask_threshold is None:
        return rgb
    tissue = (lab[..., :1] / 100) < mask_threshold
    return np.where(tissue, rgb, tile)


def macenko(
    tile: np.ndarray,
    stain_matrix_target: np.ndarray,
    target_concentrations: np.ndarray,
    *,
    brightness: bool = True,
    alpha: float = MACENKO_ALPHA,
    beta: float = MACENKO_BETA,
    percentile: str = "linear",
) -> np.ndarray:
    """Macenko stain normalisation of one uint8 ``(H, W, 3)`` tile → uint8 ``(H, W, 3)``.

    ``stain_matrix_target``: ``(3, 2)`` haematoxylin and eosin OD vectors; ``target_concentrations``:
    their 99th-percentile concentrations.  A tile without stained pixels cannot be normalised.
    """
    h, w, _ = tile.shape
    pixels = tile.reshape(-1, 3)
    if brightness:
        pixels = standardize_brightness(pixels, percentile)
    od = -np.log((pixels.astype(np.float64) + 1) / 255)
    stained = od[~np.any(od < beta, axis=1)]
    if len(stained) < 2:
        raise ZeroDivisionError("no stained pixels")
    _, vectors = np.linalg.eigh(np.cov(stained.T))
    plane = vectors[:, 1:3]
    projected = stained @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angle, [alpha, 100 - alpha], method=percentile)
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
    concentrations = np.linalg.lstsq(stains, od.T, rcond=None)[0]
    top = np.percentile(concentrations, 99, axis=1, method=percentile)
    scaled = concentrations / (top / np.asarray(target_concentrations, np.float64))[:, None]
    rgb = np.clip(255 * np.exp(-np.asarray(stain_matrix_target, np.float64) @ scaled), 0, 255)
    if not np.all(np.isfinite(rgb)):
        raise ZeroDivisionError("the stain fit is degenerate")
    return rgb.T.reshape(h, w, 3).astype(np.uint8)


# -- the normaliser a model uses ---------------------------------------------------------
@dataclass(frozen=True)
class StainNormalizer:
    """A fitted normaliser: ``normalizer(tiles)`` maps uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` to the same.

    ``fit``: ``target_means`` / ``target_stds`` (``(3,)``, L*a*b*) for the Reinhard family,
    ``stain_matrix_target`` (``(3, 2)``) / ``target_concentrations`` (``(2,)``) for Macenko.
    """

    method: str
    fit: Mapping[str, Any]
    source: str = ""
    percentile: str = "linear"  # "nearest" reproduces Slideflow's TensorFlow normalisers

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.asarray(tiles)
        check(
            tiles.dtype == np.uint8 and tiles.ndim in (3, 4) and tiles.shape[-1] == 3,
            f"stain normalizer {self.method!r}: expected uint8 tiles (H, W, 3) or (N, H, W, 3), "
            f"got {tiles.dtype} {tiles.shape}",
        )
        batch = tiles[None] if tiles.ndim == 3 else tiles
        out, failed = np.empty_like(batch), []
        for i, tile in enumerate(batch):
            try:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[i] = self._one(tile)
            except (ZeroDivisionError, np.linalg.LinAlgError, ValueError, IndexError):
                failed.append(i)
        if failed:
            raise BlankTileError(
                f"stain normalizer {self.method!r} cannot normalise tile(s) {listed(failed)} of the batch: "
                "blank (no stain or no contrast); leave such tiles out",
                failed,
            )
        return out[0] if tiles.ndim == 3 else out

    def _one(self, tile: np.ndarray) -> np.ndarray:
        fit, method = self.fit, self.method
        if method.startswith("reinhard"):
            mask = MASK_THRESHOLD if method.endswith("_mask") else None
            brightness = not method.startswith("reinhard_fast")
            return reinhard(
                tile, fit["target_means"], fit["target_stds"], brightness=brightness, mask_threshold=mask,
                percentile=self.percentile,
            )  # fmt: skip
        return macenko(
            tile, fit["stain_matrix_target"], fit["target_concentrations"], brightness=method == "macenko",
            percentile=self.percentile,
        )  # fmt: skip

    def record(self) -> dict[str, Any]:
        """JSON-ready: the method, where its fit came from and the fit's values."""
        values = {key: np.asarray(value).tolist() for key, value in self.fit.items()}
        return {"method": self.method, "fit_source": self.source, "fit": values, "percentile": self.percentile}

    def describe(self) -> str:
        """One line for logs and the methods text, e.g. ``reinhard (fit: params.json norm_fit)``."""
        return f"{self.method} (fit: {self.source})" if self.source else self.method


def check_method(method: Any, where: str) -> None:
    """One InputError line unless ``method`` is a normaliser slidegrad applies."""
    if isinstance(method, str) and method in NOT_SUPPORTED:
        raise InputError(f"{where}: stain normalizer {method!r} is not supported ({NOT_SUPPORTED[method]})")
    check(
        isinstance(method, str) and method in METHODS,
        f"{where}: unknown stain normalizer {method!r}; supported: {', '.join(METHODS)}",
    )


def preset_fit(method: str, preset: Any, where: str) -> dict[str, np.ndarray]:
    """Slideflow's fitted values for ``method`` and preset ``v1`` / ``v2`` / ``v3``."""
    family = PRESETS[PRESET_FAMILY[method]]
    check(
        isinstance(preset, str) and preset in family,
        f"{where}: unknown preset {preset!r} for {method!r}; expected one of {', '.join(family)} "
        "(fitting to an image is not supported: give norm_fit's values)",
    )
    return {key: np.asarray(value, np.float64) for key, value in family[preset].items()}


def parse_fit(method: str, fit: Any, where: str) -> dict[str, np.ndarray]:
    """``fit`` (a mapping of lists, as Slideflow writes ``norm_fit``) checked for ``method``: its two
    keys, finite values of the right shapes (size-1 axes dropped, as Slideflow does)."""
    keys = FIT_KEYS["reinhard" if method.startswith("reinhard") else "macenko"]
    check(isinstance(fit, Mapping), f"{where}: expected an object with {' and '.join(keys)}, got {fit!r}")
    missing = [key for key in keys if fit.get(key) is None]
    check(not missing, f"{where}: missing {', '.join(missing)} for normalizer {method!r}")
    parsed = {}
    for key in keys:
        try:
            value = np.asarray(fit[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: {key} must be numbers, got {fit[key]!r}") from None
        value = value.reshape([n for n in value.shape if n != 1] or [1]) if value.size > 1 else value.reshape(-1)
        check(
            value.shape == FIT_SHAPES[key] and bool(np.all(np.isfinite(value))),
            f"{where}: {key} must be finite numbers of shape {FIT_SHAPES[key]}, got shape {value.shape}",
        )
        parsed[key] = value
    if "target_stds" in parsed:
        check(bool(np.all(parsed["target_stds"] > 0)), f"{where}: target_stds must be positive")
    if "target_concentrations" in parsed:
        check(bool(np.all(parsed["target_concentrations"] > 0)), f"{where}: target_concentrations must be positive")
    return parsed


def from_params(
    params: Mapping[str, Any],
    params_path: str,
    method: str | None = None,
    fit: Any = None,
    framework: str = "torch",
) -> StainNormalizer | None:
    """The normaliser of a Slideflow ``params.json`` (``hp.normalizer``, ``hp.normalizer_source``,
    ``norm_fit``), with ``method`` / ``fit`` (the config's ``model.normalizer`` /
    ``model.normalizer_fit``: a preset name or values) overriding them; ``None`` when there is none.

    ``method="none"`` turns a model's normaliser off.  ``framework``: the model's framework, whose
    :attr:`~slidegrad.backends.Framework.stain_percentile` says how percentiles are taken (Slideflow
    normalises a TensorFlow model's tiles with its TensorFlow code, whose percentiles take the nearest value).
    """
    normalizer = _from_params(params, params_path, method, fit)
    percentile = get_framework(framework).stain_percentile
    if normalizer is None or percentile == normalizer.percentile:
        return normalizer
    return StainNormalizer(normalizer.method, normalizer.fit, normalizer.source, percentile=percentile)


def _from_params(params: Mapping[str, Any], params_path: str, method: str | None, fit: Any) -> StainNormalizer | None:
    hp = params.get("hp") or {}
    check(isinstance(hp, Mapping), f"'{params_path}': field 'hp' must be an object")
    if method is not None:
        if method in NO_NORMALIZER:
            return None
        check_method(method, "config 'model.normalizer'")
    else:
        method = hp.get("normalizer")
        if method in NO_NORMALIZER:
            check(fit is None, "config 'model.normalizer_fit' is set but the model has no normalizer (set model.normalizer)")
            return None
        check_method(method, f"'{params_path}': hp.normalizer")
    if fit is not None:
        if isinstance(fit, str):
            return StainNormalizer(method, preset_fit(method, fit, "config 'model.normalizer_fit'"), f"preset {fit}")
        return StainNormalizer(method, parse_fit(method, fit, "config 'model.normalizer_fit'"), "config")
    norm_fit = params.get("norm_fit")
    if norm_fit is not None and method == hp.get("normalizer"):
        return StainNormalizer(method, parse_fit(method, norm_fit, f"'{params_path}': norm_fit"), "params.json norm_fit")
    source = hp.get("normalizer_source")
    if source in (None, "", "dataset") or method != hp.get("normalizer"):
        source = PRESET_DEFAULT
    where = f"'{params_path}': hp.normalizer_source"
    return StainNormalizer(method, preset_fit(method, source, where), f"preset {source}")
