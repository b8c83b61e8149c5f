"""The workflow config: validated against ``schemas/config.schema.json`` (its method part
comes from :mod:`slidegrad.methods`, its evaluate options from :mod:`slidegrad.metrics`), with
the schema's defaults filled in for every field a config leaves out.  Every problem is one
:class:`~slidegrad.errors.InputError` line naming the field."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from .errors import InputError, check, is_int
from .methods import default_id, get_method, method_schema, output_params, resolve_params, title
from .metrics import check_needs, evaluate_schema
from .tables import parse_roi

DYNAMIC_MODES = ("grid", "top_k", "random")
MODE_FIELDS = {
    "table": {"required": ["path"], "optional": []},
    "tfrecords": {"required": ["path", "directory"], "optional": []},
    "grid": {"required": [], "optional": ["roi", "min_tissue"]},
    "random": {"required": ["n"], "optional": ["seed", "roi", "min_tissue"]},
    "top_k": {"required": ["k"], "optional": ["roi", "min_tissue", "min_distance"]},
}


@dataclass(frozen=True)
class MethodSpec:
    """A configured method: ``id`` names its output folder, ``params`` are fully resolved; ``signed``: masks
    in [−1, 1] with the sign kept (gradient methods, :func:`slidegrad.methods.check_signed`)."""

    id: str
    name: str
    smooth: bool
    params: dict[str, Any] = field(hash=False)
    signed: bool = False

    @property
    def title(self) -> str:
        """Figure column title: the method's short name, or the custom ``id``."""
        if self.id == default_id(self.name, self.smooth, self.signed):
            return title(self.name, self.smooth, self.signed)
        return self.id

    def for_engine(self, engine: str) -> MethodSpec:
        """The spec with only the parameters that change ``engine``'s result (what a job's params record)."""
        params = output_params(get_method(self.name), self.params, engine)
        return MethodSpec(self.id, self.name, self.smooth, params, self.signed)

    def to_json(self) -> str:
        data = {"id": self.id, "name": self.name, "smooth": self.smooth, "params": self.params}
        if self.signed:  # only when set: unsigned specs keep their old text (Snakemake's params, no reruns)
            data["signed"] = True
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MethodSpec:
        data = json.loads(text)
        return cls(data["id"], data["name"], data["smooth"], data["params"], data.get("signed", False))


def load_schema() -> dict[str, Any]:
    """The config's JSON schema; ``methods.items`` is :func:`slidegrad.methods.method_schema`,
    ``evaluate.properties`` :func:`slidegrad.metrics.evaluate_schema`."""
    schema = json.loads(resources.files("slidegrad").joinpath("schemas/config.schema.json").read_text())
    schema["properties"]["methods"]["items"] = method_schema()
    schema["properties"]["evaluate"]["properties"] = evaluate_schema()
    return schema


def _field_path(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _with_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and sub.get("type") == "object":
            out[key] = _with_defaults(out[key], sub)
    return out


# a schema "integer" is an int: not 1.0 (which JSON Schema counts as one), not a bool
StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", lambda _, value: is_int(value)),
)
SHAPES = {"methods": "a method name or a mapping with 'name'", "tiles": "a CSV path or a mapping with 'mode'"}


def _message(error: jsonschema.ValidationError) -> str:
    """One line for the most specific of a schema error's causes."""
    best = jsonschema.exceptions.best_match([error])
    if best.validator == "oneOf" and isinstance(best.instance, dict):  # the mapping form: its own error
        best = min((e for e in best.context if e.validator != "type"), key=lambda e: len(e.absolute_path), default=best)
    where = _field_path(best)
    if best.validator == "required":
        missing = next(key for key in best.validator_value if key not in best.instance)
        return f"config field '{f'{where}.' if where else ''}{missing}': required, but the config has none"
    message = best.message.replace("\n", " ")
    if best.validator == "oneOf":
        message = f"{best.instance!r} must be {SHAPES.get(str(best.absolute_path[0]), 'a string or a mapping')}"
    return f"config field '{where or '(top level)'}': {message}"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate against the JSON schema and fill its defaults; the first error names its field.

    Method entries are checked first by :func:`parse_methods`, whose lines say what a
    parameter expects.
    """
    check(
        "figure_max_tiles" not in config,
        "config field 'figure_max_tiles': moved to 'figure.max_tiles' (the figure: section holds every figure option)",
    )
    if isinstance(config.get("methods"), list):
        parse_methods(config["methods"], lenient=True)
    schema = load_schema()
    errors = sorted(StrictValidator(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise InputError(_message(errors[0]))
    return _with_defaults(config, schema)


def parse_methods(entries: list[Any], lenient: bool = False) -> list[MethodSpec]:
    """Method entries (a name, or ``{name, id, smooth, signed, **params}``) → resolved specs with unique ids.

    ``lenient``: skip entries of the wrong shape (the schema reports those).
    """
    specs: list[MethodSpec] = []
    for i, entry in enumerate(entries):
        if lenient and not (isinstance(entry, str) or (isinstance(entry, dict) and isinstance(entry.get("name"), str))):
            continue
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        name = entry.pop("name")
        smooth, signed = entry.pop("smooth", False), entry.pop("signed", False)
        method_id = entry.pop("id", default_id(name, smooth, signed))
        if lenient and not (isinstance(smooth, bool) and isinstance(signed, bool) and isinstance(method_id, str)):
            continue
        try:
            method = get_method(name)
            params = resolve_params(method, entry, smooth, signed)
        except InputError as err:
            raise InputError(f"config field 'methods[{i}]': {err}") from None
        check(
            method_id not in {s.id for s in specs},
            f"config field 'methods[{i}]': id {method_id!r} is used twice; give one entry an 'id'",
        )
        specs.append(MethodSpec(method_id, name, smooth, params, signed))
    return specs


def parse_selection(tiles: Any) -> dict[str, Any]:
    """``tiles:`` (a CSV path, or a mapping with ``mode``) → ``{"mode": ..., **fields}`` with defaults."""
    selection = {"mode": "table", "path": tiles} if isinstance(tiles, str) else dict(tiles)
    mode = selection["mode"]
    fields = MODE_FIELDS[mode]
    for key in fields["required"]:
        check(key in selection, f"config field 'tiles.{key}': required for mode {mode!r}")
    allowed = {"mode", *fields["required"], *fields["optional"]}
    extra = sorted(set(selection) - allowed)
    check(not extra, f"config field 'tiles': {', '.join(extra)} not used by mode {mode!r} (it takes {', '.join(sorted(allowed))})")
    if "roi" in selection:
        selection["roi"] = parse_roi(selection["roi"], "config field 'tiles.roi'")
    if mode in DYNAMIC_MODES:
        selection.setdefault("min_tissue", 0.5)
        selection.setdefault("roi", None)
    if mode == "random":
        selection.setdefault("seed", 0)
    return selection


def check_evaluate(section: dict[str, Any], given: Any = None) -> list[str]:
    """What the schema cannot say about ``evaluate:``: errors (raised) and warnings (returned, one line each).

    ``section``: the validated section (defaults filled in); ``given``: the config's own, before that.
    """
    metrics, truth = section["metrics"], section["ground_truth"]
    unused = check_needs(section)  # a chosen metric's missing option is an error; options no chosen metric reads
    if truth is not None and truth != "dab":
        where = "config field 'evaluate.ground_truth'"
        check(Path(truth).is_dir(), f"{where}: folder '{truth}' does not exist (expected 'dab' or a folder of masks)")
    if not metrics and set(given or {}) - {"metrics"}:
        return ["config field 'evaluate': settings given but 'metrics' is empty; the maps are not evaluated"]
    return unused


def figure_methods(config: dict[str, Any], methods: list[MethodSpec]) -> list[MethodSpec]:
    """The methods the figures show as columns: ``figure.methods`` (ids, in that order), else every method."""
    chosen = config["figure"]["methods"]
    if chosen is None:
        return list(methods)
    by_id = {m.id: m for m in methods}
    unknown = [m for m in chosen if m not in by_id]
    check(
        not unknown,
        f"config field 'figure.methods': {', '.join(map(repr, unknown))} not among the run's method ids "
        f"({', '.join(by_id)})",
    )
    return [by_id[m] for m in chosen]
