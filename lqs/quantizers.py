"""The nested quantizer (thesis section 3.1): functional core and Keras layer.

Forward, for a parameter ``P`` and a positive scale ``s`` that broadcasts against it:

.. math::

    P_q = \\lfloor P / s \\rfloor, \\qquad P_{rec} = P_q \\cdot s .

Backward, with the upstream gradient :math:`G = \\partial L / \\partial P_{rec}`:

* :math:`\\partial L / \\partial P = G` (straight-through estimator).
* per element, the ratio :math:`r = |G| / |P_{rec}|` (float32 machine epsilon in place of
  :math:`|P_{rec}|` where :math:`P_{rec}` is exactly 0);
* per element, the vote :math:`g = -\\tanh(\\lambda - r)` where :math:`r < \\lambda`, else 0;
  a scale group in which *every* element has :math:`r \\ge \\lambda` votes the constant
  :math:`-\\tanh(\\lambda)` for all its elements (the thesis implementation's behaviour; switch it
  off with ``all_above_vote=False`` to get the text's pure "zero vote");
* per scale group, :math:`m = \\max |P_q|` and
  :math:`\\partial L / \\partial s = m \\cdot \\operatorname{mean}_{group}(g)` (``aggregate="sum"``
  sums instead).

The loss-term networks (thesis 3.2) use the same forward with a plain STE: the scale receives no
gradient from the forward pass (:func:`ste_quantize`, ``scale_gradient="ste"``).

Granularity names follow the thesis implementation: they name the axis of the stored Keras array
that keeps its own scales (see :data:`GRANULARITY_AXES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from lqs import fused

__all__ = [
    "EPS",
    "MIN_SCALE",
    "GRANULARITY_AXES",
    "GRANULARITIES",
    "DENSE_GRANULARITIES",
    "BIAS_GRANULARITIES",
    "SCALE_GRADIENTS",
    "AGGREGATES",
    "IntegerTensor",
    "scale_shape",
    "group_axes",
    "nested_quantize",
    "ste_quantize",
    "integer_values",
    "scale_for_bits",
    "MinValue",
    "NestedQuantizer",
    "check_threshold",
]

#: float32 machine epsilon, the stand-in for ``|P_rec|`` where it is exactly zero
EPS: float = float(np.finfo(np.float32).eps)
#: float32 thresholds in this range skip the ``tanh`` of the votes (``tanh(v) == v`` there)
_SKIP_TANH_THRESHOLDS = (2.0**-100, 2.0**-12)
#: initial value and lower bound of every learned scale (thesis implementation, ``100 * eps``)
MIN_SCALE: float = 100.0 * EPS

#: granularity name -> axis of the stored Keras array that keeps its own scales (None = one scale)
GRANULARITY_AXES: dict[str, int | None] = {
    "scalar": None,
    "row": 0,
    "column": 1,
    "channel": 2,
    "filter": 3,
}
GRANULARITIES: tuple[str, ...] = tuple(GRANULARITY_AXES)
#: granularities of a dense kernel ``(in, out)`` (``channel``/``filter`` need a 4-D kernel)
DENSE_GRANULARITIES: tuple[str, ...] = ("scalar", "row", "column")
#: granularities of a bias vector ``(units,)``: one scale, or one per unit
BIAS_GRANULARITIES: tuple[str, ...] = ("scalar", "row")
SCALE_GRADIENTS: tuple[str, ...] = ("threshold", "ste")
AGGREGATES: tuple[str, ...] = ("mean", "sum")


@dataclass(frozen=True)
class IntegerTensor:
    """One quantized parameter in integer form: ``values * scale`` reconstructs it.

    Attributes:
        name: parameter name inside its layer (``"kernel"``, ``"bias"``).
        values: the integers ``P_q`` (int64, the parameter's shape).
        scale: the scales (float32, broadcastable to ``values``; one entry per scale group).
        granularity: granularity name of the scale (see :data:`GRANULARITY_AXES`).
    """

    name: str
    values: np.ndarray
    scale: np.ndarray
    granularity: str

    def reconstruct(self) -> np.ndarray:
        """The fake-quantized float32 parameter ``values * scale``."""
        return (self.values.astype(np.float32) * self.scale.astype(np.float32)).astype(
            np.float32
        )

    @property
    def group_count(self) -> int:
        """Number of scale groups (= number of stored scales)."""
        return int(np.size(self.scale))


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as float or raise ``ValueError`` (it must be a finite number >= 0)."""
    if isinstance(threshold, (str, bytes, bool, np.bool_)):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(
            f"threshold must be a number >= 0, got {threshold!r}"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return value


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"unknown {kind} {value!r}; allowed: {', '.join(map(repr, allowed))}"
        )
    return value


def _positive_float(name: str, value) -> float:
    """``value`` as float if it is a finite number > 0, else ``ValueError`` naming ``name``."""
    bad = isinstance(value, (str, bytes, bool, np.bool_))
    try:
        number = float(value)
    except (TypeError, ValueError):
        bad = True
    if bad or not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def scale_shape(granularity: str, param_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of the scale array for a parameter of ``param_shape`` at ``granularity``.

    ``"scalar"`` gives ``(1,)``; an axis granularity gives the parameter's rank with size 1
    everywhere but that axis, e.g. a Dense kernel ``(in, out)`` at ``"column"`` gives ``(1, out)``,
    a Conv2D kernel ``(kh, kw, cin, cout)`` at ``"filter"`` gives ``(1, 1, 1, cout)``.

    Raises:
        ValueError: unknown granularity, or one whose axis the parameter does not have.
    """
    _check_choice("granularity", granularity, GRANULARITIES)
    shape = tuple(int(d) for d in param_shape)
    axis = GRANULARITY_AXES[granularity]
    if axis is None:
        return (1,)
    if axis >= len(shape):
        fitting = [
            g for g, a in GRANULARITY_AXES.items() if a is None or a < len(shape)
        ]
        raise ValueError(
            f"granularity {granularity!r} needs axis {axis}, but the parameter has shape {shape} "
            f"(rank {len(shape)}); allowed for this rank: {', '.join(map(repr, fitting))}"
        )
    return tuple(d if i == axis else 1 for i, d in enumerate(shape))


def group_axes(param_shape: Sequence[int], scale_shape_: Sequence[int]) -> list[int]:
    """Axes of the parameter over which one scale is shared (the reduction axes of a group).

    A scale of shape ``(1,)`` is one group over every axis; otherwise the scale has the
    parameter's rank and each size-1 axis of the scale is shared.
    """
    p = tuple(int(d) for d in param_shape)
    s = tuple(int(d) for d in scale_shape_)
    if s == (1,) and len(p) != 1:
        return list(range(len(p)))
    if len(s) != len(p):
        raise ValueError(
            f"scale of shape {s} does not broadcast as a scale group against a parameter of shape {p}: "
            "use shape (1,) or the parameter's rank with size-1 axes"
        )
    for i, (dp, ds) in enumerate(zip(p, s)):
        if ds not in (1, dp):
            raise ValueError(
                f"scale axis {i} has size {ds}; allowed: 1 or the parameter's size {dp}"
            )
    return [i for i, ds in enumerate(s) if ds == 1]


def nested_quantize(
    p: tf.Tensor,
    scale: tf.Tensor,
    threshold: float,
    *,
    aggregate: str = "mean",
    all_above_vote: bool = True,
    min_scale: float | None = None,
) -> tf.Tensor:
    """Quantize ``p`` with ``scale``: forward ``floor(p / scale) * scale``, threshold-vote scale gradient.

    Forward: :math:`P_{rec} = \\lfloor P/s \\rfloor s`. Gradients (module docstring): straight
    through for ``p``; for ``scale``, :math:`m \\cdot \\operatorname{mean}_{group}(g)` with
    :math:`g = -\\tanh(\\lambda - r)` where :math:`r = |G|/|P_{rec}| < \\lambda`.

    The backward pass gives these equations bit for bit with few full-size passes and no
    control flow (see :func:`_ratio` and :func:`_group_vote`; scales of at least :math:`2^{-126}`):
    in float32 it skips the ``tanh`` when :math:`2^{-100} \\le \\lambda \\le 2^{-12}` and reads
    the all-above groups off the vote sum. Given a ``min_scale`` of at least float32 eps, it
    also drops one full-size pass from the ratio's denominator (see :func:`_floored_ratio`),
    and on a CPU-only machine in float32 it runs the fused kernels of :mod:`lqs.fused`: the
    same numbers, in one pass forward and one backward (``LQS_FUSED_KERNELS=off`` disables them).

    Arguments:
        p: the parameter (any rank, floating dtype; float16/bfloat16 compute works).
        scale: positive scales, shape ``(1,)`` or the parameter's rank with size-1 axes.
        threshold: :math:`\\lambda \\ge 0`, the ratio below which an element votes for a coarser scale.
        aggregate: ``"mean"`` (default) or ``"sum"`` of the votes over a scale group.
        all_above_vote: if True (default, the thesis implementation), a group whose elements all
            have :math:`r \\ge \\lambda` votes :math:`-\\tanh(\\lambda)`; if False it votes 0 (thesis text).
        min_scale: a lower bound that every scale keeps (``NestedQuantizer`` passes its
            ``MinValue`` floor), or None (no promise). If it is at least float32 eps the
            backward uses the shorter denominator, which gives the same numbers for every
            scale of at least eps. A scale assigned below both breaks the promise: elements
            with :math:`0 < |P_{rec}| < \\epsilon` then get :math:`\\epsilon` as their denominator.

    Returns:
        The reconstructed parameter :math:`P_{rec}`, same shape and dtype as ``p``.

    References:
        Thesis section 3.1 ("Learned Scale Factor").
    """
    threshold = check_threshold(threshold)
    _check_choice("aggregate", aggregate, AGGREGATES)
    floored = min_scale is not None and _positive_float("min_scale", min_scale) >= EPS
    p = tf.convert_to_tensor(p)
    scale = tf.cast(tf.convert_to_tensor(scale), p.dtype)
    axes = group_axes(p.shape, scale.shape)
    group_size = int(np.prod([p.shape[a] for a in axes], dtype=np.int64))
    spec = _VoteSpec(threshold, aggregate, all_above_vote, group_size, p.dtype)
    ops, layout = _fused_plan(p, axes, spec, floored)
    if ops is not None:
        return _fused_quantize(ops, layout, p, scale, axes, spec)
    return _tf_quantize(p, scale, axes, spec, floored)


def _tf_quantize(p, scale, axes, spec: _VoteSpec, floored: bool) -> tf.Tensor:
    """:func:`nested_quantize` in TensorFlow operations (any dtype, layout and device)."""
    scale_shape_ = tuple(scale.shape)

    @tf.custom_gradient
    def _quantize(p_in: tf.Tensor, s_in: tf.Tensor):
        p_q = tf.math.floordiv(p_in, s_in)  # floor(p / s) in one pass
        p_rec = p_q * s_in

        def grad(upstream: tf.Tensor):
            abs_q = tf.abs(p_q)
            if floored:
                ratio = _floored_ratio(upstream, p_rec)
            else:
                ratio = _ratio(upstream, p_rec, abs_q)
            vote = tf.nn.relu(tf.constant(spec.threshold, ratio.dtype) - ratio)
            group_vote = _group_vote(vote, axes, spec, ratio)
            m = tf.reduce_max(abs_q, axis=axes, keepdims=True)
            return upstream, _reshaped(m * group_vote, scale_shape_)

        return p_rec, grad

    return _quantize(p, scale)


def _fused_plan(p: tf.Tensor, axes: Sequence[int], spec: _VoteSpec, floored: bool):
    """``(ops, layout)`` of :mod:`lqs.fused` where its kernels give this backward, else ``(None, None)``.

    They do for float32 with the shorter denominator (``floored``), scale groups in an
    ``(outer, groups, inner)`` layout, and an all-above rule read off the vote sum (or none).
    """
    fits = (
        floored
        and spec.dtype == tf.float32
        and p.shape.is_fully_defined()
        and (spec.sum_detects_below or not spec.all_above_vote)
    )
    layout = fused.group_layout(p.shape, axes) if fits else None
    if layout is None:
        return None, None
    ops = fused.kernels()
    return (ops, layout) if ops is not None else (None, None)


def _fused_quantize(ops, layout, p, scale, axes, spec: _VoteSpec) -> tf.Tensor:
    """:func:`nested_quantize` through the fused kernels: the same forward and gradients bit for bit.

    The forward kernel returns :math:`P_{rec}` and :math:`m = \\max |P_q|` per group; the
    backward kernel the votes :math:`\\mathrm{relu}(\\lambda - |G| / \\max(|P_{rec}|, \\epsilon))`
    (:func:`_floored_ratio`); :func:`_group_vote` reduces them as in the TensorFlow path.
    """
    scale_shape_ = tuple(scale.shape)

    @tf.custom_gradient
    def _quantize(p_in: tf.Tensor, s_in: tf.Tensor):
        p_rec, m = fused.forward(ops, p_in, s_in, layout)

        def grad(upstream: tf.Tensor):
            vote = fused.threshold_vote(ops, upstream, p_rec, spec.threshold, EPS)
            group_vote = _group_vote(vote, axes, spec)
            d_scale = tf.reshape(m, group_vote.shape) * group_vote
            return upstream, _reshaped(d_scale, scale_shape_)

        return p_rec, grad

    return _quantize(p, scale)


def _reshaped(t: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
    """``t`` in ``shape`` (no operation when it has that shape already)."""
    return t if tuple(t.shape) == shape else tf.reshape(t, shape)


def _ratio(upstream: tf.Tensor, p_rec: tf.Tensor, abs_q: tf.Tensor) -> tf.Tensor:
    """:math:`r = |G| / |P_{rec}|`, float32 eps in place of :math:`|P_{rec}|` where :math:`P_{rec} = 0`.

    The denominator is :math:`\\max(|P_{rec}|, \\epsilon - |P_q|)`: where :math:`P_q = 0` it is
    :math:`\\max(0, \\epsilon) = \\epsilon`; elsewhere :math:`|P_q| \\ge 1` makes the second term
    negative, so it is :math:`|P_{rec}|`. That is the definition bit for bit wherever
    :math:`P_{rec} = 0` exactly when :math:`P_q = 0`: for every scale of at least the smallest
    normal number (:math:`2^{-126}` in float32; a nonzero :math:`P_q` then gives
    :math:`|P_{rec}| \\ge s`). Smaller scales flush to zero in TensorFlow's CPU kernels and make
    the forward pass NaN anyway. Cheap element-wise passes, no ``where`` and no ``tf.cond``
    (a ``tf.cond`` switches the whole training step to TensorFlow's slower control-flow executor).
    """
    eps = tf.constant(EPS, p_rec.dtype)
    return tf.abs(upstream) / tf.maximum(tf.abs(p_rec), eps - abs_q)


def _floored_ratio(upstream: tf.Tensor, p_rec: tf.Tensor) -> tf.Tensor:
    """:math:`r = |G| / \\max(|P_{rec}|, \\epsilon)`: :func:`_ratio` for scales of at least eps.

    Where :math:`P_q = 0`, :math:`|P_{rec}| = 0` and the denominator is :math:`\\epsilon`;
    elsewhere :math:`|P_q| \\ge 1`, so :math:`|P_{rec}| = \\mathrm{fl}(|P_q| s) \\ge s \\ge \\epsilon`
    (rounding is monotone and :math:`s` is representable) and the denominator is
    :math:`|P_{rec}|`. Both are the definition's values bit for bit, in every floating dtype
    (:math:`\\epsilon = 2^{-23}` is exact in each), with one full-size pass fewer than
    :func:`_ratio` (no :math:`\\epsilon - |P_q|`). Valid only while every scale is at least
    :math:`\\epsilon`: :func:`nested_quantize` uses it when its ``min_scale`` promises that.
    """
    eps = tf.constant(EPS, p_rec.dtype)
    return tf.abs(upstream) / tf.maximum(tf.abs(p_rec), eps)


@dataclass(frozen=True)
class _VoteSpec:
    """How :func:`_group_vote` reduces the votes of one quantizer (fixed at trace time).

    Attributes:
        threshold: :math:`\\lambda`.
        aggregate: ``"mean"`` or ``"sum"``.
        all_above_vote: apply the all-above-threshold rule.
        group_size: elements per scale group.
        dtype: compute dtype of the parameter.
    """

    threshold: float
    aggregate: str
    all_above_vote: bool
    group_size: int
    dtype: tf.DType

    @property
    def skips_tanh(self) -> bool:
        """True where :math:`\\tanh(v) = v` for every vote :math:`v = \\mathrm{relu}(\\lambda - r)`.

        In float32 with :math:`2^{-100} \\le \\lambda \\le 2^{-12}`, a vote is 0 or a normal
        number in :math:`[2^{-25}\\lambda, \\lambda]` (see :attr:`sum_detects_below`), and
        :math:`\\tanh(v)` rounds to :math:`v` for :math:`v \\le 2^{-12}` (:math:`v - \\tanh v < v^3/3`,
        below half an ulp of :math:`v`); TensorFlow's CPU kernel returns :math:`v` itself there
        (checked for every normal float32 in that range, and by ``tests/test_quantizers.py``).
        """
        low, high = _SKIP_TANH_THRESHOLDS
        return self.dtype == tf.float32 and low <= self.threshold <= high

    @property
    def votes_per_group(self) -> float:
        """Factor of the all-above vote: 1 for ``"mean"``, the group size for ``"sum"``."""
        return 1.0 if self.aggregate == "mean" else float(self.group_size)

    @property
    def sum_detects_below(self) -> bool:
        """True where "some :math:`r < \\lambda` in the group" is exactly "vote sum > 0".

        In float32 with :math:`\\lambda \\ge n \\cdot 2^{-100}` (:math:`n` = group size), an
        :math:`r < \\lambda` gives :math:`\\lambda - r \\ge 2^{-25}\\lambda`, a normal number, so
        its vote is positive; a sum of non-negative terms is at least its largest term, and the
        mean (sum / :math:`n`) stays above the smallest normal number (no flush to zero).
        Without such a vote every term is 0 and so is the sum. This saves the full-size
        ``reduce_min`` of the ratios.
        """
        return (
            self.dtype == tf.float32 and self.threshold >= self.group_size * 2.0**-100
        )


def _group_vote(
    vote: tf.Tensor,
    axes: Sequence[int],
    spec: _VoteSpec,
    ratio: tf.Tensor | None = None,
) -> tf.Tensor:
    """Per scale group: :math:`-\\operatorname{agg}(\\tanh(v))` of the votes, all-above rule.

    ``vote`` is :math:`v = \\mathrm{relu}(\\lambda - r)`: :math:`\\tanh(v)` is the vote
    :math:`\\tanh(\\lambda - r)` below the threshold and :math:`\\tanh(0) = 0` at or above it;
    the sign is applied to the reduced value (exactly the reduction of the negated votes: IEEE
    rounding is symmetric). A group in which no :math:`r` is below :math:`\\lambda` votes the
    constant :math:`-\\tanh(\\lambda)` (times the group size for ``aggregate="sum"``) when
    ``all_above_vote`` is set; that test needs the ratios ``ratio`` unless
    :attr:`_VoteSpec.sum_detects_below`.
    """
    dtype = vote.dtype
    lam = tf.constant(spec.threshold, dtype)
    if not spec.skips_tanh:
        vote = tf.tanh(vote)
    reduce = tf.reduce_mean if spec.aggregate == "mean" else tf.reduce_sum
    total = reduce(vote, axis=axes, keepdims=True)
    if not spec.all_above_vote:
        return -total
    if spec.sum_detects_below:
        any_below = total > 0
    else:
        any_below = tf.reduce_min(ratio, axis=axes, keepdims=True) < lam
    all_above = -tf.tanh(lam) * tf.constant(spec.votes_per_group, dtype)
    return tf.where(any_below, -total, all_above)


def ste_quantize(p: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Same forward as :func:`nested_quantize`, plain straight-through gradient, none for the scale.

    Forward :math:`\\lfloor P/s \\rfloor s`; :math:`\\partial L/\\partial P = G`,
    :math:`\\partial L/\\partial s = 0`. Used by the loss-term networks (thesis 3.2), where the
    scale learns only through the loss terms.
    """
    p = tf.convert_to_tensor(p)
    scale = tf.cast(tf.convert_to_tensor(scale), p.dtype)

    @tf.custom_gradient
    def _quantize(p_in: tf.Tensor, s_in: tf.Tensor):
        p_rec = tf.math.floordiv(p_in, s_in) * s_in  # floor(p / s) in one pass

        def grad(upstream: tf.Tensor):
            return upstream, tf.zeros_like(s_in)

        return p_rec, grad

    return _quantize(p, scale)


def integer_values(p, scale) -> np.ndarray:
    """The integers :math:`P_q = \\lfloor P/s \\rfloor` as int64 NumPy (computed in float32 like the forward)."""
    p32 = tf.cast(tf.convert_to_tensor(p), tf.float32)
    s32 = tf.cast(tf.convert_to_tensor(scale), tf.float32)
    return tf.floor(p32 / s32).numpy().astype(np.int64)


def scale_for_bits(
    p, granularity: str, bits: int, min_scale: float = MIN_SCALE
) -> np.ndarray:
    """Scales that make ``floor(p / s)`` fit a signed ``bits``-bit integer in every group.

    :math:`s = (1 + 2^{-20}) \\max_{group} |P| / (2^{b-1} - 1)`, so
    :math:`P_q = \\lfloor P/s \\rfloor \\in [-(2^{b-1}-1), 2^{b-1}-2]` and every group needs at most ``b``
    bits under :mod:`lqs.memory`'s width :math:`\\lceil \\log_2(\\max|P_q|+1) \\rceil + 1` (the tiny factor keeps
    the group's largest magnitude strictly inside the top bin despite float rounding). Clipped below at
    ``min_scale``. ``bits`` must be >= 2: with ``floor`` every negative value needs at least ``-1``.
    """
    if int(bits) != bits or bits < 2:
        raise ValueError(f"bits must be an integer >= 2, got {bits!r}")
    arr = np.asarray(p, dtype=np.float32)
    shape = scale_shape(granularity, arr.shape)
    axes = tuple(group_axes(arr.shape, shape))
    max_abs = np.max(np.abs(arr), axis=axes, keepdims=True).reshape(shape)
    return np.maximum(
        max_abs / (2.0 ** (bits - 1) - 1) * (1 + 2.0**-20), min_scale
    ).astype(np.float32)


@keras.saving.register_keras_serializable(package="lqs")
class MinValue(keras.constraints.Constraint):
    """Keep a weight ``>= min_value`` after every optimizer step (``w <- max(w, min_value)``)."""

    def __init__(self, min_value: float = MIN_SCALE):
        self.min_value = float(min_value)

    def __call__(self, w):
        return keras.ops.maximum(w, keras.ops.cast(self.min_value, w.dtype))

    def get_config(self) -> dict:
        return {"min_value": self.min_value}


@keras.saving.register_keras_serializable(package="lqs")
class NestedQuantizer(keras.layers.Layer):
    """Keras layer owning a learned scale; ``call(P)`` returns the fake-quantized ``P_rec``.

    Forward :math:`P_{rec} = \\lfloor P/s \\rfloor s`; gradients as in :func:`nested_quantize`
    (``scale_gradient="threshold"``) or :func:`ste_quantize` (``scale_gradient="ste"``).

    Arguments:
        granularity: which axis of the parameter keeps its own scales: ``"scalar"``, ``"row"``
            (axis 0), ``"column"`` (axis 1), ``"channel"`` (axis 2), ``"filter"`` (axis 3).
        threshold: :math:`\\lambda \\ge 0` of the scale-gradient vote.
        scale_gradient: ``"threshold"`` (the nested quantizer) or ``"ste"`` (no forward-pass
            gradient for the scale; the loss-term networks).
        aggregate: ``"mean"`` or ``"sum"`` of the votes over a scale group.
        all_above_vote: the implementation's all-above-threshold rule (True) or the text's zero vote.
        scale_init: initial scale value (default ``100 * eps``, the implementation's).
        min_scale: lower bound kept by a :class:`MinValue` constraint (default ``100 * eps``).
        init_bits: if set, :meth:`init_from` is used by the owning layer to start the scales so that
            every group fits ``init_bits`` bits (:func:`scale_for_bits`) instead of ``scale_init``.
    """

    def __init__(
        self,
        granularity: str = "scalar",
        threshold: float = 1e-9,
        *,
        scale_gradient: str = "threshold",
        aggregate: str = "mean",
        all_above_vote: bool = True,
        scale_init: float = MIN_SCALE,
        min_scale: float = MIN_SCALE,
        init_bits: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.granularity = _check_choice("granularity", granularity, GRANULARITIES)
        self.threshold = check_threshold(threshold)
        self.scale_gradient = _check_choice(
            "scale_gradient", scale_gradient, SCALE_GRADIENTS
        )
        self.aggregate = _check_choice("aggregate", aggregate, AGGREGATES)
        if not isinstance(all_above_vote, (bool, np.bool_)):
            raise ValueError(
                f"all_above_vote must be True or False, got {all_above_vote!r}"
            )
        self.all_above_vote = bool(all_above_vote)
        self.min_scale = _positive_float("min_scale", min_scale)
        self.scale_init = _positive_float("scale_init", scale_init)
        if not self.scale_init >= self.min_scale:
            raise ValueError(
                f"scale_init must be >= min_scale={min_scale}, got {scale_init!r}"
            )
        integral = isinstance(init_bits, (int, np.integer)) and not isinstance(
            init_bits, bool
        )
        if init_bits is not None and (not integral or init_bits < 2):
            raise ValueError(
                f"init_bits must be an integer >= 2 or None, got {init_bits!r}"
            )
        self.init_bits = None if init_bits is None else int(init_bits)
        self.scale = None

    def build(self, input_shape) -> None:
        shape = scale_shape(self.granularity, input_shape)
        self.scale = self.add_weight(
            name="scale",
            shape=shape,
            initializer=keras.initializers.Constant(self.scale_init),
            constraint=MinValue(self.min_scale),
            trainable=True,
            dtype="float32",
        )
        self.built = True

    def call(self, p):
        if self.scale_gradient == "ste":
            return ste_quantize(p, self.scale)
        return nested_quantize(
            p,
            self.scale,
            self.threshold,
            aggregate=self.aggregate,
            all_above_vote=self.all_above_vote,
            min_scale=self.min_scale,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def init_from(self, p, bits: int | None = None) -> None:
        """Set the scales with :func:`scale_for_bits` per group (``bits`` defaults to ``init_bits``)."""
        bits = self.init_bits if bits is None else bits
        if bits is None:
            raise ValueError("init_from needs bits (or init_bits set on the quantizer)")
        self.scale.assign(
            scale_for_bits(
                keras.ops.convert_to_numpy(p), self.granularity, bits, self.min_scale
            )
        )

    def integer_tensor(self, p, name: str) -> IntegerTensor:
        """The parameter ``p`` in integer form with this quantizer's current scales."""
        scale = keras.ops.convert_to_numpy(self.scale).astype(np.float32)
        return IntegerTensor(name, integer_values(p, scale), scale, self.granularity)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "granularity": self.granularity,
            "threshold": self.threshold,
            "scale_gradient": self.scale_gradient,
            "aggregate": self.aggregate,
            "all_above_vote": self.all_above_vote,
            "scale_init": self.scale_init,
            "min_scale": self.min_scale,
            "init_bits": self.init_bits,
        }
