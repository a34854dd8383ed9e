"""The thesis claims page: settings arithmetic, integer counts, zip sizes and verdict rules.

Every rule is checked on a synthetic run summary where the answer is known: built so
that the thesis's statement holds, and altered so that it does not.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pandas as pd
import pytest

from companion.chapters import claims as C
from companion.chapters import thesis as TH
from companion.engine import config

LAMBDAS = [0.0, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7]
RATES = [1e-10, 1e-9, 1e-8, 1e-7, 1e-6]


# ------------------------------------------------------------------------------------------
# settings


def test_steps_per_epoch_counts_the_images_left_after_the_validation_split():
    # 8000 - round(800) = 7200 images / 32 = 225 steps; 54000 / 32 = 1687.5 -> 1688
    assert TH.steps_per_epoch(8000, 0.1, 32) == 225
    assert TH.steps_per_epoch(60000, 0.1, 32) == 1688
    assert TH.steps_per_epoch(100, 0.0, 32) == 4
    with pytest.raises(ValueError, match="batch_size=0"):
        TH.steps_per_epoch(100, 0.1, 0)


def test_epochs_for_steps_rounds_to_the_nearest_epoch():
    # 37,500 / 225 = 166.7 -> 167 epochs (37,575 steps); 37,500 / 1688 = 22.2 -> 22
    assert TH.epochs_for_steps(TH.THESIS_STEPS, 8000, 0.1, 32) == 167
    assert TH.epochs_for_steps(TH.THESIS_STEPS, 60000, 0.1, 32) == 22
    assert TH.epochs_for_steps(1, 60000, 0.1, 32) == 1
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TH.epochs_for_steps(0, 8000, 0.1, 32)


def test_validation_cadence_follows_the_thesis_steps_between_validations():
    assert TH.THESIS_VALIDATION_STEPS == 1875  # 60,000 / 32
    assert TH.validation_cadence(225) == 8  # MNIST 10k subset: every 1,800 steps
    assert TH.validation_cadence(1688) == 1  # complete training set: every epoch
    assert TH.validation_cadence(1) == 1875
    with pytest.raises(ValueError, match="steps_per_epoch_=0"):
        TH.validation_cadence(0)


def _thesis_base() -> dict:
    # validation_every as thesis_base sets it on the MNIST subset: the FP32 reference must
    # still be the post-training runs' parent
    return dict(
        dataset="mnist",
        arch="mlp",
        epochs=3,
        train_limit=400,
        validation_every=8,
        **TH.THESIS_SETTINGS,
    )


def test_thesis_configs_build_every_part_and_share_the_fp32_parent():
    parts = TH.thesis_configs(
        _thesis_base(),
        thresholds=LAMBDAS,
        granularities=["row", "column", "scalar"],
        post_training_granularities=["row"],
        terms=["difference", "max_bin", "inverse"],
        rates=RATES,
        scalar_inverse_rates=[1e-12, 1e-8],
        sgd_thresholds=[1e-10],
        post_training_terms=["difference"],
    )
    sizes = {k: len(v) for k, v in parts.items()}
    # loss terms: 3 terms x 5 rates (row) + 2 scalar inverse + 5 Difference post-training
    assert sizes == {
        "fp32": 1,
        "nested": 21,
        "post_training": 7,
        "loss_terms": 22,
        "sgd": 1,
    }
    (fp32,) = parts["fp32"]
    assert fp32["lr"] == 1e-4 and fp32["weight_init"] == "random_normal"
    assert fp32["seed"] == 42 and fp32["batch_size"] == 32
    for post in parts["post_training"]:
        assert config.parent_config(post) == fp32
    difference = [c for c in parts["loss_terms"] if c["rate_deviation"]]
    assert len(difference) == 10
    for post in (c for c in difference if c["mode"] == "post_training"):
        assert config.parent_config(post) == fp32
    assert {c["deviation_form"] for c in difference} == {"implementation"}
    assert {
        c["kernel_granularity"] for c in parts["loss_terms"] if c["rate_inverse"]
    } == {
        "row",
        "scalar",
    }
    assert parts["sgd"][0]["optimizer"] == "sgd"


def test_thesis_settings_per_network():
    assert TH.thesis_settings("mlp") == TH.THESIS_SETTINGS
    assert "lr_steps" not in TH.THESIS_SETTINGS  # MNIST hashes stay as they were
    cnn, resnet = TH.thesis_settings("cnn"), TH.thesis_settings("resnet")
    assert (cnn["batch_size"], resnet["batch_size"]) == (128, 64)
    assert {cnn["lr"], resnet["lr"], cnn["seed"]} == {1e-4, 42}
    assert "lr_steps" not in cnn
    assert resnet["lr_steps"] == [[40, 0.5], [60, 0.2]]
    with pytest.raises(ValueError, match="unknown thesis network 'vgg'"):
        TH.thesis_settings("vgg")


CONV_SWEEPS = {"thresholds": [0.0, 1e-11], "rates": [1e-10, 1e-9]}


def test_conv_configs_at_the_published_settings():
    cifar = TH.conv_configs("cifar10", CONV_SWEEPS)
    # 4 granularities x 2 λ, from scratch and post-training; 3 terms x 2 rates, channel
    sizes = [len(cifar[k]) for k in ("fp32", "nested", "post_training", "loss_terms")]
    assert sizes == [1, 8, 8, 6] and not cifar["sgd"]
    (fp32,) = cifar["fp32"]
    assert (fp32["arch"], fp32["batch_size"], fp32["epochs"]) == ("cnn", 128, 100)
    assert fp32["lr_steps"] is None and fp32["weight_init"] == "random_normal"
    assert fp32["train_limit"] is None and fp32["validation_fraction"] == 0.1
    assert {c["kernel_granularity"] for c in cifar["nested"]} == set(
        TH.THESIS_GRANULARITIES["cnn"]
    )
    assert {c["kernel_granularity"] for c in cifar["loss_terms"]} == {"channel"}
    for post in cifar["post_training"]:
        assert config.parent_config(post) == fp32
    net = TH.conv_configs("imagenette", {**CONV_SWEEPS, "seeds": [42, 43]})
    fp32 = net["fp32"][0]
    assert (fp32["arch"], fp32["batch_size"], fp32["epochs"]) == ("resnet", 64, 100)
    assert fp32["lr_steps"] == [[40, 0.5], [60, 0.2]]
    # the post-training runs start from the FP32 network trained with the decay
    parents = {
        config.config_hash(config.parent_config(c)) for c in net["post_training"]
    }
    assert parents == {config.config_hash(c) for c in net["fp32"]}
    assert all(c["lr_steps"] == fp32["lr_steps"] for c in net["post_training"])
    # configuration keys override the published settings
    short = TH.conv_configs("cifar10", {**CONV_SWEEPS, "epochs": 3, "train_limit": 500})
    assert {(c["epochs"], c["train_limit"]) for c in short["nested"]} == {(3, 500)}


def test_conv_configs_refuse_unknown_keys_and_datasets():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lamdas'\]"):
        TH.conv_configs("cifar10", {**CONV_SWEEPS, "lamdas": [1e-9]})
    with pytest.raises(ValueError, match=r"missing \['rates'\]"):
        TH.conv_configs("cifar10", {"thresholds": [1e-9]})
    with pytest.raises(ValueError, match="unknown convolutional dataset 'mnist'"):
        TH.conv_configs("mnist", CONV_SWEEPS)


def test_conv_sweeps_run_only_where_asked_and_present():
    everything = {"cifar10": True, "imagenette": True}
    assert TH.conv_sweep_configs(None, everything) == {}
    only = TH.conv_sweep_configs(CONV_SWEEPS, {"cifar10": False, "imagenette": True})
    assert list(only) == ["imagenette"] and len(only["imagenette"]) == 23
    # the smoke and cpu profiles ask for none, the full one for both networks
    from companion.engine import runner

    for profile in ("smoke", "cpu"):
        params = runner.resolve_parameters("thesis_claims", profile)
        assert params["conv_sweeps"] is None
    full = runner.resolve_parameters("thesis_claims", "full")["conv_sweeps"]
    runs = TH.conv_sweep_configs(full, everything)
    # FP32 + 4 granularities x 6 λ x 2 modes + 3 terms x 6 rates, per seed
    assert {d: len(c) for d, c in runs.items()} == {"cifar10": 201, "imagenette": 201}


def test_thesis_configs_refuse_an_unknown_term():
    with pytest.raises(ValueError, match="unknown loss term 'diff'"):
        TH.thesis_configs(
            _thesis_base(),
            thresholds=[1e-10],
            granularities=["row"],
            post_training_granularities=[],
            terms=["diff"],
            rates=[1e-7],
            scalar_inverse_rates=[],
        )


# ------------------------------------------------------------------------------------------
# integers and zip sizes


def test_integer_stats_pool_all_parameters():
    a = np.array([[-12, 0, 11], [3, 3, 0]])
    b = np.arange(-12, 12)  # 24 values -> ceil(log2 24) = 5 bits
    assert C.integer_stats([a, b]) == {"distinct": 24, "lo": -12, "hi": 11, "bits": 5}
    assert C.integer_stats([np.zeros(4, int)]) == {
        "distinct": 1,
        "lo": 0,
        "hi": 0,
        "bits": 1,
    }
    assert C.integer_stats([np.array([-1, 1])])["bits"] == 1
    assert C.integer_stats([np.array([-1, 0, 1])])["bits"] == 2
    with pytest.raises(ValueError, match="at least one non-empty"):
        C.integer_stats([])


def test_zip_sizes_zip_npy_files_fp32_against_int8():
    rng = np.random.default_rng(0)
    floats = {"d/kernel": rng.normal(size=(50, 20)).astype(np.float32)}
    ints = {"d/kernel": rng.integers(-3, 4, size=(50, 20))}
    out = C.zip_sizes(floats, ints)
    assert out["ratio"] == pytest.approx(out["fp32_bytes"] / out["int8_bytes"])
    assert out["int8_bytes"] < out["fp32_bytes"]
    # the archive holds exactly the .npy files of the thesis's method
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        member = io.BytesIO()
        np.save(member, floats["d/kernel"])
        zf.writestr("d/kernel.npy", member.getvalue())
    assert out["fp32_bytes"] == len(buf.getvalue())
    assert out["wider"] == {}
    # a tensor beyond int8 is kept exact in the next integer type, and named
    wide = C.zip_sizes(floats, {"d/kernel": np.array([200, -3])})
    assert wide["wider"] == {"d/kernel": "int16"}


# ------------------------------------------------------------------------------------------
# rules on a synthetic summary


def _row(
    kind, gran, value, *, acc, distinct, mode="from_scratch", val_loss=0.3, h=None
):
    lo = -(distinct // 2)
    return {
        "hash": h or f"{kind}-{gran}-{mode}-{value}",
        "dataset": "mnist",
        "kind": kind,
        "mode": mode,
        "granularity": gran,
        "threshold": value if kind in ("nested", "sgd") else np.nan,
        "rate": value if kind not in ("nested", "sgd", "fp32") else np.nan,
        "val_accuracy": acc,
        "test_accuracy": acc,
        "val_loss": val_loss,
        "test_loss": val_loss,
        "distinct": distinct,
        "lo": lo,
        "hi": lo + distinct - 1,
        "bits": max(1, math.ceil(math.log2(distinct))) if distinct else np.nan,
    }


def _thesis_like() -> pd.DataFrame:
    """A summary in which the thesis's MNIST statements hold."""
    rows = [_row("fp32", None, np.nan, acc=0.95, distinct=0, h="fp32")]
    for gran in ("row", "column", "scalar"):
        for lam in LAMBDAS:
            fine = lam <= 1e-10
            acc = 0.95 if fine else (0.90 if gran == "scalar" else 0.93)
            distinct = {0.0: 250, 1e-12: 120, 1e-11: 60, 1e-10: 24}.get(lam, 8)
            loss = 0.28 if lam == 1e-10 else (0.6 if gran == "scalar" else 0.4)
            rows.append(
                _row("nested", gran, lam, acc=acc, distinct=distinct, val_loss=loss)
            )
    for lam in LAMBDAS:
        acc = 0.95 if lam <= 1e-10 else 0.93
        distinct = {1e-10: 24}.get(lam, 30 if lam < 1e-10 else 8)
        rows.append(
            _row("nested", "row", lam, acc=acc, distinct=distinct, mode="post_training")
        )
    for term, best in (("difference", 9), ("max_bin", 14), ("inverse", 12)):
        for r in RATES:
            ok = r <= 1e-7
            distinct = best if r == 1e-7 else (40 if r < 1e-7 else 3)
            if term == "inverse":
                distinct -= 1 if r != 1e-7 else -5
            loss = 0.29 if r < 1e-6 else 0.5
            rows.append(
                _row(
                    term,
                    "row",
                    r,
                    acc=0.95 if ok else 0.8,
                    distinct=distinct,
                    val_loss=loss,
                )
            )
    for r in (1e-12, 1e-8):
        rows.append(_row("inverse", "scalar", r, acc=0.7, distinct=60))
    for r in RATES:  # Difference from the FP32 network: the same trade-off point, 1e-7
        distinct = 9 if r == 1e-7 else (40 if r < 1e-7 else 3)
        rows.append(
            _row(
                "difference",
                "row",
                r,
                acc=0.95 if r <= 1e-7 else 0.8,
                distinct=distinct,
                mode="post_training",
            )
        )
    df = pd.DataFrame(rows)
    df.loc[df["kind"] == "fp32", "val_loss"] = 0.3
    return df


def test_tradeoff_point_picks_fewest_integers_within_half_a_point_on_validation():
    sweep = pd.DataFrame(
        {
            "threshold": [1e-12, 1e-11, 1e-10, 1e-9],
            "val_accuracy": [0.951, 0.946, 0.9451, 0.9449],
            "distinct": [100, 20, 20, 5],
        }
    )
    best = C.tradeoff_point(sweep, 0.95)
    # 1e-9 is 0.51 points below: excluded; 1e-11 and 1e-10 tie on 20 -> the smaller λ
    assert best["threshold"] == 1e-11
    assert C.tradeoff_point(sweep, 0.99) is None
    with pytest.raises(ValueError, match="lacks column"):
        C.tradeoff_point(sweep.drop(columns="distinct"), 0.95)


@pytest.mark.parametrize(
    "hold,parts,expected",
    [(3, 3, "reproduced"), (1, 3, "partly"), (0, 2, "not reproduced")],
)
def test_graded(hold, parts, expected):
    assert C.graded(hold, parts) == expected


def test_graded_refuses_impossible_counts():
    with pytest.raises(ValueError, match="n_hold=4"):
        C.graded(4, 3)


def test_rules_reproduce_on_a_thesis_like_summary():
    s = _thesis_like()
    assert C.n1(s)[1] == "reproduced"
    text, verdict = C.n2(s)
    assert verdict == "reproduced" and "24 integers" in text and "5 bits" in text
    assert C.n4(s)[1] == "reproduced"
    assert C.n5(s)[1] == "reproduced"
    assert C.l1(s) == ("difference, γ = 1e-7: -4…4, 9 integers, 4 bits", "reproduced")
    assert C.l2(s)[1] == "reproduced"
    assert C.l3(s) == ("first rise at γ = 1e-6", "reproduced")
    assert C.l4(s)[1] == "reproduced"


def test_rules_do_not_reproduce_when_the_statement_fails():
    s = _thesis_like()
    # every granularity keeps its accuracy up to 1e-7: 1e-9, 1e-8 and 1e-7 tie on the
    # fewest integers, and the smaller λ of a tie is the trade-off point
    s.loc[s["kind"] == "nested", "val_accuracy"] = 0.95
    assert C.n1(s) == ("row 1e-9, column 1e-9, scalar 1e-9", "not reproduced")
    # row-wise at 1e-10 with 100 integers (7 bits) and 3 points below FP32
    pick = (
        (s["kind"] == "nested")
        & (s["granularity"] == "row")
        & (s["threshold"] == 1e-10)
    )
    s.loc[pick & (s["mode"] == "from_scratch"), ["bits", "test_accuracy"]] = [7, 0.92]
    assert C.n2(s)[1] == "not reproduced"
    # without post-training runs N5 is not run; when none qualifies, not reproduced
    scratch_only = s[s["mode"] == "from_scratch"]
    assert C.n5(scratch_only)[1] == C.NOT_RUN_PROFILE
    low = s.copy()
    low.loc[
        (low["mode"] == "post_training") & (low["kind"] == "difference"), "val_accuracy"
    ] = 0.5
    assert C.l4(low) == (
        "no post-training value within 0.5 points of FP32",
        "not reproduced",
    )
    # no Difference rate ever raises the validation loss
    s.loc[s["kind"] == "difference", "val_loss"] = 0.2
    assert C.l3(s) == ("no rise up to γ = 1e-6", "not reproduced")


def test_n3_counts_epochs_below_both_references():
    s = _thesis_like()
    epochs = 10
    histories = {
        h: pd.DataFrame({"val_loss": np.full(epochs + 1, 0.5)}) for h in s["hash"]
    }
    for h in s.loc[(s["kind"] == "nested") & (s["threshold"] == 1e-10), "hash"]:
        loss = np.full(epochs + 1, 0.4)
        loss[1:4] = 0.6  # 3 of 10 epochs above: 70 % below
        histories[h] = pd.DataFrame({"val_loss": loss})
    text, verdict = C.n3(s, histories)
    assert "row 70 % of validated epochs" in text and verdict == "partly"
    # validated every 2nd epoch (validation_every = 2): only epochs 2, 4, ..., 10 count,
    # and of those only epoch 2 is above -> 80 % below
    for history in histories.values():
        history.loc[history.index % 2 == 1, "val_loss"] = np.nan
    text, verdict = C.n3(s, histories)
    assert "row 80 % of validated epochs" in text and verdict == "partly"
    for h in s.loc[(s["kind"] == "nested") & (s["threshold"] == 1e-10), "hash"]:
        histories[h] = pd.DataFrame({"val_loss": np.full(epochs + 1, 0.4)})
    assert C.n3(s, histories)[1] == "reproduced"


def test_ratio_verdict():
    assert C.ratio_verdict(7.2, 7.2) == "reproduced"
    assert C.ratio_verdict(6.0, 7.2) == "reproduced"  # factor 1.2
    assert C.ratio_verdict(4.0, 7.2) == "partly"  # factor 1.8
    assert C.ratio_verdict(3.0, 7.2) == "not reproduced"


def test_evaluate_claims_marks_missing_data_and_profile():
    s = _thesis_like()
    histories = {h: pd.DataFrame({"val_loss": np.full(3, 0.2)}) for h in s["hash"]}
    zips = {
        "mnist": {"nested": {"fp32_bytes": 360_000, "int8_bytes": 50_000, "ratio": 7.2}}
    }
    table = C.evaluate_claims(
        {"mnist": s},
        histories,
        zips,
        present={"mnist": True, "cifar10": False, "imagenette": False},
    )
    assert list(table["claim"]) == [c.id for c in C.CLAIMS]
    verdict = dict(zip(table["claim"], table["verdict"], strict=True))
    for cid in ("N6", "N7", "N8", "L5", "L6"):
        assert verdict[cid] == C.NOT_RUN_DATA
    assert verdict["N9"] == "reproduced" and verdict["L4"] == "reproduced"
    assert verdict["L7"] == C.NOT_RUN_PROFILE
    row = table.set_index("claim").loc["N9"]
    assert "MNIST: 0.36 → 0.050 MB (7.2×)" in row["companion value"]
    text = C.claims_markdown(table, "MNIST (10k subset), cpu, seed 42")
    assert text.startswith("Measured values: MNIST (10k subset), cpu, seed 42.")
    assert "- **N9** (thesis §4.2.2) · *reproduced*." in text
    assert text.count("\n- **") == len(C.CLAIMS)
    assert set(table["verdict"]) <= set(C.VERDICTS)
    assert sum(C.verdict_counts(table).values()) == len(C.CLAIMS)


def test_run_kind_names_each_part():
    assert C.run_kind({"flavour": "fp32"}) == "fp32"
    assert C.run_kind({"flavour": "nested", "optimizer": "adam"}) == "nested"
    assert C.run_kind({"flavour": "nested", "optimizer": "sgd"}) == "sgd"
    assert C.run_kind({"flavour": "loss_terms", "rate_deviation": 1e-7}) == "difference"
    assert C.run_kind({"flavour": "loss_terms", "rate_inverse": 1e-9}) == "inverse"


def test_setting_words_count_steps_from_the_trained_images():
    runs = pd.DataFrame(
        {
            "dataset_label": ["MNIST (10k subset)"] * 2,
            "n_train": [7200, 7200],
            "epochs": [167, 167],
            "batch_size": [32, 32],
            "seed": [43, 42],
        }
    )
    assert TH.setting_words(runs, "cpu") == (
        "MNIST (10k subset), profile cpu, seeds 42, 43, 37,575 steps "
        "(167 epochs of 7,200 images)"
    )


def test_full_size_table_puts_the_two_training_sets_side_by_side():
    small = _thesis_like()
    big = small.assign(dataset="fashion_mnist")
    big.loc[big["kind"] == "fp32", "test_accuracy"] = 0.87
    table = C.full_size_table(small, big, ["MNIST (10k subset)", "Fashion-MNIST"])
    assert list(table["dataset"]) == ["MNIST (10k subset)", "Fashion-MNIST"]
    assert list(table["trade-off λ"]) == ["1e-10", "1e-10"]
    assert list(table["bits"]) == ["5", "5"]
    assert list(table["FP32 test acc. (%)"]) == ["95.0 %", "87.0 %"]


# ------------------------------------------------------------------------------------------
# the CIFAR-10 CNN and the Imagenette ResNet (seed means; paired tests with several seeds)

CONV_LAMBDAS = [0.0, 1e-12, 1e-11, 1e-10, 1e-9]
CONV_RATES = [1e-11, 1e-10, 1e-9]
CONV_GRANS = ("channel", "row", "column", "scalar")


def _conv_row(kind, gran, value, *, acc, distinct, seed, dataset, mode="from_scratch"):
    row = _row(kind, gran, value, acc=acc, distinct=distinct, mode=mode)
    row.update(
        hash=f"{row['hash']}-{seed}",
        dataset=dataset,
        seed=seed,
        kernel_lo=row["lo"],
        kernel_hi=row["hi"],
        bias_max=5.0,
    )
    return row


def _conv_like(dataset, seeds, *, fp32, drops, gain, term_acc, term_distinct):
    """A convolutional summary: FP32 at ``fp32``; nested at every λ and granularity, from
    scratch and post-training (``gain`` above, plus 0.1 point on odd seeds), 60 integers
    at 1e-11 and 20 (-10…9) at 1e-10, ``drops`` (λ -> accuracy) below FP32; the loss terms
    with channel scales at ``term_acc``. Small per-seed and per-granularity noise."""
    rows = []
    for seed in seeds:
        noise = 0.0003 * ((seed % 3) - 1)
        common = dict(seed=seed, dataset=dataset)
        rows.append(
            _conv_row("fp32", None, np.nan, acc=fp32 + noise, distinct=0, **common)
        )
        for i, gran in enumerate(CONV_GRANS):
            wobble = noise + 0.0002 * ((seed + i) % 3 - 1)
            for lam in CONV_LAMBDAS:
                acc = fp32 - drops.get(lam, 0.0) + wobble
                distinct = {0.0: 400, 1e-12: 150, 1e-11: 60, 1e-10: 20}.get(lam, 8)
                gained = gain + 0.001 * (seed % 2) if gain else 0.0
                for mode, up in (("from_scratch", 0.0), ("post_training", gained)):
                    rows.append(
                        _conv_row(
                            "nested",
                            gran,
                            lam,
                            acc=acc + up,
                            distinct=distinct,
                            mode=mode,
                            **common,
                        )
                    )
        for term in C._TERMS:
            for r in CONV_RATES:
                acc = term_acc + noise
                row = _conv_row(
                    term, "channel", r, acc=acc, distinct=term_distinct, **common
                )
                rows.append(row)
    return pd.DataFrame(rows)


def _cifar_like(seeds=(42,)) -> pd.DataFrame:
    """A CIFAR-10 summary in which N6, N7 and L5 hold."""
    s = _conv_like("cifar10", seeds, fp32=0.80, drops={1e-10: 0.01, 1e-9: 0.1},
                   gain=0.0, term_acc=0.80, term_distinct=63)  # fmt: skip
    # the Difference term at γ >= 1e-10: kernels -28…34 and a bias outlier
    outliers = s["kind"].isin(C._TERMS) & (s["rate"] >= 1e-10)
    s.loc[outliers, ["kernel_lo", "kernel_hi", "bias_max"]] = [-28, 34, 40.0]
    return s


def _imagenette_like(seeds=(42,)) -> pd.DataFrame:
    """An Imagenette summary in which N8 and L6 hold: post-training 3 points above."""
    return _conv_like("imagenette", seeds, fp32=0.75, drops={1e-10: 0.05, 1e-9: 0.15},
                      gain=0.03, term_acc=0.748, term_distinct=100)  # fmt: skip


@pytest.mark.parametrize("seeds", [(42,), (42, 43, 44)])
def test_conv_rules_reproduce_on_thesis_like_summaries(seeds):
    cifar, net = _cifar_like(seeds), _imagenette_like(seeds)
    text, verdict = C.n6(cifar)
    assert verdict == "reproduced", text
    assert "channel 1e-11, row 1e-11, column 1e-11, scalar 1e-11" in text
    assert "row 1e-11: 60 integers, -30…29, 6 bits; row 1e-10: -10…9" in text
    words = "1 seed" if len(seeds) == 1 else "means of 3 seeds"
    assert text.endswith(f"({words})")
    text, verdict = C.n7(cifar)
    assert verdict == "reproduced", text
    if len(seeds) > 1:  # several seeds: the paired equivalence test decides
        assert "3/3 equivalent to scalar (paired TOST)" in text
    text, verdict = C.l5(cifar)
    assert verdict == "reproduced", text
    assert (
        "kernels -28…34; largest |bias integer| 40 vs nested row λ = 1e-11: 5" in text
    )
    assert "channel scales only (not compared)" in text
    text, verdict = C.n8(net)
    assert verdict == "reproduced", text
    assert "channel +3.0 pt" in text
    if len(seeds) > 1:
        assert "4/4 above 0, paired t-test" in text
    text, verdict = C.l6(net)
    assert verdict == "reproduced", text


@pytest.mark.parametrize("seeds", [(42,), (42, 43, 44)])
def test_conv_rules_do_not_reproduce_when_the_statement_fails(seeds):
    cifar = _cifar_like(seeds)
    nested = cifar["kind"] == "nested"
    # every λ keeps the accuracy: the fewest integers (1e-9) become the trade-off point
    flat = cifar.copy()
    flat.loc[nested, ["val_accuracy", "test_accuracy"]] = 0.80
    assert C.n6(flat)[1] == "partly"  # the row-wise integers still match
    wide = flat.copy()
    pick = nested & (wide["granularity"] == "row")
    wide.loc[pick & (wide["threshold"] == 1e-11), "distinct"] = 300
    wide.loc[pick & (wide["threshold"] == 1e-10), ["lo", "hi"]] = [-100, 100]
    assert C.n6(wide)[1] == "not reproduced"
    # row 0.7 points above scalar (both within 0.5 of FP32): accuracy not alike
    apart = cifar.copy()
    low = nested & (apart["threshold"] <= 1e-11)
    apart.loc[low & (apart["granularity"] == "row"), "test_accuracy"] += 0.004
    apart.loc[low & (apart["granularity"] == "scalar"), "test_accuracy"] -= 0.003
    assert C.n7(apart)[1] == "partly"
    # and scalar keeps four times the integers: its bits differ by 2
    apart.loc[nested & (apart["granularity"] == "scalar"), "distinct"] *= 4
    assert C.n7(apart)[1] == "not reproduced"
    # the Difference term's kernels spread over 8 bits, no bias outlier
    terms = cifar.copy()
    diff = terms["kind"] == "difference"
    terms.loc[diff, ["kernel_lo", "kernel_hi", "bias_max"]] = [-100, 100, 1.0]
    assert C.l5(terms)[1] == "not reproduced"
    # row-wise Difference runs with fewer integers: channel is no longer the best
    extra = cifar[diff & (cifar["rate"] == 1e-10)].assign(granularity="row", distinct=9)
    text, verdict = C.l5(pd.concat([cifar, extra], ignore_index=True))
    assert verdict == "partly" and "channel best for 0/1 terms" in text
    net = _imagenette_like(seeds)
    # post-training no better than from scratch
    same = net.copy()
    post = same["mode"] == "post_training"
    same.loc[post, "test_accuracy"] -= 0.03
    assert C.n8(same)[1] == "partly"
    # one term loses 5 points at its largest γ: a front after all; every term: none
    front = net.copy()
    top = front["rate"] == 1e-9
    front.loc[top & (front["kind"] == "inverse"), "val_accuracy"] -= 0.05
    assert C.l6(front)[1] == "partly"
    front.loc[top, "val_accuracy"] = 0.5
    assert C.l6(front)[1] == "not reproduced"


def test_conv_rules_without_their_runs_are_not_run():
    cifar = _cifar_like()
    fp32 = cifar[cifar["kind"] == "fp32"]
    for rule in (C.n6, C.n7, C.n8, C.l5, C.l6):
        assert rule(fp32)[1] == C.NOT_RUN_PROFILE
    present = {"mnist": True, "cifar10": True, "imagenette": True}
    s = _thesis_like()
    histories = {h: pd.DataFrame({"val_loss": np.full(3, 0.2)}) for h in s["hash"]}
    # data present but not run in this profile
    table = C.evaluate_claims({"mnist": s}, histories, {}, present)
    verdict = dict(zip(table["claim"], table["verdict"], strict=True))
    for cid in ("N6", "N7", "N8", "L5", "L6"):
        assert verdict[cid] == C.NOT_RUN_PROFILE
    # run: each claim gets its rule's verdict
    summaries = {"mnist": s, "cifar10": cifar, "imagenette": _imagenette_like()}
    table = C.evaluate_claims(summaries, histories, {}, present)
    verdict = dict(zip(table["claim"], table["verdict"], strict=True))
    for cid in ("N6", "N7", "N8", "L5", "L6"):
        assert verdict[cid] == "reproduced", cid


def _zip(ratio):
    return {
        "fp32_bytes": 1_020_000,
        "int8_bytes": round(1_020_000 / ratio),
        "ratio": ratio,
    }


def test_zip_rows_of_every_dataset():
    # thesis ratios: MNIST 0.36/0.05 = 7.2; CIFAR-10 1.02/0.16 = 6.4; Imagenette 6.2
    zips = {"mnist": {"nested": _zip(7.0)}, "cifar10": {"nested": _zip(6.0)}}
    text, verdict = C.n9(zips)
    assert verdict == "reproduced"
    assert text.startswith("MNIST: ") and "; CIFAR-10: 1.02 → " in text
    zips["imagenette"] = {"nested": _zip(4.0)}  # a factor 1.55: partly
    assert C.n9(zips)[1] == "partly"
    zips["imagenette"] = {"nested": _zip(1.0)}
    assert C.n9(zips)[1] == "partly"  # two rows of three reproduced
    assert C.n9({"imagenette": {"nested": _zip(1.0)}})[1] == "not reproduced"
    # L7: Difference 12× (MNIST), 6.0× (CIFAR-10), Inverse 7.4× (Imagenette)
    terms = {
        "mnist": {"difference": _zip(12.0)},
        "cifar10": {"difference": _zip(6.0)},
        "imagenette": {"inverse": _zip(7.4)},
    }
    text, verdict = C.l7(terms)
    assert verdict == "reproduced" and "Imagenette inverse" in text
    terms["cifar10"]["max_bin"] = _zip(2.0)
    assert C.l7(terms)[1] == "partly"


def test_thesis_zips_compare_the_quantized_layers_only(monkeypatch):
    rng = np.random.default_rng(1)
    floats = {
        "conv1a/kernel": rng.normal(size=(3, 3, 3, 8)).astype(np.float32),
        "dense1/kernel": rng.normal(size=(64, 10)).astype(np.float32),
    }
    ints = {"conv1a/kernel": rng.integers(-8, 8, size=(3, 3, 3, 8))}
    monkeypatch.setattr(C, "network_floats", lambda model: floats)
    monkeypatch.setattr(C, "network_integers", lambda model: ints)
    s = _cifar_like()
    out = C.thesis_zips(s, lambda h: h, "cifar10")
    assert set(out) == {"nested", "difference", "max_bin", "inverse"}
    expected = C.zip_sizes({"conv1a/kernel": floats["conv1a/kernel"]}, ints)
    assert out["nested"]["fp32_bytes"] == expected["fp32_bytes"]
    assert out["nested"]["hash"] == "nested-row-post_training-1e-11-42"


def test_run_summary_splits_kernels_and_biases():
    runs = pd.DataFrame(
        [
            {"config_hash": "a", "dataset": "cifar10", "flavour": "nested",
             "mode": "from_scratch", "kernel_granularity": "row", "threshold": 1e-11,
             "optimizer": "adam", "seed": 43, "val_accuracy": 0.8, "test_accuracy": 0.8,
             "val_loss": 0.5, "test_loss": 0.5},
        ]
    )  # fmt: skip
    ints = {"a": {"c/kernel": np.array([-3, 0, 2]), "c/bias": np.array([-9, 1])}}
    row = C.run_summary(runs, ints).iloc[0]
    assert (row["lo"], row["hi"], row["distinct"]) == (-9, 2, 5)
    assert (row["kernel_lo"], row["kernel_hi"], row["bias_max"]) == (-3, 2, 9)
    assert row["seed"] == 43
