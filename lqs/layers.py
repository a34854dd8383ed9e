"""Quantized Keras 3 layers: ``QDense`` and ``QConv2D`` with nested quantizers for kernel and bias.

Each layer holds its float parameters like the plain Keras layer and, in the forward pass, uses
their fake-quantized values :math:`P_{rec} = \\lfloor P/s \\rfloor s` produced by a
:class:`lqs.quantizers.NestedQuantizer` per parameter (thesis Fig. 3.1):

.. math::

    y = \\phi(x W_{rec} + b_{rec}) \\quad\\text{(QDense)}, \\qquad
    y = \\phi(x * K_{rec} + b_{rec}) \\quad\\text{(QConv2D)}.

Both implement the quantized-layer protocol of the project (``integer_parameters()`` and
``float_parameters()``), used by :mod:`lqs.memory` and :mod:`lqs.export`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from lqs.quantizers import BIAS_GRANULARITIES, MIN_SCALE, IntegerTensor, NestedQuantizer

__all__ = ["QuantizedLayerMixin", "QDense", "QConv2D"]


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value


class QuantizedLayerMixin:
    """Shared machinery: quantizer construction, protocol methods and config of quantized layers.

    Subclasses create ``self.kernel`` (and ``self.bias`` if ``use_bias``) in ``build`` and then call
    :meth:`_build_quantizers`.
    """

    def _init_quantization(
        self,
        *,
        kernel_granularity: str,
        bias_granularity: str,
        threshold: float,
        quantize_bias: bool,
        scale_gradient: str,
        aggregate: str,
        all_above_vote: bool,
        scale_init: float,
        min_scale: float,
        init_bits: int | None,
    ) -> None:
        if bias_granularity not in BIAS_GRANULARITIES:
            raise ValueError(
                f"unknown bias_granularity {bias_granularity!r}; allowed: {', '.join(map(repr, BIAS_GRANULARITIES))}"
            )
        self.quantize_bias = bool(quantize_bias)
        common = dict(
            threshold=threshold,
            scale_gradient=scale_gradient,
            aggregate=aggregate,
            all_above_vote=all_above_vote,
            scale_init=scale_init,
            min_scale=min_scale,
            init_bits=init_bits,
            dtype=self.dtype_policy,  # quantize in the owning layer's compute dtype (mixed precision)
        )
        self.kernel_quantizer = NestedQuantizer(kernel_granularity, name="kernel_quantizer", **common)
        self.bias_quantizer = (
            NestedQuantizer(bias_granularity, name="bias_quantizer", **common)
            if (self.use_bias and self.quantize_bias)
            else None
        )

    def _build_quantizers(self) -> None:
        self.kernel_quantizer.build(tuple(self.kernel.shape))
        if self.kernel_quantizer.init_bits is not None:
            self.kernel_quantizer.init_from(self.kernel)
        if self.bias_quantizer is not None:
            self.bias_quantizer.build(tuple(self.bias.shape))
            if self.bias_quantizer.init_bits is not None:
                self.bias_quantizer.init_from(self.bias)

    def quantized_kernel(self):
        """The fake-quantized kernel :math:`K_{rec}` used in the forward pass."""
        return self.kernel_quantizer(self.kernel)

    def quantized_bias(self):
        """The bias used in the forward pass (fake-quantized when ``quantize_bias``), or None."""
        if not self.use_bias:
            return None
        return self.bias_quantizer(self.bias) if self.bias_quantizer is not None else self.bias

    def quantizers(self) -> list[NestedQuantizer]:
        """The nested quantizers of this layer (kernel first)."""
        return [q for q in (self.kernel_quantizer, self.bias_quantizer) if q is not None]

    def integer_parameters(self) -> list[IntegerTensor]:
        """Quantized parameters in integer form (protocol used by memory accounting and export)."""
        out = [self.kernel_quantizer.integer_tensor(self.kernel, "kernel")]
        if self.bias_quantizer is not None:
            out.append(self.bias_quantizer.integer_tensor(self.bias, "bias"))
        return out

    def float_parameters(self) -> dict[str, np.ndarray]:
        """Parameters kept in float32 (an unquantized bias); scales are not listed."""
        if self.use_bias and self.bias_quantizer is None:
            return {"bias": ops.convert_to_numpy(self.bias)}
        return {}

    def _init_parameters(self, activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, kernel_constraint, bias_constraint) -> None:
        """Store the float-parameter options shared with ``keras.layers.Dense``/``Conv2D``."""
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _add_parameters(self, kernel_shape: tuple[int, ...], units: int) -> None:
        """Create the float ``kernel`` and (with ``use_bias``) ``bias`` of shape ``(units,)``."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _parameter_config(self) -> dict[str, Any]:
        return {
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }

    def _quantization_config(self) -> dict[str, Any]:
        q = self.kernel_quantizer
        return {
            "kernel_granularity": q.granularity,
            "bias_granularity": self._bias_granularity,
            "threshold": q.threshold,
            "quantize_bias": self.quantize_bias,
            "scale_gradient": q.scale_gradient,
            "aggregate": q.aggregate,
            "all_above_vote": q.all_above_vote,
            "scale_init": q.scale_init,
            "min_scale": q.min_scale,
            "init_bits": q.init_bits,
        }


@keras.saving.register_keras_serializable(package="lqs")
class QDense(QuantizedLayerMixin, keras.layers.Layer):
    """Dense layer whose kernel and bias pass through nested quantizers.

    :math:`y = \\phi(x \\lfloor W/s_W \\rfloor s_W + \\lfloor b/s_b \\rfloor s_b)`.

    Arguments:
        units: number of output units, as ``keras.layers.Dense``.
        activation: the activation :math:`\\phi` (default None, linear), as ``keras.layers.Dense``.
        use_bias: add the bias :math:`b` (default True), as ``keras.layers.Dense``.
        kernel_initializer, bias_initializer: as ``keras.layers.Dense``.
        kernel_regularizer, bias_regularizer, activity_regularizer: as ``keras.layers.Dense``.
        kernel_constraint, bias_constraint: as ``keras.layers.Dense``.
        kernel_granularity: scale granularity of the kernel (``"scalar"``, ``"row"``, ``"column"``;
            see :data:`lqs.quantizers.GRANULARITY_AXES`).
        bias_granularity: ``"scalar"`` (default, as in the thesis) or ``"row"`` (one scale per unit).
        threshold: :math:`\\lambda \\ge 0` of the scale-gradient vote.
        quantize_bias: quantize the bias too (default True, as in the thesis).
        scale_gradient: ``"threshold"`` (nested quantizer) or ``"ste"`` (loss-term networks).
        aggregate, all_above_vote, scale_init, min_scale, init_bits: see
            :class:`lqs.quantizers.NestedQuantizer`.
    """

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
        kernel_granularity: str = "scalar",
        bias_granularity: str = "scalar",
        threshold: float = 1e-9,
        quantize_bias: bool = True,
        scale_gradient: str = "threshold",
        aggregate: str = "mean",
        all_above_vote: bool = True,
        scale_init: float = MIN_SCALE,
        min_scale: float = MIN_SCALE,
        init_bits: int | None = None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if int(units) != units or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = int(units)
        self._init_parameters(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                              bias_regularizer, kernel_constraint, bias_constraint)
        self._bias_granularity = bias_granularity
        self._init_quantization(
            kernel_granularity=kernel_granularity,
            bias_granularity=bias_granularity,
            threshold=threshold,
            quantize_bias=quantize_bias,
            scale_gradient=scale_gradient,
            aggregate=aggregate,
            all_above_vote=all_above_vote,
            scale_init=scale_init,
            min_scale=min_scale,
            init_bits=init_bits,
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape) -> None:
        in_features = int(input_shape[-1])
        self._add_parameters((in_features, self.units), self.units)
        self._build_quantizers()
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: in_features})
        self.built = True

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.quantized_kernel())
        bias = self.quantized_bias()
        if bias is not None:
            outputs = ops.add(outputs, bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            **self._parameter_config(),
            **self._quantization_config(),
        }


@keras.saving.register_keras_serializable(package="lqs")
class QConv2D(QuantizedLayerMixin, keras.layers.Layer):
    """2-D convolution (channels_last) whose kernel and bias pass through nested quantizers.

    :math:`y = \\phi(x * \\lfloor K/s_K \\rfloor s_K + \\lfloor b/s_b \\rfloor s_b)`, kernel layout
    ``(kh, kw, cin, cout)`` as ``keras.layers.Conv2D``.

    Grouped convolution is not supported.

    Arguments:
        filters, kernel_size: number of output channels and window size, as ``keras.layers.Conv2D``.
        strides, padding, dilation_rate: as ``keras.layers.Conv2D`` (``padding``: ``"valid"`` or
            ``"same"``).
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        activation: the activation :math:`\\phi` (default None, linear), as ``keras.layers.Conv2D``.
        use_bias: add the bias :math:`b` (default True), as ``keras.layers.Conv2D``.
        kernel_initializer, bias_initializer: as ``keras.layers.Conv2D``.
        kernel_regularizer, bias_regularizer, activity_regularizer: as ``keras.layers.Conv2D``.
        kernel_constraint, bias_constraint: as ``keras.layers.Conv2D``.
        kernel_granularity: scale granularity of the kernel (``"scalar"``, ``"row"``, ``"column"``,
            ``"channel"``, ``"filter"``; see :data:`lqs.quantizers.GRANULARITY_AXES`).
        bias_granularity: ``"scalar"`` (default, as in the thesis) or ``"row"`` (one scale per filter).
        threshold: :math:`\\lambda \\ge 0` of the scale-gradient vote.
        quantize_bias: quantize the bias too (default True, as in the thesis).
        scale_gradient: ``"threshold"`` (nested quantizer) or ``"ste"`` (loss-term networks).
        aggregate, all_above_vote, scale_init, min_scale, init_bits: see
            :class:`lqs.quantizers.NestedQuantizer`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=(1, 1),
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
        kernel_granularity: str = "scalar",
        bias_granularity: str = "scalar",
        threshold: float = 1e-9,
        quantize_bias: bool = True,
        scale_gradient: str = "threshold",
        aggregate: str = "mean",
        all_above_vote: bool = True,
        scale_init: float = MIN_SCALE,
        min_scale: float = MIN_SCALE,
        init_bits: int | None = None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if int(filters) != filters or filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format {data_format!r} is not supported; allowed: 'channels_last'")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"unknown padding {padding!r}; allowed: 'valid', 'same'")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = padding
        self._init_parameters(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                              bias_regularizer, kernel_constraint, bias_constraint)
        self._bias_granularity = bias_granularity
        self._init_quantization(
            kernel_granularity=kernel_granularity,
            bias_granularity=bias_granularity,
            threshold=threshold,
            quantize_bias=quantize_bias,
            scale_gradient=scale_gradient,
            aggregate=aggregate,
            all_above_vote=all_above_vote,
            scale_init=scale_init,
            min_scale=min_scale,
            init_bits=init_bits,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape) -> None:
        in_channels = int(input_shape[-1])
        self._add_parameters(self.kernel_size + (in_channels, self.filters), self.filters)
        self._build_quantizers()
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        self.built = True

    def call(self, inputs):
        outputs = ops.conv(
            inputs,
            self.quantized_kernel(),
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        bias = self.quantized_bias()
        if bias is not None:
            outputs = ops.add(outputs, bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        spatial = []
        for size, k, stride, rate in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(-(-int(size) // stride))
            else:
                spatial.append(-(-(int(size) - (k - 1) * rate) // stride))
        return (input_shape[0], *spatial, self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": "channels_last",
            "dilation_rate": self.dilation_rate,
            **self._parameter_config(),
            **self._quantization_config(),
        }
