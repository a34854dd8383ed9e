"""companion.chapters.paired: the accuracy bar with its uncertainty, ranking, λ ties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from companion.chapters import analysis
from companion.chapters import comparison as C
from companion.chapters import paired as P

SETUP = "MNIST · MLP"
SEEDS = [0, 1, 2, 3, 4]
N = 1000  # parameters
T4 = 2.7764451051977987  # t quantile, 4 degrees of freedom, 0.975


def _runs(acc: dict, bits: dict) -> pd.DataFrame:
    """Runs of five seeds: ``acc``/``bits`` map a method key to five per-seed values."""
    kinds = {
        "fp32": dict(flavour="fp32", bits=None, threshold=None),
        "ptq8": dict(flavour="ptq", bits=8, threshold=None),
        "ptq4": dict(flavour="ptq", bits=4, threshold=None),
        "nest9": dict(flavour="nested", bits=None, threshold=1e-9),
        "nest8": dict(flavour="nested", bits=None, threshold=1e-8),
    }
    rows = [
        {
            **kinds[k],
            "seed": s,
            "test_accuracy": acc[k][i],
            "val_accuracy": acc[k][i],
            "mem_total_bits": bits[k][i],
        }
        for k in acc
        for i, s in enumerate(SEEDS)
    ]
    df = pd.DataFrame(rows).assign(
        dataset="mnist",
        dataset_label="MNIST",
        arch="mlp",
        lr=1e-3,
        kernel_granularity="scalar",
        setup=SETUP,
    )
    df.loc[df["flavour"] == "fp32", "kernel_granularity"] = None
    df["mem_fp32_bits"] = 32.0 * N
    df["mem_bits_per_param"] = df["mem_total_bits"] / N
    df["mem_bits_per_param_twos"] = df["mem_bits_per_param"]
    df["mem_compression"] = 32.0 * N / df["mem_total_bits"]
    return C.label_runs(df)


ACC = {
    "fp32": [0.90, 0.91, 0.92, 0.90, 0.91],
    "ptq8": [0.899, 0.909, 0.919, 0.899, 0.909],  # 0.1 pt below, every seed
    "ptq4": [0.89, 0.91, 0.91, 0.88, 0.92],  # within on average (-0.6 pt), noisy
    "nest9": [0.90, 0.91, 0.92, 0.90, 0.91],
    "nest8": [0.90, 0.91, 0.92, 0.90, 0.91],
}
#: PTQ 4-bit 0.2 points below FP32 on every seed: it meets the bar with certainty and is ranked
ACC_RANKED = {**ACC, "ptq4": [a - 0.002 for a in ACC["fp32"]]}
BITS = {
    "fp32": [32000] * 5,
    "ptq8": [9000] * 5,
    "ptq4": [5000, 5100, 4900, 5050, 4950],
    "nest9": [5000, 5200, 4800, 5100, 4900],  # ties with ptq4 and with λ 1e-8
    "nest8": [4950, 5150, 4850, 5000, 5050],
}


def _best(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    every = C.all_runs(runs, pd.DataFrame())
    agg = C.seed_means(runs, pd.DataFrame())
    ref = analysis.reference_accuracy(runs, by="setup")
    sel = analysis.reference_accuracy(runs, by="setup", accuracy="val_accuracy")
    best = C.best_table(agg, ref, sel, max_drop=0.01)
    return every, P.accuracy_bar(every, best, max_drop=0.01), agg


def test_accuracy_bar_is_the_paired_t_interval_by_hand():
    every, best, _ = _best(_runs(ACC, BITS))
    row = best.set_index(best["method"].astype(str)).loc["PTQ min-max per-tensor"]
    assert row["bits"] == 4  # the 4-bit grid is within one point on the mean
    d = np.array(ACC["ptq4"]) - np.array(ACC["fp32"])  # paired by seed
    half = T4 * d.std(ddof=1) / np.sqrt(5)
    assert row["acc_diff"] == pytest.approx(d.mean())
    assert row["acc_diff_low"] == pytest.approx(d.mean() - half)
    assert row["acc_diff_high"] == pytest.approx(d.mean() + half)
    assert row["n_pairs"] == 5
    # mean -0.6 pt, interval about [-2.0, +0.8]: "within noise", not "within"
    assert d.mean() - half < -0.01 < d.mean() + half
    assert row["bar"] == "within noise"


def test_accuracy_bar_verdicts_within_and_below():
    acc = {**ACC, "ptq4": [a - 0.03 for a in ACC["fp32"]]}  # 3 points below, every seed
    runs = _runs(acc, BITS)
    every = C.all_runs(runs, pd.DataFrame())
    agg = C.seed_means(runs, pd.DataFrame())
    ptq8 = agg[(agg["flavour"] == "ptq") & (agg["bits"] == 8)].iloc[0]
    ptq4 = agg[(agg["flavour"] == "ptq") & (agg["bits"] == 4)].iloc[0]
    rows = pd.DataFrame(
        [
            {**ptq8.to_dict(), "within": True},
            {**ptq4.to_dict(), "within": True},
        ]
    )
    bar = P.accuracy_bar(every, rows, max_drop=0.01)["bar"].tolist()
    assert bar == ["within", "below"]  # 0.1 pt below exactly; 3 pt below exactly


def test_ranking_names_a_winner_only_when_every_paired_interval_excludes_zero():
    every, best, _ = _best(_runs(ACC_RANKED, BITS))
    rank = P.compression_ranking(every, best).iloc[0]
    # nested λ 1e-8 (mean 5000 bits) vs PTQ 4-bit (5000): the per-seed differences
    # [-50, 50, -50, -50, 100] have an interval around 0 -> tie; vs PTQ 8-bit: wins
    assert rank["verdict"] == "tie"
    assert set(rank["tied"].split(", ")) == {"nested", "PTQ min-max per-tensor"}
    clear = {**BITS, "nest8": [b - 1000 for b in BITS["nest8"]]}
    every, best, _ = _best(_runs(ACC_RANKED, clear))
    assert P.compression_ranking(every, best).iloc[0]["verdict"] == "nested"
    # with the noisy PTQ 4-bit ("within noise") only nested is ranked: nothing to compare
    every, best, _ = _best(_runs(ACC, BITS))
    assert P.compression_ranking(every, best).iloc[0]["verdict"] == "not shown"


def test_threshold_ties_and_the_headline_name_no_single_lambda_in_a_tie():
    runs = _runs(ACC_RANKED, BITS)
    every, best, agg = _best(runs)
    sel = analysis.reference_accuracy(runs, by="setup", accuracy="val_accuracy")
    ties = P.threshold_ties(every, agg, sel, max_drop=0.01).iloc[0]
    assert ties["verdict"] == "tie"
    assert set(ties["tied"].split(", ")) == {"λ 1e-8 (scalar)", "λ 1e-9 (scalar)"}
    ranking = P.compression_ranking(every, best)
    head = C.headline_table(best, ranking, P.threshold_ties(every, agg, sel,
                            max_drop=0.01), [SETUP], max_drop=0.01).iloc[0]  # fmt: skip
    assert head["nested: λ"].startswith("tie: ")
    assert head["most compression"].startswith("tie: ")
    apart = {**BITS, "nest8": [b - 1000 for b in BITS["nest8"]]}
    runs = _runs(ACC_RANKED, apart)
    every, best, agg = _best(runs)
    ties = P.threshold_ties(every, agg, sel, max_drop=0.01).iloc[0]
    assert ties["verdict"] == "λ 1e-8 (scalar)"
    claim = C.headline_claim(P.compression_ranking(every, best), best)
    assert claim == f"{SETUP}: nested (8.00×) compresses most."
