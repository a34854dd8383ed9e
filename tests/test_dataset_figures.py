"""companion.chapters.dataset_figures: dataset_insights' tables, snippets, figures."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from companion import data
from companion.chapters import dataset_figures as DF
from companion.chapters import insights
from companion.engine import experiment

NAMES = ["cat", "dog", "owl"]
INFO = SimpleNamespace(label="Toy", num_classes=3, class_names=NAMES)


def _split(labels, seed=0):
    y = np.asarray(labels, dtype=np.int64)
    x = np.random.default_rng(seed).uniform(size=(len(y), 4, 4, 1)).astype(np.float32)
    return x, y, INFO


SPLITS = {
    "toy": {"train": _split([0, 0, 0, 1, 1, 2]), "test": _split([0, 1, 2], seed=1)}
}
FP32 = {
    "dataset": "toy",
    "flavour": "fp32",
    "test_accuracy": 1.0,
    "seed": 0,
    "test_limit": 3,
    "image_size": None,
}
QNT = {
    "dataset": "toy",
    "flavour": "nested",
    "test_accuracy": 2 / 3,
    "seed": 0,
    "kernel_granularity": "scalar",
    "mem_bits_per_param": 4.0,
}


def _rows(md: str) -> list[list[str]]:
    """The body cells of a Markdown pipe table, stripped."""
    lines = [line for line in md.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines]


def test_class_balance_table_snippet_and_figure():
    balance = DF.class_balance_table(SPLITS)
    train = balance[balance["split"] == "train"]
    assert list(train["count"]) == [3, 2, 1]
    md = DF.class_balance_markdown(balance)
    # train: 6 images, smallest class 1, largest 3 (ratio 3); test: 3, 1, 1
    assert _rows(md) == [
        ["Toy", "train", "6", "1", "3", "3"],
        ["Toy", "test", "3", "1", "1", "1"],
    ]
    fig = DF.draw_class_balance(balance, {"toy": "Toy"})
    ax = fig.axes[0]
    heights = sorted(
        p.get_height()
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_height() > 0
    )
    assert heights == pytest.approx(
        sorted([50.0, 100 / 3, 100 / 6, 100 / 3, 100 / 3, 100 / 3])
    )
    assert ax.get_ylabel() == "share of the split (%)"
    uniform = [line for line in ax.get_lines() if line.get_label() == "uniform"]
    assert uniform[0].get_ydata()[0] == pytest.approx(100 / 3)
    plt.close(fig)


def test_pixel_stats_and_histograms():
    stats = DF.pixel_stats_table(SPLITS)
    x = SPLITS["toy"]["train"][0]
    row = stats[stats["split"] == "train"].iloc[0]
    assert row["mean"] == pytest.approx(float(x.mean())) and row[
        "std"
    ] == pytest.approx(float(x.std()))
    assert "population standard deviation" in DF.pixel_stats_markdown(stats)
    hist = DF.intensity_histograms(SPLITS, 4)
    assert len(hist) == 4 and set(hist["dataset"]) == {"toy"}
    fig = DF.draw_intensity_histograms(hist, {"toy": "Toy"})
    ax = fig.axes[0]
    assert (
        ax.get_yscale() == "log"
        and ax.get_xlabel() == "pixel value (stored byte / 255)"
    )
    assert len(ax.patches) == 1  # one stairs line for the grey channel
    plt.close(fig)


def test_samples_grid_shows_the_first_images_of_each_class():
    x, y, info = SPLITS["toy"]["train"]
    fig = DF.draw_samples(x, y, info, 2)
    assert len(fig.axes) == 6
    visible = [ax.get_visible() for ax in fig.axes]
    assert visible == [
        True,
        True,
        True,
        True,
        True,
        False,
    ]  # owl has one training image
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), x[0, ..., 0])
    assert [fig.axes[k * 2].get_ylabel() for k in range(3)] == NAMES
    plt.close(fig)


def test_check_reloaded_and_pair_text():
    proba = np.eye(3)[[0, 1, 2]]
    DF.check_reloaded(proba, np.array([0, 1, 2]), FP32)
    with pytest.raises(ValueError, match="reloaded network reaches 0.6667"):
        DF.check_reloaded(proba, np.array([0, 1, 1]), FP32)
    assert (
        DF.pair_text(FP32, QNT)
        == "FP32 100.00 % vs nested (scalar scales, 4.00 bits/param) 66.67 %"
    )


def _comparison(monkeypatch):
    x, y, _ = SPLITS["toy"]["test"]
    probas = {
        "fp32": np.eye(3)[[0, 1, 2]] * 0.9 + 0.1 / 3,
        "nested": np.eye(3)[[0, 1, 1]] * 0.9 + 0.1 / 3,
    }
    monkeypatch.setattr(data, "load_with_info", lambda *a, **k: (x, y, INFO))
    monkeypatch.setattr(
        experiment,
        "load_model",
        lambda rec: SimpleNamespace(
            predict=lambda x, batch_size, verbose: probas[rec["flavour"]]
        ),
    )
    return DF.compare_pairs({"toy": (FP32, QNT)}, top_k=5)


def test_compare_pairs_per_class_confusion_and_most_changed(monkeypatch):
    cmp = _comparison(monkeypatch)
    assert list(cmp.per_class["change"]) == [0.0, 0.0, -1.0]  # the owl becomes a dog
    grown = cmp.confusion[
        (cmp.confusion["true"] == "owl") & (cmp.confusion["predicted"] == "dog")
    ]
    assert float(grown["change"].iloc[0]) == 1.0
    assert list(cmp.changed["index"]) == [2] and list(cmp.changed["class"]) == ["owl"]
    line = DF.hurt_line(cmp.per_class, cmp.confusion, "Toy", (FP32, QNT))
    assert line == (
        "- **Toy** (FP32 100.00 % vs nested (scalar scales, 4.00 bits/param) 66.67 "
        "%): the class that lost most is owl (-100.0 points, 100.0 % → 0.0 %); the "
        "confusion that grew most is owl → dog (+100.0 points of the owl test "
        "images). Averaged over the classes, a class moved by 33.3 points (mean "
        "absolute change) while the overall test accuracy changed by -33.33 points."
    )
    assert (
        DF.hurt_summary_markdown(cmp, {"toy": (FP32, QNT)}, {"toy": "Toy"})
        == line + "\n"
    )


def test_per_class_swings_are_shown_against_an_fp32_seed_baseline(monkeypatch):
    """The quantized network's per-class change next to what seed alone changes."""
    x, y, _ = SPLITS["toy"]["test"]
    other = {**FP32, "seed": FP32["seed"] + 1, "test_accuracy": 2 / 3}
    probas = {
        FP32["seed"]: np.eye(3)[[0, 1, 2]] * 0.9 + 0.1 / 3,
        other["seed"]: np.eye(3)[[0, 0, 2]] * 0.9 + 0.1 / 3,  # the cat becomes an ant
        "nested": np.eye(3)[[0, 1, 1]] * 0.9 + 0.1 / 3,
    }
    monkeypatch.setattr(data, "load_with_info", lambda *a, **k: (x, y, INFO))

    def load(rec):
        key = rec["flavour"] if rec["flavour"] != "fp32" else rec["seed"]
        return SimpleNamespace(predict=lambda x, batch_size, verbose: probas[key])

    monkeypatch.setattr(experiment, "load_model", load)
    cmp = DF.compare_pairs({"toy": (FP32, QNT)}, top_k=5, seed_baselines={"toy": other})
    assert list(cmp.per_class["seed_change"]) == [0.0, -1.0, 0.0]  # by hand
    md = DF.per_class_markdown(cmp.per_class)
    assert _rows(md)[2] == ["Toy", "owl", "1", "100.0", "0.0", "-100.0", "0.0"]
    assert "next seed" in md
    line = DF.hurt_line(cmp.per_class, cmp.confusion, "Toy", (FP32, QNT))
    # seed moves the cat by 100 points too: no class moved more than seed alone does
    assert line.endswith(
        "a second FP32 network (next seed) moves a class by 33.3 points on average "
        "and at most 100.0, so no class moved more than seed alone does."
    )


def test_comparison_figures_and_snippets(monkeypatch):
    cmp = _comparison(monkeypatch)
    pairs, labels = {"toy": (FP32, QNT)}, {"toy": "Toy"}
    [fig] = DF.draw_per_class(cmp.per_class, pairs, labels)
    assert [t.get_text() for t in fig.axes[0].texts] == ["+0.0", "+0.0", "-100.0"]
    plt.close(fig)
    [fig] = DF.draw_confusion_difference(cmp.confusion, pairs, labels)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    cells = [t.get_text() for t in ax.texts]
    assert cells == ["0", "0", "0", "0", "0", "0", "0", "100", "-100"]
    plt.close(fig)
    [fig] = DF.draw_most_changed(SPLITS["toy"]["test"][0], cmp.changed, "Toy")
    assert sum(ax.get_visible() for ax in fig.axes) == 1
    assert fig.axes[0].get_title().startswith("true: owl\nFP32: owl (0.93)")
    plt.close(fig)
    md = DF.per_class_markdown(cmp.per_class)
    assert _rows(md)[2] == ["Toy", "owl", "1", "100.0", "0.0", "-100.0"]
    runs = pd.DataFrame(
        [
            {
                **FP32,
                "arch": "mlp",
                "method": "FP32",
                "kernel_granularity": None,
                "threshold": None,
                "lr": 1e-3,
                "epochs": 1,
                "train_limit": 6,
                "mem_bits_per_param": 32.0,
                "mem_kib": 1.0,
                "mem_compression": 1.0,
                "dataset_label": "Toy",
            }
        ]
    )
    md = DF.pairs_markdown(runs, seeds=[0], profile="smoke")
    assert _rows(md)[0][:3] == ["Toy", "mlp", "FP32"] and md.endswith(
        "profile `smoke`).\n"
    )


def test_insights_sample_indices_are_what_the_grid_draws():
    x, y, info = SPLITS["toy"]["train"]
    assert insights.sample_indices(y, 2, num_classes=3) == {
        0: [0, 1],
        1: [3, 4],
        2: [5],
    }


# ------------------------------------------------------------------------------------ λ source


def _best_table() -> pd.DataFrame:
    """A ``threshold_best.csv`` as pareto_threshold writes it (two setups, one without λ)."""
    return pd.DataFrame(
        [
            ("mnist", "mlp", "scalar", True, 1e-6),
            ("mnist", "mlp", "column", True, 1e-8),
            ("fashion_mnist", "mlp", "scalar", False, None),
        ],
        columns=["dataset", "arch", "kernel_granularity", "within", "threshold"],
    )


def test_quantized_threshold_comes_from_the_pareto_threshold_results(tmp_path):
    """Regression: dataset_insights used a typed λ = 1e-4 that was not even in the grid."""
    path = tmp_path / "threshold_best.csv"
    _best_table().to_csv(path, index=False)
    quantized = {"flavour": "nested", "kernel_granularity": "column"}
    setups = [{"dataset": "mnist", "arch": "mlp"}]
    chosen = DF.quantized_configs(
        setups, quantized, source="pareto_threshold", best_csv=path
    )
    assert chosen == {"mnist": {**quantized, "threshold": 1e-8}}
    given = DF.quantized_configs(
        setups, {**quantized, "threshold": 1e-3}, source="given", best_csv=path
    )
    assert given["mnist"]["threshold"] == 1e-3


def test_quantized_threshold_errors_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "threshold_best.csv"
    q = {"flavour": "nested", "kernel_granularity": "scalar"}
    with pytest.raises(ValueError, match="does not exist.*pareto_threshold notebook"):
        DF.quantized_configs(
            [{"dataset": "mnist"}], q, source="pareto_threshold", best_csv=path
        )
    _best_table().to_csv(path, index=False)
    with pytest.raises(ValueError, match="fashion_mnist.*threshold_source='given'"):
        DF.quantized_configs(
            [{"dataset": "fashion_mnist", "arch": "mlp"}],
            q,
            source="pareto_threshold",
            best_csv=path,
        )
    with pytest.raises(ValueError, match="threshold_source='typed'.*allowed"):
        DF.quantized_configs([{"dataset": "mnist"}], q, source="typed", best_csv=path)
