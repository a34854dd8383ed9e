"""companion.chapters.lr_reg: the learning-rate × L2 grid: configs, tables, figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from companion.chapters import lr_reg as L

SETUP = "MNIST · MLP"
#: (mode, lr) -> (test accuracy, bits / parameter) of the nested runs; FP32 reaches 0.92
GRID = {
    ("from_scratch", 1e-4): (0.915, 6.0),
    ("from_scratch", 1e-3): (0.912, 3.0),
    ("post_training", 1e-4): (0.80, 2.0),
    ("post_training", 1e-3): (0.85, 2.5),
}


def _runs() -> pd.DataFrame:
    rows = [
        {
            "flavour": "nested",
            "mode": mode,
            "kernel_granularity": "scalar",
            "lr": lr,
            "test_accuracy": acc,
            "mem_bits_per_param": bits,
        }
        for (mode, lr), (acc, bits) in GRID.items()
    ]
    # FP32 trained 1 epoch (the from-scratch runs' budget) and 2 epochs (the post-training
    # runs' budget: 1 pretraining + 1 training epoch)
    rows += [
        {
            "flavour": "fp32",
            "mode": "from_scratch",
            "kernel_granularity": None,
            "lr": lr,
            "epochs": epochs,
            "test_accuracy": acc,
            "mem_bits_per_param": 32.0,
        }
        for lr in (1e-4, 1e-3)
        for epochs, acc in ((1, 0.92), (2, 0.855))
    ]
    df = pd.DataFrame(rows).assign(
        setup=SETUP, dataset="mnist", arch="mlp", l2=0.0, threshold=1e-9, seed=0
    )
    df["epochs"] = df["epochs"].fillna(1).astype(int)
    df["pretrain_epochs"] = np.where(df["mode"] == "post_training", 1.0, np.nan)
    df["train_accuracy"] = df["test_accuracy"]
    df["val_accuracy"] = df["test_accuracy"]
    df["mem_compression"] = 32.0 / df["mem_bits_per_param"]
    df["mem_kib"] = df["mem_bits_per_param"] * 1024 / 8192  # 1024 parameters
    df["mem_fp32_kib"] = 4.0
    df["mem_q_bits_per_param"] = df["mem_bits_per_param"] - 0.5
    df["mem_quantized_fraction"] = 1.0
    return df


def test_configs_cross_modes_granularities_and_the_grid():
    configs, refs = L.lr_reg_configs(
        [{"dataset": "mnist", "arch": "mlp"}],
        {"flavour": "nested", "epochs": 1},
        learning_rates=[1e-4, 1e-3],
        l2_coefficients=[0.0],
        modes=["from_scratch", "post_training"],
        granularities=["scalar", "column"],
        post_training_granularities=["scalar"],
        seeds=[0],
    )
    got = [(c["mode"], c["kernel_granularity"], c["lr"]) for c in configs]
    assert got == [
        ("from_scratch", g, lr) for g in ("scalar", "column") for lr in (1e-4, 1e-3)
    ] + [("post_training", "scalar", lr) for lr in (1e-4, 1e-3)]
    # FP32 at the from-scratch budget (1 epoch) and at the post-training runs' total budget
    # (pretrain_epochs, default epochs, + epochs = 2)
    assert [(c["flavour"], c["lr"], c["epochs"]) for c in refs] == [
        ("fp32", lr, e) for lr in (1e-4, 1e-3) for e in (1, 2)
    ]
    with pytest.raises(ValueError, match="post_training_granularities.*'colum'"):
        L.lr_reg_configs(
            [],
            {},
            learning_rates=[1e-3],
            l2_coefficients=[0.0],
            modes=["from_scratch"],
            granularities=["scalar"],
            post_training_granularities=["colum"],
            seeds=[0],
        )


def test_summarise_orders_and_labels():
    t = L.summarise(_runs())
    assert t.setup_order == [SETUP] and t.mode_order == [
        "from_scratch",
        "post_training",
    ]
    assert t.gran_order == ["scalar"] and len(t.nested) == 4
    assert t.reference[(SETUP, 1)] == pytest.approx(0.92)
    assert t.reference[(SETUP, 2)] == pytest.approx(0.855)
    assert t.agg["lr_l2"].iloc[0] == "lr 1e-4, L2 0"


def test_front_figure_panels_labels_and_fronts():
    t = L.summarise(_runs())
    [fig] = L.draw_fronts(t, "mem_kib", "memory (KiB, scales included)", max_drop=0.01)
    scratch, post = fig.axes
    assert scratch.get_xlabel() == "memory (KiB, scales included)"
    assert scratch.get_ylabel() == "test accuracy (%)"
    assert "FP32 network: 4 KiB" in scratch.get_title()
    # both from-scratch runs are on the front (smaller memory, lower accuracy)
    front = [
        c
        for c in scratch.collections
        if c.get_offsets().shape[0] and c.get_label() == "Pareto front"
    ][0]
    np.testing.assert_allclose(sorted(front.get_offsets()[:, 0]), [0.375, 0.75])
    plt.close(fig)


def test_lr_l2_grid_annotates_the_seed_means():
    t = L.summarise(_runs())
    assert L.heat_setups(t) == {SETUP: "scalar"}
    [fig] = L.draw_lr_l2_grid(t)
    assert len(fig.axes) == 4  # 2 modes x (accuracy, bits)
    texts = [[x.get_text() for x in ax.texts] for ax in fig.axes]
    assert texts[0] == ["91.5", "91.2"] and texts[1] == ["6.00", "3.00"]
    assert fig.axes[0].get_xlabel() == "learning rate"
    assert [x.get_text() for x in fig.axes[0].get_xticklabels()] == ["1e-4", "1e-3"]
    plt.close(fig)


def test_granularity_best_table_figure_and_snippets():
    t = L.summarise(_runs())
    best = L.granularity_best(t, max_drop=0.01)
    # from scratch: both within 91 % of the 1-epoch FP32: the 3-bit one (10.67x);
    # post-training (2 epochs in all): lr 1e-3 (85 %) is within a point of the 2-epoch
    # FP32 (85.5 %) -- against the 1-epoch FP32 (92 %) nothing would qualify
    assert list(best["mode"]) == ["from_scratch", "post_training"]
    assert list(best["within"]) == [True, True]
    assert best["compression"].iloc[0] == pytest.approx(32 / 3)
    assert best["compression"].iloc[1] == pytest.approx(32 / 2.5)
    assert list(best["reference_accuracy"]) == [0.92, 0.855]
    fig = L.draw_granularity(best, t, max_drop=0.01)
    ax = fig.axes[0]
    heights = [
        p.get_height()
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_height()
    ]
    # bits per quantized parameter: from scratch 2.5, post-training 2.0
    assert heights == [pytest.approx(2.5), pytest.approx(2.0)]
    assert [x.get_text() for x in ax.texts] == []
    assert ax.get_ylabel() == "bits / quantized parameter\nwithin 1 pt of FP32"
    plt.close(fig)
    md = L.granularity_table_markdown(best, max_drop=0.01)
    assert "10.7" in md and "| from scratch" in md
    assert md.endswith("(pretraining + training).\n")
    summary = L.summary_markdown(t, max_drop=0.01)
    assert summary.splitlines() == [
        f"- **{SETUP}, from scratch**: 10.67× smaller than FP32 (3.00 bits/parameter) "
        "at 91.2 % test accuracy (FP32 trained as long, 1 epoch in all: 92.0 %), "
        "with scalar scales, lr 1e-3, L2 0.",
        f"- **{SETUP}, post training**: 12.80× smaller than FP32 (2.50 bits/parameter) "
        "at 85.0 % test accuracy (FP32 trained as long, 2 epochs in all: 85.5 %), "
        "with scalar scales, lr 1e-3, L2 0.",
    ]


def test_front_table_lists_front_points_in_memory_order():
    t = L.summarise(_runs())
    md = L.front_table_markdown(t, seeds=[0], profile="smoke", threshold=1e-9)
    rows = [line for line in md.splitlines() if line.startswith(f"| {SETUP}")]
    # from scratch: 0.375 and 0.75 KiB; post training: 0.25 KiB (80 %) and 0.3125 KiB
    # (85 %)
    assert [r.split("|")[7].strip() for r in rows] == ["0.4", "0.8", "0.2", "0.3"]
    assert md.endswith("profile `smoke`, λ = 1e-9).\n")


def _two_granularities(column_shift: list[float]) -> pd.DataFrame:
    """Five seeds; from-scratch column rows = scalar rows with bits moved by a shift."""
    parts = []
    for seed in range(5):
        df = _runs().assign(seed=seed)
        df["mem_total_bits"] = df["mem_bits_per_param"] * 1024
        df["mem_fp32_bits"] = 32.0 * 1024
        col = df[(df["flavour"] == "nested") & (df["mode"] == "from_scratch")].copy()
        col["kernel_granularity"] = "column"
        col["mem_total_bits"] += column_shift[seed]
        col["mem_bits_per_param"] = col["mem_total_bits"] / 1024
        parts += [df, col]
    return pd.concat(parts, ignore_index=True)


def test_summary_names_a_granularity_only_when_the_paired_interval_excludes_zero():
    clear = L.summarise(_two_granularities([-300, -310, -290, -305, -295]))
    line = L.summary_markdown(clear, max_drop=0.01).splitlines()[0]
    assert line.endswith(
        "column beats every other granularity (paired 95 % intervals)."
    )
    noisy = L.summarise(_two_granularities([-900, 700, -800, 600, -700]))
    line = L.summary_markdown(noisy, max_drop=0.01).splitlines()[0]
    assert "Granularities not told apart: " in line and "beats" not in line
