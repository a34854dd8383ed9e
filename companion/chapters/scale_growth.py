"""Why λ behaves as it does: how the nested quantizer's scales grow under Adam and under SGD.

The scale gradient of the nested quantizer (thesis 3.1) is :math:`g = m \\cdot
\\operatorname{mean}(v)` with :math:`m = \\max|P_q|` of the scale group and votes
:math:`v_i = -\\tanh(\\lambda - r_i) \\in [-\\tanh\\lambda, 0]`, so

.. math::

    g \\le 0 , \\qquad |g| \\le b := m \\tanh\\lambda ,

and gradient descent only ever grows a scale. Keras's Adam moves a variable by
:math:`\\alpha_t \\hat m_t / (\\sqrt{v_t} + \\epsilon)` (:data:`ADAM_EPSILON` = Keras's default
:math:`\\epsilon`); for a gradient of steady size :math:`|g|` that is about

.. math::

    \\Delta s \\approx \\mathrm{lr} \\, \\frac{|g|}{|g| + \\epsilon} ,

i.e. :math:`\\mathrm{lr}` per step whatever :math:`|g|` while :math:`|g| \\gg \\epsilon`, and
:math:`\\mathrm{lr}\\,|g|/\\epsilon` (plain gradient descent at rate :math:`\\mathrm{lr}/\\epsilon`) once
:math:`|g| \\ll \\epsilon`. SGD with momentum :math:`\\mu = 0.9` moves it by
:math:`\\mathrm{lr}\\,|g| / (1 - \\mu)`.

**Hypothesis** (issue #16): under Adam each step grows a scale by about lr, whatever the
gradient's size, :math:`s(t) \\approx s_0 + \\mathrm{lr}\\, t` (:func:`adam_prediction`), until
:math:`m \\cdot \\operatorname{mean}(v)` becomes small against :math:`\\epsilon`; so λ mostly sets where
growth stops, and the number of steps matters as much as λ.

**Measured** from the engine's per-epoch histories (:func:`trajectories`; step
:math:`t = \\text{epoch} \\times` :func:`steps_per_epoch`): the growth per step of every logged
interval (:func:`growth_table`), the level-off step (:func:`level_off_step`), and the verdict
(:func:`hypothesis_checks`, :func:`verdict_markdown`) with three rules, all on the first logged
interval (the growth before any level-off that the logging can resolve), of every scale that
can move at the start (:math:`m > 0`):

* **R1** (about lr per step): every Adam scale grew by between :math:`\\mathrm{lr}/F` and
  :math:`F\\,\\mathrm{lr}` per step, :math:`F` = ``adam_factor`` (2);
* **R2** (whatever the gradient's size): the slope of :math:`\\log(\\text{growth per step})` against
  :math:`\\log\\lambda` over the Adam runs (median over parameters) is below ``max_slope`` (0.25): 0 if λ
  does not matter, 1 where the step is proportional to the gradient (:math:`|g| \\ll \\epsilon`, or SGD);
* **R3** (SGD much slower): the median ratio of SGD's to Adam's growth per step (same λ and
  parameter) is at most :math:`10^{-k}`, :math:`k` = ``sgd_orders`` (2).

The hypothesis is supported when all three hold.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from companion.chapters.analysis import fmt_sci
from companion.chapters.style import MIN_FONT_PT, panel_grid, sequential_colors
from companion.engine import experiment
from companion.engine.regimes import TRAIN_SPLIT_SIZES, training_images
from lqs.quantizers import MIN_SCALE

if TYPE_CHECKING:
    from companion.engine.store import RunStore

__all__ = [
    "ADAM_EPSILON",
    "SGD_MOMENTUM",
    "INITIAL_SCALE",
    "RISE",
    "MIN_TAIL",
    "steps_per_epoch",
    "trajectories",
    "adam_prediction",
    "growth_table",
    "level_off_step",
    "level_offs",
    "hypothesis_checks",
    "draw_scale_growth",
    "verdict_markdown",
]

#: Adam's epsilon, Keras's default (the engine builds ``keras.optimizers.Adam(learning_rate=lr)``)
ADAM_EPSILON: float = float(
    inspect.signature(keras.optimizers.Adam).parameters["epsilon"].default
)
#: the momentum of the engine's ``"sgd"`` optimizer (:func:`companion.engine.experiment.run`)
SGD_MOMENTUM = 0.9
#: the scales' initial value (the thesis implementation's ``100 * eps``)
INITIAL_SCALE: float = MIN_SCALE
#: a scale has levelled off once it grows by less than this fraction over the rest of the run
RISE = 0.05
#: ... and at least this share of the run's steps is left after the level-off step
MIN_TAIL = 0.25
#: panel text size: >= style.MIN_FONT_PT in print
_TEXT_SIZE = max(9.0, MIN_FONT_PT + 1)
#: the run columns carried into the trajectories (where present)
_KEEP = ("threshold", "optimizer", "lr", "seed", "kernel_granularity", "dataset")
_STATS = ("scale_mean", "scale_min", "scale_max", "max_abs_q")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def steps_per_epoch(record: Mapping[str, Any]) -> int:
    """Optimizer steps per epoch of a run: :math:`\\lceil n_{train} / \\text{batch\\_size} \\rceil`.

    :math:`n_{train}` is the record's ``n_train`` (the images trained on, after the validation
    split); without it, :func:`companion.engine.regimes.training_images` of ``train_limit`` (or,
    when that is ``None``, the official split size of ``dataset``) and ``validation_fraction``
    (default 0.1). Keras trains the last, partial batch of an epoch too.

    Raises:
        ValueError: no valid ``batch_size``, or no way to count the training images.
    """
    batch = record.get("batch_size")
    if _missing(batch) or int(batch) < 1:
        raise ValueError(
            f"batch_size={batch!r} must be an integer >= 1; pass a run record (a row of "
            "experiment.sweep(...)) that has it"
        )
    n = record.get("n_train")
    if _missing(n):
        limit, dataset = record.get("train_limit"), record.get("dataset")
        if _missing(limit) and dataset not in TRAIN_SPLIT_SIZES:
            raise ValueError(
                f"cannot count the training images: n_train and train_limit are missing and "
                f"dataset={dataset!r} is not one of {sorted(TRAIN_SPLIT_SIZES)}; pass a run "
                "record with n_train"
            )
        total = TRAIN_SPLIT_SIZES[dataset] if _missing(limit) else int(limit)
        fraction = record.get("validation_fraction")
        n = training_images(total, 0.1 if _missing(fraction) else float(fraction))
    if int(n) < 1:
        raise ValueError(f"n_train={n!r} must be >= 1 image")
    return math.ceil(int(n) / int(batch))


def _records(runs: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = runs.to_dict("records") if isinstance(runs, pd.DataFrame) else list(runs)
    need = ("config_hash", "threshold", "optimizer", "lr", "batch_size")
    for i, row in enumerate(rows):
        if missing := [k for k in need if _missing(row.get(k))]:
            raise ValueError(
                f"run {i} lacks {missing}; pass the records of experiment.sweep(configs) of "
                "nested runs (flavour 'nested', so that threshold is set)"
            )
    return rows


def trajectories(
    runs: pd.DataFrame | Iterable[Mapping[str, Any]],
    histories: Mapping[str, pd.DataFrame] | None = None,
    *,
    store: RunStore | None = None,
) -> pd.DataFrame:
    """The scales of every run over training, tidy: one row per run, parameter and logged epoch.

    Arguments:
        runs: run records of nested runs (rows of :func:`companion.engine.experiment.sweep`),
            with ``config_hash``, ``threshold``, ``optimizer``, ``lr``, ``batch_size`` and
            what :func:`steps_per_epoch` needs.
        histories: ``{config_hash: history}``; default: read with
            :func:`companion.engine.experiment.load_history` (from ``store``).
        store: the results store (default :func:`companion.engine.store.default_store`).

    Returns:
        Columns ``run`` (the config hash), the run's ``threshold``, ``optimizer``, ``lr`` (and
        ``seed``, ``kernel_granularity``, ``dataset`` where present), ``steps_per_epoch``,
        ``epoch``, ``step`` (= epoch × steps per epoch; 0 = before training), ``parameter``
        (``"<layer>/<param>"``), ``scale`` (the mean of its scales), ``scale_min``,
        ``scale_max`` and ``max_abs_q`` (:math:`m`).

    Raises:
        ValueError: a record lacks a column, or a history has no scale statistics.
    """
    frames = []
    for rec in _records(runs):
        h = str(rec["config_hash"])
        hist = (
            histories[h]
            if histories is not None and h in histories
            else experiment.load_history(rec, store=store)
        )
        params = sorted(
            c.rsplit("/", 1)[0] for c in hist.columns if c.endswith("/scale_mean")
        )
        if not params:
            raise ValueError(
                f"the history of run {h} has no '<layer>/<param>/scale_mean' column; it is not "
                "a run with learned scales (use flavour 'nested')"
            )
        spe = steps_per_epoch(rec)
        for p in params:
            cols = {s: hist.get(f"{p}/{s}", np.nan) for s in _STATS}
            frame = pd.DataFrame({"epoch": hist["epoch"].astype(int), **cols})
            frame = frame.rename(columns={"scale_mean": "scale"})
            extra = {k: rec[k] for k in _KEEP if k in rec}
            frames.append(
                frame.assign(
                    run=h,
                    **extra,
                    steps_per_epoch=spe,
                    parameter=p,
                    step=frame["epoch"] * spe,
                )
            )
    if not frames:
        raise ValueError("runs is empty; pass at least one nested run record")
    out = pd.concat(frames, ignore_index=True)
    first = ["run", *[k for k in _KEEP if k in out], "steps_per_epoch", "epoch", "step"]
    rest = ["parameter", "scale", "scale_min", "scale_max", "max_abs_q"]
    return out[first + rest].sort_values(
        ["run", "parameter", "step"], ignore_index=True
    )


def adam_prediction(
    steps: np.ndarray | Sequence[float], lr: float, s0: float = INITIAL_SCALE
) -> np.ndarray:
    """The hypothesis's Adam trajectory :math:`s(t) = s_0 + \\mathrm{lr}\\, t` (one lr per step).

    Raises:
        ValueError: ``lr`` or ``s0`` not a positive finite number.
    """
    for name, value in (("lr", lr), ("s0", s0)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(
                f"{name}={value!r} must be a positive finite number, e.g. 1e-4"
            )
    return s0 + lr * np.asarray(steps, dtype=np.float64)


def growth_table(traj: pd.DataFrame) -> pd.DataFrame:
    """Growth per step of every logged interval of every run and parameter.

    For the interval :math:`[t_a, t_b]` between consecutive logged steps:
    ``growth_per_step`` :math:`= (s_b - s_a)/(t_b - t_a)`, ``ratio`` = growth per step / lr,
    ``gradient_bound`` :math:`b = m_a \\tanh\\lambda` (the largest :math:`|g|` the votes can give,
    :math:`m_a` = ``max_abs_q`` at :math:`t_a`) and ``predicted_step``, the steady step at that
    bound: :math:`\\mathrm{lr}\\,b/(b + \\epsilon)` for Adam, :math:`\\mathrm{lr}\\,b/(1 - \\mu)` for SGD.

    Arguments:
        traj: :func:`trajectories`.
    """
    _check_traj(traj)
    rows = []
    for (run, param), g in traj.groupby(["run", "parameter"], sort=False):
        g = g.sort_values("step")
        s, t, m = (g[c].to_numpy(dtype=float) for c in ("scale", "step", "max_abs_q"))
        lam, lr = float(g["threshold"].iloc[0]), float(g["lr"].iloc[0])
        opt = str(g["optimizer"].iloc[0])
        for i in range(len(g) - 1):
            rate = (s[i + 1] - s[i]) / (t[i + 1] - t[i])
            b = m[i] * math.tanh(lam)
            pred = (
                lr * b / (b + ADAM_EPSILON)
                if opt == "adam"
                else lr * b / (1 - SGD_MOMENTUM)
            )
            rows.append(
                dict(
                    run=run,
                    threshold=lam,
                    optimizer=opt,
                    lr=lr,
                    parameter=param,
                    interval=i + 1,
                    step_start=t[i],
                    step_end=t[i + 1],
                    scale_start=s[i],
                    scale_end=s[i + 1],
                    growth_per_step=rate,
                    ratio=rate / lr,
                    gradient_bound=b,
                    predicted_step=pred,
                )
            )
    return pd.DataFrame(rows)


def _check_traj(traj: pd.DataFrame) -> None:
    need = {
        "run",
        "threshold",
        "optimizer",
        "lr",
        "step",
        "parameter",
        "scale",
        "max_abs_q",
    }
    if missing := need - set(traj.columns):
        raise ValueError(
            f"traj lacks the columns {sorted(missing)}; pass the table of trajectories(runs)"
        )
    if traj.empty:
        raise ValueError("traj is empty; pass trajectories() of at least one run")


def level_off_step(
    steps: np.ndarray | Sequence[float],
    scales: np.ndarray | Sequence[float],
    *,
    rise: float = RISE,
    min_tail: float = MIN_TAIL,
) -> float:
    """The step at which a scale levels off, or NaN where it is still growing.

    Definition: the first logged step :math:`t_k` with

    .. math::

        \\max_{j \\ge k} s_j \\le (1 + \\text{rise})\\, s_k
        \\quad\\text{and}\\quad t_k \\le t_K - \\text{min\\_tail}\\,(t_K - t_0) ,

    i.e. after which the scale grows by less than ``rise`` (5 %) over all the remaining steps,
    with at least ``min_tail`` (25 %) of the run still to come (so that the end of a run that is
    still growing, where little time is left to grow, does not count as levelling off). A scale
    that never grows levels off at the first step; one growing at any steady rate, linear or
    like :math:`\\sqrt t`, never does. The logged steps resolve it: the true step lies between
    the logged step before and the one returned.

    Arguments:
        steps: increasing logged steps (at least two).
        scales: the scale at each step, positive.
        rise: allowed relative growth after levelling off, > 0.
        min_tail: share of the run that must remain, in [0, 1).

    Raises:
        ValueError: mismatched or too short arrays, non-increasing steps, non-positive scales,
            or ``rise``/``min_tail`` out of range.
    """
    t = np.asarray(steps, dtype=float)
    s = np.asarray(scales, dtype=float)
    if t.ndim != 1 or t.shape != s.shape or len(t) < 2 or np.any(np.diff(t) <= 0):
        raise ValueError(
            f"steps and scales must be 1-D, of equal length >= 2, steps increasing; got "
            f"shapes {t.shape} and {s.shape}; pass one run's logged steps and scales"
        )
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(
            "scales must be positive finite numbers (learned scales are >= 100·eps)"
        )
    if not (np.isfinite(rise) and rise > 0):
        raise ValueError(f"rise={rise!r} must be > 0, e.g. {RISE}")
    if not (0 <= min_tail < 1):
        raise ValueError(f"min_tail={min_tail!r} must be in [0, 1), e.g. {MIN_TAIL}")
    latest = t[-1] - min_tail * (t[-1] - t[0])
    later_max = np.maximum.accumulate(s[::-1])[::-1]
    for k in range(len(t)):
        if t[k] > latest:
            break
        if later_max[k] <= (1 + rise) * s[k]:
            return float(t[k])
    return float("nan")


def level_offs(
    traj: pd.DataFrame, *, rise: float = RISE, min_tail: float = MIN_TAIL
) -> pd.DataFrame:
    """Per run and parameter: level-off step (:func:`level_off_step`) and growth summary.

    Returns:
        ``run, threshold, optimizer, lr, parameter, level_off_step`` (NaN: still growing),
        ``level_off_scale``, ``max_abs_q_at_level_off`` (:math:`m`), ``bound_over_eps`` (the
        gradient bound :math:`m \\tanh\\lambda / \\epsilon` there), ``start_step``,
        ``start_scale``, ``final_step``, ``final_scale`` and ``first_ratio`` (growth per step
        over the first interval / lr).
    """
    first = growth_table(traj).query("interval == 1").set_index(["run", "parameter"])
    rows = []
    for (run, param), g in traj.groupby(["run", "parameter"], sort=False):
        g = g.sort_values("step")
        t_off = level_off_step(g["step"], g["scale"], rise=rise, min_tail=min_tail)
        at = g[g["step"] == t_off]
        lam = float(g["threshold"].iloc[0])
        m = float(at["max_abs_q"].iloc[0]) if len(at) else float("nan")
        rows.append(
            dict(
                run=run,
                threshold=lam,
                optimizer=g["optimizer"].iloc[0],
                lr=float(g["lr"].iloc[0]),
                parameter=param,
                level_off_step=t_off,
                level_off_scale=float(at["scale"].iloc[0]) if len(at) else float("nan"),
                max_abs_q_at_level_off=m,
                bound_over_eps=m * math.tanh(lam) / ADAM_EPSILON,
                start_step=float(g["step"].iloc[0]),
                start_scale=float(g["scale"].iloc[0]),
                final_step=float(g["step"].iloc[-1]),
                final_scale=float(g["scale"].iloc[-1]),
                first_ratio=float(first.loc[(run, param), "ratio"]),
            )
        )
    return pd.DataFrame(rows)


def _slope(g: pd.DataFrame) -> float:
    """Least-squares slope of log10(growth per step) on log10(λ); NaN with < 2 distinct λ."""
    g = g[g["growth_per_step"] > 0]
    if g["threshold"].nunique() < 2:
        return float("nan")
    x = np.log10(g["threshold"].to_numpy(float))
    y = np.log10(g["growth_per_step"].to_numpy(float))
    return float(np.polyfit(x, y, 1)[0])


def hypothesis_checks(
    traj: pd.DataFrame,
    *,
    adam_factor: float = 2.0,
    max_slope: float = 0.25,
    sgd_orders: float = 2.0,
) -> dict[str, Any]:
    """The three rules of the module docstring on the first logged interval, measured.

    Arguments:
        traj: :func:`trajectories` of Adam and SGD runs over several λ.
        adam_factor: R1's factor :math:`F` (> 1).
        max_slope: R2's largest slope of log growth on log λ (>= 0).
        sgd_orders: R3's orders of magnitude (> 0).

    Only scales that can move at the start count: a parameter whose integers are all 0 at step
    0 (:math:`m = 0`, e.g. zero-initialised biases) has no scale gradient there.

    Returns:
        ``first_steps`` (the first interval's end steps), ``n_scales`` (the scales that
        count), ``adam_ratio_min``/``_max`` (growth per step / lr), ``r1`` (bool or None
        without Adam runs), ``slope`` (median over parameters)
        and ``r2`` (None with fewer than two λ), ``sgd_over_adam`` (median ratio) and ``r3``
        (None without matching SGD/Adam pairs), and ``supported`` (all three True; None if one
        is undecided).

    Raises:
        ValueError: a factor out of range.
    """
    if not (adam_factor > 1 and max_slope >= 0 and sgd_orders > 0):
        raise ValueError(
            f"need adam_factor > 1, max_slope >= 0, sgd_orders > 0; got {adam_factor!r}, "
            f"{max_slope!r}, {sgd_orders!r} (defaults 2, 0.25, 2)"
        )
    first = growth_table(traj).query("interval == 1 and gradient_bound > 0")
    adam, sgd = (first[first["optimizer"] == o] for o in ("adam", "sgd"))
    out: dict[str, Any] = {
        "first_steps": sorted(first["step_end"].unique().tolist()),
        "n_scales": len(first),
    }
    if len(adam):
        lo, hi = float(adam["ratio"].min()), float(adam["ratio"].max())
        out.update(adam_ratio_min=lo, adam_ratio_max=hi)
        out["r1"] = bool(lo >= 1 / adam_factor and hi <= adam_factor)
    else:
        out.update(adam_ratio_min=float("nan"), adam_ratio_max=float("nan"), r1=None)
    slopes = [_slope(g) for _, g in adam.groupby("parameter")]
    slopes = [x for x in slopes if np.isfinite(x)]
    out["slope"] = float(np.median(slopes)) if slopes else float("nan")
    out["r2"] = bool(out["slope"] < max_slope) if slopes else None
    keys = ["threshold", "parameter", "lr"]
    pairs = pd.merge(
        sgd.groupby(keys)["growth_per_step"].mean().rename("sgd"),
        adam.groupby(keys)["growth_per_step"].mean().rename("adam"),
        left_index=True,
        right_index=True,
    )
    pairs = pairs[pairs["adam"] > 0]
    out["sgd_over_adam"] = (
        float((pairs["sgd"] / pairs["adam"]).median()) if len(pairs) else float("nan")
    )
    out["r3"] = bool(out["sgd_over_adam"] <= 10**-sgd_orders) if len(pairs) else None
    rules = [out["r1"], out["r2"], out["r3"]]
    out["supported"] = None if None in rules else all(rules)
    out.update(adam_factor=adam_factor, max_slope=max_slope, sgd_orders=sgd_orders)
    return out


_OPT_TITLE = {"adam": "Adam", "sgd": f"SGD (momentum {SGD_MOMENTUM})"}


def _mean_curves(traj: pd.DataFrame, parameter: str) -> pd.DataFrame:
    """Seed means of one parameter's scale: ``optimizer, lr, threshold, step, scale``."""
    if parameter not in set(traj["parameter"]):
        raise ValueError(
            f"parameter={parameter!r} is not in the trajectories; allowed: "
            f"{', '.join(sorted(set(traj['parameter'])))}"
        )
    g = traj[traj["parameter"] == parameter]
    keys = ["optimizer", "lr", "threshold", "step"]
    return g.groupby(keys, as_index=False)["scale"].mean()


def draw_scale_growth(
    traj: pd.DataFrame,
    parameter: str = "dense1/kernel",
    *,
    lr: float | None = None,
    rise: float = RISE,
    min_tail: float = MIN_TAIL,
) -> plt.Figure:
    """One parameter's scale against the optimizer step: a panel per optimizer (Adam | SGD).

    One colour per λ (:func:`companion.chapters.style.sequential_colors`, seed means, a marker
    per logged epoch), a ring where the curve levels off (:func:`level_off_step`, not drawn for a
    curve that is flat from the start), and the hypothesis's Adam line :math:`s_0 + \\mathrm{lr}\\,t`
    dashed; log scale axis.

    Arguments:
        traj: :func:`trajectories`.
        parameter: ``"<layer>/<param>"``, e.g. ``"dense1/kernel"``.
        lr: the learning rate whose runs to draw; needed when ``traj`` holds several.
        rise, min_tail: the level-off definition (:func:`level_off_step`).

    Raises:
        ValueError: unknown ``parameter``, or ``lr`` missing or not among the runs'.
    """
    _check_traj(traj)
    curves = _mean_curves(traj, parameter)
    lrs = sorted(curves["lr"].unique())
    if lr is None and len(lrs) > 1 or lr is not None and lr not in lrs:
        raise ValueError(
            f"lr={lr!r}: pick the learning rate to draw; allowed: "
            f"{', '.join(fmt_sci(x) for x in lrs)}, e.g. lr={lrs[0]!r}"
        )
    curves = curves[curves["lr"] == (lrs[0] if lr is None else lr)]
    opts = [o for o in ("adam", "sgd") if o in set(curves["optimizer"])]
    opts += sorted(set(curves["optimizer"]) - set(opts))
    lams = sorted(curves["threshold"].unique())
    colours = dict(zip(lams, sequential_colors(len(lams))))
    rings = 0
    fig, axes = panel_grid(
        len(opts), max_cols=2, panel=(3.4, 3.0), extra=(0, 0.9), sharey=True
    )
    for ax, opt in zip(axes, opts):
        c = curves[curves["optimizer"] == opt]
        for (_lr, lam), g in c.groupby(["lr", "threshold"]):
            t, s = g["step"].to_numpy(float), g["scale"].to_numpy(float)
            ax.plot(
                t,
                s,
                "o-",
                ms=3,
                lw=1.6,
                color=colours[lam],
                label=f"λ = {fmt_sci(lam)}",
            )
            t_off = level_off_step(t, s, rise=rise, min_tail=min_tail)
            if np.isfinite(t_off) and t_off > t[0]:
                ax.plot(
                    t_off, s[t == t_off][0], "o", ms=9, mfc="none", mec="black", mew=1.2
                )
                rings += 1
        rate = float(c["lr"].iloc[0])
        t = np.linspace(0.0, float(c["step"].max()), 50)
        ax.plot(
            t,
            adam_prediction(t, rate),
            "k--",
            lw=1.2,
            label=f"$s_0$ + lr·t (lr {fmt_sci(rate)})",
        )
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_title(_OPT_TITLE.get(opt, opt), fontsize=_TEXT_SIZE + 1)
    axes[0].set_ylabel(f"{parameter} scale (mean)")
    handles, labels = axes[0].get_legend_handles_labels()
    if rings:
        ring = plt.Line2D(
            [], [], ls="", marker="o", ms=9, mfc="none", mec="black", mew=1.2
        )
        handles, labels = [*handles, ring], [*labels, "levels off"]
    rows = -(-len(handles) // 3)
    fig.legend(
        handles, labels, loc="lower center", ncol=3, fontsize=_TEXT_SIZE, frameon=False
    )
    fig.tight_layout(rect=(0, 0.06 + 0.06 * rows, 1, 1))
    return fig


def _scale_at(curve: pd.DataFrame, step: float) -> float:
    """A seed-mean curve's scale at ``step``, linear between the logged steps."""
    return float(np.interp(step, curve["step"], curve["scale"]))


def _first_reach(curve: pd.DataFrame, target: float) -> float:
    """The first step at which the curve reaches ``target`` (linear between logged steps)."""
    t, s = curve["step"].to_numpy(float), curve["scale"].to_numpy(float)
    hit = np.flatnonzero(s >= target)
    if not hit.size:
        return float("nan")
    k = int(hit[0])
    if k == 0:
        return float(t[0])
    return float(t[k - 1] + (target - s[k - 1]) / (s[k] - s[k - 1]) * (t[k] - t[k - 1]))


def _num(x: float) -> str:
    return fmt_sci(x) if (x != 0 and not 1e-2 <= abs(x) < 1e4) else f"{x:.3g}"


def _span(lo: float, hi: float, unit: str = "") -> str:
    """``"lo to hi<unit>"``, or one number where both print alike."""
    a, b = _num(lo), _num(hi)
    return f"{a}{unit}" if a == b else f"{a}{unit} to {b}{unit}"


def _step(x: float) -> str:
    return f"{round(float(x)):,}"


def _verdict(ok: bool | None) -> str:
    return "undecided (no data for it)" if ok is None else ("holds" if ok else "fails")


def _rules_lines(traj: pd.DataFrame, checks: dict[str, Any]) -> list[str]:
    runs = traj.drop_duplicates("run")
    n_opt = runs["optimizer"].value_counts()
    lams = ", ".join(fmt_sci(x) for x in sorted(runs["threshold"].unique()))
    lrs = ", ".join(fmt_sci(x) for x in sorted(runs["lr"].unique()))
    t1 = ", ".join(_step(t) for t in checks["first_steps"])
    f, k = checks["adam_factor"], checks["sgd_orders"]
    slope = checks["slope"]
    verdict = {None: "undecided", True: "supported", False: "not supported"}
    return [
        f"Measured on {len(runs)} runs ({n_opt.get('adam', 0)} Adam, {n_opt.get('sgd', 0)} SGD; "
        f"λ = {lams}; lr = {lrs}) over their first logged interval (steps 0 to {t1}), "
        f"{checks['n_scales']} scales that can move at the start:",
        "",
        f"- **R1**, about lr per step: Adam's scales grew by "
        f"{_span(checks['adam_ratio_min'], checks['adam_ratio_max'])} × lr per step (rule: "
        f"between lr/{f:g} and {f:g}·lr): **{_verdict(checks['r1'])}**.",
        f"- **R2**, whatever the gradient's size: a 10× larger λ made that growth "
        f"{_num(10**slope)}× larger (slope {round(slope, 2) + 0.0:.2f} of log growth on log λ; "
        "rule: below "
        f"{checks['max_slope']:g}, at most {_num(10 ** checks['max_slope'])}×): "
        f"**{_verdict(checks['r2'])}**.",
        f"- **R3**, SGD much slower: SGD's scales grew {_num(checks['sgd_over_adam'])} × as fast "
        f"as Adam's at the same λ (median; rule: at most {_num(10**-k)}): "
        f"**{_verdict(checks['r3'])}**.",
        "",
        f"The hypothesis is **{verdict[checks['supported']]}** by these runs.",
    ]


def _level_off_lines(offs: pd.DataFrame, rise: float, min_tail: float) -> list[str]:
    adam, sgd = offs[offs["optimizer"] == "adam"], offs[offs["optimizer"] == "sgd"]
    done = adam[np.isfinite(adam["level_off_step"])]
    text = (
        f"Level-off (the first logged step after which a scale grows by less than "
        f"{100 * rise:g} % over the rest of the run, with at least {100 * min_tail:g} % of the run "
        f"left): {len(done)} of {len(adam)} Adam scales levelled off"
    )
    if len(done):
        steps = done["level_off_step"]
        text += f", at steps {_step(steps.min())} to {_step(steps.max())}"
    if len(adam) > len(done):
        text += (
            f"; {len(adam) - len(done)} were still growing at the end of their run "
            f"(step {_step(adam['final_step'].max())})"
        )
    text += "."
    if len(sgd):
        flat = sgd[sgd["level_off_step"] == sgd["start_step"]]
        growth = (sgd["final_scale"] / sgd["start_scale"]).max()
        text += (
            f" {len(flat)} of {len(sgd)} SGD scales stayed within {100 * rise:g} % of their "
            f"initial value; the most any SGD scale grew over its run is {_num(growth)}×."
        )
    return [text]


def _regime_lines(
    curves: pd.DataFrame, parameter: str, regimes: Mapping[str, int]
) -> list[str]:
    """The spread of the Adam scales across λ at each regime's step count."""
    adam = curves[curves["optimizer"] == "adam"]
    if adam.empty or not regimes:
        return []
    lines = []
    for lr, by_lr in adam.groupby("lr"):
        last = float(by_lr["step"].max())
        parts = []
        for label, steps in regimes.items():
            if steps > last:
                parts.append(
                    f"step {_step(steps)} ({label}) lies beyond these runs (last logged "
                    f"step {_step(last)})"
                )
                continue
            at = [_scale_at(g, steps) for _, g in _curves(by_lr)]
            parts.append(
                f"at step {_step(steps)} ({label}) they span {_span(min(at), max(at))}, a "
                f"factor {_num(max(at) / min(at))} across λ"
            )
        lines.append(
            f"The Adam scales of {parameter} (lr {fmt_sci(lr)}): "
            + "; ".join(parts)
            + "."
        )
    return lines


def _implication_lines(
    curves: pd.DataFrame, offs: pd.DataFrame, checks: dict[str, Any], parameter: str
) -> list[str]:
    adam = curves[curves["optimizer"] == "adam"]
    lines = []
    if checks["r2"] is False:
        lines.append(
            f"λ sets how fast the scales grow (about as λ^{checks['slope']:.2f} over the first "
            "interval), not only where growth stops."
        )
    a = offs[offs["optimizer"] == "adam"]
    growing = a[~np.isfinite(a["level_off_step"])]
    if len(growing):
        late = [
            g["scale"].iloc[-1] / _scale_at(g, g["step"].max() / 2)
            for _, g in _curves(adam)
        ]
        lines.append(
            f"{len(growing)} of {len(a)} Adam scales were still growing at the end, so the number "
            f"of steps matters as well: over the second half of the run the {parameter} scales "
            f"grew by a further {_span(min(late), max(late), '×')}."
        )
    reached = []
    for lr, g in adam.groupby("lr"):
        by_lam = [c for _, c in _curves(g)]
        for lo, hi in zip(by_lam, by_lam[1:]):
            t = _first_reach(hi, float(lo["scale"].iloc[-1]))
            if np.isfinite(t) and t < float(lo["step"].iloc[-1]):
                reached.append(
                    f"at lr {fmt_sci(lr)}, λ = {fmt_sci(hi['threshold'].iloc[0])} reached the "
                    f"final scale of λ = {fmt_sci(lo['threshold'].iloc[0])} (step "
                    f"{_step(lo['step'].iloc[-1])}) by step {_step(t)}"
                )
    if reached:
        lines.append(
            f"λ and the step count trade off ({parameter}): " + "; ".join(reached) + "."
        )
    if len(growing):
        lines.append(
            "Choosing λ: compare λ values at the step count they will be trained for; a λ chosen "
            "in a shorter run ends, after more steps, with larger scales (coarser, fewer bits) "
            "than it showed there."
        )
    return lines


def _curves(curves: pd.DataFrame):
    """``(key, curve)`` per ``(lr, threshold)`` seed-mean curve, sorted by step."""
    for key, g in curves.groupby(["lr", "threshold"]):
        yield key, g.sort_values("step")


def verdict_markdown(
    traj: pd.DataFrame,
    parameter: str = "dense1/kernel",
    *,
    regimes: Mapping[str, int] | None = None,
    rise: float = RISE,
    min_tail: float = MIN_TAIL,
    adam_factor: float = 2.0,
    max_slope: float = 0.25,
    sgd_orders: float = 2.0,
) -> str:
    """The verdict on the hypothesis and what it implies for λ and the step count, as Markdown.

    Every number is measured from ``traj``: the three rules (:func:`hypothesis_checks`), the
    level-off steps (:func:`level_offs`), the spread of the Adam scales across λ at each
    regime's step count (linear between logged steps), the growth over the second half of the
    runs, and the step at which a larger λ reaches the final scale of the next smaller one.

    Arguments:
        traj: :func:`trajectories` of Adam and SGD runs over several λ.
        parameter: the parameter of the regime and trade-off sentences (``"<layer>/<param>"``).
        regimes: ``{label: steps}``, e.g. ``{"cpu profile": 450, "thesis": 37500}``.
        rise, min_tail: the level-off definition (:func:`level_off_step`).
        adam_factor, max_slope, sgd_orders: the rules (:func:`hypothesis_checks`).
    """
    checks = hypothesis_checks(
        traj, adam_factor=adam_factor, max_slope=max_slope, sgd_orders=sgd_orders
    )
    offs = level_offs(traj, rise=rise, min_tail=min_tail)
    curves = _mean_curves(traj, parameter)
    lines = _rules_lines(traj, checks) + [""]
    lines += _level_off_lines(offs, rise, min_tail) + [""]
    for line in _regime_lines(curves, parameter, dict(regimes or {})):
        lines += [line, ""]
    implications = _implication_lines(curves, offs, checks, parameter)
    if implications:
        lines += ["**What it implies.** " + " ".join(implications)]
    return "\n".join(lines).rstrip() + "\n"
