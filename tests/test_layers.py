"""QDense / QConv2D: forward equals the plain layer with quantized parameters; shapes,
Keras arguments, quantizer arguments, serialization (old configs too), validation and
scale dynamics."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from lqs import QConv2D, QDense
from lqs.protocol import QuantizedLayer, is_integer_loadable, is_quantized_layer
from lqs.quantizers import GRANULARITIES, MIN_SCALE, NestedQuantizer


def _set_scales(layer, value_fn):
    for q in layer.quantizers():
        q.scale.assign(value_fn(tuple(q.scale.shape)).astype(np.float32))


def _floor_q(p, s):
    return np.floor(p / s) * s


@pytest.mark.parametrize(
    "granularity,shape", [("scalar", (1,)), ("row", (7, 1)), ("column", (1, 5))]
)
def test_qdense_forward_matches_numpy(granularity, shape):
    rng = np.random.default_rng(0)
    layer = QDense(
        5,
        activation="relu",
        kernel_granularity=granularity,
        bias_granularity="row",
        bias_initializer="random_normal",
    )
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
    [
        ("scalar", (1,)),
        ("row", (3, 1, 1, 1)),
        ("column", (1, 3, 1, 1)),
        ("channel", (1, 1, 2, 1)),
        ("filter", (1, 1, 1, 4)),
    ],
)
def test_qconv2d_forward_matches_plain_conv_with_quantized_kernel(granularity, shape):
    rng = np.random.default_rng(1)
    layer = QConv2D(
        4,
        3,
        padding="same",
        strides=2,
        kernel_granularity=granularity,
        bias_initializer="random_normal",
    )
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
    layer = QDense(
        3, kernel_granularity="column", bias_quantizer=None, bias_initializer="ones"
    )
    layer.build((None, 4))
    layer.kernel_quantizer.scale.assign(np.array([[0.1, 0.2, 0.05]], np.float32))
    (kernel,) = layer.integer_parameters()
    assert kernel.name == "kernel" and kernel.values.dtype == np.int64
    assert kernel.group_count == 3
    forward = layer.quantized_kernel().numpy()
    np.testing.assert_array_equal(kernel.reconstruct(), forward)
    assert list(layer.float_parameters()) == ["bias"]
    ones = np.ones(3, np.float32)
    np.testing.assert_array_equal(layer.quantized_bias().numpy(), ones)


def test_bad_arguments_are_named():
    bias = "bias_granularity must be one of 'scalar', 'row'.*got 'column'"
    with pytest.raises(ValueError, match=bias):
        QDense(3, bias_granularity="column")
    kernel = "kernel_granularity must be one of 'scalar', 'row', 'column'.*'channel'"
    with pytest.raises(ValueError, match=kernel):
        QDense(3, kernel_granularity="channel")
    with pytest.raises(ValueError, match="data_format"):
        QConv2D(3, 3, data_format="channels_middle")
    threshold = "threshold must be a finite number >= 0, got -1"
    with pytest.raises(ValueError, match=threshold):
        QConv2D(3, 3, threshold=-1)
    padding = "padding must be 'valid' or 'same', got 'full'"
    with pytest.raises(ValueError, match=padding):
        QConv2D(3, 3, padding="full")


def _models():
    mlp = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Flatten(),
            QDense(8, activation="relu", kernel_granularity="column", threshold=1e-3),
            QDense(3, "softmax", kernel_granularity="row", bias_granularity="row"),
        ]
    )
    inp = keras.Input((6, 6, 1))
    h = QConv2D(4, 3, padding="same", kernel_granularity="filter", activation="relu")(
        inp
    )
    h = keras.layers.BatchNormalization()(h)
    h = QConv2D(
        4, 3, kernel_granularity="channel", quantize_bias=False, scale_gradient="ste"
    )(h)
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
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert a.get_config() == b.get_config()


@pytest.mark.parametrize("cls,args", [(QDense, (4,)), (QConv2D, (4, 3))])
def test_get_config_from_config_round_trip(cls, args):
    quantizer = NestedQuantizer(
        "row",
        3e-7,
        aggregate="sum",
        all_above_vote=False,
        init_bits=4,
        scale_gradient="ste",
    )
    layer = cls(
        *args, kernel_quantizer=quantizer, bias_quantizer=None, kernel_regularizer="l2"
    )
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.bias_quantizer is None and clone.kernel_quantizer.threshold == 3e-7
    assert clone.kernel_quantizer.init_bits == 4
    assert clone.kernel_quantizer.aggregate == "sum"
    layer.build((None, 6) if cls is QDense else (None, 6, 6, 2))
    # built or not, the config is the same
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()


def test_init_bits_starts_scales_from_the_weights():
    layer = QDense(
        6,
        kernel_granularity="column",  # applied on top of the quantizer given
        kernel_quantizer=NestedQuantizer(init_bits=4),
        bias_quantizer=NestedQuantizer(init_bits=4),
    )
    layer.build((None, 10))
    W = layer.kernel.numpy()
    np.testing.assert_allclose(
        layer.kernel_quantizer.scale.numpy()[0], np.abs(W).max(axis=0) / 7, rtol=1e-5
    )
    # bias is all zeros -> scale floored at the minimum
    np.testing.assert_allclose(layer.bias_quantizer.scale.numpy(), MIN_SCALE)


def _train_scales(threshold, all_above_vote=True, scale_gradient="threshold", steps=60):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # MNIST-shaped synthetic data
    x = rng.uniform(size=(steps * 16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, steps * 16)
    quantizer = NestedQuantizer(
        threshold=threshold,
        all_above_vote=all_above_vote,
        scale_gradient=scale_gradient,
        init_bits=8,
    )
    q = dict(kernel_quantizer=quantizer, bias_quantizer=quantizer)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            QDense(32, activation="relu", **q),
            QDense(10, activation="softmax", **q),
        ]
    )
    before = model.layers[1].kernel_quantizer.scale.numpy().copy()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    return before, model.layers[1].kernel_quantizer.scale.numpy()


@pytest.mark.slow
def test_scales_move_as_the_threshold_predicts():
    # a huge threshold: every ratio is below it, every element votes about -1 -> scales
    # grow fast
    before, huge = _train_scales(1e6)
    assert huge[0] > before[0] * 1.5
    # a tiny threshold: every ratio is above it, the all-above rule votes -tanh(1e-12):
    # Adam still moves the scale, but far less than the huge-threshold run
    _, tiny = _train_scales(1e-12)
    assert before[0] <= tiny[0] < huge[0]
    assert (tiny[0] - before[0]) < 0.2 * (huge[0] - before[0])
    # threshold 0 with the text's zero vote: no ratio is below 0, every vote is 0,
    # scales stay exactly put (with a tiny positive threshold, elements with a zero
    # upstream gradient - dead ReLUs - still vote)
    _, frozen = _train_scales(0.0, all_above_vote=False)
    np.testing.assert_array_equal(frozen, before)
    # the loss-term flavour: the forward pass gives the scale no gradient
    _, ste = _train_scales(1e6, scale_gradient="ste")
    np.testing.assert_array_equal(ste, before)


def test_mixed_precision_policy():
    layer = QConv2D(2, 3, dtype="mixed_float16")
    out = layer(tf.ones((1, 5, 5, 1)))
    assert out.dtype == tf.float16
    assert layer.kernel_quantizer.scale.dtype == "float32"


# ------------------------------------------------------------ Keras Dense / Conv2D


def test_layers_are_keras_dense_and_conv2d_with_every_keras_argument():
    keras_args = dict(
        activation="tanh",
        use_bias=True,
        kernel_initializer="ones",
        bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.5),
        bias_regularizer="l1",
        activity_regularizer="l2",
        kernel_constraint=keras.constraints.MaxNorm(1.0),
        bias_constraint="non_neg",
    )
    dense = QDense(4, **keras_args)
    assert isinstance(dense, keras.layers.Dense)
    dense.build((None, 3))
    np.testing.assert_array_equal(dense.kernel.numpy(), np.ones((3, 4), np.float32))
    assert len(dense.losses) == 2  # kernel and bias regularizers
    plain = keras.layers.Dense(4, **keras_args)
    keras_keys = set(plain.get_config())
    assert keras_keys <= set(dense.get_config())
    for key in keras_keys - {"name"}:
        assert dense.get_config()[key] == plain.get_config()[key], key
    dense.kernel.assign(np.full((3, 4), 2.0, np.float32))
    dense.kernel.assign(dense.kernel_constraint(dense.kernel))  # as the optimizer does
    norms = np.linalg.norm(dense.kernel.numpy(), axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    conv = QConv2D(6, (3, 2), strides=(2, 1), padding="same", groups=2, use_bias=False)
    assert isinstance(conv, keras.layers.Conv2D)
    conv.build((None, 8, 8, 4))
    assert tuple(conv.kernel.shape) == (3, 2, 2, 6)
    assert conv.bias is None and conv.bias_quantizer is None
    assert conv.compute_output_shape((None, 8, 8, 4)) == (None, 4, 8, 6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(strides=2, padding="same"),
        dict(dilation_rate=2),
        dict(groups=2),
        dict(dilation_rate=(1, 2), padding="same", groups=4),
    ],
)
def test_qconv2d_strides_dilation_groups_match_keras_conv2d(kwargs):
    rng = np.random.default_rng(3)
    layer = QConv2D(
        4, 3, kernel_granularity="channel", bias_initializer="random_normal", **kwargs
    )
    layer.build((None, 9, 9, 4))
    _set_scales(layer, lambda s: rng.uniform(0.01, 0.1, s))
    plain = keras.layers.Conv2D(4, 3, **kwargs)
    plain.build((None, 9, 9, 4))
    sK, sb = layer.kernel_quantizer.scale.numpy(), layer.bias_quantizer.scale.numpy()
    plain.set_weights(
        [_floor_q(layer.kernel.numpy(), sK), _floor_q(layer.bias.numpy(), sb)]
    )
    x = rng.normal(size=(2, 9, 9, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)


def test_qconv2d_channels_first_equals_channels_last():
    rng = np.random.default_rng(4)
    last = QConv2D(3, 3, kernel_granularity="filter", bias_initializer="random_normal")
    first = QConv2D(3, 3, kernel_granularity="filter", data_format="channels_first")
    x = rng.normal(size=(2, 7, 7, 2)).astype(np.float32)
    last.build((None, 7, 7, 2))
    first.build((None, 2, 7, 7))
    first.set_weights(last.get_weights())
    want = np.transpose(last(x).numpy(), (0, 3, 1, 2))
    got = first(np.transpose(x, (0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_keras_quantization_policies_are_refused():
    message = "dtype must not be a Keras quantization policy.*'int8'"
    with pytest.raises(ValueError, match=message):
        QDense(3, dtype="int8_from_float32")


# ------------------------------------------------------------ quantizer arguments


def _scale_grad(layer, x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    return tape.gradient(loss, layer.kernel_quantizer.scale).numpy()


SPECS = {
    "alias": ("nested", dict(kernel_granularity="column", threshold=1e3)),
    "instance": (NestedQuantizer("column", 1e3), {}),
    "config": ({"granularity": "column", "threshold": 1e3}, {}),
    "serialized": (
        keras.saving.serialize_keras_object(NestedQuantizer("column", 1e3)),
        {},
    ),
    "instance+shorthand": (
        NestedQuantizer("row", 5.0),
        dict(kernel_granularity="column", threshold=1e3),
    ),
}


@pytest.mark.parametrize("form", list(SPECS))
def test_quantizer_given_as_alias_instance_config_or_serialized(form):
    spec, shorthand = SPECS[form]
    layer = QDense(3, kernel_quantizer=spec, **shorthand)
    reference = QDense(3, kernel_granularity="column", threshold=1e3)
    got, want = layer.get_config(), reference.get_config()
    assert got["kernel_quantizer"] == want["kernel_quantizer"]
    layer.build((None, 4))
    assert layer.kernel_quantizer.name == "kernel_quantizer"
    assert tuple(layer.kernel_quantizer.scale.shape) == (1, 3)
    # a huge threshold votes for coarser scales
    assert np.all(_scale_grad(layer, np.ones((2, 4), np.float32)) < 0)


def test_ste_alias_and_scale_gradient_shorthand_give_the_loss_term_quantizer():
    x = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)
    for layer in (
        QDense(3, kernel_quantizer="ste", threshold=1e3),
        QDense(3, scale_gradient="ste", threshold=1e3),
    ):
        assert layer.kernel_quantizer.scale_gradient == "ste"
        np.testing.assert_array_equal(_scale_grad(layer, x), 0.0)
    # each quantizer argument is its own; the shorthand sets both
    own = QDense(3, kernel_quantizer="ste").bias_quantizer
    assert own.scale_gradient == "threshold"
    assert QDense(3, scale_gradient="ste").bias_quantizer.scale_gradient == "ste"


def test_an_instance_is_a_template_and_takes_the_layer_dtype():
    template = NestedQuantizer("scalar", init_bits=4)
    a = QDense(2, kernel_quantizer=template)
    b = QDense(3, kernel_quantizer=template, dtype="mixed_float16")
    assert a.kernel_quantizer is not template
    assert a.kernel_quantizer is not b.kernel_quantizer
    assert b.kernel_quantizer.dtype_policy.name == "mixed_float16"
    a.build((None, 5))
    b.build((None, 5))
    assert template.scale is None and a.kernel_quantizer.init_bits == 4


def _unnamed(config: dict) -> dict:
    return {**config, "name": ""}


def test_float_bias_by_none_and_by_the_legacy_flag():
    new, old = QDense(3, bias_quantizer=None), QDense(3, quantize_bias=False)
    assert _unnamed(new.get_config()) == _unnamed(old.get_config())
    assert new.bias_quantizer is None and not new.quantize_bias
    assert QDense(3).quantize_bias
    message = "quantize_bias=True contradicts bias_quantizer=None"
    with pytest.raises(ValueError, match=message):
        QDense(3, quantize_bias=True, bias_quantizer=None)
    message = "quantize_bias must be True, False or None, got 'no'"
    with pytest.raises(ValueError, match=message):
        QDense(3, quantize_bias="no")


def test_legacy_quantizer_keywords_warn_and_build_the_same_quantizer():
    message = r"kernel_quantizer=lqs.NestedQuantizer\(aggregate='sum'"
    with pytest.warns(DeprecationWarning, match=message):
        old = QConv2D(2, 3, kernel_granularity="filter", aggregate="sum", init_bits=3)
    quantizer = NestedQuantizer(aggregate="sum", init_bits=3)
    new = QConv2D(
        2,
        3,
        kernel_granularity="filter",
        kernel_quantizer=quantizer,
        bias_quantizer=quantizer,
    )
    assert _unnamed(old.get_config()) == _unnamed(new.get_config())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel_quantizer="lsq"), "kernel_quantizer must be 'nested'.*'lsq'"),
        (dict(bias_quantizer=3), r"bias_quantizer must be .*\(or None .*\), got 3"),
        (
            dict(kernel_quantizer={"granularity": "row", "bits": 4}),
            r"kernel_quantizer has unknown option\(s\) \['bits'\]",
        ),
        (
            dict(kernel_quantizer="ste", scale_gradient="threshold"),
            "scale_gradient='threshold' contradicts kernel_quantizer='ste'",
        ),
        (
            dict(bias_quantizer=NestedQuantizer("column")),
            "bias_quantizer's granularity must be one of 'scalar', 'row'",
        ),
        (
            dict(kernel_quantizer=NestedQuantizer("filter")),
            "kernel_quantizer's granularity must be one of",
        ),
        (
            dict(scale_gradient="lsq"),
            "scale_gradient must be one of 'threshold', 'ste', got 'lsq'",
        ),
    ],
)
def test_bad_quantizer_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QDense(3, **kwargs)


# ------------------------------------------------------------ protocol


def test_layers_implement_the_quantized_layer_protocol():
    for layer in (QDense(2), QConv2D(2, 3)):
        assert isinstance(layer, QuantizedLayer) and is_quantized_layer(layer)
        # loaded by lqs.export's nested-quantizer default, not by a hook
        assert not is_integer_loadable(layer)
    assert not is_quantized_layer(keras.layers.Dense(2))
    assert not is_quantized_layer(QDense)


# ------------------------------------------------------------ models saved before
# QDense/QConv2D subclassed Dense/Conv2D


def _to_old_config(config: dict) -> dict:
    """What the layers before the Dense/Conv2D subclassing wrote for the same layer."""
    dropped = ("quantization_config", "groups")
    config = {k: v for k, v in config.items() if k not in dropped}
    kernel = config.pop("kernel_quantizer")["config"]
    bias = config.pop("bias_quantizer")
    config.update(
        kernel_granularity=kernel["granularity"],
        bias_granularity=bias["config"]["granularity"] if bias else "scalar",
        quantize_bias=bias is not None,
    )
    for key in ("threshold", "scale_gradient", "aggregate", "all_above_vote"):
        config[key] = kernel[key]
    for key in ("scale_init", "min_scale", "init_bits"):
        config[key] = kernel[key]
    return config


def test_old_config_keys_load(tmp_path):
    model = _models()["cnn"]
    x = np.random.default_rng(6).uniform(size=(4, 6, 6, 1)).astype(np.float32)
    path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                tree = json.loads(data)
                for layer in tree["config"]["layers"]:
                    if layer["class_name"] in ("QDense", "QConv2D"):
                        layer["config"] = _to_old_config(layer["config"])
                data = json.dumps(tree).encode()
            dst.writestr(item, data)
    with zipfile.ZipFile(old_path) as z:
        assert '"aggregate"' in z.read("config.json").decode()
    loaded = keras.models.load_model(old_path)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert a.get_config() == b.get_config()


# ------------------------------------------------------------ input validation


@pytest.mark.parametrize(
    "make,param,bad",
    [
        (lambda: QConv2D(4, 0), "kernel_size", "0"),
        (lambda: QConv2D(4, 3, strides=0), "strides", "0"),
        (lambda: QConv2D(4, -1), "kernel_size", "-1"),
        (lambda: QDense(units="ten"), "units", "'ten'"),
        (lambda: QDense(units=None), "units", "None"),
        (lambda: QDense(0), "units", "0"),
    ],
)
def test_bad_sizes_raise_at_construction_naming_the_parameter(make, param, bad):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{param} must be a positive integer")
    assert f"got {bad};" in message and "fix:" in message


def _not_allowed(allowed):
    return st.text(max_size=8).filter(lambda v: v not in allowed)


_NUMBERS = st.one_of(st.integers(-5, 5), st.floats())
_BASICS = (st.text(max_size=4), st.none(), st.booleans())
_BAD_COUNT = st.one_of(
    st.integers(max_value=0),
    st.floats(),
    *_BASICS,
    st.lists(st.integers(1, 4), max_size=2),
)
_BAD_ELEMENT = st.one_of(
    st.integers(max_value=0), st.floats(), st.text(max_size=2), st.none()
)
_BAD_PAIR = st.one_of(
    st.integers(max_value=0),
    st.floats(),
    *_BASICS,
    st.lists(st.integers(1, 4), max_size=4).filter(lambda v: len(v) != 2).map(tuple),
    st.tuples(st.integers(1, 4), _BAD_ELEMENT),
)
# strictly negative by its bound (a `v < 0` filter once drew 0.0 in this test)
_NEGATIVE = st.floats(max_value=-1e-300, allow_nan=False)
_NON_FINITE = st.sampled_from([float("nan"), float("inf")])
_BAD_THRESHOLD = st.one_of(
    _NEGATIVE, _NON_FINITE, st.text(max_size=4), st.booleans(), st.tuples(st.floats())
)
_BAD_POSITIVE = st.one_of(st.floats(max_value=0), _NON_FINITE, *_BASICS)
_BAD_CHOICE = st.one_of(
    _not_allowed(GRANULARITIES), _NUMBERS, st.tuples(st.text(max_size=2))
)
_DENSE_ONLY = st.one_of(_BAD_CHOICE, st.sampled_from(["channel", "filter"]))
_BIAS_ONLY = st.one_of(_BAD_CHOICE, st.sampled_from(["column", "channel", "filter"]))

#: case -> (constructor of the value, parameter name, strategy of bad values); None
#: is not bad for the shorthand (threshold, granularities): it means "not given"
CASES = {
    "QDense.units": (lambda v: QDense(v), "units", _BAD_COUNT),
    "QConv2D.filters": (lambda v: QConv2D(v, 3), "filters", _BAD_COUNT),
    "QConv2D.kernel_size": (lambda v: QConv2D(2, v), "kernel_size", _BAD_PAIR),
    "QConv2D.strides": (lambda v: QConv2D(2, 3, strides=v), "strides", _BAD_PAIR),
    "QConv2D.dilation_rate": (
        lambda v: QConv2D(2, 3, dilation_rate=v),
        "dilation_rate",
        _BAD_PAIR,
    ),
    "QDense.threshold": (lambda v: QDense(2, threshold=v), "threshold", _BAD_THRESHOLD),
    "QConv2D.threshold": (
        lambda v: QConv2D(2, 3, threshold=v),
        "threshold",
        _BAD_THRESHOLD,
    ),
    "QDense.kernel_granularity": (
        lambda v: QDense(2, kernel_granularity=v),
        "kernel_granularity",
        _DENSE_ONLY,
    ),
    "QConv2D.kernel_granularity": (
        lambda v: QConv2D(2, 3, kernel_granularity=v),
        "kernel_granularity",
        _BAD_CHOICE,
    ),
    "QDense.bias_granularity": (
        lambda v: QDense(2, bias_granularity=v),
        "bias_granularity",
        _BIAS_ONLY,
    ),
    "QConv2D.bias_granularity": (
        lambda v: QConv2D(2, 3, bias_granularity=v),
        "bias_granularity",
        _BIAS_ONLY,
    ),
    "NestedQuantizer.granularity": (
        lambda v: NestedQuantizer(v),
        "granularity",
        st.one_of(_BAD_CHOICE, st.none()),
    ),
    "NestedQuantizer.threshold": (
        lambda v: NestedQuantizer("scalar", v),
        "threshold",
        st.one_of(_BAD_THRESHOLD, st.none()),
    ),
    "NestedQuantizer.scale_gradient": (
        lambda v: NestedQuantizer(scale_gradient=v),
        "scale_gradient",
        st.one_of(_not_allowed(("threshold", "ste")), _NUMBERS, st.none()),
    ),
    "NestedQuantizer.aggregate": (
        lambda v: NestedQuantizer(aggregate=v),
        "aggregate",
        st.one_of(_not_allowed(("mean", "sum")), _NUMBERS, st.none()),
    ),
    "NestedQuantizer.all_above_vote": (
        lambda v: NestedQuantizer(all_above_vote=v),
        "all_above_vote",
        st.one_of(_NUMBERS, st.text(max_size=4), st.none()),
    ),
    "NestedQuantizer.scale_init": (
        lambda v: NestedQuantizer(scale_init=v),
        "scale_init",
        _BAD_POSITIVE,
    ),
    "NestedQuantizer.min_scale": (
        lambda v: NestedQuantizer(min_scale=v, scale_init=1.0),
        "min_scale",
        _BAD_POSITIVE,
    ),
    "NestedQuantizer.init_bits": (
        lambda v: NestedQuantizer(init_bits=v),
        "init_bits",
        st.one_of(
            st.integers(max_value=1), st.floats(), st.text(max_size=4), st.booleans()
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_bad_values_raise_naming_parameter_and_value(case, data):
    make, param, strategy = CASES[case]
    value = data.draw(strategy, label=param)
    with pytest.raises((ValueError, TypeError)) as info:
        make(value)
    message = str(info.value)
    assert param in message, message
    shown = (repr(value), repr(tuple(value)) if isinstance(value, list) else None)
    assert any(s is not None and s in message for s in shown), message
