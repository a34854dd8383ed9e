"""Pareto fronts of accuracy (maximise) against memory (minimise).

A point ``i`` is on the front when no other point ``j`` is at least as good in both objectives
and strictly better in one: ``x_j <= x_i`` and ``y_j >= y_i`` with one inequality strict.
Exact duplicates of a front point are all kept on the front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["pareto_mask", "pareto_front", "best_compression_within"]


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
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
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


def pareto_front(df: pd.DataFrame, x: str, y: str, by: str | list[str] | None = None) -> pd.DataFrame:
    """Rows of ``df`` on the front of ``x`` (minimise) vs ``y`` (maximise), per group of ``by``, sorted by ``x``."""
    if by is None:
        return df[pareto_mask(df[x], df[y])].sort_values(x)
    parts = [group[pareto_mask(group[x], group[y])] for _, group in df.groupby(by, sort=True)]
    return pd.concat(parts).sort_values(([by] if isinstance(by, str) else list(by)) + [x]) if parts else df.iloc[:0]


def best_compression_within(
    df: pd.DataFrame, reference_accuracy: float, *, max_drop: float = 0.01,
    accuracy: str = "test_accuracy", compression: str = "mem_compression",
) -> pd.Series | None:
    """Row with the highest ``compression`` whose ``accuracy`` is at least ``reference_accuracy - max_drop``.

    ``max_drop`` is in accuracy units (0.01 = one percentage point). Returns None when no row qualifies.
    """
    ok = df[df[accuracy] >= reference_accuracy - max_drop - 1e-12]
    if ok.empty:
        return None
    return ok.loc[ok[compression].idxmax()]
