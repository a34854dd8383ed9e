"""companion.chapters.thresholds: the λ sweep's configurations, tables and figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from companion.chapters import thresholds as T

SETUP = "MNIST · MLP"


def _runs() -> pd.DataFrame:
    """Two seeds of three λ (scalar scales) and two FP32 runs; numbers by hand."""
    rows = []
    acc = {1e-12: (0.90, 0.92), 1e-9: (0.895, 0.905), 1e-6: (0.80, 0.82)}
    bits = {1e-12: (8.0, 8.0), 1e-9: (4.0, 6.0), 1e-6: (2.0, 2.0)}
    for lam in acc:
        for seed in (0, 1):
            rows.append(
                {
                    "flavour": "nested",
                    "threshold": lam,
                    "seed": seed,
                    "test_accuracy": acc[lam][seed],
                    "mem_bits_per_param": bits[lam][seed],
                }
            )
    for seed, a in ((0, 0.91), (1, 0.91)):
        rows.append(
            {
                "flavour": "fp32",
                "threshold": None,
                "seed": seed,
                "test_accuracy": a,
                "mem_bits_per_param": 32.0,
            }
        )
    df = pd.DataFrame(rows)
    df["train_accuracy"] = df["test_accuracy"] + 0.01
    df["val_accuracy"] = df["test_accuracy"]
    df["mem_compression"] = 32.0 / df["mem_bits_per_param"]
    df["mem_total_bits"] = df["mem_bits_per_param"] * 1000  # 1000 parameters
    df["mem_fp32_bits"] = 32.0 * 1000
    df["mem_kib"] = df["mem_bits_per_param"] * 1000 / 8192
    return df.assign(
        setup=SETUP,
        dataset="mnist",
        arch="mlp",
        lr=1e-3,
        l2=0.0,
        kernel_granularity=np.where(df["flavour"] == "nested", "scalar", None),
    )


def test_threshold_configs_cross_fitting_granularities_thresholds_and_seeds():
    setups = [{"dataset": "mnist", "arch": "mlp"}]
    configs, refs, dyn = T.threshold_configs(
        setups,
        {"flavour": "nested", "epochs": 1},
        granularities=["column", "filter"],
        thresholds=[1e-9, 1e-6],
        seeds=[0, 1],
        dynamics_thresholds=[1e-12, 1e-3],
        dynamics_epochs=5,
    )
    # filter scales need convolutions: only column runs for the MLP, 2 λ x 2 seeds
    assert [(c["kernel_granularity"], c["threshold"], c["seed"]) for c in configs] == [
        ("column", lam, s) for lam in (1e-9, 1e-6) for s in (0, 1)
    ]
    assert [(c["flavour"], c["seed"]) for c in refs] == [("fp32", 0), ("fp32", 1)]
    assert [
        (c["threshold"], c["epochs"], c["seed"], c["kernel_granularity"]) for c in dyn
    ] == [(1e-12, 5, 0, "column"), (1e-3, 5, 0, "column")]


def test_seed_means_and_the_threshold_table_against_hand_numbers():
    agg = T.seed_means(_runs())
    assert list(agg["threshold"]) == [1e-12, 1e-9, 1e-6]  # FP32 rows are not part of it
    row = agg[agg["threshold"] == 1e-9].iloc[0]
    assert row["test_accuracy_mean"] == pytest.approx(0.90)
    assert row["test_accuracy_std"] == pytest.approx(np.std([0.895, 0.905], ddof=1))
    assert row["mem_bits_per_param_mean"] == pytest.approx(5.0)
    md = T.threshold_table_markdown(agg)
    lines = md.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "setup",
        "granularity",
        "λ",
        "test accuracy (%)",
        "bits / parameter",
        "compression (×)",
        "seeds",
    ]
    # 1e-9: accuracy 90.0 ± 0.7 %, bits 5.00 ± 1.41, compression 32 / mean(4, 6) = 6.4
    # (not the mean of the per-seed ratios, 6.67)
    assert "| 1e-9  | 90.0 ± 0.7" in md and "5.00 ± 1.41" in md and " 6.4 |" in md
    assert "6.67" not in md


def test_threshold_best_finds_the_largest_compression_within_the_bar():
    runs = _runs()
    agg = T.seed_means(runs)
    reference = pd.Series({SETUP: 0.91})
    best = T.threshold_best(agg, reference, reference, max_drop=0.01)
    r = best.iloc[0]
    # bar 0.90: 1e-12 (91.0 %, 4x) and 1e-9 (90.0 %, 6.4x) qualify; 1e-6 (81 %) does
    # not
    assert r["within"] and r["threshold"] == 1e-9
    assert r["compression"] == pytest.approx(32 / 5)
    assert (
        r["near_best_thresholds"] == ""
    )  # 1e-12 reaches only 60 % of that compression
    md = T.threshold_best_markdown(best, max_drop=0.01, profile="smoke", seeds=[0, 1])
    assert "| 1e-9" in md and "at least 98 % of that compression" in md
    assert "validation accuracy" in md and "test accuracy" in md
    assert md.endswith("Profile `smoke`, seeds 0, 1.\n")
    best = T.threshold_best(
        agg, pd.Series({SETUP: 0.91}), pd.Series({SETUP: 0.91}), max_drop=0.2
    )
    assert (
        best.iloc[0]["threshold"] == 1e-6 and best.iloc[0]["near_best_thresholds"] == ""
    )


def test_near_best_thresholds_lists_the_range_of_equivalent_lambdas():
    agg = T.seed_means(
        _runs().assign(mem_total_bits=8000.0)
    )  # every λ compresses alike
    best = T.threshold_best(
        agg, pd.Series({SETUP: 0.91}), pd.Series({SETUP: 0.91}), max_drop=0.2
    )
    assert best.iloc[0]["near_best_thresholds"] == "1e-12 … 1e-6"


def test_sweep_figure_has_two_panels_per_setup_with_units():
    runs = _runs()
    fig = T.draw_threshold_sweep(
        T.seed_means(runs), pd.Series({SETUP: 0.91}), [SETUP], max_drop=0.01
    )
    left, right = fig.axes
    assert left.get_ylabel() == "test accuracy (%)"
    assert right.get_ylabel() == "memory\n(bits / parameter)"
    assert left.get_xscale() == "log" and left.get_xlabel() == "threshold λ"
    # one legend under the panels: the granularities, FP32 and the bar below it
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "granularity"
    assert [t.get_text() for t in legend.get_texts()] == [
        "scalar",
        "FP32",
        "FP32 − 1 pt",
    ]
    # one mean line (3 λ) per granularity, plus FP32 and FP32 − 1 pt
    ys = [line.get_ydata() for line in left.get_lines()]
    assert len(ys) == 3
    np.testing.assert_allclose(ys[0], [91.0, 90.0, 81.0])
    assert [line.get_ydata()[0] for line in left.get_lines()[1:]] == pytest.approx(
        [91.0, 90.0]
    )
    plt.close(fig)


def test_kernel_value_means_and_figure():
    stats = pd.DataFrame(
        [
            {
                "setup": SETUP,
                "kernel_granularity": "scalar",
                "threshold": lam,
                "seed": seed,
                "layer": "qdense_1",
                "parameter": p,
                "stat": stat,
                "value": v,
            }
            for lam, base in ((1e-9, 10.0), (1e-6, 4.0))
            for seed in (0, 1)
            for p in ("kernel", "bias")
            for stat, v in (("unique_values", base + seed), ("max_abs_q", 2 * base))
        ]
    )
    kagg = T.kernel_value_means(stats)
    assert list(kagg["layer_granularity"].unique()) == ["qdense_1 · scalar"]
    assert list(kagg["unique_values_mean"]) == [10.5, 4.5]
    assert list(kagg["max_abs_q_mean"]) == [20.0, 8.0]
    fig = T.draw_threshold_values(kagg, [SETUP])
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert fig.axes[1].get_ylabel() == "range $\\max|P_q|$"
    plt.close(fig)


def test_dynamics_tables_and_figure():
    hist = pd.DataFrame(
        [
            {
                "threshold": lam,
                "layer": layer,
                "epoch": e,
                "parameter": "kernel",
                "stat": stat,
                "value": v,
            }
            for lam in (1e-12, 1e-6)
            for layer in ("qdense_1", "qdense_2")
            for e in (0, 1, 2)
            for stat, v in (("scale_mean", 1e-3 * (e + 1)), ("bits_mean", 8.0 - e))
        ]
    )
    histories = [
        pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.6]}) for _ in range(2)
    ]
    kh, acc = T.dynamics_tables(hist, histories, [1e-12, 1e-6])
    assert len(kh) == 2 * 2 * 3 and {"scale_mean", "bits_mean"} <= set(kh.columns)
    assert list(acc["threshold"]) == [1e-12, 1e-12, 1e-6, 1e-6]
    fig = T.draw_threshold_dynamics(kh, acc, "title")
    scale_ax, bits_ax, acc_ax = fig.axes
    assert (
        len(scale_ax.get_lines()) == 4 and len(acc_ax.get_lines()) == 2
    )  # λ x layer; λ
    assert (
        scale_ax.get_yscale() == "log"
        and acc_ax.get_ylabel() == "validation accuracy (%)"
    )
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), [50.0, 60.0])
    assert "2 epochs" in T.dynamics_caption(2)
    plt.close(fig)
