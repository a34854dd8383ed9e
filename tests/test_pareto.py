"""Pareto fronts against a brute-force NumPy reference and hand-worked points."""

from __future__ import annotations

import numpy as np
import pytest

from lqs.pareto import best_within, pareto_front, pareto_mask


def brute_force(x, y):
    n = len(x)
    keep = np.ones(n, bool)
    for i in range(n):
        if np.isnan(x[i]) or np.isnan(y[i]):
            keep[i] = False
            continue
        for j in range(n):
            if (
                j != i
                and x[j] <= x[i]
                and y[j] >= y[i]
                and (x[j] < x[i] or y[j] > y[i])
            ):
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


def test_front_indices_and_best_within():
    kib = [1.0, 2.0, 3.0, 1.5, 0.5]
    accuracy = [0.80, 0.90, 0.85, 0.95, 0.70]
    compression = [32.0, 16.0, 10.0, 21.0, 64.0]
    # front: E(0.5, .70), A(1.0, .80), D(1.5, .95); B and C are dominated by D
    assert pareto_front(kib, accuracy).tolist() == [4, 0, 3]
    # 0.95 and 0.90 reach 0.905 - 0.01; of those D compresses more (21 > 16)
    assert best_within(accuracy, compression, 0.905, max_drop=0.01) == 3
    assert best_within(accuracy, compression, 0.99, max_drop=0.01) is None
    # ties go to the first point
    assert best_within([0.9, 0.9], [8.0, 8.0], 0.9, max_drop=0.0) == 0


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="equal length"):
        pareto_mask([1, 2], [1])
