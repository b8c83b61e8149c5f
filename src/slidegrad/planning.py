"""The run plan: what the Snakemake DAG expands over, built once per run (no Snakemake import).

``build_plan(config)`` validates the config (:mod:`slidegrad.config`), reads the sample
sheet and tile table (:mod:`slidegrad.tables`; no slide is opened), and returns the
slides × chunks × methods, with each job's ``params`` — every value that changes the
job's output, so Snakemake reruns exactly the jobs a config change affects.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    DYNAMIC_MODES,
    MethodSpec,
    check_evaluate,
    figure_methods,
    parse_methods,
    parse_selection,
    validate_config,
)
from .errors import InputError, check
from .layout import Layout
from . import stain
from .backends import DEFAULT_FRAMEWORK
from .model import ModelParams, check_preprocessing, detect_framework, model_params
from .tables import Slide, TileLocations, check_in_grid, chunk_labels, read_samples, read_tile_locations


@dataclass
class Plan:
    """What the DAG expands over.

    ``selection`` is the normalised ``tiles:`` config (``mode`` plus its fields).  In the
    static modes (``table``, ``tfrecords``) ``locations`` holds each slide's tiles and its
    chunks are known at start-up; in the dynamic ones (``grid``, ``random``, ``top_k``) a
    checkpoint chooses them per slide.  ``warnings`` are one-line notes for the user.
    """

    config: dict[str, Any]
    framework: str  # the mask jobs' framework ("torch" or "tensorflow"): their conda env
    slides: dict[str, Slide]
    methods: list[MethodSpec]
    selection: dict[str, Any]
    locations: TileLocations | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return self.selection["mode"] in DYNAMIC_MODES

    @property
    def method_ids(self) -> list[str]:
        return [m.id for m in self.methods]

    def method(self, method_id: str) -> MethodSpec:
        return next(m for m in self.methods if m.id == method_id)

    def static_chunks(self, slide: str) -> list[str]:
        """Chunk labels of a slide in the static modes (its table rows cut ``tiles_per_job`` per job)."""
        assert self.locations is not None
        return chunk_labels(len(self.locations.by_slide[slide]), self.config["tiles_per_job"])

    def tiles_params(self, slide: str) -> dict[str, Any]:
        """Everything a slide's tiles job needs besides its input files; all of it changes its output."""
        config, info = self.config, self.slides[slide]
        params: dict[str, Any] = {
            "slide": slide,
            "mode": self.selection["mode"],
            "mpp": info.mpp,
            "tile_px": config["tile_px"],
            "tile_um": config["tile_um"],
            "stride_div": config["stride_div"],
            "tiles_per_job": config["tiles_per_job"],
        }
        if self.dynamic:
            keys = [k for k in ("min_tissue", "n", "seed", "k", "min_distance") if k in self.selection]
            params.update({k: self.selection[k] for k in keys})
            roi = info.roi or self.selection["roi"]
            params["roi"] = list(roi) if roi else None
        else:
            assert self.locations is not None
            params["table"] = self.locations.path
            params["grid"] = self.locations.grid
            params["locations"] = [list(loc) for loc in self.locations.by_slide[slide]]
        if self.selection["mode"] == "top_k":
            params["model_options"] = model_options(config)
        return params

    @property
    def figure_methods(self) -> list[MethodSpec]:
        """The figures' method columns (``figure.methods``, else every method)."""
        return figure_methods(self.config, self.methods)

    @property
    def slide_maps(self) -> bool:
        """Whether each slide gets a saliency map per method (``slide_map.enabled``: ``auto`` in grid mode,
        where the tiles cover the slide; never without a slide file, i.e. in tfrecords mode)."""
        enabled, mode = self.config["slide_map"]["enabled"], self.selection["mode"]
        return mode != "tfrecords" and (enabled is True or (enabled == "auto" and mode == "grid"))

    @property
    def prediction_maps(self) -> bool:
        """Whether each slide gets a prediction heatmap (as :attr:`slide_maps`, and ``auto`` in top_k mode too:
        it scores every tissue tile)."""
        auto = self.config["slide_map"]["enabled"] == "auto" and self.selection["mode"] == "top_k"
        return self.slide_maps or auto

    @property
    def evaluating(self) -> bool:
        """Whether the run evaluates its maps (``evaluate.metrics`` is not empty)."""
        return bool(self.config["evaluate"]["metrics"])

    def evaluate_params(self) -> dict[str, Any]:
        """An evaluate job's settings (the ``evaluate`` section) and methods (their native engine's
        parameters, as JSON): all of it changes its output."""
        methods = {m.id: m.for_engine("native").to_json() for m in self.methods}
        return {"settings": self.config["evaluate"], "methods": methods}

    def mask_method(self, method_id: str) -> str:
        """A mask job's method as JSON: only the parameters that change its engine's result."""
        return self.method(method_id).for_engine(self.config["engine"]).to_json()


def resolve_geometry(
    tile_px: int | None, tile_um: float | str | None, model_path: str | None, params: ModelParams | None = None
) -> tuple[int, float | str]:
    """``(tile_px, tile_um)``: the config's, else the model's ``params.json``'s (``params``: read already)."""
    if tile_px is None or tile_um is None:
        check(
            model_path is not None and Path(model_path).exists(),
            f"config: tile_px/tile_um are not set and model '{model_path}' does not exist yet to read them from",
        )
        params = params or model_params(model_path)
        if tile_px is None:
            tile_px = params.require("tile_px", "or set tile_px in the config")
        if tile_um is None:
            tile_um = params.require("tile_um", "or set tile_um in the config")
    return int(tile_px), tile_um


def geometry_mismatches(tile_px: Any, tile_um: Any, model_path: str, params: ModelParams | None = None) -> list[str]:
    """One line per config ``tile_px``/``tile_um`` that differs from the model's ``params.json``
    (``params``: read already)."""
    if not Path(model_path).exists():
        return []
    params = params or model_params(model_path)
    lines = []
    for key, value in (("tile_px", tile_px), ("tile_um", tile_um)):
        trained = params.get(key)
        if value is not None and trained is not None and str(value) != str(trained):
            lines.append(
                f"config {key} {value!r} differs from {key} {trained!r} in the params.json of model "
                f"'{model_path}', which the model was trained at; tiles are read at {value!r}"
            )
    return lines


def model_options(config: dict[str, Any]) -> dict[str, Any]:
    """``load_model`` keywords from the config's ``model`` section, and its ``tile_px`` where set.

    ``model.allow_code`` goes as ``allow_code: True``; otherwise under its old name, as it was recorded
    before the rename (``allow_pickle: False``, or ``True`` from a config that still says
    ``allow_pickle: true``), so the mask jobs' params, and what reruns, are unchanged.
    """
    model = config["model"]
    keys = ("preprocessing", "architecture", "architecture_kwargs", "normalizer", "normalizer_fit")
    options = {key: model[key] for key in keys if model.get(key) is not None}
    if model.get("allow_code"):
        options["allow_code"] = True
    else:
        options["allow_pickle"] = bool(model.get("allow_pickle"))
    if config.get("tile_px") is not None:
        options["tile_px"] = config["tile_px"]
    return options


def check_allow_code(given: Any) -> list[str]:
    """``model.allow_code`` and its old name ``model.allow_pickle`` in the config as given: an error where
    both are set and disagree; a warning line where the old name is used."""
    model = given.get("model") if isinstance(given, dict) else None
    if not isinstance(model, dict) or "allow_pickle" not in model:
        return []
    new, old = model.get("allow_code"), model["allow_pickle"]
    check(
        "allow_code" not in model or new == old,
        f"config fields 'model.allow_code' ({new!r}) and 'model.allow_pickle' ({old!r}, its old name) disagree; "
        "keep model.allow_code alone",
    )
    return [
        "config field 'model.allow_pickle': deprecated, renamed 'model.allow_code' (which also allows params.json's "
        "'module:function' architectures and Keras Lambda layers)"
    ]


def mask_gpus(config: dict[str, Any], visible_gpus: int) -> int:
    """GPUs each mask job declares: ``mask_resources.gpu`` if set, else 1 whenever it runs on CUDA
    (``device: cuda``, or ``auto`` where ``visible_gpus`` > 0), else 0."""
    if config["mask_resources"].get("gpu") is not None:
        return int(config["mask_resources"]["gpu"])
    device = config["device"]
    return int(device == "cuda" or (device == "auto" and visible_gpus > 0))


def check_normalizer(config: dict[str, Any], params: ModelParams | None) -> None:
    """``model.normalizer`` / ``model.normalizer_fit`` against the model's ``params.json`` (``params``: None
    while the model does not exist; then checked on their own): one InputError line before any job runs."""
    model = config["model"]
    method, fit = model.get("normalizer"), model.get("normalizer_fit")
    if params is not None:
        stain.from_params(params.as_dict(), str(params.file), method, fit)
    elif method is not None:
        stain.from_params({"hp": {"normalizer": method}}, "config", method, fit)


def check_class_idx(config: dict[str, Any], params: ModelParams | None) -> int | str | None:
    """``model.class_idx`` as a class index of the model: a label is looked up in its ``outcome_labels``.

    Checked when the model exists (``params``: its ``params.json``); until then (the demo builds it) the
    value is returned as is.
    """
    class_idx, model_path = config["model"].get("class_idx"), config["model"]["path"]
    if class_idx is None or params is None:
        return class_idx
    labels = [str(label) for label in params.outcome_labels or []]
    where = "config field 'model.class_idx'"
    if isinstance(class_idx, str):
        check(
            bool(labels),
            f"{where}: label {class_idx!r} needs 'outcome_labels' in the params.json of model '{model_path}'; "
            "give a class index instead",
        )
        check(
            class_idx in labels,
            f"{where}: unknown label {class_idx!r}; model '{model_path}' has labels {', '.join(labels)}",
        )
        return labels.index(class_idx)
    if labels:
        check(
            class_idx < len(labels),
            f"{where}: {class_idx} is out of range; model '{model_path}' has "
            f"{len(labels)} classes ({', '.join(labels)})",
        )
    return class_idx


def _writable(folder: Path) -> bool:
    """A real probe: create and remove a file (``os.access`` trusts mode bits, which root ignores)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        handle, probe = tempfile.mkstemp(prefix=".slidegrad-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def check_outdir(outdir: str) -> None:
    """``outdir`` must be a writable folder, or creatable in one; so must the result folders already in it."""
    where = "config field 'outdir'"
    path = Path(outdir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path:
        check(existing.is_dir(), f"{where}: '{outdir}' cannot be created: '{existing}' is a file, not a folder")
        check(_writable(existing), f"{where}: '{outdir}' cannot be created: folder '{existing}' is not writable")
        return
    for folder in map(Path, Layout(outdir).folders()):
        if folder.exists():
            check(folder.is_dir(), f"{where}: '{folder}' is a file; expected a folder")
            check(_writable(folder), f"{where}: folder '{folder}' is not writable")


def model_framework(config: dict[str, Any], params: ModelParams | None) -> str:
    """The mask jobs' framework: ``model.framework``, else detected from the model (``params``: its
    ``params.json``; None while it does not exist: torch, which the demo builds)."""
    framework = config["model"]["framework"]
    if framework != "auto":
        return framework
    return detect_framework(params).name if params is not None else DEFAULT_FRAMEWORK


def check_framework_alias(config: dict[str, Any]) -> list[str]:
    """``model.backend``, the deprecated old name of ``model.framework``, moved there (both given must
    agree): a warning line where it is used."""
    model = config["model"]
    old = model.pop("backend", None)
    if old is None:
        return []
    check(
        "auto" in (old, model["framework"]) or old == model["framework"],
        f"config fields 'model.framework' ({model['framework']!r}) and 'model.backend' ({old!r}, its old name) "
        "disagree; keep model.framework alone",
    )
    if old != "auto":
        model["framework"] = old
    return ["config field 'model.backend': deprecated, renamed 'model.framework'"]


def tfrecord_slides(names: list[str], directory: str, samples: dict[str, Slide]) -> dict[str, Slide]:
    """tfrecords mode: each slide's ``path`` is ``{directory}/{slide}.tfrecords``."""
    from .tfrecords import tfrecord_path

    slides = {}
    for name in names:
        try:
            path = tfrecord_path(directory, name)
        except InputError as err:
            raise InputError(f"config field 'tiles.directory': {err}") from None
        slides[name] = Slide(name, str(path), samples[name].mpp if name in samples else None)
    return slides


def check_grid_locations(plan: Plan, params: ModelParams | None = None) -> None:
    """A table's grid ``col,row`` lie inside each slide's grid: each slide is opened once.

    Skipped while ``tile_px``/``tile_um`` must come from a model that does not exist yet (the
    demo builds it); the slide's tiles job checks them again in any case.
    """
    from .slide import WSI

    locations, config = plan.locations, plan.config
    if locations is None or not locations.grid:
        return
    try:
        tile_px, tile_um = resolve_geometry(config["tile_px"], config["tile_um"], config["model"]["path"], params)
    except InputError:
        if not Path(config["model"]["path"]).exists():
            return
        raise
    for name, locs in locations.by_slide.items():
        slide = plan.slides[name]
        check(Path(slide.path).exists(), f"sample sheet: grid col,row needs slide '{slide.path}' to exist (or give x,y)")
        with WSI(slide.path, tile_px, tile_um, stride_div=config["stride_div"], mpp=slide.mpp) as wsi:
            grid_shape = wsi.grid_shape
        for (col, row), line in zip(locs, locations.lines[name]):
            check_in_grid(f"tile table '{locations.path}' line {line}", name, col, row, grid_shape)


def build_plan(config: dict[str, Any], open_slides: bool = True) -> Plan:
    """Validate ``config`` and expand it into slides, their tiles (static modes) and methods.

    ``open_slides``: check a table's grid ``col,row`` against each slide now (once per run; a
    cluster job step, which rebuilds the plan, passes False).
    """
    given_evaluate = config.get("evaluate") if isinstance(config, dict) else None
    given = config
    config = validate_config(config)
    allow_warnings = check_allow_code(given)  # as given: the schema fills in both names' defaults
    methods = parse_methods(config["methods"])
    selection = parse_selection(config["tiles"])
    check_outdir(config["outdir"])
    mode = selection["mode"]
    samples_path = config.get("samples")
    check(
        samples_path is not None or mode == "tfrecords",
        f"config field 'samples': required for tiles mode {mode!r} (only tfrecords mode can do without)",
    )
    slides = read_samples(samples_path) if samples_path else {}
    locations = None
    model_path = config["model"]["path"]
    params = model_params(model_path) if Path(model_path).exists() else None  # read once per plan
    warnings = geometry_mismatches(config["tile_px"], config["tile_um"], model_path, params)
    warnings += check_evaluate(config["evaluate"], given_evaluate)
    warnings += allow_warnings + check_framework_alias(config)
    if mode == "tfrecords" and config["slide_map"]["enabled"] is True:
        warnings.append("config field 'slide_map.enabled': tfrecords mode has no slide file to map; no slide maps")
    if mode in ("table", "tfrecords"):
        locations = read_tile_locations(selection["path"], samples_path, slides)
        unused = [name for name in slides if name not in locations.by_slide]
        if unused:
            warnings.append(
                f"sample sheet '{samples_path}': slide(s) {', '.join(unused)} have no rows in tile table "
                f"'{selection['path']}'; skipped"
            )
        if mode == "tfrecords":
            slides = tfrecord_slides(list(locations.by_slide), selection["directory"], slides)
        slides = {name: slides[name] for name in locations.by_slide}
    figure_methods(config, methods)  # figure.methods names the run's methods
    check_normalizer(config, params)
    if config["model"].get("preprocessing") is not None:  # the schema's checks, and finite numbers
        config["model"]["preprocessing"] = check_preprocessing(
            config["model"]["preprocessing"], "config field 'model.preprocessing'"
        )
    config["model"]["class_idx"] = check_class_idx(config, params)  # the mask jobs get the index
    plan = Plan(config, model_framework(config, params), slides, methods, selection, locations, warnings)
    if open_slides:
        check_grid_locations(plan, params)
    return plan
