"""companion.chapters.insights: NumPy references on hand-made arrays with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from companion.chapters import insights

# 3 classes, 8 examples: class 0 x3, class 1 x3, class 2 x2
Y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
REF = np.array([0, 0, 1, 1, 1, 1, 2, 0])  # class 0: 2/3, class 1: 3/3, class 2: 1/2
QNT = np.array([0, 2, 1, 1, 0, 1, 2, 2])  # class 0: 1/3, class 1: 2/3, class 2: 2/2


# ------------------------------------------------------------------------------------ per class


def test_per_class_accuracy_by_hand():
    np.testing.assert_allclose(insights.per_class_accuracy(Y, REF), [2 / 3, 1.0, 0.5])
    np.testing.assert_allclose(insights.per_class_accuracy(Y, QNT), [1 / 3, 2 / 3, 1.0])


def test_per_class_accuracy_class_without_examples_is_nan():
    acc = insights.per_class_accuracy([0, 0, 2], [0, 1, 2], num_classes=4)
    assert acc[0] == 0.5 and acc[2] == 1.0
    assert math.isnan(acc[1]) and math.isnan(acc[3])


def test_per_class_accuracy_matches_a_loop_on_random_labels():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    want = [np.mean(p[y == k] == k) for k in range(5)]
    np.testing.assert_allclose(insights.per_class_accuracy(y, p), want)


def test_per_class_table_by_hand():
    t = insights.per_class_table(Y, REF, QNT, class_names=["a", "b", "c"])
    assert list(t["class"]) == ["a", "b", "c"]
    assert list(t["n"]) == [3, 3, 2]
    np.testing.assert_allclose(t["change"], [1 / 3 - 2 / 3, 2 / 3 - 1.0, 1.0 - 0.5])
    assert list(t["errors_reference"]) == [1, 0, 1]
    assert list(t["errors_quantized"]) == [2, 1, 0]


# ------------------------------------------------------------------------------------ confusion


def test_confusion_matrix_counts_by_hand():
    want = np.array([[2, 1, 0],
                     [0, 3, 0],
                     [1, 0, 1]])  # fmt: skip
    got = insights.confusion_matrix(Y, REF)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64


def test_confusion_matrix_matches_a_double_loop():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    want = np.zeros((4, 4), int)
    for t, q in zip(y, p, strict=True):
        want[t, q] += 1
    np.testing.assert_array_equal(insights.confusion_matrix(y, p), want)


def test_confusion_matrix_normalized_rows_and_empty_class():
    m = insights.confusion_matrix([0, 0, 2], [0, 1, 2], num_classes=3, normalize="true")
    np.testing.assert_allclose(m, [[0.5, 0.5, 0], [0, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="normalize"):
        insights.confusion_matrix(Y, REF, normalize="all")


def test_confusion_difference_by_hand():
    ref = np.array([[2, 1, 0], [0, 3, 0], [1, 0, 1]]) / np.array([[3], [3], [2]])
    qnt = np.array([[1, 1, 1], [1, 2, 0], [0, 0, 2]]) / np.array([[3], [3], [2]])
    got = insights.confusion_difference(Y, REF, QNT)
    np.testing.assert_allclose(got, qnt - ref)
    np.testing.assert_allclose(
        got.sum(axis=1), 0, atol=1e-12
    )  # rows of rates sum to 1 on both sides
    # the diagonal is the per-class accuracy change
    np.testing.assert_allclose(
        np.diag(got), insights.per_class_table(Y, REF, QNT)["change"]
    )
    counts = insights.confusion_difference(Y, REF, QNT, normalize=None)
    np.testing.assert_array_equal(counts, [[-1, 0, 1], [1, -1, 0], [-1, 0, 1]])


# ------------------------------------------------------------------------------------ most changed


def test_most_changed_ranking_by_hand():
    y = np.array([0, 1, 1, 0])
    pa = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    pb = np.array([[0.3, 0.7], [0.5, 0.5], [0.1, 0.9], [0.1, 0.9]])
    # drops of the true-class probability: 0.6, 0.3, -0.3, 0.6 -> order 0, 3 (tie: lower index first), 1
    t = insights.most_changed(y, pa, pb, k=10, class_names=["x", "y"])
    assert list(t["index"]) == [0, 3, 1]
    np.testing.assert_allclose(t["drop"], [0.6, 0.6, 0.3])
    np.testing.assert_allclose(t["p_true_reference"], [0.9, 0.7, 0.8])
    np.testing.assert_allclose(t["p_true_quantized"], [0.3, 0.1, 0.5])
    assert list(t["pred_reference"]) == [0, 0, 1]
    assert list(t["pred_quantized"]) == [1, 1, 0]  # 0.5/0.5 tie goes to the lower label
    assert list(t["pred_class_quantized"]) == ["y", "y", "x"]
    np.testing.assert_allclose(t["p_pred_quantized"], [0.7, 0.9, 0.5])
    assert list(insights.most_changed(y, pa, pb, k=2)["index"]) == [0, 3]


def test_most_changed_matches_argsort_reference_and_skips_gains():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 50)
    pa, pb = rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(3), 50)
    drop = pa[np.arange(50), y] - pb[np.arange(50), y]
    want = [i for i in np.argsort(-drop, kind="stable") if drop[i] > 0][:7]
    assert list(insights.most_changed(y, pa, pb, k=7)["index"]) == want
    assert len(insights.most_changed(y, pa, pa, k=5)) == 0  # no change, no row


def test_most_changed_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        insights.most_changed([0, 1], np.ones((2, 2)) / 2, np.ones((3, 2)) / 2)


# ------------------------------------------------------------------------------------ data


def test_class_balance_by_hand():
    t = insights.class_balance(Y, num_classes=4, class_names=["a", "b", "c", "d"])
    assert list(t["count"]) == [3, 3, 2, 0]
    np.testing.assert_allclose(t["share"], [3 / 8, 3 / 8, 2 / 8, 0])
    assert list(t["class"]) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="out of range"):
        insights.class_balance(Y, num_classes=2)


def test_pixel_stats_by_hand_two_channels():
    # two 1x2 images with 2 channels: channel 0 holds 0, 1, 0, 1; channel 1 holds 0.5 everywhere
    x = np.array([[[[0.0, 0.5], [1.0, 0.5]]], [[[0.0, 0.5], [1.0, 0.5]]]])
    t = insights.pixel_stats(x, channel_names=["a", "b"])
    assert isinstance(t, pd.DataFrame) and list(t["channel"]) == ["a", "b"]
    np.testing.assert_allclose(t["mean"], [0.5, 0.5])
    np.testing.assert_allclose(t["std"], [0.5, 0.0])  # population std
    np.testing.assert_allclose(t["min"], [0.0, 0.5])
    np.testing.assert_allclose(t["max"], [1.0, 0.5])


def test_pixel_stats_matches_numpy_on_rgb_and_accepts_grey_without_channel_axis():
    rng = np.random.default_rng(3)
    x = rng.random((5, 4, 4, 3))
    t = insights.pixel_stats(x)
    assert list(t["channel"]) == ["R", "G", "B"]
    np.testing.assert_allclose(t["mean"], x.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(t["std"], x.std(axis=(0, 1, 2)))
    grey = insights.pixel_stats(x[..., 0])
    assert list(grey["channel"]) == ["grey"]
    np.testing.assert_allclose(grey["mean"], [x[..., 0].mean()])


def test_intensity_histogram_by_hand():
    x = np.array([0.0, 0.1, 0.49, 0.5, 1.0]).reshape(1, 5, 1, 1)
    h = insights.intensity_histogram(x, bins=2)
    assert list(h["count"]) == [3, 2]  # [0, .5) and [.5, 1] (right edge included)
    np.testing.assert_allclose(h["bin_left"], [0.0, 0.5])
    np.testing.assert_allclose(h["density"], [3 / (5 * 0.5), 2 / (5 * 0.5)])
    assert np.isclose((h["density"] * (h["bin_right"] - h["bin_left"])).sum(), 1.0)


def test_sample_indices_first_per_class():
    got = insights.sample_indices(np.array([2, 0, 2, 1, 0, 2]), per_class=2)
    assert got == {0: [1, 4], 1: [3], 2: [0, 2]}


def test_label_checks():
    with pytest.raises(ValueError, match="same length"):
        insights.per_class_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=">= 0"):
        insights.class_balance([-1, 0])
    with pytest.raises(ValueError, match="1-D"):
        insights.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int))
