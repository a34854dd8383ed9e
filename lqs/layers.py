"""Quantized Keras 3 layers: ``QDense`` and ``QConv2D``, with a quantizer per parameter.

``QDense`` subclasses ``keras.layers.Dense`` and ``QConv2D`` subclasses
``keras.layers.Conv2D`` (as larq's ``QuantDense`` does): every argument, ``get_config``
key and behaviour of the Keras layer is there, and only the quantization is new. Each
layer holds its float parameters like the Keras layer and, in the forward pass, uses
their fake-quantized values :math:`P_{rec} = \\lfloor P/s \\rfloor s` produced by a
:class:`lqs.quantizers.NestedQuantizer` per parameter (thesis Fig. 3.1):

.. math::

    y = \\phi(x W_{rec} + b_{rec}) \\quad\\text{(QDense)}, \\qquad
    y = \\phi(x * K_{rec} + b_{rec}) \\quad\\text{(QConv2D)}.

A quantizer is given as ``kernel_quantizer=`` / ``bias_quantizer=``: the alias
``"nested"`` (threshold scale gradient, thesis 3.1) or ``"ste"`` (no forward-pass
gradient for the scale: the loss-term networks, thesis 3.2), a
:class:`~lqs.quantizers.NestedQuantizer` (a template: the layer builds its own copy from
its config) or that quantizer's config dict; ``bias_quantizer=None`` keeps a float bias.
``kernel_granularity=``, ``bias_granularity=``, ``threshold=`` and ``scale_gradient=``
are shorthand, applied on top of the quantizer.

Both layers implement the quantized-layer protocol (:mod:`lqs.protocol`), used by
:mod:`lqs.memory` and :mod:`lqs.export`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from lqs.quantizers import (
    BIAS_GRANULARITIES,
    DENSE_GRANULARITIES,
    GRANULARITIES,
    SCALE_GRADIENTS,
    IntegerTensor,
    NestedQuantizer,
    check_threshold,
)

__all__ = [
    "QUANTIZER_ALIASES",
    "LEGACY_QUANTIZER_OPTIONS",
    "QuantizerSpec",
    "QuantizedLayerMixin",
    "QDense",
    "QConv2D",
]

#: quantizer alias -> the ``scale_gradient`` of the :class:`NestedQuantizer` it builds
QUANTIZER_ALIASES: dict[str, str] = {"nested": "threshold", "ste": "ste"}
#: quantizer options the layers once took as keywords: still accepted from old code
#: (DeprecationWarning) and from old saved models; set them on a quantizer instead
LEGACY_QUANTIZER_OPTIONS: tuple[str, ...] = (
    "aggregate",
    "all_above_vote",
    "scale_init",
    "min_scale",
    "init_bits",
)
#: what ``kernel_quantizer=`` / ``bias_quantizer=`` accept
QuantizerSpec = str | NestedQuantizer | Mapping[str, Any]

_DEFAULT_GRANULARITY = "scalar"
_DEFAULT_THRESHOLD = 1e-9
#: base Layer config keys of a quantizer: the host layer owns them
_LAYER_KEYS = ("name", "dtype", "trainable")


# ------------------------------------------------------------------------ validation


def _positive_int(value, name: str, fix: str) -> int:
    """``value`` as int if it is an integer > 0 (not a bool), else ``ValueError``."""
    integral = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integral or value < 1:
        raise ValueError(
            f"{name} must be a positive integer, got {value!r}; fix: {fix}"
        )
    return int(value)


def _int_pair(value, name: str) -> tuple[int, int]:
    """``value`` (an int or a tuple/list of two) as a pair of positive ints."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
        for v in items
    )
    if not ok:
        raise ValueError(
            f"{name} must be a positive integer or a tuple of 2 positive integers, "
            f"got {value!r}; fix: pass e.g. {name}=3 or {name}=(3, 3)"
        )
    return (int(items[0]), int(items[1]))


def _check_granularity(value, name: str, allowed: tuple[str, ...], layer: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, allowed))} for {layer}, "
            f"got {value!r}; fix: pick one of them (lqs.quantizers.GRANULARITY_AXES "
            "names their axes)"
        )
    return value


def _check_shorthand(given: dict[str, Any], layer: str, kernel_allowed) -> None:
    """Validate the shorthand arguments that were given (not None)."""
    for name, allowed in (
        ("kernel_granularity", kernel_allowed),
        ("bias_granularity", BIAS_GRANULARITIES),
    ):
        if name in given:
            _check_granularity(given[name], name, allowed, layer)
    if "threshold" in given:
        check_threshold(given["threshold"])
    sg = given.get("scale_gradient", "threshold")
    if not isinstance(sg, str) or sg not in SCALE_GRADIENTS:
        raise ValueError(
            f"scale_gradient must be one of {', '.join(map(repr, SCALE_GRADIENTS))}, "
            f"got {sg!r}; fix: 'threshold' (nested quantizer) or 'ste' (loss terms)"
        )


# ------------------------------------------------------------------------ quantizers


def _template(spec, arg: str) -> tuple[type[NestedQuantizer], dict[str, Any], bool]:
    """``(class, options, is_alias)`` of a quantizer spec (options: no name/dtype)."""
    if isinstance(spec, str):
        if spec not in QUANTIZER_ALIASES:
            raise ValueError(
                f"{arg} must be 'nested', 'ste', a lqs.NestedQuantizer or its config "
                f"dict, got {spec!r}; fix: use one of those"
            )
        return NestedQuantizer, {"scale_gradient": QUANTIZER_ALIASES[spec]}, True
    if isinstance(spec, Mapping) and "class_name" in spec:
        spec = keras.saving.deserialize_keras_object(dict(spec))
    if isinstance(spec, NestedQuantizer):
        cls, options = type(spec), spec.get_config()
    elif isinstance(spec, Mapping):
        cls, options = NestedQuantizer, dict(spec)
    else:
        float_bias = " (or None for a float bias)" if arg == "bias_quantizer" else ""
        raise ValueError(
            f"{arg} must be 'nested', 'ste', a lqs.NestedQuantizer or its config "
            f"dict{float_bias}, got {spec!r}; fix: use one of those"
        )
    known = {"granularity", "threshold", "scale_gradient", *LEGACY_QUANTIZER_OPTIONS}
    unknown = sorted(set(options) - known - set(_LAYER_KEYS))
    if unknown:
        raise ValueError(
            f"{arg} has unknown option(s) {unknown}; allowed: {sorted(known)}; "
            "fix: drop them"
        )
    options = {k: v for k, v in options.items() if k not in _LAYER_KEYS}
    return cls, options, False


def _merge(spec, arg: str, overrides: dict[str, tuple[str, Any]]) -> tuple[type, dict]:
    """The quantizer class and options: the spec with the given shorthand on top.

    ``overrides`` maps a quantizer option to ``(argument name, value)``.
    """
    cls, options, alias = _template(spec, arg)
    scale_gradient = overrides.get("scale_gradient", (None, "ste"))[1]
    if spec == "ste" and scale_gradient != "ste":
        raise ValueError(
            f"scale_gradient={scale_gradient!r} contradicts {arg}='ste'; "
            "fix: drop one of them"
        )
    if alias:
        options = {
            "granularity": _DEFAULT_GRANULARITY,
            "threshold": _DEFAULT_THRESHOLD,
            **options,
        }
    return cls, {**options, **{key: value for key, (_, value) in overrides.items()}}


def _serialize_quantizer(quantizer: NestedQuantizer | None) -> dict[str, Any] | None:
    """Keras serialization of a quantizer, without what the host layer owns.

    Left out: name, dtype and trainable (the host sets them) and the build config (the
    host builds its quantizers), so built and unbuilt layers have the same config.
    """
    if quantizer is None:
        return None
    base = keras.saving.serialize_keras_object(quantizer)
    dropped = ("build_config", "compile_config")
    base = {k: v for k, v in base.items() if k not in dropped}
    options = quantizer.get_config()
    options = {k: v for k, v in options.items() if k not in _LAYER_KEYS}
    return {**base, "config": options}


def _pop_legacy(kwargs: dict[str, Any], layer: str) -> dict[str, Any]:
    """Take the legacy quantizer keywords out of ``kwargs`` (DeprecationWarning)."""
    legacy = {k: kwargs.pop(k) for k in LEGACY_QUANTIZER_OPTIONS if k in kwargs}
    if legacy:
        options = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
        warnings.warn(
            f"{layer}({options}) is deprecated: pass the quantizer instead, "
            f"kernel_quantizer=lqs.NestedQuantizer({options}) (and bias_quantizer=...)",
            DeprecationWarning,
            stacklevel=3,
        )
    return legacy


def _legacy_config(config: dict[str, Any]) -> dict[str, Any]:
    """Translate a config saved before the layers subclassed Dense/Conv2D.

    Old configs carry ``kernel_granularity``, ``bias_granularity``, ``threshold``,
    ``quantize_bias``, ``scale_gradient`` and :data:`LEGACY_QUANTIZER_OPTIONS`
    instead of ``kernel_quantizer``/``bias_quantizer``; they become the two quantizer
    configs.
    """
    legacy = any(k in config for k in LEGACY_QUANTIZER_OPTIONS)
    if "kernel_quantizer" in config or not legacy:
        return config
    config = dict(config)
    common = {k: config.pop(k) for k in LEGACY_QUANTIZER_OPTIONS if k in config}
    for key in ("threshold", "scale_gradient"):
        if key in config:
            common[key] = config.pop(key)
    kernel = config.pop("kernel_granularity", _DEFAULT_GRANULARITY)
    bias = config.pop("bias_granularity", _DEFAULT_GRANULARITY)
    quantize_bias = config.pop("quantize_bias", True)
    config["kernel_quantizer"] = {"granularity": kernel, **common}
    config["bias_quantizer"] = None
    if quantize_bias:
        config["bias_quantizer"] = {"granularity": bias, **common}
    return config


# ------------------------------------------------------------------------ shared code


class QuantizedLayerMixin:
    """Quantizers, protocol methods and config shared by QDense and QConv2D.

    The host class (a ``keras.layers.Dense``/``Conv2D`` subclass) calls
    :meth:`_init_quantization` after its ``super().__init__`` and
    :meth:`_build_quantizers` after ``super().build``.
    """

    _kernel_granularities: tuple[str, ...] = GRANULARITIES

    def _init_quantization(
        self,
        kernel_quantizer: QuantizerSpec,
        bias_quantizer: QuantizerSpec | None,
        quantize_bias: bool | None,
        shorthand: dict[str, Any],
        legacy: dict[str, Any],
    ) -> None:
        layer = type(self).__name__
        if self.quantization_mode is not None:
            raise ValueError(
                f"dtype must not be a Keras quantization policy for {layer}, got "
                f"{self.quantization_mode!r}; fix: use a float policy like 'float32'"
            )
        given = {k: v for k, v in shorthand.items() if v is not None}
        _check_shorthand(given, layer, self._kernel_granularities)
        bias_quantizer = self._bias_spec(bias_quantizer, quantize_bias)
        shared = ("threshold", "scale_gradient")
        common = {k: (k, given[k]) for k in shared if k in given}
        common.update({k: (k, v) for k, v in legacy.items()})
        specs = {
            "kernel": (kernel_quantizer, self._kernel_granularities),
            "bias": (bias_quantizer, BIAS_GRANULARITIES),
        }
        for param, (spec, allowed) in specs.items():
            quantizer = None
            if spec is not None:
                overrides = dict(common)
                if f"{param}_granularity" in given:
                    name = f"{param}_granularity"
                    overrides["granularity"] = (name, given[name])
                cls, options = _merge(spec, f"{param}_quantizer", overrides)
                quantizer = cls(
                    **options, name=f"{param}_quantizer", dtype=self.dtype_policy
                )
                what = f"{param}_quantizer's granularity"
                _check_granularity(quantizer.granularity, what, allowed, layer)
            if param == "bias" and not self.use_bias:
                quantizer = None
            setattr(self, f"{param}_quantizer", quantizer)

    @staticmethod
    def _bias_spec(spec, quantize_bias: bool | None):
        """The bias quantizer spec after the legacy ``quantize_bias`` flag."""
        if quantize_bias is None:
            return spec
        if not isinstance(quantize_bias, (bool, np.bool_)):
            raise ValueError(
                f"quantize_bias must be True, False or None, got {quantize_bias!r}; "
                "fix: or pass bias_quantizer=None for a float bias"
            )
        if quantize_bias and spec is None:
            raise ValueError(
                "quantize_bias=True contradicts bias_quantizer=None; "
                "fix: drop one of them"
            )
        if not quantize_bias and spec not in (None, "nested"):
            raise ValueError(
                f"quantize_bias=False contradicts bias_quantizer={spec!r}; "
                "fix: pass bias_quantizer=None alone"
            )
        return spec if quantize_bias else None

    def _build_quantizers(self) -> None:
        self.kernel_quantizer.build(tuple(self.kernel.shape))
        if self.kernel_quantizer.init_bits is not None:
            self.kernel_quantizer.init_from(self.kernel)
        if self.bias_quantizer is not None:
            self.bias_quantizer.build(tuple(self.bias.shape))
            if self.bias_quantizer.init_bits is not None:
                self.bias_quantizer.init_from(self.bias)

    @property
    def quantize_bias(self) -> bool:
        """True when the bias exists and is fake-quantized."""
        return self.bias_quantizer is not None

    def quantized_kernel(self):
        """The fake-quantized kernel :math:`K_{rec}` used in the forward pass."""
        return self.kernel_quantizer(self.kernel)

    def quantized_bias(self):
        """The bias used in the forward pass (fake-quantized unless float), or None."""
        if not self.use_bias:
            return None
        if self.bias_quantizer is None:
            return self.bias
        return self.bias_quantizer(self.bias)

    def quantizers(self) -> list[NestedQuantizer]:
        """The quantizers of this layer (kernel first)."""
        pair = (self.kernel_quantizer, self.bias_quantizer)
        return [q for q in pair if q is not None]

    def integer_parameters(self) -> list[IntegerTensor]:
        """Quantized parameters in integer form (quantized-layer protocol)."""
        out = [self.kernel_quantizer.integer_tensor(self.kernel, "kernel")]
        if self.bias_quantizer is not None:
            out.append(self.bias_quantizer.integer_tensor(self.bias, "bias"))
        return out

    def float_parameters(self) -> dict[str, np.ndarray]:
        """Parameters kept in float32 (an unquantized bias); scales are not listed."""
        if self.use_bias and self.bias_quantizer is None:
            return {"bias": ops.convert_to_numpy(self.bias)}
        return {}

    def _add_bias(self, outputs):
        bias = self.quantized_bias()
        if bias is None:
            return outputs
        if getattr(self, "data_format", "channels_last") == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
        return ops.add(outputs, bias)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_quantizer": _serialize_quantizer(self.kernel_quantizer),
            "bias_quantizer": _serialize_quantizer(self.bias_quantizer),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return super().from_config(_legacy_config(config))


_QUANT_ARGS_DOC = """
        kernel_quantizer: the kernel's quantizer: ``"nested"`` (default; threshold
            scale gradient), ``"ste"`` (the scale gets no forward-pass gradient), a
            :class:`lqs.quantizers.NestedQuantizer` (a template: the layer builds its
            own copy from its config) or that quantizer's config dict.
        bias_quantizer: the bias's quantizer, as ``kernel_quantizer`` (default
            ``"nested"``, one scalar scale as in the thesis), or ``None``: float32 bias.
        kernel_granularity: shorthand, the kernel quantizer's scale granularity
            (default ``"scalar"``; see :data:`lqs.quantizers.GRANULARITY_AXES`).
        bias_granularity: shorthand, ``"scalar"`` (default) or ``"row"`` (per unit).
        threshold: shorthand, :math:`\\lambda \\ge 0` of the scale-gradient vote
            (default 1e-9).
        scale_gradient: shorthand, ``"threshold"`` or ``"ste"`` for both quantizers.
        quantize_bias: legacy flag; ``False`` is ``bias_quantizer=None``.

    The shorthand that is given (not None) is applied on top of the quantizer, alias or
    instance: ``kernel_quantizer=q, kernel_granularity="column"`` is ``q`` per column.
    The former keywords ``aggregate``, ``all_above_vote``, ``scale_init``,
    ``min_scale`` and ``init_bits`` are still accepted (``DeprecationWarning``): set
    them on a ``NestedQuantizer`` instead.

    Raises:
        ValueError: a bad Keras argument or quantizer option (named, with the value
            and what is allowed), or ``scale_gradient="threshold"`` with ``"ste"``.
"""


# ------------------------------------------------------------------------ layers


@keras.saving.register_keras_serializable(package="lqs")
class QDense(QuantizedLayerMixin, keras.layers.Dense):
    """``keras.layers.Dense`` whose kernel and bias pass through quantizers.

    :math:`y = \\phi(x \\lfloor W/s_W \\rfloor s_W + \\lfloor b/s_b \\rfloor s_b)`,
    kernel ``(in, out)``; gradients of :func:`lqs.quantizers.nested_quantize` (or
    :func:`lqs.quantizers.ste_quantize`) for :math:`W`, :math:`b` and the scales.

    Example::

        model = keras.Sequential([
            keras.Input((784,)),
            lqs.QDense(128, "relu", kernel_granularity="column", threshold=1e-9),
            lqs.QDense(10, "softmax", kernel_quantizer=lqs.NestedQuantizer("row")),
        ])

    Arguments:
        units: number of output units; ``activation``, ``use_bias``, the initializers,
            regularizers and constraints and the remaining keyword arguments are those
            of ``keras.layers.Dense``.
    """

    __doc__ += _QUANT_ARGS_DOC
    _kernel_granularities = DENSE_GRANULARITIES

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        *,
        kernel_quantizer: QuantizerSpec = "nested",
        bias_quantizer: QuantizerSpec | None = "nested",
        kernel_granularity: str | None = None,
        bias_granularity: str | None = None,
        threshold: float | None = None,
        scale_gradient: str | None = None,
        quantize_bias: bool | None = None,
        **kwargs,
    ):
        legacy = _pop_legacy(kwargs, "QDense")
        units = _positive_int(units, "units", "pass the number of outputs, e.g. 10")
        super().__init__(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        shorthand = {
            "kernel_granularity": kernel_granularity,
            "bias_granularity": bias_granularity,
            "threshold": threshold,
            "scale_gradient": scale_gradient,
        }
        self._init_quantization(
            kernel_quantizer, bias_quantizer, quantize_bias, shorthand, legacy
        )

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers()

    def call(self, inputs, training=None):
        outputs = self._add_bias(ops.matmul(inputs, self.quantized_kernel()))
        return self.activation(outputs) if self.activation is not None else outputs


def _check_conv_args(filters, kernel_size, strides, padding, dilation_rate, groups):
    """Validate the Conv2D arguments that Keras checks late or with internal errors."""
    filters = _positive_int(filters, "filters", "pass the number of channels, e.g. 32")
    groups = _positive_int(groups, "groups", "pass 1 or a divisor of filters")
    if filters % groups:
        raise ValueError(
            f"groups must divide filters={filters}, got {groups!r}; fix: pick a divisor"
        )
    strides = _int_pair(strides, "strides")
    dilation_rate = _int_pair(dilation_rate, "dilation_rate")
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            f"strides must be 1 when dilation_rate > 1, got strides={strides!r} with "
            f"dilation_rate={dilation_rate!r}; fix: use one of them (as keras Conv2D)"
        )
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(
            f"padding must be 'valid' or 'same', got {padding!r}; fix: use one of them"
        )
    return {
        "filters": filters,
        "kernel_size": _int_pair(kernel_size, "kernel_size"),
        "strides": strides,
        "padding": padding.lower(),
        "dilation_rate": dilation_rate,
        "groups": groups,
    }


@keras.saving.register_keras_serializable(package="lqs")
class QConv2D(QuantizedLayerMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose kernel and bias pass through quantizers.

    :math:`y = \\phi(x * \\lfloor K/s_K \\rfloor s_K + \\lfloor b/s_b \\rfloor s_b)`,
    kernel layout ``(kh, kw, cin / groups, cout)`` as ``keras.layers.Conv2D``;
    strides, dilation, ``"same"`` padding, ``channels_first`` and grouped convolution
    work as there (granularities name axes of the stored kernel, so with groups
    ``"channel"`` keeps one scale per input channel of a group).

    Arguments:
        filters: number of output channels; ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``groups``, ``activation``, ``use_bias``,
            the initializers, regularizers and constraints and the remaining keyword
            arguments are those of ``keras.layers.Conv2D``.
    """

    __doc__ += _QUANT_ARGS_DOC
    _kernel_granularities = GRANULARITIES

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=(1, 1),
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        *,
        kernel_quantizer: QuantizerSpec = "nested",
        bias_quantizer: QuantizerSpec | None = "nested",
        kernel_granularity: str | None = None,
        bias_granularity: str | None = None,
        threshold: float | None = None,
        scale_gradient: str | None = None,
        quantize_bias: bool | None = None,
        **kwargs,
    ):
        legacy = _pop_legacy(kwargs, "QConv2D")
        super().__init__(
            **_check_conv_args(
                filters, kernel_size, strides, padding, dilation_rate, groups
            ),
            data_format=data_format,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        shorthand = {
            "kernel_granularity": kernel_granularity,
            "bias_granularity": bias_granularity,
            "threshold": threshold,
            "scale_gradient": scale_gradient,
        }
        self._init_quantization(
            kernel_quantizer, bias_quantizer, quantize_bias, shorthand, legacy
        )

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers()

    def call(self, inputs):
        kernel = self.quantized_kernel()
        outputs = self._add_bias(self.convolution_op(inputs, kernel))
        return self.activation(outputs) if self.activation is not None else outputs
