"""Helpers of the ``baselines`` notebook: the nested quantizer against standard methods.

:func:`baseline_plans` builds the configurations of every method (FP32, PTQ min-max,
fixed-bit STE, LSQ, nested), :func:`loss_term_overlay` reads the ``loss_terms``
notebook's runs that share data and budget, :func:`draw_accuracy_vs_memory` draws one
setup, and the generated Markdown (:func:`best_compression_markdown`,
:func:`headline_markdown`) answers the question with one number per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator

from companion.chapters import analysis, paired, stats
from companion.engine.config import validate_config

__all__ = [
    "PLAN_NAMES",
    "OVERLAY_KEYS",
    "METRICS",
    "LABEL_OFFSETS",
    "baseline_plans",
    "label_runs",
    "loss_term_overlay",
    "all_runs",
    "seed_means",
    "draw_accuracy_vs_memory",
    "accuracy_vs_memory_caption",
    "best_table",
    "achieved_by",
    "best_compression_markdown",
    "headline_table",
    "headline_claim",
    "headline_markdown",
]

#: the sweeps of the notebook, in training order (one progress bar each)
PLAN_NAMES = ("FP32", "PTQ", "fixed-bit STE", "LSQ", "nested")
#: what must be equal for another notebook's run to share this notebook's data and
#: training budget: data (dataset, subset sizes, validation split, image size), network,
#: steps (epochs, batch size), optimizer, learning rate, L2, and the mode with its
#: pretraining budget (a post-training run has had pretrain_epochs more)
OVERLAY_KEYS = list(analysis.BUDGET_KEYS)
#: metrics averaged over seeds
METRICS = [
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "mem_bits_per_param",
    "mem_bits_per_param_twos",
    "mem_kib",
    "mem_compression",
    "mem_n_params",
]
#: where each annotated method writes its bit-width labels (points from the marker): one
#: corner per method, so labels of methods that share a memory value do not overprint
#: each other
LABEL_OFFSETS = [(5, -11), (5, 5), (-17, 5), (-17, -11)]
#: bits in one KiB (the secondary axis converts bits per parameter to model memory)
_BITS_PER_KIB = 8192
#: x ticks (bits / parameter) of the upper panel (every run) and of the zoomed lower
#: panel
_ALL_TICKS = [1, 2, 4, 8, 16, 32]
_ZOOM_TICKS = [2, 3, 4, 6, 8, 12, 16]
#: the zoomed panel shows 2-16 bits (the 1-bit and 32-bit points are in the upper panel)
_ZOOM_XLIM = (2.4, 17)
#: the zoomed panel reaches down to this many accuracy bars below FP32, and a bit above
#: the best
_ZOOM_BARS_BELOW = 4
_ZOOM_HEADROOM_PT = 0.8
_MAX_LEGEND_COLUMNS = 2
#: size in points of the text written into the panels (bit widths, legend), at least
#: 8 pt in print
ANNOTATION_SIZE = 9


def baseline_plans(
    setups: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    *,
    seeds: Sequence[int],
    lr: float,
    ptq_bits: Sequence[int],
    ptq_granularities: Sequence[str],
    fixed_bits: Sequence[int],
    lsq_bits: Sequence[int],
    qat_granularities: Sequence[str],
    qat_mode: str,
    nested_thresholds: Sequence[float],
    nested_granularities: Sequence[str],
    nested_mode: str,
    lsq_modes: Sequence[str] | None = None,
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Configurations per method (:data:`PLAN_NAMES`) and each setup's base config.

    The baselines' ``per_tensor``/``per_channel`` map to a kernel granularity per
    network (:func:`~companion.chapters.analysis.baseline_granularity`); fixed-bit
    networks train in ``qat_mode`` and LSQ networks in each of ``lsq_modes`` (default
    ``[qat_mode]``; ``post_training`` starts from the trained FP32 network, the LSQ
    paper's protocol). Unknown nested granularities raise ``ValueError`` before anything
    trains.
    """
    analysis.check_granularities(nested_granularities, "nested_granularities")
    plans: dict[str, list[dict]] = {name: [] for name in PLAN_NAMES}
    bases = []
    for setup in setups:
        base, opt = analysis.setup_config(setup, defaults)
        # a post-training parent trains as long as the references
        base.setdefault("pretrain_epochs", base["epochs"])
        bases.append(base)
        arch, sd = base["arch"], {"seed": opt.get("seeds", seeds)}

        def per(kinds: Sequence[str], arch: str = arch) -> list[str]:
            return [analysis.baseline_granularity(arch, k) for k in kinds]

        plans["FP32"] += analysis.grid(
            {**base, "flavour": "fp32", "mode": "from_scratch"}, sd
        )
        plans["PTQ"] += analysis.grid(
            {**base, "flavour": "ptq", "mode": "post_training", "pretrain_lr": lr},
            {"kernel_granularity": per(ptq_granularities), "bits": ptq_bits, **sd},
        )
        for name, flavour, bits, qat_modes in (
            ("fixed-bit STE", "fixed_bits", fixed_bits, [qat_mode]),
            ("LSQ", "lsq", lsq_bits, list(lsq_modes or [qat_mode])),
        ):
            plans[name] += analysis.grid(
                {**base, "flavour": flavour, "pretrain_lr": lr},
                {
                    "mode": qat_modes,
                    "kernel_granularity": per(qat_granularities),
                    "bits": bits,
                    **sd,
                },
            )
        grans = analysis.check_granularities(
            opt.get("granularities", nested_granularities)
        )
        plans["nested"] += analysis.grid(
            {**base, "flavour": "nested", "mode": nested_mode},
            {
                "kernel_granularity": grans,
                "threshold": opt.get("thresholds", nested_thresholds),
                **sd,
            },
            where=analysis.granularity_fits,
        )
    return plans, bases


def label_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the ``method`` and ``setup`` columns appended."""
    return analysis.add_setup(analysis.add_method(runs))


def loss_term_overlay(
    bases: Sequence[Mapping[str, Any]],
    folder: str | Path,
    *,
    enabled: bool,
    folder_name: str,
    mode: str = "from_scratch",
) -> tuple[pd.DataFrame, str]:
    """The ``loss_terms`` notebook's loss-term runs that match a base configuration.

    A run matches when every key of :data:`OVERLAY_KEYS` equals that of the base validated as
    a loss-term configuration in ``mode`` (so defaults such as ``l2 = 0`` or the optimizer
    count, and ``pretrain_*`` only where the mode uses them).

    Arguments:
        bases: the base configuration of every setup (:func:`baseline_plans`).
        folder: the ``loss_terms`` results folder of this profile (its ``runs.csv``).
        enabled: the overlay switch of the notebook (off: no runs).
        folder_name: how the note names the folder (no machine-specific path in the
            book).
        mode: the mode of the nested front the loss-term front is compared with.

    Returns:
        ``(runs, note)``: the matching runs labelled by :func:`label_runs`, and a
        one-sentence note for the tables.
    """
    if not enabled:
        return (
            pd.DataFrame(),
            "The loss-term overlay is switched off (`loss_terms_overlay = False`).",
        )
    required = ("config_hash", "flavour", "test_accuracy", "mem_bits_per_param", "seed")
    table = analysis.read_run_tables(folder, pattern="runs.csv", required=required)
    table = table[table["flavour"] == "loss_terms"] if len(table) else table
    wanted = [
        validate_config({**b, "flavour": "loss_terms", "mode": mode}) for b in bases
    ]
    parts = (
        [analysis.matching_runs(table, w, OVERLAY_KEYS) for w in wanted]
        if len(table)
        else []
    )
    runs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not len(runs):
        return runs, (
            "No loss-term runs on the same data and budget (same "
            f"{', '.join(OVERLAY_KEYS)}) in "
            f"`{folder_name}` (run the `loss_terms` notebook of this "
            "profile first); the loss-term front is not shown."
        )
    return label_runs(
        runs
    ), f"{len(runs)} loss-term runs from `{folder_name}` overlaid."


def all_runs(runs: pd.DataFrame, loss_runs: pd.DataFrame) -> pd.DataFrame:
    """Both tables, one row per run, with each run's ``config_id`` (its configuration
    without the seed: the key that pairs a selected configuration's seeds)."""
    everything = (
        pd.concat([runs, loss_runs], ignore_index=True) if len(loss_runs) else runs
    )
    return everything.assign(config_id=analysis.config_id(everything))


def seed_means(
    runs: pd.DataFrame, loss_runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Seed means of every configuration of both tables, by setup, method and config.

    Arguments:
        runs: the runs, or :func:`all_runs`'s table of every run (its ``config_id`` is
            used as it is) when ``loss_runs`` is None.
        loss_runs: the overlaid loss-term runs (:func:`loss_term_overlay`).
    """
    if loss_runs is not None or "config_id" not in runs:
        runs = all_runs(runs, pd.DataFrame() if loss_runs is None else loss_runs)
    by = ["setup", "method", "config_id"] + analysis.config_columns(runs)
    return analysis.aggregate_seeds(runs, METRICS, by=by)


def _draw_front(ax: plt.Axes, g: pd.DataFrame, method: str, colour: Any) -> None:
    analysis.plot_front(
        ax,
        g,
        "mem_bits_per_param",
        "test_accuracy",
        palette=[colour],
        front_label=False,
    )
    label = "nested (front over λ)" if method == "nested" else f"{method} (front)"
    ax.plot([], [], color=colour, lw=1.6, marker="D", mec="black", label=label)


def _annotate_bits(
    ax: plt.Axes, g: pd.DataFrame, offset: tuple[int, int], colour: Any
) -> None:
    for _, r in g.iterrows():
        ax.annotate(
            f"b={int(r['bits'])}",
            (r["mem_bits_per_param_mean"], r["test_accuracy_mean"] * 100),
            textcoords="offset points",
            xytext=offset,
            fontsize=ANNOTATION_SIZE,
            color=colour,
            clip_on=True,
        )


def _draw_methods(ax: plt.Axes, a: pd.DataFrame, annotate: bool) -> None:
    """Every method of one setup on one axis (seed means ± std), fronts over λ."""
    fp = a[a["method"] == "FP32"]
    ax.errorbar(
        fp["mem_bits_per_param_mean"],
        fp["test_accuracy_mean"] * 100,
        yerr=np.nan_to_num(fp["test_accuracy_std"]) * 100,
        fmt="*",
        ms=14,
        color="black",
        label="FP32 network",
    )
    n_annotated = 0
    methods = set(a["method"])
    for method in [m for m in analysis.METHOD_ORDER if m in methods and m != "FP32"]:
        g = a[a["method"] == method].sort_values("mem_bits_per_param_mean")
        st = analysis.method_style(method)
        if method in ("nested", "loss terms"):
            _draw_front(ax, g, method, st["color"])
            continue
        ax.errorbar(
            g["mem_bits_per_param_mean"],
            g["test_accuracy_mean"] * 100,
            xerr=np.nan_to_num(g["mem_bits_per_param_std"]),
            yerr=np.nan_to_num(g["test_accuracy_std"]) * 100,
            marker=st["marker"],
            ls=st["ls"],
            ms=6,
            lw=1.2,
            color=st["color"],
            mfc=st.get("mfc", st["color"]),
            label=method,
        )
        if annotate:
            offset = LABEL_OFFSETS[n_annotated % len(LABEL_OFFSETS)]
            n_annotated += 1
            _annotate_bits(ax, g, offset, st["color"])


def _memory_axes(ax: plt.Axes, n_params: float, ticks: Sequence[float]) -> None:
    """Log2 bits-per-parameter axis with the model memory in KiB on top."""
    kib = n_params / _BITS_PER_KIB
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("memory (bits / parameter, scales included; log scale)")
    ax.set_ylabel("test accuracy (%)")
    top = ax.secondary_xaxis("top", functions=(lambda b: b * kib, lambda k: k / kib))
    top.set_xticks([t * kib for t in ticks], labels=[f"{t * kib:.0f}" for t in ticks])
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("model memory (KiB)")


def draw_accuracy_vs_memory(
    a: pd.DataFrame, reference: float | None, *, max_drop: float
) -> plt.Figure:
    """One setup: every run (top) and the region near FP32 with bit widths (bottom).

    ``a`` holds the setup's seed means (:func:`seed_means`); ``reference`` its FP32
    accuracy.
    """
    setup = a["setup"].iloc[0]
    n_params = float(a["mem_n_params_mean"].dropna().iloc[0])
    fig, (ax_all, ax_zoom) = plt.subplots(2, 1, figsize=(6.6, 8.0))
    for ax, annotate in ((ax_all, False), (ax_zoom, True)):
        analysis.reference_lines(ax, reference, max_drop=max_drop)
        _draw_methods(ax, a, annotate)
    _memory_axes(ax_all, n_params, _ALL_TICKS)
    ax_all.set_title(f"{setup}: all runs")
    # zoom: the region within a few points of FP32, where the comparison is decided
    acc = a["test_accuracy_mean"].dropna() * 100
    ref_pct = reference * 100 if reference is not None else acc.max()
    ax_zoom.set_ylim(
        ref_pct - _ZOOM_BARS_BELOW * max_drop * 100,
        max(acc.max(), ref_pct) + _ZOOM_HEADROOM_PT,
    )
    _memory_axes(ax_zoom, n_params, _ZOOM_TICKS)
    ax_zoom.set_xlim(*_ZOOM_XLIM)
    ax_zoom.set_title(f"{setup}: near the FP32 accuracy (bit widths annotated)")
    handles, labels = ax_all.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), _MAX_LEGEND_COLUMNS),
        fontsize=ANNOTATION_SIZE,
        frameon=False,
    )
    rows = -(-len(labels) // _MAX_LEGEND_COLUMNS)
    fig.tight_layout(rect=(0, 0.02 + 0.026 * rows, 1, 1))
    return fig


def accuracy_vs_memory_caption(with_loss_terms: bool) -> str:
    """Caption text of :func:`draw_accuracy_vs_memory` (names the loss terms)."""
    return (
        "Test accuracy against measured memory (sign-magnitude bits, the thesis's "
        "definition) of the baselines (FP32; PTQ min-max, fixed-bit STE and LSQ, "
        "b = the grid's bit width annotated in the lower panel -- a symmetric b-bit "
        "grid measures up to b + 1 bits; solid per-tensor, dashed per-channel; "
        "dotted with open markers: started from the trained FP32 network, the LSQ "
        "paper's protocol, which trains the pretraining epochs on top) and "
        "the Pareto front of the nested "
        "quantizer over λ"
        + (" and of the loss-term networks" if with_loss_terms else "")
        + "; seed means ± std; dashed horizontal: FP32, dotted: one point below; "
        "left all runs, right the region near FP32"
    )


def best_table(
    agg: pd.DataFrame,
    reference: Mapping[str, float],
    selection: Mapping[str, float],
    *,
    max_drop: float,
) -> pd.DataFrame:
    """Best compression within ``max_drop`` of FP32 per setup and method, in order.

    Chosen on the validation split against FP32's validation accuracy (``selection``);
    reported: the chosen configuration's test accuracy next to FP32's (``reference``).
    """
    keep = [
        "bits",
        "threshold",
        "lr",
        "l2",
        "kernel_granularity",
        "rate_inverse",
        "rate_max_bin",
        "rate_deviation",
        "deviation_form",
        "mem_bits_per_param_mean",
        "mem_bits_per_param_twos_mean",
        "test_accuracy_std",
        "n_seeds",
        "config_id",
    ]
    keep = [k for k in keep if k in agg.columns]
    best = analysis.best_compression_table(
        agg[agg["method"] != "FP32"],
        selection,
        report_reference=reference,
        by=["setup", "method"],
        ref_by="setup",
        max_drop=max_drop,
        keep=keep,
    )
    best["method"] = pd.Categorical(
        best["method"], categories=analysis.METHOD_ORDER, ordered=True
    )
    return best.sort_values(["setup", "method"]).reset_index(drop=True)


def achieved_by(r: Mapping[str, Any]) -> str:
    """The parameters behind a best-compression row: λ, loss-term rates or bit width."""
    if not r["within"]:
        return ""
    if r["method"] == "nested":
        return f"λ {analysis.fmt_sci(r['threshold'])}, {r['kernel_granularity']}"
    if r["method"] == "loss terms":
        rates = {
            "inverse": r.get("rate_inverse"),
            "max-bin": r.get("rate_max_bin"),
            "deviation": r.get("rate_deviation"),
        }
        text = ", ".join(
            f"{k} {analysis.fmt_sci(v)}"
            for k, v in rates.items()
            if v is not None and not pd.isna(v) and v > 0
        )
        if "deviation" in text and isinstance(r.get("deviation_form"), str):
            text += f" ({r['deviation_form']})"
        return (text or "rates 0") + f", {r['kernel_granularity']}"
    return f"{int(r['bits'])}-bit grid"


def _diff_text(r: Mapping[str, Any]) -> str:
    """``-0.4 [-1.3, 0.5]``: paired test-accuracy difference to FP32 in points, interval."""
    if pd.isna(r.get("acc_diff")):
        return ""
    if pd.isna(r.get("acc_diff_low")):
        return f"{r['acc_diff'] * 100:+.1f} (n = {int(r['n_pairs'])}: no interval)"
    return (
        f"{r['acc_diff'] * 100:+.1f} [{r['acc_diff_low'] * 100:+.1f}, "
        f"{r['acc_diff_high'] * 100:+.1f}]"
    )


def best_compression_markdown(
    best: pd.DataFrame,
    *,
    max_drop: float,
    seeds: Sequence[int],
    profile: str,
    loss_note: str,
) -> str:
    """The ``best_compression`` snippet: a row per setup and method.

    ``best`` is :func:`best_table` checked by :func:`companion.chapters.paired.accuracy_bar`.
    """
    within = best["within"]
    records = best.to_dict("records")
    shown = pd.DataFrame(
        {
            "setup": best["setup"],
            "method": best["method"].astype(str),
            "FP32 accuracy (%)": best["reference_accuracy"].map(
                lambda v: analysis.fmt_pm(v, None)
            ),
            "accuracy (%)": [
                analysis.fmt_pm(m, s) if w else ""
                for m, s, w in zip(
                    best["accuracy"], best["test_accuracy_std"], within, strict=True
                )
            ],
            "vs FP32 (pt, 95 % CI)": [_diff_text(r) for r in records],
            "1-pt bar": [r["bar"] if r["within"] else "" for r in records],
            "bits / parameter": [
                round(float(b), 2) if w else None
                for b, w in zip(best["mem_bits_per_param_mean"], within, strict=True)
            ],
            "bits / parameter (two's compl.)": [
                round(float(b), 2) if w else None
                for b, w in zip(
                    best["mem_bits_per_param_twos_mean"], within, strict=True
                )
            ],
            "compression (×)": best["compression"].round(2),
            "achieved by": [achieved_by(r) for r in records],
        }
    )
    return (
        analysis.markdown_table(shown)
        + "\nLargest compression (32 bits × parameters / seed-mean model bits, "
        "scales included) whose seed-mean validation accuracy is at most "
        f"{max_drop * 100:g} point below FP32's; its test accuracy is shown, with the "
        "per-seed paired difference to FP32 (mean and 95 % t-interval, points). The "
        f"bar is met (`within`) when the whole interval lies above −{max_drop * 100:g}"
        ", missed (`below`) when it lies below, and `within noise` otherwise. Empty: "
        "no configuration of that method qualified. Bits are measured: "
        "`bits / parameter` counts each integer group with the thesis's symmetric "
        "sign-magnitude width, ⌈log2(max|q|+1)⌉+1 (the compression column uses it), "
        "the next column with the two's-complement width, which holds a b-bit grid "
        "such as LSQ's −2^(b−1)…2^(b−1)−1 in b bits. Seeds "
        f"{', '.join(map(str, seeds))}, profile `{profile}`. {loss_note}\n"
    )


#: what the headline says for a setup where no method meets the bar with its uncertainty
_NOT_RANKED = "not shown: no method's accuracy interval lies wholly within the bar"


def _ranking_text(rank: Mapping[str, Any] | None, b: pd.DataFrame) -> str:
    """The ranking verdict of a setup with the compressions it compares."""
    if rank is None or rank["verdict"] == "not shown":
        return _NOT_RANKED if rank is None else "not shown"
    comp = dict(zip(b["method"].astype(str), b["compression"], strict=True))
    if rank["verdict"] == "tie":
        tied = [m.strip() for m in str(rank["tied"]).split(",")]
        return "tie: " + ", ".join(f"{m} ({comp[m]:.2f}×)" for m in tied)
    return f"{rank['verdict']} ({comp[rank['verdict']]:.2f}×)"


def _lambda_text(ties: Mapping[str, Any] | None) -> str:
    if ties is None or ties["verdict"] == "not shown":
        return "" if ties is None else str(ties["best"])
    return f"tie: {ties['tied']}" if ties["verdict"] == "tie" else str(ties["verdict"])


def headline_table(
    best: pd.DataFrame,
    ranking: pd.DataFrame,
    lambdas: pd.DataFrame,
    setup_order: Sequence[str],
    *,
    max_drop: float,
) -> pd.DataFrame:
    """Per setup: which method compresses most (or a tie), nested's best and its λ.

    ``ranking`` is :func:`companion.chapters.paired.compression_ranking`, ``lambdas``
    :func:`companion.chapters.paired.threshold_ties`; a λ is named alone only when no
    other qualifying λ ties with it.
    """
    none = f"none within {max_drop * 100:g} pt"
    rank = {r["setup"]: r for r in ranking.to_dict("records")}
    lam = {r["setup"]: r for r in lambdas.to_dict("records")}
    rows = []
    for setup in setup_order:
        b = best[(best["setup"] == setup) & best["within"]]
        nest = b[b["method"] == "nested"]
        rows.append(
            {
                "dataset · network": setup,
                "FP32 accuracy (%)": analysis.fmt_pm(
                    best.loc[best["setup"] == setup, "reference_accuracy"].iloc[0], None
                ),
                "most compression": _ranking_text(rank.get(setup), b)
                if len(b)
                else none,
                "nested: compression (×)": round(float(nest["compression"].iloc[0]), 2)
                if len(nest)
                else None,
                "nested: λ": _lambda_text(lam.get(setup)) if len(nest) else none,
            }
        )
    return pd.DataFrame(rows)


def headline_claim(ranking: pd.DataFrame, best: pd.DataFrame) -> str:
    """The sentence the book quotes: per setup, who compresses most, or that it is a tie."""
    rank = {r["setup"]: r for r in ranking.to_dict("records")}
    parts = []
    for setup in dict.fromkeys(best["setup"]):
        b = best[(best["setup"] == setup) & best["within"]]
        r = rank.get(setup)
        text = _ranking_text(r, b)
        if r is None or r["verdict"] in ("tie", "not shown"):
            parts.append(f"{setup}: no single method compresses most ({text}).")
        else:
            parts.append(f"{setup}: {text} compresses most.")
    return " ".join(parts)


def headline_markdown(
    best: pd.DataFrame,
    ranking: pd.DataFrame,
    lambdas: pd.DataFrame,
    setup_order: Sequence[str],
    *,
    max_drop: float,
    seeds: Sequence[int],
    profile: str,
) -> str:
    """The ``headline`` snippet: headline table and claim, the rule, provenance.

    The table is stacked (one row per quantity, one column per setup) so that it fits
    the first page's text column whatever the number of setups a profile runs.
    """
    table = headline_table(best, ranking, lambdas, setup_order, max_drop=max_drop)
    return (
        analysis.markdown_table(_stacked(table, "dataset · network"))
        + "\n"
        + headline_claim(ranking, best)
        + f" Each method's configuration is the one with the largest compression "
        f"whose seed-mean validation accuracy is within {max_drop * 100:g} point of "
        "FP32's; test accuracy shown. Ranked are the methods whose paired 95 % interval "
        f"of test accuracy minus FP32's lies wholly above −{max_drop * 100:g} point. "
        + stats.rule_text("ranking", alpha=1 - paired.CONFIDENCE)
        + " Compared: total model bits per seed (lower is better). Seeds "
        f"{', '.join(map(str, seeds))}; profile `{profile}`.\n"
    )


def _stacked(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """``table`` turned on its side: a row per column of it, a column per value of ``key``."""

    def text(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return format(v, ".3g") if isinstance(v, float) else str(v)

    columns = [c for c in table.columns if c != key]
    stacked = pd.DataFrame({"": columns})
    for _, row in table.iterrows():
        stacked[str(row[key])] = [text(row[c]) for c in columns]
    return stacked
