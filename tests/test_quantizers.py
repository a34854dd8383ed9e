"""The nested quantizer against an independent NumPy reference (loops over scale groups),
and bit for bit against its equations written out element by element in TensorFlow; each
test runs with TensorFlow's operations and with the fused kernels of lqs.fused."""

from __future__ import annotations

import itertools
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from bits import assert_bits_equal

import lqs.quantizers as lq
from lqs import QDense
from lqs.quantizers import (
    EPS,
    MIN_SCALE,
    MinValue,
    NestedQuantizer,
    integer_values,
    nested_quantize,
    scale_for_bits,
    scale_shape,
    ste_quantize,
)

EPS32 = np.finfo(np.float32).eps


@pytest.fixture(autouse=True, params=["tensorflow-ops", "fused-kernels"])
def backward_path(request, monkeypatch):
    """Every test here runs twice: with TensorFlow's operations and with lqs.fused's kernels
    (``on``: a failed build fails the test instead of falling back silently)."""
    on = request.param == "fused-kernels"
    monkeypatch.setenv("LQS_FUSED_KERNELS", "on" if on else "off")
    return request.param


def reference(p, s, G, lam, *, all_above=True, aggregate="mean"):
    """Forward and gradients written from the thesis/DESIGN definition, one scale group at a time."""
    p = p.astype(np.float32)
    s = s.astype(np.float32)
    G = G.astype(np.float32)
    s_full = np.broadcast_to(
        s.reshape(s.shape if s.ndim == p.ndim else (1,) * p.ndim), p.shape
    )
    pq = np.floor(p / s_full)
    rec = pq * s_full
    ds = np.zeros(s.shape, dtype=np.float64)
    s_nd = s.reshape(s.shape if s.ndim == p.ndim else (1,) * p.ndim)
    for idx in np.ndindex(*s_nd.shape):
        # element e is in group idx when it matches idx on every axis where the scale varies
        members = []
        for e in np.ndindex(*p.shape):
            if all(s_nd.shape[a] == 1 or e[a] == idx[a] for a in range(p.ndim)):
                members.append(e)
        votes, qmax, any_below = [], 0.0, False
        for e in members:
            denom = abs(rec[e]) if rec[e] != 0 else EPS32
            r = abs(G[e]) / denom
            if r < lam:
                votes.append(-np.tanh(lam - r))
                any_below = True
            else:
                votes.append(0.0)
            qmax = max(qmax, abs(pq[e]))
        if all_above and not any_below:
            votes = [-np.tanh(lam)] * len(members)
        agg = np.mean(votes) if aggregate == "mean" else np.sum(votes)
        ds[np.unravel_index(np.ravel_multi_index(idx, s_nd.shape), s.shape)] = (
            qmax * agg
        )
    return rec, G.copy(), ds


def grads(p, s, G, lam, **kw):
    p_t = tf.constant(p)
    s_v = tf.Variable(s)
    with tf.GradientTape() as tape:
        tape.watch(p_t)
        out = nested_quantize(p_t, s_v, lam, **kw)
        loss = tf.reduce_sum(out * tf.constant(G))  # dL/dP_rec = G
    gp, gs = tape.gradient(loss, [p_t, s_v])
    return out.numpy(), gp.numpy(), gs.numpy()


SHAPES = {
    ("dense", "scalar"): ((5, 4), (1,)),
    ("dense", "row"): ((5, 4), (5, 1)),
    ("dense", "column"): ((5, 4), (1, 4)),
    ("conv", "scalar"): ((3, 3, 2, 4), (1,)),
    ("conv", "row"): ((3, 3, 2, 4), (3, 1, 1, 1)),
    ("conv", "column"): ((3, 3, 2, 4), (1, 3, 1, 1)),
    ("conv", "channel"): ((3, 3, 2, 4), (1, 1, 2, 1)),
    ("conv", "filter"): ((3, 3, 2, 4), (1, 1, 1, 4)),
    ("bias", "scalar"): ((6,), (1,)),
    ("bias", "row"): ((6,), (6,)),
}


def make_case(p_shape, s_shape, seed):
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.5, p_shape).astype(np.float32)
    p.flat[::7] = 0.0  # exact zeros in the parameter
    s = rng.uniform(0.05, 0.2, s_shape).astype(np.float32)
    G = rng.normal(0, 0.05, p_shape).astype(np.float32)
    G.flat[::5] = 0.0
    return p, s, G


def ratio_range(p, s, G):
    rec, _, _ = reference(p, s, G, 0.0)
    denom = np.where(rec == 0, EPS32, np.abs(rec))
    r = np.abs(G) / denom
    return r


@pytest.mark.parametrize("key", list(SHAPES), ids=lambda k: f"{k[0]}-{k[1]}")
@pytest.mark.parametrize("where", ["below", "inside", "above"])
def test_forward_and_gradients_match_reference(key, where):
    p_shape, s_shape = SHAPES[key]
    assert scale_shape(key[1], p_shape) == s_shape
    p, s, G = make_case(
        p_shape, s_shape, seed=zlib.crc32("-".join(key).encode()) % 1000
    )  # hash() varies per process
    r = ratio_range(p, s, G)
    lam = {
        "below": float(r.min()) * 0.5 + 1e-12,
        "inside": float(np.median(r)),
        "above": float(r.max()) * 2,
    }[where]
    out, gp, gs = grads(p, s, G, lam)
    rec, gp_ref, gs_ref = reference(p, s, G, lam)
    np.testing.assert_array_equal(out, rec)
    np.testing.assert_array_equal(gp, gp_ref)
    assert gs.shape == s_shape
    np.testing.assert_allclose(gs, gs_ref, rtol=2e-5, atol=1e-7)
    if where == "above":
        assert np.all(gs <= 0) and np.any(gs < 0)


def test_threshold_below_all_ratios_uses_all_above_rule():
    p, s, G = make_case((5, 4), (1, 4), seed=3)
    G = np.full_like(G, 10.0)  # huge ratios everywhere
    lam = 1e-6
    _, _, gs = grads(p, s, G, lam)
    m = np.max(np.abs(np.floor(p / s)), axis=0, keepdims=True)
    np.testing.assert_allclose(gs, -np.tanh(lam) * m, rtol=1e-5)
    _, _, gs_zero = grads(p, s, G, lam, all_above_vote=False)
    np.testing.assert_array_equal(gs_zero, np.zeros_like(gs_zero))


@pytest.mark.parametrize("all_above", [True, False])
def test_sum_aggregate_and_zero_vote_options(all_above):
    p, s, G = make_case((3, 3, 2, 4), (1, 1, 1, 4), seed=5)
    lam = float(np.median(ratio_range(p, s, G)))
    _, _, gs = grads(p, s, G, lam, aggregate="sum", all_above_vote=all_above)
    _, _, ref = reference(p, s, G, lam, aggregate="sum", all_above=all_above)
    np.testing.assert_allclose(gs, ref, rtol=2e-5, atol=1e-7)


def test_scale_gradient_is_m_times_mean_vote_by_hand():
    # one group of four values; s = 0.5; P = [1.2, -0.7, 0.0, 2.6] -> P_q = [2, -2, 0, 5], P_rec = [1, -1, 0, 2.5]
    p = np.array([1.2, -0.7, 0.0, 2.6], np.float32)
    s = np.array([0.5], np.float32)
    G = np.array([0.1, 0.5, 0.0, 0.25], np.float32)
    # r = [0.1, 0.5, 0/eps = 0, 0.1]; lambda = 0.3 -> votes [-tanh(0.2), 0, -tanh(0.3), -tanh(0.2)]
    lam = 0.3
    out, gp, gs = grads(p, s, G, lam)
    np.testing.assert_allclose(out, [1.0, -1.0, 0.0, 2.5])
    expected = 5 * (-(2 * np.tanh(0.2) + np.tanh(0.3)) / 4)
    np.testing.assert_allclose(gs, [expected], rtol=1e-6)
    np.testing.assert_array_equal(gp, G)


def test_ste_quantize_same_forward_no_scale_gradient():
    p, s, G = make_case((5, 4), (1, 4), seed=7)
    p_t, s_v = tf.constant(p), tf.Variable(s)
    with tf.GradientTape() as tape:
        tape.watch(p_t)
        out = ste_quantize(p_t, s_v)
        loss = tf.reduce_sum(out * G)
    gp, gs = tape.gradient(loss, [p_t, s_v])
    np.testing.assert_array_equal(out.numpy(), nested_quantize(p, s, 1e-3).numpy())
    np.testing.assert_array_equal(gp.numpy(), G)
    np.testing.assert_array_equal(gs.numpy(), np.zeros_like(s))


def test_graph_mode_and_xla_match_eager():
    p, s, G = make_case((3, 3, 2, 4), (1, 1, 2, 1), seed=11)
    lam = float(np.median(ratio_range(p, s, G)))
    s_v = tf.Variable(s)

    def step(p_in):
        with tf.GradientTape() as tape:
            out = nested_quantize(p_in, s_v, lam)
            loss = tf.reduce_sum(out * G)
        return out, tape.gradient(loss, s_v)

    eager = step(tf.constant(p))
    graph = tf.function(step)(tf.constant(p))
    np.testing.assert_array_equal(eager[0].numpy(), graph[0].numpy())
    np.testing.assert_allclose(eager[1].numpy(), graph[1].numpy(), rtol=1e-6)
    try:
        xla = tf.function(step, jit_compile=True)(tf.constant(p))
    except (
        tf.errors.UnimplementedError,
        tf.errors.InvalidArgumentError,
    ) as err:  # pragma: no cover
        pytest.skip(f"XLA unavailable here: {err}")
    np.testing.assert_array_equal(eager[0].numpy(), xla[0].numpy())
    np.testing.assert_allclose(eager[1].numpy(), xla[1].numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_compute(dtype):
    p, s, G = make_case((5, 4), (1, 4), seed=13)
    p_t = tf.cast(tf.constant(p), dtype)
    s_v = tf.Variable(s)  # scales stay float32 variables, cast for compute
    with tf.GradientTape() as tape:
        tape.watch(p_t)
        out = nested_quantize(p_t, s_v, 1e3)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * G)
    gp, gs = tape.gradient(loss, [p_t, s_v])
    assert out.dtype == dtype and gp.dtype == dtype and gs.dtype == tf.float32
    s_low = tf.cast(tf.cast(s, dtype), tf.float32).numpy()
    np.testing.assert_allclose(
        out.numpy().astype(np.float32), np.floor(p / s_low) * s_low, atol=0.02
    )
    assert np.all(gs.numpy() < 0)


@pytest.mark.parametrize(
    "granularity,shape,message",
    [
        ("pixel", (3, 4), "unknown granularity 'pixel'"),
        ("channel", (3, 4), "allowed for this rank: 'scalar', 'row', 'column'"),
        ("filter", (3, 3, 2), "needs axis 3"),
    ],
)
def test_bad_granularity_is_named(granularity, shape, message):
    with pytest.raises(ValueError, match=message):
        scale_shape(granularity, shape)


@pytest.mark.parametrize("bad", [-1e-9, float("nan"), "abc"])
def test_bad_threshold_is_named(bad):
    with pytest.raises(ValueError, match="threshold"):
        NestedQuantizer("scalar", bad)
    with pytest.raises(ValueError, match="threshold"):
        nested_quantize(np.ones(3, np.float32), np.ones(1, np.float32), bad)


@pytest.mark.parametrize("bad", [0.0, -1e-6, float("inf"), "1e-5", True])
def test_bad_min_scale_is_named(bad):
    with pytest.raises(ValueError, match="min_scale must be a finite number > 0"):
        nested_quantize(
            np.ones(3, np.float32), np.ones(1, np.float32), 1e-9, min_scale=bad
        )


def test_layer_promises_its_floor_to_the_backward(monkeypatch):
    # NestedQuantizer hands its MinValue floor to nested_quantize, which uses the shorter
    # denominator only for a floor >= eps (1e-9 keeps the full one)
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("min_scale"))
        return design_quantize(*args, **kwargs)

    monkeypatch.setattr(lq, "nested_quantize", spy)
    for floor in (MIN_SCALE, 1e-9):
        q = NestedQuantizer("column", 1e-9, min_scale=floor, scale_init=MIN_SCALE)
        q(tf.ones((4, 3)))
    assert seen == [MIN_SCALE, 1e-9]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown aggregate 'max'"):
        NestedQuantizer("scalar", 1e-9, aggregate="max")
    with pytest.raises(ValueError, match="unknown scale_gradient"):
        NestedQuantizer("scalar", 1e-9, scale_gradient="lsq")


def test_layer_scale_init_constraint_and_config_round_trip():
    q = NestedQuantizer("column", 1e-8, aggregate="sum", all_above_vote=False, name="q")
    q.build((6, 3))
    assert tuple(q.scale.shape) == (1, 3)
    np.testing.assert_allclose(q.scale.numpy(), MIN_SCALE)
    assert MIN_SCALE == pytest.approx(100 * EPS)
    clone = NestedQuantizer.from_config(q.get_config())
    assert clone.get_config() == q.get_config()
    # the constraint keeps scales positive after a huge optimizer step in the wrong direction
    opt = keras.optimizers.SGD(learning_rate=1e6)
    opt.apply_gradients([(tf.ones((1, 3)) * 10.0, q.scale)])
    np.testing.assert_allclose(q.scale.numpy(), MIN_SCALE)
    assert MinValue(0.5)(tf.constant([-3.0, 0.7])).numpy().tolist() == [
        0.5,
        pytest.approx(0.7),
    ]


def test_init_from_bits_fits_signed_range():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(8, 5)).astype(np.float32)
    for bits in (2, 3, 4, 8):
        s = scale_for_bits(p, "column", bits)
        q = integer_values(p, s)
        # signed b-bit range without the asymmetric extreme: |P_q| <= 2^(b-1) - 1 in every group
        assert q.min() >= -(2 ** (bits - 1) - 1) and q.max() <= 2 ** (bits - 1) - 1
        # the range is used: the extreme lands in the top bin (negative) or the one below it (positive)
        assert np.all(np.abs(q).max(axis=0) >= 2 ** (bits - 1) - 2)
        np.testing.assert_allclose(
            s[0], np.abs(p).max(axis=0) / (2 ** (bits - 1) - 1), rtol=1e-5
        )
    for bad in (0, 1, 2.5):
        with pytest.raises(ValueError, match="bits must be an integer >= 2"):
            scale_for_bits(p, "scalar", bad)


def test_all_granularities_cover_each_element_once():
    # every element of the parameter belongs to exactly one scale group for every granularity
    for (kind, g), (p_shape, s_shape) in SHAPES.items():
        count = np.zeros(p_shape, int)
        s_nd = s_shape if len(s_shape) == len(p_shape) else (1,) * len(p_shape)
        for idx in itertools.product(*[range(d) for d in s_nd]):
            sl = tuple(
                slice(None) if s_nd[a] == 1 else idx[a] for a in range(len(p_shape))
            )
            count[sl] += 1
        assert np.all(count == 1), (kind, g)


# ------------------------------------------------ bit-exact against the equations


def design_scale_gradient(p, s, G, lam, *, aggregate="mean", all_above=True):
    """DESIGN.md's backward written out element by element in TensorFlow (no shortcuts).

    ``where(P_rec == 0, eps, |P_rec|)``, ``r < lam``, ``-tanh(lam - r)`` (the sign applied
    to the reduced group value), "no element below" as ``not reduce_any``, ``m =
    max|P_q|``. It uses TensorFlow's own reduction kernels, so the library's optimized
    backward (no ``tanh`` for tiny thresholds, the all-above test read off the vote sum,
    the denominator ``max(|P_rec|, eps - |P_q|)``, ``floordiv``) must match it bit for bit.
    """
    p = tf.convert_to_tensor(p)
    s = tf.cast(tf.convert_to_tensor(s), p.dtype)
    G = tf.cast(tf.convert_to_tensor(G), p.dtype)
    axes = [
        a
        for a in range(p.shape.rank)
        if s.shape.rank != p.shape.rank or s.shape[a] == 1
    ]
    s_b = tf.reshape(
        s, s.shape if s.shape.rank == p.shape.rank else (1,) * p.shape.rank
    )
    p_q = tf.floor(p / s_b)
    p_rec = p_q * s_b
    lam = tf.constant(lam, p.dtype)
    denom = tf.where(p_rec == 0, tf.constant(EPS, p.dtype), tf.abs(p_rec))
    r = tf.abs(G) / denom
    below = r < lam
    vote = tf.where(below, tf.tanh(lam - r), tf.zeros_like(r))
    reduce = tf.reduce_mean if aggregate == "mean" else tf.reduce_sum
    group = -reduce(vote, axis=axes, keepdims=True)
    if all_above:
        count = (
            1.0 if aggregate == "mean" else float(np.prod([p.shape[a] for a in axes]))
        )
        none_below = tf.logical_not(tf.reduce_any(below, axis=axes, keepdims=True))
        group = tf.where(none_below, -tf.tanh(lam) * tf.constant(count, p.dtype), group)
    m = tf.reduce_max(tf.abs(p_q), axis=axes, keepdims=True)
    return p_rec, tf.reshape(m * group, s.shape)


def design_quantize(
    p, scale, threshold, *, aggregate="mean", all_above_vote=True, min_scale=None
):
    """:func:`nested_quantize` with :func:`design_scale_gradient` as its scale gradient
    (``min_scale`` is accepted, as ``NestedQuantizer`` passes it, and not used)."""
    p = tf.convert_to_tensor(p)
    scale = tf.cast(tf.convert_to_tensor(scale), p.dtype)

    @tf.custom_gradient
    def _quantize(p_in, s_in):
        def grad(upstream):
            _, ds = design_scale_gradient(
                p_in,
                s_in,
                upstream,
                threshold,
                aggregate=aggregate,
                all_above=all_above_vote,
            )
            return upstream, ds

        return tf.floor(p_in / s_in) * s_in, grad

    return _quantize(p, scale)


def graph_scale_grad(p, s, G, lam, min_scale=None):
    """dL/ds of :func:`nested_quantize` inside a ``tf.function`` (as in training)."""
    s_v = tf.Variable(s)

    @tf.function
    def scale_grad():
        with tf.GradientTape() as tape:
            out = nested_quantize(tf.constant(p), s_v, lam, min_scale=min_scale)
            loss = tf.reduce_sum(out * G)
        return tape.gradient(loss, s_v)

    return scale_grad().numpy()


def edge_case(p_shape, s_shape, scales, seed):
    """Parameters with zeros, negatives, exact multiples and ties at .5 of the scale;
    upstream gradients with zeros and values far below every threshold."""
    rng = np.random.default_rng(seed)
    s = rng.choice(np.asarray(scales, np.float32), s_shape).astype(np.float32)
    s_b = np.broadcast_to(
        s.reshape(s_shape if len(s_shape) == len(p_shape) else (1,) * len(p_shape)),
        p_shape,
    )
    k = rng.integers(-40, 40, p_shape).astype(np.float32)
    p = rng.normal(0, 0.05, p_shape).astype(np.float32)
    p.flat[1::7] = ((k + 0.5) * s_b).flat[1::7]  # ties at .5
    p.flat[2::7] = (k * s_b).flat[2::7]  # exact multiples
    p.flat[3::7] = 0.0
    p.flat[4::7] = -0.0
    p.flat[5::7] = (-0.5 * s_b).flat[5::7]  # floor to -1
    G = rng.normal(0, 1e-3, p_shape).astype(np.float32)
    G.flat[::5] = 0.0
    G.flat[1::9] *= 1e-9
    return p, s, G


#: scale sets: at the floor, mixed, at float32 eps, below it (allowed for the functional core)
EDGE_SCALES = {
    "floor": [MIN_SCALE],
    "mixed": [MIN_SCALE, 1e-3, 0.02, 0.3],
    "at_eps": [EPS, float(np.nextafter(np.float32(EPS), np.float32(1))), 2e-6],
    "below_eps": [1e-9, EPS / 2, EPS, 2e-6],
}
#: ``min_scale`` promises: none, one below eps (full denominator), eps and the layer's floor
#: (the shorter denominator); a scale set is checked under each promise it keeps
EDGE_FLOORS = [None, 1e-9, EPS, MIN_SCALE]
EDGE_SHAPES = {
    "mlp_kernel-scalar": ((784, 128), (1,)),
    "mlp_kernel-row": ((784, 128), (784, 1)),
    "mlp_kernel-column": ((784, 128), (1, 128)),
    "dense-column": ((128, 10), (1, 10)),
    "conv-channel": ((3, 3, 16, 8), (1, 1, 16, 1)),
    "conv-filter": ((3, 3, 16, 8), (1, 1, 1, 8)),
    "bias-scalar": ((10,), (1,)),
    "bias-row": ((128,), (128,)),
}
#: 0, the sweep range, the largest threshold without tanh and the next float32 above it
EDGE_THRESHOLDS = [
    0.0,
    1e-14,
    1e-9,
    1e-6,
    2.0**-12,
    float(np.nextafter(np.float32(2.0**-12), np.float32(1))),
    1e-3,
    10.0,
]


@pytest.mark.parametrize("key", list(EDGE_SHAPES))
@pytest.mark.parametrize("scales", list(EDGE_SCALES))
def test_backward_is_bit_identical_to_the_equations(key, scales):
    p_shape, s_shape = EDGE_SHAPES[key]
    p, s, G = edge_case(
        p_shape, s_shape, EDGE_SCALES[scales], zlib.crc32(f"{key}{scales}".encode())
    )
    floors = [f for f in EDGE_FLOORS if f is None or f <= s.min()]
    assert EPS in floors or scales == "below_eps"  # the shorter denominator is covered
    for lam in EDGE_THRESHOLDS:
        for aggregate, all_above in [("mean", True), ("mean", False), ("sum", True)]:
            kw = dict(aggregate=aggregate, all_above=all_above)
            rec, ds = design_scale_gradient(p, s, G, lam, **kw)
            for floor in floors:
                what = f"lam={lam} {aggregate} all_above={all_above} min_scale={floor}"
                out, gp, gs = grads(
                    p,
                    s,
                    G,
                    lam,
                    aggregate=aggregate,
                    all_above_vote=all_above,
                    min_scale=floor,
                )
                assert_bits_equal(out, rec.numpy(), f"forward {what}")
                assert_bits_equal(gp, G, f"dL/dP {what}")
                assert_bits_equal(gs, ds.numpy(), f"dL/ds {what}")
        if lam in (1e-9, 1e-3):  # graph mode (what training runs) as well as eager
            _, ds = design_scale_gradient(p, s, G, lam)
            for floor in floors:
                gs = graph_scale_grad(p, s, G, lam, min_scale=floor)
                assert_bits_equal(gs, ds.numpy(), f"dL/ds graph lam={lam} {floor}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes_keep_the_full_backward(dtype):
    cases = {
        scales: edge_case((128, 10), (1, 10), EDGE_SCALES[scales], seed=17)
        for scales in ("mixed", "at_eps")
    }
    promises = [("mixed", None), ("mixed", MIN_SCALE), ("at_eps", EPS)]
    for (scales, floor), lam in itertools.product(promises, (1e-9, 1e-3)):
        p, s, G = cases[scales]
        p_t = tf.cast(tf.constant(p), dtype)
        G_t = tf.cast(tf.constant(G), dtype)
        s_v = tf.Variable(s)
        with tf.GradientTape() as tape:
            tape.watch(p_t)
            out = nested_quantize(p_t, s_v, lam, min_scale=floor)
            loss = tf.reduce_sum(tf.cast(out * G_t, tf.float32))
        gs = tape.gradient(loss, s_v)
        _, ds = design_scale_gradient(p_t, tf.constant(s), G_t, lam)
        assert_bits_equal(
            gs.numpy(),
            tf.cast(ds, tf.float32).numpy(),
            f"{dtype} {scales} lam={lam} min_scale={floor}",
        )


def test_vote_sum_replaces_reduce_min_only_where_it_sees_every_vote():
    # one group of n elements, P_rec = 3 everywhere, ratios 1/3 except one
    n = 1024
    p = np.full((n,), 3.0, np.float32)
    s = np.array([1.0], np.float32)
    G = np.full((n,), 1.0, np.float32)
    # at the bound lam = n * 2**-100 one ratio just below lam still gives a positive sum
    lam = float(np.float32(n * 2.0**-100))
    G[17] = np.nextafter(np.float32(3 * lam), np.float32(0))
    _, ds = design_scale_gradient(p, s, G, lam)
    gs = grads(p, s, G, lam)[2]
    assert gs[0] != np.float32(-np.tanh(np.float32(lam)) * 3)  # not the all-above vote
    assert_bits_equal(gs, ds.numpy(), "one vote at the bound")
    # below the bound a vote can vanish from the mean: lam = 2**-120, one zero gradient
    # (r = 0, vote lam), mean lam / n flushes to zero; the group still has a vote below
    # lam, so its gradient is m * -0.0, not the all-above constant
    G[17] = 0.0
    lam = 2.0**-120
    _, ds = design_scale_gradient(p, s, G, lam)
    gs = grads(p, s, G, lam)[2]
    assert_bits_equal(gs, ds.numpy(), "a vote that underflows in the mean")
    assert gs[0] == 0.0


def test_tanh_is_the_identity_where_the_backward_skips_it():
    # for float32 thresholds in [2**-100, 2**-12] the backward drops the tanh: every vote
    # is 0 or a normal float32 in [2**-125, 2**-12], where tf.tanh(v) must be v; every
    # float32 of the top binade and a sample of the others (the whole range was checked
    # once, every float32 from 0 to 2**-12)
    top = int(np.float32(2.0**-12).view(np.uint32))
    low = int(np.float32(2.0**-13).view(np.uint32))
    smallest = int(np.float32(2.0**-125).view(np.uint32))
    rng = np.random.default_rng(0)
    bits = np.concatenate(
        [
            np.arange(low, top + 1, dtype=np.uint32),
            rng.integers(smallest, top, 500_000, dtype=np.uint32),
            np.zeros(1, np.uint32),
        ]
    )
    v = bits.view(np.float32)
    np.testing.assert_array_equal(tf.tanh(tf.constant(v)).numpy(), v)
    np.testing.assert_array_equal(tf.tanh(tf.nn.relu(tf.constant(v))).numpy(), v)
    assert lq._SKIP_TANH_THRESHOLDS == (2.0**-100, 2.0**-12)


@pytest.mark.parametrize(
    "granularity,threshold", [("scalar", 1e-9), ("row", 1e-9), ("column", 1e-3)]
)
def test_training_steps_are_bit_identical_to_the_equations(
    monkeypatch, granularity, threshold
):
    # a few Adam steps of the thesis MLP (both layers quantized, bias scalar) with the
    # library's backward and with the literal equations: every weight equal, bit for bit
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 28, 28), dtype=np.float32)
    x[..., :3] = 0.0  # always-zero pixels: zero upstream gradients, votes below lam
    y = rng.integers(0, 10, (4, 32)).astype(np.int32)

    def train():
        keras.utils.set_random_seed(42)
        kw = dict(kernel_granularity=granularity, threshold=threshold)
        model = keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Flatten(),
                QDense(128, activation="relu", **kw),
                QDense(10, activation="softmax", **kw),
            ]
        )
        opt = keras.optimizers.Adam(1e-3)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            g = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(g, model.trainable_variables))
            return g

        grads_seen = [step(xb, yb) for xb, yb in zip(x, y)]
        return [w.numpy() for w in model.weights], [
            [g.numpy() for g in gs] for gs in grads_seen
        ]

    weights, grads_seen = train()
    monkeypatch.setattr(lq, "nested_quantize", design_quantize)
    ref_weights, ref_grads = train()
    for i, (a, b) in enumerate(zip(grads_seen, ref_grads)):
        for j, (ga, gb) in enumerate(zip(a, b)):
            assert_bits_equal(ga, gb, f"step {i} gradient {j}")
    for j, (w, w_ref) in enumerate(zip(weights, ref_weights)):
        assert_bits_equal(w, w_ref, f"weight {j}")
