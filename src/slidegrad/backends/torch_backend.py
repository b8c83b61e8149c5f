"""PyTorch implementation of the :class:`~slidegrad.backends.Backend` contract, and model loading."""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import io
import itertools
import json
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import InputError, check, first_line
from ..model_files import HF_CONFIG_FILE, TORCH_FILES, TORCH_SUFFIXES
from .common import AttentionMaps, cache_class_count, cached_class_count, checked_output, nan_where_nonfinite
from .torch_vit import TokenModel, attention_bytes, capture_attention, is_patch_embedding, token_model, tokens_to_grid
from .torch_vit import check_tile_size, warn_patch_embedding

SLIDEFLOW_EPOCH = re.compile(r"_epoch(\d+)\.zip$")
_PICKLED_CLASS = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+)")
SHORT = 300  # characters of a framework's error message kept in ours


# -- model loading --------------------------------------------------------------------
ENTRY_POINT_GROUP = "slidegrad.architectures"  # installed packages register architecture factories here
LOGGER = logging.getLogger("slidegrad")


def registered_architectures() -> dict[str, Any]:
    """Architecture names installed packages register (entry point group ``slidegrad.architectures``),
    as entry points: nothing is imported until one is used."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def is_code(name: Any) -> bool:
    """Whether an architecture is ``"module:function"`` (code to import and call), not a name."""
    return isinstance(name, str) and ":" in name


def resolve_factory(name: str, where: str) -> Callable[..., nn.Module]:
    """The architecture factory for a name (:data:`slidegrad.torch_nets.ARCHITECTURES`, else an installed
    package's ``slidegrad.architectures`` entry point) or ``"module:function"``.  Only call this once
    the caller knows ``"module:function"`` is allowed (:func:`build_architecture` checks)."""
    if ":" not in name:
        from ..torch_nets import ARCHITECTURES

        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
        registered = registered_architectures()
        check(
            name in registered,
            f"{where}: unknown architecture {name!r}; use one of {sorted({*ARCHITECTURES, *registered})} "
            "or 'module:function'",
        )
        try:
            factory = registered[name].load()
        except Exception as err:  # noqa: BLE001 - the installed package's import
            raise InputError(
                f"{where}: cannot import architecture {name!r} (entry point {registered[name].value!r} in group "
                f"{ENTRY_POINT_GROUP!r}: {first_line(err, SHORT)})"
            ) from None
        check(callable(factory), f"{where}: architecture {name!r} (entry point {registered[name].value!r}) is not callable")
        return factory
    module_name, _, attr = name.partition(":")
    check(
        bool(module_name) and attr.isidentifier(),
        f"{where}: architecture {name!r} is not 'module:function' (e.g. 'mypackage.nets:build')",
    )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # the module, or something it imports, is missing
        raise InputError(f"{where}: cannot import architecture {name!r} ({first_line(err, SHORT)})") from None
    check(
        hasattr(module, attr),
        f"{where}: cannot import architecture {name!r} (module '{module_name}' has no attribute '{attr}')",
    )
    factory = getattr(module, attr)
    check(callable(factory), f"{where}: architecture {name!r} is not callable")
    return factory


def refuse_params_code(name: Any, params_file: Any, allow_code: bool) -> None:
    """One InputError line where ``params.json`` names code (``"module:function"``) and code is not allowed:
    checked before anything is imported or called."""
    if allow_code or not is_code(name):
        return
    raise InputError(
        f"'{params_file}': architecture {name!r} is code ('module:function'); loading the model would import and "
        "call it, so it needs allow_code=True (config: model.allow_code: true) — only for a model you trust; or "
        "name the architecture yourself: load_model(..., architecture=...) / config model.architecture"
    )


def _takes(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def build_architecture(
    params: dict[str, Any], where: str, allow_code: bool = False, params_file: Any = None
) -> nn.Module:
    """The module a state dict loads into: ``architecture`` (else Slideflow's ``hp.model``) and its kwargs.

    ``params_file``: the ``params.json`` the architecture comes from (``None``: the user gave it); a
    ``"module:function"`` from there needs ``allow_code`` (:func:`refuse_params_code`)."""
    name = params.get("architecture")
    if params_file is not None:
        refuse_params_code(name, params_file, allow_code)
    if name is None:
        from ..torch_nets import ARCHITECTURES

        name = (params.get("hp") or {}).get("model")
        check(
            name in ARCHITECTURES,
            f"{where}: a state dict needs its architecture: 'architecture' in params.json or "
            "load_model(..., architecture='module:function')"
            + (f" (Slideflow's hp.model {name!r} is not built into slidegrad)" if name else ""),
        )
    factory = resolve_factory(name, where)
    kwargs = dict(params.get("architecture_kwargs") or {})
    if params.get("outcome_labels") and "n_classes" not in kwargs and _takes(factory, "n_classes"):
        kwargs["n_classes"] = len(params["outcome_labels"])
    try:
        module = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - any error from user code
        raise InputError(
            f"{where}: architecture {name!r} with kwargs {kwargs} failed ({first_line(err, SHORT)})"
        ) from None
    check(
        isinstance(module, nn.Module),
        f"{where}: architecture {name!r} returned {type(module).__name__}, not an nn.Module",
    )
    return module


def torch_model_file(path: Path) -> Path:
    """The file to load for a PyTorch model path: the path itself, or the model file in a directory."""
    if not path.is_dir():
        return path
    for name in TORCH_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TORCH_SUFFIXES)
    epochs = {p: int(m.group(1)) for p in found if (m := SLIDEFLOW_EPOCH.search(p.name))}
    if found and len(epochs) == len(found):  # Slideflow: one state dict per saved epoch
        return max(found, key=lambda p: epochs[p])
    check(
        bool(found),
        f"model '{path}': no model file; expected {', '.join(TORCH_FILES)}, "
        "one *.pt2 / *.pth / *.pt file or Slideflow's *_epochN.zip",
    )
    check(
        len(found) == 1,
        f"model '{path}': several model files ({', '.join(p.name for p in found)}); pass the path of the one to load",
    )
    return found[0]


def file_kind(path: Path) -> str:
    """What a PyTorch file holds, from its archive entries: ``export``, ``torchscript`` or ``saved``.

    ``saved`` is ``torch.save`` output (a state dict or a pickled module), or an unreadable file.
    """
    if path.suffix == ".pt2":
        return "export"
    if not zipfile.is_zipfile(path):
        return "saved"  # torch.save's legacy format, or not a torch file at all
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "saved"  # torch.load reports the damage
    if any(n.endswith("/archive_format") for n in names):
        return "export"
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "saved"


def load_module(
    path: Path, params: dict[str, Any], allow_code: bool = False, params_file: Any = None
) -> tuple[nn.Module, list[Path]]:
    """Load a PyTorch model path (see :mod:`slidegrad.model`); returns the module (eval mode) and its files.

    ``allow_code``: a pickled module may be unpickled, and ``params.json``'s ``"module:function"``
    architecture called.  ``params_file``: the ``params.json`` that ``params["architecture"]`` comes from,
    ``None`` where the user gave it (their own code: always allowed)."""
    file = torch_model_file(path)
    kind = file_kind(file)
    if kind == "export":
        return load_exported(file, params.get("tile_px"), allow_code), [file]
    if kind == "torchscript":
        try:
            module = torch.jit.load(str(file), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - torch raises many types here
            raise InputError(f"model '{file}': not a readable TorchScript file ({first_line(err, SHORT)})") from None
        return to_eval(module, str(file)), [file]
    loaded = _torch_load(file, allow_code)
    if isinstance(loaded, nn.Module):
        return to_eval(loaded, str(file)), [file]
    check(
        isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()),
        f"model '{file}': holds a {type(loaded).__name__}, not a state dict or a module",
    )
    module = build_architecture(params, f"model '{path}'", allow_code, params_file)
    load_state_dict(module, loaded, str(file))
    return module.eval(), [file]  # a freshly built module is in training mode: nothing to say


def to_eval(module: nn.Module, where: str) -> nn.Module:
    """``module`` in eval mode; one WARNING line where it was in training mode (saved so, or handed to
    ``SaliencyMap`` so: dropout active, batch norm using each batch's statistics), which slidegrad never explains."""
    if any(m.training for m in module.modules()):
        LOGGER.warning(
            "model '%s': in training mode; put in eval mode (dropout off, batch norm on its running statistics)",
            where,
        )
        module.eval()
    return module


def load_transformers(path: Path, config_name: str, model_type: str) -> tuple[nn.Module, list[Path]]:
    """A Hugging Face ``transformers`` folder (``save_pretrained``: ``config.json`` + ``*.safetensors``) as
    ``AutoModelForImageClassification``, in float32 with eager attention (its attention probabilities can
    be read), eval mode; returns the module and its files.

    Never runs code from the folder: ``trust_remote_code=False``, a ``config.json`` whose ``auto_map`` asks
    for remote code is refused, and only safetensors weights are read (no pickles).  ``transformers`` is
    imported here, only when such a folder is loaded.  ``config_name``: its config file's name;
    ``model_type``: the config's, checked by :func:`slidegrad.model.read_hf_config` (valid JSON, no ``auto_map``).
    """
    config_file = path / config_name
    weights = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    check(
        bool(weights),
        f"model '{path}': {config_name} but no *.safetensors weights; expected a transformers save_pretrained "
        "folder (config.json + model.safetensors) or a slidegrad model file (model.pt2, weights.pt, model.pt)",
    )
    try:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    except ImportError as err:
        raise InputError(
            f"model '{path}': a transformers model folder, but transformers cannot be imported "
            f"({first_line(err, SHORT)})"
        ) from None
    check(
        model_type in CONFIG_MAPPING_NAMES,
        f"'{config_file}': unknown model_type {model_type!r}; expected a model type built into transformers "
        f"{transformers.__version__} (remote code is never run)",
    )
    check(
        model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        f"'{config_file}': model_type {model_type!r} has no image classifier in transformers "
        f"{transformers.__version__}; expected one AutoModelForImageClassification loads (e.g. vit, dinov2)",
    )
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in the job logs
    try:
        module, info = transformers.AutoModelForImageClassification.from_pretrained(
            path,
            attn_implementation="eager",
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as err:  # noqa: BLE001 - transformers raises many types here
        if "ignore_mismatched_sizes" in str(err):  # its detail is a logged report, not the message
            raise InputError(
                f"model '{path}': the safetensors weights' shapes differ from what {config_name} describes "
                "(e.g. its id2label / num_labels against the classifier's outputs)"
            ) from None
        raise InputError(f"model '{path}': transformers cannot load it ({first_line(err, SHORT)})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or [])
    check(
        not missing,
        f"model '{path}': the safetensors weights lack {len(missing)} of the classifier's tensors "
        f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}); expected a trained image classifier "
        "saved with save_pretrained (a backbone alone has no class scores)",
    )
    return module.eval(), [config_file, *weights]


def model_logits(out: Any) -> Any:
    """The ``(N, classes)`` tensor of a model's output: its ``logits`` where it has them (Hugging Face's
    ``ImageClassifierOutput``, or any object or mapping with a ``logits`` field), else the output itself."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    return out if logits is None else logits


def _torch_load(file: Path, allow_code: bool) -> Any:
    """``torch.load`` with ``weights_only=True``; a pickled module needs ``allow_code``."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        pickled = _PICKLED_CLASS.search(str(err))
        if pickled is None:
            detail = _UNPICKLER_ERROR.search(str(err))
            reason = detail.group(1).strip() if detail else first_line(err, SHORT)
            raise InputError(f"model '{file}': not a readable PyTorch file ({reason})") from None
        if not allow_code:
            raise InputError(
                f"model '{file}': a pickled module ({pickled.group(1)}, saved with torch.save(model)); loading it "
                "runs arbitrary code from the file, so it needs allow_code=True (config: model.allow_code: true) "
                "— only for files you trust; or save a state dict, TorchScript or torch.export program instead"
            ) from None
    except Exception as err:  # noqa: BLE001 - truncated or corrupt archives
        raise InputError(f"model '{file}': not a readable PyTorch file ({first_line(err, SHORT)})") from None
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - e.g. the module's class is not importable here
        raise InputError(f"model '{file}': cannot unpickle the module ({first_line(err, SHORT)})") from None


def load_state_dict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``module`` (strict); Slideflow's ``ModelWrapper`` keys are mapped first."""
    own = module.state_dict()
    if "fc0.weight" in state and "fc0.weight" not in own and any(k.startswith("model.") for k in state):
        state = _from_slideflow(module, state, where)
    try:
        module.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        # torch lists the problems one per line under a header line: keep them, on one line
        text = " ".join(str(err).split())
        detail = first_line(RuntimeError(text), SHORT) if text else first_line(err)
        raise InputError(f"model '{where}': cannot load the state dict ({detail})") from None


def _from_slideflow(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Slideflow's ``ModelWrapper`` (``model.*`` = the network with its head removed, ``fc0`` = the head)
    → the network's own keys; the network's last ``nn.Linear`` becomes ``fc0`` (resized to it)."""
    extra = sorted({k.split(".")[0] for k in state if not k.startswith(("model.", "fc0."))})
    check(
        not extra,
        f"model '{where}': Slideflow model with {', '.join(extra)} (hidden layers or several outcomes) "
        "is not supported; only a network plus one fc0 head",
    )
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    check(bool(linears), f"model '{where}': Slideflow's fc0 head needs an nn.Linear head in the architecture")
    head = linears[-1]
    weight = state["fc0.weight"]
    parent_name, _, child = head.rpartition(".")
    parent = module.get_submodule(parent_name)
    setattr(parent, child, nn.Linear(weight.shape[1], weight.shape[0], bias="fc0.bias" in state))
    mapped = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    mapped.update({f"{head}.{k.removeprefix('fc0.')}": v for k, v in state.items() if k.startswith("fc0.")})
    return mapped


# -- torch.export programs -------------------------------------------------------------
def load_exported(file: Path, tile_px: int | None = None, allow_code: bool = False) -> nn.Module:
    """A ``torch.export.save`` program as a module whose convolutions are hookable ``nn.Conv2d``.

    An archive with entries ``torch.export.load`` would unpickle (:func:`exported_pickles`) needs
    ``allow_code``: unpickling runs code from the file."""
    check(
        zipfile.is_zipfile(file),
        f"model '{file}': not a torch.export program (not a zip archive; save it with torch.export.save)",
    )
    pickled = [] if allow_code else exported_pickles(file)
    check(
        not pickled,
        f"model '{file}': its torch.export archive holds pickled entries ({', '.join(pickled[:3])}"
        f"{', …' if len(pickled) > 3 else ''}) that torch.export.load unpickles, which runs arbitrary code from "
        "the file, so it needs allow_code=True (config: model.allow_code: true) — only for files you trust; or "
        "re-export it with torch.export.save from a model whose weights and inputs are plain tensors",
    )
    export_log = logging.getLogger("torch.export")  # torch logs a traceback before raising
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(file))
    except Exception as err:  # noqa: BLE001
        reason = first_line(err, SHORT)
        raise InputError(f"model '{file}': not a readable torch.export program ({reason})") from None
    finally:
        export_log.setLevel(level)
    inputs = program.graph_signature.user_inputs
    check(len(inputs) == 1, f"model '{file}': the program takes {len(inputs)} inputs; expected one image batch")
    spec = next((n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0]), None)
    shape = tuple(getattr(spec, "shape", ()))
    if len(shape) == 4:
        check(
            not isinstance(shape[0], int),
            f"model '{file}': exported with a fixed batch size of {shape[0]}; export with a dynamic one: "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}",
        )
        height, width = shape[2], shape[3]
        check(
            tile_px is None or not isinstance(height, int) or (height, width) == (tile_px, tile_px),
            f"model '{file}': exported for {height}×{width} inputs but tile_px is {tile_px}",
        )
    return hookable(program.module())


_EXPORT_OBJECTS = ("custom_obj_", "opaque_obj_")  # constants torch.export.load unpickles as objects
_EXPORT_OLD_PICKLES = ("serialized_state_dict", "serialized_constants", "serialized_example_inputs")


def exported_pickles(file: Path) -> list[str]:
    """Entries of a ``torch.export`` archive that ``torch.export.load`` (torch 2.13) would unpickle
    with ``weights_only=False``, i.e. that can run code: weights and constants its payload configs mark
    ``use_pickle``, custom and opaque objects, and the ``.pt`` files (sample inputs, legacy weights,
    the older format's artifacts) that do not load as plain tensors with ``weights_only=True``
    (torch tries that first and falls back).  ``[]`` for what ``torch.export.save`` writes for a
    model of plain tensors."""
    found = []
    with zipfile.ZipFile(file) as archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            if base.endswith(("_weights_config.json", "_constants_config.json")):
                try:
                    payloads = json.loads(archive.read(name))["config"].items()
                except (ValueError, KeyError, TypeError, AttributeError):
                    found.append(name)  # torch would fail on it; nothing here says it is safe
                    continue
                found += [f"{name}:{key}" for key, meta in payloads if not isinstance(meta, dict)
                          or meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_EXPORT_OBJECTS)]  # fmt: skip
            elif base.endswith(".pt") or base.startswith(_EXPORT_OLD_PICKLES):
                try:
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - any refusal: torch would retry with weights_only=False
                    found.append(name)
    return found


def hookable(module: nn.Module) -> nn.Module:
    """Make a ``torch.export`` module (``ExportedProgram.module()``) work with Grad-CAM, in place.

    Its graph calls ``aten.conv2d`` on parameters held by plain placeholder modules, so forward
    hooks on them never fire.  Each such call becomes a call of an ``nn.Conv2d`` (sharing the
    parameters) under the original layer's name, e.g. ``features.3``.  ``train()`` / ``eval()``
    are allowed again: they only set flags, as the program's mode was fixed at export.
    Other modules are returned unchanged.
    """
    if not isinstance(module, torch.fx.GraphModule):
        return module
    for name in ("train", "eval"):  # ExportedProgram.module() makes both raise
        module.__dict__.pop(name, None)
    graph, changed = module.graph, False
    for node in list(graph.nodes):
        conv = _conv_module(module, node)
        if conv is None:
            continue
        path = node.args[1].target.rpartition(".")[0]
        parent_name, _, child = path.rpartition(".")
        setattr(module.get_submodule(parent_name), child, conv)
        with graph.inserting_after(node):
            call = graph.call_module(path, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        changed = True
    if changed:
        for node in list(graph.nodes):
            if node.op == "get_attr" and not node.users:
                graph.erase_node(node)
        module.recompile()
    return module


def _conv_module(root: nn.Module, node: torch.fx.Node) -> nn.Conv2d | None:
    """An ``nn.Conv2d`` equivalent to an ``aten.conv2d`` / ``aten.convolution`` graph node, or ``None``."""
    aten = torch.ops.aten
    if node.op != "call_function" or node.target not in (
        aten.conv2d.default,
        aten.conv2d.padding,
        aten.convolution.default,
    ):
        return None
    args = list(node.args)
    if node.target == aten.convolution.default:  # input, weight, bias, stride, padding, dilation, transposed, ...
        if len(args) < 9 or args[6] or len(args[3]) != 2:
            return None
        args = [*args[:6], args[8]]
    defaults = [None, None, None, [1, 1], [0, 0] if node.target != aten.conv2d.padding else "valid", [1, 1], 1]
    args += defaults[len(args) :]
    for key, index in (("bias", 2), ("stride", 3), ("padding", 4), ("dilation", 5), ("groups", 6)):
        if key in node.kwargs:
            args[index] = node.kwargs[key]
    _, weight, bias, stride, padding, dilation, groups = args
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr"):
        return None
    path, _, weight_name = weight.target.rpartition(".")
    if weight_name != "weight" or not path:
        return None
    if bias is not None and not (
        isinstance(bias, torch.fx.Node) and bias.op == "get_attr" and bias.target == f"{path}.bias"
    ):
        return None
    holder = root.get_submodule(path)
    w = getattr(holder, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        return None
    hyper = {
        "stride": tuple(stride),
        "padding": padding if isinstance(padding, str) else tuple(padding),
        "dilation": tuple(dilation),
        "groups": int(groups),
    }
    if isinstance(holder, nn.Conv2d):  # one layer called twice: already restored
        same = all(getattr(holder, k) == v for k, v in hyper.items()) and (holder.bias is None) == (bias is None)
        return holder if same else None
    if list(holder.children()) or (set(holder._parameters) | set(holder._buffers)) - {"weight", "bias"}:
        return None
    conv = nn.Conv2d(
        w.shape[1] * hyper["groups"], w.shape[0], tuple(w.shape[2:]), bias=bias is not None, device="meta", **hyper
    )
    conv.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
    if bias is not None:
        b = holder.bias
        conv.bias = b if isinstance(b, nn.Parameter) else nn.Parameter(b, requires_grad=False)
    return conv


def output_count(module: nn.Module, tile_px: int | None, where: str, device: torch.device | None = None) -> int:
    """Number of classes, from one forward pass on a ``tile_px`` tile; the output must be ``(N, classes)``.

    Without ``tile_px`` the size is a ``torch.export`` program's own, else 64.
    """
    return checked_output(_probe(module, tile_px, where, device), where)


def probe_outputs(module: nn.Module, tile_px: int | None, where: str) -> np.ndarray:
    """The ``(1, classes)`` outputs of :func:`output_count`'s probe (an all-zero tile), checked, as numpy."""
    out = _probe(module, tile_px, where)
    checked_output(out, where)
    return out.detach().float().cpu().numpy()


def _probe(module: nn.Module, tile_px: int | None, where: str, device: torch.device | None = None) -> Any:
    size = tile_px or input_size(module)
    tokens = token_model(module)
    if tokens is not None and size:
        check_tile_size(tokens, size, where)
    hint = "; give its tile size: params.json 'tile_px', load_model(..., tile_px=) or the config's tile_px"
    hint = "" if size else hint
    dummy = torch.zeros(1, 3, size or 64, size or 64, device=device)
    dummy = dummy.contiguous(memory_format=input_layout(dummy.device))
    return forward(module, dummy, where, no_grad=True, hint=hint)


def input_layout(device: torch.device) -> torch.memory_format:
    """The memory layout of every model input on ``device``: channels-last on a CPU (see ``model_input``)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def forward(module: nn.Module, x: torch.Tensor, where: str, no_grad: bool = False, hint: str = "") -> Any:
    """``module(x)``'s logits (:func:`model_logits`) for an ``(N, 3, H, W)`` batch; an error in the model is
    one line naming it and the size."""
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            return model_logits(module(x))
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any error from the model's code
        size = "×".join(map(str, x.shape[2:]))
        raise InputError(f"model '{where}': fails on {size} px inputs ({first_line(err, SHORT)}){hint}") from None


@contextlib.contextmanager
def autograd() -> Iterator[None]:
    """Autograd on, also where the caller runs ``torch.no_grad()`` or ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def input_size(module: nn.Module) -> int | None:
    """The fixed input height of a ``torch.export`` module (from its graph), else ``None``."""
    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        shape = tuple(getattr(node.meta.get("val"), "shape", ())) if node.op == "placeholder" else ()
        if len(shape) == 4 and isinstance(shape[2], int):
            return shape[2]
    return None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU, or ``cuda:N`` without
    that GPU (N counts within ``CUDA_VISIBLE_DEVICES``), is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device: {str(device)!r} is not a torch device ({first_line(err)})") from None
    if device.type == "cuda":
        check(torch.cuda.is_available(), f"device: '{device}' was asked for but torch sees no CUDA device")
        count = torch.cuda.device_count()
        check(
            device.index is None or device.index < count,
            f"device: '{device}' was asked for but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}",
        )
    return device


def sees_gpu() -> bool:
    """Whether torch can use a CUDA GPU in this process."""
    return bool(torch.cuda.is_available())


def set_threads(threads: int) -> None:
    """Pin torch's CPU thread pool (results depend on it: keep it fixed to reproduce)."""
    torch.set_num_threads(threads)


def load(
    path: Path,
    params: dict[str, Any],
    allow_code: bool = False,
    architecture_from: Any = None,
    transformers_type: str | None = None,
) -> tuple[nn.Module, list[Path]]:
    """A PyTorch model path: a ``transformers`` folder (``transformers_type``: its ``model_type``), else
    :func:`load_module` (``architecture_from``: the ``params.json`` the architecture comes from)."""
    if transformers_type is not None:
        return load_transformers(path, HF_CONFIG_FILE, transformers_type)
    return load_module(path, params, allow_code=allow_code, params_file=architecture_from)


def make_backend(module: nn.Module, device: str = "auto", **known: Any) -> TorchBackend:
    """``module`` behind the backend contract (``known``: ``n_classes``, ``tile_px``, ``name``)."""
    return TorchBackend(module, device=device, **known)


def _on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module.to(device)``, skipped where every parameter and buffer is there already (cheap per call)."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return module if all(t.device == device for t in tensors) else module.to(device)


# -- model randomisation (slidegrad.evaluate.sanity) ---------------------------------
def randomisation_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` (its own parameters): re-initialising it never touches ``module``."""
    return copy.deepcopy(module)


def randomisable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the modules holding parameters, last registered first (the randomisation
    order; ``named_modules`` names).  One without ``reset_parameters()`` is an :class:`InputError`."""
    layers = [(name, m) for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]
    for name, m in layers:
        check(
            callable(getattr(m, "reset_parameters", None)),
            f"model: {f'layer {name!r}' if name else 'the top-level module'} ({type(m).__name__}) has parameters "
            "but no reset_parameters(); model_randomisation cannot re-initialise it",
        )
    check(bool(layers), "model: it has no layers with parameters to randomise")
    return layers[::-1]


def reinitialise(layer: nn.Module, seed: int) -> None:
    """``layer.reset_parameters()`` right after ``torch.manual_seed(seed)``; the global torch RNG is restored."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        layer.reset_parameters()


class TorchBackend:
    """Wraps an ``nn.Module`` (NCHW logits) behind the channels-last numpy contract."""

    framework = "torch"

    def __init__(
        self,
        module: nn.Module,
        device: str | torch.device | None = "auto",
        n_classes: int | None = None,
        tile_px: int | None = None,
        name: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.module = _on_device(hookable(module), self.device)  # torch.export: conv layers made hookable
        self.name = name or type(module).__name__
        to_eval(self.module, self.name)  # a bare module handed over in training mode: eval, with a warning
        self.dtype = torch.float32
        self._declared_classes = n_classes  # from outcome_labels: every output must be this wide
        self._n_classes = n_classes if n_classes is not None else cached_class_count(self.module)
        self._tile_px = tile_px
        self.tokens: TokenModel | None = token_model(self.module)  # a vision transformer's token layout
        if self.tokens is not None and tile_px:
            check_tile_size(self.tokens, tile_px, self.name)
        self._warned_layers: set[str] = set()

    # -- helpers ---------------------------------------------------------------
    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return self.model_input(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 model input from a channels-last ``(N, H, W, C)`` batch, in one memory layout.

        Every path (native engine, PAIR engine, predictions) hands the model the same layout, whatever
        strides the engine built ``x`` with, so the conv kernel choice is the same.  On a CPU that layout
        is channels-last (NHWC memory: oneDNN's convolutions ran ResNet-18's fwd+bwd 13 % faster than
        on NCHW-contiguous input, in a plain fwd+bwd loop at batch 8); elsewhere NCHW-contiguous.
        """
        return x.detach().to(torch.float32).permute(0, 3, 1, 2).contiguous(memory_format=input_layout(self.device))

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32, copy=False)

    def _class_index(self, class_idx: np.ndarray, n: int) -> torch.Tensor:
        idx = torch.as_tensor(np.broadcast_to(np.asarray(class_idx, dtype=np.int64), (n,)).copy())
        return idx.to(self.device)

    @property
    def n_classes(self) -> int:
        """Class count: known, else from a probe at the model's tile size (a torch.export program's, else 64)."""
        if self._n_classes is None:
            count = output_count(self.module, self._tile_px, self.name, self.device)
            self._n_classes = cache_class_count(self.module, count)
        return self._n_classes

    def class_count(self, x: np.ndarray | None = None) -> int | None:
        """Class count: known, else learnt from ``x[:1]`` (the real input size); without ``x`` the
        probe of :attr:`n_classes`, ``None`` where that fails (learnt from the first real batch)."""
        if self._n_classes is None and x is not None:
            self.logits(x[:1])
        with contextlib.suppress(InputError):
            return self.n_classes
        return None

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, K)`` outputs, checked; the first real batch sets the class count."""
        out = forward(self.module, inputs, self.name)
        self._n_classes = cache_class_count(self.module, checked_output(out, self.name, self._declared_classes))
        return out

    # -- contract --------------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` raw model outputs."""
        with torch.no_grad():
            return self._forward(self._to_tensor(x)).float().cpu().numpy()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` softmax probabilities in [0, 1]; NaN rows where outputs are not finite."""
        with torch.no_grad():
            out = self._forward(self._to_tensor(x)).float()
            return nan_where_nonfinite(torch.softmax(out, dim=-1).cpu().numpy(), out.cpu().numpy())

    def gradients(self) -> contextlib.AbstractContextManager[None]:
        """A context where gradients flow, whatever the caller's ``no_grad`` / ``inference_mode``."""
        return autograd()

    @autograd()
    def input_gradients(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray:
        """Gradient of each image's class logit w.r.t. the image, ``(N, H, W, C)`` float32."""
        inputs = self._to_tensor(x).requires_grad_(True)
        out = self._forward(inputs)
        idx = self._class_index(class_idx, out.shape[0])
        score = out.gather(1, idx[:, None]).sum()
        (grads,) = torch.autograd.grad(score, inputs)
        return self._to_numpy(grads)

    @property
    def on_accelerator(self) -> bool:
        return self.device.type != "cpu"

    @property
    def ops(self) -> TorchOps:
        return TorchOps(self)

    def activation_bytes(self, shape: tuple[int, int, int]) -> int:
        """Bytes of every module output for one ``(H, W, C)`` sample (float32): a per-sample memory estimate."""
        total = 0

        def count(_m: nn.Module, _i: Any, output: Any) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        sample = torch.zeros((1, shape[2], shape[0], shape[1]), device=self.device)
        sample = sample.contiguous(memory_format=input_layout(sample.device))
        if isinstance(self.module, torch.fx.GraphModule):  # torch.export: most ops are graph nodes, not modules
            with torch.no_grad():
                return _GraphSizes(self.module).bytes(sample)
        leaves = [m for m in self.module.modules() if not list(m.children())]
        if isinstance(self.module, torch.jit.ScriptModule) or not leaves:
            return int(np.prod(shape)) * 4 * 64
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            forward(self.module, sample, self.name, no_grad=True)
        finally:
            for handle in handles:
                handle.remove()
        if self.tokens is not None:  # attention maps, read by the attention methods: heads × T² per block
            total += attention_bytes(self.module, self.tokens, sample, self.name)
        return total

    def free_memory(self) -> int:
        """Free bytes on the device (CUDA: ``mem_get_info``; CPU: MemAvailable)."""
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        from ..batching import available_host_memory

        return available_host_memory()

    def conv_layer_names(self) -> list[str]:
        """Names (``named_modules``) of the model's ``nn.Conv2d`` layers, in order."""
        return [name for name, mod in self.module.named_modules() if isinstance(mod, nn.Conv2d)]

    def gradcam_layer(self, layer: str | None = None) -> str:
        """The name of the layer Grad-CAM uses for ``layer``: ``layer`` itself, or (``None``) the last
        ``nn.Conv2d`` — on a vision transformer the last block's first norm (its attention's input
        tokens); an unknown layer, or a model without one, is the InputError :meth:`conv_gradients` raises."""
        return self._layer(layer)[0]

    def token_prefix(self) -> int | None:
        """The prefix tokens (CLS + registers) a vision transformer's maps drop; ``None`` for other models."""
        return None if self.tokens is None else self.tokens.prefix_tokens

    def _layer(self, layer: str | None) -> tuple[str, nn.Module]:
        if isinstance(self.module, torch.jit.ScriptModule):
            raise InputError(
                "gradcam: a TorchScript model has no forward hooks; save a state dict with its "
                "'architecture' in params.json to use Grad-CAM"
            )
        names = self.conv_layer_names()
        candidates = names if self.tokens is None else [*names, *self.tokens.norms]
        if layer is None:
            check(bool(candidates), "gradcam: the model has no nn.Conv2d layer; pass layer= explicitly")
            layer = candidates[-1]  # a vision transformer: its last block's first norm
        modules = dict(self.module.named_modules())
        tokens = f"; token layers: {', '.join(self.tokens.norms)}" if self.tokens is not None else ""
        check(layer in modules, f"gradcam: layer {layer!r} not found; conv layers: {', '.join(names)}{tokens}")
        if is_patch_embedding(layer, modules[layer], self.tokens) and layer not in self._warned_layers:
            self._warned_layers.add(layer)
            warn_patch_embedding(layer)
        return layer, modules[layer]

    @autograd()
    def conv_gradients(
        self, x: np.ndarray, class_idx: np.ndarray, layer: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Activations of ``layer`` (default: last conv; a ViT's last block's first norm) and the class
        logit's gradients, ``(N, h, w, c)``.  Token outputs ``(N, T, C)`` drop their prefix tokens and lie
        on the patch grid (:func:`~slidegrad.backends.torch_vit.tokens_to_grid`).

        The input requires grad, so the graph reaches the layer when no parameter does (a frozen model).
        """
        name, target = self._layer(layer)
        captured: list[torch.Tensor] = []
        handle = target.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            out = self._forward(self._to_tensor(x).requires_grad_(True))
        finally:
            handle.remove()
        check(bool(captured), f"gradcam: layer {name!r} is not called in the model's forward pass")
        acts = captured[-1]
        check(
            isinstance(acts, torch.Tensor) and acts.ndim in (3, 4),
            f"gradcam: layer {name!r} outputs {type(acts).__name__} of shape {tuple(getattr(acts, 'shape', ()))}; "
            "expected (N, C, h, w) feature maps or (N, T, C) tokens",
        )
        check(acts.requires_grad, f"gradcam: layer {name!r}'s output does not depend on the input (no gradient)")
        idx = self._class_index(class_idx, out.shape[0])
        (grads,) = torch.autograd.grad(out.gather(1, idx[:, None]).sum(), acts)
        if acts.ndim == 4:
            return self._to_numpy(acts), self._to_numpy(grads)
        prefix = self.tokens.prefix_tokens if self.tokens is not None else 1
        grid = self.tokens.grid(tuple(x.shape[1:3])) if self.tokens is not None else None
        acts, grads = (tokens_to_grid(t, prefix, grid, name) for t in (acts, grads))
        return (t.detach().cpu().numpy().astype(np.float32, copy=False) for t in (acts, grads))  # type: ignore[return-value]

    @autograd()
    def attention_maps(
        self, x: torch.Tensor, class_idx: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Every block's attention probabilities ``(N, heads, T, T)`` for a channels-last batch on the
        device, and (with ``class_idx``) the class logit's gradients w.r.t. them; device tensors."""
        check(
            self.tokens is not None,
            f"model '{self.name}': not a vision transformer (no blocks with norm1/layernorm_before and "
            "attn/attention); attention methods need one",
        )
        inputs = self.model_input(x).requires_grad_(class_idx is not None)
        with capture_attention(self.module, self.tokens, self.name) as maps:
            if class_idx is None:
                with torch.no_grad():
                    self._forward(inputs)
                return [m.detach() for m in maps], None
            out = self._forward(inputs)
        grads = torch.autograd.grad(out.gather(1, class_idx[:, None]).sum(), maps)
        return [m.detach() for m in maps], [g.detach() for g in grads]


class _GraphSizes(torch.fx.Interpreter):
    """Runs a ``GraphModule`` node by node, adding up the bytes of every op's tensor output."""

    def bytes(self, *args: torch.Tensor) -> int:
        self.total = 0
        self.run(*args)
        return self.total

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n.op in ("call_function", "call_module", "call_method") and isinstance(out, torch.Tensor):
            self.total += out.numel() * out.element_size()
        return out


class TorchOps:
    """Device-side array operations the native engine is written over (tensors stay on ``device``).

    Arrays are channels-last ``(N, H, W, C)``; see :class:`slidegrad.backends.Ops`.
    """

    inf = float("inf")

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend
        self.device = backend.device

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=getattr(torch, dtype), device=self.device)

    def numpy(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    def grad(self, x: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """d(class logit)/d(input) for a channels-last float32 batch, on the device."""
        inputs = self.backend.model_input(x).requires_grad_(True)
        out = model_logits(self.backend.module(inputs))
        (grads,) = torch.autograd.grad(out.gather(1, class_idx[:, None]).sum(), inputs)
        return grads.permute(0, 2, 3, 1)

    def class_scores(self, x: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """``(B,)`` class logits of a channels-last batch, forward only (no gradient), on the device."""
        with torch.no_grad():
            out = model_logits(self.backend.module(self.backend.model_input(x)))
            return out.gather(1, class_idx[:, None])[:, 0]

    def class_probabilities(self, x: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """``(B,)`` softmax probabilities in [0, 1] of the classes of a channels-last batch, forward only, on the
        device (the model's outputs are logits, as :meth:`TorchBackend.probabilities` takes them)."""
        with torch.no_grad():
            out = model_logits(self.backend.module(self.backend.model_input(x))).float()
            return torch.softmax(out, dim=-1).gather(1, class_idx[:, None])[:, 0]

    def attention(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> AttentionMaps:
        """A vision transformer's attention for a channels-last batch (and its gradients with ``class_idx``)."""
        maps, grads = self.backend.attention_maps(x, class_idx)
        tokens = self.backend.tokens
        t = int(maps[0].shape[-1])
        grid = tokens.grid((int(x.shape[1]), int(x.shape[2])))
        if grid is None:
            side = int(np.sqrt(t - tokens.prefix_tokens))
            grid = (side, side)
        check(
            grid[0] * grid[1] + tokens.prefix_tokens == t,
            f"model '{self.backend.name}': attention over {t} tokens is not {tokens.prefix_tokens} prefix token(s) "
            f"plus the {grid[0]}×{grid[1]} patch grid of a {int(x.shape[1])}×{int(x.shape[2])} input",
        )
        return AttentionMaps(maps, grads, tokens.prefix_tokens, grid)

    @staticmethod
    def reduce(t: torch.Tensor, how: str, axis: int) -> torch.Tensor:
        """``mean``, ``max`` or ``min`` over ``axis``."""
        if how == "mean":
            return t.mean(dim=axis)
        return t.amax(dim=axis) if how == "max" else t.amin(dim=axis)

    def eye(self, n: int, dtype: str = "float32") -> torch.Tensor:
        return torch.eye(n, dtype=getattr(torch, dtype), device=self.device)

    def conv(self, x: torch.Tensor, class_idx: torch.Tensor, layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        acts, grads = self.backend.conv_gradients(self.numpy(x), self.numpy(class_idx), layer)
        return self.tensor(acts), self.tensor(grads)

    @staticmethod
    def cast(t: torch.Tensor, dtype: str) -> torch.Tensor:
        return t.to(getattr(torch, dtype))

    @staticmethod
    def dtype(t: torch.Tensor) -> str:
        return str(t.dtype).removeprefix("torch.")

    @staticmethod
    def where(cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    @staticmethod
    def abs(t: torch.Tensor) -> torch.Tensor:
        return t.abs()

    @staticmethod
    def sum(t: torch.Tensor, axis: Any) -> torch.Tensor:
        return t.sum(dim=axis)

    @staticmethod
    def maximum(t: torch.Tensor, value: float) -> torch.Tensor:
        return t.clamp_min(value)

    @staticmethod
    def any(t: torch.Tensor) -> bool:
        return bool(t.any())

    @staticmethod
    def kth_smallest(t: torch.Tensor, k: int) -> torch.Tensor:
        """Per row of ``(N, D)``: the element of 0-based rank ``k`` (numpy's ``quantile(method='lower')``)."""
        return torch.kthvalue(t, k + 1, dim=1).values

    @staticmethod
    def gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, index)

    @staticmethod
    def segment_sum(t: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """``(n, ...)``: row ``i`` is the sum of the rows of ``t`` whose ``index`` is ``i``.

        On CUDA a one-hot matmul (deterministic, so reruns are byte-identical; ``index_add_`` is
        documented as nondeterministic there); elsewhere ``index_add_`` (sums in row order).
        """
        if t.device.type == "cuda":
            return TorchOps.onehot_segment_sum(t, index, n)
        out = torch.zeros((n, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return out.index_add_(0, index, t)

    @staticmethod
    def onehot_segment_sum(t: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """:meth:`segment_sum` as ``one_hot(index)ᵀ @ t``: no atomics, the same sums on every run."""
        onehot = (index[None, :] == torch.arange(n, device=t.device)[:, None]).to(t.dtype)
        return (onehot @ t.reshape(t.shape[0], -1)).reshape((n, *t.shape[1:]))

    @staticmethod
    def reshape(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return t.reshape(shape)

    @staticmethod
    def concat(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(ts, dim=0)

    @staticmethod
    def zeros_like(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    @staticmethod
    def einsum(spec: str, *ts: torch.Tensor) -> torch.Tensor:
        return torch.einsum(spec, *ts)
