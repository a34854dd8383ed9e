"""companion.chapters.figures: every number a schematic figure draws ties to the library (or TensorFlow); figures are legible."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.text import Text

from companion import paths
from companion.chapters import figures as F
from lqs.quantizers import (
    EPS,
    GRANULARITIES,
    GRANULARITY_AXES,
    integer_values,
    nested_quantize,
    scale_for_bits,
    scale_shape,
)

CONV_KERNEL = (3, 3, 3, 4)


@pytest.fixture(scope="module")
def mlp():
    return F.build_mlp((4, 6, 5, 3), seed=0, epochs=3, n_samples=64)


@pytest.fixture(scope="module")
def trained():
    x, y, label = F.load_images("synthetic", 96, seed=1)
    model, history = F.train_qdense_mlp(
        x,
        y,
        hidden=8,
        epochs=1,
        batch_size=32,
        granularity="column",
        seed=1,
        run_eagerly=True,
    )
    return x, y, label, model, history


def _check_legible(fig: plt.Figure, n_axes: int) -> None:
    """Expected panel count, width <= 10 in, every visible non-empty text >= 8 pt."""
    assert len(fig.axes) == n_axes
    assert fig.get_figwidth() <= 10.0 + 1e-9
    small = [
        (t.get_text(), t.get_fontsize())
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 8
    ]
    assert not small, f"texts below 8 pt: {small[:5]}"
    plt.close(fig)


# ---- Fig. 2.1 ------------------------------------------------------------------------------


def test_mlp_edges_are_the_model_kernels(mlp):
    edges = F.mlp_edges(mlp)
    kernels = [layer.kernel.numpy() for layer in mlp.layers]
    assert [k.shape for k in kernels] == [(4, 6), (6, 5), (5, 3)]
    assert len(edges) == sum(k.size for k in kernels)
    for row in edges.sample(20, random_state=0).itertuples():
        assert row.weight == pytest.approx(
            float(kernels[row.layer][row.source, row.target]), abs=0
        )
    _check_legible(F.draw_mlp(mlp), 2)  # network + colourbar


def test_gaussian_blobs_are_seeded_blobs_around_their_centres():
    x, y = F.gaussian_blobs(4, 3, 600, seed=2)
    assert x.shape == (600, 4) and x.dtype == np.float32 and set(y) == {0, 1, 2}
    np.testing.assert_array_equal(x, F.gaussian_blobs(4, 3, 600, seed=2)[0])
    # the same draws by hand: centres, labels, then unit-variance points around the
    # centres
    rng = np.random.default_rng(2)
    centres = rng.normal(0.0, F.BLOB_SPREAD, size=(3, 4))
    np.testing.assert_array_equal(y, rng.integers(0, 3, size=600))
    spread = x - centres[y]
    assert abs(spread.std() - 1.0) < 0.1 and abs(spread.mean()) < 0.1


def test_full_batch_adam_takes_the_steps_and_lowers_the_loss():
    x, y = F.gaussian_blobs(4, 3, 128, seed=0)
    model = F.build_mlp((4, 6, 5, 3), seed=0)
    before = [w.numpy().copy() for w in model.trainable_variables]
    losses = F.full_batch_adam(model, x, y, steps=25, lr=0.05)
    assert len(losses) == 25
    assert losses[-1] < losses[0]
    # one full-batch step with an independent Adam reproduces the first update
    ref = F.build_mlp((4, 6, 5, 3), seed=0)
    opt = tf.keras.optimizers.Adam(0.05)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.SparseCategoricalCrossentropy()(y, ref(x, training=True))
    opt.apply_gradients(
        zip(
            tape.gradient(loss, ref.trainable_variables),
            ref.trainable_variables,
            strict=True,
        )
    )
    assert float(loss) == pytest.approx(losses[0], rel=1e-6)
    one = F.build_mlp((4, 6, 5, 3), seed=0)
    F.full_batch_adam(one, x, y, steps=1, lr=0.05)
    for a, b, w0 in zip(
        one.trainable_variables, ref.trainable_variables, before, strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
        assert not np.array_equal(a.numpy(), w0)


def test_mlp_is_seeded_and_training_moves_the_weights():
    a = F.build_mlp((3, 4, 2), seed=5).layers[0].kernel.numpy()
    b = F.build_mlp((3, 4, 2), seed=5).layers[0].kernel.numpy()
    c = F.build_mlp((3, 4, 2), seed=5, epochs=1, n_samples=16).layers[0].kernel.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="units"):
        F.build_mlp((4,))


# ---- Figs. 2.2 and 2.3 ---------------------------------------------------------------------


@pytest.mark.parametrize("position", [(0, 0), (0, 1), (2, 3), (4, 4)])
def test_conv_value_equals_tf_conv2d_same_padding(position):
    x = F.integer_input(5, 1, seed=3)
    ex = F.conv_example(x, F.SOBEL_X, position, padding=1)
    ref = tf.nn.conv2d(
        x[None], np.asarray(F.SOBEL_X, np.float32)[:, :, None, None], 1, "SAME"
    ).numpy()[0, :, :, 0]
    assert ex.value == ref[position]
    assert ex.tf_value == ref[position]
    # the worked-out products are the window times the kernel
    assert ex.window.shape == (3, 3, 1)
    assert np.sum(ex.window[..., 0] * np.asarray(F.SOBEL_X)) == ex.value


def test_rgb_conv_value_is_the_sum_of_channel_sums_and_equals_tf():
    rng = np.random.default_rng(0)
    x = F.integer_input(5, 3, seed=4)
    kernel = rng.integers(-2, 3, size=(3, 3, 3)).astype(np.float32)
    ex = F.conv_example(x, kernel, (1, 0))
    ref = tf.nn.conv2d(x[None], kernel[..., None], 1, "SAME").numpy()[0, 1, 0, 0]
    assert ex.value == ref == pytest.approx(float(np.sum(ex.channel_sums)), abs=0)
    _check_legible(F.draw_conv3d(ex), 7)  # 3 input planes, 3 kernel planes, output


@pytest.mark.parametrize("channels,seed", [(1, 0), (3, 5)])
def test_conv_map_equals_tf_conv2d_exactly_for_integer_inputs(channels, seed):
    rng = np.random.default_rng(seed)
    x = F.integer_input(6, channels, seed=seed)
    kernel = rng.integers(-3, 4, size=(3, 3, channels)).astype(np.float32)
    ex = F.conv_example(x, kernel, (2, 2), padding=1)
    np.testing.assert_array_equal(ex.output.astype(np.float32), ex.tf_output)
    assert ex.value == ex.output[2, 2] == float(np.sum(ex.channel_sums))


def test_conv_float_inputs_and_errors():
    rng = np.random.default_rng(1)
    ex = F.conv_example(
        rng.normal(size=(4, 4)), rng.normal(size=(3, 3)), (3, 3), padding=1
    )
    assert ex.value == pytest.approx(ex.tf_value, rel=1e-5)
    with pytest.raises(ValueError, match="outside"):
        F.conv_example(np.ones((4, 4)), np.ones((3, 3)), (4, 0))
    with pytest.raises(ValueError, match="channels"):
        F.conv_example(np.ones((4, 4, 3)), np.ones((3, 3)), (0, 0))
    _check_legible(
        F.draw_conv2d(F.conv_example(np.ones((4, 4)), np.ones((3, 3)), (0, 0))), 3
    )


# ---- Fig. 2.4 ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,granularity", [(4, "scalar"), (3, "column"), (8, "row")])
def test_weight_quantization_integers_are_the_library_integers(mlp, bits, granularity):
    w = mlp.layers[0].kernel.numpy()
    q = F.quantize_weights(w, bits, granularity)
    scale = scale_for_bits(w, granularity, bits)
    np.testing.assert_array_equal(q.scale, scale)
    np.testing.assert_array_equal(q.integers, integer_values(w, scale))
    np.testing.assert_array_equal(
        q.reconstructed,
        nested_quantize(tf.constant(w), tf.constant(scale), 0.0).numpy(),
    )
    # the forward pass is exactly the integers times the scale (float32)
    np.testing.assert_array_equal(
        q.reconstructed, (q.integers.astype(np.float32) * scale).astype(np.float32)
    )
    assert np.all(q.error >= 0) and np.all(q.error < np.broadcast_to(scale, w.shape))
    assert np.abs(q.integers).max() <= 2 ** (bits - 1)
    frame = q.to_frame()
    assert len(frame) == w.size and set(frame.integer) == set(q.integers.ravel())
    _check_legible(F.draw_weight_quantization(q), 4)


# ---- Fig. 2.5 ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 8])
def test_minmax_quantization_equals_tf_fake_quant(bits):
    x = np.random.default_rng(bits).normal(size=(3, 5)).astype(np.float32) + 0.3
    q, s, z, lo, hi = F.affine_minmax_quantize(x, bits)
    assert q.min() >= 0 and q.max() <= 2**bits - 1
    ref = tf.quantization.fake_quant_with_min_max_vars(
        x, min=lo, max=hi, num_bits=bits
    ).numpy()
    np.testing.assert_allclose(s * (q - z), ref, atol=1e-6)
    assert np.max(np.abs(s * (q - z) - x)) <= s / 2 + 1e-6
    with pytest.raises(ValueError, match="bits"):
        F.affine_minmax_quantize(x, 1)


def test_minmax_matmul_integer_product_rescales_to_the_dequantized_product(mlp):
    wq = F.quantize_weights(mlp.layers[0].kernel.numpy(), 4)
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    mm = F.minmax_matmul(x, wq, 8)
    assert mm.accumulator.dtype == np.int64
    np.testing.assert_array_equal(
        mm.accumulator, (mm.x_q - mm.zero_point) @ integer_values(wq.weights, wq.scale)
    )
    np.testing.assert_allclose(
        mm.y_deq, mm.x_deq.astype(np.float64) @ wq.reconstructed, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(mm.y_float, x.astype(np.float64) @ wq.weights, rtol=1e-6)
    assert len(mm.to_frame()) == mm.y_float.size
    _check_legible(F.draw_minmax_matmul(mm), 7)
    with pytest.raises(ValueError, match="scalar"):
        F.minmax_matmul(x, F.quantize_weights(wq.weights, 4, "column"))


# ---- Figs. 2.6 and 3.2 ---------------------------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_group_ids_match_scale_shape(granularity):
    ids = F.group_ids(CONV_KERNEL, granularity)
    sshape = scale_shape(granularity, CONV_KERNEL)
    assert F.quantizer_scale_shape(granularity, CONV_KERNEL) == sshape
    assert ids.shape == CONV_KERNEL
    assert np.unique(ids).size == int(np.prod(sshape))
    axis = GRANULARITY_AXES[granularity]
    if axis is None:
        assert np.all(ids == 0)
    else:  # ids follow the granularity's axis and nothing else
        expected = np.arange(CONV_KERNEL[axis]).reshape(
            [-1 if i == axis else 1 for i in range(4)]
        )
        np.testing.assert_array_equal(ids, np.broadcast_to(expected, CONV_KERNEL))
    # scaling each group by its own scale is what broadcasting a scale of that shape does
    scales = np.arange(1, int(np.prod(sshape)) + 1, dtype=np.float32).reshape(sshape)
    np.testing.assert_array_equal(
        np.broadcast_to(scales, CONV_KERNEL), scales.ravel()[ids]
    )


def test_granularity_figures():
    table = F.granularity_table(CONV_KERNEL)
    assert list(table.granularity) == list(GRANULARITIES)
    assert list(table.n_scales) == [1, 3, 3, 3, 4]
    assert list(F.granularity_table((6, 4)).granularity) == ["scalar", "row", "column"]
    _check_legible(F.draw_conv_granularities(CONV_KERNEL), 6)
    _check_legible(F.draw_dense_granularities(6, 4), 3)


def test_dense_granularity_figure_draws_the_scales_qdense_builds():
    from lqs.layers import QDense

    for g in ("scalar", "row", "column"):
        layer = QDense(4, kernel_granularity=g)
        layer.build((None, 6))
        built = tuple(int(d) for d in layer.kernel_quantizer.scale.shape)
        assert built == scale_shape(g, (6, 4)) == F.quantizer_scale_shape(g, (6, 4))
    fig = F.draw_dense_granularities(6, 4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("scalar") and "1 scale" in titles[0]
    assert "6 scales" in titles[1] and "4 scales" in titles[2]
    plt.close(fig)


def test_nested_conv_description_comes_from_real_layers():
    desc = F.describe_nested_conv(
        5, 3, (6, 6, 2), kernel_granularity="channel", threshold=1e-8
    )
    # the quantized layer has the plain layer's kernel and output shapes
    assert desc["plain_weights"][0] == desc["kernel_shape"]
    assert desc["plain_output_shape"] == desc["output_shape"]
    assert desc["kernel_shape"] == (3, 3, 2, 5)
    assert (
        desc["kernel_scale_shape"]
        == scale_shape("channel", (3, 3, 2, 5))
        == (1, 1, 2, 1)
    )
    assert desc["bias_scale_shape"] == (1,)
    assert desc["output_shape"] == (None, 6, 6, 5)
    assert desc["threshold"] == 1e-8
    fig = F.draw_nested_conv(desc)
    texts = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "(1, 1, 2, 1)" in texts and "'channel'" in texts and "(3, 3, 2, 5)" in texts
    _check_legible(fig, 2)


# ---- the vote, the ratios, the worked example ---------------------------------------------


@pytest.mark.parametrize("all_above_vote", [True, False])
def test_numpy_votes_reproduce_nested_quantize_scale_gradient(all_above_vote):
    rng = np.random.default_rng(7)
    p = rng.normal(size=(5, 4)).astype(np.float32)
    g = (rng.normal(size=(5, 4)) * np.array([1e-3, 1e-3, 10.0, 1e-3])).astype(
        np.float32
    )  # column 2 all above
    s = np.full((1, 4), 0.05, np.float32)
    lam = 0.05
    pv, sv = tf.Variable(p), tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            g * nested_quantize(pv, sv, lam, all_above_vote=all_above_vote)
        )
    d_s = tape.gradient(loss, sv).numpy()
    p_q = np.floor(p / s)
    p_rec = p_q * s
    r = np.abs(g) / np.where(p_rec == 0, EPS, np.abs(p_rec))
    v = F.votes(r, lam, F.group_ids(p.shape, "column"), all_above_vote=all_above_vote)
    assert np.all(
        v[:, 2] == (np.float32(-np.tanh(np.float32(lam))) if all_above_vote else 0)
    )
    np.testing.assert_allclose(F.scale_gradient_numpy(p_q, v, s.shape), d_s, rtol=1e-6)


def test_vote_function_shape():
    r = np.array([0.0, 0.5, 0.99, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(
        F.votes(r, 1.0), [-np.tanh(1.0), -np.tanh(0.5), -np.tanh(0.01), 0, 0], rtol=1e-5
    )
    _check_legible(F.draw_vote_function([1e-9, 1e-8], [0.5, 2.0]), 2)


def test_layer_ratios_tie_to_the_scale_gradient(trained):
    x, y, label, model, history = trained
    assert label.startswith("synthetic")
    assert set(history) >= {"loss", "accuracy"}
    ratios = F.layer_ratios(
        model, x[:64], y[:64], 0
    )  # asserts NumPy dL/ds == TF dL/ds inside
    kernel = model.layers[1].kernel.numpy()
    assert ratios.ratio.shape == kernel.shape
    # G is the kernel gradient (straight through)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.SparseCategoricalCrossentropy()(y[:64], model(x[:64]))
    np.testing.assert_allclose(
        ratios.upstream, tape.gradient(loss, model.layers[1].kernel).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        ratios.d_scale_numpy, ratios.d_scale_tf, rtol=1e-4, atol=1e-12
    )
    stats = F.vote_stats(ratios.ratio, ratios.group, [1e-9, 1e-2, 1e9])
    assert list(stats.n_groups.unique()) == [kernel.shape[1]]
    assert np.all(stats.zero_vote_fraction_impl <= stats.zero_vote_fraction + 1e-12)
    assert np.all(
        np.diff(stats.zero_vote_fraction) <= 0
    )  # a higher threshold silences fewer elements
    assert stats.zero_vote_fraction.iloc[-1] == 0.0
    _check_legible(F.draw_ratio_histogram(ratios, [1e-9, 1e-2]), 2)
    with pytest.raises(ValueError, match="layer_index"):
        F.layer_ratios(model, x[:8], y[:8], 5)


def test_load_images_never_substitutes_synthetic_data(monkeypatch):
    from companion import data

    def missing(*args, **kwargs):
        raise FileNotFoundError("fashion_mnist missing")

    monkeypatch.setattr(data, "load_with_info", missing)
    with pytest.raises(FileNotFoundError):
        F.load_images("fashion_mnist", 10)


@pytest.mark.parametrize(
    "threshold,expect_all_above",
    [(0.5, False), (1e-9, True)],
)
def test_worked_example_matches_tf_gradient(threshold, expect_all_above):
    p = [0.83, -0.41, 0.07, 1.26, -0.92, 0.38]
    g = [0.02, -0.30, 0.01, -0.90, 0.10, 0.05]
    ex = F.worked_example(p, g, threshold, 0.25, 0.02)
    assert ex.all_above is expect_all_above
    # independent TF reference: nested_quantize directly
    pv, sv = tf.Variable(np.asarray(p, np.float32)), tf.Variable([0.25])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            tf.constant(g, tf.float32) * nested_quantize(pv, sv, threshold)
        )
    d_p, d_s = tape.gradient(loss, [pv, sv])
    np.testing.assert_array_equal(ex.d_p_tf, d_p.numpy())
    np.testing.assert_array_equal(ex.d_p_tf, np.asarray(g, np.float32))
    assert ex.d_scale == pytest.approx(float(d_s.numpy()[0]), rel=1e-6)
    assert ex.d_scale_tf == float(d_s.numpy()[0])
    assert ex.m == 5.0 and list(ex.p_q) == [3, -2, 0, 5, -4, 1]
    assert ex.new_scale == pytest.approx(0.25 - 0.02 * ex.d_scale, rel=1e-6)
    assert ex.new_scale == pytest.approx(ex.new_scale_keras, rel=1e-6)
    if expect_all_above:
        assert np.all(ex.vote == np.float32(-np.tanh(np.float32(threshold))))
        assert ex.d_scale_zero_vote == 0.0
    table = F.worked_example_table(ex)
    assert list(table.columns[:8]) == [
        "i",
        "P",
        "P_q",
        "P_rec",
        "G",
        "r",
        "below_threshold",
        "vote",
    ]
    md = F.worked_example_markdown(ex)
    header = md.splitlines()[2]
    assert header.count("|") == 8, "a '|' inside a cell would break the Markdown table"
    _check_legible(F.draw_worked_example(ex), 2)


@pytest.mark.parametrize(
    "notebook,stems",
    [
        (
            "background_figures",
            [
                "fig2_1_mlp",
                "fig2_2_conv2d",
                "fig2_3_conv3d",
                "fig2_4_weight_quantization",
                "fig2_5_minmax_matmul",
                "fig2_6_conv_granularities",
            ],
        ),
        (
            "method_insights",
            [
                "fig3_1_nested_conv",
                "fig3_2_dense_granularities",
                "vote_function",
                "ratio_histogram",
                "worked_example",
            ],
        ),
    ],
)
def test_notebooks_save_the_stable_stems(notebook, stems):
    source = (paths.NOTEBOOKS_DIR / f"{notebook}.md").read_text()
    for stem in stems:
        assert f'"{stem}"' in source, f"{notebook} no longer saves {stem}"


# ---- the checks background_figures records
# -------------------------------------------------


def test_figure_checks_tie_drawn_numbers_to_the_library(mlp):
    edges = F.mlp_edges(mlp)
    row = F.mlp_check(mlp, edges)
    assert row["figure"] == "fig2_1_mlp" and row["value"] == 0.0 == row["reference"]
    ex = F.conv_example(F.integer_input(5, 1, seed=0), F.SOBEL_X, (0, 1))
    row = F.conv_check("fig2_2_conv2d", ex)
    assert row["quantity"] == "output(0, 1) (NumPy vs tf.nn.conv2d)"
    assert row["value"] == row["reference"] == ex.value
    wq = F.quantize_weights(mlp.layers[0].kernel.numpy(), 4)
    assert F.weight_check(wq)["value"] == 0.0
    mm = F.minmax_matmul(np.ones((1, 4), np.float32), wq, 8)
    assert F.minmax_check(mm)["value"] <= F.CHECK_ATOL
    rows = F.granularity_checks(CONV_KERNEL, ["scalar", "filter"])
    assert [(r["value"], r["reference"]) for r in rows] == [(1.0, 1.0), (4.0, 4.0)]
    table = F.check_table([row, *rows])
    assert list(table.columns) == ["figure", "quantity", "value", "reference", "equal"]
    assert table["equal"].all()


def test_check_table_raises_on_a_differing_figure():
    bad = {"figure": "f", "quantity": "q", "value": 1.0, "reference": 0.0}
    with pytest.raises(ValueError, match="differ from the library"):
        F.check_table([bad])


def test_ratio_stats_adds_provenance_columns(trained):
    x, y, label, model, history = trained
    ratios = F.layer_ratios(model, x[:32], y[:32], 0)
    stats = F.ratio_stats(
        ratios, [1e-9, 1e-3], dataset=label, trained_threshold=1e-9, epochs=1, seed=1
    )
    assert list(stats.columns[:3]) == ["dataset", "layer", "granularity"]
    assert list(stats.columns[-3:]) == ["trained_threshold", "epochs", "seed"]
    assert len(stats) == 2 and set(stats["layer"]) == {ratios.layer}


def test_worked_example_forward_equals_the_quantizer():
    ex = F.worked_example([0.83, -0.41, 0.07], [0.02, -0.3, 0.01], 0.5, 0.25, 0.02)
    np.testing.assert_array_equal(ex.p_rec_tf, ex.p_rec)
    np.testing.assert_array_equal(
        ex.p_rec, np.floor(ex.p / np.float32(0.25)) * np.float32(0.25)
    )
