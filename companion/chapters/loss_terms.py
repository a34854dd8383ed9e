"""Helpers of the ``loss_terms`` notebook: the loss-term networks of thesis 3.2.

:func:`loss_term_configs` builds the sweep (one term per run, plus rate 0 and the FP32
references), :func:`annotate` names each run's term and rate, :func:`summarise` makes
the seed means (:class:`LossTermTables`) that the figures (:func:`draw_overall`,
:func:`draw_dataset_fronts`, :func:`draw_rate_response`, :func:`draw_penalty_curves`)
and the generated Markdown (:func:`implications_markdown`,
:func:`rate_sensitivity_markdown`, :func:`front_table_markdown`) read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from companion.chapters import analysis, paired
from companion.chapters.style import (
    MAX_PANELS,
    TERM_COLORS,
    figure_parts,
    legend_below,
    panel_grid,
    sequential_colors,
)
from companion.engine import experiment
from lqs.losses import TERMS

#: text written into panels (legends, titles, tick labels): >= 8 pt in print
_TEXT_SIZE = 9
#: width (in) of a panel of the two-column figures: at most 6.8 in wide in all, their
#: 9 pt text prints at 8.5 pt or more
_PANEL_WIDTH = 3.4
#: most panels of one part of the dataset-fronts figure (three rows and the legend)
_FRONT_PANELS = 6
#: most (upper, lower) axes pairs of one part of the rate-response and penalty figures
_PAIR_PANELS = MAX_PANELS // 2
#: memory axis of the front panels
_MEMORY_LABEL = "memory (bits / parameter,\nscales included)"

__all__ = [
    "TERM_LABEL",
    "TERM_COLOUR",
    "METRICS",
    "LOG_SPAN",
    "term_of",
    "rate_of",
    "loss_term_configs",
    "annotate",
    "LossTermTables",
    "summarise",
    "varied_text",
    "panel_title",
    "panel_parts",
    "draw_overall",
    "overall_caption",
    "draw_dataset_fronts",
    "dataset_fronts_caption",
    "draw_rate_response",
    "RATE_RESPONSE_CAPTION",
    "penalty_curves",
    "draw_penalty_curves",
    "penalty_curves_caption",
    "implications",
    "implication_line",
    "implications_markdown",
    "rate_sensitivity_markdown",
    "fronts_table",
    "front_table_markdown",
]

#: one curve per term variant; the deviation term once per form (also the display order)
TERM_LABEL = {
    "none": "no term (rate 0)",
    "inverse": "inverse",
    "max_bin": "max-bin",
    "deviation_reconstructed": "deviation (reconstructed)",
    "deviation_implementation": "deviation (implementation)",
}
#: one colour per term variant (:data:`companion.chapters.style.TERM_COLORS`)
TERM_COLOUR = TERM_COLORS
METRICS = [
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "mem_kib",
    "mem_bits_per_param",
    "mem_compression",
    "penalty_inverse",
    "penalty_max_bin",
    "penalty_deviation",
]
_GROUP = [
    "setup",
    "dataset",
    "dataset_label",
    "arch",
    "flavour",
    "mode",
    "kernel_granularity",
    "lr",
    "term",
    "term_label",
    "rate",
    "epochs",
    "batch_size",
    "train_limit",
    "test_limit",
    "config_id",
]
#: a penalty axis is logarithmic when its values span more than this factor
LOG_SPAN = 20
#: most x ticks on an epoch axis
_MAX_EPOCH_TICKS = 8


def term_of(row: Mapping[str, Any]) -> str | None:
    """The term variant of a run: none, inverse, max_bin, deviation_<form>, None."""
    if row["flavour"] != "loss_terms":
        return None
    active = [t for t in TERMS if (row.get(f"rate_{t}") or 0) > 0]
    if not active:
        return "none"
    if len(active) > 1:
        raise ValueError(
            f"run {row['config_hash']} has several loss terms {active}; "
            "this notebook trains one at a time"
        )
    return (
        f"deviation_{row['deviation_form']}" if active[0] == "deviation" else active[0]
    )


def rate_of(row: Mapping[str, Any]) -> float | None:
    """The rate of a run's term (0 without a term, None for FP32)."""
    t = term_of(row)
    if t is None or t == "none":
        return None if t is None else 0.0
    return float(row["rate_deviation" if t.startswith("deviation") else f"rate_{t}"])


def loss_term_configs(
    setups: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    *,
    terms: Sequence[str],
    deviation_forms: Sequence[str],
    rates: Sequence[float],
    include_no_term: bool,
    granularities: Sequence[str],
    modes: Sequence[str],
    learning_rates: Sequence[float],
    seeds: Sequence[int],
) -> tuple[list[dict], list[dict]]:
    """``(loss-term configurations, FP32 references)``: one term per run, others at 0.

    A setup's ``rates``, ``granularities``, ``modes``, ``learning_rates`` and ``seeds``
    override the notebook-wide axes. Unknown granularity names raise ``ValueError``
    before training.
    """
    analysis.check_granularities(granularities, "granularities")
    variants = [
        (t, f) for t in terms for f in (deviation_forms if t == "deviation" else [None])
    ]
    configs, references = [], []
    for setup in setups:
        setup = dict(setup)
        setup_rates = setup.pop("rates", rates)
        base, opt = analysis.setup_config(setup, defaults)
        grans = analysis.check_granularities(opt.get("granularities", granularities))
        axes = {
            "kernel_granularity": grans,
            "mode": opt.get("modes", modes),
            "lr": opt.get("learning_rates", learning_rates),
            "seed": opt.get("seeds", seeds),
        }
        if include_no_term:
            configs += analysis.grid(base, axes, where=analysis.granularity_fits)
        for term, form in variants:
            extra = {"deviation_form": form} if form else {}
            configs += analysis.grid(
                {**base, **extra},
                {f"rate_{term}": setup_rates, **axes},
                where=analysis.granularity_fits,
            )
        references += analysis.grid(
            {**base, "flavour": "fp32", "mode": "from_scratch"},
            {"lr": axes["lr"], "seed": axes["seed"]},
        )
    return configs, references


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``term``, ``term_label``, ``rate`` and ``setup`` appended."""
    records = runs.to_dict("records")
    terms = [term_of(r) for r in records]
    out = runs.assign(
        term=terms,
        term_label=[TERM_LABEL.get(t) for t in terms],
        rate=[rate_of(r) for r in records],
    )
    return analysis.add_setup(out)


@dataclass
class LossTermTables:
    """Seed means of the sweep and the display orders the figures and tables share.

    Attributes:
        agg: seed means of every configuration (FP32 included).
        lt: the loss-term rows of ``agg`` with ``acc_change_mean``/``_std`` (vs FP32).
        reference: FP32 reference test accuracy per setup (the FP32 configuration
            chosen on validation).
        selection: the same FP32 configuration's validation accuracy (choices of rate
            and granularity are made on the validation split against it).
        runs: the per-seed runs with their ``config_id`` (paired comparisons).
        setup_order, term_order, gran_order, mode_order: display orders of the values
            present.
        first_gran: the first granularity of each setup (penalty curves, rate
            sensitivity).
        panels: ``(setup, granularity, mode)`` of every panel with runs.
    """

    agg: pd.DataFrame
    lt: pd.DataFrame
    reference: pd.Series
    selection: pd.Series
    runs: pd.DataFrame
    setup_order: list[str]
    term_order: list[str]
    gran_order: list[str]
    mode_order: list[str]
    first_gran: dict[str, str]
    panels: list[tuple[str, str, str]]

    def panel(self, setup: str, gran: str, mode: str) -> pd.DataFrame:
        """Loss-term rows of one panel."""
        lt = self.lt
        return lt[
            (lt["setup"] == setup)
            & (lt["kernel_granularity"] == gran)
            & (lt["mode"] == mode)
        ]

    def first_granularity_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``df`` with each setup's first granularity and the first mode."""
        df = df[df["kernel_granularity"] == df["setup"].map(self.first_gran)]
        return df[df["mode"] == self.mode_order[0]]


def summarise(runs: pd.DataFrame) -> LossTermTables:
    """Seed means, FP32 references and display orders of the sweep's runs."""
    runs = runs.assign(config_id=analysis.config_id(runs))
    agg = analysis.aggregate_seeds(runs, METRICS, by=_GROUP)
    reference = analysis.reference_accuracy(runs, by="setup")
    lt = agg[agg["flavour"] == "loss_terms"].copy()
    lt["acc_change_mean"] = lt["test_accuracy_mean"] - lt["setup"].map(reference)
    lt["acc_change_std"] = lt["test_accuracy_std"]
    setup_order = list(dict.fromkeys(runs["setup"]))
    gran_order = analysis.present_in_order(
        lt["kernel_granularity"], analysis.GRANULARITY_ORDER
    )
    mode_order = analysis.present_in_order(lt["mode"], analysis.MODE_ORDER)
    first_gran = {
        s: next(
            g
            for g in gran_order
            if ((lt["setup"] == s) & (lt["kernel_granularity"] == g)).any()
        )
        for s in setup_order
    }
    t = LossTermTables(
        agg=agg,
        lt=lt,
        reference=reference,
        selection=analysis.reference_accuracy(
            runs, by="setup", accuracy=analysis.SELECT_ON
        ),
        runs=runs,
        setup_order=setup_order,
        term_order=analysis.present_in_order(lt["term"], list(TERM_LABEL)),
        gran_order=gran_order,
        mode_order=mode_order,
        first_gran=first_gran,
        panels=[],
    )
    t.panels = [
        (s, g, m)
        for s in setup_order
        for g in gran_order
        for m in mode_order
        if len(t.panel(s, g, m))
    ]
    return t


def varied_text(t: LossTermTables, *, include_no_term: bool) -> str:
    """The "varied" part of the captions: rates, granularity, mode, learning rate."""
    lt = t.lt
    rates = ", ".join(analysis.fmt_sci(r) for r in sorted(set(lt["rate"]) - {0.0}))
    text = "loss term, rate " + rates + (" and 0" if include_no_term else "")
    text += ", scale granularity" + (", mode" if len(t.mode_order) > 1 else "")
    if lt["lr"].nunique() > 1:
        return text + ", learning rate"
    return text + f"; learning rate {analysis.fmt_sci(lt['lr'].iloc[0])}"


def panel_title(t: LossTermTables, setup: str, gran: str, mode: str) -> str:
    """Two lines: ``<setup>``, ``<granularity> scales`` (+ `` · <mode>`` when several ran)."""
    more = f" · {mode.replace('_', ' ')}" if len(t.mode_order) > 1 else ""
    return f"{setup}\n{gran} scales" + more


def panel_parts(t: LossTermTables, max_panels: int) -> list[list[tuple[str, str, str]]]:
    """:attr:`LossTermTables.panels` in figure parts of at most ``max_panels`` panels.

    The panels of a setup share a part unless they alone are more
    (:func:`companion.chapters.style.figure_parts`).
    """
    return figure_parts(
        [[p for p in t.panels if p[0] == s] for s in t.setup_order], max_panels
    )


def _palette(order: Sequence[str]) -> list:
    return [TERM_COLOUR[term] for term in order]


def draw_overall(t: LossTermTables, *, max_drop: float) -> plt.Figure:
    """Accuracy change vs FP32 against memory: one panel per setup, each term's front."""
    fig, axes = panel_grid(len(t.setup_order), panel=(_PANEL_WIDTH, 3.0))
    for ax, setup in zip(axes, t.setup_order, strict=True):
        ax.axhline(0, color="black", ls="--", lw=1, label="FP32")
        ax.axhline(
            -max_drop * 100,
            color="black",
            ls=":",
            lw=1,
            label=f"FP32 − {max_drop * 100:g} pt",
        )
        analysis.plot_front(
            ax,
            t.lt[t.lt["setup"] == setup],
            "mem_bits_per_param",
            "acc_change",
            hue="term",
            hue_order=t.term_order,
            palette=_palette(t.term_order),
            label=TERM_LABEL.get,
        )
        ax.set_xlabel(_MEMORY_LABEL)
        ax.set_ylabel("test accuracy − FP32\n(points)")
        ax.set_title(setup, fontsize=_TEXT_SIZE + 1)
    fig.tight_layout()
    legend_below(fig, fontsize=_TEXT_SIZE)
    return fig


def overall_caption(*, max_drop: float) -> str:
    """Caption text of the overall figure."""
    return (
        "Test-accuracy change against the FP32 network of the same dataset "
        "versus memory, one panel per dataset, for every loss term, rate and "
        "granularity (points: seed means ± std; step lines and diamonds: each "
        f"term's Pareto front in that dataset; dotted: {max_drop * 100:g} point "
        "below FP32)"
    )


def draw_dataset_fronts(t: LossTermTables, *, max_drop: float) -> list[plt.Figure]:
    """Accuracy against memory per setup, granularity (and mode), fronts per term.

    Returns the figure's parts (:func:`panel_parts`, at most three rows of two panels
    each), for :func:`companion.chapters.style.save_figure`.
    """
    return [
        _dataset_fronts_part(t, panels, max_drop)
        for panels in panel_parts(t, _FRONT_PANELS)
    ]


def _dataset_fronts_part(
    t: LossTermTables, panels: Sequence[tuple[str, str, str]], max_drop: float
) -> plt.Figure:
    fig, axes = panel_grid(len(panels), panel=(_PANEL_WIDTH, 2.9))
    for ax, (setup, gran, mode) in zip(axes, panels, strict=True):
        a = t.panel(setup, gran, mode)
        order = analysis.present_in_order(a["term"], t.term_order)
        analysis.reference_lines(ax, t.reference.get(setup), max_drop=max_drop)
        analysis.plot_front(
            ax,
            a,
            "mem_bits_per_param",
            "test_accuracy",
            hue="term",
            hue_order=order,
            palette=_palette(order),
            label=TERM_LABEL.get,
        )
        ax.set_title(panel_title(t, setup, gran, mode), fontsize=_TEXT_SIZE + 1)
        ax.set_xlabel(_MEMORY_LABEL)
        ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    legend_below(fig, fontsize=_TEXT_SIZE)
    return fig


def dataset_fronts_caption(*, max_drop: float) -> str:
    """Caption text of the dataset-specific fronts."""
    return (
        "Test accuracy versus memory per dataset and scale granularity for every "
        "loss term and rate (points: seed means ± std; step lines and diamonds: "
        "each term's Pareto front; dashed: FP32 network, dotted: "
        f"{max_drop * 100:g} point below it)"
    )


RATE_RESPONSE_CAPTION = (
    "Test accuracy (top) and memory (bottom) against the rate of each loss term "
    "(lines: seed means, bands: ± std; grey dashed: no loss term, dotted: FP32 "
    "network)"
)
#: (metric, scale, y label) of the two rows of the rate-response figure
_RESPONSE_ROWS = [
    ("test_accuracy", 100.0, "test accuracy (%)"),
    ("mem_bits_per_param", 1.0, "memory\n(bits / parameter)"),
]


def _response_panel(
    ax: plt.Axes,
    t: LossTermTables,
    a: pd.DataFrame,
    setup: str,
    metric: str,
    scale: float,
) -> None:
    none = a[a["term"] == "none"]
    rated = [term for term in t.term_order if term != "none"]
    order = analysis.present_in_order(a["term"], rated)
    analysis.plot_band(
        ax,
        a[a["term"].isin(order)],
        "rate",
        metric,
        hue="term",
        hue_order=order,
        palette=_palette(order),
        scale=scale,
        label=TERM_LABEL.get,
    )
    if len(none):
        ax.axhline(
            float(none[f"{metric}_mean"].iloc[0]) * scale,
            color=TERM_COLOUR["none"],
            ls="--",
            lw=1.2,
            label=TERM_LABEL["none"],
        )
    if metric == "test_accuracy" and t.reference.get(setup) is not None:
        ax.axhline(t.reference[setup] * 100, color="black", ls=":", lw=1, label="FP32")
    ax.set_xscale("log")


def _pair_axes(
    n: int, height: float
) -> tuple[plt.Figure, list[tuple[plt.Axes, plt.Axes]]]:
    """``n`` (upper, lower) pairs of axes sharing x, two pairs a row, ``height`` each.

    Each pair is a subfigure, so the upper axes sit right on the lower ones; the layout
    is constrained (no ``tight_layout``).
    """
    cols = min(max(n, 1), 2)
    rows = -(-max(n, 1) // cols)
    fig = plt.figure(
        figsize=(_PANEL_WIDTH * cols, 2 * height * rows), layout="constrained"
    )
    cells = fig.subfigures(rows, cols, squeeze=False).ravel()
    pairs = []
    for cell in cells[:n]:
        top, bottom = cell.subplots(2, 1, sharex=True)
        pairs.append((top, bottom))
    return fig, pairs


def draw_rate_response(t: LossTermTables) -> list[plt.Figure]:
    """Accuracy (upper) and memory (lower axes) against the rate, per panel.

    Returns the figure's parts (:func:`panel_parts`, at most four panels each), for
    :func:`companion.chapters.style.save_figure`.
    """
    return [_rate_response_part(t, panels) for panels in panel_parts(t, _PAIR_PANELS)]


def _rate_response_part(
    t: LossTermTables, panels: Sequence[tuple[str, str, str]]
) -> plt.Figure:
    fig, pairs = _pair_axes(len(panels), height=1.9)
    for (top, bottom), (setup, gran, mode) in zip(pairs, panels, strict=True):
        a = t.panel(setup, gran, mode)
        for ax, (metric, scale, ylabel) in zip((top, bottom), _RESPONSE_ROWS):
            _response_panel(ax, t, a, setup, metric, scale)
            ax.set_ylabel(ylabel, fontsize=_TEXT_SIZE + 1)
        top.set_title(panel_title(t, setup, gran, mode), fontsize=_TEXT_SIZE + 1)
        bottom.set_xlabel(
            "rate ρ of the loss term (log scale)", fontsize=_TEXT_SIZE + 1
        )
    legend_below(fig, fontsize=_TEXT_SIZE)
    return fig


def penalty_curves(
    runs: pd.DataFrame,
    t: LossTermTables,
    *,
    load_history: Callable[[str], pd.DataFrame] = experiment.load_history,
) -> pd.DataFrame:
    """Per-epoch penalty of each run's own term and mean bits of its first kernel.

    Runs with a term, each setup's first granularity and the first mode; one row per run
    and epoch (``penalty`` NaN where the history has no column for the term).
    """
    curve_runs = runs[(runs["flavour"] == "loss_terms") & (runs["term"] != "none")]
    rows = []
    for r in t.first_granularity_rows(curve_runs).to_dict("records"):
        h = load_history(r["config_hash"])
        own = (
            "penalty_deviation"
            if r["term"].startswith("deviation")
            else f"penalty_{r['term']}"
        )
        kernel = next(c for c in h.columns if c.endswith("/kernel/bits_mean"))
        rows.append(
            pd.DataFrame(
                {
                    "setup": r["setup"],
                    "term": r["term"],
                    "rate": r["rate"],
                    "seed": r["seed"],
                    "epoch": h["epoch"],
                    "penalty": h[own] if own in h else np.nan,
                    "kernel_bits": h[kernel],
                    "kernel": kernel.rsplit("/", 1)[0],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _curve_axes(
    top: plt.Axes, bottom: plt.Axes, c: pd.DataFrame, title: str, last: int
) -> None:
    values = c["penalty"].dropna()
    if len(values) and values.min() > 0 and values.max() / values.min() > LOG_SPAN:
        top.set_yscale("log")
    else:
        top.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    top.set_title(title, fontsize=_TEXT_SIZE + 1)
    top.set_ylabel("penalty (unweighted)", fontsize=_TEXT_SIZE)
    kernel = c["kernel"].iloc[0] if len(c) else "kernel"
    bottom.set_ylabel(f"{kernel}\nmean bits", fontsize=_TEXT_SIZE)
    bottom.set_xlabel("epoch", fontsize=_TEXT_SIZE)
    for ax in (top, bottom):
        ax.set_xlim(-0.25, last + 0.25)
        ax.set_xticks(range(0, last + 1, max(1, -(-last // _MAX_EPOCH_TICKS))))
        ax.tick_params(labelsize=_TEXT_SIZE)
        ax.yaxis.get_offset_text().set_fontsize(_TEXT_SIZE)


def draw_penalty_curves(curves: pd.DataFrame, t: LossTermTables) -> list[plt.Figure]:
    """Penalty (upper) and kernel bits (lower axes) per epoch, seed means, a line per rate.

    One panel per setup and term; returns the figure's parts (at most four panels,
    the terms of a setup together), for :func:`companion.chapters.style.save_figure`.
    """
    means = curves.groupby(
        ["setup", "term", "rate", "epoch", "kernel"], as_index=False
    )[["penalty", "kernel_bits"]].mean()
    rates = sorted(curves["rate"].unique())
    colour = dict(zip(rates, sequential_colors(len(rates)), strict=True))
    terms = analysis.present_in_order(curves["term"], t.term_order)
    groups = [[(setup, term) for term in terms] for setup in t.setup_order]
    last = int(curves["epoch"].max())
    return [
        _penalty_part(means, panels, colour, last)
        for panels in figure_parts(groups, _PAIR_PANELS)
    ]


def _penalty_part(
    means: pd.DataFrame,
    panels: Sequence[tuple[str, str]],
    colour: Mapping[float, Any],
    last: int,
) -> plt.Figure:
    fig, pairs = _pair_axes(len(panels), height=2.0)
    for (top, bottom), (setup, term) in zip(pairs, panels, strict=True):
        c = means[(means["setup"] == setup) & (means["term"] == term)]
        for rate, g in c.groupby("rate"):
            pen = g.dropna(subset=["penalty"])
            kw = dict(
                marker="o", ms=3, color=colour[rate], label=analysis.fmt_sci(rate)
            )
            top.plot(pen["epoch"], pen["penalty"], **kw)
            bottom.plot(g["epoch"], g["kernel_bits"], **kw)
        _curve_axes(top, bottom, c, f"{setup}\n{TERM_LABEL[term]}", last)
    legend_below(fig, ncol=min(len(colour), 4), fontsize=_TEXT_SIZE, title="rate ρ")
    return fig


def penalty_curves_caption(t: LossTermTables) -> str:
    """Caption text of the penalty-curve figure (names each setup's granularity)."""
    grans = ", ".join(f"{s}: {g} scales" for s, g in t.first_gran.items())
    return (
        "Penalty of each run's own loss term over the epochs (mean over an epoch's "
        f"batches; log scale where it spans more than a factor {LOG_SPAN}) and the "
        "mean integer width of the first quantized kernel (epoch 0: initial "
        "scales), seed means, one line per rate; " + grans
    )


def _term_sorted(
    df: pd.DataFrame, t: LossTermTables, extra: Sequence[str] = ()
) -> pd.DataFrame:
    return analysis.sort_by_order(
        df, {"setup": t.setup_order, "term": list(TERM_LABEL)}, extra=extra
    )


def implications(t: LossTermTables, *, max_drop: float) -> pd.DataFrame:
    """Best compression within ``max_drop`` of FP32 per setup and term, and its rate."""
    keep = [
        "term_label",
        "rate",
        "kernel_granularity",
        "mode",
        "lr",
        "test_accuracy_std",
        "mem_bits_per_param_mean",
        "mem_kib_mean",
        "n_seeds",
        "config_id",
    ]
    best = analysis.best_compression_table(
        t.lt,
        t.selection,
        report_reference=t.reference,
        by=["setup", "term"],
        ref_by="setup",
        max_drop=max_drop,
        keep=keep,
    )
    best["term_label"] = best["term"].map(TERM_LABEL)
    return _term_sorted(best, t)


def _implications_table(best: pd.DataFrame, t: LossTermTables) -> str:
    shown = best.assign(
        **{
            "FP32 accuracy (%)": (best["reference_accuracy"] * 100).round(1),
            "accuracy (%)": [
                analysis.fmt_pm(m, s)
                for m, s in zip(
                    best["accuracy"], best["test_accuracy_std"], strict=True
                )
            ],
            "bits / parameter": best["mem_bits_per_param_mean"].astype(float).round(2),
            "compression (×)": best["compression"].round(2),
            "rate ρ": best["rate"].map(analysis.fmt_sci),
        }
    )
    cols = [
        "setup",
        "term_label",
        "FP32 accuracy (%)",
        "accuracy (%)",
        "bits / parameter",
        "compression (×)",
        "rate ρ",
        "kernel_granularity",
    ]
    cols += ["mode"] if len(t.mode_order) > 1 else []
    return analysis.markdown_table(
        shown[cols].rename(
            columns={"term_label": "loss term", "kernel_granularity": "granularity"}
        )
    )


def _term_ranking(best: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Any]:
    """Which qualifying term's selected configuration needs the fewest bits, or a tie
    (:func:`companion.chapters.stats.winner_or_tie` on per-seed total bits)."""
    parts = [
        runs[runs["config_id"] == r["config_id"]].assign(term_label=r["term_label"])
        for r in best.to_dict("records")
    ]
    return paired.rank_by_bits(pd.concat(parts, ignore_index=True), "term_label").iloc[
        0
    ]


def implication_line(
    best: pd.DataFrame,
    setup: str,
    reference: float,
    runs: pd.DataFrame,
    *,
    max_drop: float,
) -> str:
    """One bullet of the implications: the term that compresses most within the bar, or a tie.

    ``best`` holds the :func:`implications` rows of ``setup``, ``runs`` the per-seed runs
    (``runs`` of :class:`LossTermTables`). A term is named as compressing most only when the paired
    95 % interval of its per-seed bits against every other qualifying term excludes 0
    (:func:`_term_ranking`); otherwise the tied terms are listed. Terms without a qualifying
    rate are "not within reach"; the network without a term closes the line.
    """
    drop = f"{max_drop * 100:g}"
    rated = best[best["term"] != "none"]
    b = rated[rated["within"]].sort_values("compression", ascending=False)
    if b.empty:
        return (
            f"- **{setup}**: no loss term stays within {drop} point of FP32 "
            f"({reference * 100:.1f} %)."
        )

    def item(r: Mapping[str, Any]) -> str:
        return (
            f"{r['term_label']} ({r['compression']:.2f}×, rate "
            f"{analysis.fmt_sci(r['rate'])}, {r['kernel_granularity']})"
        )

    rank = _term_ranking(b, runs) if len(b) > 1 else None
    head = f"- **{setup}**, within {drop} point of FP32 ({reference * 100:.1f} %): "
    if rank is None or rank["verdict"] not in ("tie", "not shown"):
        w = b.iloc[0]
        text = head + (
            f"{w['term_label']} compresses most, {w['compression']:.2f}× "
            f"({float(w['mem_bits_per_param_mean']):.2f} bits/parameter) at "
            f"{analysis.fmt_pm(w['accuracy'], w['test_accuracy_std'])} % with rate "
            f"{analysis.fmt_sci(w['rate'])} and {w['kernel_granularity']} scales"
        )
        others = b.iloc[1:]
        if len(others):
            text += "; then " + ", ".join(item(r) for r in others.to_dict("records"))
    else:
        tied = set(str(rank["tied"]).split(", "))
        inside = b[b["term_label"].isin(tied)]
        text = head + (
            "no term compresses significantly more than the others (paired 95 % "
            "intervals of the per-seed bits include 0): "
            + ", ".join(item(r) for r in inside.to_dict("records"))
        )
        rest = b[~b["term_label"].isin(tied)]
        if len(rest):
            text += "; significantly less than the first: " + ", ".join(
                item(r) for r in rest.to_dict("records")
            )
    failed = rated[~rated["within"]]
    if len(failed):
        text += "; not within reach: " + ", ".join(failed["term_label"])
    none = best[best["term"] == "none"]
    if len(none) and bool(none["within"].iloc[0]):
        kept = float(none["compression"].iloc[0])
        text += f"; without any term the network keeps {kept:.2f}×"
    return text + "."


def implications_markdown(
    best: pd.DataFrame,
    t: LossTermTables,
    *,
    max_drop: float,
    seeds: Sequence[int],
    profile: str,
) -> str:
    """The ``implications`` snippet: its table and a line per setup."""
    lines = [
        implication_line(
            best[best["setup"] == s], s, t.reference.get(s), t.runs, max_drop=max_drop
        )
        for s in t.setup_order
    ]
    return (
        _implications_table(best, t) + "\nLargest compression within "
        f"{max_drop * 100:g} point of the FP32 "
        "network per dataset and loss term (seed "
        "means over seeds "
        f"{', '.join(map(str, seeds))}; profile "
        f"`{profile}`; empty: no rate qualified; chosen on the validation split, test "
        "accuracy shown).\n\n" + "\n".join(lines) + "\n"
    )


def rate_sensitivity_markdown(t: LossTermTables) -> str:
    """Bits per parameter per rate (first granularity of each setup), their spread."""
    lt = t.lt
    sens = t.first_granularity_rows(lt[lt["term"] != "none"])
    pivot = sens.pivot_table(
        index=["setup", "term"], columns="rate", values="mem_bits_per_param_mean"
    ).reset_index()
    pivot = _term_sorted(pivot, t)
    rate_cols = [c for c in pivot.columns if isinstance(c, float)]
    pivot["spread (bits)"] = pivot[rate_cols].max(axis=1) - pivot[rate_cols].min(axis=1)
    pivot["term"] = pivot["term"].map(TERM_LABEL)
    pivot = pivot.rename(
        columns={c: f"ρ = {analysis.fmt_sci(c)}" for c in rate_cols}
        | {"term": "loss term"}
    )
    none_bits = t.first_granularity_rows(lt[lt["term"] == "none"])
    note = "; ".join(
        f"{s}: {b:.2f}"
        for s, b in zip(
            none_bits["setup"], none_bits["mem_bits_per_param_mean"], strict=True
        )
    )
    grans = ", ".join(f"{s}: {g}" for s, g in t.first_gran.items())
    return (
        analysis.markdown_table(pivot, floatfmt=".2f")
        + "\nMemory (bits per parameter, seed means) per rate, with the first "
        f"granularity of each setup ({grans}); spread = largest minus smallest "
        f"over the rates. Without any term (rate 0): {note} bits per "
        "parameter.\n"
    )


#: columns of ``loss_terms_fronts.csv`` (the table the ``baselines`` notebook overlays)
_FRONT_COLUMNS = [
    "dataset",
    "dataset_label",
    "arch",
    "setup",
    "term",
    "term_label",
    "rate",
    "kernel_granularity",
    "mode",
    "lr",
    "mem_kib",
    "mem_bits_per_param",
    "mem_compression",
    "test_accuracy",
    "test_accuracy_std",
    "n_seeds",
    "seeds",
    "epochs",
    "batch_size",
    "train_limit",
    "test_limit",
]


def fronts_table(t: LossTermTables) -> pd.DataFrame:
    """Each term's Pareto front per setup over all rates and granularities."""
    front = analysis.fronts(
        t.lt, "mem_bits_per_param_mean", "test_accuracy_mean", by=["setup", "term"]
    )
    front = _term_sorted(front, t, extra=["mem_bits_per_param_mean"])
    front = front.rename(
        columns={
            "mem_kib_mean": "mem_kib",
            "mem_bits_per_param_mean": "mem_bits_per_param",
            "test_accuracy_mean": "test_accuracy",
            "mem_compression_mean": "mem_compression",
        }
    )
    return front[_FRONT_COLUMNS]


def front_table_markdown(fronts: pd.DataFrame, *, profile: str) -> str:
    """The ``front_table`` snippet: the configurations of :func:`fronts_table`."""
    shown = fronts.assign(
        **{
            "loss term": fronts["term_label"],
            "rate ρ": fronts["rate"].map(analysis.fmt_sci),
            "test accuracy (%)": [
                analysis.fmt_pm(m, s)
                for m, s in zip(
                    fronts["test_accuracy"], fronts["test_accuracy_std"], strict=True
                )
            ],
            "bits / parameter": fronts["mem_bits_per_param"].round(2),
            "memory (KiB)": fronts["mem_kib"].round(1),
            "compression (×)": fronts["mem_compression"].round(2),
        }
    )
    cols = [
        "setup",
        "loss term",
        "rate ρ",
        "kernel_granularity",
        "test accuracy (%)",
        "bits / parameter",
        "memory (KiB)",
        "compression (×)",
    ]
    table = shown[cols].rename(columns={"kernel_granularity": "granularity"})
    return (
        analysis.markdown_table(table)
        + "\nPareto-front configurations per dataset and loss term (seed means; "
        f"profile `{profile}`).\n"
    )
