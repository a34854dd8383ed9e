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


def _thesis_base() -> dict:
    return dict(
        dataset="mnist", arch="mlp", epochs=3, train_limit=400, **TH.THESIS_SETTINGS
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
    assert "row 70 % of epochs" in text and verdict == "partly"
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
    zips = {"nested": {"fp32_bytes": 360_000, "int8_bytes": 50_000, "ratio": 7.2}}
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
    assert "0.36 → 0.050 MB (7.2×)" in row["companion value"]
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
