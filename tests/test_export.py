"""Tests of lqs.export: integer file contents, sizes, and exact round trips of trained models."""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from lqs import export, memory
from lqs.baselines import (
    FixedBitsConv2D,
    FixedBitsDense,
    LSQConv2D,
    LSQDense,
    minmax_integers,
)
from lqs.layers import QConv2D, QDense
from lqs.quantizers import MIN_SCALE, IntegerTensor


def train(model: keras.Model, x: np.ndarray, n_classes: int, steps: int = 6) -> None:
    """A few eager Adam steps on random labels, enough to move the learned scales off their start."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, len(x))
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    batches = np.array_split(np.arange(len(x)), steps)
    for idx in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y[idx], model(x[idx], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def scales_moved(model: keras.Model) -> bool:
    """Every scale variable moved well off its start (a dead ReLU unit's bias scale may stay: P_q = 0)."""
    scales = [v for v in model.weights if v.path.endswith("quantizer/scale")]
    return bool(scales) and all(
        np.max(keras.ops.convert_to_numpy(v)) > 100 * MIN_SCALE for v in scales
    )


def mlp(
    kernel_granularity="column", quantize_bias=True, bias_granularity="scalar"
) -> keras.Model:
    q = dict(
        kernel_granularity=kernel_granularity,
        bias_granularity=bias_granularity,
        quantize_bias=quantize_bias,
        threshold=1e-3,
    )
    return keras.Sequential(
        [
            keras.Input((6, 6)),
            keras.layers.Flatten(),
            QDense(16, activation="relu", **q),
            QDense(4, activation="softmax", **q),
        ],
        name="mlp",
    )


def cnn(kernel_granularity="filter", quantize_bias=True) -> keras.Model:
    q = dict(
        kernel_granularity=kernel_granularity,
        quantize_bias=quantize_bias,
        threshold=1e-3,
    )
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            QConv2D(6, 3, padding="same", activation="relu", **q),
            keras.layers.BatchNormalization(),
            QConv2D(6, 3, padding="same", activation="relu", **q),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.2),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="cnn",
    )


def round_trip(model: keras.Model, x: np.ndarray, tmp_path) -> tuple[dict, keras.Model]:
    report = export.to_integer(model, tmp_path / "model")
    rebuilt = export.from_integer(report["path"])
    np.testing.assert_array_equal(predict(rebuilt, x), predict(model, x))
    for a, b in zip(
        memory.iter_layers(model), memory.iter_layers(rebuilt), strict=True
    ):
        assert a.path == b.path
        if a.quantized:
            for ta, tb in zip(
                a.layer.integer_parameters(), b.layer.integer_parameters(), strict=True
            ):
                np.testing.assert_array_equal(ta.values, tb.values)
                np.testing.assert_array_equal(ta.scale, tb.scale)
    return report, rebuilt


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return {
        "mlp": rng.random((64, 6, 6), dtype=np.float32),
        "cnn": rng.random((32, 8, 8, 3), dtype=np.float32),
    }


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["scalar", "row", "column"])
def test_mlp_round_trip(granularity, data, tmp_path):
    keras.utils.set_random_seed(0)
    model = mlp(
        granularity, bias_granularity="row" if granularity == "row" else "scalar"
    )
    train(model, data["mlp"], 4)
    assert scales_moved(model)
    report, _ = round_trip(model, data["mlp"], tmp_path)
    assert report["n_integer_parameters"] == 4 and report["n_float_parameters"] == 0


@pytest.mark.parametrize("granularity", ["channel", "filter", "scalar"])
def test_cnn_round_trip(granularity, data, tmp_path):
    keras.utils.set_random_seed(0)
    model = cnn(granularity)
    train(model, data["cnn"], 4)
    assert scales_moved(model)
    report, rebuilt = round_trip(model, data["cnn"], tmp_path)
    # BatchNormalization moving statistics are restored as float32
    for a, b in zip(model.weights, rebuilt.weights, strict=True):
        if "moving" in a.name:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            )
    assert report["n_integer_parameters"] == 4


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_round_trip_without_bias_quantization(kind, data, tmp_path):
    keras.utils.set_random_seed(0)
    model = mlp(quantize_bias=False) if kind == "mlp" else cnn(quantize_bias=False)
    train(model, data[kind], 4)
    report, rebuilt = round_trip(model, data[kind], tmp_path)
    assert report["n_integer_parameters"] == 2  # two kernels; the biases are floats
    for layer_a, layer_b in zip(model.layers, rebuilt.layers, strict=True):
        if isinstance(layer_a, (QDense, QConv2D)):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(layer_a.bias),
                keras.ops.convert_to_numpy(layer_b.bias),
            )


def test_untrained_model_needs_wide_integers(data, tmp_path):
    # at the initial scale 100 * eps, |P_q| reaches ~ 0.5 / 1.2e-5 = 4e4: int16/int32, and the round trip holds
    keras.utils.set_random_seed(0)
    model = mlp("scalar")
    report, _ = round_trip(model, data["mlp"], tmp_path)
    manifest = export.read_manifest(report["path"])
    kernels = [
        p
        for layer in manifest["layers"]
        for p in layer["parameters"]
        if p["name"] == "kernel"
    ]
    assert {p["dtype"] for p in kernels} <= {"int16", "int32"}


def test_nested_model_round_trip(data, tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input((36,)),
            QDense(
                8,
                activation="relu",
                kernel_granularity="column",
                threshold=1e-3,
                name="q",
            ),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="inner",
    )
    x = keras.Input((6, 6))
    h = inner(keras.layers.Flatten()(x))
    out = QDense(4, activation="softmax", threshold=1e-3, name="head")(h)
    model = keras.Model(x, out, name="outer")
    train(model, data["mlp"], 4)
    report, _ = round_trip(model, data["mlp"], tmp_path)
    paths = [layer["path"] for layer in export.read_manifest(report["path"])["layers"]]
    assert paths == ["inner/q", "inner/bn", "head"]


# ------------------------------------------------------------------------------------------
# file contents and report
# ------------------------------------------------------------------------------------------


def test_file_contents_and_report(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = cnn("filter")
    train(model, data["cnn"], 4)
    report = export.to_integer(model, tmp_path / "sub" / "cnn")
    path = tmp_path / "sub" / "cnn.npz"
    assert report["path"] == str(path)
    assert report["file_bytes"] == os.path.getsize(path)
    assert sorted(os.listdir(path.parent)) == ["cnn.npz"]  # no temp file left behind
    totals = memory.model_summary(model)
    assert report["accounted_bytes"] == totals["total_bits"] / 8
    assert report["fp32_bytes"] == totals["fp32_bits"] / 8 == 4 * totals["n_params"]
    assert report["bit_packing"] is False and report["compressed"] is False
    assert report["container"] == "np.savez"
    assert "no bit-packing" in report["storage"]

    table = pd.DataFrame(
        memory.layer_table(model)
    )  # rows (list of dicts) or a DataFrame
    manifest = export.read_manifest(path)
    assert (
        manifest["format"] == "lqs-integer"
        and manifest["storage"]["bit_packing"] is False
    )
    assert manifest["model"]["class_name"] == "Sequential"
    assert "compile_config" not in manifest["model"]
    payload = 0
    with np.load(path) as npz:
        assert json.loads(npz["manifest.json"]) == manifest
        for layer in manifest["layers"]:
            keras_layer = model.get_layer(layer["name"])
            for p in layer["parameters"]:
                arr = npz[p["key"]]
                payload += arr.nbytes
                assert arr.dtype.name == p["dtype"] and list(arr.shape) == p["shape"]
                row = table[
                    (table["path"] == layer["path"]) & (table["parameter"] == p["name"])
                ].iloc[0]
                assert p["accounted_bits"] == row["total_bits"]
                if p["kind"] == "integer":
                    t = {t.name: t for t in keras_layer.integer_parameters()}[p["name"]]
                    np.testing.assert_array_equal(arr, t.values)
                    scale = npz[p["scale_key"]]
                    payload += scale.nbytes
                    assert (
                        scale.dtype == np.float32
                        and list(scale.shape) == p["scale_shape"]
                    )
                    np.testing.assert_array_equal(scale, t.scale)
                    # the smallest whole signed dtype: it holds [lo, hi], the next smaller one does not
                    lo, hi = int(t.values.min()), int(t.values.max())
                    widths = ["int8", "int16", "int32", "int64"]
                    info = np.iinfo(p["dtype"])
                    assert info.min <= lo and hi <= info.max
                    if p["dtype"] != "int8":
                        smaller = np.iinfo(widths[widths.index(p["dtype"]) - 1])
                        assert lo < smaller.min or hi > smaller.max
                    assert p["granularity"] == (
                        "filter" if p["name"] == "kernel" else "scalar"
                    )
                else:
                    assert arr.dtype == np.float32
    assert payload == report["payload_bytes"]
    # without bit-packing and with headers, the file is never smaller than the payload
    assert report["file_bytes"] > report["payload_bytes"]


def test_compressed_export_is_smaller_and_loads(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = mlp("column")
    train(model, data["mlp"], 4)
    plain = export.to_integer(model, tmp_path / "plain.npz")
    packed = export.to_integer(model, tmp_path / "packed.npz", compress=True)
    assert packed["compressed"] and packed["container"] == "np.savez_compressed"
    assert packed["file_bytes"] < plain["file_bytes"]
    with zipfile.ZipFile(packed["path"]) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    rebuilt = export.from_integer(packed["path"])
    np.testing.assert_array_equal(
        predict(rebuilt, data["mlp"]), predict(model, data["mlp"])
    )


def test_overwrite_is_atomic_replace(data, tmp_path):
    model = mlp()
    first = export.to_integer(model, tmp_path / "m")
    train(model, data["mlp"], 4)
    second = export.to_integer(model, tmp_path / "m")
    assert first["path"] == second["path"]
    assert os.listdir(tmp_path) == ["m.npz"]
    rebuilt = export.from_integer(tmp_path / "m")
    np.testing.assert_array_equal(
        predict(rebuilt, data["mlp"]), predict(model, data["mlp"])
    )


def test_missing_export_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="to_integer"):
        export.from_integer(tmp_path / "nothing")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.97])
def test_truncated_export_names_the_file_and_the_fix(data, tmp_path, keep):
    """A cut-off copy (disk full, interrupted transfer) gives a ValueError naming the file, never a bare BadZipFile."""
    path = export.to_integer(mlp(), tmp_path / "m")["path"]
    raw = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(raw[: int(len(raw) * keep)])
    for read in (export.from_integer, export.read_manifest):
        with pytest.raises(ValueError, match="truncated or corrupted") as err:
            read(path)
        assert str(path) in str(err.value) and "to_integer(model, path)" in str(
            err.value
        )


def test_export_without_manifest_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"plain.npz.*has no manifest.json"):
        export.from_integer(path)


def test_export_bytes_are_deterministic(data, tmp_path):
    """The same model exports to the same arrays and manifest (to_integer is split into helpers: no change)."""
    model = mlp()
    a = export.to_integer(model, tmp_path / "a")
    b = export.to_integer(model, tmp_path / "b")
    assert a["file_bytes"] == b["file_bytes"] and a["dtypes"] == b["dtypes"]
    with zipfile.ZipFile(a["path"]) as za, zipfile.ZipFile(b["path"]) as zb:
        assert za.namelist() == zb.namelist()
        assert all(za.read(n) == zb.read(n) for n in za.namelist())
    manifest = export.read_manifest(a["path"])
    keys = [
        k
        for layer in manifest["layers"]
        for p in layer["parameters"]
        for k in (p["key"], p.get("scale_key"))
        if k
    ]
    with zipfile.ZipFile(a["path"]) as za:
        assert keys == [
            k[:-4] for k in za.namelist() if k.endswith(".npy")
        ]  # manifest order = file order
    assert a["n_integer_parameters"] == 4 and a["n_float_parameters"] == 0


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, dtype",
    [
        (0, 0, "int8"),
        (-128, 127, "int8"),
        (-129, 0, "int16"),
        (0, 128, "int16"),
        (-(2**15), 2**15 - 1, "int16"),
        (0, 2**15, "int32"),
        (-(2**31), 0, "int32"),
        (0, 2**31, "int64"),
    ],
)
def test_smallest_int_dtype(lo, hi, dtype):
    assert export.smallest_int_dtype(np.array([lo, hi], np.int64)).name == dtype


def test_bin_centre_floors_exactly_where_the_product_does_not():
    # why the latent value is the bin centre: floor((v*s)/s) in float32 loses one for some v
    rng = np.random.default_rng(0)
    values = rng.integers(-(2**15), 2**15, size=200_000)
    scale = np.float32(0.0123)
    product = (values.astype(np.float32) * scale).astype(np.float32)
    assert (np.floor(product / scale).astype(np.int64) != values).any()
    centre = export.bin_centre(values, np.array([scale]))
    assert centre.dtype == np.float32
    np.testing.assert_array_equal(np.floor(centre / scale).astype(np.int64), values)


def test_round_trip_under_compiled_predict(data, tmp_path):
    # Keras's predict compiles (jit_compile="auto": XLA on TF); the bin centres floor the same way there
    keras.utils.set_random_seed(0)
    model = mlp("column")
    train(model, data["mlp"], 4)
    report = export.to_integer(model, tmp_path / "m")
    rebuilt = export.from_integer(report["path"])
    np.testing.assert_array_equal(
        rebuilt.predict(data["mlp"], verbose=0, batch_size=64),
        model.predict(data["mlp"], verbose=0, batch_size=64),
    )


# ------------------------------------------------------------------------------------------
# other protocol layers: the set_integer_parameters hook
# ------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="lqs_test")
class RoundDense(keras.layers.Layer):
    """A minimal protocol layer with a round-to-nearest quantizer and a step variable ``kernel_step``."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.units)
        )
        self.kernel_step = self.add_weight(
            name="kernel_step", shape=(1, self.units), initializer="ones"
        )
        self.kernel_step.assign(np.full((1, self.units), 0.05, np.float32))

    def call(self, x):
        return keras.ops.matmul(
            x, keras.ops.round(self.kernel / self.kernel_step) * self.kernel_step
        )

    def integer_parameters(self):
        from lqs.quantizers import IntegerTensor

        step = keras.ops.convert_to_numpy(self.kernel_step)
        values = np.round(keras.ops.convert_to_numpy(self.kernel) / step).astype(
            np.int64
        )
        return [IntegerTensor("kernel", values, step, "column")]

    def float_parameters(self):
        return {}

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="lqs_test")
class LoadableRoundDense(RoundDense):
    """RoundDense with the optional loader hook of lqs.export (round quantizer: latent = values * step)."""

    def set_integer_parameters(self, tensors):
        (t,) = tensors
        self.kernel_step.assign(t.scale)
        self.kernel.assign((t.values * t.scale.astype(np.float64)).astype(np.float32))


def test_protocol_layer_with_set_integer_parameters_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), LoadableRoundDense(3, name="rd")])
    x = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    report = export.to_integer(model, tmp_path / "rd")
    table = pd.DataFrame(
        memory.layer_table(model)
    )  # rows (list of dicts) or a DataFrame
    assert table["quantized"].all() and table["n_groups"].tolist() == [3]
    rebuilt = export.from_integer(report["path"])
    assert isinstance(rebuilt.layers[0], LoadableRoundDense)
    np.testing.assert_array_equal(predict(rebuilt, x), predict(model, x))


def test_protocol_layer_without_a_loader_is_exported_but_not_loadable(tmp_path):
    model = keras.Sequential([keras.Input((5,)), RoundDense(3, name="rd")])
    report = export.to_integer(model, tmp_path / "rd")
    assert report["n_integer_parameters"] == 1
    with pytest.raises(ValueError, match="set_integer_parameters"):
        export.from_integer(report["path"])


# ------------------------------------------------------------------------------------------
# baselines: LSQ and fixed-bit layers load through their set_integer_parameters hook
# ------------------------------------------------------------------------------------------


def baseline_mlp(
    family: str, bits: int, granularity: str, quantize_bias: bool
) -> keras.Model:
    cls = {"lsq": LSQDense, "fixed_bits": FixedBitsDense}[family]
    q = dict(bits=bits, granularity=granularity, quantize_bias=quantize_bias)
    return keras.Sequential(
        [
            keras.Input((6, 6)),
            keras.layers.Flatten(),
            cls(16, activation="relu", **q),
            cls(4, activation="softmax", **q),
        ],
        name=f"{family}_mlp",
    )


def baseline_cnn(
    family: str, bits: int, granularity: str, quantize_bias: bool
) -> keras.Model:
    conv, dense = {
        "lsq": (LSQConv2D, LSQDense),
        "fixed_bits": (FixedBitsConv2D, FixedBitsDense),
    }[family]
    q = dict(bits=bits, granularity=granularity, quantize_bias=quantize_bias)
    dense_q = dict(q, granularity="column" if granularity == "filter" else "scalar")
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            conv(6, 3, padding="same", activation="relu", **q),
            keras.layers.BatchNormalization(),
            conv(6, 3, padding="same", activation="relu", **q),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            dense(4, activation="softmax", **dense_q),
        ],
        name=f"{family}_cnn",
    )


@pytest.mark.parametrize("family", ["lsq", "fixed_bits"])
@pytest.mark.parametrize(
    "kind, bits, granularity, quantize_bias",
    [
        ("mlp", 4, "scalar", False),
        ("mlp", 8, "column", True),
        ("mlp", 2, "row", True),
        ("cnn", 4, "filter", True),
        ("cnn", 8, "scalar", False),
        ("cnn", 16, "channel", True),
    ],
)
def test_baseline_round_trip(
    family, kind, bits, granularity, quantize_bias, data, tmp_path
):
    # exact: the rebuilt model has the same integers and scales, and its eager predictions are
    # bit-identical to the original's (round_trip asserts both)
    keras.utils.set_random_seed(0)
    build = baseline_mlp if kind == "mlp" else baseline_cnn
    model = build(family, bits, granularity, quantize_bias)
    train(model, data[kind], 4)
    report, rebuilt = round_trip(model, data[kind], tmp_path)
    n_quantized = 2 if kind == "mlp" else 3
    assert report["n_integer_parameters"] == n_quantized * (2 if quantize_bias else 1)
    for layer_a, layer_b in zip(model.layers, rebuilt.layers, strict=True):
        assert type(layer_a) is type(layer_b)
        if family == "lsq" and isinstance(layer_a, (LSQDense, LSQConv2D)):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(layer_a.kernel_step),
                keras.ops.convert_to_numpy(layer_b.kernel_step),
            )
        if not quantize_bias and hasattr(
            layer_a, "quantize_bias"
        ):  # float bias restored as is
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(layer_a.bias),
                keras.ops.convert_to_numpy(layer_b.bias),
            )
    # Keras's compiled predict (XLA): close, not always bit-identical. Under XLA the fixed-bit forward
    # pass, which recomputes its scales from the weights, rounds some reconstructed weights by ~1e-7
    # relative to values * scale, differently for the original and the rebuilt latent weights; the
    # original's compiled predictions differ from its own eager ones by as much.
    x = data[kind]
    np.testing.assert_allclose(
        rebuilt.predict(x, verbose=0, batch_size=len(x)),
        model.predict(x, verbose=0, batch_size=len(x)),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("bits", [3, 8, 16])
def test_fixed_bits_loader_keeps_the_recomputed_scale(bits):
    # the fixed-bit scale is recomputed from the weights: s' = fl(max|W| / Q). Many groups, weights
    # spread over decades: every group's integers and scale come back exactly from set_integer_parameters
    rng = np.random.default_rng(bits)
    n_in, n_out = 8, 4096
    w = (
        rng.standard_normal((n_in, n_out)) * 10.0 ** rng.uniform(-6, 2, (1, n_out))
    ).astype(np.float32)
    w[:, :3] = 0.0  # all-zero groups keep scale 1 and integers 0
    layer = FixedBitsDense(n_out, bits=bits, granularity="column", quantize_bias=True)
    layer.build((None, n_in))
    layer.kernel.assign(w)
    layer.bias.assign(rng.standard_normal(n_out).astype(np.float32))
    stored = layer.integer_parameters()

    twin = FixedBitsDense(n_out, bits=bits, granularity="column", quantize_bias=True)
    twin.build((None, n_in))
    twin.set_integer_parameters(stored)
    for a, b in zip(stored, twin.integer_parameters(), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(b.values, a.values)
        np.testing.assert_array_equal(b.scale, a.scale)
    # the forward pass uses exactly values * scale
    t = stored[0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(twin.quantized_kernel()),
        (t.values * t.scale).astype(np.float32),
    )


def test_fixed_bits_loader_rejects_mismatched_tensors():
    layer = FixedBitsDense(3, bits=4, quantize_bias=False)
    layer.build((None, 5))
    t = minmax_integers(np.ones((5, 3), np.float32), 4, "scalar", "kernel")
    bias = minmax_integers(np.ones(3, np.float32), 4, "scalar", "bias")
    with pytest.raises(ValueError, match="quantizes"):
        layer.set_integer_parameters([t, bias])
    wrong = minmax_integers(np.ones((4, 3), np.float32), 4, "scalar", "kernel")
    with pytest.raises(ValueError, match="shape"):
        layer.set_integer_parameters([wrong])


def test_fixed_bits_loader_gives_back_every_scale_a_maximum_can_give():
    # for an arbitrary float32 scale s, fl(fl(Q s) / Q) is not always s (no float32 maximum gives
    # such an s); every s that some maximum m near Q s gives (fl(m / Q) == s) comes back exactly
    bits, n_in, n_out = 8, 4, 4000
    q = 2 ** (bits - 1) - 1
    rng = np.random.default_rng(0)
    scale = (
        rng.uniform(1, 2, (1, n_out)) * 2.0 ** rng.integers(-20, 0, (1, n_out))
    ).astype(np.float32)
    values = rng.integers(-q, q + 1, (n_in, n_out))
    values[0] = q  # every group reaches the grid's end, as a min-max export does
    qf = np.float32(q)
    product = (qf * scale.astype(np.float64)).astype(np.float32)
    reachable = np.zeros(scale.shape, bool)
    for direction in (np.float32(np.inf), np.float32(0)):
        m = product
        for _ in range(8):
            reachable |= (m / qf).astype(np.float32) == scale
            m = np.nextafter(m, direction)
    assert 0 < reachable.sum() < n_out

    layer = FixedBitsDense(n_out, bits=bits, granularity="column")
    layer.build((None, n_in))
    layer.set_integer_parameters([IntegerTensor("kernel", values, scale, "column")])
    (got,) = layer.integer_parameters()
    same = (got.scale == scale)[0]
    np.testing.assert_array_equal(same, reachable[0])
    np.testing.assert_array_equal(got.values[:, same], values[:, same])
