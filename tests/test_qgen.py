"""companion.chapters.qgen: study design, claims logic on hand-made tables with known answers, caching, figures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from companion.chapters import corruptions as C
from companion.chapters import qgen, style
from companion.engine.config import config_hash


# ---------------------------------------------------------------------------------------------
# study design
# ---------------------------------------------------------------------------------------------
def test_model_specs_order_and_validation():
    assert qgen.model_specs([2, 8, 4], ["lsq", "nested"], lsq_bits=4) == [
        ("fp32", None),
        ("fixed_bits", 8),
        ("fixed_bits", 4),
        ("fixed_bits", 2),
        ("lsq", 4),
        ("nested", None),
    ]
    assert qgen.model_specs([8], []) == [("fp32", None), ("fixed_bits", 8)]
    with pytest.raises(ValueError, match="unknown extra"):
        qgen.model_specs([8], ["ptq"])
    with pytest.raises(ValueError, match="distinct integers in 2..16"):
        qgen.model_specs([8, 8], [])
    with pytest.raises(ValueError, match="2..16"):
        qgen.model_specs([1], [])


def test_model_keys_labels_order():
    assert qgen.model_key("fp32") == "fp32"
    assert qgen.model_key("fixed_bits", 8.0) == "fixed_bits_8"
    assert qgen.model_key("lsq", 4) == "lsq_4"
    assert qgen.model_key("nested", float("nan")) == "nested"
    assert qgen.model_label("fixed_bits", 3) == "3-bit"
    assert qgen.model_label("lsq", 4) == "LSQ 4-bit"
    assert qgen.model_label("fp32", None) == "FP32"
    keys = [
        "nested",
        "fixed_bits_2",
        "lsq_4",
        "fp32",
        "fixed_bits_8",
        "fixed_bits_4",
        "fixed_bits_2",
    ]
    assert qgen.model_order(keys) == [
        "fp32",
        "fixed_bits_8",
        "fixed_bits_4",
        "fixed_bits_2",
        "lsq_4",
        "nested",
    ]
    colors = qgen.model_colors(keys)
    assert list(colors) == qgen.model_order(keys)
    assert len({tuple(np.round(c, 6)) for c in colors.values()}) == len(colors)


def test_study_configs_seed_major_and_valid():
    configs = qgen.study_configs(
        "cnn",
        "fashion_mnist",
        bits=[8, 4, 2],
        seeds=[0, 1],
        extra_models=["lsq", "nested"],
        train_limit=1000,
        test_limit=500,
        epochs=5,
        lr=1e-3,
        batch_size=32,
    )
    assert len(configs) == 2 * 6
    assert [c["seed"] for c in configs] == [0] * 6 + [1] * 6
    first = configs[:6]
    assert [(c["flavour"], c["bits"]) for c in first] == [
        ("fp32", None),
        ("fixed_bits", 8),
        ("fixed_bits", 4),
        ("fixed_bits", 2),
        ("lsq", 4),
        ("nested", None),
    ]
    for c in configs:
        assert c["arch"] == "cnn" and c["dataset"] == "fashion_mnist"
        assert (
            c["train_limit"] == 1000
            and c["test_limit"] == 500
            and c["epochs"] == 5
            and c["lr"] == 1e-3
        )
        assert c["mode"] == "from_scratch"
    assert first[0]["kernel_granularity"] is None  # fp32 has no scales
    assert first[1]["kernel_granularity"] == "scalar"
    assert len({config_hash(c) for c in configs}) == len(configs)
    with pytest.raises(ValueError):
        qgen.study_configs(
            "mlp",
            "mnist",
            bits=[8],
            seeds=[],
            train_limit=10,
            test_limit=10,
            epochs=1,
            lr=1e-3,
            batch_size=8,
        )


def _available_stub(present: set[str]):
    def available(names):
        name = names[0]
        ok = name in present
        return pd.DataFrame(
            [
                {
                    "dataset": name,
                    "present": ok,
                    "label": {"mnist": "MNIST (10k subset)"}.get(name, name),
                    "source": "local:x" if ok else "",
                    "missing": "" if ok else f"data/{name}/archive.tar.gz",
                    "fetch": "" if ok else "make data",
                }
            ]
        )

    return available


def test_check_parts_reports_missing_data_and_never_substitutes():
    parts = qgen.check_parts(
        {"mlp": "mnist", "cnn": "cifar10"}, available=_available_stub({"mnist"})
    )
    assert parts["run"].tolist() == [True, False]
    assert (
        parts.loc[0, "dataset"] == "mnist"
        and parts.loc[0, "label"] == "MNIST (10k subset)"
    )
    note = parts.loc[1, "note"]
    assert (
        note.startswith("not run: cifar10 missing")
        and "data/cifar10/archive.tar.gz" in note
        and "make data" in note
    )
    assert parts.loc[1, "dataset"] == "cifar10"
    with pytest.raises(FileNotFoundError, match="cifar10"):
        qgen.check_parts(
            {"cnn": "cifar10"}, strict=True, available=_available_stub(set())
        )


# ---------------------------------------------------------------------------------------------
# aggregation and claims
# ---------------------------------------------------------------------------------------------
def test_compare_relations():
    assert qgen.compare([1.0, 1.2, 1.1], [2.0, 2.1, 1.9])["relation"] == "lower"
    assert qgen.compare([3.0, 3.2], [2.0, 2.1])["relation"] == "higher"
    assert qgen.compare([1.0, 2.0], [1.5, 1.6])["relation"] == "overlap"
    c = qgen.compare([1.0], [2.0, 2.1])
    assert c["relation"] == "n/a" and c["n"] == 1 and np.isnan(c["std"])
    c = qgen.compare([1.0, 3.0, np.nan], [2.0, 2.0])
    assert (
        c["n"] == 2
        and c["mean"] == pytest.approx(2.0)
        and c["std"] == pytest.approx(np.sqrt(2.0))
    )
    assert c["ref_std"] == 0.0 and c["relation"] == "overlap"


def _metrics(case="mlp", n_seeds=3):
    """FP32 with a large gap; 2-bit clearly smaller gap and higher train loss; 8-bit clearly *different* gap."""
    rows = []
    spec = {
        # model: (label, gap_loss values, train_loss values, gap_accuracy)
        "fp32": ("FP32", [0.40, 0.42, 0.38], [0.010, 0.012, 0.011], [0.10, 0.11, 0.09]),
        "fixed_bits_8": (
            "8-bit",
            [0.60, 0.62, 0.61],
            [0.010, 0.011, 0.012],
            [0.10, 0.105, 0.095],
        ),
        "fixed_bits_2": (
            "2-bit",
            [0.10, 0.12, 0.11],
            [0.20, 0.22, 0.21],
            [0.02, 0.12, 0.07],
        ),
    }
    for model, (label, gaps, train, gap_acc) in spec.items():
        flavour, bits = (
            ("fp32", None)
            if model == "fp32"
            else ("fixed_bits", int(model.rsplit("_", 1)[1]))
        )
        for seed in range(n_seeds):
            rows.append(
                {
                    "case": case,
                    "dataset_label": "MNIST (10k subset)",
                    "model": model,
                    "label": label,
                    "flavour": flavour,
                    "bits": bits,
                    "seed": seed,
                    "config_hash": f"{model}{seed}",
                    "gap_loss": gaps[seed],
                    "train_loss": train[seed],
                    "gap_accuracy": gap_acc[seed],
                    "test_loss": gaps[seed] + train[seed],
                    "train_accuracy": 1.0,
                    "test_accuracy": 1.0 - gap_acc[seed],
                }
            )
    return pd.DataFrame(rows)


def test_claims_table_known_answers():
    """The paired rule on hand numbers: differences model − FP32 per seed."""
    claims = qgen.claims_table(_metrics()).set_index("key")
    # 2-bit loss gap: d = [-0.30, -0.30, -0.27], mean -0.29; t-interval by hand
    d = np.array([0.10, 0.12, 0.11]) - np.array([0.40, 0.42, 0.38])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t_{2, 0.975}
    row = claims.loc["regularizer_loss"]
    assert row["model"] == "fixed_bits_2" and row["n"] == 3
    assert row["mean"] == pytest.approx(d.mean())
    assert row["ci_low"] == pytest.approx(d.mean() - half)
    assert row["verdict"] == "holds"
    assert claims.loc["training_cost", "verdict"] == "holds"
    # 8-bit loss gap is 0.21 nats above FP32 on every seed: "like FP32" (±0.05) fails
    assert claims.loc["eight_bit_loss", "verdict"] == "does not hold"
    # 8-bit accuracy gap equals FP32's within ±1 pp on every seed: TOST holds
    assert claims.loc["eight_bit_accuracy", "verdict"] == "holds"
    # the 2-bit accuracy gap differs by [-8, +1, -2] pp: not shown (no "does not hold")
    assert claims.loc["regularizer_accuracy", "verdict"] == "not shown"
    assert "seed noise" in claims.loc["regularizer_accuracy", "reason"]
    assert claims.loc["flat_worst", "verdict"] == "not run"
    numbers = claims.loc["regularizer_loss", "numbers"]
    assert numbers.startswith("2-bit − FP32: -0.290, 95 % CI [") and "n = 3" in numbers
    assert "significantly below 0" in claims.loc["regularizer_loss", "criterion"]
    assert claims.loc["regularizer_loss", "claim"].startswith(
        "quantization regularizes: 2-bit"
    )
    # Holm over the three directional claims: the smallest p is multiplied by 3
    directional = claims[claims["expected"] != "same"].dropna(subset=["p_value"])
    assert directional["p_holm"].min() == pytest.approx(
        3 * directional["p_value"].min()
    )


def test_claims_with_one_seed_are_not_shown_and_opposite_direction_does_not_hold():
    one = qgen.claims_table(_metrics(n_seeds=1))
    decided = one[one["verdict"] != "not run"]
    assert set(decided["verdict"]) == {"not shown"}
    flipped = _metrics()
    flipped.loc[flipped["model"] == "fixed_bits_2", "gap_loss"] += (
        1.0  # now far above FP32
    )
    row = qgen.claims_table(flipped).set_index("key").loc["regularizer_loss"]
    assert row["mean"] > 0 and row["verdict"] == "does not hold"
    md = qgen.claims_markdown(qgen.claims_table(_metrics()), {}, profile="smoke")
    assert "Holm" in md and "TOST" in md and "not shown" in md


def test_claims_missing_model_is_not_run():
    m = _metrics()
    m = m[m["model"] != "fixed_bits_8"]
    claims = qgen.claims_table(m).set_index("key")
    assert claims.loc["eight_bit_loss", "verdict"] == "not run"
    assert claims.loc["regularizer_loss", "verdict"] == "holds"


def test_claims_detail_and_summarize():
    m = _metrics()
    detail = qgen.claims_detail(m)
    assert set(detail["model"]) == {"fixed_bits_8", "fixed_bits_2"}
    row = detail[
        (detail["model"] == "fixed_bits_2") & (detail["metric"] == "gap_loss")
    ].iloc[0]
    assert row["relation"] == "lower" and row["ref_mean"] == pytest.approx(0.40)
    s = qgen.summarize(m, ["gap_loss"])
    assert s["model"].tolist() == ["fp32", "fixed_bits_8", "fixed_bits_2"]
    fp = s.iloc[0]
    assert (
        fp["mean"] == pytest.approx(0.40)
        and fp["std"] == pytest.approx(0.02)
        and fp["n"] == 3
    )


def test_model_metrics_pivots_measures():
    gap = _metrics()[
        [
            "case",
            "model",
            "label",
            "seed",
            "config_hash",
            "gap_loss",
            "gap_accuracy",
            "train_loss",
        ]
    ]
    sharp = pd.DataFrame(
        [
            {
                "case": "mlp",
                "config_hash": h,
                "mode": mode,
                "weights": w,
                "value": v + f,
            }
            for h in gap["config_hash"]
            for mode, v in (("average", 0.1), ("worst", 0.5))
            for w, f in (("dequantized", 0.0), ("frozen", 1.0))
        ]
    )
    flat = pd.DataFrame(
        [
            {"case": "mlp", "config_hash": h, "weights": w, "sigma": v}
            for h in gap["config_hash"]
            for w, v in (("dequantized", 0.3), ("frozen", 0.05))
        ]
    )
    rob = pd.DataFrame(
        [
            {
                "case": "mlp",
                "config_hash": h,
                "corruption": c,
                "severity": s,
                "accuracy": a,
                "loss": loss,
            }
            for h in gap["config_hash"]
            for c, s, a, loss in (
                ("clean", 0, 0.9, 0.4),
                ("rotate", 2, 0.8, 0.7),
                ("stripe", 1, 0.6, 1.3),
            )
        ]
    )
    m = qgen.model_metrics(gap, sharp, flat, rob)
    assert len(m) == len(gap)
    r = m.iloc[0]
    assert (
        r["sharpness_average"] == 0.1
        and r["sharpness_worst"] == 0.5
        and r["pac_bayes_sigma"] == 0.3
    )
    assert r["sharpness_average_frozen"] == 1.1 and r["pac_bayes_sigma_frozen"] == 0.05
    assert r["clean_accuracy"] == pytest.approx(0.9)
    assert r["corrupted_accuracy"] == pytest.approx(0.7)
    # by hand: loss gaps 0.7 - L_train and 1.3 - L_train; error ratios 2 and 4
    assert r["corrupted_loss_gap"] == pytest.approx(1.0 - r["train_loss"])
    assert r["corrupted_error_ratio"] == pytest.approx(3.0)
    rows = qgen.robustness_rows(gap, rob)
    first = rows[rows["config_hash"] == r["config_hash"]]
    np.testing.assert_allclose(first["loss_gap"], [0.4, 0.7, 1.3] - r["train_loss"])


def test_markdown_snippets():
    m = _metrics()
    claims = qgen.claims_table(m)
    md = qgen.claims_markdown(
        claims,
        {"mlp": "MNIST (10k subset)"},
        profile="cpu",
        not_run=["CNN part: not run: cifar10 missing"],
    )
    assert (
        "| MLP on MNIST (10k subset) |" in md
        and "**holds**" in md
        and "**does not hold**" in md
    )
    assert "not run: cifar10 missing" in md and "Tally:" in md
    gap = qgen.gap_markdown(m, {"mlp": "MNIST (10k subset)"}, profile="cpu")
    rows = [line for line in gap.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | train loss | test loss | loss gap |")
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| FP32", "| 8-bit", "| 2-bit"]
    # every gap next to its test loss and accuracy: FP32 test loss = gap + train loss
    assert rows[1] == (
        "| FP32 | 0.011 ± 0.001 | 0.411 ± 0.021 | 0.400 ± 0.020 | 100.0 ± 0.0 | "
        "90.0 ± 1.0 | 10.0 ± 1.0 | 3 |"
    )
    assert "| 2-bit | 0.210 ± 0.010 | 0.320 ± 0.020 | 0.110 ± 0.010 |" in gap
    assert "No part" in qgen.gap_markdown(pd.DataFrame(), {}, profile="smoke")
    assert qgen.format_mean_std(0.5, np.nan, 1, "gap_loss") == "0.500"
    assert qgen.format_mean_std(0.081, 0.004, 3, "gap_accuracy") == "8.1 ± 0.4"


# ---------------------------------------------------------------------------------------------
# caching and measuring (tiny synthetic model, no training)
# ---------------------------------------------------------------------------------------------
def test_cached_frame_computes_once_and_keys_on_settings(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"config_hash": ["0123456789012345"], "value": [1.5]})

    a = qgen.cached_frame(tmp_path, "m", {"rho": 0.1}, compute)
    b = qgen.cached_frame(tmp_path, "m", {"rho": 0.1}, compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(a, b)
    assert (
        a.loc[0, "config_hash"] == "0123456789012345"
    )  # digits-only hash stays a string
    qgen.cached_frame(tmp_path, "m", {"rho": 0.2}, compute)
    assert len(calls) == 2
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # no temporary leftovers
    assert (
        qgen.cached_frame(None, "m", {}, compute).loc[0, "value"] == 1.5
        and len(calls) == 3
    )


def test_measure_runs_and_landscapes_on_a_tiny_model(tmp_path, monkeypatch):
    import keras

    from lqs.baselines import FixedBitsDense

    rng = np.random.default_rng(0)
    x = rng.random((40, 6, 6, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64) + 2 * (x[:, 0, 0, 0] > 0.5)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Flatten()(inputs)
    h = FixedBitsDense(8, bits=4, activation="relu", name="dense1")(h)
    model = keras.Model(
        inputs, keras.layers.Dense(4, activation="softmax", name="dense2")(h)
    )
    monkeypatch.setattr(
        qgen._DataCache, "run_data", lambda self, run: ((x, y), (x[:20], y[:20]))
    )
    runs = pd.DataFrame(
        [
            {
                "case": "mlp",
                "arch": "mlp",
                "dataset": "synthetic",
                "dataset_label": "synthetic",
                "model": "fixed_bits_4",
                "label": "4-bit",
                "flavour": "fixed_bits",
                "bits": 4,
                "seed": 0,
                "config_hash": "00000000000000aa",
            }
        ]
    )
    settings = qgen.MeasureSettings(
        measure_samples=16,
        sharpness_samples=2,
        worst_steps=2,
        flatness_samples=1,
        flatness_rtol=0.5,
        robustness_samples=12,
        corruptions=("shot_noise", "rotate", "stripe"),
        batch_size=16,
    )
    loads = []

    def load(run):
        loads.append(run["config_hash"])
        return model

    tables = qgen.measure_runs(
        runs, settings, cache_dir=tmp_path, progress=False, load_model=load
    )
    assert set(tables) == set(qgen.MEASURE_TABLES)
    for name, table in tables.items():
        assert list(table.columns[: len(qgen.ID_COLUMNS)]) == list(qgen.ID_COLUMNS), (
            name
        )
    assert (
        tables["gap"].loc[0, "n_train"] == 40 and tables["gap"].loc[0, "n_test"] == 20
    )
    sharp = tables["sharpness"]
    assert sorted(zip(sharp["weights"], sharp["mode"])) == [
        ("dequantized", "average"), ("dequantized", "worst"),
        ("frozen", "average"), ("frozen", "worst"),
    ]  # fmt: skip
    assert tables["flatness"]["weights"].tolist() == ["dequantized", "frozen"]
    assert (tables["flatness"]["resolution"] <= 0.5 + 1e-12).all()
    assert tables["bin_widths"]["layer"].tolist() == ["dense1"]
    assert tables["robustness"]["corruption"].tolist() == [
        "clean", "shot_noise", "rotate", "stripe"
    ]  # fmt: skip
    again = qgen.measure_runs(
        runs, settings, cache_dir=tmp_path, progress=False, load_model=load
    )
    pd.testing.assert_frame_equal(again["sharpness"], tables["sharpness"])
    # each measure keys on its own settings: a new radius re-measures the sharpness only
    cached = {p.name for p in tmp_path.glob("*.csv")}
    assert len(cached) == len(qgen.MEASURE_TABLES)
    wider = dataclasses.replace(settings, rho_average=0.2)
    qgen.measure_runs(runs, wider, cache_dir=tmp_path, progress=False, load_model=load)
    new = {p.name for p in tmp_path.glob("*.csv")} - cached
    assert [name.split("-")[0] for name in new] == ["sharpness"]
    one_d, two_d = qgen.landscapes(
        runs,
        models=["fixed_bits_4"],
        seed=0,
        extent=0.5,
        points_1d=3,
        points_2d=2,
        samples=16,
        cache_dir=tmp_path,
        progress=False,
        load_model=load,
    )
    assert one_d["alpha"].tolist() == [-0.5, 0.0, 0.5] and len(two_d) == 4
    metrics = qgen.model_metrics(
        tables["gap"], tables["sharpness"], tables["flatness"], tables["robustness"]
    )
    assert {
        "sharpness_average",
        "sharpness_worst",
        "pac_bayes_sigma",
        "pac_bayes_sigma_frozen",
        "corrupted_loss_gap",
        "corrupted_error_ratio",
    } <= set(metrics.columns)


CPU_MODELS = (
    [("fp32", "FP32", None)]
    + [(f"fixed_bits_{b}", f"{b}-bit", b) for b in (8, 6, 4, 3, 2)]
    + [("lsq_4", "LSQ 4-bit", 4), ("nested", "nested", None)]
)


def _cpu_tables():
    """Synthetic tables shaped like the cpu profile's: MLP with 8 models x 5 seeds, CNN with
    8 models x 3 seeds, 10 corruptions, 21-point lines and 11x11 planes of 3 models."""
    rng = np.random.default_rng(0)
    layers = {"mlp": ["dense1", "dense2"], "cnn": [f"conv{i}{c}" for i in (1, 2, 3)
                                                   for c in "ab"]}  # fmt: skip
    ids, bw, rob, one, two = [], [], [], [], []
    grid = np.linspace(-1, 1, 11)
    for case, seeds, label in (
        ("mlp", 5, "MNIST (10k subset)"),
        ("cnn", 3, "Fashion-MNIST"),
    ):
        for model, name, _bits in CPU_MODELS:
            for seed in range(seeds):
                row = {"case": case, "dataset_label": label, "model": model, "label": name,
                       "seed": seed, "config_hash": f"{case}{model}{seed}"}  # fmt: skip
                ids.append({**row, **{m: rng.random() for m in (
                    "gap_loss", "gap_accuracy", "train_loss", "test_loss",
                    "train_accuracy", "test_accuracy", "sharpness_average",
                    "sharpness_worst", "sharpness_average_frozen",
                    "sharpness_worst_frozen")},
                    "pac_bayes_sigma": 0.1 + rng.random(),
                    "pac_bayes_sigma_frozen": 0.05 + rng.random()})  # fmt: skip
                if model != "fp32":
                    bw += [{**row, "layer": ly, "layer_index": i, "parameter": "kernel",
                            "scale_mean": 10 ** rng.uniform(-3, -1)}
                           for i, ly in enumerate(layers[case])]  # fmt: skip
                for c in ("clean",) + C.MNIST_C:
                    rob.append({**row, "corruption": c, "loss_gap": rng.random(),
                                "error_ratio": 1 + rng.random()})  # fmt: skip
                if seed == 0 and model in ("fp32", "fixed_bits_4", "fixed_bits_2"):
                    one += [{**row, "alpha": a, "loss": 0.1 + a * a, "accuracy": 0.9}
                            for a in np.linspace(-1, 1, 21)]  # fmt: skip
                    two += [{**row, "alpha": a, "beta": b, "loss": 0.1 + a * a + b * b,
                             "accuracy": 0.9} for a in grid for b in grid]  # fmt: skip
    return (pd.DataFrame(ids), pd.DataFrame(bw), pd.DataFrame(rob), pd.DataFrame(one),
            pd.DataFrame(two))  # fmt: skip


def test_figures_are_legible_in_print_with_cpu_shaped_tables():
    """Every figure of the chapter, built from cpu-shaped tables (two parts, 8 models):
    smallest text >= style.MIN_FONT_PT at its printed size."""
    import matplotlib.pyplot as plt

    metrics, bw, rob, one, two = _cpu_tables()
    figs = {
        "gap_vs_bits": qgen.plot_gap(metrics),
        "sharpness": qgen.plot_sharpness(metrics, 0.1, 0.5, "accuracy drop ≤ 0.1",
                                         {"mlp": 31.9, "cnn": 52.0}),
        "bin_widths": qgen.plot_bin_widths(bw),
        "landscape_1d": qgen.plot_landscape_1d(one),
        "landscape_2d": qgen.plot_landscape_2d(two),
        "robustness": qgen.plot_robustness(rob),
    }  # fmt: skip
    sizes = {}
    for stem, fig in figs.items():
        assert fig.axes
        sizes[stem] = style.smallest_text(fig)
        plt.close(fig)
    small = {k: v for k, v in sizes.items() if v[0] < style.MIN_FONT_PT}
    assert not small, small


def test_figures_draw_from_small_tables():
    """One part, two models, one seed: the figures still draw (no spread, no crash)."""
    import matplotlib.pyplot as plt

    metrics, bw, rob, one, two = _cpu_tables()
    keep = lambda df: df[(df["case"] == "mlp") & df["model"].isin(  # noqa: E731
        ["fp32", "fixed_bits_2"]) & (df["seed"] == 0)]  # fmt: skip
    figs = [qgen.plot_gap(keep(metrics)), qgen.plot_bin_widths(keep(bw)),
            qgen.plot_robustness(keep(rob)), qgen.plot_landscape_1d(keep(one)),
            qgen.plot_landscape_2d(keep(two)),
            qgen.plot_sharpness(keep(metrics)[["case", "dataset_label", "model", "label",
                                               "seed", "pac_bayes_sigma"]],
                                0.1, 0.5, "accuracy drop ≤ 0.1")]  # fmt: skip
    for fig in figs:
        assert fig.axes
        plt.close(fig)


# --------------------------------------------------------------------------------------
# the notebook's generated Markdown and captions
# --------------------------------------------------------------------------------------
def test_case_settings_reject_unknown_parts():
    settings = {"mlp": {"dataset": "mnist"}, "cnn": {"dataset": "cifar10"}}
    assert qgen.case_settings(["cnn"], settings) == {"cnn": {"dataset": "cifar10"}}
    with pytest.raises(ValueError, match="'cases'.*'resnet'.*allowed"):
        qgen.case_settings(["resnet"], settings)


def test_data_status_and_not_run_notes():
    parts = qgen.check_parts(
        {"mlp": "mnist", "cnn": "cifar10"}, available=_available_stub({"mnist"})
    )
    status = qgen.data_status_markdown(parts).splitlines()
    assert status[0].startswith("- MLP part (`mnist`): runs on MNIST (10k subset)")
    assert status[1].startswith("- CNN part (`cifar10`): not run: cifar10 missing")
    assert qgen.not_run_notes(parts) == [f"CNN part: {parts.loc[1, 'note']}"]


def _study_runs() -> pd.DataFrame:
    rows = [
        {
            "flavour": f,
            "bits": b,
            "seed": s,
            "train_accuracy": tr,
            "test_accuracy": te,
            "train_seconds": 30.0,
        }
        for f, b, tr, te in (("fp32", None, 0.9, 0.8), ("fixed_bits", 8, 0.85, 0.8))
        for s in (0, 1)
    ]
    df = pd.DataFrame(rows).assign(
        dataset="mnist",
        dataset_label="MNIST (10k subset)",
        n_train=300,
        n_test=200,
        device="CPU",
    )
    return qgen.annotate_runs(df, "mlp")


def test_setup_markdown_states_data_training_and_measures():
    measures = qgen.MeasureSettings(
        measure_samples=64, sharpness_samples=2, robustness_samples=100
    )
    landscape = {
        "samples": 64,
        "extent": 1.0,
        "points_1d": 5,
        "points_2d": 3,
        "seed": 0,
    }
    settings = {"mlp": {"epochs": 2, "batch_size": 32, "seeds": [0, 1]}}
    md = qgen.setup_markdown(
        {"mlp": _study_runs()},
        settings,
        profile="smoke",
        lr=1e-3,
        measures=measures,
        landscape=landscape,
    )
    lines = md.splitlines()
    assert lines[0] == "Setup of this build (profile `smoke`):"
    assert lines[2] == (
        "- MLP on MNIST (10k subset): 300 training and 200 test images, 2 epoch(s), "
        "Adam lr 0.001, batch 32, seeds 0, 1; models FP32, 8-bit (4 runs, 2.0 min of "
        "training on CPU); FP32 reaches 90.0 % training and 80.0 % test accuracy "
        "(mean over seeds)."
    )
    measured = "\n".join(lines[3:])
    assert lines[3].startswith(
        "- Sharpness and PAC-Bayes flatness on 64 training images per model, at the "
        "dequantized weights (a float copy"
    )
    assert "and on the quantized model with its scales frozen" in lines[3]
    # each radius in its own units
    assert "δ = ρ|w|⊙u with ρ = 0.1, i.e. each weight moves by 0.1 times" in measured
    assert "the adaptive ℓ2 ball ‖δ⊘|w|‖ ≤ 0.5 over all d weights together" in measured
    assert "bisected on log σ in [0.001, 4] to 2 %" in measured
    assert "shot noise (level 5), impulse noise (level 4)" in measured
    assert "with 5 (1-D) and 3×3 (2-D) points." in measured
    empty = qgen.setup_markdown(
        {}, {}, profile="smoke", lr=1e-3, measures=measures, landscape=landscape
    )
    assert "- No part of the study ran (see the data status)." in empty


def test_figure_captions_name_settings_and_seeds():
    measures = qgen.MeasureSettings(rho_average=0.1, rho_worst=0.5)
    landscape = {
        "samples": 64,
        "extent": 1.0,
        "points_1d": 5,
        "points_2d": 3,
        "seed": 2,
    }
    context = qgen.CaptionContext(
        dataset="MLP: MNIST",
        profile="smoke",
        seeds=[0, 1],
        measures=measures,
        landscape=landscape,
        bits=[2, 8],
        lsq_bits=4,
    )
    gap = qgen.figure_caption("gap_vs_bits", context)
    assert gap.endswith(
        "Dataset: MLP: MNIST; profile: smoke; seeds: 0, 1; varied: "
        "quantization (FP32, fixed bits 8, 2, LSQ 4-bit, nested)."
    )
    sharp = qgen.figure_caption("sharpness", context)
    assert "Gaussian noise of 0.1 times each weight's magnitude" in sharp
    assert "the adaptive ℓ2 ball of radius 0.5" in sharp and "resolved to 2 %" in sharp
    assert "hollow markers with frozen scales" in sharp
    robust = qgen.figure_caption("robustness", context)
    assert (
        "loss gap on corrupted test data" in robust
        and "relative to the clean" in robust
    )
    plane = qgen.figure_caption("landscape_2d", context, "FP32, 2-bit")
    assert (
        "for FP32, 2-bit at their dequantized weights (training seed 2, 3×3 grid"
        in plane
    )
    assert "seeds: 2; varied: quantization." in plane
    assert qgen.flatness_label(measures) == "accuracy drop ≤ 0.1"
    with pytest.raises(ValueError, match="no caption"):
        qgen.figure_caption("nope", context)


def test_train_study_sweeps_each_part_that_runs(monkeypatch):
    swept = []

    def sweep(configs, desc):
        swept.append((desc, len(configs)))
        return pd.DataFrame(configs)

    monkeypatch.setattr(qgen.experiment, "sweep", sweep)
    parts = pd.DataFrame({"case": ["mlp", "cnn"], "run": [True, False]})
    settings = {
        "mlp": dict(
            dataset="mnist",
            seeds=[0],
            train_limit=100,
            test_limit=50,
            epochs=1,
            batch_size=32,
        )
    }
    runs = qgen.train_study(
        parts,
        settings,
        bits=[8, 2],
        extra_models=["lsq"],
        lsq_bits=4,
        lr=1e-3,
        kernel_granularity="scalar",
    )
    assert list(runs) == ["mlp"] and swept == [("generalization mlp", 4)]
    assert list(runs["mlp"]["model"]) == [
        "fp32",
        "fixed_bits_8",
        "fixed_bits_2",
        "lsq_4",
    ]


# --------------------------------------------------------------------------------------
# which model a claim compares: trends, matched training loss, fit gate
# --------------------------------------------------------------------------------------
def _trend_metrics(slopes=(0.02, 0.03, 0.025), train_gap=(0.0, 0.0, 0.3)):
    """FP32 and 8/4/2 bits; gap_loss = 0.1 + slope_s * bits per seed (exactly linear)."""
    rows = []
    for seed, slope in enumerate(slopes):
        for model, bits, extra in (("fp32", None, 0.0), ("fixed_bits_8", 8, train_gap[0]),
                                   ("fixed_bits_4", 4, train_gap[1]),
                                   ("fixed_bits_2", 2, train_gap[2])):  # fmt: skip
            rows.append({
                "case": "mlp", "model": model, "label": qgen.model_label(
                    "fp32" if bits is None else "fixed_bits", bits),
                "seed": seed, "config_hash": f"{model}{seed}",
                "gap_loss": 0.1 + slope * (bits or 10), "gap_accuracy": 0.05,
                "train_loss": 0.01 + extra + 0.001 * seed, "train_accuracy": 1.0,
                "sharpness_average": 0.2 - 0.01 * (bits or 10),
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_trend_slopes_match_a_hand_fit():
    m = _trend_metrics()
    slopes = qgen.trend_slopes(m, "gap_loss")
    np.testing.assert_allclose(slopes["slope"], [0.02, 0.03, 0.025])
    assert slopes["n_bits"].tolist() == [3, 3, 3]
    noisy = m.copy()
    noisy.loc[
        (noisy["model"] == "fixed_bits_4") & (noisy["seed"] == 0), "gap_loss"
    ] += 0.3
    k = np.array([8.0, 4.0, 2.0])
    v = 0.1 + 0.02 * k + np.array([0.0, 0.3, 0.0])
    by_hand = np.sum((k - k.mean()) * (v - v.mean())) / np.sum((k - k.mean()) ** 2)
    assert qgen.trend_slopes(noisy, "gap_loss")["slope"].iloc[0] == pytest.approx(
        by_hand
    )
    claims = qgen.claims_table(m).set_index("key")
    row = claims.loc["trend_loss"]
    assert row["model"] == "trend" and row["verdict"] == "holds" and row["n"] == 3
    assert row["mean"] == pytest.approx(0.025)
    assert row["label"] == "fixed bits 8-bit → 4-bit → 2-bit"
    assert row["numbers"].startswith("slope: +0.0250 per bit, 95 % CI [")
    assert "slope of the loss gap" in row["criterion"]


def test_flatness_claims_compare_the_fewest_bits_at_fp32s_training_loss():
    m = _trend_metrics()  # 2-bit trains 0.3 nats higher: 4-bit is the matched model
    assert qgen.matched_model(m) == "fixed_bits_4"
    claims = qgen.claims_table(m).set_index("key")
    assert claims.loc["flat_average", "model"] == "fixed_bits_4"
    assert "within ±0.05 nats of FP32's" in claims.loc["flat_average", "criterion"]
    assert claims.loc["regularizer_loss", "model"] == "fixed_bits_2"
    none = _trend_metrics(train_gap=(0.3, 0.3, 0.3))
    assert qgen.matched_model(none) is None
    row = qgen.claims_table(none).set_index("key").loc["flat_average"]
    assert (
        row["verdict"] == "not run" and "matches FP32's training loss" in row["reason"]
    )


def test_parts_not_trained_to_a_minimum_get_no_verdicts():
    m = _trend_metrics()
    m.loc[m["model"] == "fp32", "train_accuracy"] = 0.73
    claims = qgen.claims_table(m, min_train_accuracy=0.98)
    assert set(claims["verdict"]) == {"not run"}
    assert claims["reason"].iloc[0].startswith("FP32 reaches 73.0 % training accuracy")
    assert set(qgen.claims_table(m, min_train_accuracy=0.7)["verdict"]) != {"not run"}
    with pytest.raises(ValueError, match=r"'min_train_accuracy' = 98.*0\.\.1.*fix"):
        qgen.claims_table(m, min_train_accuracy=98)


def test_measure_settings_reject_bad_values():
    with pytest.raises(ValueError, match=r"'weights' = \['exact'\].*dequantized.*fix"):
        qgen.MeasureSettings(weights=("exact",))
    with pytest.raises(ValueError, match=r"'flatness_rtol' = 0.*fix"):
        qgen.MeasureSettings(flatness_rtol=0)
    with pytest.raises(
        ValueError, match=r"'flatness_sigma_min' = 5.*sigma_min < sigma_max"
    ):
        qgen.MeasureSettings(flatness_sigma_min=5.0)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        qgen.MeasureSettings(corruptions=("fog",))


def test_run_data_excludes_the_validation_split(monkeypatch):
    """The gap's training set is the run's training images, not its validation split."""
    from companion.engine.experiment import validation_split

    y = np.arange(100) % 10
    x = np.arange(100, dtype=np.float32)[:, None]
    cache = qgen._DataCache()
    monkeypatch.setattr(cache, "get", lambda *a: (x, y))
    run = {"dataset": "d", "seed": 3, "validation_fraction": 0.1, "train_limit": 100}
    (x_tr, y_tr), (x_te, _) = cache.run_data(run)
    kept, held = validation_split(y, 0.1, 3)
    assert len(x_tr) == 90 and len(x_te) == 100
    np.testing.assert_array_equal(x_tr[:, 0], kept.astype(np.float32))
    assert not set(held) & set(x_tr[:, 0].astype(int))


def test_radii_markdown_states_each_radius_in_its_units():
    sharp = pd.DataFrame(
        [{"case": "mlp", "dataset_label": "MNIST", "mode": mode, "weights": w,
          "adaptive_norm": 31.9 if mode == "average" else 0.5, "n_parameters": 1000,
          "n_zero": z} for mode in ("average", "worst")
         for w, z in (("dequantized", 400), ("frozen", 0))]
    )  # fmt: skip
    md = qgen.radii_markdown(sharp, qgen.MeasureSettings())
    assert "- MLP on MNIST: d = 1,000 perturbed weights" in md
    assert "40 % dequantized, 0 % frozen" in md
    assert "average case ρ = 0.1 per weight, adaptive norm 31.9 (≈ ρ√d)" in md
    assert "worst case ball radius 0.5" in md
    assert qgen.average_radii(sharp) == {"mlp": pytest.approx(31.9)}
