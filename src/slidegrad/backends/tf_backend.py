"""TensorFlow / Keras implementation of the :class:`~slidegrad.backends.Backend` contract, and model loading.

Models are channels-last.  The class score is the model's output for the class
(logits, or probabilities where the last layer applies a softmax — as
Slideflow's TF models do); only the explained class is differentiated, never
the sum of all outputs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ..errors import InputError, check, first_line  # noqa: E402
from ..model_files import KERAS_FILE, SAVED_MODEL_FILE  # noqa: E402
from .common import cache_class_count, cached_class_count, checked_output, nan_where_nonfinite  # noqa: E402

SHORT = 200  # characters of a framework's error message kept in ours


def _keras_for(model: Any):
    """The Keras package a model belongs to: Keras 3 or legacy ``tf_keras``."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


class _SignatureModel:
    """A SavedModel without Keras layers, called through its serving signature (no Grad-CAM)."""

    def __init__(self, loaded: Any, path: Path) -> None:
        self.loaded = loaded
        self.signature = loaded.signatures["serving_default"]
        inputs = self.signature.structured_input_signature[1]
        check(len(inputs) == 1, f"model '{path}': serving signature takes {len(inputs)} inputs; expected one image")
        self.input_name, spec = next(iter(inputs.items()))
        self.input_shape = tuple(spec.shape)
        self.layers: list[Any] = []

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        outputs = self.signature(**{self.input_name: x})
        return next(iter(outputs.values()))


def load_module(path: Path, params: dict[str, Any], allow_code: bool = False) -> tuple[Any, list[Path]]:
    """Load a ``.keras`` file, a directory holding ``model.keras``, or a SavedModel directory.

    Keras loads in safe mode (``safe_mode=True``): a ``Lambda`` layer's Python bytecode is refused with one
    line unless ``allow_code`` (then ``safe_mode=False`` runs it).  Keras 3 imports classes only from
    Keras's own packages; custom layers must be registered by code the caller imported."""
    keras_file = path / KERAS_FILE if path.is_dir() else path
    if keras_file.suffix == ".keras" and keras_file.exists():
        import keras

        try:
            return keras.saving.load_model(keras_file, compile=False, safe_mode=not allow_code), [keras_file]
        except Exception as err:  # noqa: BLE001 - Keras raises many types for bad files
            _refuse_lambda(err, keras_file, allow_code)
            raise InputError(f"model '{keras_file}': not a readable .keras file ({first_line(err, SHORT)})") from None
    check(
        path.is_dir() and (path / SAVED_MODEL_FILE).exists(),
        f"model '{path}': expected a .keras file or a SavedModel directory ({SAVED_MODEL_FILE})",
    )
    files = [path / SAVED_MODEL_FILE, path / "variables"]
    import tf_keras
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(not allow_code):  # tf_keras's SavedModel loader leaves safe mode unset (= off)
            model = tf_keras.models.load_model(path, compile=False)
        if isinstance(model, tf_keras.Model):
            return model, files
    except Exception as err:  # noqa: BLE001 - not a Keras SavedModel: fall back to its signature
        _refuse_lambda(err, path, allow_code)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"model '{path}': not a readable SavedModel ({first_line(err, SHORT)})") from None
    check(
        "serving_default" in loaded.signatures,
        f"model '{path}': SavedModel has no serving signature ('serving_default'); "
        "export it with signatures or save it as a .keras file",
    )
    return _SignatureModel(loaded, path), files


def _refuse_lambda(err: Exception, file: Path, allow_code: bool) -> None:
    """One InputError line where Keras refused a ``Lambda`` layer's Python code in safe mode."""
    if not allow_code and "Lambda" in str(err) and "safe_mode" in str(err):
        raise InputError(
            f"model '{file}': a Keras Lambda layer holds Python code (bytecode in the file); loading it runs that "
            "code, so it needs allow_code=True (config: model.allow_code: true) — only for a model you trust; "
            "Keras loads with safe_mode=True otherwise"
        ) from None


def output_count(model: Any, tile_px: int | None, where: str) -> int:
    """Number of classes; checks the input size against ``tile_px`` and the output is ``(N, classes)``."""
    return checked_output(_probe(model, tile_px, where), where)


def probe_outputs(model: Any, tile_px: int | None, where: str) -> np.ndarray:
    """The ``(1, classes)`` outputs of :func:`output_count`'s probe (an all-zero tile), checked, as numpy."""
    out = _probe(model, tile_px, where)
    checked_output(out, where)
    return np.asarray(out, dtype=np.float32)


def _probe(model: Any, tile_px: int | None, where: str) -> Any:
    input_shape = tuple(getattr(model, "input_shape", None) or ())
    if len(input_shape) == 4 and tile_px is not None:
        height, width = input_shape[1], input_shape[2]
        check(
            height in (None, tile_px) and width in (None, tile_px),
            f"model '{where}': expects {height}×{width} inputs but tile_px is {tile_px}",
        )
    size = tile_px or (input_shape[1] if len(input_shape) == 4 and input_shape[1] else 64)
    return forward(model, tf.zeros((1, size, size, 3)), where)


def forward(model: Any, x: tf.Tensor, where: str) -> Any:
    """``model(x)`` for an ``(N, H, W, 3)`` batch; an error in the model is one line naming it and the size."""
    try:
        return model(x, training=False)
    except tf.errors.ResourceExhaustedError:
        raise
    except Exception as err:  # noqa: BLE001 - any error from the model's code
        size = f"{x.shape[1]}×{x.shape[2]}"
        raise InputError(f"model '{where}': fails on {size} px inputs ({first_line(err, SHORT)})") from None


def resolve_device(device: str | None) -> str:
    """TensorFlow's name of a device: ``auto`` → the first GPU TensorFlow sees, else CPU; ``cuda`` →
    the first GPU, ``cuda:N`` → GPU N (``/device:GPU:N``, counted within ``CUDA_VISIBLE_DEVICES``);
    a GPU TensorFlow does not see is an error; anything else is the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    if device in (None, "auto"):
        return gpus[0].name if gpus else "/CPU:0"
    text = str(device)
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        check(index == "" or index.isdigit(), f"device: {text!r} is not 'cuda' or 'cuda:N'")
        check(bool(gpus), f"device: '{text}' was asked for but TensorFlow sees no GPU")
        number = int(index or 0)
        check(
            number < len(gpus),
            f"device: '{text}' was asked for but TensorFlow sees {len(gpus)} GPU(s): cuda:0 to cuda:{len(gpus) - 1}",
        )
        return gpus[number].name
    return "/CPU:0"


def sees_gpu() -> bool:
    """Whether TensorFlow sees a GPU in this process."""
    return bool(tf.config.list_physical_devices("GPU"))


def set_threads(threads: int) -> None:
    """Pin TensorFlow's intra- and inter-op CPU thread pools (before it initialises them)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def load(
    path: Path,
    params: dict[str, Any],
    allow_code: bool = False,
    architecture_from: Any = None,
    transformers_type: str | None = None,
) -> tuple[Any, list[Path]]:
    """A Keras model path (:func:`load_module`); ``architecture_from`` and ``transformers_type`` are PyTorch's."""
    return load_module(path, params, allow_code=allow_code)


def make_backend(model: Any, device: str = "auto", **known: Any) -> TensorFlowBackend:
    """``model`` behind the backend contract (``known``: ``n_classes``, ``tile_px``, ``name``)."""
    return TensorFlowBackend(model, device=device, **known)


# -- model randomisation (slidegrad.evaluate.sanity) ---------------------------------
_INITIALISER_ALIASES = {"kernel": ("kernel_initializer", "depthwise_initializer")}  # DepthwiseConv2D's kernel


def randomisation_copy(model: Any) -> Any:
    """A copy of a Keras model with its own weights (``clone_model`` + ``set_weights``): re-initialising
    it never touches ``model``.  A model without Keras layers, or one Keras cannot clone, is refused."""
    check(
        not isinstance(model, _SignatureModel),
        "model: this SavedModel has no Keras layers (loaded by its serving signature); model_randomisation "
        "needs a Keras model (save it as a .keras file)",
    )
    keras = _keras_for(model)
    check(
        isinstance(model, keras.Model),
        f"model: model_randomisation needs a keras.Model, got {type(model).__name__}",
    )
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as err:  # noqa: BLE001 - Keras raises many types for models it cannot clone
        raise InputError(
            f"model: cannot copy {type(model).__name__} for model_randomisation "
            f"(keras.models.clone_model: {first_line(err, SHORT)})"
        ) from None
    return clone


def _sublayers(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)  # Keras 3 and tf_keras: direct sublayers
    if callable(flatten):
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def _own_weights(layer: Any) -> list[Any]:
    """The variables ``layer`` itself holds (not through a sublayer)."""
    nested = {id(w) for sub in _sublayers(layer) for w in sub.weights}
    return [w for w in layer.weights if id(w) not in nested]


def _weight_name(variable: Any) -> str:
    """``kernel`` for Keras 3's ``kernel`` and tf_keras's ``conv0/kernel:0``."""
    return str(variable.name).rsplit("/", 1)[-1].split(":")[0]


def randomisable_layers(model: Any) -> list[tuple[str, Any]]:
    """``(name, layer)`` of the layers holding weights, last first (the randomisation order).

    Nested models and layers are flattened depth-first (a layer before its sublayers, as torch's
    ``named_modules``; then reversed); a nested layer's name is its path, ``outer/inner``.  Each
    weight must have the layer's initialiser (``<weight>_initializer``, e.g. ``kernel_initializer``,
    BatchNorm's ``moving_variance_initializer``); a layer with one that has none is an :class:`InputError`.
    """
    layers: list[tuple[str, Any]] = []

    def visit(layer: Any, prefix: str) -> None:
        for sub in _sublayers(layer):
            name = f"{prefix}{sub.name}"
            if _own_weights(sub):
                layers.append((name, sub))
            visit(sub, f"{name}/")

    visit(model, "")
    for name, layer in layers:
        for variable in _own_weights(layer):
            _initialiser(layer, variable, name)
    check(bool(layers), "model: it has no layers with weights to randomise")
    return layers[::-1]


def _initialiser(layer: Any, variable: Any, name: str) -> Any:
    weight = _weight_name(variable)
    for attr in _INITIALISER_ALIASES.get(weight, (f"{weight}_initializer",)):
        init = getattr(layer, attr, None)
        if callable(init):
            return init
    raise InputError(
        f"model: layer {name!r} ({type(layer).__name__}) has weight {weight!r} but no {weight}_initializer; "
        "model_randomisation cannot re-initialise it"
    )


def reinitialise(layer: Any, seed: int) -> None:
    """Draw ``layer``'s own weights afresh from its initialisers, each seeded from ``seed`` (and the
    weight's index in the layer): deterministic, and no global random state changes."""
    for index, variable in enumerate(_own_weights(layer)):
        init = _initialiser(layer, variable, layer.name)
        config = init.get_config() if callable(getattr(init, "get_config", None)) else {}
        if "seed" in config:  # a random initialiser: a seeded twin of it
            config["seed"] = int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)
            init = type(init).from_config(config)
        variable.assign(tf.cast(init(tuple(variable.shape), dtype=variable.dtype), variable.dtype))


class TensorFlowBackend:
    """Wraps a Keras model (channels-last) behind the backend contract."""

    framework = "tensorflow"

    def __init__(
        self,
        model: Any,
        device: str | None = "auto",
        n_classes: int | None = None,
        tile_px: int | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.name = name or type(model).__name__
        self.device = resolve_device(device)
        self._declared_classes = n_classes  # from outcome_labels: every output must be this wide
        self._n_classes = n_classes if n_classes is not None else cached_class_count(self.model)
        self._tile_px = tile_px
        self._grad_models: dict[str, Any] = {}
        last = model.layers[-1] if getattr(model, "layers", None) else None
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        self.outputs_probabilities = activation == "softmax"

    @property
    def n_classes(self) -> int:
        """Class count: known, else from a probe at the model's input size (or ``tile_px``, else 64)."""
        if self._n_classes is None:
            self._n_classes = cache_class_count(self.model, output_count(self.model, self._tile_px, self.name))
        return self._n_classes

    def class_count(self, x: np.ndarray | None = None) -> int | None:
        """Class count: known, else learnt from ``x[:1]`` (the real input size); without ``x`` the
        probe of :attr:`n_classes`, ``None`` where that fails."""
        if self._n_classes is None and x is not None:
            self.logits(x[:1])
        with contextlib.suppress(InputError):
            return self.n_classes
        return None

    def gradients(self) -> contextlib.AbstractContextManager[None]:
        """Gradient tapes record whatever the caller does: nothing to switch on."""
        return contextlib.nullcontext()

    def _forward(self, inputs: tf.Tensor, model: Any = None) -> Any:
        """``(N, H, W, C)`` → the model's outputs, checked (the last one for a Grad-CAM model's
        ``[activations, outputs]``); the first real batch sets the class count."""
        out = forward(model or self.model, inputs, self.name)
        count = checked_output(out[-1] if model is not None else out, self.name, self._declared_classes)
        self._n_classes = cache_class_count(self.model, count)
        return out

    def _scores(self, out: tf.Tensor, class_idx: np.ndarray) -> tf.Tensor:
        idx = tf.constant(np.broadcast_to(np.asarray(class_idx, np.int64), (out.shape[0],)).copy())
        return tf.reduce_sum(tf.gather(out, idx, axis=1, batch_dims=1))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` raw model outputs."""
        with tf.device(self.device):
            return self._forward(tf.constant(x, tf.float32)).numpy()

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` → ``(N, K)`` probabilities in [0, 1]; NaN rows where the outputs are not finite."""
        out = self.logits(x)
        if self.outputs_probabilities:
            return nan_where_nonfinite(out.copy(), out)
        with np.errstate(invalid="ignore", over="ignore"):
            shifted = np.exp(out - out.max(axis=1, keepdims=True))
            return nan_where_nonfinite(shifted / shifted.sum(axis=1, keepdims=True), out)

    def input_gradients(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray:
        """Gradient of each image's class score w.r.t. the image, ``(N, H, W, C)`` float32."""
        with tf.device(self.device):
            inputs = tf.constant(x, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                score = self._scores(self._forward(inputs), class_idx)
            return tape.gradient(score, inputs).numpy()

    @property
    def on_accelerator(self) -> bool:
        return "GPU" in self.device

    @property
    def ops(self) -> TensorFlowOps:
        return TensorFlowOps(self)

    def activation_bytes(self, shape: tuple[int, int, int]) -> int:
        """Bytes of every layer output for one ``(H, W, C)`` sample (float32): a per-sample memory estimate."""
        total = 0
        for layer in getattr(self.model, "layers", []):
            try:
                dims = layer.output.shape[1:]
            except (AttributeError, ValueError):
                continue
            if len(dims) == 3 and dims[0] is None:  # unknown spatial size: assume the input's
                dims = (shape[0], shape[1], dims[2])
            total += int(np.prod([d for d in dims if d is not None]) * 4)
        return total or int(np.prod(shape)) * 4 * 64

    def free_memory(self) -> int:
        """Free bytes where the model runs (host memory on CPU; on a GPU the device limit minus current use)."""
        from ..batching import available_host_memory

        if "GPU" not in self.device:
            return available_host_memory()
        name = self.device.split("device:")[-1]  # "GPU:1"
        info = tf.config.experimental.get_memory_info(name)
        physical = tf.config.list_physical_devices("GPU")
        index = int(name.rpartition(":")[2]) if name.rpartition(":")[2].isdigit() else 0
        details = tf.config.experimental.get_device_details(physical[index if index < len(physical) else 0])
        total = details.get("memory_limit", 8 << 30)
        return max(int(total) - int(info["current"]), 1 << 28)

    def conv_layer_names(self) -> list[str]:
        """Layers with a 4-D output (N, h, w, c), in order: the Grad-CAM candidates."""
        return [name for name, rank in self._output_ranks() if rank == 4]

    def _output_ranks(self) -> list[tuple[str, int]]:
        """``(name, rank of its output)`` of every layer but the input, in order."""
        ranks = []
        for layer in getattr(self.model, "layers", []):
            if type(layer).__name__ == "InputLayer":
                continue
            try:
                ranks.append((layer.name, len(layer.output.shape)))
            except (AttributeError, ValueError, TypeError):
                continue
        return ranks

    def token_prefix(self) -> int | None:
        """Keras vision transformers are not read as such (see :meth:`gradcam_layer`): always ``None``."""
        return None

    def gradcam_layer(self, layer: str | None = None) -> str:
        """The name of the layer Grad-CAM uses for ``layer``: ``layer`` itself, or (``None``) the last
        layer with a 4-D output; an unknown layer, or a model without one, is the InputError
        :meth:`conv_gradients` raises."""
        if isinstance(self.model, _SignatureModel):
            raise InputError("gradcam: this SavedModel has no Keras layers (loaded by signature); save it with Keras")
        names = self.conv_layer_names()
        if layer is None:
            check(bool(names), "gradcam: the model has no layer with a 4-D output; pass layer= explicitly")
            ranks = self._output_ranks()
            after = [name for name, rank in ranks[[n for n, _ in ranks].index(names[-1]) + 1 :] if rank == 3]
            if after:
                raise InputError(
                    f"gradcam: the last 4-D layer {names[-1]!r} is followed by token layers (N, T, C) such as "
                    f"{after[0]!r} (a vision transformer?); slidegrad reads token grids of PyTorch models only, "
                    f"so Keras transformers get no default layer: pass layer= to use {names[-1]!r} anyway"
                )
            return names[-1]
        check(layer in names, f"gradcam: layer {layer!r} not found; layers with 4-D outputs: {', '.join(names)}")
        return layer

    def _grad_model(self, layer: str | None) -> Any:
        layer = self.gradcam_layer(layer)
        if layer not in self._grad_models:
            keras = _keras_for(self.model)
            target = self.model.get_layer(layer).output
            # model.output: a list for a model with several outputs, which _forward refuses
            self._grad_models[layer] = keras.Model(self.model.inputs, [target, self.model.output])
        return self._grad_models[layer]

    def conv_gradients(
        self, x: np.ndarray, class_idx: np.ndarray, layer: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Activations of ``layer`` (default: last 4-D layer) and the class score's gradients, ``(N, h, w, c)``.

        The tape watches the input, so it records the layer when no weight is trainable (a frozen model).
        """
        grad_model = self._grad_model(layer)
        with tf.device(self.device):
            inputs = tf.constant(x, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                acts, out = self._forward(inputs, grad_model)
                score = self._scores(out, class_idx)
            grads = tape.gradient(score, acts)
        return acts.numpy(), grads.numpy()


class TensorFlowOps:
    """Device-side array operations the native engine is written over (see :class:`slidegrad.backends.Ops`)."""

    inf = float("inf")

    def __init__(self, backend: TensorFlowBackend) -> None:
        self.backend = backend

    def tensor(self, x: np.ndarray, dtype: str = "float32") -> tf.Tensor:
        with tf.device(self.backend.device):
            return tf.constant(np.asarray(x), dtype=getattr(tf, dtype))

    @staticmethod
    def numpy(t: tf.Tensor) -> np.ndarray:
        return t.numpy()

    def grad(self, x: tf.Tensor, class_idx: tf.Tensor) -> tf.Tensor:
        """d(class score)/d(input) for a channels-last batch, on the device."""
        with tf.device(self.backend.device):
            inputs = tf.cast(x, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = self.backend.model(inputs, training=False)
                score = tf.reduce_sum(tf.gather(out, tf.cast(class_idx, tf.int32), axis=1, batch_dims=1))
            return tape.gradient(score, inputs)

    def class_scores(self, x: tf.Tensor, class_idx: tf.Tensor) -> tf.Tensor:
        """``(B,)`` class scores of a channels-last batch, forward only (no tape), on the device."""
        with tf.device(self.backend.device):
            out = self.backend.model(tf.cast(x, tf.float32), training=False)
            return tf.gather(out, tf.cast(class_idx, tf.int32), axis=1, batch_dims=1)

    def class_probabilities(self, x: tf.Tensor, class_idx: tf.Tensor) -> tf.Tensor:
        """``(B,)`` probabilities in [0, 1] of the classes of a channels-last batch, forward only, on the device:
        the outputs themselves where the last layer is a softmax, else their softmax (as
        :meth:`TensorFlowBackend.probabilities`)."""
        with tf.device(self.backend.device):
            out = tf.cast(self.backend.model(tf.cast(x, tf.float32), training=False), tf.float32)
            probs = out if self.backend.outputs_probabilities else tf.nn.softmax(out, axis=-1)
            return tf.gather(probs, tf.cast(class_idx, tf.int32), axis=1, batch_dims=1)

    def conv(self, x: tf.Tensor, class_idx: tf.Tensor, layer: str | None) -> tuple[tf.Tensor, tf.Tensor]:
        acts, grads = self.backend.conv_gradients(x.numpy(), class_idx.numpy(), layer)
        return self.tensor(acts), self.tensor(grads)

    @staticmethod
    def cast(t: tf.Tensor, dtype: str) -> tf.Tensor:
        return tf.cast(t, getattr(tf, dtype))

    @staticmethod
    def dtype(t: tf.Tensor) -> str:
        return t.dtype.name

    @staticmethod
    def where(cond: tf.Tensor, a: Any, b: Any) -> tf.Tensor:
        dtype = next((v.dtype for v in (a, b) if isinstance(v, tf.Tensor)), tf.float32)
        a = a if isinstance(a, tf.Tensor) else tf.constant(a, dtype)
        b = b if isinstance(b, tf.Tensor) else tf.constant(b, dtype)
        return tf.where(cond, a, b)

    @staticmethod
    def abs(t: tf.Tensor) -> tf.Tensor:
        return tf.abs(t)

    @staticmethod
    def sum(t: tf.Tensor, axis: Any) -> tf.Tensor:
        return tf.reduce_sum(t, axis=axis)

    @staticmethod
    def maximum(t: tf.Tensor, value: float) -> tf.Tensor:
        return tf.maximum(t, tf.constant(value, t.dtype))

    @staticmethod
    def any(t: tf.Tensor) -> bool:
        return bool(tf.reduce_any(t))

    @staticmethod
    def kth_smallest(t: tf.Tensor, k: int) -> tf.Tensor:
        """Per row of ``(N, D)``: the element of 0-based rank ``k`` (numpy's ``quantile(method='lower')``)."""
        return tf.sort(t, axis=1)[:, k]

    @staticmethod
    def gather(t: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        return tf.gather(t, index)

    @staticmethod
    def segment_sum(t: tf.Tensor, index: tf.Tensor, n: int) -> tf.Tensor:
        return tf.math.unsorted_segment_sum(t, tf.cast(index, tf.int32), n)

    @staticmethod
    def reshape(t: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
        return tf.reshape(t, shape)

    @staticmethod
    def concat(ts: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(ts, axis=0)

    @staticmethod
    def zeros_like(t: tf.Tensor) -> tf.Tensor:
        return tf.zeros_like(t)

    @staticmethod
    def einsum(spec: str, *ts: tf.Tensor) -> tf.Tensor:
        return tf.einsum(spec, *ts)

    @staticmethod
    def reduce(t: tf.Tensor, how: str, axis: int) -> tf.Tensor:
        return {"mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min}[how](t, axis=axis)

    def eye(self, n: int, dtype: str = "float32") -> tf.Tensor:
        with tf.device(self.backend.device):
            return tf.eye(n, dtype=getattr(tf, dtype))

    def attention(self, x: tf.Tensor, class_idx: tf.Tensor | None) -> Any:
        raise InputError(
            f"model '{self.backend.name}': attention methods read a vision transformer's attention in PyTorch "
            "models only (timm layout or transformers); this is a TensorFlow/Keras model"
        )
