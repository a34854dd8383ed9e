"""``quantize_model``: turn a Keras model's Dense/Conv2D layers into lqs layers.

The model is cloned with ``keras.models.clone_model``; every ``keras.layers.Dense``
becomes a :class:`lqs.layers.QDense` and every ``keras.layers.Conv2D`` a :class:`lqs.layers.QConv2D`
with the same Keras config (name, units/filters, kernel size, strides, dilation, groups,
activation, initializers, regularizers, constraints) plus quantizers, so that the
forward pass uses

.. math::

    W \\mapsto \\lfloor W/s_W \\rfloor s_W, \\qquad
    b \\mapsto \\lfloor b/s_b \\rfloor s_b .

With ``copy_weights=True`` (post-training mode, the thesis's "PTQ" start) the clone
carries the model's float weights; at the initial scale :math:`s = 100\\,\\epsilon_{32}`
each parameter then moves by less than one step :math:`s`, so the outputs stay close to
the float model's. Layers of other classes (``DepthwiseConv2D``, ``Conv1D``,
``EinsumDense``, subclasses of Dense/Conv2D such as the lqs layers themselves, ...) are
cloned unchanged and reported. This is what QKeras's ``model_quantize`` and TF-MOT's
``quantize_model`` offer for their own quantizers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras

from lqs.layers import QConv2D, QDense
from lqs.protocol import is_quantized_layer
from lqs.quantizers import GRANULARITIES, NestedQuantizer

__all__ = ["QUANTIZE_OPTIONS", "QuantizeReport", "quantize_model"]

#: the per-layer options of :func:`quantize_model` (keyword arguments of the lqs layers)
QUANTIZE_OPTIONS: tuple[str, ...] = (
    "kernel_quantizer",
    "bias_quantizer",
    "kernel_granularity",
    "bias_granularity",
    "threshold",
    "scale_gradient",
)
#: Keras class -> the lqs layer replacing it (exact classes: subclasses stay as is)
_REPLACEMENTS: dict[type, type] = {
    keras.layers.Dense: QDense,
    keras.layers.Conv2D: QConv2D,
}
#: a dense kernel (in, out) has no channel/filter axis: the model-wide setting maps to
#: its analogue (per input feature, per output unit)
_DENSE_ANALOGUE = {"channel": "row", "filter": "column"}
_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_EXCLUDED = "excluded by the layers option"
_NORM = "normalization layer"

LayerOptions = Mapping[str | type, Mapping[str, Any] | None]
LayerCallable = Callable[[keras.layers.Layer], Mapping[str, Any] | None]


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_model` did, layer by layer (by layer name).

    Attributes:
        quantized: replaced layers, name -> new class name (``"QDense"``/``"QConv2D"``).
        left_float: layers with weights that stay float32, name -> reason.
        already_quantized: layers that implement the quantized-layer protocol already
            (cloned as they are).
    """

    quantized: dict[str, str] = field(default_factory=dict)
    left_float: dict[str, str] = field(default_factory=dict)
    already_quantized: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"quantized: {', '.join(self.quantized) or '-'}"]
        lines += [f"float: {name} ({why})" for name, why in self.left_float.items()]
        return "\n".join(lines)


# ------------------------------------------------------------------------ validation


def _clonable(model) -> bool:
    from keras.src.models.functional import Functional  # no public name for the class

    return isinstance(model, (keras.Sequential, Functional))


def _all_layers(model: keras.Model) -> list:
    """Every leaf layer of ``model``, nested Sequential/functional models entered."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and _clonable(layer):
            out.extend(_all_layers(layer))
        else:
            out.append(layer)
    return out


def _check_options(options, where: str) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ValueError(
            f"{where} must be a dict of quantizer options or None, got {options!r}; "
            "fix: e.g. {'kernel_granularity': 'column'}"
        )
    unknown = sorted(set(options) - set(QUANTIZE_OPTIONS))
    if unknown:
        raise ValueError(
            f"{where} has unknown option(s) {unknown}; "
            f"allowed: {', '.join(QUANTIZE_OPTIONS)}"
        )
    return dict(options)


def _check_layer_key(key, options, by_name: dict, model_name: str) -> None:
    allowed = "keras.layers.Dense, keras.layers.Conv2D"
    if isinstance(key, type):
        if key not in _REPLACEMENTS:
            raise ValueError(
                f"layers keys must be layer names or {allowed}, got {key.__name__}; "
                "fix: quantize_model replaces only these two classes"
            )
    elif isinstance(key, str):
        if key not in by_name:
            raise ValueError(
                f"layers names {key!r}, which is not a layer of model {model_name!r}; "
                f"allowed: {', '.join(map(repr, by_name))}"
            )
        kind = type(by_name[key])
        if options is not None and kind not in _REPLACEMENTS:
            raise ValueError(
                f"layers[{key!r}] asks to quantize a {kind.__name__}; allowed: layers "
                f"of class {allowed}; fix: drop {key!r} from layers"
            )
    else:
        raise ValueError(
            f"layers keys must be layer names or classes, got {key!r}; "
            f"fix: use a name (str) or {allowed}"
        )
    if options is not None:
        _check_options(options, f"layers[{key!r}]")


def _check_model(model, copy_weights) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"model must be a keras.Model, got {type(model).__name__}; "
            "fix: pass a Sequential or functional model"
        )
    if not _clonable(model):
        raise ValueError(
            "model must be a Sequential or functional keras.Model, got the subclassed "
            f"{type(model).__name__}; fix: subclassed models cannot be cloned"
        )
    if not isinstance(copy_weights, bool):
        raise ValueError(f"copy_weights must be True or False, got {copy_weights!r}")
    if copy_weights and not model.built:
        raise ValueError(
            f"model {model.name!r} is not built, so it has no weights to copy; "
            "fix: build it (keras.Input or model.build) or pass copy_weights=False"
        )


def _check_arguments(model, options: dict[str, Any], layers, copy_weights) -> None:
    _check_model(model, copy_weights)
    granularity = options.get("kernel_granularity")
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(
            f"kernel_granularity must be one of {', '.join(map(repr, GRANULARITIES))}, "
            f"got {granularity!r}; fix: pick one of them"
        )
    # checks the other options (errors name the argument); a name: no auto-name taken
    QConv2D(1, 1, **options, name="lqs_quantize_model_check")
    if isinstance(layers, Mapping):
        by_name = {layer.name: layer for layer in _all_layers(model)}
        for key, own in layers.items():
            _check_layer_key(key, own, by_name, model.name)
    elif layers is not None and not callable(layers):
        raise ValueError(
            "layers must be None, a dict (layer name or class -> options or None) or "
            f"a callable (layer -> options or None), got {layers!r}"
        )


# ------------------------------------------------------------------------ cloning


def _granularity_of(spec) -> str | None:
    """The granularity a quantizer instance or config dict carries (None: an alias)."""
    if isinstance(spec, NestedQuantizer):
        return spec.granularity
    if isinstance(spec, Mapping):
        return spec.get("config", spec).get("granularity")
    return None


def _options_for(layer, options: dict[str, Any], layers) -> dict[str, Any] | None:
    """The QDense/QConv2D options of ``layer`` (None: leave it float)."""
    if isinstance(layers, Mapping):
        own = layers.get(layer.name, layers.get(type(layer), {}))
    elif layers is not None:
        own = layers(layer)
        if own is not None:
            own = _check_options(own, f"layers({layer.name!r})")
    else:
        own = {}
    if own is None:
        return None
    merged = {**options, **own}
    if merged.get("kernel_quantizer") is None:
        merged["kernel_quantizer"] = "nested"
    if type(layer) is keras.layers.Dense and own.get("kernel_granularity") is None:
        granularity = merged.get("kernel_granularity") or _granularity_of(
            merged["kernel_quantizer"]
        )
        if granularity in _DENSE_ANALOGUE:
            merged["kernel_granularity"] = _DENSE_ANALOGUE[granularity]
    return {k: v for k, v in merged.items() if v is not None or k == "bias_quantizer"}


def _float_reason(layer, excluded: bool) -> str:
    if excluded:
        return _EXCLUDED
    if isinstance(layer, _NORMALIZATION):
        return _NORM
    if type(layer) in _REPLACEMENTS:
        return f"Keras quantization mode {layer.quantization_mode!r}"
    return f"{type(layer).__name__} is not quantized (only Dense and Conv2D are)"


def _clone(model, options, layers):
    """The clone, the ``(new, old)`` layer pairs and the report."""
    pairs: list[tuple[Any, Any]] = []
    quantized: dict[str, str] = {}
    left_float: dict[str, str] = {}
    already: list[str] = []

    def clone_function(layer):
        new = None
        candidate = type(layer) in _REPLACEMENTS and layer.quantization_mode is None
        if candidate:
            own = _options_for(layer, options, layers)
            if own is not None:
                config = {**layer.get_config(), **own}
                new = _REPLACEMENTS[type(layer)].from_config(config)
                quantized[layer.name] = type(new).__name__
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
            if is_quantized_layer(layer):
                already.append(layer.name)
            elif getattr(layer, "weights", None):  # operations (x * 2) have none
                left_float[layer.name] = _float_reason(layer, candidate)
        pairs.append((new, layer))
        return new

    clone = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True
    )
    if model.built and not clone.built:
        clone.build(model.input_shape)
    return clone, pairs, QuantizeReport(quantized, left_float, tuple(already))


def _copy_weights(pairs: list[tuple[Any, Any]]) -> None:
    """Copy the weights old -> new; replaced layers get their kernel and bias."""
    for new, old in pairs:
        if isinstance(new, (QDense, QConv2D)) and type(old) in _REPLACEMENTS:
            new.kernel.assign(old.kernel)
            if old.bias is not None:
                new.bias.assign(old.bias)
            for param in ("kernel", "bias"):  # init_bits: scales from copied weights
                quantizer = getattr(new, f"{param}_quantizer")
                if quantizer is not None and quantizer.init_bits is not None:
                    quantizer.init_from(getattr(new, param))
        elif getattr(old, "weights", None):
            new.set_weights(old.get_weights())


def quantize_model(
    model: keras.Model,
    *,
    kernel_quantizer=None,
    bias_quantizer="nested",
    kernel_granularity: str | None = None,
    bias_granularity: str | None = None,
    threshold: float | None = None,
    scale_gradient: str | None = None,
    layers: LayerOptions | LayerCallable | None = None,
    copy_weights: bool = True,
    return_report: bool = False,
):
    """Clone ``model`` with its ``Dense``/``Conv2D`` layers replaced by lqs layers.

    Each ``keras.layers.Dense`` (``Conv2D``; exact class) becomes a :class:`lqs.layers.QDense`
    (:class:`lqs.layers.QConv2D`) with the same Keras config and quantizers: forward
    :math:`\\lfloor W/s \\rfloor s` with learned scales (:mod:`lqs.layers`). Other
    layers are cloned unchanged; those holding weights stay float32 and are listed in
    the report and in a ``UserWarning`` (except normalization layers and the layers you
    excluded). The clone is not compiled (like ``keras.models.clone_model``); nested
    Sequential/functional models are entered and shared layers stay shared.

    Example::

        float_model = keras.applications.ResNet50(weights=None, classes=10)
        qmodel, report = lqs.quantize_model(
            float_model,
            kernel_granularity="filter",  # per output channel (Dense: per output unit)
            layers={"predictions": {"threshold": 1e-6}, "conv1_conv": None},
            return_report=True,
        )
        qmodel.compile("adam", "categorical_crossentropy")
        print(report)

    Arguments:
        model: a built Sequential or functional ``keras.Model``.
        kernel_quantizer: the kernels' quantizer: ``None``/``"nested"`` (default),
            ``"ste"``, a :class:`lqs.quantizers.NestedQuantizer` (a template) or its
            config dict.
        bias_quantizer: the biases' quantizer, as ``kernel_quantizer`` (default
            ``"nested"``), or ``None`` to keep biases float32.
        kernel_granularity: kernel scale granularity (default ``"scalar"``). A Dense
            layer gets the dense analogue of ``"channel"`` (``"row"``) and ``"filter"``
            (``"column"``, per output unit) unless its own options set one.
        bias_granularity: ``"scalar"`` (default) or ``"row"``.
        threshold: :math:`\\lambda` of the scale-gradient vote (default 1e-9).
        scale_gradient: ``"threshold"`` (default) or ``"ste"`` for every quantizer.
        layers: per-layer options over the ones above. A dict mapping a layer name, or
            the class ``keras.layers.Dense``/``keras.layers.Conv2D``, to a dict of
            :data:`QUANTIZE_OPTIONS` (a name wins over a class) or to ``None`` (leave
            that layer float); or a callable ``layer -> dict | None`` called for every
            Dense/Conv2D. The shorthand options apply on top of a quantizer instance.
        copy_weights: True (default, post-training mode): every layer of the clone gets
            the model's weights (quantized layers their float kernel and bias; scales
            start at their initial value, or from the copied weights with
            ``init_bits``). False: the clone is freshly initialised (from scratch).
        return_report: also return a :class:`QuantizeReport`.

    Returns:
        The clone, or ``(clone, report)`` with ``return_report=True``.

    Raises:
        ValueError: ``model`` not a Sequential/functional ``keras.Model`` (or not built
            with ``copy_weights``), an unknown layer name/class or option in
            ``layers``, a bad granularity/threshold/quantizer (the message names the
            argument).
    """
    options = {
        "kernel_quantizer": kernel_quantizer,
        "bias_quantizer": bias_quantizer,
        "kernel_granularity": kernel_granularity,
        "bias_granularity": bias_granularity,
        "threshold": threshold,
        "scale_gradient": scale_gradient,
    }
    options = {
        k: v for k, v in options.items() if v is not None or k == "bias_quantizer"
    }
    _check_arguments(model, options, layers, copy_weights)
    clone, pairs, report = _clone(model, options, layers)
    if copy_weights:
        _copy_weights(pairs)
    noisy = [
        f"{name!r} ({why})"
        for name, why in report.left_float.items()
        if why not in (_EXCLUDED, _NORM)
    ]
    if noisy:
        listed = ", ".join(noisy)
        message = f"quantize_model left these layers float32: {listed}"
        warnings.warn(message, stacklevel=2)
    return (clone, report) if return_report else clone
