"""Tests for lqs.baselines: fixed-bit min-max STE layers, LSQ, post-training min-max quantization.

NumPy references are written from the formulas (Esser et al. 2020 for LSQ; symmetric min-max with
Q = 2^(b-1) - 1 for the fixed-bit layers and PTQ), independently of the implementation.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lqs.baselines import (
    BASELINE_FLAVOURS,
    FixedBitsConv2D,
    FixedBitsDense,
    LSQConv2D,
    LSQDense,
    lsq_quantize,
    minmax_quantize,
    ptq_minmax,
)
from lqs.layers import QDense
from lqs.losses import with_loss_terms
from lqs.quantizers import NestedQuantizer

try:  # the project's memory accounting; fall back to its documented formula if absent
    from lqs.memory import group_bits, layer_table
except ImportError:  # pragma: no cover - only while lqs.memory is being written
    layer_table = None

    def group_bits(values, scale_shape):
        axes = (
            tuple(range(values.ndim))
            if int(np.prod(scale_shape)) == 1
            else tuple(i for i, d in enumerate(scale_shape) if d == 1)
        )
        m = np.max(np.abs(values), axis=axes)
        return np.ceil(np.log2(m + 1)).astype(int) + 1


RNG = np.random.default_rng(1234)

# ---------------------------------------------------------------------------- NumPy references


def _axes(ndim: int, per_axis: int | None) -> tuple[int, ...]:
    """Reduction axes of one scale group: all (per tensor) or all but ``per_axis``."""
    return tuple(i for i in range(ndim) if i != per_axis)


def np_minmax(w: np.ndarray, bits: int, per_axis: int | None):
    q = 2 ** (bits - 1) - 1
    m = np.max(np.abs(w), axis=_axes(w.ndim, per_axis), keepdims=True).astype(
        np.float32
    )
    s = np.where(m > 0, m / np.float32(q), np.float32(1.0)).astype(np.float32)
    p_q = np.clip(np.round(w / s), -q, q)
    return p_q, s


def np_lsq(
    v: np.ndarray, s: np.ndarray, bits: int, upstream: np.ndarray, per_axis: int | None
):
    q_n, q_p = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    r = v / s
    out = np.round(np.clip(r, -q_n, q_p)) * s
    inside = (r > -q_n) & (r < q_p)
    dv = np.where(inside, upstream, 0.0)
    d_elem = np.where(inside, -r + np.round(r), np.where(r <= -q_n, -q_n, q_p))
    axes = _axes(v.ndim, per_axis)
    n = int(np.prod([v.shape[a] for a in axes]))
    g = 1.0 / math.sqrt(n * q_p)
    ds = g * np.sum(upstream * d_elem, axis=axes, keepdims=True)
    return out, dv, ds


def _blobs(n: int = 240, dim: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, dim))
    y = np.arange(n) % classes
    x = centers[y] + rng.normal(0, 0.7, (n, dim))
    return x.astype(np.float32), y.astype(np.int32)


# ---------------------------------------------------------------------------- fixed bits


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity, per_axis", [("scalar", None), ("column", 1)])
def test_fixed_bits_dense_matches_numpy(bits, granularity, per_axis):
    layer = FixedBitsDense(5, bits=bits, granularity=granularity, quantize_bias=True)
    layer.build((None, 6))
    w = RNG.normal(0, 0.4, (6, 5)).astype(np.float32)
    b = RNG.normal(0, 0.2, (5,)).astype(np.float32)
    layer.kernel.assign(w)
    layer.bias.assign(b)
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    wq, ws = np_minmax(w, bits, per_axis)
    bq, bs = np_minmax(b, bits, None)
    np.testing.assert_allclose(
        layer(x).numpy(), x @ (wq * ws) + bq * bs, rtol=1e-5, atol=1e-6
    )
    ints = {t.name: t for t in layer.integer_parameters()}
    assert set(ints) == {"kernel", "bias"} and layer.float_parameters() == {}
    q = 2 ** (bits - 1) - 1
    for name, (pq, s) in {"kernel": (wq, ws), "bias": (bq, bs)}.items():
        t = ints[name]
        assert t.values.dtype == np.int64 and np.abs(t.values).max() <= q
        np.testing.assert_array_equal(t.values, pq)
        np.testing.assert_allclose(t.scale.reshape(s.shape), s, rtol=1e-7)
        assert np.all(group_bits(t.values, t.scale.shape) <= bits)
    assert ints["kernel"].scale.shape == ((1,) if granularity == "scalar" else (1, 5))


@pytest.mark.parametrize("granularity, per_axis", [("scalar", None), ("filter", 3)])
def test_fixed_bits_conv_matches_numpy(granularity, per_axis):
    bits = 3
    layer = FixedBitsConv2D(4, 3, bits=bits, granularity=granularity, padding="same")
    x = RNG.normal(size=(2, 6, 6, 2)).astype(np.float32)
    layer.build(x.shape)
    w = RNG.normal(0, 0.4, (3, 3, 2, 4)).astype(np.float32)
    layer.kernel.assign(w)
    layer.bias.assign(np.arange(4, dtype=np.float32) / 10)
    wq, ws = np_minmax(w, bits, per_axis)
    reference = keras.layers.Conv2D(4, 3, padding="same")
    reference.build(x.shape)
    reference.set_weights([wq * ws, np.arange(4, dtype=np.float32) / 10])
    np.testing.assert_allclose(
        layer(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-6
    )
    (kernel,) = layer.integer_parameters()
    np.testing.assert_array_equal(kernel.values, wq)
    assert np.all(group_bits(kernel.values, kernel.scale.shape) <= bits)
    assert set(layer.float_parameters()) == {"bias"}


def test_fixed_bits_ste_gradient_and_zero_group():
    w = tf.Variable(RNG.normal(size=(4, 3)).astype(np.float32))
    upstream = RNG.normal(size=(4, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(upstream * minmax_quantize(w, 4, (1, 3)))
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), upstream)  # identity STE
    zeros = np.zeros((3, 2), np.float32)
    zeros[:, 1] = [0.5, -1.0, 0.25]  # column 0 all zero: scale 1, integers 0
    p_q, s = np_minmax(zeros, 8, 1)
    np.testing.assert_allclose(s[0, 0], 1.0)
    np.testing.assert_allclose(minmax_quantize(zeros, 8, (1, 2)).numpy(), p_q * s)


def test_fixed_bits_validation():
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 16, got 1"):
        FixedBitsDense(3, bits=1)
    with pytest.raises(ValueError, match="got 17"):
        LSQConv2D(3, 3, bits=17)
    with pytest.raises(
        ValueError, match="granularity 'filter'.*'scalar', 'row', 'column'"
    ):
        FixedBitsDense(3, granularity="filter")
    with pytest.raises(ValueError, match="granularity 'per_channel'"):
        FixedBitsConv2D(3, 3, granularity="per_channel")
    assert BASELINE_FLAVOURS == ("fp32", "fixed_bits", "lsq", "ptq")


# ---------------------------------------------------------------------------------------- LSQ


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(
    "shape, step_shape, per_axis",
    [((5, 4), (1,), None), ((2, 2, 3, 4), (1, 1, 1, 4), 3)],
)
def test_lsq_forward_and_gradients_match_paper(bits, shape, step_shape, per_axis):
    q_p = 2 ** (bits - 1) - 1
    s = RNG.uniform(0.05, 0.15, step_shape).astype(np.float32)
    # values spread over the grid and beyond it on both sides, away from bin edges
    v = (RNG.uniform(-q_p - 2.5, q_p + 2.5, shape) * s).astype(np.float32)
    upstream = RNG.normal(size=shape).astype(np.float32)
    v_var, s_var = tf.Variable(v), tf.Variable(s)
    with tf.GradientTape() as tape:
        out = lsq_quantize(v_var, s_var, bits)
        loss = tf.reduce_sum(upstream * out)
    dv, ds = tape.gradient(loss, [v_var, s_var])
    want_out, want_dv, want_ds = np_lsq(
        v,
        s.reshape((1,) * len(shape) if step_shape == (1,) else step_shape),
        bits,
        upstream,
        per_axis,
    )
    r = v / s.reshape(want_ds.shape)
    assert np.any(r < -(q_p + 1)) and np.any(
        r > q_p
    )  # both clip branches are exercised
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dv.numpy(), want_dv, rtol=1e-6)
    np.testing.assert_allclose(
        ds.numpy(), want_ds.reshape(step_shape), rtol=1e-4, atol=1e-6
    )


def test_lsq_dense_layer_protocol_and_step_init():
    bits = 4
    layer = LSQDense(3, bits=bits, granularity="column", quantize_bias=True)
    layer.build((None, 5))
    w = layer.kernel.numpy()
    want_step = (
        2 * np.mean(np.abs(w), axis=0, keepdims=True) / math.sqrt(2 ** (bits - 1) - 1)
    )
    np.testing.assert_allclose(layer.kernel_step.numpy(), want_step, rtol=1e-6)
    assert layer.bias_step.shape == (1,)
    w2 = RNG.normal(0, 1, (5, 3)).astype(np.float32)
    layer.kernel.assign(w2)
    layer.initialize_steps()
    s = layer.kernel_step.numpy()
    np.testing.assert_allclose(
        s, 2 * np.mean(np.abs(w2), axis=0, keepdims=True) / math.sqrt(7), rtol=1e-6
    )
    upstream = RNG.normal(size=(5, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(upstream * layer.quantized_kernel())
    dw, ds = tape.gradient(loss, [layer.kernel, layer.kernel_step])
    want_out, want_dw, want_ds = np_lsq(w2, s, bits, upstream, 1)
    np.testing.assert_allclose(layer.quantized_kernel().numpy(), want_out, rtol=1e-6)
    np.testing.assert_allclose(dw.numpy(), want_dw, rtol=1e-6)
    np.testing.assert_allclose(ds.numpy(), want_ds, rtol=1e-4, atol=1e-6)
    ints = {t.name: t for t in layer.integer_parameters()}
    assert ints["kernel"].values.min() >= -8 and ints["kernel"].values.max() <= 7
    np.testing.assert_allclose(ints["kernel"].reconstruct(), want_out, rtol=1e-6)
    assert layer.float_parameters() == {}


def test_lsq_mlp_trains_on_separable_problem():
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            LSQDense(16, bits=4, activation="relu"),
            LSQDense(3, bits=4, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.02),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] >= 0.9
    for layer in model.layers:
        (kernel,) = layer.integer_parameters()
        assert kernel.values.min() >= -8 and kernel.values.max() <= 7


# ---------------------------------------------------------------------------------------- PTQ


def _trained_mlp():
    keras.utils.set_random_seed(1)
    x, y = _blobs()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="mlp",
    )
    model.compile(
        keras.optimizers.Adam(0.02),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    return model, x, y


def _trained_cnn():
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 8, 8, 2)).astype(np.float32)
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype(np.int32)
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(
        inputs
    )
    h = keras.layers.BatchNormalization(name="bn1")(h)
    r = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(h)
    r = keras.layers.BatchNormalization(name="bn2")(r)
    h = keras.layers.ReLU(name="relu")(keras.layers.Add(name="add")([h, r]))
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dropout(0.2, name="drop")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile(
        keras.optimizers.Adam(0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model, x, y


def _check_ptq(model, quantized, bits, per_channel):
    kinds = {keras.layers.Dense: FixedBitsDense, keras.layers.Conv2D: FixedBitsConv2D}
    for old in model.layers:
        if isinstance(old, keras.layers.InputLayer):
            continue
        new = quantized.get_layer(old.name)
        if type(old) in kinds:
            assert type(new) is kinds[type(old)]
            assert new.bits == bits
            channel = "column" if type(old) is keras.layers.Dense else "filter"
            assert new.granularity == (channel if per_channel else "scalar")
            np.testing.assert_array_equal(
                new.kernel.numpy(), old.kernel.numpy()
            )  # float weights carried
            np.testing.assert_array_equal(new.bias.numpy(), old.bias.numpy())
        else:
            assert type(new) is type(old)
            for a, b in zip(new.get_weights(), old.get_weights()):
                np.testing.assert_array_equal(a, b)
    if layer_table is not None:
        q = [row for row in layer_table(quantized) if row["quantized"]]
        assert len(q) == sum(type(layer) in kinds for layer in model.layers)
        assert all(row["bits_max"] <= bits for row in q)


@pytest.fixture(scope="module")
def trained_models():
    return {"mlp": _trained_mlp(), "cnn": _trained_cnn()}


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_ptq_minmax_sequential_and_functional(trained_models, arch):
    model, x, y = trained_models[arch]
    reference = model(x, training=False).numpy()
    for per_channel in (False, True):
        errors = {}
        for bits in (8, 2):
            quantized = ptq_minmax(model, bits, per_channel=per_channel)
            _check_ptq(model, quantized, bits, per_channel)
            errors[bits] = np.abs(
                quantized(x, training=False).numpy() - reference
            ).mean()
        assert errors[8] < 0.01, (arch, per_channel, errors)
        assert errors[2] > errors[8], (arch, per_channel, errors)
    # compiled like the original: evaluate works and reports the same metrics
    logs = quantized.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) >= {"loss", "accuracy"}


def test_ptq_quantizes_the_same_layers_as_the_trained_cnn():
    """Regression: PTQ used to quantize the CNN's dense layers while the trained methods
    (built with quantize_dense=False, the thesis's choice) kept them float32."""
    from lqs.models import build_model
    from lqs.protocol import is_quantized_layer

    def quantized_names(model):
        return sorted(layer.name for layer in model.layers if is_quantized_layer(layer))

    shape = (8, 8, 1)
    fp32 = build_model("cnn", "fp32", input_shape=shape, quantize_dense=False)
    for flavour in ("nested", "lsq"):
        trained = build_model("cnn", flavour, input_shape=shape, quantize_dense=False)
        ptq = ptq_minmax(fp32, 4, quantize_dense=False)
        assert quantized_names(ptq) == quantized_names(trained)
        assert quantized_names(ptq) and not any(
            isinstance(layer, FixedBitsDense) for layer in ptq.layers
        )
        dense = [layer for layer in ptq.layers if type(layer) is keras.layers.Dense]
        assert len(dense) == 2  # float32, weights carried
        for layer in dense:
            for a, b in zip(
                layer.get_weights(), fp32.get_layer(layer.name).get_weights()
            ):
                np.testing.assert_array_equal(a, b)
    everything = ptq_minmax(fp32, 4)  # the default still quantizes every layer
    assert sum(isinstance(layer, FixedBitsDense) for layer in everything.layers) == 2


def test_ptq_minmax_starts_from_float_shadow_weights():
    keras.utils.set_random_seed(3)
    net = keras.Sequential(
        [
            keras.Input((4,)),
            QDense(
                3,
                kernel_quantizer=NestedQuantizer(scale_gradient="ste", init_bits=3),
                name="q",
            ),
        ]
    )
    wrapped = with_loss_terms(net, {"inverse": 1e-3})
    quantized = ptq_minmax(wrapped, 6, quantize_bias=True)
    layer = quantized.get_layer("q")
    assert isinstance(layer, FixedBitsDense) and layer.quantize_bias
    np.testing.assert_array_equal(
        layer.kernel.numpy(), net.get_layer("q").kernel.numpy()
    )
    assert [t.name for t in layer.integer_parameters()] == ["kernel", "bias"]
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 16"):
        ptq_minmax(net, 1)


# ----------------------------------------------------------------------------- serialization


@pytest.mark.parametrize(
    "make, input_shape",
    [
        (
            lambda: FixedBitsDense(
                4, bits=5, granularity="column", quantize_bias=True, activation="relu"
            ),
            (6,),
        ),
        (
            lambda: FixedBitsConv2D(3, 3, bits=6, granularity="filter", padding="same"),
            (5, 5, 2),
        ),
        (lambda: LSQDense(4, bits=3, granularity="column", quantize_bias=True), (6,)),
        (
            lambda: LSQConv2D(
                3, 2, bits=4, granularity="filter", quantize_bias=True, strides=2
            ),
            (6, 6, 2),
        ),
    ],
    ids=["FixedBitsDense", "FixedBitsConv2D", "LSQDense", "LSQConv2D"],
)
def test_layer_serialization_roundtrip(tmp_path, make, input_shape):
    layer = make()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    model = keras.Sequential([keras.Input(input_shape), layer])
    for v in layer.weights:  # non-default values for every variable (steps included)
        v.assign(RNG.uniform(0.05, 0.5, v.shape).astype(np.float32))
    x = RNG.normal(size=(3,) + input_shape).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    for a, b in zip(loaded.layers[0].weights, layer.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
