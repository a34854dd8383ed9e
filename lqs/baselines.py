"""Baselines the learned quantization schemes are compared against.

* ``"fp32"``: the unquantized network (plain Keras layers; nothing here).
* ``"fixed_bits"``: quantization-aware training with a fixed bit width, symmetric min-max fake
  quantization and a straight-through estimator (:class:`FixedBitsDense`, :class:`FixedBitsConv2D`).
* ``"lsq"``: Learned Step Size Quantization of the weights, Esser et al. 2020
  (:class:`LSQDense`, :class:`LSQConv2D`).
* ``"ptq"``: post-training min-max quantization of a trained model (:func:`ptq_minmax`).

Every layer here implements the project's quantized-layer protocol (``integer_parameters()``,
``float_parameters()``), so :mod:`lqs.memory` accounts for it, and its optional loader hook
``set_integer_parameters(tensors)`` (weights :math:`P_q s`, LSQ steps :math:`s`), so
:func:`lqs.export.from_integer` rebuilds an exported model with the same integers and scales; it
is registered for Keras serialization (``package="lqs"``). The layers subclass
``keras.layers.Dense`` / ``keras.layers.Conv2D`` (same kernel layout, arguments and config) and
override only the forward pass and the weight serialization (all variables, steps included, are
saved).

Symmetric min-max (fixed bits), per scale group :math:`g`, with :math:`Q = 2^{b-1} - 1`:

.. math::

    s_g = \\max_{i \\in g} |W_i| / Q, \\qquad
    P_q = \\operatorname{clip}(\\operatorname{round}(W / s), -Q, Q), \\qquad W_{rec} = P_q s .

LSQ, with :math:`Q_N = 2^{b-1}`, :math:`Q_P = 2^{b-1} - 1` and a learned step :math:`s`:

.. math::

    \\bar v = \\operatorname{round}(\\operatorname{clip}(v/s, -Q_N, Q_P)), \\qquad \\hat v = \\bar v s .

References:
    S. K. Esser, J. L. McKinstry, D. Bablani, R. Appuswamy, D. S. Modha, "Learned Step Size
    Quantization", ICLR 2020, https://arxiv.org/abs/1902.08153 .
    B. Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018, https://arxiv.org/abs/1712.05877 (min-max ranges,
    STE fake quantization).
    R. Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A whitepaper",
    2018, https://arxiv.org/abs/1806.08342 (symmetric per-tensor / per-channel PTQ).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lqs.layers import QConv2D, QDense
from lqs.losses import LossTermsModel
from lqs.quantizers import (
    DENSE_GRANULARITIES,
    GRANULARITIES,
    MIN_SCALE,
    IntegerTensor,
    MinValue,
    group_axes,
    scale_shape,
)

__all__ = [
    "BASELINE_FLAVOURS",
    "MIN_BITS",
    "MAX_BITS",
    "check_bits",
    "symmetric_max",
    "minmax_scale",
    "minmax_quantize",
    "minmax_integers",
    "lsq_bounds",
    "lsq_grad_scale",
    "lsq_step_init",
    "lsq_quantize",
    "lsq_integers",
    "FixedBitsDense",
    "FixedBitsConv2D",
    "LSQDense",
    "LSQConv2D",
    "ptq_minmax",
]

#: the baseline flavours of the experiments
BASELINE_FLAVOURS: tuple[str, ...] = ("fp32", "fixed_bits", "lsq", "ptq")
#: smallest allowed bit width (inclusive); 1 bit leaves no magnitude
MIN_BITS: int = 2
#: largest allowed bit width (inclusive); beyond 16 float32 rounding dominates
MAX_BITS: int = 16


def check_bits(bits: int) -> int:
    """Return ``bits`` as int or raise ``ValueError`` (an integer in ``[MIN_BITS, MAX_BITS]``)."""
    if (
        isinstance(bits, bool)
        or not isinstance(bits, (int, np.integer))
        or not MIN_BITS <= bits <= MAX_BITS
    ):
        raise ValueError(
            f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}"
        )
    return int(bits)


def _check_granularity(granularity: str, allowed: Sequence[str]) -> str:
    if granularity not in allowed:
        raise ValueError(
            f"unknown granularity {granularity!r}; allowed: {', '.join(map(repr, allowed))}"
        )
    return granularity


def symmetric_max(bits: int) -> int:
    """Largest magnitude of a symmetric signed ``bits``-bit integer grid: :math:`2^{b-1} - 1`."""
    return 2 ** (check_bits(bits) - 1) - 1


def _group_reduce_axes(shape: Sequence[int], scale_shape_: Sequence[int]) -> list[int]:
    return group_axes(tuple(int(d) for d in shape), tuple(int(d) for d in scale_shape_))


# ----------------------------------------------------------------------------------- min-max


def minmax_scale(p, bits: int, scale_shape_: Sequence[int]):
    """Symmetric min-max scales :math:`s_g = \\max_{i \\in g}|P_i| / (2^{b-1}-1)` (tensor, ``scale_shape_``).

    A group whose values are all 0 gets :math:`s_g = 1` (its integers are then all 0).

    Arguments:
        p: the parameter (any rank).
        bits: bit width, 2..16.
        scale_shape_: ``(1,)`` (one scale) or the parameter's rank with size-1 axes
            (see :func:`lqs.quantizers.scale_shape`).
    """
    q = float(symmetric_max(bits))
    p = tf.convert_to_tensor(p)
    axes = _group_reduce_axes(p.shape, scale_shape_)
    max_abs = tf.reduce_max(tf.abs(p), axis=axes, keepdims=True) if axes else tf.abs(p)
    s = tf.where(max_abs > 0, max_abs / q, tf.ones_like(max_abs))
    return tf.reshape(s, tuple(scale_shape_))


def _minmax_parts(p, bits: int, scale_shape_: Sequence[int]):
    q = float(symmetric_max(bits))
    s = tf.cast(minmax_scale(p, bits, scale_shape_), p.dtype)
    p_q = tf.clip_by_value(tf.round(p / s), -q, q)
    return p_q, s


def minmax_quantize(p, bits: int, scale_shape_: Sequence[int]):
    """Symmetric min-max fake quantization with a straight-through gradient.

    Forward: :math:`W_{rec} = \\operatorname{clip}(\\operatorname{round}(W/s), -Q, Q)\\, s` with
    :math:`s` from :func:`minmax_scale` (recomputed from ``p`` at every call), :math:`Q = 2^{b-1}-1`.
    Backward: :math:`\\partial L/\\partial W = G` (identity). Because :math:`s` comes from the
    current maximum, :math:`|W/s| \\le Q` always holds, nothing is ever clipped, so the clipped STE
    and the plain STE coincide; no gradient flows through :math:`s` (it is a statistic of ``p``).

    Arguments:
        p: the parameter (any rank, floating dtype).
        bits: bit width, 2..16.
        scale_shape_: shape of the scales (``(1,)`` per tensor, e.g. ``(1, out)`` per output unit).

    Returns:
        :math:`W_{rec}`, same shape and dtype as ``p``.
    """
    check_bits(bits)
    p = tf.convert_to_tensor(p)

    @tf.custom_gradient
    def _fake_quant(x):
        p_q, s = _minmax_parts(x, bits, scale_shape_)

        def grad(upstream):
            return upstream

        return p_q * s, grad

    return _fake_quant(p)


def minmax_integers(
    p, bits: int, granularity: str, name: str = "kernel"
) -> IntegerTensor:
    """``p`` in integer form under symmetric min-max quantization (NumPy, protocol object).

    Values :math:`P_q \\in [-(2^{b-1}-1), 2^{b-1}-1]` (int64), scales :math:`s` (float32, one per group).
    """
    p = tf.convert_to_tensor(p, tf.float32)
    shape = scale_shape(granularity, tuple(p.shape))
    p_q, s = _minmax_parts(p, bits, shape)
    return IntegerTensor(
        name, p_q.numpy().astype(np.int64), s.numpy().astype(np.float32), granularity
    )


# --------------------------------------------------------------------------------------- LSQ


def lsq_bounds(bits: int) -> tuple[int, int]:
    """:math:`(Q_N, Q_P) = (2^{b-1}, 2^{b-1}-1)`: the signed grid is :math:`[-Q_N, Q_P]`."""
    b = check_bits(bits)
    return 2 ** (b - 1), 2 ** (b - 1) - 1


def lsq_grad_scale(
    param_shape: Sequence[int], scale_shape_: Sequence[int], bits: int
) -> float:
    """The LSQ step-gradient scale :math:`g = 1/\\sqrt{N Q_P}`.

    :math:`N` is the number of weights sharing one step: the whole tensor for a per-tensor step
    (the paper's setting), the group size for per-channel/row/... steps (our extension).
    """
    _, q_p = lsq_bounds(bits)
    axes = _group_reduce_axes(param_shape, scale_shape_)
    n = int(np.prod([int(param_shape[a]) for a in axes])) if axes else 1
    return 1.0 / math.sqrt(n * q_p)


def lsq_step_init(
    p, bits: int, scale_shape_: Sequence[int], min_step: float = MIN_SCALE
):
    """The LSQ step initialization :math:`s_0 = 2 \\langle |v| \\rangle / \\sqrt{Q_P}` per group.

    The mean runs over the group's weights; the result is clipped below at ``min_step`` (an
    all-zero bias would otherwise start at 0).
    """
    _, q_p = lsq_bounds(bits)
    p = tf.convert_to_tensor(p)
    axes = _group_reduce_axes(p.shape, scale_shape_)
    mean_abs = (
        tf.reduce_mean(tf.abs(p), axis=axes, keepdims=True) if axes else tf.abs(p)
    )
    s = tf.maximum(2.0 * mean_abs / math.sqrt(q_p), tf.cast(min_step, p.dtype))
    return tf.reshape(s, tuple(scale_shape_))


def lsq_quantize(v, step, bits: int, grad_scale: float | None = None):
    """LSQ fake quantization of ``v`` with a learned step ``step``.

    Forward: :math:`\\hat v = \\operatorname{round}(\\operatorname{clip}(v/s, -Q_N, Q_P))\\, s`.
    Backward, with :math:`G = \\partial L/\\partial \\hat v` and :math:`r = v/s` (paper, eq. 3 and 5):

    .. math::

        \\frac{\\partial L}{\\partial v} = G \\cdot [-Q_N < r < Q_P], \\qquad
        \\frac{\\partial L}{\\partial s_g} = g \\sum_{i \\in g} G_i \\cdot
        \\begin{cases} -r_i + \\operatorname{round}(r_i) & -Q_N < r_i < Q_P \\\\
                       -Q_N & r_i \\le -Q_N \\\\ Q_P & r_i \\ge Q_P \\end{cases}

    with the gradient scale :math:`g = 1/\\sqrt{N Q_P}` (:func:`lsq_grad_scale`).

    Arguments:
        v: the parameter (any rank).
        step: positive steps, shape ``(1,)`` or the parameter's rank with size-1 axes.
        bits: bit width, 2..16.
        grad_scale: :math:`g`; ``None`` (default) computes the paper's value.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, https://arxiv.org/abs/1902.08153 .
    """
    q_n, q_p = lsq_bounds(bits)
    v = tf.convert_to_tensor(v)
    step = tf.cast(tf.convert_to_tensor(step), v.dtype)
    step_shape = tuple(int(d) for d in step.shape)
    axes = _group_reduce_axes(v.shape, step_shape)
    if grad_scale is None:
        grad_scale = lsq_grad_scale(tuple(v.shape), step_shape, bits)
    g = float(grad_scale)

    @tf.custom_gradient
    def _lsq(x, s):
        ratio = x / s
        v_bar = tf.round(tf.clip_by_value(ratio, -float(q_n), float(q_p)))

        def grad(upstream):
            below = ratio <= -q_n
            above = ratio >= q_p
            inside = tf.logical_not(tf.logical_or(below, above))
            d_x = tf.where(inside, upstream, tf.zeros_like(upstream))
            d_elem = tf.where(
                inside,
                tf.round(ratio) - ratio,
                tf.where(
                    below,
                    -float(q_n) * tf.ones_like(ratio),
                    float(q_p) * tf.ones_like(ratio),
                ),
            )
            prod = upstream * d_elem
            d_s = tf.reduce_sum(prod, axis=axes, keepdims=True) if axes else prod
            return d_x, tf.reshape(g * d_s, step_shape)

        return v_bar * s, grad

    return _lsq(v, step)


def lsq_integers(
    v, step, bits: int, granularity: str, name: str = "kernel"
) -> IntegerTensor:
    """``v`` in integer form under LSQ: :math:`\\bar v \\in [-2^{b-1}, 2^{b-1}-1]` (int64) and the steps."""
    q_n, q_p = lsq_bounds(bits)
    v = tf.convert_to_tensor(v, tf.float32)
    s = tf.cast(tf.convert_to_tensor(step), tf.float32)
    v_bar = tf.round(tf.clip_by_value(v / s, -float(q_n), float(q_p)))
    return IntegerTensor(
        name, v_bar.numpy().astype(np.int64), s.numpy().astype(np.float32), granularity
    )


# ------------------------------------------------------------------------------------ layers


class _WeightQuantMixin:
    """Shared code of the baseline layers: bits/granularity, protocol methods, weight serialization.

    Subclasses implement :meth:`_quantize` and :meth:`_integers` for one parameter.
    """

    _granularities: tuple[str, ...] = ()

    def _init_weight_quant(
        self, bits: int, granularity: str, quantize_bias: bool
    ) -> None:
        self.bits = check_bits(bits)
        self.granularity = _check_granularity(granularity, self._granularities)
        self.quantize_bias = bool(quantize_bias)

    def _has_quantized_bias(self) -> bool:
        return bool(self.use_bias and self.quantize_bias)

    def kernel_scale_shape(self) -> tuple[int, ...]:
        """Shape of the kernel's scales for this layer's granularity."""
        return scale_shape(self.granularity, tuple(self.kernel.shape))

    def quantized_kernel(self):
        """The fake-quantized kernel used in the forward pass."""
        return self._quantize(self.kernel, "kernel")

    def quantized_bias(self):
        """The bias used in the forward pass (fake-quantized when ``quantize_bias``), or None."""
        if not self.use_bias:
            return None
        return self._quantize(self.bias, "bias") if self.quantize_bias else self.bias

    def integer_parameters(self) -> list[IntegerTensor]:
        """Quantized parameters in integer form (protocol used by :mod:`lqs.memory`)."""
        out = [self._integers(self.kernel, "kernel")]
        if self._has_quantized_bias():
            out.append(self._integers(self.bias, "bias"))
        return out

    def float_parameters(self) -> dict[str, np.ndarray]:
        """Parameters kept in float32 (the bias unless ``quantize_bias``); steps/scales are not listed."""
        if self.use_bias and not self.quantize_bias:
            return {"bias": ops.convert_to_numpy(self.bias).astype(np.float32)}
        return {}

    def set_integer_parameters(self, tensors: Sequence[IntegerTensor]) -> None:
        """Loader hook of :mod:`lqs.export`: weights (and LSQ steps) that give back ``tensors``.

        Afterwards ``integer_parameters()`` returns exactly the integers and scales of ``tensors``.
        Every tensor must be a quantized parameter of this layer (``"kernel"``, and ``"bias"`` when
        ``quantize_bias``) with its shapes; the float weights become :math:`P_q s` (see
        :meth:`_latent`), so the forward pass uses exactly ``values * scale``.
        """
        expected = ["kernel"] + (["bias"] if self._has_quantized_bias() else [])
        names = [t.name for t in tensors]
        if sorted(names) != sorted(expected):
            raise ValueError(
                f"{type(self).__name__} {self.name!r} quantizes {expected}, got integer tensors for {names}"
            )
        for t in tensors:
            var = getattr(self, t.name)
            values = np.asarray(t.values, dtype=np.int64)
            if tuple(values.shape) != tuple(var.shape):
                raise ValueError(
                    f"{self.name}/{t.name}: integer shape {values.shape} does not match the layer's {tuple(var.shape)}"
                )
            var.assign(
                self._latent(values, np.asarray(t.scale, dtype=np.float32), t.name)
            )

    def _weight_quant_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "granularity": self.granularity,
            "quantize_bias": self.quantize_bias,
        }

    # Dense/Conv2D save only kernel and bias; save every variable (LSQ steps included).
    def save_own_variables(self, store) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store) -> None:
        keras.layers.Layer.load_own_variables(self, store)


class _FixedBitsMixin(_WeightQuantMixin):
    def _param_scale_shape(self, which: str) -> tuple[int, ...]:
        return self.kernel_scale_shape() if which == "kernel" else (1,)

    def _quantize(self, p, which: str):
        return minmax_quantize(p, self.bits, self._param_scale_shape(which))

    def _integers(self, p, which: str) -> IntegerTensor:
        granularity = self.granularity if which == "kernel" else "scalar"
        return minmax_integers(p, self.bits, granularity, which)

    def _latent(self, values: np.ndarray, scale: np.ndarray, which: str) -> np.ndarray:
        """Float32 weights :math:`fl(P_q s)`; their recomputed min-max scales and integers are ``scale``, ``values``.

        The scale is recomputed from the weights at every call, :math:`s' = fl(\\max_g|W|/Q)`, with the
        group maximum :math:`fl(Q s)` (a min-max group has an element with :math:`|P_q| = Q`, unless it
        is all zero: then :math:`s = 1` and the weights are 0 again).
        :math:`fl(fl(Q s)/Q) = s` fails for some arbitrary float32 :math:`s` (about 3 % at 8 bits) but
        holds for every :math:`s` that min-max can produce, i.e. :math:`s = fl(m/Q)` for some float32
        :math:`m` (tested on 10^6 random scales per bit width 2..16: every scale that a float32 maximum
        within 8 ulps of :math:`Q s` gives back, :math:`fl(Q s)` gives back). The other elements need
        :math:`\\operatorname{round}(fl(P_q s)/s) = P_q`, which holds for :math:`|P_q| \\le 2^{15}`
        (float32 error far below half a bin). :func:`lqs.export.from_integer` checks the integers.
        """
        s = np.broadcast_to(scale.reshape(self._param_scale_shape(which)), values.shape)
        return (values * s.astype(np.float64)).astype(np.float32)


class _LSQMixin(_WeightQuantMixin):
    def _build_steps(self) -> None:
        kernel_shape = self.kernel_scale_shape()
        kernel_init = lsq_step_init(self.kernel, self.bits, kernel_shape)
        self.kernel_step = self.add_weight(
            name="kernel_step",
            shape=kernel_shape,
            initializer=lambda shape, dtype=None: ops.cast(
                kernel_init, dtype or "float32"
            ),
            constraint=MinValue(MIN_SCALE),
            trainable=True,
            dtype="float32",
        )
        self.bias_step = None
        if self._has_quantized_bias():
            bias_init = lsq_step_init(self.bias, self.bits, (1,))
            self.bias_step = self.add_weight(
                name="bias_step",
                shape=(1,),
                initializer=lambda shape, dtype=None: ops.cast(
                    bias_init, dtype or "float32"
                ),
                constraint=MinValue(MIN_SCALE),
                trainable=True,
                dtype="float32",
            )

    def initialize_steps(self) -> None:
        """Reset the steps to :math:`2\\langle|v|\\rangle/\\sqrt{Q_P}` from the current weights.

        Call after loading pretrained float weights (the paper initializes from them).
        """
        self.kernel_step.assign(
            lsq_step_init(self.kernel, self.bits, self.kernel_scale_shape())
        )
        if self.bias_step is not None:
            self.bias_step.assign(lsq_step_init(self.bias, self.bits, (1,)))

    def _step(self, which: str):
        return self.kernel_step if which == "kernel" else self.bias_step

    def _quantize(self, p, which: str):
        return lsq_quantize(p, self._step(which), self.bits)

    def _integers(self, p, which: str) -> IntegerTensor:
        granularity = self.granularity if which == "kernel" else "scalar"
        step = ops.convert_to_numpy(self._step(which))
        return lsq_integers(p, step, self.bits, granularity, which)

    def _latent(self, values: np.ndarray, scale: np.ndarray, which: str) -> np.ndarray:
        """Assign the step :math:`s` and return the weights :math:`fl(P_q s)` (float32).

        :math:`\\operatorname{round}(fl(fl(P_q s)/s)) = P_q` because the two roundings move the
        quotient by a few float32 ulps of :math:`|P_q| \\le 2^{15}` (below :math:`2^{-7}`), far from the
        half-bin margin; the clip to :math:`[-Q_N, Q_P]` keeps it, so the forward pass uses exactly
        :math:`P_q s`.
        """
        step = self._step(which)
        if tuple(scale.shape) != tuple(step.shape):
            raise ValueError(
                f"{self.name}/{which}: scale shape {scale.shape} does not match the step's {tuple(step.shape)}"
            )
        step.assign(scale)
        return (
            values * np.broadcast_to(scale, values.shape).astype(np.float64)
        ).astype(np.float32)


def _dense_call(layer, inputs):
    outputs = ops.matmul(inputs, layer.quantized_kernel())
    bias = layer.quantized_bias()
    if bias is not None:
        outputs = ops.add(outputs, bias)
    return layer.activation(outputs) if layer.activation is not None else outputs


def _conv_call(layer, inputs):
    outputs = layer.convolution_op(inputs, layer.quantized_kernel())
    bias = layer.quantized_bias()
    if bias is not None:
        if layer.data_format == "channels_last":
            bias_shape = (1,) * (layer.rank + 1) + (layer.filters,)
        else:
            bias_shape = (1, layer.filters) + (1,) * layer.rank
        outputs = ops.add(outputs, ops.reshape(bias, bias_shape))
    return layer.activation(outputs) if layer.activation is not None else outputs


_FIXED_DOC = """
    Forward: symmetric min-max fake quantization of the kernel (and of the bias when
    ``quantize_bias``, one scale), recomputed from the current weights at every call:
    :math:`s_g = \\max_{g}|W|/(2^{b-1}-1)`, :math:`W_{rec} = \\operatorname{clip}(\\operatorname{round}(W/s),
    -(2^{b-1}-1), 2^{b-1}-1)\\, s` (:func:`minmax_quantize`). Backward: straight-through for the
    weights (identity; nothing is clipped because :math:`s` comes from the maximum).

    Arguments:
        bits: bit width, 2..16 (default 8).
        granularity: ``"scalar"`` (per tensor, default), or an axis granularity of
            :data:`lqs.quantizers.GRANULARITY_AXES` that fits the kernel (per output channel:
            ``"column"`` for Dense, ``"filter"`` for Conv2D).
        quantize_bias: also fake-quantize the bias (per tensor); default False keeps it float32.

    References:
        Jacob et al. 2018, https://arxiv.org/abs/1712.05877 ; Krishnamoorthi 2018,
        https://arxiv.org/abs/1806.08342 .
"""

_LSQ_DOC = """
    Forward: :math:`\\hat W = \\operatorname{round}(\\operatorname{clip}(W/s, -Q_N, Q_P))\\, s` with a
    trainable step ``kernel_step`` (and ``bias_step`` when ``quantize_bias``), :math:`Q_N = 2^{b-1}`,
    :math:`Q_P = 2^{b-1}-1`; gradients of :func:`lsq_quantize` (step gradient scaled by
    :math:`g = 1/\\sqrt{N Q_P}`, :math:`N` the weights sharing the step). Steps start at
    :math:`2\\langle|W|\\rangle/\\sqrt{Q_P}` per group from the weights at build time
    (``initialize_steps()`` redoes this after loading pretrained weights) and are kept
    :math:`\\ge 100\\,\\epsilon` by a constraint.

    Arguments:
        bits: bit width, 2..16 (default 4).
        granularity: ``"scalar"`` (per tensor, default, the paper's setting) or an axis
            granularity that fits the kernel (``"column"``: per output unit of a Dense,
            ``"filter"``: per output channel of a Conv2D).
        quantize_bias: also quantize the bias with its own step; default False keeps it float32.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, https://arxiv.org/abs/1902.08153 .
"""


@keras.saving.register_keras_serializable(package="lqs")
class FixedBitsDense(_FixedBitsMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with fixed-bit symmetric min-max fake-quantized weights (STE).

    All ``keras.layers.Dense`` arguments are accepted (``**dense_kwargs``).
    """

    __doc__ += _FIXED_DOC
    _granularities = DENSE_GRANULARITIES

    def __init__(
        self,
        units: int,
        bits: int = 8,
        granularity: str = "scalar",
        quantize_bias: bool = False,
        **dense_kwargs,
    ):
        super().__init__(units, **dense_kwargs)
        self._init_weight_quant(bits, granularity, quantize_bias)

    def call(self, inputs, training=None):
        return _dense_call(self, inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._weight_quant_config()}


@keras.saving.register_keras_serializable(package="lqs")
class FixedBitsConv2D(_FixedBitsMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with fixed-bit symmetric min-max fake-quantized weights (STE).

    All ``keras.layers.Conv2D`` arguments are accepted (``**conv_kwargs``); kernel layout
    ``(kh, kw, cin, cout)``.
    """

    __doc__ += _FIXED_DOC
    _granularities = GRANULARITIES

    def __init__(
        self,
        filters: int,
        kernel_size,
        bits: int = 8,
        granularity: str = "scalar",
        quantize_bias: bool = False,
        **conv_kwargs,
    ):
        super().__init__(filters, kernel_size, **conv_kwargs)
        self._init_weight_quant(bits, granularity, quantize_bias)

    def call(self, inputs):
        return _conv_call(self, inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._weight_quant_config()}


@keras.saving.register_keras_serializable(package="lqs")
class LSQDense(_LSQMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with Learned Step Size Quantization of its weights.

    All ``keras.layers.Dense`` arguments are accepted (``**dense_kwargs``).
    """

    __doc__ += _LSQ_DOC
    _granularities = DENSE_GRANULARITIES

    def __init__(
        self,
        units: int,
        bits: int = 4,
        granularity: str = "scalar",
        quantize_bias: bool = False,
        **dense_kwargs,
    ):
        super().__init__(units, **dense_kwargs)
        self._init_weight_quant(bits, granularity, quantize_bias)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_steps()

    def call(self, inputs, training=None):
        return _dense_call(self, inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._weight_quant_config()}


@keras.saving.register_keras_serializable(package="lqs")
class LSQConv2D(_LSQMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with Learned Step Size Quantization of its weights.

    All ``keras.layers.Conv2D`` arguments are accepted (``**conv_kwargs``).
    """

    __doc__ += _LSQ_DOC
    _granularities = GRANULARITIES

    def __init__(
        self,
        filters: int,
        kernel_size,
        bits: int = 4,
        granularity: str = "scalar",
        quantize_bias: bool = False,
        **conv_kwargs,
    ):
        super().__init__(filters, kernel_size, **conv_kwargs)
        self._init_weight_quant(bits, granularity, quantize_bias)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_steps()

    def call(self, inputs):
        return _conv_call(self, inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._weight_quant_config()}


# --------------------------------------------------------------------------------------- PTQ

_COMMON_KEYS = (
    "name",
    "trainable",
    "dtype",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_DENSE_KEYS = _COMMON_KEYS + ("units",)
_CONV_KEYS = _COMMON_KEYS + (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
)


def _ptq_replacement(
    layer, bits: int, per_channel: bool, quantize_bias: bool, quantize_dense: bool
):
    """The FixedBits twin of a Dense/Conv2D-like layer, or None for a layer left as it is."""
    if isinstance(layer, (keras.layers.Dense, QDense)):
        if not quantize_dense:
            return None
        cls, keys, channel = FixedBitsDense, _DENSE_KEYS, "column"
    elif isinstance(layer, (keras.layers.Conv2D, QConv2D)):
        cls, keys, channel = FixedBitsConv2D, _CONV_KEYS, "filter"
    else:
        return None
    config = layer.get_config()
    kwargs = {k: config[k] for k in keys if k in config}
    kwargs.update(
        bits=bits,
        granularity=channel if per_channel else "scalar",
        quantize_bias=quantize_bias,
    )
    return cls(**kwargs)


def ptq_minmax(
    model: keras.Model,
    bits: int,
    per_channel: bool = False,
    *,
    quantize_bias: bool = False,
    quantize_dense: bool = True,
) -> keras.Model:
    """Post-training symmetric min-max quantization of a trained model.

    Returns a clone of ``model`` in which every Dense/Conv2D-like layer (``keras.layers.Dense``,
    ``keras.layers.Conv2D``, :class:`lqs.layers.QDense`, :class:`lqs.layers.QConv2D`, the LSQ and
    fixed-bit layers of this module) is replaced by a :class:`FixedBitsDense` / :class:`FixedBitsConv2D` with the
    same name, shape and activation, carrying the trained **float** weights, quantized as
    :math:`s_g = \\max_g|W|/(2^{b-1}-1)`, :math:`W_{rec} = \\operatorname{clip}(\\operatorname{round}(W/s),
    \\pm(2^{b-1}-1))\\, s`. All other layers (BatchNormalization, Dropout, Flatten, pooling, Add, ...)
    are cloned with their weights. Nested Sequential/functional sub-models are cloned recursively;
    a :class:`lqs.losses.LossTermsModel` is unwrapped to its network first.

    For :class:`lqs.layers.QDense` / :class:`lqs.layers.QConv2D` (nested or loss-term models) PTQ
    starts from their float shadow weights, not from their learned :math:`\\lfloor P/s \\rfloor s`;
    for LSQ layers from their float weights, not their step-quantized ones.

    If ``model`` is compiled, the clone is compiled from the same compile config (fresh optimizer).

    Arguments:
        model: a built Sequential or functional Keras model.
        bits: bit width 2..16.
        per_channel: False (default): one scale per tensor; True: one per output channel
            (``"column"`` for Dense, ``"filter"`` for Conv2D).
        quantize_bias: also quantize biases (one scale per bias); default False keeps them float32.
        quantize_dense: False leaves every Dense layer float32 (only the convolutions are
            quantized), so PTQ quantizes the same layers as a trained network built with
            ``quantize_dense=False`` (:func:`lqs.models.build_model`; the thesis's CNN and ResNet).

    Returns:
        The quantized clone (its layers implement the quantized-layer protocol for :mod:`lqs.memory`).

    References:
        Krishnamoorthi 2018, https://arxiv.org/abs/1806.08342 (symmetric per-tensor/per-channel PTQ).
    """
    bits = check_bits(bits)
    if isinstance(model, LossTermsModel):
        model = model.network
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(
            f"ptq_minmax needs a Sequential or functional model, got {type(model).__name__}; "
            "subclassed models cannot be cloned"
        )
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; build or train it before ptq_minmax"
        )

    pairs: list[tuple[Any, Any]] = []

    def clone_function(layer):
        new = _ptq_replacement(layer, bits, per_channel, quantize_bias, quantize_dense)
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((new, layer))
        return new

    clone = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True
    )
    if not clone.built:
        clone.build(model.input_shape)
    for new, old in pairs:
        if isinstance(new, (FixedBitsDense, FixedBitsConv2D)):
            new.kernel.assign(ops.convert_to_numpy(old.kernel))
            if new.use_bias:
                new.bias.assign(ops.convert_to_numpy(old.bias))
        elif old.weights:
            new.set_weights(old.get_weights())
    if getattr(model, "compiled", False):
        try:
            clone.compile_from_config(model.get_compile_config())
        except Exception as err:
            warnings.warn(
                f"ptq_minmax: could not compile the clone like the model ({err}); compile it yourself",
                stacklevel=2,
            )
    return clone


def _is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)
