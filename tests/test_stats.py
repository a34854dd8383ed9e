"""companion.chapters.stats: paired t, TOST, Holm and the verdict rule.

References are computed by hand with NumPy: t quantiles are hard-coded, t CDFs use the
closed forms for 2 and 4 degrees of freedom, and the simulations compare rates with
analytic values (noncentral t) or a large Monte Carlo reference, within 4 binomial
standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from companion.chapters import stats

T4_975 = 2.7764451051977987  # t_{4, 0.975}
T4_95 = 2.1318467863266495  # t_{4, 0.95}
T2_975 = 4.302652729749464  # t_{2, 0.975}


def t2_cdf(t: float) -> float:
    """Student t CDF with 2 degrees of freedom (closed form)."""
    return 0.5 + t / (2.0 * math.sqrt(2.0 + t * t))


def t4_cdf(t: float) -> float:
    """Student t CDF with 4 degrees of freedom: 1/2 + sign(t) sqrt(x)(3 - x)/4."""
    x = t * t / (4.0 + t * t)
    return 0.5 + math.copysign(1.0, t) * math.sqrt(x) * (3.0 - x) / 4.0


def tolerance(p: float, n: int) -> float:
    """Four binomial standard deviations of a rate p estimated from n trials."""
    return 4.0 * math.sqrt(p * (1.0 - p) / n)


def table(values: dict[str, list[float]], **extra: object) -> pd.DataFrame:
    """Tidy results: one row per (method, seed), seeds 0, 1, ..."""
    rows = [
        {"method": method, "seed": seed, "acc": value, **extra}
        for method, vals in values.items()
        for seed, value in enumerate(vals)
    ]
    return pd.DataFrame(rows)


A5 = [0.91, 0.93, 0.92, 0.95, 0.90]
B5 = [0.90, 0.90, 0.91, 0.91, 0.89]

# ------------------------------------------------------------------ paired differences


def test_paired_differences_keeps_common_seeds_per_group():
    df = pd.concat(
        [
            table({"A": [1.0, 2.0, 3.0], "B": [0.5, 1.0]}, dataset="x"),
            table({"A": [5.0, 6.0], "B": [1.0, 1.0]}, dataset="y"),
        ]
    )
    d = stats.paired_differences(
        df, metric="acc", method_col="method", a="A", b="B", by=["dataset"]
    )
    assert list(d["dataset"]) == ["x", "x", "y", "y"]
    assert list(d["seed"]) == [0, 1, 0, 1]  # seed 2 of A in x has no partner
    np.testing.assert_array_equal(d["diff"], [0.5, 1.0, 4.0, 5.0])
    np.testing.assert_array_equal(d["diff"], d["value_a"] - d["value_b"])
    assert set(d["a"]) == {"A"} and set(d["b"]) == {"B"} and set(d["metric"]) == {"acc"}


def test_paired_differences_pairs_by_seed_not_by_row_order():
    df = table({"A": [1.0, 2.0, 3.0], "B": [10.0, 20.0, 30.0]})
    df = df.sample(frac=1.0, random_state=0)  # shuffled rows
    d = stats.paired_differences(df, metric="acc", method_col="method", a="A", b="B")
    np.testing.assert_array_equal(d["diff"], [-9.0, -18.0, -27.0])


# ------------------------------------------------------------------ paired t by hand


def test_summary_matches_hand_t_interval_and_p_for_n5():
    df = table({"A": A5, "B": B5})
    s = stats.compare_paired(df, metric="acc", method_col="method", a="A", b="B")
    d = np.subtract(A5, B5)
    mean, sd = d.mean(), d.std(ddof=1)
    se = sd / math.sqrt(5)
    row = s.iloc[0]
    assert row["n"] == 5
    np.testing.assert_allclose([row["mean"], row["sd"], row["se"]], [mean, sd, se])
    np.testing.assert_allclose(
        [row["ci_low"], row["ci_high"]],
        [mean - T4_975 * se, mean + T4_975 * se],
        rtol=1e-12,
    )
    t = mean / se
    np.testing.assert_allclose(row["t"], t)
    np.testing.assert_allclose(row["p_value"], 2.0 * (1.0 - t4_cdf(abs(t))), rtol=1e-9)
    assert row["reason"] == ""


def test_summary_matches_hand_values_for_n3_and_other_confidence():
    df = table({"A": [3.0, 5.0, 4.0], "B": [1.0, 4.0, 1.0]})  # d = 2, 1, 3
    s = stats.compare_paired(df, metric="acc", method_col="method", a="A", b="B")
    row = s.iloc[0]
    se = 1.0 / math.sqrt(3)  # mean 2, sd 1
    np.testing.assert_allclose(
        [row["ci_low"], row["ci_high"]], [2 - T2_975 * se, 2 + T2_975 * se]
    )
    t = 2.0 / se
    np.testing.assert_allclose(row["p_value"], 2.0 * (1.0 - t2_cdf(t)), rtol=1e-9)
    # 90% interval for n = 5 uses t_{4, 0.95}
    s90 = stats.compare_paired(
        table({"A": A5, "B": B5}),
        metric="acc",
        method_col="method",
        a="A",
        b="B",
        confidence=0.90,
    )
    d = np.subtract(A5, B5)
    half = T4_95 * d.std(ddof=1) / math.sqrt(5)
    np.testing.assert_allclose(s90.loc[0, "ci_high"] - s90.loc[0, "mean"], half)


def test_summary_agrees_with_scipy_ttest_rel():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1.0, 8), rng.normal(0.0, 1.0, 8)
    s = stats.compare_paired(
        table({"A": a, "B": b}), metric="acc", method_col="method", a="A", b="B"
    )
    ref = scipy_stats.ttest_rel(a, b)
    np.testing.assert_allclose(
        [s.loc[0, "t"], s.loc[0, "p_value"]], [ref.statistic, ref.pvalue]
    )


def test_fewer_than_two_pairs_give_nan_and_not_shown():
    df = pd.concat(
        [
            table({"A": A5, "B": B5}, dataset="full"),
            table({"A": [0.9], "B": [0.8]}, dataset="one"),
            table({"A": [0.9, 0.9]}, dataset="none"),  # B never ran here
            table({"B": [0.9, 0.8]}, dataset="b only"),
        ]
    )
    s = stats.compare_paired(
        df, metric="acc", method_col="method", a="A", b="B", by=["dataset"]
    )
    s = s.set_index("dataset")
    assert (
        s.loc["one", "n"] == 1 and s.loc["none", "n"] == 0 and s.loc["b only", "n"] == 0
    )
    for name in ("one", "none", "b only"):
        assert math.isnan(s.loc[name, "ci_low"]) and math.isnan(s.loc[name, "p_value"])
        assert "need >= 2" in s.loc[name, "reason"]
    v = stats.directional_verdicts(s.reset_index(), expected="greater").set_index(
        "dataset"
    )
    assert v.loc["full", "verdict"] == "holds"
    assert list(v.loc[["one", "none", "b only"], "verdict"]) == ["not shown"] * 3
    # untested claims do not enlarge the Holm family
    assert v.loc["full", "p_holm"] == pytest.approx(v.loc["full", "p_value"])


def test_zero_spread_gives_a_point_interval_and_exact_decision():
    df = table({"A": [4.0, 4.0, 4.0], "B": [3.0, 3.0, 3.0], "C": [4.0, 4.0, 4.0]})
    s = stats.compare_paired(df, metric="acc", method_col="method", a="A", b="B")
    assert (s.loc[0, "ci_low"], s.loc[0, "ci_high"], s.loc[0, "p_value"]) == (
        1.0,
        1.0,
        0.0,
    )
    assert "zero spread" in s.loc[0, "reason"]
    same = stats.compare_paired(df, metric="acc", method_col="method", a="A", b="C")
    assert same.loc[0, "p_value"] == 1.0
    w = stats.winner_or_tie(
        df, metric="acc", method_col="method", higher_is_better=True
    )
    assert w.loc[0, "verdict"] == "tie" and w.loc[0, "tied"] == "A, C"


# ----------------------------------------------------------------------------- TOST


def test_tost_matches_hand_computation():
    d = np.array([0.2, -0.1, 0.4, 0.0, 0.1])
    margin = 0.5
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(5)
    r = stats.tost(d, margin)
    np.testing.assert_allclose(
        [r.ci_low, r.ci_high], [mean - T4_95 * se, mean + T4_95 * se]
    )
    p1 = 1.0 - t4_cdf((mean + margin) / se)
    p2 = t4_cdf((mean - margin) / se)
    np.testing.assert_allclose(
        [r.p_lower, r.p_upper, r.p_value], [p1, p2, max(p1, p2)], rtol=1e-9
    )
    assert r.equivalent == (max(p1, p2) < 0.05)
    assert r.equivalent == (-margin < r.ci_low and r.ci_high < margin)
    assert stats.tost(d, 0.2).equivalent is False  # mean + t se = 0.33 > 0.2


def test_tost_decision_equals_interval_inside_margin():
    rng = np.random.default_rng(5)
    for _ in range(200):
        d = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1.0), rng.integers(2, 10))
        m, alpha = rng.uniform(0.1, 1.5), rng.choice([0.01, 0.05, 0.1])
        r = stats.tost(d, m, alpha=alpha)
        assert r.equivalent == (-m < r.ci_low and r.ci_high < m)


# ----------------------------------------------------------------------------- Holm


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.5, 0.6], [1.0, 1.0]),  # 2 * 0.5 = 1, then monotone
        ([0.04], [0.04]),  # one claim: unchanged
        ([0.01, 0.01, 0.5], [0.03, 0.03, 0.5]),  # ties
        ([0.02, np.nan, 0.03], [0.04, np.nan, 0.04]),  # NaN: untested, k = 2
        ([], []),
    ],
)
def test_holm_hand_examples(p, expected):
    np.testing.assert_allclose(stats.holm(p), expected)


def test_holm_is_monotone_capped_and_never_below_raw():
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 0.3, 50)
    adj = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    assert np.all(adj <= np.minimum(1.0, 50 * p))  # never worse than Bonferroni


# ------------------------------------------------------------------------- verdicts


def summary_rows(rows: list[tuple[int, float, float]]) -> pd.DataFrame:
    """A paired_summary-like table from (n, mean, sd) rows."""
    df = pd.DataFrame(rows, columns=["n", "mean", "sd"])
    se = df["sd"] / np.sqrt(df["n"])
    t = df["mean"] / se
    df["p_value"] = [
        2 * (1 - t4_cdf(abs(x))) if n == 5 else np.nan for x, n in zip(t, df["n"])
    ]
    df["reason"] = ""
    return df


def test_directional_verdicts_follow_holm_and_sign():
    # t = 10, 10, 1 (n = 5): p = 5.7e-4, 5.7e-4, 0.37; n = 1 untested
    s = summary_rows(
        [
            (5, 1.0, 0.2236068),
            (5, -1.0, 0.2236068),
            (5, 0.1, 0.2236068),
            (1, 1.0, np.nan),
        ]
    )
    v = stats.directional_verdicts(s, expected="greater", alpha=0.05)
    raw = s["p_value"].to_numpy()[:3]
    # Holm: 3 p, max(3 p, 2 p) = 3 p (monotone), max(3 p, 1 * 0.37)
    np.testing.assert_allclose(
        v["p_holm"][:3], [3 * raw[0], 3 * raw[0], raw[2]], rtol=1e-9
    )
    assert list(v["verdict"]) == ["holds", "does not hold", "not shown", "not shown"]
    assert "seed noise" in v.loc[2, "reason"]
    flipped = stats.directional_verdicts(s, expected="less")
    assert list(flipped["verdict"][:2]) == ["does not hold", "holds"]


def test_holm_can_turn_a_single_pass_into_not_shown():
    # t = 2.9 (n = 5): p = 0.044 holds alone; two such claims are adjusted to 0.088
    s = summary_rows([(5, 0.29, 0.1 * math.sqrt(5))] * 2)
    assert (s["p_value"] < 0.05).all()
    assert list(
        stats.directional_verdicts(s.iloc[:1], expected="greater")["verdict"]
    ) == ["holds"]
    assert set(stats.directional_verdicts(s, expected="greater")["verdict"]) == {
        "not shown"
    }
    # two pages, one claim each: separate Holm families
    pages = stats.directional_verdicts(
        s.assign(page=[1, 2]), expected="greater", family=["page"]
    )
    assert set(pages["verdict"]) == {"holds"}


def test_equivalence_verdicts_hand_cases():
    # sd sqrt(5) -> se 1 for n = 5
    sd = math.sqrt(5)
    s = summary_rows([(5, 0.0, sd), (5, 12.0, sd), (5, 3.0, sd), (1, 0.0, np.nan)])
    v = stats.equivalence_verdicts(s, margin=5.0)
    # row 0: 90% interval (-2.13, 2.13) inside +-5; row 1: 95% interval (9.2, 14.8)
    # outside; row 2: (0.87, 5.13) sticks out of +5, and (0.22, 5.78) overlaps it
    assert list(v["verdict"]) == ["holds", "does not hold", "not shown", "not shown"]
    np.testing.assert_allclose(
        v.loc[0, ["tost_low", "tost_high"]].to_numpy(float), [-T4_95, T4_95]
    )
    p_tost = [1 - t4_cdf(5.0), 1 - t4_cdf(2.0)]  # rows 0 and 2: max(p1, p2)
    np.testing.assert_allclose(v.loc[[0, 2], "p_tost"], p_tost, rtol=1e-9)
    np.testing.assert_allclose(v.loc[1, "p_out"], 2 * (1 - t4_cdf(7.0)), rtol=1e-9)
    assert "more seeds" in v.loc[2, "reason"] and v.loc[0, "reason"] == ""


def test_winner_or_tie():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.01, 5)  # shared per seed: pairing removes it
    df = pd.concat(
        [
            table(
                {
                    "A": 3.0 + noise,
                    "B": 2.0 + noise + rng.normal(0, 0.01, 5),
                    "C": 1.0 + noise,
                },
                dataset="x",
            ),
            table(
                {
                    "A": 3.0 + rng.normal(0, 1, 5),
                    "B": 2.9 + rng.normal(0, 1, 5),
                    "C": 1.0 + noise,
                },
                dataset="y",
            ),
            table({"A": [1.0, 2.0]}, dataset="z"),
        ]
    )
    w = stats.winner_or_tie(
        df, metric="acc", method_col="method", higher_is_better=True, by=["dataset"]
    )
    w = w.set_index("dataset")
    assert w.loc["x", "verdict"] == "A" and w.loc["x", "tied"] == ""
    assert w.loc["y", "verdict"] == "tie" and w.loc["y", "tied"].startswith(
        w.loc["y", "best"]
    )
    assert (
        "C" not in w.loc["y", "tied"] and "interval includes 0" in w.loc["y", "reason"]
    )
    assert w.loc["z", "verdict"] == "not shown"
    low = stats.winner_or_tie(
        df[df["dataset"] == "x"],
        metric="acc",
        method_col="method",
        higher_is_better=False,
    )
    assert low.loc[0, "verdict"] == "C"


def test_rule_text_states_the_rule():
    text = stats.rule_text("directional", alpha=0.05, n_claims=3)
    assert "Holm–Bonferroni" in text and "p < 0.05" in text and "3 claims" in text
    eq = stats.rule_text("equivalence", alpha=0.05, margin=1, unit="point")
    assert "90% t-interval" in eq and "95% interval" in eq and "±1 point" in eq
    assert "95% paired t-interval" in stats.rule_text("ranking")
    assert "98% paired" in stats.rule_text("ranking", alpha=0.02)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (
            lambda df: stats.paired_differences(
                df, metric="loss", method_col="method", a="A", b="B"
            ),
            ["metric='loss'", "allowed", "fix"],
        ),
        (
            lambda df: stats.paired_differences(
                df, metric="acc", method_col="method", a="A", b="B", by=["arch"]
            ),
            ["by='arch'", "fix"],
        ),
        (
            lambda df: stats.paired_differences(
                df, metric="acc", method_col="method", a="A", b="Z"
            ),
            ["b='Z'", "'A', 'B'", "fix"],
        ),
        (
            lambda df: stats.paired_differences(
                df, metric="acc", method_col="method", a="A", b="A"
            ),
            ["a='A'", "fix"],
        ),
        (
            lambda df: stats.compare_paired(
                df, metric="acc", method_col="method", a="A", b="B", confidence=95
            ),
            ["confidence=95", "between 0 and 1", "fix"],
        ),
        (
            lambda df: stats.directional_verdicts(
                stats.compare_paired(
                    df, metric="acc", method_col="method", a="A", b="B"
                ),
                expected="greater",
                alpha=0.0,
            ),
            ["alpha=0.0", "fix"],
        ),
        (
            lambda df: stats.directional_verdicts(
                stats.compare_paired(
                    df, metric="acc", method_col="method", a="A", b="B"
                ),
                expected="up",
            ),
            ["expected='up'", "'greater'", "fix"],
        ),
        (
            lambda df: stats.equivalence_verdicts(
                stats.compare_paired(
                    df, metric="acc", method_col="method", a="A", b="B"
                ),
                margin=0,
            ),
            ["margin=0", "> 0", "fix"],
        ),
        (lambda df: stats.tost([0.1, 0.2], -1.0), ["margin=-1.0", "fix"]),
        (lambda df: stats.tost([0.1, 0.2], 1.0, alpha=True), ["alpha=True", "fix"]),
        (lambda df: stats.tost([0.1], 1.0), ["1 value", "at least 2", "fix"]),
        (lambda df: stats.tost([0.1, float("nan")], 1.0), ["NaN", "fix"]),
        (lambda df: stats.holm([0.2, 1.5]), ["1.5", "[0, 1]", "fix"]),
        (lambda df: stats.rule_text("better"), ["kind='better'", "'ranking'", "fix"]),
        (lambda df: stats.rule_text("equivalence"), ["margin=None", "fix"]),
        (
            lambda df: stats.winner_or_tie(
                df, metric="acc", method_col="algo", higher_is_better=True
            ),
            ["method_col='algo'", "fix"],
        ),
    ],
)
def test_bad_input_raises_naming_value_allowed_and_fix(call, words):
    with pytest.raises(ValueError) as err:
        call(table({"A": A5, "B": B5}))
    for word in words:
        assert word in str(err.value)


def test_nan_and_duplicate_rows_are_rejected():
    df = table({"A": A5, "B": B5})
    bad = df.copy()
    bad.loc[3, "acc"] = np.nan
    with pytest.raises(ValueError, match=r"metric column 'acc' has 1 NaN/inf.*fix"):
        stats.paired_differences(bad, metric="acc", method_col="method", a="A", b="B")
    twice = pd.concat([df, df.iloc[:1]])
    with pytest.raises(ValueError, match=r"rows share \['method', 'seed'\].*fix"):
        stats.paired_differences(twice, metric="acc", method_col="method", a="A", b="B")
    text = df.assign(acc=df["acc"].astype(str))
    with pytest.raises(ValueError, match=r"dtype .*allowed: numbers"):
        stats.paired_differences(text, metric="acc", method_col="method", a="A", b="B")


# ---------------------------------------------------------------------- simulations

N_SIM, N_SEEDS = 2000, 5


def simulated_summary(delta: float, seed: int) -> pd.DataFrame:
    """:func:`stats.compare_paired` of N_SIM experiments with N_SEEDS seeds each.

    Per experiment and seed: B ~ N(0, 1) and A = B + D with D ~ N(delta, 1), so the
    paired difference has sd 1 and ``delta`` is the effect in its standard deviations.
    """
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.0, (N_SIM, N_SEEDS))
    a = b + rng.normal(delta, 1.0, (N_SIM, N_SEEDS))
    exp, seed_ = np.divmod(np.arange(N_SIM * N_SEEDS), N_SEEDS)
    df = pd.concat(
        [
            pd.DataFrame(
                {"experiment": exp, "seed": seed_, "method": m, "acc": v.ravel()}
            )
            for m, v in (("A", a), ("B", b))
        ]
    )
    s = stats.compare_paired(
        df, metric="acc", method_col="method", a="A", b="B", by=["experiment"]
    )
    assert len(s) == N_SIM and (s["n"] == N_SEEDS).all()
    return s


def rates(verdicts: pd.DataFrame) -> pd.Series:
    """Share of each verdict over the simulated experiments."""
    return verdicts["verdict"].value_counts(normalize=True)


def test_directional_rule_has_level_alpha_without_a_true_difference():
    s = simulated_summary(0.0, seed=20)
    v = stats.directional_verdicts(s, expected="greater", family=["experiment"])
    np.testing.assert_array_equal(v["p_holm"], v["p_value"])  # one claim per family
    share = rates(v)
    # two-sided test at 0.05: "holds" (right sign) and "does not hold" each ~ 0.025
    for verdict in ("holds", "does not hold"):
        assert abs(share.get(verdict, 0.0) - 0.025) < tolerance(0.025, N_SIM)
    assert abs(share["not shown"] - 0.95) < tolerance(0.05, N_SIM)


def test_directional_rule_has_power_for_two_sd_with_five_seeds():
    # analytic power: P(T'_{4, ncp = 2 sqrt 5} > t_{4, 0.975}) = 0.90888 (noncentral t)
    power = 0.9088848642110241
    s = simulated_summary(2.0, seed=21)
    share = rates(
        stats.directional_verdicts(s, expected="greater", family=["experiment"])
    )
    assert abs(share["holds"] - power) < tolerance(power, N_SIM)
    assert share["holds"] > 0.8 and share.get("does not hold", 0.0) == 0.0


def tost_rates(delta: float, margin: float, seed: int) -> pd.Series:
    """Verdict shares of "A like B within margin" over N_SIM experiments."""
    s = simulated_summary(delta, seed)
    v = stats.equivalence_verdicts(s, margin=margin, family=["experiment"])
    np.testing.assert_array_equal(v["p_tost_holm"], v["p_tost"])  # one claim each
    return rates(v)


def test_tost_says_equivalent_often_without_a_difference_and_a_large_margin():
    # margin 2 sd, no difference: reference 0.9503 (400 000 Monte Carlo experiments)
    share = tost_rates(0.0, 2.0, seed=30)
    assert (
        abs(share["holds"] - 0.9503) < tolerance(0.95, N_SIM) and share["holds"] > 0.9
    )
    assert share.get("does not hold", 0.0) == 0.0


def test_tost_almost_never_says_equivalent_for_a_difference_of_twice_the_margin():
    # margin 1 sd, difference 2 sd: "holds" 0.00017, "does not hold" 0.403 (400 000
    # Monte Carlo experiments)
    share = tost_rates(2.0, 1.0, seed=31)
    assert share.get("holds", 0.0) < 0.005
    assert abs(share["does not hold"] - 0.403) < tolerance(0.403, N_SIM)


def test_tost_has_at_most_level_alpha_at_the_margin():
    # difference exactly at the margin, the hardest null: reference 0.046
    assert tost_rates(1.0, 1.0, seed=32).get("holds", 0.0) < 0.05 + tolerance(
        0.05, N_SIM
    )


def test_tost_function_agrees_with_the_table_path():
    rng = np.random.default_rng(33)
    d = rng.normal(rng.uniform(-1, 1, (200, 1)), 0.5, (200, N_SEEDS))
    direct = [stats.tost(row, 0.6) for row in d]
    zeros = np.zeros(N_SEEDS)
    df = pd.concat(
        [table({"A": row, "B": zeros}).assign(experiment=i) for i, row in enumerate(d)]
    )
    s = stats.compare_paired(
        df, metric="acc", method_col="method", a="A", b="B", by=["experiment"]
    )
    v = stats.equivalence_verdicts(s, margin=0.6, family=["experiment"])
    np.testing.assert_allclose(v["p_tost"], [r.p_value for r in direct], rtol=1e-9)
    np.testing.assert_allclose(v["tost_low"], [r.ci_low for r in direct], rtol=1e-9)
    holds = [r.equivalent for r in direct]
    assert 20 < sum(holds) < 180  # both outcomes occur
    assert list(v["verdict"] == "holds") == holds
