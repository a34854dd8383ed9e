"""companion.chapters.comparison: the baselines notebook's plans, tables, figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from companion.chapters import analysis
from companion.chapters import comparison as C
from companion.chapters import paired as P

SETUP = "MNIST · MLP"
N_PARAMS = 8192  # 1 bit per parameter = 1 KiB


def _runs() -> pd.DataFrame:
    rows = [
        {
            "flavour": "fp32",
            "kernel_granularity": None,
            "bits": None,
            "threshold": None,
            "test_accuracy": 0.90,
            "mem_bits_per_param": 32.0,
        },
        {
            "flavour": "ptq",
            "kernel_granularity": "scalar",
            "bits": 8,
            "threshold": None,
            "test_accuracy": 0.899,
            "mem_bits_per_param": 8.0,
        },
        {
            "flavour": "ptq",
            "kernel_granularity": "scalar",
            "bits": 4,
            "threshold": None,
            "test_accuracy": 0.70,
            "mem_bits_per_param": 4.0,
        },
        {
            "flavour": "nested",
            "kernel_granularity": "scalar",
            "bits": None,
            "threshold": 1e-9,
            "test_accuracy": 0.895,
            "mem_bits_per_param": 5.0,
        },
        {
            "flavour": "nested",
            "kernel_granularity": "scalar",
            "bits": None,
            "threshold": 1e-6,
            "test_accuracy": 0.60,
            "mem_bits_per_param": 2.0,
        },
    ]
    df = pd.DataFrame(rows).assign(
        dataset="mnist",
        dataset_label="MNIST",
        arch="mlp",
        seed=0,
        lr=1e-3,
        epochs=1,
        batch_size=32,
        train_limit=100,
        test_limit=50,
        mem_n_params=N_PARAMS,
    )
    df["train_accuracy"] = df["test_accuracy"]
    df["val_accuracy"] = df["test_accuracy"]
    # two's complement: a symmetric b-bit grid measured b + 1 sign-magnitude bits
    df["mem_bits_per_param_twos"] = np.where(
        df["flavour"] == "fp32", 32.0, df["mem_bits_per_param"] - 1
    )
    df["mem_compression"] = 32.0 / df["mem_bits_per_param"]
    df["mem_total_bits"] = df["mem_bits_per_param"] * N_PARAMS
    df["mem_fp32_bits"] = 32.0 * N_PARAMS
    df["mem_kib"] = df["mem_bits_per_param"] * N_PARAMS / 8192
    return C.label_runs(df)


def test_plans_build_every_method_with_its_granularity():
    plans, bases = C.baseline_plans(
        [{"dataset": "mnist", "arch": "mlp"}],
        {"epochs": 1},
        seeds=[0],
        lr=1e-3,
        ptq_bits=[8, 4],
        ptq_granularities=["per_tensor", "per_channel"],
        fixed_bits=[4],
        lsq_bits=[4, 2],
        qat_granularities=["per_tensor"],
        qat_mode="from_scratch",
        nested_thresholds=[1e-9, 1e-6],
        nested_granularities=["scalar", "filter"],
        nested_mode="from_scratch",
    )
    assert {k: len(v) for k, v in plans.items()} == {
        "FP32": 1,
        "PTQ": 4,
        "fixed-bit STE": 1,
        "LSQ": 2,
        "nested": 2,
    }
    assert {c["kernel_granularity"] for c in plans["PTQ"]} == {"scalar", "column"}
    assert bases[0]["pretrain_epochs"] == 1
    assert {c["mode"] for c in plans["LSQ"]} == {"from_scratch"}


def test_lsq_also_from_the_trained_fp32_network_with_its_own_label_and_style():
    plans, _ = C.baseline_plans(
        [{"dataset": "mnist", "arch": "mlp"}],
        {"epochs": 1},
        seeds=[0],
        lr=1e-3,
        ptq_bits=[],
        ptq_granularities=[],
        fixed_bits=[4],
        lsq_bits=[4],
        qat_granularities=["per_tensor"],
        qat_mode="from_scratch",
        nested_thresholds=[],
        nested_granularities=["scalar"],
        nested_mode="from_scratch",
        lsq_modes=["from_scratch", "post_training"],
    )
    lsq = plans["LSQ"]
    assert [c["mode"] for c in lsq] == ["from_scratch", "post_training"]
    assert lsq[1]["pretrain_epochs"] == 1 and lsq[1]["pretrain_lr"] == 1e-3
    assert [c["mode"] for c in plans["fixed-bit STE"]] == ["from_scratch"]
    labels = [analysis.method_label(c) for c in lsq]
    assert labels == ["LSQ per-tensor", "LSQ per-tensor from FP32"]
    assert all(label in analysis.METHOD_ORDER for label in labels)
    scratch, tuned = (analysis.method_style(label) for label in labels)
    assert scratch["color"] == tuned["color"] and scratch["ls"] == "-"
    assert tuned["ls"] == ":" and tuned["mfc"] == "white"
    assert analysis.method_style("LSQ per-channel from FP32")["ls"] == "-."
    with pytest.raises(ValueError, match="nested_granularities.*'colum'"):
        C.baseline_plans(
            [],
            {},
            seeds=[0],
            lr=1e-3,
            ptq_bits=[],
            ptq_granularities=[],
            fixed_bits=[],
            lsq_bits=[],
            qat_granularities=[],
            qat_mode="from_scratch",
            nested_thresholds=[],
            nested_granularities=["colum"],
            nested_mode="from_scratch",
        )


def test_label_runs_names_method_and_setup():
    runs = _runs()
    assert list(runs["method"]) == [
        "FP32",
        "PTQ min-max per-tensor",
        "PTQ min-max per-tensor",
        "nested",
        "nested",
    ]
    assert set(runs["setup"]) == {SETUP}


def test_overlay_reads_only_matching_loss_term_runs(tmp_path):
    """Regression: the overlay matched dataset/arch/limits/epochs/batch only, so loss-term
    runs at another lr, L2, optimizer or mode (with its pretraining) were overlaid too."""
    from companion.engine.config import validate_config

    base = {
        "dataset": "mnist",
        "arch": "mlp",
        "train_limit": 100,
        "test_limit": 50,
        "epochs": 1,
        "batch_size": 32,
        "lr": 1e-3,
    }
    same = validate_config({**base, "flavour": "loss_terms", "rate_inverse": 1e-9})
    extra = {"seed": 0, "test_accuracy": 0.9, "mem_bits_per_param": 6.0,
             "dataset_label": "MNIST"}  # fmt: skip
    rows = [
        {**same, **extra, "config_hash": "a"},
        {**same, **extra, "config_hash": "b", "flavour": "fp32"},
    ]
    other_budgets = {
        "c": {"epochs": 5},
        "d": {"lr": 1e-4},
        "e": {"l2": 1e-3},
        "f": {"optimizer": "sgd"},
        "g": {"mode": "post_training", "pretrain_epochs": 1, "pretrain_lr": 1e-3},
        "h": {"train_limit": 200},
    }
    rows += [{**same, **extra, **d, "config_hash": h} for h, d in other_budgets.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    runs, note = C.loss_term_overlay([base], tmp_path, enabled=True, folder_name="lt")
    assert list(runs["config_hash"]) == ["a"] and list(runs["method"]) == ["loss terms"]
    assert note == "1 loss-term runs from `lt` overlaid."
    post = C.loss_term_overlay(
        [{**base, "pretrain_epochs": 1, "pretrain_lr": 1e-3}],
        tmp_path,
        enabled=True,
        folder_name="lt",
        mode="post_training",
    )[0]
    assert list(post["config_hash"]) == ["g"]
    runs, note = C.loss_term_overlay(
        [base], tmp_path / "absent", enabled=True, folder_name="lt"
    )
    assert runs.empty and note.startswith("No loss-term runs on the same data")
    assert "lr" in note and "pretrain_epochs" in note
    runs, note = C.loss_term_overlay([base], tmp_path, enabled=False, folder_name="lt")
    assert runs.empty and "switched off" in note


def test_best_table_snippets_and_headline_against_hand_numbers():
    runs = _runs()
    agg = C.seed_means(runs, pd.DataFrame())
    reference = pd.Series({SETUP: 0.90})
    best = C.best_table(agg, reference, reference, max_drop=0.01)
    assert list(best["method"].astype(str)) == ["nested", "PTQ min-max per-tensor"]
    nested, ptq = best.iloc[0], best.iloc[1]
    assert nested["within"] and nested["compression"] == pytest.approx(6.4)  # 32 / 5
    assert ptq["within"] and ptq["compression"] == pytest.approx(
        4.0
    )  # 8 bits; 4 bits fail
    assert C.achieved_by(nested) == "λ 1e-9, scalar"
    assert C.achieved_by(ptq) == "8-bit grid"
    rates = {
        "within": True,
        "method": "loss terms",
        "rate_inverse": 0.0,
        "rate_max_bin": 1e-9,
        "rate_deviation": 1e-6,
        "deviation_form": "implementation",
        "kernel_granularity": "column",
    }
    assert (
        C.achieved_by(rates) == "max-bin 1e-9, deviation 1e-6 (implementation), column"
    )
    every = C.all_runs(runs, pd.DataFrame())
    best = P.accuracy_bar(every, best, max_drop=0.01)
    assert list(best["bar"]) == ["not shown", "not shown"]  # one seed: no interval
    md = C.best_compression_markdown(
        best, max_drop=0.01, seeds=[0], profile="smoke", loss_note="note."
    )
    assert "| λ 1e-9, scalar" in md and md.endswith("profile `smoke`. note.\n")
    assert "-0.5 (n = 1: no interval)" in md and "nan" not in md
    ranking = P.compression_ranking(every, best)
    assert ranking.empty  # one seed: no accuracy interval, so no method is ranked
    lambdas = P.threshold_ties(every, agg, reference, max_drop=0.01)
    head = C.headline_table(best, ranking, lambdas, [SETUP], max_drop=0.01).iloc[0]
    assert head["nested: compression (×)"] == 6.4
    assert head["most compression"].startswith("not shown: no method's accuracy")
    assert C.headline_claim(ranking, best) == (
        f"{SETUP}: no single method compresses most (not shown: no method's accuracy "
        "interval lies wholly within the bar)."
    )
    md = C.headline_markdown(
        best, ranking, lambdas, [SETUP], max_drop=0.01, seeds=[0], profile="smoke"
    )
    assert md.endswith("profile `smoke`.\n") and "**" not in md  # no bold winner


def test_seed_means_reuse_the_config_id_of_all_runs(monkeypatch):
    runs = _runs()
    expected = C.seed_means(runs, pd.DataFrame())
    every = C.all_runs(runs, pd.DataFrame())
    calls = []
    real = analysis.config_id
    monkeypatch.setattr(
        analysis, "config_id", lambda df, **kw: calls.append(len(df)) or real(df, **kw)
    )
    pd.testing.assert_frame_equal(C.seed_means(every), expected)
    assert calls == []  # the notebook computes config_id once (all_runs)


def test_accuracy_vs_memory_figure_panels_axes_and_annotations():
    runs = _runs()
    agg = C.seed_means(runs, pd.DataFrame())
    fig = C.draw_accuracy_vs_memory(agg, 0.90, max_drop=0.01)
    left, right = fig.axes[:2]
    assert left.get_xscale() == "log" and left.get_ylabel() == "test accuracy (%)"
    assert left.get_xlabel() == "memory (bits / parameter, scales included; log scale)"
    # bit widths are annotated in the right panel only
    assert [t.get_text() for t in left.texts] == []
    assert sorted(t.get_text() for t in right.texts) == ["b=4", "b=8"]
    assert right.get_xlim() == pytest.approx((2.4, 17))
    assert right.get_ylim() == pytest.approx((90.0 - 4.0, 90.0 + 0.8))
    top = left.child_axes[0]  # the secondary axis: 1 KiB per bit with 8192 parameters
    assert top.get_xlabel() == "model memory (KiB)"
    assert [t.get_text() for t in top.get_xticklabels()] == [
        "1",
        "2",
        "4",
        "8",
        "16",
        "32",
    ]
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"FP32 network", "PTQ min-max per-tensor", "nested (front over λ)"} <= labels
    plt.close(fig)
    assert "loss-term networks" in C.accuracy_vs_memory_caption(True)
    assert "loss-term" not in C.accuracy_vs_memory_caption(False)
