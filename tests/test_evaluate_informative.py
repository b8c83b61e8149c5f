"""Classes uninformative for a baseline (slidegrad.evaluate.informative), the reference baseline
(slidegrad.evaluate.reference) and the figure's per-class panels."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from slidegrad.errors import InputError
from slidegrad.evaluate import deletion_insertion
from slidegrad.evaluate.informative import mark_uninformative, pooled_means, uninformative_classes
from slidegrad.evaluate.reference import choose_references
from slidegrad.metrics import evaluate_schema, evaluation_paragraph, flagged_columns

torch = pytest.importorskip("torch")

from .test_evaluate_perturbation import PX, region_model, region_tiles  # noqa: E402


def table(flat_chance: float = 1.0, moving_chance: float = 0.6) -> list[dict[str, str]]:
    """Two methods × 4 tiles of slide s: 'neg' tiles at p = 1 with a chance AUC of ``flat_chance``,
    'pos' tiles at p = 0.9 with ``moving_chance``; ROAD's random map moves neither (0.9 … 0.905 on pos)."""
    rows = []
    for method, auc in (("good", 0.2), ("bad", 0.8)):
        for i in range(4):
            label, p, chance = ("neg", 1.0, flat_chance) if i < 2 else ("pos", 0.9, moving_chance)
            rows.append({
                "slide": "s", "tile": f"t{i}", "method": method, "class_idx": str(int(label == "pos")),
                "class_label": label, "probability": str(p), "baseline": "white", "reference_tile": "",
                "uninformative": "", "deletion_auc": str(1.0 if label == "neg" else auc),
                "deletion_chance": str(chance), "road": str(0.1 + i), "road_uninformative": "",
                "road_chance_morf": str(p if label == "neg" else 0.905),
            })  # fmt: skip
    return rows


def test_a_flat_class_is_flagged_and_a_moving_one_is_not():
    flags = uninformative_classes(table(), "deletion_chance")
    assert flags == {("s", "neg"): True, ("s", "pos"): False}
    marked = mark_uninformative(table())
    assert [r["uninformative"] for r in marked if r["method"] == "good"] == ["true", "true", "false", "false"]
    assert [r["road_uninformative"] for r in marked if r["method"] == "good"] == ["true"] * 4  # ROAD: flat for both
    # 0.995 is within 0.01 of p = 1; 0.98 is not
    assert uninformative_classes(table(flat_chance=0.995), "deletion_chance")[("s", "neg")]
    assert not uninformative_classes(table(flat_chance=0.98), "deletion_chance")[("s", "neg")]
    assert mark_uninformative([{"slide": "s", "class_label": "x"}]) == [{"slide": "s", "class_label": "x"}]  # no column
    without_deletion = [{k: v for k, v in r.items() if k != "deletion_chance"} | {"insertion_chance": "0.5"} for r in table()]
    assert not any(r["uninformative"] == "true" for r in mark_uninformative(without_deletion))  # insertion decides


def test_pooled_means_leave_the_flagged_class_out_of_the_baselines_columns():
    marked = mark_uninformative(table())
    means = pooled_means(marked, ["deletion_auc", "road", "pointing_ratio"])
    assert means["good"]["deletion_auc"] == pytest.approx(0.2)  # the neg tiles' 1.0 are not pooled
    assert means["bad"]["deletion_auc"] == pytest.approx(0.8)
    assert math.isnan(means["good"]["road"])  # ROAD's imputation moves no class here: nothing pooled
    unmarked = pooled_means(table(), ["deletion_auc", "road"])
    assert unmarked["good"]["deletion_auc"] == pytest.approx(0.6)
    assert unmarked["good"]["road"] == pytest.approx((0.1 + 1.1 + 2.1 + 3.1) / 4)
    flagged = flagged_columns()
    assert flagged["deletion_auc"] == flagged["insertion_chance"] == "uninformative"
    assert flagged["road"] == "road_uninformative" and "pointing_ratio" not in flagged


def test_the_figure_splits_panels_by_class_and_notes_the_flagged_one():
    from slidegrad.evaluate.figure import evaluation_figure

    rows = table()
    curves = {}
    for method in ("good", "bad"):
        flat, falling = np.ones((2, 3)), np.array([[0.9, 0.3, 0.1]] * 2)
        curves[f"{method}:deletion"] = np.concatenate([flat, falling])
        curves[f"{method}:deletion_chance"] = np.concatenate([flat, np.array([[0.9, 0.6, 0.3]] * 2)])
    fig = evaluation_figure(rows, curves, ["good", "bad"], ["Good", "Bad"], title="slide s")
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert any(t.startswith("class neg: deletion AUC") for t in titles)
    assert any(t.startswith("class pos: deletion AUC") for t in titles)
    notes = [t.get_text() for ax in fig.get_axes() for t in ax.texts if "uninformative" in t.get_text()]
    baseline = [n for n in notes if n.startswith("uninformative for baseline white")]
    assert len(baseline) == 2  # neg's deletion curves and neg's deletion-AUC panel; pos moves
    assert len(notes) - len(baseline) == 2  # ROAD's panels of both classes (its random map moves neither)
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- the reference baseline ---------------------------------------------------------------------------
class FakeSlide:
    """Tiles t0..t7: t2 and t5 are class 1 (their pixels are 1), the rest class 0."""

    names = [f"t{i}" for i in range(8)]

    def read(self, names):
        return np.stack([np.full((2, 2, 3), 1 if n in ("t2", "t5") else 0, np.uint8) for n in names])


def fake_score(tiles):
    positive = tiles.reshape(len(tiles), -1).mean(axis=1) > 0.5
    return np.stack([~positive, positive], axis=1).astype(np.float32)


def test_reference_is_a_tile_of_another_class_seeded():
    slide = FakeSlide()
    for seed in range(6):
        chosen = choose_references(fake_score, slide, [0, 1, 0], seed, "s")
        assert chosen[0] in ("t2", "t5")  # class 0's reference is class 1
        assert chosen[1] not in ("t2", "t5")
        order = [slide.names[i] for i in np.random.default_rng(seed).permutation(8)]
        assert chosen[0] == next(n for n in order if n in ("t2", "t5"))  # the first in the seeded order
        assert chosen == choose_references(fake_score, slide, [1, 0], seed, "s")
    assert len({choose_references(fake_score, slide, [1], seed, "s")[1] for seed in range(6)}) > 1


def test_reference_without_a_tile_of_another_class_is_one_line():
    class OneClass(FakeSlide):
        def read(self, names):
            return np.zeros((len(names), 2, 2, 3), np.uint8)

    with pytest.raises(InputError, match=r"^config field 'evaluate.baseline': 'reference' needs a tile the model gives "
                       r"another class than 'neg', and slide 's' has none \(all 8 tiles are 'neg'\)") as err:  # fmt: skip
        choose_references(fake_score, OneClass(), [0], 0, "s", ["neg", "pos"])
    assert "\n" not in str(err.value)


def test_reference_baseline_removes_the_evidence_of_either_class():
    """Deleting a class-1 tile's block to a class-0 tile's pixels ends at class 0's probability, and back."""
    model = region_model()
    dark, masks = region_tiles(1)
    grey = np.full_like(dark, 128)
    tiles, reference = np.concatenate([dark, grey]), np.concatenate([grey, dark])
    masks = np.concatenate([masks, masks])
    out = deletion_insertion(model, tiles, masks, steps=4, baseline="reference", reference=reference)
    assert list(out["class_idx"]) == [1, 0]
    white = deletion_insertion(model, tiles, masks, steps=4, baseline="white")
    assert out["deletion_curve"][1, -1] < out["deletion_curve"][1, 0] - 0.3  # grey's class 0 falls: dark block
    assert white["deletion_curve"][1, -1] >= white["deletion_curve"][1, 0] - 1e-6  # white leaves class 0 as it was
    assert out["deletion_curve"][0, -1] < 0.6  # the dark tile loses its block to grey


@pytest.mark.parametrize(
    "reference, match",
    [
        (None, r"^reference: baseline 'reference' needs reference tiles"),
        (np.zeros((2, PX, PX, 3), np.float32), r"^reference: expected uint8 tiles of shape \(2, 64, 64, 3\)"),
        (np.zeros((1, PX, PX, 3), np.uint8), r"^reference: expected uint8 tiles of shape"),
    ],
)
def test_reference_argument_errors(reference, match):
    tiles, masks = region_tiles(2)
    with pytest.raises(InputError, match=match) as err:
        deletion_insertion(region_model(), tiles, masks, baseline="reference", reference=reference)
    assert "\n" not in str(err.value)


def test_schema_and_methods_text_follow_the_registry():
    schema = evaluate_schema()
    assert "reference" in schema["baseline"]["enum"]
    assert "road" in schema["metrics"]["items"]["enum"]
    assert schema["road_percentiles"]["default"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert schema["road_noise"]["default"] == 0.01
    settings = {key: value.get("default") for key, value in schema.items()}
    text = evaluation_paragraph({**settings, "metrics": ["deletion", "road"], "baseline": "reference"})
    assert "ROAD (Rong et al. 2022" in text and "reference baseline (the pixels of a tile" in text
    assert "flagged uninformative for that removal and left out of pooled means of its metrics" in text
    assert "the random order's deletion AUC" in text and "the random map's mean MoRF probability" in text
    assert "uninformative" not in evaluation_paragraph({**settings, "metrics": ["pointing"], "ground_truth": "dab"})


def test_slide_tiles_read_across_chunks_in_the_asked_order(tmp_path):
    from slidegrad.evaluate.reference import SlideTiles
    from slidegrad.results import write_tile_chunk

    names = [f"t{i}" for i in range(5)]
    images = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(5)])
    chunks = ["chunk0000"] * 3 + ["chunk0001"] * 2
    (tmp_path / "s.csv").write_text("slide,tile,chunk\n" + "".join(f"s,{n},{c}\n" for n, c in zip(names, chunks)))
    (tmp_path / "s").mkdir()
    write_tile_chunk(tmp_path / "s/chunk0000.npz", names[:3], [0] * 3, [0] * 3, images[:3])
    write_tile_chunk(tmp_path / "s/chunk0001.npz", names[3:], [0] * 2, [0] * 2, images[3:])
    slide = SlideTiles(str(tmp_path / "s.csv"), str(tmp_path / "s"))
    assert slide.names == names
    read = slide.read(["t4", "t0", "t3"])
    np.testing.assert_array_equal(read[:, 0, 0, 0], [40, 0, 30])
    chosen = choose_references(lambda tiles: fake_score((tiles >= 30).astype(np.uint8)), slide, [0, 1], 2, "s")
    assert chosen[0] in ("t3", "t4") and chosen[1] in ("t0", "t1", "t2")


def test_the_methods_text_names_the_classes_this_run_flagged(tmp_path):
    from slidegrad.evaluate.informative import flagged_sentence
    from slidegrad.methods_text import _flags_in_run

    marked = mark_uninformative(table())
    sentence = flagged_sentence(marked)
    assert sentence == (
        "In this run, for deletion, neg (slide s) was flagged uninformative; for road, neg (slide s) and pos (slide s) "
        "were flagged uninformative."
    )
    second = [dict(r, slide="t") for r in marked]
    assert "neg (slides s and t)" in flagged_sentence(marked + second)
    unflagged = [dict(r, uninformative="false", road_uninformative="false") for r in marked]
    assert flagged_sentence(unflagged) == "In this run, no class was flagged uninformative."
    path = tmp_path / "evaluation.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(marked[0]))
        writer.writeheader()
        writer.writerows(marked)
    assert _flags_in_run(str(path)) == sentence
