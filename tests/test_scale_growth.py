"""companion.chapters.scale_growth: steps, trajectories, growth, level-off, rules, figure, verdict.

Histories are synthetic (scales from formulas whose growth per step and level-off are known);
the step count per epoch is also checked against Keras's own optimizer iterations.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from companion.chapters import scale_growth as G
from companion.chapters import style

S0 = G.INITIAL_SCALE
LR = 1e-4
SPE = 57  # steps per epoch of 1800 training images in batches of 32
PARAMS = ("dense1/kernel", "dense1/bias")


def _history(scale_of_step, epochs: int = 20, m: float = 1000.0, bias_m0: bool = True):
    """A wide history (epoch 0..E) whose every parameter follows ``scale_of_step(step)``."""
    epoch = np.arange(epochs + 1)
    s = scale_of_step(epoch * SPE)
    cols = {"epoch": epoch}
    for p in PARAMS:
        cols[f"{p}/scale_mean"] = s
        cols[f"{p}/scale_min"] = s
        cols[f"{p}/scale_max"] = s
        mq = np.full(len(epoch), m)
        if p.endswith("bias") and bias_m0:
            mq[0] = 0.0  # zero-initialised bias: no scale gradient at the start
        cols[f"{p}/max_abs_q"] = mq
    cols["loss"] = np.linspace(2, 1, len(epoch))
    return pd.DataFrame(cols)


def _record(h: str, lam: float, opt: str, lr: float = LR) -> dict:
    return dict(
        config_hash=h,
        threshold=lam,
        optimizer=opt,
        lr=lr,
        batch_size=32,
        n_train=1800,
        seed=42,
    )


def _traj(rate_of: dict, **kw) -> pd.DataFrame:
    """Runs ``{(λ, optimizer): growth per step}`` of linear scales s0 + rate·t."""
    recs, hists = [], {}
    for i, ((lam, opt), rate) in enumerate(rate_of.items()):
        h = f"run{i}"
        recs.append(_record(h, lam, opt))
        hists[h] = _history(lambda t, r=rate: S0 + r * t, **kw)
    return G.trajectories(pd.DataFrame(recs), hists)


# ------------------------------------------------------------------------------ steps


@pytest.mark.parametrize(
    "record, want",
    [
        ({"batch_size": 32, "n_train": 1800}, 57),
        ({"batch_size": 32, "n_train": float("nan"), "train_limit": 2000}, 57),
        ({"batch_size": 32, "train_limit": 2000, "validation_fraction": 0.1}, 57),
        ({"batch_size": 32, "train_limit": None, "dataset": "mnist"}, 1688),
        ({"batch_size": 32, "dataset": "mnist", "validation_fraction": 0.0}, 1875),
        ({"batch_size": 128, "dataset": "cifar10", "validation_fraction": 0.0}, 391),
    ],
)
def test_steps_per_epoch(record, want):
    assert G.steps_per_epoch(record) == want


def test_steps_per_epoch_matches_keras_iterations():
    x, y = np.zeros((100, 2), np.float32), np.zeros((100, 1), np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 2 * G.steps_per_epoch(
        {"batch_size": 32, "n_train": 100}
    )


@pytest.mark.parametrize(
    "record, match",
    [
        ({"batch_size": 0, "n_train": 10}, "batch_size=0"),
        ({"n_train": 10}, "batch_size=None"),
        ({"batch_size": 8, "dataset": "svhn"}, "cannot count.*'svhn'"),
    ],
)
def test_steps_per_epoch_errors(record, match):
    with pytest.raises(ValueError, match=match):
        G.steps_per_epoch(record)


# ------------------------------------------------------------------- trajectories, growth


def test_trajectories_are_tidy_with_steps():
    traj = _traj({(1e-10, "adam"): LR, (1e-10, "sgd"): 1e-3 * LR}, epochs=3)
    assert len(traj) == 2 * len(PARAMS) * 4
    assert set(traj["parameter"]) == set(PARAMS)
    run0 = traj[(traj["run"] == "run0") & (traj["parameter"] == "dense1/kernel")]
    assert run0["step"].tolist() == [0, 57, 114, 171]
    np.testing.assert_allclose(run0["scale"], S0 + LR * run0["step"])
    assert {"threshold", "optimizer", "lr", "seed", "max_abs_q"} <= set(traj.columns)


def test_trajectories_errors():
    with pytest.raises(ValueError, match=r"lacks \['threshold'\]"):
        G.trajectories(
            pd.DataFrame([{**_record("a", 1e-9, "adam"), "threshold": None}])
        )
    no_scales = {"a": pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5]})}
    with pytest.raises(ValueError, match="no '<layer>/<param>/scale_mean'"):
        G.trajectories([_record("a", 1e-9, "adam")], no_scales)


def test_adam_prediction():
    np.testing.assert_allclose(G.adam_prediction([0, 10], 1e-3, 1.0), [1.0, 1.01])
    np.testing.assert_allclose(G.adam_prediction([5], LR), [S0 + 5 * LR])
    with pytest.raises(ValueError, match="lr=0"):
        G.adam_prediction([1], 0)


def test_growth_table_by_hand():
    lam = 1e-9
    traj = _traj({(lam, "adam"): 0.5 * LR, (lam, "sgd"): 1e-3 * LR}, epochs=2)
    gt = G.growth_table(traj).set_index(["optimizer", "parameter", "interval"])
    row = gt.loc[("adam", "dense1/kernel", 1)]
    assert (row["step_start"], row["step_end"]) == (0, SPE)
    np.testing.assert_allclose(row["growth_per_step"], 0.5 * LR)
    np.testing.assert_allclose(row["ratio"], 0.5)
    b = 1000.0 * math.tanh(lam)
    np.testing.assert_allclose(row["gradient_bound"], b)
    np.testing.assert_allclose(row["predicted_step"], LR * b / (b + 1e-7))
    sgd = gt.loc[("sgd", "dense1/kernel", 2)]
    np.testing.assert_allclose(sgd["predicted_step"], LR * b / (1 - 0.9))
    assert gt.loc[("adam", "dense1/bias", 1), "gradient_bound"] == 0.0
    assert G.ADAM_EPSILON == 1e-7


# ---------------------------------------------------------------------------- level-off


def test_level_off_step_on_curves_with_known_answers():
    t = np.arange(0, 1001, 10.0)
    # s0 + A (1 - exp(-t/tau)): grows < 5 % over the rest once s(t) >= s(T) / 1.05
    s0, a, tau = 1e-5, 1e-2, 50.0
    sat = s0 + a * (1 - np.exp(-t / tau))
    t_star = -tau * math.log(1 - (sat[-1] / 1.05 - s0) / a)
    assert G.level_off_step(t, sat) == t[np.searchsorted(t, t_star)]
    # a jump at step 100, flat after it
    assert G.level_off_step(t, np.where(t < 100, 1e-5, 1e-3)) == 100
    # never grows: levels off at the first step
    assert G.level_off_step(t, np.full(len(t), 1e-5)) == 0
    # steady growth, linear or as sqrt(t), never levels off
    assert math.isnan(G.level_off_step(t, s0 + 1e-4 * t))
    assert math.isnan(G.level_off_step(t, s0 + 1e-4 * np.sqrt(t)))
    # flat only over the last 20 % of the run: less than min_tail (25 %) is left
    late = np.minimum(t, 800.0) * 1e-4 + s0
    assert math.isnan(G.level_off_step(t, late))
    first_in_5pct = (late[-1] / 1.05 - s0) / 1e-4  # 761.9: the step 770 of the grid
    assert (
        G.level_off_step(t, late, min_tail=0.1) == t[np.searchsorted(t, first_in_5pct)]
    )
    # a later rise of more than 5 % undoes an earlier plateau
    bump = np.where(t < 100, 1e-5, np.where(t < 600, 1e-3, 1.2e-3))
    assert G.level_off_step(t, bump) == 600


@pytest.mark.parametrize(
    "args, kw, match",
    [
        (([0, 1], [1.0]), {}, "equal length"),
        (([0], [1.0]), {}, ">= 2"),
        (([1, 0], [1.0, 1.0]), {}, "increasing"),
        (([0, 1], [1.0, 0.0]), {}, "positive"),
        (([0, 1], [1.0, 1.0]), {"rise": 0}, "rise=0"),
        (([0, 1], [1.0, 1.0]), {"min_tail": 1.0}, "min_tail=1.0"),
    ],
)
def test_level_off_step_errors(args, kw, match):
    with pytest.raises(ValueError, match=match):
        G.level_off_step(*args, **kw)


def test_level_offs_per_run_and_parameter():
    recs = [_record("sat", 1e-8, "adam"), _record("lin", 1e-10, "adam")]
    hists = {
        "sat": _history(
            lambda t: np.where(t < 3 * SPE, S0 + LR * t, S0 + LR * 3 * SPE)
        ),
        "lin": _history(lambda t: S0 + LR * t),
    }
    offs = G.level_offs(G.trajectories(recs, hists)).set_index(["run", "parameter"])
    sat = offs.loc[("sat", "dense1/kernel")]
    assert sat["level_off_step"] == 3 * SPE
    np.testing.assert_allclose(sat["level_off_scale"], S0 + LR * 3 * SPE)
    np.testing.assert_allclose(sat["bound_over_eps"], 1000 * math.tanh(1e-8) / 1e-7)
    np.testing.assert_allclose(sat["first_ratio"], 1.0)
    assert math.isnan(offs.loc[("lin", "dense1/kernel"), "level_off_step"])
    assert offs.loc[("lin", "dense1/kernel"), "final_step"] == 20 * SPE


# ------------------------------------------------------------------------ rules, verdict


def test_checks_support_the_hypothesis_when_adam_grows_by_lr_whatever_lambda():
    rates = {(lam, "adam"): LR for lam in (1e-12, 1e-10, 1e-8)}
    rates |= {(lam, "sgd"): 1e-4 * LR for lam in (1e-12, 1e-10, 1e-8)}
    checks = G.hypothesis_checks(_traj(rates))
    assert checks["first_steps"] == [SPE]
    assert checks["n_scales"] == 6  # kernels only: the biases start with m = 0
    assert checks["adam_ratio_min"] == pytest.approx(1.0)
    assert checks["slope"] == pytest.approx(0.0, abs=1e-9)
    assert checks["sgd_over_adam"] == pytest.approx(1e-4)
    assert checks["r1"] and checks["r2"] and checks["r3"] and checks["supported"]


def test_checks_reject_growth_proportional_to_lambda():
    rates = {(lam, "adam"): LR * lam / 1e-8 for lam in (1e-12, 1e-10, 1e-8)}
    checks = G.hypothesis_checks(_traj(rates))
    assert checks["slope"] == pytest.approx(1.0)
    assert checks["r1"] is False and checks["r2"] is False
    assert checks["r3"] is None and checks["supported"] is None  # no SGD runs
    with pytest.raises(ValueError, match="adam_factor > 1"):
        G.hypothesis_checks(_traj(rates), adam_factor=1.0)


def test_verdict_markdown_formats_measured_numbers():
    rates = {(1e-10, "adam"): 2 * LR, (1e-8, "adam"): 2 * LR}
    rates |= {(1e-10, "sgd"): 1e-3 * LR, (1e-8, "sgd"): 1e-3 * LR}
    traj = _traj(rates)
    text = G.verdict_markdown(traj, regimes={"short": 570, "long": 37_500})
    assert "4 runs (2 Adam, 2 SGD; λ = 1e-10, 1e-8; lr = 1e-4)" in text
    assert "steps 0 to 57" in text
    assert "grew by 2 × lr per step" in text and "**holds**" in text
    assert "slope 0.00 of log growth" in text
    assert "5e-4 × as fast as Adam's" in text  # (1e-3 lr) / (2 lr)
    assert "The hypothesis is **supported**" in text
    # every Adam run grows at 2 lr per step: equal scales at step 570, no spread across λ
    assert "at step 570 (short) they span 0.114, a factor 1 across λ" in text
    assert "step 37,500 (long) lies beyond these runs (last logged step 1,140)" in text
    assert "0 of 4 Adam scales levelled off" in text
    half = G.verdict_markdown(_traj({k: v / 2 for k, v in rates.items()}))
    assert "grew by 1 × lr per step" in half
    assert "trade off" not in text  # equal growth: no λ reaches another's scale earlier


def test_verdict_markdown_not_supported_and_trade_off():
    rates = {(lam, "adam"): LR * lam / 1e-8 for lam in (1e-10, 1e-8)}
    rates |= {(lam, "sgd"): 1e-6 * LR for lam in (1e-10, 1e-8)}
    text = G.verdict_markdown(_traj(rates))
    assert "The hypothesis is **not supported**" in text
    assert "a 10× larger λ made that growth 10× larger (slope 1.00" in text
    # λ = 1e-8 grows 100× faster, so it reaches λ = 1e-10's final scale at step 1140 / 100
    assert (
        "λ = 1e-8 reached the final scale of λ = 1e-10 (step 1,140) by step 11" in text
    )


# ------------------------------------------------------------------------------ figure


def test_figure_panels_per_optimizer_with_the_adam_line():
    rates = {(lam, opt): LR * 0.1 for lam in (1e-10, 1e-8) for opt in ("adam", "sgd")}
    fig = G.draw_scale_growth(_traj(rates), "dense1/kernel")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["Adam", "SGD (momentum 0.9)"]
    assert all(ax.get_yscale() == "log" for ax in axes)
    dashed = [ln for ln in axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), S0 + LR * dashed[0].get_xdata())
    size, text = style.smallest_text(fig)
    assert size >= style.MIN_FONT_PT, text
    plt.close(fig)


def test_figure_rings_level_off_and_checks_arguments():
    recs = [_record("sat", 1e-8, "adam")]
    hists = {"sat": _history(lambda t: np.minimum(S0 + LR * t, S0 + LR * 2 * SPE))}
    traj = G.trajectories(recs, hists)
    fig = G.draw_scale_growth(traj)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-1] == "levels off"
    plt.close(fig)
    with pytest.raises(ValueError, match="parameter='dense9/kernel'.*dense1/bias"):
        G.draw_scale_growth(traj, "dense9/kernel")
    two = pd.concat([traj, traj.assign(lr=1e-3, run="other")])
    with pytest.raises(ValueError, match="lr=None.*1e-4, 1e-3"):
        G.draw_scale_growth(two)
    plt.close(G.draw_scale_growth(two, lr=1e-3))
