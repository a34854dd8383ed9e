"""Paired statistics over seeds and the verdict rule of every claim in the book.

The experiments chapter compares methods across seeds, the generalization chapter checks
claims against FP32. Both use the one rule below, so a page can print it with
:func:`rule_text` next to its table.

Data. Every method is run with the same seeds; seed ``s`` of method A and seed ``s`` of
method B form a *pair* (same initialisation and data order where the runner allows it).
The unit of analysis is the per-seed paired difference :math:`d_s = A_s - B_s`, taken
over the seeds present for both (:func:`paired_differences`). With :math:`n` pairs,
mean :math:`\\bar d`, sample standard deviation :math:`s_d` (``ddof=1``) and standard
error :math:`\\mathrm{se} = s_d/\\sqrt n`:

* **Paired t-interval** (:func:`paired_summary`), level :math:`1-\\alpha`:
  :math:`\\bar d \\pm t_{n-1,\\,1-\\alpha/2}\\, s_d/\\sqrt n`; the two-sided paired
  t-test of :math:`H_0: \\mu_d = 0` has :math:`t = \\bar d/\\mathrm{se}` and
  :math:`p = 2\\,P(T_{n-1} \\ge |t|)`.
* **TOST** (:func:`tost`), equivalence within a margin :math:`m > 0`: the two one-sided
  tests of :math:`H_{01}: \\mu_d \\le -m` and :math:`H_{02}: \\mu_d \\ge m` give
  :math:`p_1 = P(T_{n-1} \\ge (\\bar d + m)/\\mathrm{se})` and
  :math:`p_2 = P(T_{n-1} \\le (\\bar d - m)/\\mathrm{se})`;
  :math:`p_\\mathrm{TOST} = \\max(p_1, p_2)`, and :math:`p_\\mathrm{TOST} < \\alpha`
  exactly when the :math:`1-2\\alpha` t-interval lies inside :math:`(-m, +m)`.
* **Holm--Bonferroni** (:func:`holm`) over the :math:`k` claims of a page: with
  ascending p-values :math:`p_{(1)} \\le \\dots \\le p_{(k)}`,
  :math:`\\tilde p_{(i)} = \\min\\{1, \\max_{j \\le i} (k-j+1)\\, p_{(j)}\\}`;
  rejecting when :math:`\\tilde p < \\alpha` controls the family-wise error rate at
  :math:`\\alpha`.

Verdicts (one of :data:`VERDICTS`; ``reason`` says why a claim is not shown):

* Directional claim "A better than B" (:func:`directional_verdicts`): **holds** if the
  Holm-adjusted paired p is below :math:`\\alpha` and :math:`\\bar d` has the claimed
  sign; **does not hold** if it is below :math:`\\alpha` with the opposite sign; **not
  shown** otherwise, and always with fewer than two pairs.
* Equivalence claim "A like B within :math:`\\pm m`" (:func:`equivalence_verdicts`):
  **holds** if the Holm-adjusted TOST p is below :math:`\\alpha`; **does not hold** if
  the whole :math:`1-\\alpha` interval lies outside :math:`\\pm m` (Holm-adjusted
  :math:`p_\\mathrm{out} = \\min\\{1, 2\\min(P(T \\ge (\\bar d - m)/\\mathrm{se}),
  P(T \\le (\\bar d + m)/\\mathrm{se}))\\} < \\alpha`); **not shown** otherwise.
* Ranking "which method is best" (:func:`winner_or_tie`): the method with the best mean
  is named only if its paired :math:`1-\\alpha` interval against *every* other method
  excludes 0 in its favour (an intersection--union test: no multiplicity correction is
  needed); otherwise the result is ``"tie"`` and the tied set lists it with every
  method it does not beat.

Deterministic metrics (e.g. memory of a fixed bit width) give :math:`s_d = 0`: the
difference is then known exactly, the interval is the point :math:`\\bar d`, and a
one-sided p is 0 when the tested inequality holds strictly and 1 otherwise.

References: Schuirmann (1987), doi:10.1007/BF01068419 (TOST); Holm (1979), Scand. J.
Statist. 6(2), 65--70 (Holm); Berger (1982), Technometrics 24(4), 295--300
(intersection--union tests).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "SUMMARY_COLUMNS",
    "VERDICTS",
    "TostResult",
    "compare_paired",
    "directional_verdicts",
    "equivalence_verdicts",
    "holm",
    "paired_differences",
    "paired_summary",
    "rule_text",
    "tost",
    "winner_or_tie",
]

#: The three verdicts a page prints for a claim.
VERDICTS = ("holds", "does not hold", "not shown")
#: Columns :func:`paired_summary` adds per group.
SUMMARY_COLUMNS = tuple(
    "n mean sd se confidence ci_low ci_high t p_value reason".split()
)
#: Identity columns written by :func:`paired_differences`, grouped by
#: :func:`paired_summary`.
_ID_COLUMNS = ("metric", "a", "b")


# ------------------------------------------------------------------------ validation


def _check_level(name: str, value: float) -> None:
    """Raise unless ``0 < value < 1`` (an alpha or a confidence level)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"{name}={value!r} is not allowed; allowed: a number strictly between 0 "
            f"and 1; fix: pass e.g. {name}={0.95 if name == 'confidence' else 0.05}"
        )


def _check_margin(margin: float) -> None:
    """Raise unless the equivalence margin is a finite number > 0."""
    ok = isinstance(margin, numbers.Real) and not isinstance(margin, bool)
    if not ok or not math.isfinite(margin) or margin <= 0:
        raise ValueError(
            f"margin={margin!r} is not allowed; allowed: a finite number > 0 in the "
            "metric's units; fix: pass the largest difference that still counts as "
            "'like', e.g. margin=0.01 for one accuracy point"
        )


def _check_columns(df: pd.DataFrame, **columns: str) -> None:
    """Raise if a named column (keyword = parameter name) is not in ``df``."""
    for param, col in columns.items():
        if col not in df.columns:
            raise ValueError(
                f"{param}={col!r} is not a column of the table; allowed: "
                f"{list(df.columns)}; fix: pass one of these names"
            )


def _check_finite(values: pd.Series | np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a float array; raise on non-numeric, NaN or inf entries."""
    series = pd.Series(values)
    if not (pd.api.types.is_numeric_dtype(series) and not series.dtype == bool):
        raise ValueError(
            f"{name} has dtype {series.dtype}; allowed: numbers; fix: convert "
            "the column to float (e.g. df[col].astype(float))"
        )
    arr = series.to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} NaN/inf value(s) (positions {bad[:5].tolist()}); "
            "allowed: finite numbers; fix: drop or rerun failed runs before comparing"
        )
    return arr


# --------------------------------------------------------------------- t machinery

_NEED_TWO = ("no seed present for both: need >= 2", "only 1 paired seed: need >= 2")
_ZERO_SPREAD = "zero spread over seeds: the interval is the point mean"


def _p_greater(num: np.ndarray, se: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """One-sided p of :math:`H_1: \\mu > \\mu_0`, ``num`` :math:`= \\bar d - \\mu_0`.

    Elementwise :math:`P(T_{\\mathrm{dof}} \\ge \\mathrm{num}/\\mathrm{se})`; with
    ``se == 0`` (no spread) 0 if ``num > 0`` and 1 otherwise; NaN where ``se`` is NaN.
    """
    arrays = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (num, se, dof))
    num, se, dof = np.broadcast_arrays(*arrays)
    out = np.where(num > 0, 0.0, 1.0)
    spread = se > 0
    out[spread] = _st.t.sf(num[spread] / se[spread], dof[spread])
    out[np.isnan(se)] = np.nan
    return out


def _p_two_sided(num: np.ndarray, se: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Two-sided p: :math:`\\min\\{1, 2\\min(P(T \\ge t), P(T \\le t))\\}`."""
    one_sided = np.minimum(_p_greater(num, se, dof), _p_greater(-num, se, dof))
    return np.minimum(1.0, 2.0 * one_sided)


def _interval(
    mean: np.ndarray, se: np.ndarray, dof: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided t-interval at ``level`` :math:`\\ell`, elementwise.

    :math:`\\bar d \\pm t_{\\mathrm{dof},(1+\\ell)/2}\\,\\mathrm{se}`; NaN where
    ``dof`` is NaN (fewer than 2 pairs).
    """
    half = _st.t.ppf(0.5 + level / 2.0, np.asarray(dof, dtype=float)) * se
    return mean - half, mean + half


def _t_table(
    n: Sequence[int], mean: Sequence[float], sd: Sequence[float], confidence: float
) -> pd.DataFrame:
    """The :data:`SUMMARY_COLUMNS` from per-group ``n``, mean and ``ddof=1`` sd."""
    n = np.asarray(n, dtype=int)
    mean = np.asarray(mean, dtype=float)
    dof = np.where(n >= 2, n - 1, np.nan)
    sd = np.where(n >= 2, np.asarray(sd, dtype=float), np.nan)
    se = sd / np.sqrt(np.maximum(n, 1))
    low, high = _interval(mean, se, dof, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / se  # +-inf with zero spread
    reason = np.select([n == 0, n == 1, se == 0], [*_NEED_TWO, _ZERO_SPREAD], "")
    values = (n, mean, sd, se, confidence, low, high, t, _p_two_sided(mean, se, dof))
    return pd.DataFrame({**dict(zip(SUMMARY_COLUMNS, values)), "reason": reason})


def _summarise(d: np.ndarray, confidence: float) -> dict[str, object]:
    """:data:`SUMMARY_COLUMNS` of one group's paired differences ``d``."""
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    return _t_table([n], [mean], [sd], confidence).iloc[0].to_dict()


# ---------------------------------------------------------------- paired differences


def paired_differences(
    df: pd.DataFrame,
    *,
    metric: str,
    method_col: str,
    a: str,
    b: str,
    seed_col: str = "seed",
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """Per-seed paired differences :math:`d_s = A_s - B_s` of ``metric``, per group.

    Arguments:
        df: tidy results, one row per (``by`` group, method, seed).
        metric: numeric column compared (finite values only).
        method_col: column naming the method; ``a`` and ``b`` are two of its values.
        seed_col: column of the seed; only seeds present for both methods are kept.
        by: columns splitting the comparison (e.g. ``("dataset", "arch")``).

    Returns:
        one row per pair: the ``by`` columns, ``seed_col``, ``metric``, ``a``, ``b``
        (names), ``value_a``, ``value_b`` and ``diff`` = ``value_a - value_b``.
    """
    by = list(by)
    _check_columns(df, metric=metric, method_col=method_col, seed_col=seed_col)
    for col in by:
        _check_columns(df, by=col)
    if a == b:
        raise ValueError(f"a={a!r} equals b; fix: compare two different methods")
    for name, method in (("a", a), ("b", b)):
        if not (df[method_col] == method).any():
            raise ValueError(
                f"{name}={method!r} is not a value of {method_col!r}; allowed: "
                f"{sorted(map(str, df[method_col].unique()))}; fix: pass one of these"
            )
    sub = df[df[method_col].isin([a, b])]
    _check_finite(sub[metric], f"metric column {metric!r}")
    keys = [*by, method_col, seed_col]
    dup = sub.duplicated(keys, keep=False)
    if dup.any():
        raise ValueError(
            f"{int(dup.sum())} rows share {keys} (first: "
            f"{sub.loc[dup, keys].iloc[0].tolist()}); allowed: one row per method and "
            "seed in each group; fix: add the distinguishing column to `by` or average"
        )
    side = {
        m: sub[sub[method_col] == m].set_index([*by, seed_col])[metric] for m in (a, b)
    }
    pairs = pd.concat({"value_a": side[a], "value_b": side[b]}, axis=1, join="inner")
    pairs = pairs.reset_index().sort_values([*by, seed_col], kind="stable")
    pairs.insert(len(by) + 1, "metric", metric)
    pairs.insert(len(by) + 2, "a", a)
    pairs.insert(len(by) + 3, "b", b)
    pairs["diff"] = pairs["value_a"] - pairs["value_b"]
    return pairs.reset_index(drop=True)


def paired_summary(
    diffs: pd.DataFrame, *, by: Sequence[str] = (), confidence: float = 0.95
) -> pd.DataFrame:
    """Paired t statistics per group of a :func:`paired_differences` table.

    Per group (``by`` plus the ``metric``, ``a``, ``b`` columns present): ``n`` pairs,
    ``mean`` :math:`\\bar d`, ``sd`` :math:`s_d` (``ddof=1``), ``se``
    :math:`s_d/\\sqrt n`, the Student t-interval ``ci_low``, ``ci_high`` =
    :math:`\\bar d \\pm t_{n-1,\\,(1+c)/2}\\, s_d/\\sqrt n` at ``confidence`` :math:`c`,
    ``t`` :math:`= \\bar d/\\mathrm{se}` and the two-sided paired t-test ``p_value``.
    With ``n < 2`` the statistics are NaN and ``reason`` says why (the verdict is then
    "not shown"); ``reason`` is empty otherwise.
    """
    _check_level("confidence", confidence)
    _check_columns(diffs, diffs="diff")
    groups = [*by, *(c for c in _ID_COLUMNS if c in diffs.columns and c not in by)]
    for col in groups:
        _check_columns(diffs, by=col)
    d = _check_finite(diffs["diff"], "column 'diff'")
    if not groups:
        return pd.DataFrame([_summarise(d, confidence)])
    agg = diffs.groupby(groups, sort=False, dropna=False)["diff"]
    agg = agg.agg(n="size", mean="mean", sd="std").reset_index()
    table = _t_table(agg["n"], agg["mean"], agg["sd"], confidence)
    return pd.concat([agg[groups], table], axis=1)


def compare_paired(
    df: pd.DataFrame,
    *,
    metric: str,
    method_col: str,
    a: str,
    b: str,
    seed_col: str = "seed",
    by: Sequence[str] = (),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """:func:`paired_differences` then :func:`paired_summary`, one row per ``by`` group.

    Groups where ``a`` or ``b`` ran but no seed is shared appear with ``n = 0`` and a
    ``reason``, so a page shows them as "not shown" instead of dropping them.
    """
    _check_level("confidence", confidence)
    diffs = paired_differences(
        df, metric=metric, method_col=method_col, a=a, b=b, seed_col=seed_col, by=by
    )
    summary = paired_summary(diffs, by=by, confidence=confidence)
    if not by:
        return summary
    shown = set(summary[list(by)].itertuples(index=False, name=None))
    present = df.loc[df[method_col].isin([a, b]), list(by)].drop_duplicates()
    nothing = _summarise(np.empty(0), confidence)
    empty = [
        {**dict(zip(by, key)), "metric": metric, "a": a, "b": b, **nothing}
        for key in present.itertuples(index=False, name=None)
        if key not in shown
    ]
    if not empty:
        return summary
    return pd.concat([summary, pd.DataFrame(empty)], ignore_index=True)


# ------------------------------------------------------------------- TOST and Holm


@dataclass(frozen=True)
class TostResult:
    """Result of :func:`tost`: :math:`1-2\\alpha` interval, one-sided p's, decision."""

    n: int
    mean: float
    sd: float
    margin: float
    alpha: float
    ci_low: float
    ci_high: float
    p_lower: float
    p_upper: float
    p_value: float
    equivalent: bool


def _tost_p(
    mean: np.ndarray, se: np.ndarray, dof: np.ndarray, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """:math:`(p_1, p_2)` of TOST: :math:`H_1: \\mu > -m` and :math:`H_1: \\mu < m`."""
    return _p_greater(mean + margin, se, dof), _p_greater(margin - mean, se, dof)


def tost(
    diffs: Sequence[float] | np.ndarray, margin: float, *, alpha: float = 0.05
) -> TostResult:
    """Two one-sided t-tests (TOST): is the mean paired difference in :math:`(-m, m)`?

    :math:`p_1 = P(T_{n-1} \\ge (\\bar d + m)/\\mathrm{se})` tests
    :math:`H_{01}: \\mu_d \\le -m`,
    :math:`p_2 = P(T_{n-1} \\le (\\bar d - m)/\\mathrm{se})` tests
    :math:`H_{02}: \\mu_d \\ge m`; ``p_value`` :math:`= \\max(p_1, p_2)` and
    ``equivalent`` iff ``p_value < alpha``, i.e. iff the :math:`1-2\\alpha` interval
    :math:`\\bar d \\pm t_{n-1,1-\\alpha}\\,\\mathrm{se}` (``ci_low``, ``ci_high``) lies
    inside :math:`(-m, +m)`. Raises ``ValueError`` with fewer than 2 differences.
    """
    _check_margin(margin)
    _check_level("alpha", alpha)
    d = _check_finite(np.asarray(diffs).ravel(), "diffs")
    if d.size < 2:
        raise ValueError(
            f"diffs has {d.size} value(s); allowed: at least 2 paired differences; "
            "fix: run both methods with at least 2 common seeds"
        )
    n, mean, sd = int(d.size), float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    low, high = (float(x[0]) for x in _interval(mean, se, [n - 1], 1.0 - 2.0 * alpha))
    p1, p2 = (float(p[0]) for p in _tost_p(mean, se, n - 1, margin))
    p = max(p1, p2)
    return TostResult(n, mean, sd, margin, alpha, low, high, p1, p2, p, p < alpha)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm--Bonferroni adjusted p-values, in the input order.

    With the :math:`k` finite p-values sorted ascending,
    :math:`\\tilde p_{(i)} = \\min\\{1, \\max_{j \\le i} (k - j + 1)\\, p_{(j)}\\}`
    (monotone in :math:`p`, capped at 1). NaN entries (claims not tested, e.g. fewer
    than 2 seeds) stay NaN and do not count in :math:`k`.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    bad = ~np.isnan(p) & ((p < 0) | (p > 1))
    if bad.any():
        raise ValueError(
            f"p_values has {p[bad][:5].tolist()} outside [0, 1]; allowed: "
            "probabilities (NaN for untested claims); fix: pass p-values, not t values"
        )
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    k = order.size
    scaled = (k - np.arange(k)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


# ------------------------------------------------------------------------- verdicts


def _require_summary(summary: pd.DataFrame, family: Sequence[str]) -> None:
    """Raise unless ``summary`` has the summary columns and the ``family`` ones."""
    for col in ("n", "mean", "sd", "p_value", "reason"):
        _check_columns(summary, summary=col)
    for col in family:
        _check_columns(summary, family=col)


def _holm_within(df: pd.DataFrame, col: str, family: Sequence[str]) -> np.ndarray:
    """:func:`holm` of ``df[col]``, separately within each ``family`` group."""
    if not family:
        return holm(df[col].to_numpy(float))
    p, out = df[col].to_numpy(float), np.full(len(df), np.nan)
    for rows in df.groupby(list(family), sort=False, dropna=False).indices.values():
        out[rows] = holm(p[rows])
    return out


def directional_verdicts(
    summary: pd.DataFrame,
    *,
    expected: Literal["greater", "less"],
    alpha: float = 0.05,
    family: Sequence[str] = (),
) -> pd.DataFrame:
    """Verdicts of "A better than B" claims, one per row of a :func:`paired_summary`.

    ``expected`` is the claimed sign of :math:`\\bar d = \\overline{A - B}`
    (``"greater"`` when higher is better, e.g. accuracy; ``"less"`` for errors or
    memory). All rows form one Holm family (pass all of a page's directional claims
    in one table) unless ``family`` names columns whose groups are separate families.
    Adds ``p_holm``, ``verdict`` and ``reason`` (see the module docstring).
    """
    _check_level("alpha", alpha)
    if expected not in ("greater", "less"):
        raise ValueError(
            f"expected={expected!r} is not allowed; allowed: 'greater', 'less'; fix: "
            "'greater' if the claim is that A's metric is higher than B's"
        )
    _require_summary(summary, family)
    out = summary.copy()
    out["p_holm"] = _holm_within(out, "p_value", family)
    sign = 1.0 if expected == "greater" else -1.0
    significant = out["p_holm"] < alpha
    right_way = sign * out["mean"] > 0
    out["verdict"] = np.select(
        [significant & right_way, significant & ~right_way],
        ["holds", "does not hold"],
        "not shown",
    )
    undecided = ~significant & out["p_value"].notna()
    out.loc[undecided, "reason"] = (
        f"Holm-adjusted p >= {alpha:g}: not distinguishable from seed noise"
    )
    return out


def _equivalence_columns(summary: pd.DataFrame, margin: float, alpha: float) -> dict:
    """``p_tost``, ``p_out``, ``tost_low``, ``tost_high`` per row (NaN if ``n < 2``)."""
    n = summary["n"].to_numpy(float)
    mean = summary["mean"].to_numpy(float)
    dof = np.where(n >= 2, n - 1, np.nan)
    se = np.where(n >= 2, summary["sd"].to_numpy(float), np.nan) / np.sqrt(n.clip(1))
    p_tost = np.maximum(*_tost_p(mean, se, dof, margin))
    above = _p_greater(mean - margin, se, dof)  # H1: mu > m
    below = _p_greater(-margin - mean, se, dof)  # H1: mu < -m
    low, high = _interval(mean, se, dof, 1.0 - 2.0 * alpha)
    p_out = np.minimum(1.0, 2.0 * np.minimum(above, below))
    return dict(p_tost=p_tost, p_out=p_out, tost_low=low, tost_high=high)


def equivalence_verdicts(
    summary: pd.DataFrame,
    *,
    margin: float,
    alpha: float = 0.05,
    family: Sequence[str] = (),
) -> pd.DataFrame:
    """Verdicts of "A like B within ``margin``" claims (TOST), one per summary row.

    Adds ``p_tost`` (:math:`\\max(p_1, p_2)`), ``p_out`` (outside :math:`\\pm m`),
    their Holm adjustments ``p_tost_holm`` and ``p_out_holm`` (over all rows, or within
    the ``family`` groups as in :func:`directional_verdicts`), the :math:`1-2\\alpha`
    interval ``tost_low``, ``tost_high``, ``verdict`` and ``reason``. "holds" iff
    ``p_tost_holm < alpha``; "does not hold" iff ``p_out_holm < alpha`` (for one
    claim: the whole :math:`1-\\alpha` interval lies outside :math:`\\pm m`).
    """
    _check_margin(margin)
    _check_level("alpha", alpha)
    _require_summary(summary, family)
    out = summary.copy()
    for key, values in _equivalence_columns(summary, margin, alpha).items():
        out[key] = values
    out["p_tost_holm"] = _holm_within(out, "p_tost", family)
    out["p_out_holm"] = _holm_within(out, "p_out", family)
    holds, fails = out["p_tost_holm"] < alpha, out["p_out_holm"] < alpha
    out["verdict"] = np.select([holds, fails], ["holds", "does not hold"], "not shown")
    undecided = ~holds & ~fails & out["p_tost"].notna()
    out.loc[undecided, "reason"] = (
        f"the interval is neither inside nor wholly outside ±{margin:g} at "
        f"Holm-adjusted level {alpha:g}: more seeds are needed"
    )
    return out


def _favourable(row: dict[str, object], higher_is_better: bool) -> bool:
    """Whether a best-minus-other row's interval excludes 0 in the best's favour."""
    if row["n"] < 2:
        return False
    return row["ci_low"] > 0 if higher_is_better else row["ci_high"] < 0


def _rank_group(
    group: pd.DataFrame,
    *,
    metric: str,
    method_col: str,
    seed_col: str,
    higher_is_better: bool,
    confidence: float,
) -> dict[str, object]:
    """:func:`winner_or_tie` for one group: candidate, comparisons, verdict."""
    means = group.groupby(method_col, sort=False)[metric].mean()
    means = means.sort_values(ascending=not higher_is_better, kind="stable")
    best, others = means.index[0], list(means.index[1:])
    tied, reasons, n_min = [best], [], None
    for other in others:
        d = paired_differences(
            group,
            metric=metric,
            method_col=method_col,
            a=best,
            b=other,
            seed_col=seed_col,
        )
        row = _summarise(d["diff"].to_numpy(float), confidence)
        n_min = row["n"] if n_min is None else min(n_min, row["n"])
        if not _favourable(row, higher_is_better):
            tied.append(other)
            reasons.append(f"vs {other}: " + (row["reason"] or "interval includes 0"))
    verdict = "tie" if len(tied) > 1 else str(best)
    if not others:
        verdict, reasons = "not shown", [f"only one method ({best}) in the group"]
    listed = ", ".join(map(str, tied)) if verdict == "tie" else ""
    return dict(
        verdict=verdict,
        best=best,
        tied=listed,
        n_min=n_min or 0,
        reason="; ".join(reasons),
    )


def winner_or_tie(
    df: pd.DataFrame,
    *,
    metric: str,
    method_col: str,
    higher_is_better: bool,
    seed_col: str = "seed",
    by: Sequence[str] = (),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The best method per ``by`` group, or ``"tie"`` with the tied set.

    The candidate is the method with the best mean ``metric``; it is named (``verdict``
    = its name) only when the paired ``confidence`` t-interval of candidate minus other
    excludes 0 in the candidate's favour for *every* other method. Otherwise ``verdict``
    is ``"tie"`` and ``tied`` lists the candidate and every method it does not beat so
    (best mean first). A group with a single method is "not shown". Also returns
    ``best``, ``n_min`` (fewest pairs) and ``reason``.
    """
    _check_level("confidence", confidence)
    _check_columns(df, metric=metric, method_col=method_col, seed_col=seed_col)
    for col in by:
        _check_columns(df, by=col)
    _check_finite(df[metric], f"metric column {metric!r}")
    kwargs = dict(
        metric=metric,
        method_col=method_col,
        seed_col=seed_col,
        higher_is_better=bool(higher_is_better),
        confidence=confidence,
    )
    if not by:
        return pd.DataFrame([_rank_group(df, **kwargs)])
    rows = []
    for key, group in df.groupby(list(by), sort=False, dropna=False):
        names = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        rows.append({**names, **_rank_group(group, **kwargs)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ rule text


def _pct(level: float) -> str:
    """A level as a percentage, ``0.9 -> '90%'``."""
    return f"{100 * level:.10g}%"


def rule_text(
    kind: Literal["directional", "equivalence", "ranking"],
    *,
    alpha: float = 0.05,
    margin: float | None = None,
    unit: str = "",
    n_claims: int | None = None,
) -> str:
    """The sentence a book page prints to state the rule behind its verdicts.

    ``kind`` selects the claim type; ``margin`` (with its ``unit``) is required for
    ``"equivalence"``; ``n_claims`` names the size of the page's Holm family; for
    ``"ranking"`` the interval level is :math:`1-\\alpha`.
    """
    _check_level("alpha", alpha)
    if kind not in ("directional", "equivalence", "ranking"):
        raise ValueError(
            f"kind={kind!r} is not allowed; allowed: 'directional', 'equivalence', "
            "'ranking'; fix: pass the type of claim the page makes"
        )
    page = f"the {n_claims} claims" if n_claims else "the claims"
    holm_ = f"Holm–Bonferroni adjusted over {page} of this page"
    pairs = "per-seed differences A − B (seed s of A against seed s of B)"
    otherwise = "otherwise (including fewer than two paired seeds) it is not shown."
    if kind == "directional":
        return (
            f'A claim "A is better than B" holds when a two-sided paired t-test on the '
            f"{pairs}, {holm_}, gives p < {alpha:g} and the mean difference has the "
            f"claimed sign; it does not hold when p < {alpha:g} with the opposite "
            f"sign; {otherwise}"
        )
    if kind == "equivalence":
        _check_margin(margin)
        m = f"±{margin:g}{' ' + unit if unit else ''}"
        return (
            f'A claim "A is like B" holds when two one-sided t-tests (TOST) on the '
            f"{pairs}, {holm_}, give p < {alpha:g}, i.e. the {_pct(1 - 2 * alpha)} "
            f"t-interval of the mean difference lies inside {m}; it does not hold "
            f"when the whole {_pct(1 - alpha)} interval lies outside {m}; {otherwise}"
        )
    return (
        f"A method is named best only when the {_pct(1 - alpha)} paired t-interval of "
        "its per-seed differences to every other method (paired by seed) excludes 0 "
        "in its favour; otherwise the result is a tie between it and "
        "every method it does not beat."
    )
