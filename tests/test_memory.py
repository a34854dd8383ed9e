"""Tests of lqs.memory against hand-worked numbers and independent NumPy references."""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import pytest

from lqs import memory
from lqs.layers import QConv2D, QDense
from lqs.quantizers import IntegerTensor, NestedQuantizer

# ------------------------------------------------------------------------------------------
# independent references (float log2, written without lqs.memory)
# ------------------------------------------------------------------------------------------


def ref_bits(max_abs):
    """ceil(log2(m + 1)) + 1 with NumPy floats (fine for the small magnitudes used here)."""
    return (np.ceil(np.log2(np.asarray(max_abs, dtype=np.float64) + 1.0)) + 1).astype(
        np.int64
    )


def ref_group_bits(values: np.ndarray, scale_shape) -> np.ndarray:
    scale_shape = tuple(scale_shape)
    if scale_shape == (1,):
        return ref_bits(np.abs(values).max()).reshape(1)
    axes = tuple(i for i, d in enumerate(scale_shape) if d == 1)
    return ref_bits(np.abs(values).max(axis=axes, keepdims=True))


def set_quantized(layer, name: str, values: np.ndarray, scale: np.ndarray) -> None:
    """Make ``layer``'s parameter ``name`` have integers ``values`` at ``scale`` (bin centres)."""
    scale = np.asarray(scale, np.float32)
    getattr(layer, f"{name}_quantizer").scale.assign(scale)
    getattr(layer, name).assign(
        ((values + 0.5) * scale.astype(np.float64)).astype(np.float32)
    )


# ------------------------------------------------------------------------------------------
# the formula
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "max_abs, bits",
    [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 3),
        (4, 4),
        (7, 4),
        (8, 5),
        (127, 8),
        (128, 9),
        (2**40, 42),
        (2**63, 65),
    ],
)
def test_bit_width(max_abs, bits):
    assert memory.bit_width(max_abs) == bits


def test_bit_width_rejects_negative():
    with pytest.raises(ValueError, match="max_abs"):
        memory.bit_width(-1)


def test_all_zero_group_needs_one_bit():
    bits = memory.group_bits(np.zeros((3, 4), np.int64), (1, 4))
    np.testing.assert_array_equal(bits, [[1, 1, 1, 1]])


def test_negative_values_use_magnitude():
    # P_q = -4: ceil(log2(4 + 1)) + 1 = 3 + 1 = 4 bits (symmetric definition, not two's complement)
    assert memory.group_bits(np.array([-4, 0, 1]), (1,)).tolist() == [4]
    # -8 needs 5 bits, +7 needs 4
    assert memory.group_bits(np.array([[-8], [7]]), (2, 1)).tolist() == [[5], [4]]


@pytest.mark.parametrize(
    "shape, scale_shape",
    [
        ((5, 7), (1,)),
        ((5, 7), (5, 1)),
        ((5, 7), (1, 7)),
        ((3, 3, 4, 6), (1,)),
        ((3, 3, 4, 6), (3, 1, 1, 1)),
        ((3, 3, 4, 6), (1, 3, 1, 1)),
        ((3, 3, 4, 6), (1, 1, 4, 1)),
        ((3, 3, 4, 6), (1, 1, 1, 6)),
        ((9,), (1,)),
        ((9,), (9,)),
    ],
)
def test_group_bits_matches_reference(shape, scale_shape):
    rng = np.random.default_rng(1)
    # magnitudes spanning several widths, some groups all zero
    values = rng.integers(-300, 300, size=shape) * (rng.random(shape) < 0.7)
    values = values // rng.choice([1, 10, 100, 1000], size=scale_shape)
    got = memory.group_bits(values, scale_shape)
    assert got.shape == tuple(scale_shape)
    np.testing.assert_array_equal(
        got, ref_group_bits(values, scale_shape).reshape(scale_shape)
    )


def test_group_bits_rejects_non_integers():
    with pytest.raises(ValueError, match="integers"):
        memory.group_bits(np.array([0.5, 1.0]), (1,))


# ------------------------------------------------------------------------------------------
# hand-worked example: a QDense with a 2x3 kernel ("column": one scale per output unit)
# ------------------------------------------------------------------------------------------
#
# kernel P_q (in=2, out=3), one scale per column:
#     column 0: [ 3, -1]  max|.| = 3 -> ceil(log2 4) + 1 = 3 bits x 2 elements =  6 bits
#     column 1: [ 0,  0]  all zero    -> 1 bit                  x 2 elements =  2 bits
#     column 2: [-4,  7]  max|.| = 7 -> ceil(log2 8) + 1 = 4 bits x 2 elements =  8 bits
#     int_bits = 16, scale_bits = 3 x 32 = 96, total = 112, fp32 = 6 x 32 = 192
#     bits_min 1, bits_max 4, bits_mean = 16 / 6, unique {-4, -1, 0, 3, 7} = 5
# bias P_q (3,), one scalar scale:
#     [5, -2, 0]  max|.| = 5 -> ceil(log2 6) + 1 = 4 bits x 3 elements = 12 bits
#     scale_bits = 32, total = 44, fp32 = 96, unique 3
# layer totals: 9 params, 156 bits (19.5 bytes), fp32 288 bits, 156 / 9 = 17.33 bits/param,
#     compression 288 / 156 = 1.846..., quantized-only numbers identical (everything is quantized)

KERNEL_PQ = np.array([[3, 0, -4], [-1, 0, 7]])
KERNEL_SCALE = np.array([[0.5, 0.25, 0.125]], np.float32)
BIAS_PQ = np.array([5, -2, 0])
BIAS_SCALE = np.array([0.01], np.float32)


def hand_model() -> keras.Model:
    layer = QDense(3, kernel_granularity="column", name="hand")
    model = keras.Sequential([keras.Input((2,)), layer])
    set_quantized(layer, "kernel", KERNEL_PQ, KERNEL_SCALE)
    set_quantized(layer, "bias", BIAS_PQ, BIAS_SCALE)
    return model


def test_hand_worked_integer_parameters_are_set():
    model = hand_model()
    kernel, bias = model.layers[0].integer_parameters()
    np.testing.assert_array_equal(kernel.values, KERNEL_PQ)
    np.testing.assert_array_equal(bias.values, BIAS_PQ)


def test_hand_worked_tensor_bits():
    acc = memory.tensor_bits(IntegerTensor("kernel", KERNEL_PQ, KERNEL_SCALE, "column"))
    np.testing.assert_array_equal(acc["bits"], [[3, 1, 4]])
    assert acc["n_params"] == 6 and acc["n_groups"] == 3 and acc["group_size"] == 2
    assert acc["int_bits"] == 16
    assert acc["scale_bits"] == 96
    assert acc["total_bits"] == 112
    assert acc["fp32_bits"] == 192
    assert (acc["bits_min"], acc["bits_max"]) == (1.0, 4.0)
    assert acc["bits_mean"] == pytest.approx(16 / 6)
    assert (acc["unique_values"], acc["value_min"], acc["value_max"]) == (5, -4, 7)


def test_hand_worked_layer_table():
    table = pd.DataFrame(memory.layer_table(hand_model())).set_index("parameter")
    assert list(table.index) == ["kernel", "bias"]
    k, b = table.loc["kernel"], table.loc["bias"]
    assert (k["int_bits"], k["scale_bits"], k["total_bits"], k["fp32_bits"]) == (
        16,
        96,
        112,
        192,
    )
    assert (b["int_bits"], b["scale_bits"], b["total_bits"], b["fp32_bits"]) == (
        12,
        32,
        44,
        96,
    )
    assert (k["bits_min"], k["bits_max"], b["bits_min"], b["bits_max"]) == (1, 4, 4, 4)
    assert k["granularity"] == "column" and b["granularity"] == "scalar"
    assert k["shape"] == (2, 3) and b["shape"] == (3,)
    assert k["n_groups"] == 3 and b["n_groups"] == 1
    assert (b["unique_values"], b["value_min"], b["value_max"]) == (3, -2, 5)
    assert k["kib"] == pytest.approx(112 / 8 / 1024)
    assert k["bits_per_param"] == pytest.approx(112 / 6)
    assert k["compression"] == pytest.approx(192 / 112)
    assert bool(k["quantized"]) and bool(b["quantized"])
    assert set(table["layer_type"]) == {"QDense"}


def test_hand_worked_model_summary():
    s = memory.model_summary(hand_model())
    assert s["n_params"] == 9
    assert s["n_scales"] == 4
    assert s["total_bits"] == 156
    assert s["fp32_bits"] == 288
    assert s["kib"] == pytest.approx(156 / 8 / 1024)
    assert s["fp32_kib"] == pytest.approx(288 / 8 / 1024)
    assert s["bits_per_param"] == pytest.approx(156 / 9)
    assert s["compression"] == pytest.approx(288 / 156)
    assert s["n_quantized_params"] == 9 and s["quantized_fraction"] == 1.0
    assert s["max_bits"] == 4
    assert s["q_bits_per_param"] == pytest.approx(156 / 9)
    assert s["q_compression"] == pytest.approx(288 / 156)


def test_hand_worked_summary_prints_totals():
    lines: list[str] = []
    result = memory.summary(hand_model(), print_fn=lines.append)
    text = "\n".join(lines)
    total = next(line for line in lines if line.startswith("Total "))
    # params 9, quantized 9, scales 4, 17.33 bits/param, widest 4 bits, 0.02 KiB, 0.04 KiB, 1.85 x
    assert total.split() == [
        "Total",
        "9",
        "9",
        "4",
        "17.33",
        "4",
        "0.02",
        "0.04",
        "1.85",
        "x",
    ]
    assert "hand (QDense)" in text
    assert "compression 1.85 x" in text
    assert result["total_bits"] == 156


# ------------------------------------------------------------------------------------------
# float layers, quantize_bias=False, granularities
# ------------------------------------------------------------------------------------------


def test_plain_layers_count_32_bits_including_batchnorm_statistics():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(5),
        ]
    )
    table = pd.DataFrame(memory.layer_table(model))
    n = (
        3 * 3 * 2 * 4 + 4 + 4 * 4 + 4 * 4 * 4 * 5 + 5
    )  # conv, BN (gamma beta mean var), dense
    assert n == model.count_params()
    assert set(table.loc[table["layer_type"] == "BatchNormalization", "parameter"]) == {
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    }
    assert not table["quantized"].any()
    assert (table["total_bits"] == 32 * table["n_params"]).all()
    assert table["unique_values"].isna().all() and table["value_min"].isna().all()
    s = memory.model_summary(model)
    assert s["n_params"] == n and s["total_bits"] == 32 * n == s["fp32_bits"]
    assert s["compression"] == 1.0 and s["bits_per_param"] == 32.0
    assert (
        s["n_quantized_params"] == 0
        and math.isnan(s["max_bits"])
        and math.isnan(s["q_compression"])
    )


def test_unquantized_bias_is_a_float_row():
    layer = QDense(3, quantize_bias=False, name="q")
    model = keras.Sequential([keras.Input((2,)), layer])
    set_quantized(layer, "kernel", KERNEL_PQ, np.array([0.5], np.float32))
    table = pd.DataFrame(memory.layer_table(model)).set_index("parameter")
    # kernel one scalar scale: max|.| = 7 -> 4 bits x 6 = 24 + 32 = 56; bias 3 floats = 96
    assert table.loc["kernel", "total_bits"] == 56
    assert not table.loc["bias", "quantized"] and table.loc["bias", "total_bits"] == 96
    assert table.loc["bias", "n_groups"] == 0
    s = memory.model_summary(model)
    assert (
        s["total_bits"] == 152 and s["n_quantized_params"] == 6 and s["n_scales"] == 1
    )
    assert s["q_total_bits"] == 56 and s["q_fp32_bits"] == 192
    assert s["quantized_fraction"] == pytest.approx(6 / 9)


@pytest.mark.parametrize(
    "granularity, n_groups",
    [("scalar", 1), ("row", 3), ("column", 3), ("channel", 4), ("filter", 5)],
)
def test_conv_granularity_groups(granularity, n_groups):
    layer = QConv2D(
        5,
        3,
        kernel_quantizer=NestedQuantizer(granularity, init_bits=3),
        bias_quantizer=NestedQuantizer("row", init_bits=3),
    )
    model = keras.Sequential([keras.Input((6, 6, 4)), layer])
    kernel, bias = layer.integer_parameters()
    table = pd.DataFrame(memory.layer_table(model)).set_index("parameter")
    k = table.loc["kernel"]
    assert k["n_groups"] == n_groups and k["granularity"] == granularity
    ref = ref_group_bits(kernel.values, kernel.scale.shape)
    group_size = kernel.values.size // n_groups
    assert k["int_bits"] == int(ref.sum()) * group_size
    assert k["scale_bits"] == 32 * n_groups
    assert k["bits_max"] == ref.max() and k["bits_min"] == ref.min()
    assert k["bits_mean"] == pytest.approx(ref.mean())
    assert table.loc["bias", "n_groups"] == 5  # "row": one scale per filter
    np.testing.assert_array_equal(
        memory.group_bits(bias.values, bias.scale.shape),
        ref_group_bits(bias.values, bias.scale.shape),
    )


def test_scales_and_quantizer_sublayers_not_counted_separately():
    model = keras.Sequential(
        [keras.Input((4,)), QDense(3, kernel_granularity="column"), QDense(2)]
    )
    table = pd.DataFrame(memory.layer_table(model))
    assert "scale" not in set(table["parameter"])
    assert "NestedQuantizer" not in set(table["layer_type"])
    s = memory.model_summary(model)
    assert s["n_params"] == 4 * 3 + 3 + 3 * 2 + 2
    assert s["n_scales"] == 3 + 1 + 1 + 1
    # Keras counts the scales as weights too; lqs counts them as 32-bit overhead, not parameters
    assert model.count_params() == s["n_params"] + s["n_scales"]


# ------------------------------------------------------------------------------------------
# nested models, shared layers
# ------------------------------------------------------------------------------------------


def test_nested_models_and_shared_layers_counted_once():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            QDense(
                5,
                kernel_quantizer=NestedQuantizer("column", init_bits=3),
                bias_quantizer=NestedQuantizer(init_bits=3),
                name="inner_q",
            ),
            keras.layers.BatchNormalization(name="inner_bn"),
        ],
        name="inner",
    )
    shared = keras.layers.Dense(5, name="shared")
    x = keras.Input((4,))
    h = inner(x)
    h = shared(h)
    h = shared(h)  # the same layer twice: its weights once
    out = QDense(
        2,
        kernel_quantizer=NestedQuantizer(init_bits=4),
        bias_quantizer=NestedQuantizer(init_bits=4),
        name="head",
    )(h)
    model = keras.Model(x, out)
    table = pd.DataFrame(memory.layer_table(model))
    assert list(table["path"].unique()) == [
        "inner/inner_q",
        "inner/inner_bn",
        "shared",
        "head",
    ]
    assert not table.duplicated(["path", "parameter"]).any()

    # independent total: every quantized tensor by the reference, every other weight 32 bits
    expected = 0
    for layer in (inner.get_layer("inner_q"), model.get_layer("head")):
        for t in layer.integer_parameters():
            bits = ref_group_bits(t.values, t.scale.shape)
            expected += int(bits.sum()) * (t.values.size // bits.size) + 32 * bits.size
    expected += 32 * (4 * 5 + 5 * 5 + 5)  # inner_bn (4 x 5) + shared kernel and bias
    s = memory.model_summary(model)
    assert s["total_bits"] == expected
    assert s["n_params"] == (4 * 5 + 5) + 4 * 5 + (5 * 5 + 5) + (5 * 2 + 2)
    # the nested model accounted on its own gives the same rows as inside the outer model
    inner_total = memory.model_summary(inner)["total_bits"]
    outer_inner = table[table["path"].str.startswith("inner/")]["total_bits"].sum()
    assert inner_total == outer_inner


def test_unbuilt_model_raises():
    model = keras.Sequential([QDense(3)])
    with pytest.raises(ValueError, match="not built"):
        pd.DataFrame(memory.layer_table(model))


def test_layer_table_columns():
    table = pd.DataFrame(memory.layer_table(hand_model()))
    assert tuple(table.columns) == memory.TABLE_COLUMNS
    for col in (
        "layer",
        "layer_type",
        "parameter",
        "shape",
        "granularity",
        "n_params",
        "n_groups",
        "bits_min",
        "bits_max",
        "bits_mean",
        "int_bits",
        "scale_bits",
        "total_bits",
        "fp32_bits",
        "kib",
        "bits_per_param",
        "unique_values",
        "value_min",
        "value_max",
        "compression",
        "quantized",
    ):
        assert col in table.columns
    assert (
        table["total_bits"]
        == table["int_bits"] + table["scale_bits"] + table["float_bits"]
    ).all()


def test_float_bits_helper():
    acc = memory.float_bits(10)
    assert acc["total_bits"] == acc["fp32_bits"] == acc["float_bits"] == 320
    assert acc["n_groups"] == 0 and not acc["quantized"]


def test_layer_summary_rows_add_up_to_the_model():
    model = keras.Sequential(
        [
            keras.Input((2,)),
            QDense(3, kernel_granularity="column", name="hand"),
            keras.layers.Dense(2, name="fp"),
        ]
    )
    set_quantized(model.layers[0], "kernel", KERNEL_PQ, KERNEL_SCALE)
    set_quantized(model.layers[0], "bias", BIAS_PQ, BIAS_SCALE)
    per_layer = pd.DataFrame(memory.layer_summary(model)).set_index("path")
    assert list(per_layer.index) == ["hand", "fp"]
    assert (
        per_layer.loc["hand", "total_bits"] == 156
        and per_layer.loc["hand", "bytes"] == 19.5
    )
    assert per_layer.loc["fp", "total_bits"] == 32 * (3 * 2 + 2)
    total = memory.model_summary(model)
    assert per_layer["total_bits"].sum() == total["total_bits"] == 156 + 256
    assert total["bytes"] == (156 + 256) / 8 and total["fp32_bytes"] == 4 * (9 + 8)


def test_zero_dim_scale_is_one_group():
    # a protocol layer may store a single scale as a 0-d array (e.g. an LSQ step size)
    acc = memory.tensor_bits(
        IntegerTensor("kernel", KERNEL_PQ, np.float32(0.5), "scalar")
    )
    assert (
        acc["n_groups"] == 1
        and acc["int_bits"] == 4 * 6
        and acc["total_bits"] == 24 + 32
    )
