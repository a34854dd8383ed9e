"""companion.chapters.analysis: grids, seed aggregation, fronts, best-compression tables, snippets (no training)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

import companion.data
from companion.chapters import analysis, thresholds
from companion.engine.config import validate_config

# ------------------------------------------------------------------------------------ grids


def test_grid_is_the_cartesian_product_last_axis_fastest():
    configs = analysis.grid(
        {"dataset": "mnist", "flavour": "nested"},
        {"lr": [1e-4, 1e-3], "seed": [0, 1, 2]},
    )
    assert len(configs) == 6
    assert [(c["lr"], c["seed"]) for c in configs] == [
        (lr, s) for lr in (1e-4, 1e-3) for s in (0, 1, 2)
    ]
    # validated: every schema key is present and defaults are filled
    assert configs[0] == validate_config(
        {"dataset": "mnist", "flavour": "nested", "lr": 1e-4, "seed": 0}
    )
    assert configs[0]["arch"] == "mlp"


def test_grid_drops_duplicates_after_validation():
    # bits has no effect on nested runs: validation sets it to None, so the axis collapses
    configs = analysis.grid(
        {"dataset": "mnist", "flavour": "nested"}, {"bits": [2, 4, 8], "seed": [0, 1]}
    )
    assert len(configs) == 2
    assert all(c["bits"] is None for c in configs)


def test_grid_without_validation_keeps_raw_dicts():
    configs = analysis.grid({"a": 1}, {"b": [1, 2], "c": ["x"]}, validate=False)
    assert configs == [{"a": 1, "b": 1, "c": "x"}, {"a": 1, "b": 2, "c": "x"}]


def test_grid_empty_axis_and_no_axes():
    assert analysis.grid({"dataset": "mnist"}, {"lr": []}) == []
    assert len(analysis.grid({"dataset": "mnist"})) == 1


def test_grid_rejects_bad_values_and_non_list_axes():
    with pytest.raises(ValueError, match="kernel_granularity"):
        analysis.grid(
            {"dataset": "mnist", "flavour": "nested"},
            {"kernel_granularity": ["filter"]},
        )
    with pytest.raises(ValueError, match="lr"):
        analysis.grid({"dataset": "mnist"}, {"lr": [-1.0]})
    with pytest.raises(ValueError, match="list of values"):
        analysis.grid({"dataset": "mnist"}, {"lr": "1e-3"})


def test_grid_where_granularity_fits_skips_conv_granularities_on_the_mlp():
    axes = {
        "dataset": ["mnist", "cifar10"],
        "kernel_granularity": ["scalar", "row", "column", "channel", "filter"],
    }
    configs = analysis.grid(
        {"flavour": "nested"}, axes, where=analysis.granularity_fits
    )
    got = {(c["dataset"], c["kernel_granularity"]) for c in configs}
    assert got == {("mnist", g) for g in ("scalar", "row", "column")} | {
        ("cifar10", g) for g in ("scalar", "row", "column", "channel", "filter")
    }


def test_unknown_granularity_raises_instead_of_being_dropped():
    """Regression: a typo ("colum") used to be dropped silently, so only scalar ran."""
    axes = {"kernel_granularity": ["scalar", "colum"]}
    with pytest.raises(ValueError) as err:
        analysis.grid(
            {"flavour": "nested", "dataset": "mnist"},
            axes,
            where=analysis.granularity_fits,
        )
    message = str(err.value)
    assert "granularities" in message and "'colum'" in message
    assert "scalar, row, column, channel, filter" in message
    with pytest.raises(ValueError, match="nested_granularities"):
        analysis.check_granularities(["colum"], "nested_granularities")
    with pytest.raises(ValueError, match="list of granularity names"):
        analysis.check_granularities("scalar")


def test_known_granularity_that_does_not_fit_the_network_is_still_filtered():
    assert analysis.check_granularities(["scalar", "filter"]) == ["scalar", "filter"]
    assert not analysis.granularity_fits(
        {"dataset": "mnist", "kernel_granularity": "filter"}
    )
    assert analysis.granularity_fits(
        {"dataset": "cifar10", "kernel_granularity": "filter"}
    )
    assert analysis.granularity_fits(
        {"flavour": "fp32", "kernel_granularity": "filter"}
    )


def test_threshold_configs_reject_a_typo_before_anything_trains():
    setups = [{"dataset": "fashion_mnist", "arch": "mlp"}]
    kwargs = dict(
        thresholds=[1e-9], seeds=[0], dynamics_thresholds=[1e-9], dynamics_epochs=2
    )
    defaults = {"flavour": "nested", "epochs": 1}
    with pytest.raises(ValueError, match="granularities.*'colum'.*allowed"):
        thresholds.threshold_configs(
            setups, defaults, granularities=["scalar", "colum"], **kwargs
        )
    with pytest.raises(ValueError, match="'colum'"):  # a setup's own override too
        thresholds.threshold_configs(
            [{**setups[0], "granularities": ["colum"]}],
            defaults,
            granularities=["scalar"],
            **kwargs,
        )


def test_baseline_granularity():
    assert analysis.baseline_granularity("mlp", "per_tensor") == "scalar"
    assert analysis.baseline_granularity("mlp", "per_channel") == "column"
    assert analysis.baseline_granularity("cnn", "per_channel") == "filter"
    with pytest.raises(ValueError, match="per_tensor"):
        analysis.baseline_granularity("mlp", "per_row")


# ------------------------------------------------------------------------------------ seeds


def _runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for lr in (1e-4, 1e-3):
        for gran in ("scalar", "row"):
            for seed in (0, 1, 2):
                rows.append({"dataset": "mnist", "flavour": "nested", "lr": lr, "kernel_granularity": gran,
                             "bits": None, "seed": seed, "test_accuracy": rng.uniform(0.8, 0.99),
                             "mem_compression": rng.uniform(2, 8)})  # fmt: skip
    return pd.DataFrame(rows)


def test_aggregate_seeds_against_numpy():
    df = _runs()
    agg = analysis.aggregate_seeds(df, ["test_accuracy", "mem_compression"])
    assert len(agg) == 4
    assert {"dataset", "flavour", "lr", "kernel_granularity", "bits"} <= set(
        agg.columns
    )
    assert "seed" not in agg.columns
    for _, row in agg.iterrows():
        sel = df[
            (df["lr"] == row["lr"])
            & (df["kernel_granularity"] == row["kernel_granularity"])
        ]
        for m in ("test_accuracy", "mem_compression"):
            values = sel[m].to_numpy()
            assert row[f"{m}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{m}_std"] == pytest.approx(np.std(values, ddof=1))
            assert row[f"{m}_min"] == pytest.approx(values.min())
            assert row[f"{m}_max"] == pytest.approx(values.max())
        assert row["n_seeds"] == 3
        assert row["seeds"] == "0, 1, 2"
        assert row["bits"] is None  # a None key is its own group, kept as None


def test_aggregate_seeds_single_seed_has_nan_std_and_explicit_by():
    df = _runs()
    one = df[df["seed"] == 1]
    agg = analysis.aggregate_seeds(one, ["test_accuracy"])
    assert len(agg) == 4
    assert agg["test_accuracy_std"].isna().all()
    assert (agg["n_seeds"] == 1).all()
    by_lr = analysis.aggregate_seeds(one, ["test_accuracy"], by=["lr"])
    assert len(by_lr) == 2 and (by_lr["n_seeds"] == 2).all()  # two granularities per lr
    assert by_lr["test_accuracy_std"].notna().all()


def test_aggregate_seeds_mixed_none_groups_stay_separate():
    df = pd.DataFrame({"flavour": ["ptq", "ptq", "nested", "nested"], "bits": [4, 4, None, None],
                       "seed": [0, 1, 0, 1], "test_accuracy": [0.5, 0.7, 0.9, 0.8]})  # fmt: skip
    agg = analysis.aggregate_seeds(df, ["test_accuracy"]).set_index("flavour")
    assert agg.loc["ptq", "test_accuracy_mean"] == pytest.approx(0.6)
    assert agg.loc["nested", "test_accuracy_mean"] == pytest.approx(0.85)


def test_compression_mean_is_32n_over_mean_bits_and_ranks_like_bits():
    """Regression: compression used to be the mean of per-seed ratios (10.74 bits shown as
    3.30x although 32 / 10.74 = 2.98x), so a configuration with fewer mean bits could lose."""
    n = 100
    bits = {"a": [320, 1280], "b": [700, 700]}  # mean bits 800 vs 700: b is smaller
    rows = [
        {"dataset": "mnist", "method": m, "threshold": t, "seed": s,
         "test_accuracy": 0.9, "mem_fp32_bits": 32 * n, "mem_total_bits": b,
         "mem_compression": 32 * n / b}
        for m, t in (("a", 1e-9), ("b", 1e-8)) for s, b in enumerate(bits[m])
    ]  # fmt: skip
    agg = analysis.aggregate_seeds(
        pd.DataFrame(rows),
        ["test_accuracy", "mem_total_bits", "mem_compression"],
        by=["dataset", "method", "threshold"],
    ).set_index("method")
    by_hand = {m: 32 * n / np.mean(b) for m, b in bits.items()}  # 4.0 and 4.571
    assert agg.loc["a", "mem_compression_mean"] == pytest.approx(by_hand["a"])
    assert agg.loc["b", "mem_compression_mean"] == pytest.approx(by_hand["b"])
    mean_of_ratios = np.mean(
        [32 * n / b for b in bits["a"]]
    )  # 6.25: the old, wrong value
    assert agg.loc["a", "mem_compression_mean"] != pytest.approx(mean_of_ratios)
    best = analysis.best_compression_table(
        agg.reset_index().assign(method="nested"),
        {"mnist": 0.9},
        keep=["threshold"],
        accuracy="test_accuracy_mean",
    )
    assert best["threshold"].item() == 1e-8  # fewer mean bits wins
    assert best["compression"].item() == pytest.approx(by_hand["b"])


# ------------------------------------------------------------------------------------ fronts


def test_mark_front_per_group_and_fronts_sorted():
    df = pd.DataFrame({
        "g": ["a"] * 4 + ["b"] * 3,
        "kib": [10, 20, 30, 25, 5, 6, 7],
        "acc": [0.5, 0.7, 0.9, 0.6, 0.8, 0.7, 0.9],
    })  # fmt: skip
    mask = analysis.mark_front(df, "kib", "acc", by="g")
    assert mask.tolist() == [True, True, True, False, True, False, True]
    front = analysis.fronts(df, "kib", "acc", by="g")
    assert front["kib"].tolist() == [10, 20, 30, 5, 7]
    assert analysis.mark_front(df.iloc[:0], "kib", "acc", by="g").empty


def _front_means(bits: list[float]) -> pd.DataFrame:
    """Seed means of a front: accuracy falls as memory (bits) falls."""
    return pd.DataFrame(
        {
            "mem_bits_per_param_mean": bits,
            "mem_bits_per_param_std": 0.0,
            "test_accuracy_mean": np.linspace(0.8, 0.9, len(bits)),
            "test_accuracy_std": 0.01,
        }
    )


def test_front_axis_does_not_blow_up_a_few_thousandths_of_a_bit():
    """Regression: a CNN panel spanned 14.350-14.362 bits across its whole width."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    bits = list(14.35 + 0.004 * np.arange(4))
    analysis.plot_front(ax, _front_means(bits), "mem_bits_per_param", "test_accuracy")
    lo, hi = ax.get_xlim()
    assert hi - lo >= analysis.MIN_RELATIVE_SPAN * 14.35 - 1e-9  # >= 5 % of the value
    assert lo < 14.35 and hi > bits[-1]
    fig.draw_without_rendering()
    assert ax.xaxis.get_major_formatter().get_offset() == ""  # no "+1.435e1"
    # autoscaling stays on: data drawn later still widen the axis
    ax.plot([20.0], [85.0])
    assert ax.get_xlim()[1] >= 20.0
    # a wide range is left as it is
    fig2, ax2 = plt.subplots()
    analysis.plot_front(
        ax2, _front_means([2.0, 8.0]), "mem_bits_per_param", "test_accuracy"
    )
    assert ax2.get_xlim()[1] - ax2.get_xlim()[0] < 8.0
    plt.close(fig)
    plt.close(fig2)


# ------------------------------------------------------------------------------------ best compression


def _table() -> pd.DataFrame:
    return pd.DataFrame([
        # dataset, method, acc, compression, lambda
        ("mnist", "nested", 0.975, 5.0, 1e-10),
        ("mnist", "nested", 0.972, 7.0, 1e-9),   # best within 1 point of 0.98 (>= 0.97)
        ("mnist", "nested", 0.969, 9.0, 1e-8),   # just below the bar
        ("mnist", "PTQ min-max per-tensor", 0.979, 4.0, None),
        ("mnist", "PTQ min-max per-tensor", 0.90, 16.0, None),
        ("fashion_mnist", "nested", 0.80, 8.0, 1e-9),   # reference 0.85: nothing within 1 point
        ("cifar10", "nested", 0.70, 3.0, 1e-9),         # no reference: left out
    ], columns=["dataset", "method", "test_accuracy_mean", "mem_compression_mean", "threshold"])  # fmt: skip


def test_best_compression_table_against_hand_made_frame():
    ref = pd.Series({"mnist": 0.98, "fashion_mnist": 0.85})
    table = analysis.best_compression_table(
        _table(), ref, keep=["threshold"], accuracy="test_accuracy_mean"
    )
    table = table.set_index(["dataset", "method"])
    assert len(table) == 3  # cifar10 has no reference
    row = table.loc[("mnist", "nested")]
    assert (
        row["within"]
        and row["compression"] == 7.0
        and row["accuracy"] == 0.972
        and row["threshold"] == 1e-9
    )
    assert row["reference_accuracy"] == 0.98
    assert table.loc[("mnist", "PTQ min-max per-tensor"), "compression"] == 4.0
    miss = table.loc[("fashion_mnist", "nested")]
    assert (
        not miss["within"]
        and math.isnan(miss["compression"])
        and pd.isna(miss["threshold"])
    )


def test_best_compression_table_respects_max_drop():
    ref = {"mnist": 0.98}
    table = analysis.best_compression_table(
        _table(), ref, max_drop=0.1, accuracy="test_accuracy_mean"
    ).set_index(["dataset", "method"])
    assert table.loc[("mnist", "nested"), "compression"] == 9.0
    assert table.loc[("mnist", "PTQ min-max per-tensor"), "compression"] == 16.0


def test_reference_accuracy_picks_the_fp32_config_on_validation_reports_test():
    df = pd.DataFrame({
        "dataset": ["mnist"] * 4 + ["fashion_mnist"] * 2,
        "flavour": ["fp32"] * 4 + ["fp32", "nested"],
        "lr": [1e-3, 1e-3, 1e-4, 1e-4, 1e-3, 1e-3],
        "seed": [0, 1, 0, 1, 0, 0],
        # lr 1e-3 is better on validation (0.965 vs 0.94), lr 1e-4 on test (0.945 vs 0.97)
        "val_accuracy": [0.96, 0.97, 0.93, 0.95, 0.7, 0.9],
        "test_accuracy": [0.92, 0.93, 0.95, 0.99, 0.8, 0.95],
    })  # fmt: skip
    ref = analysis.reference_accuracy(df)
    assert ref["mnist"] == pytest.approx(0.925)  # test mean of the validation choice
    assert ref["fashion_mnist"] == pytest.approx(0.8)  # nested rows are ignored
    val = analysis.reference_accuracy(df, accuracy="val_accuracy")
    assert val["mnist"] == pytest.approx(0.965)
    by_setup = analysis.reference_accuracy(
        df.assign(setup=df["dataset"].str.upper()), by="setup"
    )
    assert by_setup["MNIST"] == pytest.approx(0.925)
    with pytest.raises(ValueError, match="not in the table"):
        analysis.reference_accuracy(df, by="setup")
    with pytest.raises(ValueError, match="val_accuracy.*retraining"):
        analysis.reference_accuracy(df.drop(columns="val_accuracy"))


def test_best_compression_is_selected_on_validation_and_reports_test():
    """Regression: λ/rate/lr/L2 were chosen on the test images that were then reported."""
    agg = pd.DataFrame(
        [
            # λ, validation, test, compression
            (1e-10, 0.975, 0.960, 5.0),
            (1e-9, 0.972, 0.990, 7.0),  # best within 1 point on validation
            (1e-8, 0.969, 0.985, 9.0),  # within on test, not on validation
        ],
        columns=["threshold", "val_accuracy_mean", "test_accuracy_mean",
                 "mem_compression_mean"],
    ).assign(dataset="mnist", method="nested")  # fmt: skip
    best = analysis.best_compression_table(
        agg, {"mnist": 0.98}, report_reference={"mnist": 0.97}, keep=["threshold"]
    ).iloc[0]
    assert best["threshold"] == 1e-9 and best["compression"] == 7.0
    assert best["selection_accuracy"] == 0.972 and best["accuracy"] == 0.990
    assert best["reference_accuracy"] == 0.97 and best["selection_reference"] == 0.98
    on_test = analysis.best_compression_table(
        agg, {"mnist": 0.98}, accuracy="test_accuracy_mean", keep=["threshold"]
    )
    assert on_test["threshold"].item() == 1e-8  # what selecting on test would pick
    with pytest.raises(ValueError, match="val_accuracy_mean.*retraining"):
        analysis.best_compression_table(agg.drop(columns="val_accuracy_mean"), {})


# ------------------------------------------------------------------------------------ labels, formatting


@pytest.mark.parametrize(
    "row, label",
    [
        ({"flavour": "fp32"}, "FP32"),
        ({"flavour": "nested", "kernel_granularity": "row"}, "nested"),
        ({"flavour": "loss_terms"}, "loss terms"),
        ({"flavour": "ptq", "kernel_granularity": "scalar"}, "PTQ min-max per-tensor"),
        ({"flavour": "ptq", "kernel_granularity": "filter"}, "PTQ min-max per-channel"),
        ({"flavour": "lsq", "kernel_granularity": "column"}, "LSQ per-channel"),
        (
            {"flavour": "fixed_bits", "kernel_granularity": "scalar"},
            "fixed-bit STE per-tensor",
        ),
    ],
)
def test_method_label(row, label):
    assert analysis.method_label(row) == label
    assert label in analysis.METHOD_ORDER


def test_method_style_one_colour_per_family_dashed_per_channel():
    a, b = (
        analysis.method_style("PTQ min-max per-tensor"),
        analysis.method_style("PTQ min-max per-channel"),
    )
    assert a["color"] == b["color"] and a["ls"] == "-" and b["ls"] == "--"
    assert (
        analysis.method_style("nested")["color"]
        != analysis.method_style("LSQ per-tensor")["color"]
    )
    for m in analysis.METHOD_ORDER:
        analysis.method_style(m)
    with pytest.raises(ValueError, match="unknown method"):
        analysis.method_style("binary")


def test_method_label_rejects_unknown_flavour():
    with pytest.raises(ValueError, match="unknown flavour"):
        analysis.method_label({"flavour": "binary"})


def test_formatting_helpers():
    assert analysis.fmt_sci(1e-9) == "1e-9"
    assert analysis.fmt_sci(3e-4) == "3e-4"
    assert analysis.fmt_sci(2.5e-3) == "2.5e-3"
    assert analysis.fmt_sci(0.0) == "0"
    assert analysis.fmt_sci(None) == "–"
    assert analysis.fmt_pm(0.9712, 0.0031) == "97.1 ± 0.3"
    assert analysis.fmt_pm(0.9712, float("nan")) == "97.1"
    assert analysis.join_labels(
        ["MNIST (10k subset)", None, "Fashion-MNIST", "MNIST (10k subset)"]
    ) == ("MNIST (10k subset), Fashion-MNIST")
    md = analysis.markdown_table(
        pd.DataFrame(
            {"a": [1.0, None], "b": ["x", "y"], "λ": ["1e-9", "1e-12"], "n": [3, 2]}
        )
    )
    assert md.splitlines()[0].startswith("|") and "nan" not in md.lower()
    assert "1e-9" in md and "1e-12" in md and "1e-09" not in md  # text kept verbatim
    assert md.splitlines()[1].startswith("|---") and md.splitlines()[
        1
    ].rstrip().endswith(":|")


# ------------------------------------------------------------------------------------ writing


def test_write_snippet_is_atomic_and_ends_with_newline(tmp_path):
    path = analysis.write_snippet(tmp_path / "out", "table", "| a |\n|---|\n| 1 |")
    assert path == tmp_path / "out" / "table.md"
    assert path.read_text().endswith("| 1 |\n")
    assert [p.name for p in path.parent.iterdir()] == [
        "table.md"
    ]  # no temporary left over
    with pytest.raises(ValueError, match="stem"):
        analysis.write_snippet(tmp_path, "x.md", "text")


def test_write_snippet_failure_leaves_the_old_file(tmp_path, monkeypatch):
    path = analysis.write_snippet(tmp_path, "s", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        analysis.write_snippet(tmp_path, "s", "new")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.md"]


def test_write_csv_round_trips(tmp_path):
    df = pd.DataFrame({"lr": [1e-4, 1e-3], "acc": [0.9, 0.95]})
    path = analysis.write_csv(df, tmp_path, "runs")
    pd.testing.assert_frame_equal(pd.read_csv(path), df)


# ------------------------------------------------------------------------------------ missing data


def _available() -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": "mnist", "present": True, "label": "MNIST (10k subset)", "is_subset": True,
         "missing": "", "fetch": ""},
        {"dataset": "fashion_mnist", "present": True, "label": "Fashion-MNIST", "is_subset": False,
         "missing": "", "fetch": ""},
        {"dataset": "cifar10", "present": False, "label": "CIFAR-10", "is_subset": None,
         "missing": "data/cifar10/cifar-10-python.tar.gz", "fetch": "run `make data` or place the file"},
    ])  # fmt: skip


def test_missing_snippet_all_present(tmp_path):
    present = analysis.resolve_datasets(
        ["fashion_mnist", "mnist"], tmp_path, "nb", available=_available()
    )
    assert present == ["fashion_mnist", "mnist"]
    text = (tmp_path / "nb_missing.md").read_text()
    assert text.startswith(
        "All requested datasets were present: Fashion-MNIST, MNIST (10k subset)."
    )
    assert "partial copy" in text


def test_missing_snippet_names_file_and_fix_and_skips(tmp_path):
    present = analysis.resolve_datasets(
        ["mnist", "cifar10"], tmp_path, "nb", available=_available()
    )
    assert present == ["mnist"]  # never substituted
    text = (tmp_path / "nb_missing.md").read_text()
    assert "**CIFAR-10** not run: `data/cifar10/cifar-10-python.tar.gz` missing" in text
    assert "make data" in text and text.startswith("```{admonition}")


def test_missing_strict_raises_after_writing_the_snippet(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10"):
        analysis.resolve_datasets(
            ["cifar10"], tmp_path, "nb", strict=True, available=_available()
        )
    assert (tmp_path / "nb_missing.md").exists()


def test_resolve_datasets_rejects_empty_and_unknown(tmp_path):
    with pytest.raises(ValueError, match="no dataset"):
        analysis.resolve_datasets([], tmp_path, "nb", available=_available())
    with pytest.raises(ValueError, match="imagenette"):
        analysis.resolve_datasets(
            ["imagenette"], tmp_path, "nb", available=_available()
        )


# ------------------------------------------------------------------------------------ other notebooks' runs


def test_matching_runs_and_read_run_tables(tmp_path):
    df = pd.DataFrame({
        "config_hash": ["a", "b", "c", "d"],
        "dataset": ["mnist", "mnist", "mnist", "fashion_mnist"],
        "train_limit": [8000, 8000, None, 8000],
        "epochs": [2, 3, 2, 2],
    })  # fmt: skip
    got = analysis.matching_runs(
        df,
        {"dataset": "mnist", "train_limit": 8000, "epochs": 2},
        ["dataset", "train_limit", "epochs"],
    )
    assert got["config_hash"].tolist() == ["a"]
    got = analysis.matching_runs(
        df, {"dataset": "mnist", "train_limit": None}, ["dataset", "train_limit"]
    )
    assert got["config_hash"].tolist() == ["c"]
    assert analysis.matching_runs(df, {"lr": 1e-3}, ["lr"]).empty
    df.to_csv(tmp_path / "runs.csv", index=False)
    df.iloc[:2].to_csv(
        tmp_path / "more_runs.csv", index=False
    )  # duplicates are dropped
    pd.DataFrame({"x": [1]}).to_csv(
        tmp_path / "summary.csv", index=False
    )  # no config_hash: skipped
    table = analysis.read_run_tables(tmp_path)
    assert sorted(table["config_hash"]) == ["a", "b", "c", "d"]
    assert analysis.read_run_tables(tmp_path / "absent").empty
    assert sorted(
        analysis.read_run_tables(tmp_path, pattern="more_runs.csv")["config_hash"]
    ) == ["a", "b"]


def test_history_stats_reads_stored_histories(tmp_path):
    from companion.engine.store import RunStore

    store = RunStore(tmp_path / "runs")
    rows = []
    for thr in (1e-12, 1e-6):
        cfg = validate_config(
            {"dataset": "mnist", "flavour": "nested", "threshold": thr}
        )
        history = pd.DataFrame({
            "epoch": [0, 1, 2],
            "loss": [2.3, 0.5, 0.4],
            "dense1/kernel/unique_values": [100.0, 50.0, 20.0 if thr > 1e-9 else 80.0],
            "dense1/kernel/scale_mean": [1e-5, 1e-3, 1e-2],
        })  # fmt: skip
        rec = store.put(cfg, {"test_accuracy": 0.9}, history)
        rows.append({"config_hash": rec["config_hash"], "threshold": thr})
    runs = pd.DataFrame(rows)
    long = analysis.history_stats(runs, keep=["threshold"], store=store)
    assert len(long) == 2 * 3 * 2  # runs x epochs x stats
    assert set(long.columns) == {
        "config_hash",
        "threshold",
        "epoch",
        "layer",
        "parameter",
        "stat",
        "value",
    }
    last = analysis.history_stats(runs, keep=["threshold"], last_only=True, store=store)
    uv = last[last["stat"] == "unique_values"].set_index("threshold")["value"]
    assert uv[1e-6] == 20.0 and uv[1e-12] == 80.0
    assert (last["epoch"] == 2).all() and (last["layer"] == "dense1").all()
    assert analysis.history_stats(runs.iloc[:0], keep=["threshold"], store=store).empty


# ------------------------------------------------------------------------ notebook
# plumbing


def test_add_setup_appends_the_label_column():
    df = pd.DataFrame({"dataset_label": ["MNIST", "CIFAR-10"], "arch": ["mlp", "cnn"]})
    out = analysis.add_setup(df)
    assert list(out.columns) == ["dataset_label", "arch", "setup"]
    assert list(out["setup"]) == ["MNIST · MLP", "CIFAR-10 · CNN"]
    assert "setup" not in df.columns


def test_sort_by_order_uses_display_orders_then_extra_columns():
    df = pd.DataFrame(
        {
            "mode": ["post_training", "from_scratch", "from_scratch", "other"],
            "x": [1.0, 3.0, 2.0, 0.0],
        },
        index=[10, 11, 12, 13],
    )
    out = analysis.sort_by_order(df, {"mode": analysis.MODE_ORDER}, extra=["x"])
    assert list(out.index) == [12, 11, 10, 13]  # unknown values last
    assert list(out.columns) == ["mode", "x"]
    assert analysis.present_in_order(
        ["row", "scalar", "row"], analysis.GRANULARITY_ORDER
    ) == ["scalar", "row"]


def test_prepare_notebook_creates_the_folder_and_keeps_present_setups(
    tmp_path, capsys, monkeypatch
):
    available = pd.DataFrame(
        {
            "dataset": ["mnist", "cifar10"],
            "present": [True, False],
            "label": ["MNIST (10k subset)", "CIFAR-10"],
            "missing": ["", "cifar-10-python.tar.gz"],
            "fetch": ["", "make data"],
            "is_subset": [True, False],
        }
    )
    out, runnable = analysis.prepare_notebook("nb", "smoke", tmp_path / "res")
    assert out == tmp_path / "res" and out.is_dir() and runnable == []
    monkeypatch.setattr(companion.data, "available", lambda requested: available)
    setups = [{"dataset": "mnist"}, {"dataset": "cifar10", "arch": "cnn"}]
    out, runnable = analysis.prepare_notebook("nb", "smoke", out, setups)
    assert runnable == [{"dataset": "mnist"}]
    assert "cifar-10-python.tar.gz" in (out / "nb_missing.md").read_text()
    assert "Datasets not run" in capsys.readouterr().out
