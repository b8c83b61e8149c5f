"""slidegrad.evaluate agrees with Quantus 0.6.0 (a test-only reference, pinned in requirements.lock).

Each test runs a slidegrad metric and its Quantus counterpart on the same tiles, model and
parameters, in a setup where both compute the same quantity, and states its tolerance.

TensorFlow stays out of this (torch-only) process.  Quantus imports ``tensorflow`` whenever
``importlib.util.find_spec("tensorflow")`` finds it: at import time (``helpers/utils.py``,
``helpers/model/model_interface.py``, ``helpers/model/models.py``, ``functions/explanation_func.py``)
and again inside every call (``utils.get_wrapped_model``); no environment variable turns that
off.  ``find_spec`` returns ``None`` for a name whose ``sys.modules`` entry is ``None`` (and
``import`` of it raises ``ImportError``), so the :func:`quantus` fixture sets
``sys.modules["tensorflow"] = None`` for the import and for every Quantus call of this module,
and removes the entry afterwards; Quantus then takes its torch-only paths.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from .conftest import make_tiny_cnn

torch = pytest.importorskip("torch")

PX = 48  # 48·48 = 2304 = 2⁸·3²: see test_deletion_matches_pixel_flipping
CORNERS = [(0, 0), (320, 270), (150, 240), (330, 180)]
WHITE = 1.0  # slidegrad's "scale" preprocessing (x / 127.5 − 1) of white (255)
PROB_TOL = 1e-6  # float32 softmax probabilities computed with the same torch ops in different batches


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantus_import():
    """``(quantus, modules its import loaded)``, with TensorFlow hidden while this module runs (see above)."""
    with pytest.MonkeyPatch.context() as patch:
        if "tensorflow" not in sys.modules:
            patch.setitem(sys.modules, "tensorflow", None)
        before = set(sys.modules)
        import quantus

        yield quantus, set(sys.modules) - before


@pytest.fixture()
def quantus(quantus_import):
    return quantus_import[0]


@pytest.fixture(scope="module")
def tiles(ihc) -> np.ndarray:
    """Four real IHC tiles, uint8 (4, 48, 48, 3)."""
    return np.stack([ihc[y : y + PX, x : x + PX] for x, y in CORNERS])


@pytest.fixture(scope="module")
def loaded():
    """The tiny CNN as a LoadedModel with "scale" preprocessing (white → 1.0)."""
    from slidegrad.model import LoadedModel

    return LoadedModel(module=make_tiny_cnn(), backend="torch", outcome_labels=["0", "1"], tile_px=PX)


@pytest.fixture(scope="module")
def batch(tiles) -> np.ndarray:
    """The tiles preprocessed ("scale"), channels-last float32 (slidegrad's input)."""
    from slidegrad.model import scale

    return scale(tiles)


def channel_first(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def raw_vanilla(model, inputs, targets, **_):
    """Quantus explain_func: slidegrad's raw vanilla gradient, channel-first (N, 3, H, W)."""
    import slidegrad as sg

    _, raws = sg.SaliencyMap(model, device="cpu").attributions(
        np.ascontiguousarray(np.asarray(inputs).transpose(0, 2, 3, 1)), "vanilla", class_idx=np.asarray(targets)
    )
    return np.stack(raws).transpose(0, 3, 1, 2)


def magnitude_vanilla(model, inputs, targets, **_):
    """Quantus explain_func: |raw vanilla gradient| summed over channels, (N, 1, H, W) float64.

    The per-pixel quantity slidegrad's model_randomisation ranks (sanity._magnitude).
    """
    from slidegrad.evaluate.sanity import _magnitude

    raws = raw_vanilla(model, inputs, targets).transpose(0, 2, 3, 1)
    return np.stack([_magnitude(r) for r in raws])[:, None]


def test_quantus_leaves_tensorflow_out(quantus_import):
    quantus, loaded = quantus_import
    frameworks = sorted(m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    assert frameworks == []
    assert quantus.__version__ == "0.6.0"


# -- deletion vs PixelFlipping / RegionPerturbation ----------------------------------------------
@pytest.mark.parametrize("kind", ["random", "vanilla"])
def test_deletion_matches_pixel_flipping(quantus, loaded, tiles, batch, kind, monkeypatch):
    """slidegrad's deletion curve and AUC equal Quantus' PixelFlipping (white baseline).

    Mapping.  slidegrad: raw uint8 tiles, the LoadedModel's preprocessing ("scale"), pixels by
    ``argsort(-mask, stable)``, step k = 0..S replaces the first ``round(k·H·W/S)`` pixels by
    white (255), softmax probability of the class.  Quantus: the preprocessed channel-first tiles,
    ``perturb_baseline = scale(255) = 1.0``, ``softmax=True``, ``normalise=False``.

    Quantus broadcasts the (N, 1, H, W) attribution to (N, 3, H, W) and flips *features*
    (3·H·W of them, each channel of a pixel separately, ``np.argsort(-a)``, not stable) while it
    checks ``features_in_step`` against H·W only.  With ``features_in_step = 3·H·W / S`` dividing
    H·W (48×48 px, S = 12: 576 features = 192 whole pixels, since a pixel's three equal copies
    sort next to each other when no two pixels tie) its curve has S points, equal to slidegrad's
    steps 1..S (Quantus omits step 0, the unmodified tile).

    Ties: "random" masks have none (checked); "vanilla" masks (p99-clipped, so tied at 1.0) go to
    slidegrad as they are and to Quantus as ranks in slidegrad's stable order (H·W − rank), so
    both share the row-major tie order.

    AUC: slidegrad integrates steps 0..S over x = k/S; Quantus (``return_auc_per_sample``,
    ``np.trapz`` with dx = 1) integrates its points 1..S over x = 1..S, so
    ``slidegrad_auc = (quantus_auc + (p_0 + p_1) / 2) / S``.  Quantus 0.6.0's AUC calls
    ``np.trapz``, which NumPy 2.4 removed; the test maps it to ``np.trapezoid`` (same rule).

    Tolerance: 1e-6 on probabilities and AUCs (the same float32 torch ops; measured 0 on the
    curves, 4e-8 on the AUCs: Quantus integrates float32 values).  A curve shifted by one step
    differs by 6e-3 or more, so an off-by-one mapping would fail.
    """
    import slidegrad as sg
    from slidegrad.evaluate import deletion_insertion
    from slidegrad.evaluate.perturbation import pixel_order

    steps, n, hw = 12, len(tiles), PX * PX
    if kind == "random":
        masks = np.random.default_rng(0).random((n, PX, PX))
        assert all(len(np.unique(m)) == hw for m in masks)
        attributions = masks
    else:
        masks = sg.SaliencyMap(loaded, device="cpu").get(batch, "vanilla")
        assert all(len(np.unique(m)) < hw for m in masks)  # ties, resolved row-major by slidegrad
        attributions = np.zeros((n, hw))
        for i, m in enumerate(masks):
            attributions[i, pixel_order(m)] = np.arange(hw, 0, -1)
        attributions = attributions.reshape(n, PX, PX)

    ours = deletion_insertion(loaded, tiles, masks, steps=steps, baseline="white", device="cpu")
    curve = ours["deletion_curve"]
    metric = dict(features_in_step=3 * hw // steps, perturb_baseline=WHITE, normalise=False, disable_warnings=True)
    call = dict(
        model=loaded.module,
        x_batch=channel_first(batch),
        y_batch=ours["class_idx"],
        a_batch=attributions[:, None].astype(np.float64),
        channel_first=True,
        softmax=True,
        device="cpu",
    )
    theirs = np.asarray(quantus.PixelFlipping(**metric)(**call))
    assert theirs.shape == (n, steps)
    np.testing.assert_allclose(theirs, curve[:, 1:], rtol=0, atol=PROB_TOL)
    assert np.abs(theirs[:, :-1] - curve[:, 2:]).max() > 100 * PROB_TOL  # the comparison can tell steps apart

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    their_auc = np.asarray(quantus.PixelFlipping(**metric, return_auc_per_sample=True)(**call))
    mapped = (their_auc + (curve[:, 0] + curve[:, 1]) / 2) / steps
    np.testing.assert_allclose(ours["deletion_auc"], mapped, rtol=0, atol=PROB_TOL)


def test_deletion_matches_region_perturbation(quantus, loaded, tiles, batch):
    """slidegrad's deletion curve equals Quantus' RegionPerturbation (MoRF, white) on block masks.

    Masks constant on 8×8 blocks (36 per 48×48 tile), one distinct value per block: slidegrad's
    stable pixel order then takes whole blocks (a block's pixels tie, so they are consecutive),
    and with ``steps = 36`` its step k has deleted the k highest blocks — what Quantus has done
    after ``patch_size = 8``, ``regions_evaluation = 36`` patches ordered by their attribution
    sums.  Quantus reports the drop ``p_0 − p_k`` for k = 1..36, so ``theirs = curve[:, :1] −
    curve[:, 1:]``.  Tolerance 1e-6 (measured 0), as for pixel flipping.
    """
    from slidegrad.evaluate import deletion_insertion

    blocks = PX // 8
    rng = np.random.default_rng(1)
    masks = np.stack(
        [np.kron(rng.permutation(blocks * blocks).reshape(blocks, blocks), np.ones((8, 8))) for _ in tiles]
    )
    ours = deletion_insertion(loaded, tiles, masks, steps=blocks * blocks, baseline="white", device="cpu")
    curve = ours["deletion_curve"]
    theirs = quantus.RegionPerturbation(
        patch_size=8, regions_evaluation=blocks * blocks, perturb_baseline=WHITE, normalise=False, disable_warnings=True
    )(
        model=loaded.module,
        x_batch=channel_first(batch),
        y_batch=ours["class_idx"],
        a_batch=masks[:, None],
        channel_first=True,
        softmax=True,
        device="cpu",
    )
    np.testing.assert_allclose(np.asarray(theirs), curve[:, :1] - curve[:, 1:], rtol=0, atol=PROB_TOL)


# -- model randomisation vs MPRT -----------------------------------------------------------------
def test_model_randomisation_matches_mprt(quantus, batch, monkeypatch):
    """slidegrad's cascading randomisation Spearman equals Quantus' MPRT (top-down) layer by layer.

    Same layers (modules with parameters, last first; Quantus: modules with ``reset_parameters``,
    reversed, the same for SmallCNN), same class (the trained model's), same per-pixel map: Quantus'
    explain_func returns slidegrad's ``|a|`` summed over channels (by default Quantus would rank
    the 3·H·W per-channel values).  Seeding: slidegrad resets layer step k right after
    ``torch.manual_seed(seed + k)``; Quantus 0.6.0 calls ``torch.manual_seed(seed + 1)`` before
    *every* layer (the same stream each time), so ``torch.manual_seed`` is patched to seed
    ``seed, seed + 1, …`` in call order (and the global RNG restored afterwards).

    Tolerance 1e-9 on Spearman's ρ (measured 7e-18): both run ``scipy.stats.spearmanr`` on the
    same float64 maps (Quantus on a stacked 2N×2N matrix, then its diagonal block), so only
    summation order differs.
    """
    from slidegrad.evaluate import model_randomisation

    first = 5
    model = make_tiny_cnn()
    ours = model_randomisation(model, batch, "vanilla", seed=first, device="cpu")

    real_seed = torch.manual_seed
    seeds = []

    def seed_in_turn(seed=None):  # Quantus passes seed= by keyword; it is replaced by the next in turn
        seeds.append(first + len(seeds))
        return real_seed(seeds[-1])

    with torch.random.fork_rng(devices=[]):
        monkeypatch.setattr(torch, "manual_seed", seed_in_turn)
        theirs = quantus.MPRT(layer_order="top_down", normalise=False, disable_warnings=True)(
            model=model,
            x_batch=channel_first(batch),
            y_batch=ours["classes"],
            a_batch=None,
            explain_func=magnitude_vanilla,
            channel_first=True,
            device="cpu",
        )
        monkeypatch.setattr(torch, "manual_seed", real_seed)

    assert seeds == [first + k for k in range(len(ours["layers"]))]
    assert list(theirs) == ["original", *ours["layers"]]
    np.testing.assert_allclose(theirs["original"], 1.0, rtol=0, atol=1e-12)
    their_spearman = np.stack([theirs[layer] for layer in ours["layers"]], axis=1)
    np.testing.assert_allclose(their_spearman, ours["spearman"], rtol=0, atol=1e-9)


# -- max-sensitivity vs MaxSensitivity -----------------------------------------------------------
RADIUS = 0.04  # 0.02 × the value range of "scale" inputs ([-1, 1]): slidegrad's default
N_SAMPLES = 10


class LinearNet(torch.nn.Module):
    """Two class scores linear in the input: the vanilla gradient is the class's weight row, whatever x."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * PX * PX, 2)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class QuadraticNet(torch.nn.Module):
    """Class 0 scores ``Σ x²``: its vanilla gradient is ``2x``."""

    def forward(self, x):
        s = (x**2).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def quantus_max_sensitivity(quantus, model, batch, classes, seed=0):
    """Quantus' MaxSensitivity (U[-RADIUS, RADIUS] noise from ``np.random.seed(seed)``) of slidegrad's raw vanilla maps.

    Defaults otherwise (``abs=False``, ``normalise=False``, Frobenius norms): the definition
    slidegrad's ``on="raw"`` follows.  numpy's global RNG is restored afterwards.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        scores = quantus.MaxSensitivity(nr_samples=N_SAMPLES, lower_bound=RADIUS, disable_warnings=True)(
            model=model,
            x_batch=channel_first(batch),
            y_batch=np.asarray(classes),
            explain_func=raw_vanilla,
            channel_first=True,
            device="cpu",
        )
    finally:
        np.random.set_state(state)
    return np.asarray(scores, np.float64)


def ours_max_sensitivity(model, batch, classes, seed=0):
    import slidegrad as sg
    from slidegrad.evaluate import max_sensitivity

    sal = sg.SaliencyMap(model, device="cpu")
    return max_sensitivity(sal, batch, "vanilla", n=N_SAMPLES, radius=RADIUS, seed=seed, class_idx=classes)


def test_max_sensitivity_of_a_linear_model_is_zero_in_both(quantus, batch):
    """A linear model's gradient does not depend on x: both give exactly 0 (measured 0.0 in both).

    Tolerance 0: the gradient of ``W x + b`` for the class is its weight row, computed by the
    same matmul for every input, so perturbed and unperturbed maps are bitwise equal.
    """
    classes = np.zeros(len(batch), np.int64)
    np.testing.assert_array_equal(ours_max_sensitivity(LinearNet().eval(), batch, classes), 0.0)
    np.testing.assert_array_equal(quantus_max_sensitivity(quantus, LinearNet().eval(), batch, classes), 0.0)


def bernstein_t(dims: int, draws: int, alpha: float = 1e-9) -> float:
    """Half-width t with P(some of ``draws`` means of ``dims`` iid u², u ~ U[-1, 1], is off 1/3 by ≥ t) ≤ alpha.

    Bernstein: u² ∈ [0, 1] has mean 1/3, variance σ² = 1/5 − 1/9 = 4/45 and |u² − 1/3| ≤ b = 2/3,
    so P(|mean − 1/3| ≥ t) ≤ 2 exp(−D t² / (2σ² + 2bt/3)); a union bound over the draws sets
    L = ln(2·draws/alpha) and t solves D t² = L (2σ² + 2bt/3).
    """
    var, b = 4 / 45, 2 / 3
    log_term = np.log(2 * draws / alpha)
    lin = log_term * 2 * b / 3
    return float((lin + np.sqrt(lin**2 + 4 * dims * log_term * 2 * var)) / (2 * dims))


def test_max_sensitivity_of_a_quadratic_model_matches_closed_form(quantus, batch):
    """Gradient 2x: sensitivity = max_i ||2δ_i|| / ||2x|| = max_i ||δ_i|| / ||x||, for both.

    1. Each equals that closed form for its *own* noise to 1e-6 relative (float32 maps; the
       closed form uses the same float32-rounded perturbed inputs ``(x + δ)₃₂ − x``): slidegrad's
       from :func:`slidegrad.evaluate.stability.perturbations` (seed 0), Quantus' from
       ``np.random.seed(0)``, one ``uniform(-r, r, (N, 3·H·W))`` draw per sample.
    2. Across the two noise sources: ``||δ||² / (r² D)`` is the mean of D = 3·48·48 = 6912 iid
       u², u ~ U[-1, 1].  By Bernstein's inequality (:func:`bernstein_t`, union bound over all
       2·N·n = 80 draws, failure probability ≤ 1e-9), every draw has it within 1/3 ± t, t ≈ 0.027.
       So both scores lie in ``r √D √(1/3 ± t) / ||x||`` (checked) and their ratio within
       ``√((1/3 + t)/(1/3 − t))`` ≈ 1.08 (checked; measured 0.992–1.006: the CLT spread of ||δ|| is
       only √(0.8/D) / 2 ≈ 0.5 % per draw).
    """
    from slidegrad.evaluate.stability import perturbations

    model = QuadraticNet().eval()
    n_tiles, dims = len(batch), batch[0].size
    classes = np.zeros(n_tiles, np.int64)
    ours = ours_max_sensitivity(model, batch, classes)
    theirs = quantus_max_sensitivity(quantus, model, batch, classes)

    flat = batch.reshape(n_tiles, -1).astype(np.float64)
    x_norm = np.linalg.norm(flat, axis=1)
    noise = perturbations(batch.shape, N_SAMPLES, RADIUS, 0).reshape(n_tiles, N_SAMPLES, -1)
    moved = (batch.reshape(n_tiles, 1, -1) + noise).astype(np.float64) - flat[:, None]
    np.testing.assert_allclose(ours, np.linalg.norm(moved, axis=2).max(axis=1) / x_norm, rtol=1e-6)
    rng = np.random.RandomState(0)
    cf = channel_first(batch).reshape(n_tiles, -1)
    their_moved = [(cf + rng.uniform(-RADIUS, RADIUS, cf.shape)).astype(np.float32) - cf for _ in range(N_SAMPLES)]
    their_norms = np.linalg.norm(np.stack(their_moved, axis=1).astype(np.float64), axis=2)
    np.testing.assert_allclose(theirs, their_norms.max(axis=1) / x_norm, rtol=1e-6)

    t = bernstein_t(dims, 2 * n_tiles * N_SAMPLES)
    scale = RADIUS * np.sqrt(dims) / x_norm
    for scores in (ours, theirs):
        assert np.all(scores >= scale * np.sqrt(1 / 3 - t)) and np.all(scores <= scale * np.sqrt(1 / 3 + t))
    ratio = ours / theirs
    bound = np.sqrt((1 / 3 + t) / (1 / 3 - t))
    assert np.all(ratio <= bound) and np.all(ratio >= 1 / bound), (ratio, bound)


def test_max_sensitivity_of_the_tiny_cnn_agrees_loosely(quantus, batch):
    """On the tiny ReLU CNN no closed form exists: the two agree within a factor 1.2 per tile.

    Why 1.2: over seeds 0..9 (measured once), each tile's score from either implementation
    stayed within ±5 % of its mean (0.62–0.81 over the four tiles), and the largest ratio between
    any slidegrad and any Quantus value of one tile was 1.10; 1.2 leaves twice that.  It is
    tighter than what a wrong setup gives: halving the radius lowers the scores by ~25 %,
    doubling it raises them by ~38 %, and masks (``on="mask"``) instead of raw maps by ~45 %.
    """
    import slidegrad as sg

    model = make_tiny_cnn()
    classes = sg.SaliencyMap(model, device="cpu").resolve_classes(batch)
    ours = ours_max_sensitivity(model, batch, classes)
    theirs = quantus_max_sensitivity(quantus, model, batch, classes)
    assert np.all(ours > 0.1) and np.all(theirs > 0.1)
    ratio = ours / theirs
    assert np.all(ratio <= 1.2) and np.all(ratio >= 1 / 1.2), ratio
