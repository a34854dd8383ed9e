"""lqs.quantize_model on models that are not thesis networks (Dense/Conv2D -> lqs)."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import lqs
from lqs import QDense, quantize_model
from lqs.convert import QuantizeReport
from lqs.quantizers import MIN_SCALE, NestedQuantizer

S = np.float32(MIN_SCALE)  # the initial scale: one quantization step


def branchy_model(seed: int = 0) -> keras.Model:
    """Conv -> BN -> pool -> (dilated conv + float depthwise) -> strided conv -> GAP ->
    Dense + EinsumDense."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input((12, 12, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    a = layers.BatchNormalization(name="bn")(a)
    p = layers.MaxPooling2D(2, name="pool")(a)
    d = layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="conv_dilated")(p)
    e = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(p)
    s = layers.Add(name="add")([d, e])
    b = layers.Conv2D(
        6, 3, strides=2, padding="same", activation="relu", name="conv_strided"
    )(s)
    g = layers.GlobalAveragePooling2D(name="gap")(b)
    head = layers.Dense(3, name="head")(g)
    side = layers.EinsumDense("ab,bc->ac", 3, bias_axes="c", name="einsum")(g)
    model = keras.Model(inp, layers.Add(name="out")([head, side]), name="branchy")
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # non-trivial weights (biases, BN statistics too)
        weights = [
            rng.normal(0, 0.3, w.shape).astype(np.float32)
            + np.float32(w.name == "moving_variance")
            for w in layer.weights
        ]
        layer.set_weights(weights)
    return model


def images(n: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 12, 12, 3)).astype(np.float32)


def quantize_quietly(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return quantize_model(model, **kwargs)


def test_replaces_exact_dense_and_conv2d_and_reports_the_rest():
    model = branchy_model()
    listed = "left these layers float32: 'depthwise' .*'einsum'"
    with pytest.warns(UserWarning, match=listed) as caught:
        qmodel, report = quantize_model(model, return_report=True)
    assert "'bn'" not in str(caught[0].message)  # normalization stays float silently
    kinds = {layer.name: type(layer).__name__ for layer in qmodel.layers}
    for name in ("conv_a", "conv_dilated", "conv_strided"):
        assert kinds[name] == "QConv2D"
    assert kinds["head"] == "QDense"
    assert kinds["depthwise"] == "DepthwiseConv2D" and kinds["einsum"] == "EinsumDense"
    assert isinstance(report, QuantizeReport)
    assert report.quantized == {
        "conv_a": "QConv2D",
        "conv_dilated": "QConv2D",
        "conv_strided": "QConv2D",
        "head": "QDense",
    }
    assert set(report.left_float) == {"bn", "depthwise", "einsum"}
    assert "DepthwiseConv2D" in report.left_float["depthwise"]
    assert "float: depthwise" in str(report)
    # the Keras config is carried over: strides, dilation, activation, names
    for name in report.quantized:
        old = model.get_layer(name).get_config()
        new = qmodel.get_layer(name).get_config()
        assert {k: new[k] for k in old} == old
    assert qmodel.get_layer("conv_strided").strides == (2, 2)
    assert qmodel.get_layer("conv_dilated").dilation_rate == (2, 2)


def _output_bound(model: keras.Model, x: np.ndarray, names, step: float) -> np.ndarray:
    """First-order bound of |y_q - y| when each kernel/bias entry of the layers
    ``names`` moves by less than ``step``.

    Flooring moves each parameter by :math:`\\delta_i \\in (-s, 0]`, so to first order
    :math:`|\\Delta y_k| \\le s \\sum_i |\\partial y_k / \\partial \\theta_i|`.
    """
    params = []
    for name in names:
        params += [model.get_layer(name).kernel, model.get_layer(name).bias]
    with tf.GradientTape() as tape:
        y = model(x, training=False)
    total = 0.0
    for j in tape.jacobian(y, params):  # (batch, outputs, *param shape)
        total += tf.reduce_sum(tf.abs(j), axis=list(range(2, len(j.shape))))
    return step * total.numpy()


def test_weights_copied_exactly_and_outputs_within_one_quantization_step():
    model = branchy_model()
    qmodel, report = quantize_quietly(model, return_report=True)
    for layer in model.layers:
        new = qmodel.get_layer(layer.name)
        if layer.name in report.quantized:
            np.testing.assert_array_equal(new.kernel.numpy(), layer.kernel.numpy())
            np.testing.assert_array_equal(new.bias.numpy(), layer.bias.numpy())
            assert all(np.all(q.scale.numpy() == S) for q in new.quantizers())
        else:
            old_weights, new_weights = layer.get_weights(), new.get_weights()
            for a, b in zip(old_weights, new_weights, strict=True):
                np.testing.assert_array_equal(a, b)
    x = images()
    y, y_q = model.predict(x, verbose=0), qmodel.predict(x, verbose=0)
    assert not np.array_equal(y, y_q)  # the forward pass is quantized ...
    # ... by less than one step s = 100 eps per parameter: the first-order bound, x2
    # for ReLU / max-pool kinks crossed on the way, plus float32 rounding
    first_order = _output_bound(model, x, report.quantized, S)
    bound = 2 * first_order + 1e-6 * (1 + np.abs(y))
    assert np.all(np.abs(y_q - y) <= bound), np.max(np.abs(y_q - y) / bound)
    # and it is the float model carrying floor(P / s) * s
    reference = branchy_model()
    for name in report.quantized:
        layer = reference.get_layer(name)
        layer.set_weights([np.floor(w / S) * S for w in layer.get_weights()])
    want = reference.predict(x, verbose=0)
    np.testing.assert_allclose(y_q, want, rtol=1e-5, atol=1e-6)


def test_per_name_and_per_type_options_and_the_dense_analogue():
    model = branchy_model()
    qmodel, report = quantize_quietly(
        model,
        kernel_granularity="filter",
        return_report=True,
        layers={
            keras.layers.Conv2D: {"kernel_granularity": "channel", "threshold": 1e-6},
            # a name beats a type
            "conv_strided": {"kernel_granularity": "row", "bias_quantizer": None},
            "head": {"kernel_quantizer": "ste"},
            "conv_a": None,  # stays float
        },
    )
    assert type(qmodel.get_layer("conv_a")) is keras.layers.Conv2D
    assert report.left_float["conv_a"] == "excluded by the layers option"
    dilated = qmodel.get_layer("conv_dilated").kernel_quantizer
    assert (dilated.granularity, dilated.threshold) == ("channel", 1e-6)
    strided = qmodel.get_layer("conv_strided")
    assert strided.kernel_quantizer.granularity == "row"
    assert strided.bias_quantizer is None
    # the type's options do not apply to a layer named in layers
    assert strided.kernel_quantizer.threshold == 1e-9
    head = qmodel.get_layer("head")
    # the model-wide 'filter' is per output unit on a Dense kernel
    assert head.kernel_quantizer.granularity == "column"
    assert head.kernel_quantizer.scale_gradient == "ste"
    assert head.bias_quantizer.scale_gradient == "threshold"


def test_a_callable_chooses_per_layer_and_global_quantizers_are_templates():
    template = NestedQuantizer("scalar", 1e-4, init_bits=4)

    def choose(layer):
        return None if layer.name == "head" else {"kernel_granularity": "filter"}

    model = branchy_model()
    qmodel = quantize_quietly(
        model, kernel_quantizer=template, bias_quantizer=None, layers=choose
    )
    assert type(qmodel.get_layer("head")) is keras.layers.Dense
    conv = qmodel.get_layer("conv_a")
    assert conv.kernel_quantizer is not template and conv.bias_quantizer is None
    quantizer = conv.kernel_quantizer
    assert (quantizer.granularity, quantizer.threshold) == ("filter", 1e-4)
    # init_bits: the scales start from the copied weights, max|W| / (2^3 - 1) per
    # output channel
    kernel = model.get_layer("conv_a").kernel.numpy()
    want = np.abs(kernel).max(axis=(0, 1, 2)) / 7
    np.testing.assert_allclose(quantizer.scale.numpy().ravel(), want, rtol=1e-5)


def test_copy_weights_false_leaves_a_fresh_initialisation():
    model = branchy_model()
    qmodel = quantize_quietly(model, copy_weights=False)
    for name in ("conv_a", "einsum"):
        fresh, trained = qmodel.get_layer(name), model.get_layer(name)
        assert not np.array_equal(fresh.kernel.numpy(), trained.kernel.numpy())
    # Dense's zeros bias initializer, BatchNormalization's unit variance
    np.testing.assert_array_equal(qmodel.get_layer("head").bias.numpy(), 0.0)
    np.testing.assert_array_equal(qmodel.get_layer("bn").moving_variance.numpy(), 1.0)


def test_keras_save_load_round_trip_gives_identical_outputs(tmp_path):
    qmodel = quantize_quietly(
        branchy_model(),
        kernel_granularity="filter",
        layers={"head": {"bias_quantizer": None}},
    )
    x = images()
    qmodel.compile(keras.optimizers.Adam(1e-2), "mse")
    # the scales move away from their initial value
    qmodel.fit(x, np.ones((4, 3), np.float32), epochs=2, verbose=0)
    path = tmp_path / "q.keras"
    qmodel.save(path)
    loaded = keras.models.load_model(path)
    want = qmodel.predict(x, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), want)
    for a, b in zip(qmodel.layers, loaded.layers, strict=True):
        assert type(a) is type(b) and a.get_config() == b.get_config()


def test_integer_export_round_trip(tmp_path):
    from lqs import export

    qmodel = quantize_quietly(branchy_model(), kernel_granularity="filter")
    export.to_integer(qmodel, tmp_path / "q")
    rebuilt = export.from_integer(tmp_path / "q")
    x = images()
    want = qmodel.predict(x, verbose=0)
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), want)


def _mlp() -> keras.Sequential:
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(2, name="seq_out"),
        ],
        name="seq",
    )


def test_sequential_model():
    seq = _mlp()
    qseq = quantize_model(seq, kernel_granularity="column")
    assert isinstance(qseq, keras.Sequential)
    kinds = [type(layer).__name__ for layer in qseq.layers]
    assert kinds == ["Flatten", "QDense", "QDense"]
    x = np.random.default_rng(3).normal(size=(3, 4, 4, 1)).astype(np.float32)
    y = seq.predict(x, verbose=0)
    dense = [layer.name for layer in seq.layers if type(layer) is keras.layers.Dense]
    bound = 2 * _output_bound(seq, x, dense, S) + 1e-6 * (1 + np.abs(y))
    assert np.all(np.abs(qseq.predict(x, verbose=0) - y) <= bound)


def test_nested_models_and_shared_layers():
    seq = _mlp()
    inp = keras.Input((4, 4, 1))
    shared = keras.layers.Dense(2, name="shared")
    out = keras.layers.Add()([shared(seq(inp)), shared(seq(inp) * 2.0)])
    qouter = quantize_model(keras.Model(inp, out))
    inner = qouter.get_layer("seq")
    kinds = [type(layer).__name__ for layer in inner.layers]
    assert kinds == ["Flatten", "QDense", "QDense"]
    assert isinstance(qouter.get_layer("shared"), QDense)
    # still one shared layer with one kernel scale
    assert sum(isinstance(layer, QDense) for layer in qouter.layers) == 1
    assert len(qouter.get_layer("shared").kernel_quantizer.weights) == 1


def test_already_quantized_layers_are_cloned_as_they_are():
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            QDense(4, kernel_granularity="row", name="q"),
            keras.layers.Dense(2, name="plain"),
        ]
    )
    model.get_layer("q").kernel_quantizer.scale.assign(np.full((3, 1), 0.01, "float32"))
    qmodel, report = quantize_model(model, return_report=True)
    assert report.already_quantized == ("q",) and list(report.quantized) == ["plain"]
    scale = qmodel.get_layer("q").kernel_quantizer.scale.numpy()
    np.testing.assert_array_equal(scale, np.float32(0.01))
    assert lqs.is_quantized_layer(qmodel.get_layer("plain"))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(layers={"nope": {}}),
            "layers names 'nope', which is not a layer of model 'branchy'; "
            "allowed: .*'head'",
        ),
        (
            dict(layers={"head": {"granularity": "row"}}),
            r"layers\['head'\] has unknown option\(s\) \['granularity'\]",
        ),
        (
            dict(layers={"depthwise": {}}),
            r"layers\['depthwise'\] asks to quantize a DepthwiseConv2D",
        ),
        (
            dict(layers={keras.layers.DepthwiseConv2D: {}}),
            "layers keys must be layer names or keras.layers.Dense",
        ),
        (
            dict(layers={"head": "column"}),
            r"layers\['head'\] must be a dict of quantizer options or None",
        ),
        (dict(layers=["head"]), "layers must be None, a dict"),
        (
            dict(kernel_granularity="diagonal"),
            "kernel_granularity must be one of 'scalar', .*got 'diagonal'",
        ),
        (dict(threshold=-1.0), "threshold must be a finite number >= 0, got -1.0"),
        (dict(bias_quantizer="lsq"), "bias_quantizer must be 'nested', 'ste'"),
        (dict(copy_weights="yes"), "copy_weights must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(branchy_model(), **kwargs)


def test_bad_models_raise_naming_the_parameter():
    with pytest.raises(ValueError, match="model must be a keras.Model, got Dense"):
        quantize_model(keras.layers.Dense(2))
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 3), np.float32))
    message = "model must be a Sequential or functional keras.Model, got the subclassed"
    with pytest.raises(ValueError, match=message):
        quantize_model(subclassed)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="is not built.*copy_weights=False"):
        quantize_model(unbuilt)
    assert isinstance(quantize_model(unbuilt, copy_weights=False).layers[0], QDense)
