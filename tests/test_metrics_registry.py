"""One declaration per metric: the schema, the evaluate job, the figure and the methods text follow it,
and no metric name is compared as a string outside its own module and the registry."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from slidegrad import metrics
from slidegrad.config import check_evaluate, load_schema
from slidegrad.errors import InputError
from slidegrad.metrics import METRICS, Metric, MetricInputs, MetricResult, Panel

from .conftest import REPO

SRC = REPO / "src" / "slidegrad"
REGISTRY = SRC / "metrics.py"


# -- the registry and what follows from it ---------------------------------------------------------
def test_schema_metric_enum_is_the_registry():
    evaluate = load_schema()["properties"]["evaluate"]
    assert evaluate["properties"]["metrics"]["items"]["enum"] == list(METRICS)
    read = {option for m in METRICS.values() for option in m.options}
    assert set(evaluate["properties"]) == {"metrics", *read}, "every evaluate option is read by a metric"


def test_every_metric_is_complete():
    from slidegrad.evaluate.figure import CURVE_XLABELS, PANELS
    from slidegrad.evaluate.sanity import SANITY_THRESHOLD

    for metric in METRICS.values():
        for role in ("compute", "chance", "prepare"):
            if getattr(metric, role) is not None:
                assert callable(metric.function(role)), (metric.name, role)
        assert metric.columns and metric.panels, metric.name
        assert isinstance(metric.text({"metrics": [metric.name], "perturbations": {}}), str)
    assert PANELS == tuple((p.column, p.title, p.reference) for m in METRICS.values() for p in m.panels)
    assert list(CURVE_XLABELS) == [kind for m in METRICS.values() for kind in m.curve_kinds()]
    assert dict(PANELS[i][::2] for i in range(len(PANELS)))["sanity_spearman"] == SANITY_THRESHOLD


def test_register_refuses_a_column_or_option_clash():
    first = next(iter(METRICS.values()))
    with pytest.raises(InputError, match="already belong to metric"):
        metrics.register(Metric("copy", "a copy", first.columns, "x:y", text=lambda _: ""))
    option, schema = next(iter(first.options.items()))
    with pytest.raises(InputError, match=f"option '{option}' has another schema"):
        metrics.register(Metric("other", "", ("other",), "x:y", text=lambda _: "", options={option: {**schema, "default": -1}}))
    assert "copy" not in METRICS and "other" not in METRICS


def test_needs_and_unused_options_come_from_the_registry():
    defaults = {option: schema.get("default") for option, schema in metrics.evaluate_schema().items()}
    section = {**defaults, "metrics": ["pointing"]}
    with pytest.raises(InputError, match="config field 'evaluate.ground_truth': metric 'pointing' needs one: 'dab' or"):
        check_evaluate(section)
    warnings = check_evaluate({**section, "metrics": ["deletion"], "ground_truth": "dab"}, {"ground_truth": "dab"})
    assert warnings == ["config field 'evaluate.ground_truth': set, but 'pointing' is not in evaluate.metrics; unused"]


def test_evaluation_paragraph_says_deletion_and_insertion_once():
    settings = {"metrics": ["insertion", "deletion"], "steps": 4, "baseline": "white", "seed": 1}
    text = metrics.evaluation_paragraph(settings)
    assert text.startswith("Faithfulness of every map was measured by deletion and insertion curves (Petsiuk")
    assert text.count("Petsiuk") == 1
    assert metrics.metric_references(["insertion", "deletion", "sanity"]) == {
        "Petsiuk et al. 2018": "Petsiuk, Das & Saenko, RISE, BMVC 2018",
        "Adebayo et al. 2018": "Adebayo et al., Sanity checks for saliency maps, NeurIPS 2018",
    }


# -- the contract: a new metric is one declaration and one function -------------------------------------
CALLS: list[str] = []


def toy_result(inputs: MetricInputs) -> MetricResult:
    """The mean mask value per tile and a 3-point curve."""
    CALLS.append("compute")
    means = inputs.masks.reshape(len(inputs.masks), -1).mean(axis=1)
    return MetricResult({"toy": means}, {"toy": np.stack([means] * 3, axis=1)})


def toy_chance(inputs: MetricInputs) -> MetricResult:
    CALLS.append("chance")
    return MetricResult({"toy_chance": np.full(len(inputs.classes), 0.5)}, {"toy": np.zeros((len(inputs.classes), 3))})


def test_a_registered_metric_runs_through_the_evaluate_loop(monkeypatch):
    from slidegrad.config import MethodSpec
    from slidegrad.evaluate.jobs import evaluate_method, evaluation_columns

    toy = Metric(
        "toy", "mean mask value", ("toy", "toy_chance"), f"{__name__}:toy_result", text=lambda _: "the mean mask",
        chance=f"{__name__}:toy_chance", panels=(Panel("toy", "toy ↑", "toy_chance"),),
    )  # fmt: skip
    monkeypatch.setitem(METRICS, "toy", toy)
    assert evaluation_columns(["toy", "deletion"])[-4:] == ["deletion_auc", "deletion_chance", "toy", "toy_chance"]
    assert load_schema()["properties"]["evaluate"]["properties"]["metrics"]["items"]["enum"][-1] == "toy"
    tiles = np.zeros((2, 4, 4, 3), np.uint8)
    chunk = MetricInputs(None, tiles, tiles.astype(np.float32), {"metrics": ["toy"]}, "s1", ["a", "b"])
    masks = np.stack([np.full((4, 4), 0.25), np.ones((4, 4))])
    CALLS.clear()
    for method_id in ("m1", "m2"):  # the chance level once for both methods (same classes)
        spec = MethodSpec(method_id, "vanilla", False, {})
        result = evaluate_method(chunk.for_method(spec, masks, np.array([0, 1])), [toy])
    assert CALLS == ["compute", "chance", "compute"]
    np.testing.assert_allclose(result.columns["toy"], [0.25, 1.0])
    assert list(result.curves) == ["toy", "toy_chance"]

    broken = Metric("toy", "", ("toy", "toy_chance", "toy_extra"), toy.compute, text=toy.text, chance=toy.chance)
    with pytest.raises(RuntimeError, match="metric toy: returned columns"):
        evaluate_method(chunk.for_method(MethodSpec("m3", "vanilla", False, {}), masks, np.array([1, 1])), [broken])


# -- no metric name compared as a string outside its module and the registry ------------------------------
def _names_in(node: ast.expr) -> list[str]:
    """The string constants ``node`` is or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for element in node.elts for n in _names_in(element)]
    return []


def metric_name_comparisons(path: Path, names: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of every use of a metric name as a string that matches on it: an ``==``, ``!=``,
    ``in`` or ``not in`` operand, a ``case``, a dict key, or a literal a loop or comprehension walks."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        operands: list[ast.expr] = []
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):  # case "deletion":
            operands = [node.value]
        elif isinstance(node, ast.Dict):  # {"deletion": ...}: knowledge keyed by the name
            operands = [key for key in node.keys if key is not None]
        elif isinstance(node, (ast.For, ast.comprehension)):  # for kind in ("deletion", "insertion")
            operands = [node.iter]
        for operand in operands:
            found += [(operand.lineno, name) for name in _names_in(operand) if name in names]
    return sorted(set(found))


def test_the_scan_finds_comparisons(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'if m == "pic" or "sanity" in x or m in ("deletion", "other"):\n    pass\n'
        'k = {"stability": 1}\nj = [c for m, c in (("pointing", 1),) if m in x]\nok = ["insertion"]\n'
    )
    assert metric_name_comparisons(probe, set(METRICS)) == [
        (1, "deletion"), (1, "pic"), (1, "sanity"), (3, "stability"), (4, "pointing"),
    ]  # fmt: skip


def test_no_metric_name_is_compared_outside_its_module_and_the_registry():
    owners: dict[str, set[Path]] = {}
    for metric in METRICS.values():
        modules = {metric.module(role) for role in ("compute", "chance", "prepare") if getattr(metric, role)}
        owners[metric.name] = {REGISTRY} | {Path(inspect.getfile(__import__(m, fromlist=["_"]))).resolve() for m in modules}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for line, name in metric_name_comparisons(path, set(METRICS)):
            if path.resolve() not in owners[name]:
                offenders.append(f"{path.relative_to(REPO)}:{line}: compares metric name {name!r}")
    assert not offenders, "declare it on the Metric (slidegrad.metrics) instead:\n" + "\n".join(offenders)
