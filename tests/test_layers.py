"""QDense / QConv2D: forward equals the plain layer with quantized parameters, shapes, serialization, dynamics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from lqs import QConv2D, QDense
from lqs.quantizers import MIN_SCALE


def _set_scales(layer, value_fn):
    for q in layer.quantizers():
        q.scale.assign(value_fn(tuple(q.scale.shape)).astype(np.float32))


def _floor_q(p, s):
    return np.floor(p / s) * s


@pytest.mark.parametrize("granularity,shape", [("scalar", (1,)), ("row", (7, 1)), ("column", (1, 5))])
def test_qdense_forward_matches_numpy(granularity, shape):
    rng = np.random.default_rng(0)
    layer = QDense(5, activation="relu", kernel_granularity=granularity, bias_granularity="row",
                   bias_initializer="random_normal")
    layer.build((None, 7))
    assert tuple(layer.kernel_quantizer.scale.shape) == shape
    assert tuple(layer.bias_quantizer.scale.shape) == (5,)
    _set_scales(layer, lambda s: rng.uniform(0.01, 0.1, s))
    x = rng.normal(size=(4, 7)).astype(np.float32)
    W, b = layer.kernel.numpy(), layer.bias.numpy()
    sW, sb = layer.kernel_quantizer.scale.numpy(), layer.bias_quantizer.scale.numpy()
    expected = np.maximum(x @ _floor_q(W, sW) + _floor_q(b, sb), 0)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "granularity,shape",
    [("scalar", (1,)), ("row", (3, 1, 1, 1)), ("column", (1, 3, 1, 1)), ("channel", (1, 1, 2, 1)), ("filter", (1, 1, 1, 4))],
)
def test_qconv2d_forward_matches_plain_conv_with_quantized_kernel(granularity, shape):
    rng = np.random.default_rng(1)
    layer = QConv2D(4, 3, padding="same", strides=2, kernel_granularity=granularity, bias_initializer="random_normal")
    layer.build((None, 8, 8, 2))
    assert tuple(layer.kernel_quantizer.scale.shape) == shape
    _set_scales(layer, lambda s: rng.uniform(0.01, 0.1, s))
    plain = keras.layers.Conv2D(4, 3, padding="same", strides=2)
    plain.build((None, 8, 8, 2))
    K, b = layer.kernel.numpy(), layer.bias.numpy()
    sK, sb = layer.kernel_quantizer.scale.numpy(), layer.bias_quantizer.scale.numpy()
    plain.set_weights([_floor_q(K, sK), _floor_q(b, sb)])
    x = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 8, 8, 2)) == (None, 4, 4, 4)


def test_integer_parameters_reconstruct_the_forward_kernel():
    layer = QDense(3, kernel_granularity="column", quantize_bias=False, bias_initializer="ones")
    layer.build((None, 4))
    layer.kernel_quantizer.scale.assign(np.array([[0.1, 0.2, 0.05]], np.float32))
    (kernel,) = layer.integer_parameters()
    assert kernel.name == "kernel" and kernel.values.dtype == np.int64 and kernel.group_count == 3
    np.testing.assert_array_equal(kernel.reconstruct(), layer.quantized_kernel().numpy())
    assert list(layer.float_parameters()) == ["bias"]
    np.testing.assert_array_equal(layer.quantized_bias().numpy(), np.ones(3, np.float32))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown bias_granularity 'column'"):
        QDense(3, bias_granularity="column")
    with pytest.raises(ValueError, match="needs axis 2"):
        QDense(3, kernel_granularity="channel").build((None, 4))
    with pytest.raises(ValueError, match="data_format 'channels_first'"):
        QConv2D(3, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -1"):
        QConv2D(3, 3, threshold=-1)
    with pytest.raises(ValueError, match="unknown padding 'full'"):
        QConv2D(3, 3, padding="full")


def _models():
    mlp = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Flatten(),
        QDense(8, activation="relu", kernel_granularity="column", threshold=1e-3),
        QDense(3, activation="softmax", kernel_granularity="row", bias_granularity="row"),
    ])
    inp = keras.Input((6, 6, 1))
    h = QConv2D(4, 3, padding="same", kernel_granularity="filter", activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = QConv2D(4, 3, kernel_granularity="channel", quantize_bias=False, scale_gradient="ste")(h)
    h = keras.layers.Flatten()(h)
    cnn = keras.Model(inp, QDense(3, activation="softmax")(h))
    return {"mlp": mlp, "cnn": cnn}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, name):
    model = _models()[name]
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(32, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    for a, b in zip(model.layers, loaded.layers):
        assert a.get_config() == b.get_config()


@pytest.mark.parametrize("cls,args", [(QDense, (4,)), (QConv2D, (4, 3))])
def test_get_config_from_config_round_trip(cls, args):
    layer = cls(*args, kernel_granularity="row", threshold=3e-7, quantize_bias=False, aggregate="sum",
                all_above_vote=False, init_bits=4, scale_gradient="ste", kernel_regularizer="l2")
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.bias_quantizer is None and clone.kernel_quantizer.threshold == 3e-7


def test_init_bits_starts_scales_from_the_weights():
    layer = QDense(6, kernel_granularity="column", init_bits=4)
    layer.build((None, 10))
    W = layer.kernel.numpy()
    np.testing.assert_allclose(layer.kernel_quantizer.scale.numpy()[0], np.abs(W).max(axis=0) / 7, rtol=1e-5)
    # bias is all zeros -> scale floored at the minimum
    np.testing.assert_allclose(layer.bias_quantizer.scale.numpy(), MIN_SCALE)


def _train_scales(threshold, all_above_vote=True, scale_gradient="threshold", steps=60):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(steps * 16, 28, 28, 1)).astype(np.float32)  # MNIST-shaped synthetic data
    y = rng.integers(0, 10, steps * 16)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Flatten(),
        QDense(32, activation="relu", threshold=threshold, all_above_vote=all_above_vote, scale_gradient=scale_gradient,
               init_bits=8),
        QDense(10, activation="softmax", threshold=threshold, all_above_vote=all_above_vote,
               scale_gradient=scale_gradient, init_bits=8),
    ])
    before = model.layers[1].kernel_quantizer.scale.numpy().copy()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    return before, model.layers[1].kernel_quantizer.scale.numpy()


@pytest.mark.slow
def test_scales_move_as_the_threshold_predicts():
    # a huge threshold: every ratio is below it, every element votes about -1 -> scales grow fast
    before, huge = _train_scales(1e6)
    assert huge[0] > before[0] * 1.5
    # a tiny threshold: every ratio is above it, the all-above rule votes -tanh(1e-12): Adam still moves the
    # scale, but far less than the huge-threshold run
    _, tiny = _train_scales(1e-12)
    assert before[0] <= tiny[0] < huge[0]
    assert (tiny[0] - before[0]) < 0.2 * (huge[0] - before[0])
    # threshold 0 with the text's zero vote: no ratio is below 0, every vote is 0, scales stay exactly put
    # (with a tiny positive threshold, elements with a zero upstream gradient - dead ReLUs - still vote)
    _, frozen = _train_scales(0.0, all_above_vote=False)
    np.testing.assert_array_equal(frozen, before)
    # the loss-term flavour: the forward pass gives the scale no gradient
    _, ste = _train_scales(1e6, scale_gradient="ste")
    np.testing.assert_array_equal(ste, before)


def test_mixed_precision_policy():
    layer = QConv2D(2, 3, dtype="mixed_float16")
    out = layer(tf.ones((1, 5, 5, 1)))
    assert out.dtype == tf.float16 and layer.kernel_quantizer.scale.dtype == "float32"
