"""lqs.models: the thesis layer sequences in every flavour, parameter counts, seeds, weight copying."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lqs import QConv2D, QDense, baselines
from lqs.models import (
    ARCHS,
    FLAVOURS,
    THESIS_INIT_STDDEV,
    allowed_kernel_granularities,
    build_model,
    copy_float_weights,
    float_param_count,
    quantized_layer_names,
)

DENSE_CLS = {
    "fp32": keras.layers.Dense,
    "nested": QDense,
    "loss_terms": QDense,
    "lsq": baselines.LSQDense,
    "fixed_bits": baselines.FixedBitsDense,
}
CONV_CLS = {
    "fp32": keras.layers.Conv2D,
    "nested": QConv2D,
    "loss_terms": QConv2D,
    "lsq": baselines.LSQConv2D,
    "fixed_bits": baselines.FixedBitsConv2D,
}


def _body(model):
    """Layers after the input layer."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def _conv_params(cin, cout, k=3):
    return k * k * cin * cout + cout


def _dense_params(n_in, n_out):
    return n_in * n_out + n_out


# ------------------------------------------------------------------------------------------ constants


def test_constants_and_allowed_granularities():
    assert ARCHS == ("mlp", "cnn", "resnet")
    assert FLAVOURS == ("fp32", "nested", "loss_terms", "lsq", "fixed_bits")
    assert allowed_kernel_granularities("mlp", "nested") == ("scalar", "row", "column")
    assert allowed_kernel_granularities("cnn", "lsq") == (
        "scalar",
        "row",
        "column",
        "channel",
        "filter",
    )
    assert allowed_kernel_granularities("resnet", "fp32") == ()
    with pytest.raises(ValueError, match="arch 'vgg'.*allowed.*'mlp'"):
        allowed_kernel_granularities("vgg", "nested")


@pytest.mark.parametrize(
    "arch,flavour,match",
    [
        ("vgg", "fp32", "arch 'vgg'.*allowed.*'mlp'"),
        ("mlp", "int8", "flavour 'int8'.*allowed.*'nested'"),
    ],
)
def test_unknown_arch_or_flavour(arch, flavour, match):
    with pytest.raises(ValueError, match=match):
        build_model(arch, flavour, input_shape=(28, 28, 1))


# ------------------------------------------------------------------------------------------ MLP


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mlp_thesis_sequence(flavour):
    model = build_model("mlp", flavour, input_shape=(28, 28, 1))
    body = _body(model)
    assert [layer.name for layer in body] == ["flatten", "dense1", "dense2"]
    assert isinstance(body[0], keras.layers.Flatten)
    for layer, units, act in zip(body[1:], (128, 10), ("relu", "softmax")):
        assert type(layer) is DENSE_CLS[flavour]
        assert layer.units == units
        assert layer.activation.__name__ == act
    # 784*128 + 128 + 128*10 + 10 float parameters in every flavour
    assert float_param_count(model) == 784 * 128 + 128 + 128 * 10 + 10 == 101_770
    expected_q = [] if flavour == "fp32" else ["dense1", "dense2"]
    assert quantized_layer_names(model) == expected_q
    assert model.output_shape == (None, 10)


def test_mlp_nested_scales_and_gradient_kind():
    nested = build_model("mlp", "nested", input_shape=(28, 28, 1), threshold=1e-7)
    ste = build_model("mlp", "loss_terms", input_shape=(28, 28, 1))
    # one scalar scale per kernel and per bias: 101,770 + 4 weights
    assert nested.count_params() == 101_770 + 4
    for layer in _body(nested)[1:]:
        assert layer.kernel_quantizer.scale_gradient == "threshold"
        assert layer.kernel_quantizer.threshold == 1e-7
        assert layer.bias_quantizer is not None
    for layer in _body(ste)[1:]:
        assert layer.kernel_quantizer.scale_gradient == "ste"


def test_mlp_granularity_and_bias_options():
    model = build_model(
        "mlp",
        "nested",
        input_shape=(28, 28, 1),
        kernel_granularity="column",
        bias_granularity="row",
        quantize_bias=True,
    )
    d1 = model.get_layer("dense1")
    assert tuple(d1.kernel_quantizer.scale.shape) == (1, 128)
    assert tuple(d1.bias_quantizer.scale.shape) == (128,)
    no_bias = build_model("mlp", "nested", input_shape=(28, 28, 1), quantize_bias=False)
    assert no_bias.get_layer("dense1").bias_quantizer is None
    with pytest.raises(ValueError, match="kernel_granularity 'filter'.*allowed"):
        build_model(
            "mlp", "nested", input_shape=(28, 28, 1), kernel_granularity="filter"
        )
    with pytest.raises(ValueError, match="quantize_dense"):
        build_model("mlp", "nested", input_shape=(28, 28, 1), quantize_dense=False)


@pytest.mark.parametrize("flavour", ["lsq", "fixed_bits"])
def test_mlp_baseline_bits(flavour):
    model = build_model(
        "mlp", flavour, input_shape=(28, 28, 1), bits=3, kernel_granularity="column"
    )
    for layer in _body(model)[1:]:
        assert layer.bits == 3
        assert layer.granularity == "column"
        assert layer.quantize_bias is True


def test_unknown_quantizer_option():
    with pytest.raises(ValueError, match="unknown quantizer option.*'bogus'.*allowed"):
        build_model("mlp", "nested", input_shape=(28, 28, 1), bogus=1)
    model = build_model(
        "mlp", "nested", input_shape=(28, 28, 1), aggregate="sum", all_above_vote=False
    )
    q = model.get_layer("dense1").kernel_quantizer
    assert (q.aggregate, q.all_above_vote) == ("sum", False)


# ------------------------------------------------------------------------------------------ CNN


def _cnn_param_count(h, w, c, classes=10):
    total, cin = 0, c
    for f in (32, 64, 128):
        total += (
            _conv_params(cin, f) + 4 * f + _conv_params(f, f) + 4 * f
        )  # conv + BN (4 per channel)
        cin = f
        h, w = h // 2, w // 2
    total += _dense_params(h * w * 128, 128) + 4 * 128 + _dense_params(128, classes)
    return total


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_cnn_thesis_sequence(flavour):
    model = build_model("cnn", flavour, input_shape=(32, 32, 3))
    body = _body(model)
    expected_types, expected_names = [], []
    for b in (1, 2, 3):
        expected_names += [
            f"conv{b}a",
            f"bn{b}a",
            f"conv{b}b",
            f"bn{b}b",
            f"pool{b}",
            f"drop{b}",
        ]
        expected_types += [CONV_CLS[flavour], keras.layers.BatchNormalization] * 2
        expected_types += [keras.layers.MaxPooling2D, keras.layers.Dropout]
    expected_names += ["flatten", "dense1", "bn_dense", "drop_dense", "dense2"]
    # thesis: only the six convolutions are quantized; the dense layers stay float
    expected_types += [
        keras.layers.Flatten,
        keras.layers.Dense,
        keras.layers.BatchNormalization,
        keras.layers.Dropout,
        keras.layers.Dense,
    ]
    assert [layer.name for layer in body] == expected_names
    assert [type(layer) for layer in body] == expected_types
    convs = [layer for layer in body if isinstance(layer, CONV_CLS[flavour])]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    for conv in convs:
        assert tuple(conv.kernel_size) == (3, 3)
        assert conv.padding == "same"
        assert conv.activation.__name__ == "relu"
    drops = [layer.rate for layer in body if isinstance(layer, keras.layers.Dropout)]
    assert drops == [0.2, 0.3, 0.4, 0.5]
    assert [p.pool_size for p in body if isinstance(p, keras.layers.MaxPooling2D)] == [
        (2, 2)
    ] * 3
    assert model.get_layer("dense1").units == 128
    assert model.get_layer("dense2").activation.__name__ == "softmax"
    assert float_param_count(model) == _cnn_param_count(32, 32, 3) == 552_874
    expected_q = (
        []
        if flavour == "fp32"
        else ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b"]
    )
    assert quantized_layer_names(model) == expected_q


def test_cnn_on_fashion_mnist_shape_and_quantize_dense():
    model = build_model(
        "cnn",
        "nested",
        input_shape=(28, 28, 1),
        kernel_granularity="filter",
        quantize_dense=True,
    )
    assert float_param_count(model) == _cnn_param_count(28, 28, 1) == 437_610
    assert quantized_layer_names(model)[-2:] == ["dense1", "dense2"]
    assert tuple(model.get_layer("conv2a").kernel_quantizer.scale.shape) == (
        1,
        1,
        1,
        64,
    )
    # a dense layer has no filter axis: it gets the per-output-unit analogue ("column")
    assert model.get_layer("dense1").kernel_quantizer.granularity == "column"
    chan = build_model(
        "cnn",
        "nested",
        input_shape=(28, 28, 1),
        kernel_granularity="channel",
        quantize_dense=True,
    )
    assert chan.get_layer("dense1").kernel_quantizer.granularity == "row"
    assert tuple(chan.get_layer("conv2a").kernel_quantizer.scale.shape) == (1, 1, 32, 1)
    with pytest.raises(ValueError, match="at least 8x8"):
        build_model("cnn", "fp32", input_shape=(4, 4, 1))


# ------------------------------------------------------------------------------------------ ResNet


def _resnet_param_count(c, classes=10):
    total = _conv_params(c, 32) + 4 * 32
    cin = 32
    for k, f in enumerate((32, 64, 128, 256)):
        total += _conv_params(cin, f) + 4 * f + _conv_params(f, f) + 4 * f
        if k > 0:
            total += _conv_params(cin, f, k=1) + 4 * f
        cin = f
    return total + _dense_params(256, classes)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_resnet_structure(flavour):
    model = build_model("resnet", flavour, input_shape=(64, 64, 3))
    convs = [layer for layer in model.layers if isinstance(layer, CONV_CLS[flavour])]
    names = ["stem_conv"]
    for k in range(1, 5):
        names += [f"s{k}b1_conv1", f"s{k}b1_conv2"] + (
            [f"s{k}b1_proj"] if k > 1 else []
        )
    assert sorted(c.name for c in convs) == sorted(names)
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert [model.get_layer(f"s{k}b1_conv1").filters for k in range(1, 5)] == [
        32,
        64,
        128,
        256,
    ]
    assert [model.get_layer(f"s{k}b1_conv1").strides for k in range(1, 5)] == [
        (1, 1),
        (2, 2),
        (2, 2),
        (2, 2),
    ]
    assert tuple(model.get_layer("s2b1_proj").kernel_size) == (1, 1)
    assert len([la for la in model.layers if isinstance(la, keras.layers.Add)]) == 4
    assert isinstance(model.get_layer("gap"), keras.layers.GlobalAveragePooling2D)
    assert (
        type(model.get_layer("dense")) is keras.layers.Dense
    )  # classifier float by default
    assert model.get_layer("s4b1_out").output.shape[1:3] == (4, 4)
    assert float_param_count(model) == _resnet_param_count(3)
    assert len(quantized_layer_names(model)) == (0 if flavour == "fp32" else 12)
    assert model.output_shape == (None, 10)


# ------------------------------------------------------------------------------------------ seeds, l2


def test_seeded_build_is_deterministic():
    a = build_model("cnn", "nested", input_shape=(16, 16, 1), seed=3)
    b = build_model("cnn", "nested", input_shape=(16, 16, 1), seed=3)
    c = build_model("cnn", "nested", input_shape=(16, 16, 1), seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(
        a.get_layer("conv1a").kernel.numpy(), c.get_layer("conv1a").kernel.numpy()
    )
    # layers get different seeds: two kernels of the same shape differ
    k = [a.get_layer(n).kernel.numpy() for n in ("conv1b", "conv2a")]
    assert k[0].shape != k[1].shape or not np.array_equal(*k)
    d = [a.get_layer(n).seed for n in ("drop1", "drop2", "drop3", "drop_dense")]
    assert len(set(d)) == 4


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_l2_on_every_kernel(flavour):
    model = build_model("cnn", flavour, input_shape=(16, 16, 1), l2=1e-4)
    with_kernel = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert len(with_kernel) == 8  # six convolutions + two dense
    for layer in with_kernel:
        assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
        assert layer.kernel_regularizer.l2 == pytest.approx(1e-4)
    expected = sum(
        1e-4 * float(np.sum(layer.kernel.numpy() ** 2)) for layer in with_kernel
    )
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    plain = build_model("cnn", flavour, input_shape=(16, 16, 1))
    assert all(
        layer.kernel_regularizer is None
        for layer in plain.layers
        if hasattr(layer, "kernel")
    )


# ------------------------------------------------------------------------------------------ copying


def _randomize(model, seed=7):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
    )


@pytest.mark.parametrize("flavour", ["nested", "loss_terms", "lsq", "fixed_bits"])
def test_copy_float_weights_cnn(flavour):
    src = build_model("cnn", "fp32", input_shape=(16, 16, 1), seed=0)
    _randomize(src)
    dst = build_model("cnn", flavour, input_shape=(16, 16, 1), seed=1)
    copy_float_weights(src, dst)
    for name in ("conv1a", "conv3b", "dense1", "dense2"):
        np.testing.assert_array_equal(
            dst.get_layer(name).kernel.numpy(), src.get_layer(name).kernel.numpy()
        )
        np.testing.assert_array_equal(
            dst.get_layer(name).bias.numpy(), src.get_layer(name).bias.numpy()
        )
    for name in ("bn1a", "bn_dense"):  # gamma, beta and the moving statistics
        for a, b in zip(
            dst.get_layer(name).get_weights(), src.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(a, b)
    if (
        flavour == "lsq"
    ):  # steps re-initialised from the copied weights: 2 mean|W| / sqrt(Q_P)
        layer = dst.get_layer("conv2a")
        expected = 2 * np.mean(np.abs(layer.kernel.numpy())) / np.sqrt(2**3 - 1)
        np.testing.assert_allclose(
            layer.kernel_step.numpy().ravel(), [expected], rtol=1e-5
        )


def test_copy_float_weights_scales_default_and_init_bits():
    from lqs.quantizers import MIN_SCALE

    src = build_model("mlp", "fp32", input_shape=(28, 28, 1))
    _randomize(src)
    dst = copy_float_weights(src, build_model("mlp", "nested", input_shape=(28, 28, 1)))
    assert dst.get_layer("dense1").kernel_quantizer.scale.numpy()[0] == pytest.approx(
        MIN_SCALE
    )
    dst8 = copy_float_weights(
        src,
        build_model(
            "mlp", "nested", input_shape=(28, 28, 1), kernel_granularity="column"
        ),
        init_bits=8,
    )
    w = src.get_layer("dense1").kernel.numpy()
    np.testing.assert_allclose(
        dst8.get_layer("dense1").kernel_quantizer.scale.numpy(),
        np.abs(w).max(axis=0, keepdims=True) / (2**7 - 1),
        rtol=1e-5,
    )
    b = src.get_layer("dense2").bias.numpy()
    np.testing.assert_allclose(
        dst8.get_layer("dense2").bias_quantizer.scale.numpy(),
        [np.abs(b).max() / (2**7 - 1)],
        rtol=1e-5,
    )


def test_copy_float_weights_mismatch():
    src = build_model("mlp", "fp32", input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="models do not match"):
        copy_float_weights(src, build_model("cnn", "nested", input_shape=(28, 28, 1)))
    with pytest.raises(ValueError, match="kernel shape"):
        copy_float_weights(src, build_model("mlp", "nested", input_shape=(14, 14, 1)))


def test_random_normal_init_draws_kernels_and_biases_from_the_thesis_normal():
    model = build_model(
        "mlp", "nested", input_shape=(28, 28, 1), weight_init="random_normal", seed=4
    )
    default = build_model("mlp", "nested", input_shape=(28, 28, 1), seed=4)
    for layer in ("dense1", "dense2"):
        kernel = np.asarray(model.get_layer(layer).kernel)
        bias = np.asarray(model.get_layer(layer).bias)
        # N(0, 0.05^2): the sample std of ~100k (resp. 1280) draws is within a few % of 0.05
        assert abs(kernel.std() - THESIS_INIT_STDDEV) < 0.1 * THESIS_INIT_STDDEV
        assert abs(kernel.mean()) < 0.01
        assert np.any(bias != 0) and abs(bias.std() - THESIS_INIT_STDDEV) < 0.02
        assert not np.any(np.asarray(default.get_layer(layer).bias))
    again = build_model(
        "mlp", "nested", input_shape=(28, 28, 1), weight_init="random_normal", seed=4
    )
    np.testing.assert_array_equal(
        np.asarray(again.get_layer("dense1").bias),
        np.asarray(model.get_layer("dense1").bias),
    )
    with pytest.raises(
        ValueError, match="unknown weight_init 'normal'.*'random_normal'"
    ):
        build_model("mlp", "fp32", input_shape=(28, 28, 1), weight_init="normal")
