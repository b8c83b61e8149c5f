"""One declaration per method: README tables, wrappers, schema, engine-specific parameters and progress follow it."""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator

import slidegrad as sg
from slidegrad import methods
from slidegrad.methods import METHODS, PARAMS, SMOOTH_DEFAULTS, Method, Param
from slidegrad.model import scale
from slidegrad.saliency import SaliencyMap

from .conftest import REPO

SMOOTH_ROW = "any with smooth: true"


@pytest.fixture()
def batch(ihc_tiles):
    return scale(ihc_tiles[:3])


# -- README ------------------------------------------------------------------------------------
def readme_table(header: str) -> list[list[str]]:
    """Cells of the markdown table whose header row is ``header`` (separator row dropped)."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, header
    return rows


def readme_method_defaults() -> tuple[dict[str, dict[str, object]], set[str]]:
    """README's "Methods and their defaults": row name → {parameter: default}, and rows saying "no smooth"."""
    table, no_smooth = {}, set()
    for names, params in readme_table("| name | parameters (default) |"):
        keys = [SMOOTH_ROW] if "smooth: true" in names else re.findall(r"`(\w+)`", names)
        values = {}
        for key, inner in re.findall(r"`(\w+)` \(([^)]*)\)", params):
            values[key] = yaml.safe_load(inner.split()[0].strip("`"))  # "100 per baseline" → 100, `null` → None
        for key in keys:
            assert key not in table, f"README lists {key} twice"
            table[key] = values
            if "no smooth" in params:
                no_smooth.add(key)
    return table, no_smooth


def same_value(a: object, b: object) -> bool:
    """Equal, and a bool only equals a bool (``True != 1`` here); 50 equals 50.0."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def test_readme_methods_table_lists_every_method_and_default():
    table, no_smooth = readme_method_defaults()
    assert set(table) == {*METHODS, SMOOTH_ROW}
    for name, method in METHODS.items():
        assert set(table[name]) == set(method.defaults), name
        for key, default in method.defaults.items():
            assert same_value(table[name][key], default), (name, key, table[name][key], default)
        assert (name in no_smooth) == (not method.smoothable), name
    assert table[SMOOTH_ROW].keys() == SMOOTH_DEFAULTS.keys()
    assert all(same_value(table[SMOOTH_ROW][k], v) for k, v in SMOOTH_DEFAULTS.items())


NUMBER = r"\d+(?:\.\d+)?(?:\*\*\d+)?(?:\s*-\s*\d+)?"
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")


def _number(text: str) -> float:
    assert re.fullmatch(NUMBER, text.strip()), text
    return eval(text)  # digits, ** and - only (matched above)


def meaning(expected: str) -> Param:
    """A README "expected" cell or a :meth:`Param.describe` text as the :class:`Param` it means.

    Understands ``integer ≥ 1``, ``a number > 0 and ≤ 1``, ``number, 0 < x ≤ 1``,
    ``integer, 0 … 2³² − 1``, ``true or false`` and ``a layer name or null``.
    """
    text = expected.replace("`", "").replace("−", "-")
    text = re.sub(r"([⁰¹²³⁴⁵⁶⁷⁸⁹]+)", lambda m: "**" + m.group(1).translate(SUPERSCRIPTS), text)
    if re.search(r"\btrue or false\b", text):
        return Param("bool")
    if "layer name" in text:
        return Param("layer")
    if m := re.match(r"(?:a string, )?one of ([\w, ]+)", text):
        return Param("choice", choices=tuple(c.strip() for c in m.group(1).split(",")))
    kind = "int" if "integer" in text else "float" if "number" in text else None
    assert kind, expected
    low = high = None
    low_open = high_open = False
    if m := re.search(rf"({NUMBER})\s*…\s*({NUMBER})", text):
        low, high = _number(m.group(1)), _number(m.group(2))
    elif m := re.search(rf"({NUMBER})\s*(≤|<)\s*[A-Za-z_]+\s*(≤|<)\s*({NUMBER})", text):
        low, low_open, high, high_open = _number(m.group(1)), m.group(2) == "<", _number(m.group(4)), m.group(3) == "<"
    else:
        for sign, value in re.findall(rf"(≥|>|≤|<)\s*({NUMBER})", text):
            if sign in "≥>":
                low, low_open = _number(value), sign == ">"
            else:
                high, high_open = _number(value), sign == "<"
    return Param(kind, low, high, low_open, high_open)


def test_readme_parameter_table_means_what_params_checks():
    seen = []
    for names, expected in readme_table("| parameter | expected |"):
        for key in re.findall(r"`(\w+)`", names):
            assert key in PARAMS, key
            seen.append(key)
            declared = dataclasses.replace(PARAMS[key], engine=None)  # README's range, not which engine
            assert meaning(expected) == declared, (key, expected, PARAMS[key])
            assert meaning(PARAMS[key].describe()) == declared, (key, PARAMS[key].describe())
    assert sorted(seen) == sorted(PARAMS), "every parameter once"


def test_meaning_tells_ranges_apart():
    """The README parser is strict enough that a changed bound would fail the table test."""
    assert meaning("integer ≥ 1") == Param("int", 1) != meaning("integer ≥ 0")
    assert meaning("number, 0 < `fraction` ≤ 1") == Param("float", 0, 1, low_open=True)
    assert meaning("number, 0 ≤ `max_dist` ≤ 1") == Param("float", 0, 1)
    assert meaning("integer, 0 … 2³² − 1") == Param("int", 0, 2**32 - 1) != meaning("integer, 0 … 2³¹ − 1")
    assert meaning("a number > 0 and ≤ 1") == Param("float", 0, 1, low_open=True)


# -- registry, titles, wrappers ----------------------------------------------------------------
def test_registry_declares_each_method_once():
    assert list(METHODS) == [
        "vanilla", "integrated_gradients", "guided_integrated_gradients", "blur_integrated_gradients",
        "xrai", "xrai_fast", "gradcam", "gradcam_plusplus", "hirescam", "layercam", "scorecam", "occlusion",
        "rise", "input_x_gradient", "gradient_shap",
        "attention_rollout", "transformer_attribution",
    ]  # fmt: skip
    assert not hasattr(methods, "TITLES")
    assert methods.title("integrated_gradients") == "IG"
    assert methods.title("vanilla", smooth=True) == "Gradient (smooth)"
    assert methods.title("my_custom_id") == "my_custom_id"
    from slidegrad.engines.native import method_function

    for method in METHODS.values():
        assert callable(method_function(method)), method.name
        assert method.pair is None or set(method.pair.params) <= set(method.defaults), method.name
        assert method.description and method.title and method.citation and method.reference and method.phrase


@pytest.mark.parametrize("name", list(METHODS))
def test_wrapper_signature_and_doc_come_from_the_registry(name):
    method = METHODS[name]
    wrapper = getattr(SaliencyMap, name)
    signature = inspect.signature(wrapper)
    names = list(signature.parameters)
    assert names[:2] == ["self", "img"] and names[-1] == "kwargs"
    assert signature.parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    keywords = {k: p.default for k, p in signature.parameters.items() if k not in ("self", "img", "kwargs")}
    options = {**({"smooth": False} if method.smoothable else {}), **({"signed": False} if method.signable else {})}
    assert keywords == {**method.defaults, **options}
    assert list(keywords)[: len(method.defaults)] == list(method.defaults)
    assert wrapper.__doc__.startswith(method.description)
    for key, default in method.defaults.items():
        assert f"``{key}``: {PARAMS[key].describe()} (default {default!r}" in wrapper.__doc__
    assert wrapper.__qualname__ == f"SaliencyMap.{name}"


def test_wrappers_pass_positional_and_keyword_parameters(tiny_cnn, batch):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1)
    by_name = sal.get(batch, "integrated_gradients", x_steps=5)
    np.testing.assert_array_equal(sal.integrated_gradients(batch, 5), by_name)
    np.testing.assert_array_equal(sal.integrated_gradients(img=batch, x_steps=5), by_name)
    with pytest.raises(TypeError):
        sal.integrated_gradients(batch, 5, x_steps=6)


@pytest.fixture()
def registered_copy():
    """A copy of ``vanilla`` registered as ``vanilla_copy``: one declaration, removed afterwards."""
    method = dataclasses.replace(METHODS["vanilla"], name="vanilla_copy", title="Copy", description="A copy.")
    try:
        yield methods.register(method)
    finally:
        METHODS.pop("vanilla_copy", None)


def test_registering_a_method_is_one_declaration(registered_copy, tiny_cnn, batch):
    assert methods.get_method("vanilla_copy") is registered_copy
    assert methods.title("vanilla_copy", smooth=True) == "Copy (smooth)"
    assert "vanilla_copy" in methods.method_schema()["oneOf"][0]["enum"]
    for engine in ("native", "pair"):
        sal = sg.SaliencyMap(tiny_cnn, class_idx=1, engine=engine)
        assert "vanilla_copy" in dir(sal)
        assert list(inspect.signature(sal.vanilla_copy).parameters) == ["img", "smooth", "signed", "kwargs"]
        assert sal.vanilla_copy.__doc__.startswith("A copy.")
        np.testing.assert_array_equal(sal.vanilla_copy(batch[:2]), sal.vanilla(batch[:2]))
        np.testing.assert_array_equal(
            sal.vanilla_copy(batch[:1], smooth=True, nsamples=2), sal.vanilla(batch[:1], smooth=True, nsamples=2)
        )
    with pytest.raises(AttributeError, match="no attribute 'not_a_method'"):
        sg.SaliencyMap(tiny_cnn).not_a_method  # noqa: B018


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "vanilla"}, "already registered"),
        ({"name": "two words"}, "Python identifier"),
        ({"kind": "occlusion"}, "kind 'occlusion'"),
        ({"defaults": {"window": 3}}, "window are not in PARAMS"),
        ({"defaults": {"x_steps": 0}}, "default x_steps=0 is not an integer ≥ 1"),
        ({"pair": methods.PairCall("GradientSaliency", ("x_steps",))}, "PAIR keywords x_steps"),
    ],
)
def test_register_refuses_a_bad_declaration(change, message):
    method = dataclasses.replace(METHODS["vanilla"], **{"name": "vanilla_bad", **change})
    with pytest.raises(sg.InputError, match=message):
        methods.register(method)
    assert "vanilla_bad" not in METHODS


# -- schema and engine-specific parameters ---------------------------------------------------------
def method_configs() -> list[object]:
    """Every default method config: the name, ``{name}``, all defaults spelled out, smoothed, with an id."""
    configs: list[object] = []
    for name, method in METHODS.items():
        configs += [name, {"name": name}, {"name": name, "id": f"{name}.v2", **method.defaults}]
        if method.smoothable:
            configs.append({"name": name, "smooth": True, **method.defaults, **SMOOTH_DEFAULTS})
    return configs


def test_method_schema_accepts_every_default_config():
    schema = methods.method_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for config in method_configs():
        assert not list(validator.iter_errors(config)), config
    properties = schema["oneOf"][1]["properties"]
    assert set(properties) == {"name", "id", "smooth", "signed", *PARAMS}
    assert properties["x_steps"]["default"] == 25 and properties["layer"]["default"] is None


@pytest.mark.parametrize(
    "config",
    [
        "no_such_method",
        {"name": "no_such_method"},
        {"x_steps": 3},
        {"name": "integrated_gradients", "x_steps": "25"},
        {"name": "integrated_gradients", "x_steps": 0},
        {"name": "integrated_gradients", "x_steps": 2.5},
        {"name": "integrated_gradients", "x_steps": True},
        {"name": "guided_integrated_gradients", "fraction": 0},
        {"name": "guided_integrated_gradients", "max_dist": 1.5},
        {"name": "blur_integrated_gradients", "sqrt": "no"},
        {"name": "gradcam", "layer": 3},
        {"name": "vanilla", "smooth": "yes"},
        {"name": "vanilla", "smooth": True, "seed": 2**32},
        {"name": "vanilla", "id": "two words"},
        ["vanilla"],
    ],
)
def test_method_schema_rejects_bad_types_and_ranges(config):
    assert list(Draft202012Validator(methods.method_schema()).iter_errors(config)), config


def test_output_params_drop_pair_only_batch_size_for_native():
    method = methods.get_method("integrated_gradients")
    resolved = methods.resolve_params(method, {"x_steps": 10}, smooth=True)
    assert methods.output_params(method, resolved, "pair") == resolved
    native = methods.output_params(method, resolved, "native")
    assert native == {k: v for k, v in resolved.items() if k != "batch_size"} and "seed" in native
    assert PARAMS["batch_size"].engine == "pair" and all(
        p.engine is None for k, p in PARAMS.items() if k != "batch_size"
    )
    with pytest.raises(sg.InputError, match="engine: unknown engine 'gpu'"):
        methods.output_params(method, resolved, "gpu")


# -- progress ----------------------------------------------------------------------------------------
def test_native_progress_after_each_tile_group(tiny_cnn, ihc_tiles):
    tiles = scale(np.concatenate([ihc_tiles, ihc_tiles[:2]]))  # 6 tiles
    budget = 8 * 6 * 64 * 64 * 3 * 8  # tile groups of 2 tiles
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1, memory_budget=budget)
    assert sal.engine.tile_group((64, 64, 3)) == 2
    calls: list[tuple[int, int]] = []
    masks = sal.integrated_gradients(tiles, x_steps=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 6), (4, 6), (6, 6)]
    np.testing.assert_array_equal(masks, sal.integrated_gradients(tiles, x_steps=4))

    calls.clear()
    smooth = sal.vanilla(tiles, smooth=True, nsamples=3, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert len(calls) == 9 and done == sorted(done) and calls[-1] == (6, 6)  # 18 pairs in groups of 2
    assert {t for _, t in calls} == {6}
    np.testing.assert_array_equal(smooth, sal.vanilla(tiles, smooth=True, nsamples=3))


def test_native_cpu_tile_groups_report_a_64_tile_job_more_than_once(tiny_cnn, ihc):
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1, device="cpu", memory_budget=8 << 30)
    tiles = scale(np.stack([ihc[y : y + 32, x : x + 32] for y in range(0, 256, 32) for x in range(0, 256, 32)]))
    calls: list[tuple[int, int]] = []
    sal.attributions(tiles, "vanilla", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(32, 64), (64, 64)]


def test_pair_progress_after_each_tile(tiny_cnn, batch):
    calls: list[tuple[int, int]] = []
    sal = sg.SaliencyMap(tiny_cnn, class_idx=1, engine="pair")
    sal.get(batch, "vanilla", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_every_reported_parameter_says_its_value_in_words():
    """A parameter is declared once, with how the methods paragraph says its value (``Param.phrase``); only those
    the paragraph never reports (``methods_text.HIDDEN``) go without."""
    from slidegrad import methods_text

    missing = [key for key, param in PARAMS.items() if param.phrase is None and key not in methods_text.HIDDEN]
    assert not missing, f"parameters without a phrase: {missing}"
    assert methods_text._detail("stride", 4) == "moved by 4 px (the sum over every position estimated)"
    assert methods_text._detail("integration", "riemann_mean") == ""
    assert methods_text._detail("x_steps", 25) == "25 integration steps"
