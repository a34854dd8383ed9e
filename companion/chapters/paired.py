"""Paired per-seed checks of the configurations a best-compression table selects.

A best-compression table (:func:`companion.chapters.analysis.best_compression_table`)
picks one configuration per method on seed means of the validation split. Every method
runs the same seeds, and seed ``s`` of two methods shares the data subset, validation
split and initialisation seed, so the checks here work on per-seed *paired* differences
(:mod:`companion.chapters.stats`):

* :func:`accuracy_bar` -- the selected configuration's test accuracy minus FP32's, seed by
  seed, with its t-interval; the one-point bar is met ("within") only when the whole
  interval lies above ``-max_drop``, missed ("below") when it lies below, and "within
  noise" otherwise (e.g. a mean 0.2 points inside the bar with an interval of ±1 point).
* :func:`compression_ranking` -- which method's selected configuration needs the fewest
  bits among those that meet the bar with their uncertainty ("within"), named only when
  its paired interval against every other such method excludes 0
  (:func:`companion.chapters.stats.winner_or_tie`); otherwise a tie.
* :func:`threshold_ties` -- the λ of the nested quantizer whose seed-mean validation
  accuracy meets the bar and whose bits are not distinguishable from the best λ's: a
  single λ is named only when no other λ ties with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from companion.chapters import analysis, stats

__all__ = [
    "CONFIDENCE",
    "BAR_VERDICTS",
    "selected_runs",
    "reference_runs",
    "accuracy_bar",
    "rank_by_bits",
    "compression_ranking",
    "threshold_ties",
]

#: level of every interval on the experiments pages
CONFIDENCE = 0.95
#: outcomes of the accuracy bar with its uncertainty
BAR_VERDICTS = ("within", "within noise", "below", "not shown")


def selected_runs(runs: pd.DataFrame, row: Mapping[str, Any]) -> pd.DataFrame:
    """The per-seed runs of one best-table row's configuration (its ``config_id``)."""
    return runs[
        (runs["setup"] == row["setup"]) & (runs["config_id"] == row["config_id"])
    ]


def reference_runs(runs: pd.DataFrame, setup: str) -> pd.DataFrame:
    """The per-seed FP32 runs of ``setup``: the FP32 configuration best on validation."""
    fp = runs[(runs["setup"] == setup) & (runs["flavour"] == "fp32")]
    if fp.empty:
        return fp
    means = fp.groupby("config_id")[analysis.SELECT_ON].mean()
    return fp[fp["config_id"] == means.idxmax()]


def _bar_verdict(low: float, high: float, n: int, max_drop: float) -> str:
    if n < 2 or math.isnan(low):
        return "not shown"
    if low >= -max_drop:
        return "within"
    return "below" if high < -max_drop else "within noise"


def accuracy_bar(
    runs: pd.DataFrame, best: pd.DataFrame, *, max_drop: float
) -> pd.DataFrame:
    """``best`` with the paired test-accuracy difference to FP32 and the bar's verdict.

    For each qualifying row, :math:`d_s = \\text{acc}_s - \\text{acc}^{FP32}_s` over the
    seeds both ran; adds ``acc_diff``, ``acc_diff_low``, ``acc_diff_high`` (the
    :data:`CONFIDENCE` t-interval, accuracy units), ``n_pairs`` and ``bar`` (one of
    :data:`BAR_VERDICTS`). Rows that did not qualify get NaN and "not shown".

    Arguments:
        runs: every run, with ``setup``, ``config_id``, ``flavour``, ``seed`` and
            accuracies (:func:`companion.chapters.comparison.all_runs`).
        best: the best-compression table (with ``config_id``).
        max_drop: the bar, in accuracy units (0.01 = one point).
    """
    out = []
    for row in best.to_dict("records"):
        add = dict(acc_diff=math.nan, acc_diff_low=math.nan, acc_diff_high=math.nan)
        add.update(n_pairs=0, bar="not shown")
        if row["within"]:
            pair = pd.concat(
                [
                    selected_runs(runs, row).assign(arm="selected"),
                    reference_runs(runs, row["setup"]).assign(arm="FP32"),
                ]
            )
            s = stats.compare_paired(
                pair,
                metric="test_accuracy",
                method_col="arm",
                a="selected",
                b="FP32",
                confidence=CONFIDENCE,
            ).iloc[0]
            add.update(
                acc_diff=s["mean"],
                acc_diff_low=s["ci_low"],
                acc_diff_high=s["ci_high"],
                n_pairs=int(s["n"]),
                bar=_bar_verdict(s["ci_low"], s["ci_high"], int(s["n"]), max_drop),
            )
        out.append({**row, **add})
    return pd.DataFrame(out, columns=[*best.columns, *add])


def rank_by_bits(
    table: pd.DataFrame, label: str, by: Sequence[str] = ()
) -> pd.DataFrame:
    """:func:`companion.chapters.stats.winner_or_tie` of per-seed total model bits
    (``mem_total_bits``, lower is better) between the ``label`` values of ``table``, per
    ``by`` group, at :data:`CONFIDENCE`."""
    return stats.winner_or_tie(
        table,
        metric="mem_total_bits",
        method_col=label,
        higher_is_better=False,
        by=list(by),
        confidence=CONFIDENCE,
    )


def compression_ranking(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per setup: the method whose selected configuration needs the fewest bits, or a tie.

    Among the methods whose configuration meets the accuracy bar with its uncertainty
    (``bar == "within"`` of :func:`accuracy_bar`: the whole paired interval above
    ``-max_drop``), compares the per-seed total bits (``mem_total_bits``, the same
    parameters for every method) pairwise (:func:`companion.chapters.stats.winner_or_tie`,
    lower is better). Returns one row per setup: ``verdict`` (a method, ``"tie"`` or
    ``"not shown"``), ``best``, ``tied``, ``n_min``, ``reason``.
    """
    parts = [
        selected_runs(runs, row).assign(method=str(row["method"]))
        for row in best.to_dict("records")
        if row["within"] and row["bar"] == "within"
    ]
    if not parts:
        return pd.DataFrame(columns=["setup", "verdict", "best", "tied", "n_min"])
    return rank_by_bits(pd.concat(parts, ignore_index=True), "method", by=["setup"])


def threshold_ties(
    runs: pd.DataFrame,
    agg: pd.DataFrame,
    selection: Mapping[str, float],
    *,
    max_drop: float,
) -> pd.DataFrame:
    """Per setup: the nested λ that qualify and tie with the fewest-bits λ.

    Candidates are the nested configurations whose seed-mean validation accuracy is
    within ``max_drop`` of FP32's (``selection``, per setup); among them
    :func:`companion.chapters.stats.winner_or_tie` on per-seed total bits decides
    whether one λ needs fewer bits than every other. Returns ``setup``, ``verdict`` (the
    λ as text, ``"tie"`` or ``"not shown"``), ``tied`` (the tied λ) and ``n_min``.
    """
    col = f"{analysis.SELECT_ON}_mean"
    nested = agg[agg["method"] == "nested"]
    ok = nested[nested[col] >= nested["setup"].map(selection) - max_drop - 1e-12]
    table = runs[runs["config_id"].isin(set(ok["config_id"]))]
    if table.empty:
        return pd.DataFrame(columns=["setup", "verdict", "tied", "n_min"])
    table = table.assign(
        lam=[
            f"λ {analysis.fmt_sci(t)} ({g})"
            for t, g in zip(
                table["threshold"], table["kernel_granularity"], strict=True
            )
        ]
    )
    return rank_by_bits(table, "lam", by=["setup"])
