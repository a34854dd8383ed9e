"""Pareto fronts against a brute-force NumPy reference and hand-worked points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lqs.pareto import best_compression_within, pareto_front, pareto_mask


def brute_force(x, y):
    n = len(x)
    keep = np.ones(n, bool)
    for i in range(n):
        if np.isnan(x[i]) or np.isnan(y[i]):
            keep[i] = False
            continue
        for j in range(n):
            if j != i and x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i]):
                keep[i] = False
                break
    return keep


def test_hand_worked_front():
    # (KiB, accuracy): A(10, .90) B(20, .95) C(15, .89) D(30, .95) E(5, .80) F(20, .95) duplicate of B
    x = [10, 20, 15, 30, 5, 20]
    y = [0.90, 0.95, 0.89, 0.95, 0.80, 0.95]
    # C is dominated by A (cheaper, better); D by B (same accuracy, cheaper); B and F tie exactly
    assert pareto_mask(x, y).tolist() == [True, True, False, False, True, True]


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    x = rng.integers(0, 12, n).astype(float)  # many ties on purpose
    y = rng.integers(0, 8, n).astype(float) / 8
    if n > 3:
        x[rng.integers(0, n)] = np.nan
    np.testing.assert_array_equal(pareto_mask(x, y), brute_force(x, y))


def test_front_per_group_and_best_compression():
    df = pd.DataFrame({
        "method": ["a", "a", "a", "b", "b"],
        "kib": [1.0, 2.0, 3.0, 1.5, 0.5],
        "test_accuracy": [0.80, 0.90, 0.85, 0.95, 0.70],
        "mem_compression": [32.0, 16.0, 10.0, 21.0, 64.0],
    })
    front = pareto_front(df, "kib", "test_accuracy", by="method")
    assert front[["method", "kib"]].values.tolist() == [["a", 1.0], ["a", 2.0], ["b", 0.5], ["b", 1.5]]
    best = best_compression_within(df, reference_accuracy=0.905, max_drop=0.01)
    assert best["mem_compression"] == 21.0  # 0.95 >= 0.895; 0.90 qualifies too but compresses less
    assert best_compression_within(df, reference_accuracy=0.99, max_drop=0.01) is None


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="equal length"):
        pareto_mask([1, 2], [1])
