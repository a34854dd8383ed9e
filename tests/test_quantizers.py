"""The nested quantizer against an independent NumPy reference (loops over scale groups)."""

from __future__ import annotations

import itertools
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

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
