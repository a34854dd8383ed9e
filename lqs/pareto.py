"""Pareto fronts of accuracy (maximise) against memory (minimise).

A point ``i`` is on the front when no other point ``j`` is at least as good in both objectives
and strictly better in one: ``x_j <= x_i`` and ``y_j >= y_i`` with one inequality strict.
Exact duplicates of a front point are all kept on the front.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pareto_mask", "pareto_front", "best_within"]


def pareto_mask(x, y) -> np.ndarray:
    """Boolean mask of the non-dominated points for minimising ``x`` and maximising ``y``.

    Arguments:
        x: cost per point (e.g. KiB or bits/parameter), lower is better.
        y: quality per point (e.g. test accuracy), higher is better.

    Returns:
        ``mask[i]`` is True when point ``i`` is on the Pareto front. NaN points are never on it.

    Sorts by ``x`` ascending (ties: ``y`` descending) and keeps points whose ``y`` reaches the running
    maximum of ``y`` over all cheaper-or-equal points: O(n log n).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}"
        )
    mask = np.zeros(x.shape, dtype=bool)
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    order = valid[np.lexsort((-y[valid], x[valid]))]
    best_y = -np.inf
    best_x = np.nan
    for i in order:
        if y[i] > best_y:
            mask[i] = True
            best_y, best_x = y[i], x[i]
        elif y[i] == best_y and x[i] == best_x:
            mask[i] = True  # exact duplicate of a front point
    return mask


def pareto_front(x, y) -> np.ndarray:
    """Indices of the points on the front of ``x`` (minimise) vs ``y`` (maximise), sorted by ``x``."""
    x = np.asarray(x, dtype=float)
    front = np.flatnonzero(pareto_mask(x, y))
    return front[np.argsort(x[front], kind="stable")]


def best_within(
    accuracy, compression, reference_accuracy: float, *, max_drop: float = 0.01
) -> int | None:
    """Index of the highest ``compression`` among points with ``accuracy >= reference - max_drop``.

    ``max_drop`` is in accuracy units (0.01 = one percentage point); ties go to the first point.
    Returns None when no point qualifies.
    """
    accuracy = np.asarray(accuracy, dtype=float)
    compression = np.asarray(compression, dtype=float)
    ok = np.flatnonzero(accuracy >= reference_accuracy - max_drop - 1e-12)
    if ok.size == 0:
        return None
    return int(ok[np.argmax(compression[ok])])
