"""Tests of lqs.memory against hand-worked numbers and independent NumPy references."""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def brute_twos(lo: int, hi: int) -> int:
    """Smallest b >= 1 with -2**(b-1) <= lo and hi <= 2**(b-1) - 1, by trying b = 1, 2, ..."""
    b = 1
    while not (-(2 ** (b - 1)) <= lo and hi <= 2 ** (b - 1) - 1):
        b += 1
    return b


def ref_groups(values: np.ndarray, scale_shape):
    """Each scale group's elements, found with a plain loop over the scale's indices."""
    values = np.asarray(values)
    scale_shape = tuple(scale_shape)
    if scale_shape == (1,):
        return {(0,): values.ravel()}
    groups = {}
    for idx in np.ndindex(scale_shape):
        sl = tuple(
            slice(None) if d == 1 else i for i, d in zip(idx, scale_shape, strict=True)
        )
        groups[idx] = values[sl].ravel()
    return groups


def ref_group_bits_twos(values: np.ndarray, scale_shape) -> np.ndarray:
    out = np.zeros(tuple(scale_shape), np.int64)
    for idx, g in ref_groups(values, scale_shape).items():
        out[idx] = brute_twos(int(g.min()), int(g.max()))
    return out


def ref_tensor_totals(values: np.ndarray, scale_shape) -> dict[str, int]:
    """int and total bits under both definitions, group by group (element count of each group)."""
    out = {"int_sm": 0, "int_twos": 0, "n_groups": 0}
    for g in ref_groups(values, scale_shape).values():
        out["int_sm"] += int(ref_bits(np.abs(g).max())) * g.size
        out["int_twos"] += brute_twos(int(g.min()), int(g.max())) * g.size
        out["n_groups"] += 1
    out["total_sm"] = out["int_sm"] + 32 * out["n_groups"]
    out["total_twos"] = out["int_twos"] + 32 * out["n_groups"]
    return out


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
    # params 9, quantized 9, scales 4, 17.33 bits/param (two's complement the same here),
    # widest 4 bits, 0.02 KiB, 0.04 KiB, 1.85 x (both)
    assert total.split() == [
        "Total",
        "9",
        "9",
        "4",
        "17.33",
        "17.33",
        "4",
        "0.02",
        "0.04",
        "1.85",
        "x",
        "1.85",
        "x",
    ]
    assert "hand (QDense)" in text
    assert "compression 1.85 x" in text
    assert "Two's complement: bits/param 17.33" in text
    assert result["total_bits"] == 156 == result["total_bits_twos"]


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


# ------------------------------------------------------------------------------------------
# two's-complement width, next to the thesis's sign-magnitude width
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, bits",
    [
        (0, 0, 1),
        (-1, 0, 1),
        (-1, -1, 1),
        (0, 1, 2),
        (-2, 1, 2),
        (-3, 0, 3),
        (-4, 3, 3),
        (-5, 3, 4),
        (-4, 4, 4),
        (-8, 7, 4),
        (-128, 127, 8),
        (-129, 0, 9),
        (0, 128, 9),
        (5, 6, 4),
        (-7, -6, 4),
        (-(2**63), 2**63 - 1, 64),
        (0, 2**64 - 1, 65),
        (-(2**100), 2**100 - 1, 101),
        (-(2**100) - 1, 0, 102),
        (0, 2**100, 102),
        (-(2**1000), 2**999, 1001),
    ],
)
def test_twos_complement_width_hand_worked(lo, hi, bits):
    assert memory.twos_complement_width(lo, hi) == bits


def test_twos_complement_width_accepts_numpy_integers():
    assert memory.twos_complement_width(np.int64(-(2**63)), np.int64(2**63 - 1)) == 64
    assert memory.twos_complement_width(np.uint64(0), np.uint64(2**64 - 1)) == 65
    assert memory.twos_complement_width(np.int8(-4), np.int8(3)) == 3


def test_twos_complement_width_rejects_lo_above_hi():
    with pytest.raises(ValueError, match=r"lo <= hi.*lo=3, hi=2"):
        memory.twos_complement_width(3, 2)


def test_twos_complement_width_rejects_non_integers():
    with pytest.raises(TypeError):
        memory.twos_complement_width(-4.0, 3)


def test_twos_complement_width_is_public():
    assert "twos_complement_width" in memory.__all__
    assert (
        memory.DEFINITIONS[0] == "sign_magnitude"
    )  # the thesis's definition is the default


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    a=st.integers(-(2**70), 2**70) | st.integers(-300, 300),
    b=st.integers(-(2**70), 2**70) | st.integers(-300, 300),
)
def test_twos_complement_width_matches_brute_force(a, b):
    lo, hi = min(a, b), max(a, b)
    width = memory.twos_complement_width(lo, hi)
    assert width == brute_twos(lo, hi)
    # never wider than sign-magnitude, at most one bit narrower
    sm = memory.bit_width(max(abs(lo), abs(hi)))
    assert sm - 1 <= width <= sm


# an LSQ-style signed 3-bit grid: -4 ... 3, both ends present
LSQ3 = np.array([[-4, 3, 0, 1], [2, -1, -3, -2]])


def test_lsq_3_bit_grid_is_3_bits_twos_and_4_bits_sign_magnitude():
    assert memory.group_bits(LSQ3, (1,), definition="twos_complement").tolist() == [3]
    assert memory.group_bits(LSQ3, (1,)).tolist() == [4]  # default: sign-magnitude
    assert memory.group_bits(LSQ3, (1,), definition="sign_magnitude").tolist() == [4]
    acc = memory.tensor_bits(IntegerTensor("kernel", LSQ3, np.float32(0.1), "scalar"))
    np.testing.assert_array_equal(acc["bits_twos"], [3])
    np.testing.assert_array_equal(acc["bits"], [4])
    assert acc["bits_mean_twos"] == 3.0 and acc["bits_mean"] == 4.0
    assert acc["int_bits_twos"] == 3 * 8 and acc["int_bits"] == 4 * 8
    assert acc["total_bits_twos"] == 24 + 32 and acc["total_bits"] == 32 + 32


def test_group_bits_twos_per_column_hand_worked():
    # column 0: -4..3 -> 3 bits (sm 4); column 1: -1..0 -> 1 (sm 2); column 2: 0..3 -> 3 (sm 3);
    # column 3: 0 -> 1 (sm 1); column 4: -8..7 -> 4 (sm 5); column 5: 4..4 -> 4 (sm 4)
    values = np.array([[-4, -1, 0, 0, -8, 4], [3, 0, 3, 0, 7, 4], [0, -1, 1, 0, 0, 4]])
    np.testing.assert_array_equal(
        memory.group_bits(values, (1, 6), definition="twos_complement"),
        [[3, 1, 3, 1, 4, 4]],
    )
    np.testing.assert_array_equal(
        memory.group_bits(values, (1, 6)), [[4, 2, 3, 1, 5, 4]]
    )


def test_group_bits_rejects_unknown_definition():
    with pytest.raises(ValueError, match="sign_magnitude.*twos_complement"):
        memory.group_bits(LSQ3, (1,), definition="ones_complement")


def test_group_bits_exact_beyond_int64():
    # int64 extremes: |-(2**63)| does not fit int64, the widths must still be exact
    ext = np.array([-(2**63), 2**63 - 1], dtype=np.int64)
    assert memory.group_bits(ext, (1,)).tolist() == [65]
    assert memory.group_bits(ext, (1,), definition="twos_complement").tolist() == [64]
    big = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert memory.group_bits(big, (1,), definition="twos_complement").tolist() == [65]
    # whole-number floats beyond int64 are not wrapped
    huge = np.array([-(2.0**70), 2.0**70])
    assert memory.group_bits(huge, (1,), definition="twos_complement").tolist() == [72]
    assert memory.group_bits(huge, (1,)).tolist() == [72]
    # Python ints in an object array
    obj = np.array([[-(2**100), 2**100], [0, 6]], dtype=object)
    # columns: [-2**100, 0] -> 101, [2**100, 6] -> 102; rows: [-2**100, 2**100] -> 102, [0, 6] -> 4
    twos_cols = memory.group_bits(obj, (1, 2), definition="twos_complement")
    twos_rows = memory.group_bits(obj, (2, 1), definition="twos_complement")
    assert twos_cols.tolist() == [[101, 102]]
    assert twos_rows.tolist() == [[102], [4]]
    assert memory.group_bits(obj, (2, 1)).tolist() == [[102], [4]]


@pytest.mark.parametrize(
    "shape, scale_shape, granularity",
    [
        ((5, 7), (1,), "scalar"),
        ((5, 7), (5, 1), "row"),
        ((5, 7), (1, 7), "column"),
        ((3, 3, 4, 6), (1,), "scalar"),
        ((3, 3, 4, 6), (1, 1, 4, 1), "channel"),
        ((3, 3, 4, 6), (1, 1, 1, 6), "filter"),
        ((9,), (1,), "scalar"),
        ((9,), (9,), "row"),
    ],
)
def test_tensor_bits_twos_matches_numpy_loop(shape, scale_shape, granularity):
    rng = np.random.default_rng(7)
    # LSQ-like grids of different widths per group, some groups all zero or one-signed
    bits = rng.integers(1, 7, size=scale_shape)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(lo, hi + 1, size=shape)
    values = values * (rng.random(scale_shape) < 0.85)  # some groups all zero
    values = np.where(rng.random(scale_shape) < 0.2, np.abs(values), values)
    t = IntegerTensor(
        "kernel", values, np.full(scale_shape, 0.1, np.float32), granularity
    )
    acc = memory.tensor_bits(t)
    ref = ref_tensor_totals(values, scale_shape)
    np.testing.assert_array_equal(
        acc["bits_twos"], ref_group_bits_twos(values, scale_shape)
    )
    assert acc["bits_twos"].shape == tuple(scale_shape)
    assert acc["n_groups"] == ref["n_groups"]
    assert acc["int_bits_twos"] == ref["int_twos"]
    assert acc["total_bits_twos"] == ref["total_twos"]
    assert acc["int_bits"] == ref["int_sm"] and acc["total_bits"] == ref["total_sm"]
    assert acc["bits_mean_twos"] == pytest.approx(ref["int_twos"] / values.size)
    assert acc["bits_min_twos"] == acc["bits_twos"].min()
    assert acc["bits_max_twos"] == acc["bits_twos"].max()
    np.testing.assert_array_equal(
        memory.group_bits(values, scale_shape, definition="twos_complement"),
        acc["bits_twos"],
    )


def test_float_bits_twos_keys_are_32_bits():
    acc = memory.float_bits(10)
    assert acc["total_bits_twos"] == 320 and acc["int_bits_twos"] == 0
    assert acc["bits_mean_twos"] == acc["bits_min_twos"] == acc["bits_max_twos"] == 32.0


# hand-worked example where the definitions differ: a QDense 2x3 kernel ("column") and bias
#     column 0: [-4,  3] two's complement 3 bits, sign-magnitude 4 bits (x 2 elements)
#     column 1: [-1,  0]                  1                      2
#     column 2: [-8,  7]                  4                      5
#     kernel int bits: twos (3 + 1 + 4) x 2 = 16, sm (4 + 2 + 5) x 2 = 22; + 3 x 32 scales = 96
#     bias [-2, 1, 0] (one scale): twos 2 x 3 = 6, sm 3 x 3 = 9; + 32
#     layer: twos 16 + 96 + 6 + 32 = 150, sm 22 + 96 + 9 + 32 = 159, fp32 9 x 32 = 288
GRID_KERNEL = np.array([[-4, -1, -8], [3, 0, 7]])
GRID_BIAS = np.array([-2, 1, 0])


def grid_model() -> keras.Model:
    layer = QDense(3, kernel_granularity="column", name="grid")
    model = keras.Sequential([keras.Input((2,)), layer])
    set_quantized(layer, "kernel", GRID_KERNEL, KERNEL_SCALE)
    set_quantized(layer, "bias", GRID_BIAS, BIAS_SCALE)
    return model


def test_hand_worked_twos_layer_table_and_summary():
    table = pd.DataFrame(memory.layer_table(grid_model())).set_index("parameter")
    k, b = table.loc["kernel"], table.loc["bias"]
    assert (
        k["int_bits_twos"],
        k["total_bits_twos"],
        k["int_bits"],
        k["total_bits"],
    ) == (
        16,
        112,
        22,
        118,
    )
    assert (
        b["int_bits_twos"],
        b["total_bits_twos"],
        b["int_bits"],
        b["total_bits"],
    ) == (
        6,
        38,
        9,
        41,
    )
    assert (k["bits_min_twos"], k["bits_max_twos"]) == (1, 4)
    assert k["bits_mean_twos"] == pytest.approx(16 / 6)
    assert k["kib_twos"] == pytest.approx(112 / 8 / 1024)
    assert k["bits_per_param_twos"] == pytest.approx(112 / 6)
    assert k["compression_twos"] == pytest.approx(192 / 112)
    assert b["compression_twos"] == pytest.approx(96 / 38)

    s = memory.model_summary(grid_model())
    assert s["total_bits_twos"] == 150 and s["total_bits"] == 159
    assert s["q_total_bits_twos"] == 150 and s["q_total_bits"] == 159
    assert s["bits_per_param_twos"] == pytest.approx(150 / 9)
    assert s["q_bits_per_param_twos"] == pytest.approx(150 / 9)
    assert s["compression_twos"] == pytest.approx(288 / 150)
    assert s["q_compression_twos"] == pytest.approx(288 / 150)
    assert s["compression"] == pytest.approx(288 / 159)
    assert s["max_bits_twos"] == 4 and s["max_bits"] == 5
    assert s["kib_twos"] == pytest.approx(150 / 8 / 1024)
    assert s["bytes_twos"] == 150 / 8


def test_hand_worked_twos_summary_prints_both():
    lines: list[str] = []
    memory.summary(grid_model(), print_fn=lines.append)
    total = next(line for line in lines if line.startswith("Total "))
    # 159 / 9 = 17.67 and 150 / 9 = 16.67 bits/param; 288 / 159 = 1.81 x and 288 / 150 = 1.92 x
    assert total.split() == [
        "Total",
        "9",
        "9",
        "4",
        "17.67",
        "16.67",
        "5",
        "0.02",
        "0.04",
        "1.81",
        "x",
        "1.92",
        "x",
    ]
    text = "\n".join(lines)
    assert "Two's complement: bits/param 16.67" in text
    assert "compression 1.92 x" in text and "widest group 4 bits" in text


def test_model_summary_twos_matches_hand_computation_from_integer_parameters():
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    q1 = QDense(6, kernel_granularity="column", name="q1")
    fp = keras.layers.Dense(5, name="fp")
    q2 = QDense(3, quantize_bias=False, name="q2")
    model = keras.Sequential([keras.Input((4,)), q1, fp, q2])
    # LSQ-like grids: q1's kernel a 3-bit grid per column (both ends in column 0), q2's 4-bit
    k1 = rng.integers(-4, 4, size=(4, 6))
    k1[0, 0], k1[1, 0] = -4, 3
    k1[:, 5] = 0  # an all-zero column
    set_quantized(q1, "kernel", k1, np.full((1, 6), 0.05, np.float32))
    set_quantized(q1, "bias", rng.integers(-2, 2, size=6), np.array([0.01], np.float32))
    set_quantized(
        q2, "kernel", rng.integers(-8, 8, size=(5, 3)), np.array([0.02], np.float32)
    )

    expected_twos = expected_sm = q_twos = 0
    for layer in (q1, q2):
        for t in layer.integer_parameters():
            ref = ref_tensor_totals(t.values, np.shape(t.scale))
            expected_twos += ref["total_twos"]
            expected_sm += ref["total_sm"]
            q_twos += ref["total_twos"]
        for arr in layer.float_parameters().values():
            expected_twos += 32 * np.size(arr)
            expected_sm += 32 * np.size(arr)
    expected_twos += 32 * (6 * 5 + 5)  # the float Dense
    expected_sm += 32 * (6 * 5 + 5)
    n_params = 4 * 6 + 6 + 6 * 5 + 5 + 5 * 3 + 3
    assert expected_twos < expected_sm  # the grids make the definitions differ

    s = memory.model_summary(model)
    assert s["n_params"] == n_params
    assert s["total_bits_twos"] == expected_twos
    assert s["total_bits"] == expected_sm
    assert s["q_total_bits_twos"] == q_twos
    assert s["bits_per_param_twos"] == pytest.approx(expected_twos / n_params)
    assert s["compression_twos"] == pytest.approx(32 * n_params / expected_twos)
    assert s["q_compression_twos"] == pytest.approx(32 * (4 * 6 + 6 + 5 * 3) / q_twos)
    per_layer = pd.DataFrame(memory.layer_summary(model)).set_index("path")
    assert per_layer["total_bits_twos"].sum() == expected_twos
    assert per_layer.loc["fp", "total_bits_twos"] == 32 * (6 * 5 + 5)
    table = pd.DataFrame(memory.layer_table(model))
    assert (
        table["total_bits_twos"]
        == table["int_bits_twos"] + table["scale_bits"] + table["float_bits"]
    ).all()
    assert (table["total_bits_twos"] <= table["total_bits"]).all()
