"""Helpers of the ``pareto_lr_reg`` notebook: Pareto fronts over learning rate × L2.

:func:`lr_reg_configs` builds the grid, :func:`summarise` turns the sweep's runs into
seed means (:class:`LrRegTables`); the figures (:func:`draw_fronts`,
:func:`draw_lr_l2_grid`, :func:`draw_granularity`) and the generated Markdown
(:func:`front_table_markdown`, :func:`granularity_table_markdown`,
:func:`summary_markdown`) read those tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from companion.chapters import analysis, paired
from companion.chapters.style import PALETTE, figure_parts, legend_below, panel_grid

#: text written into panels (legends, cell values, tick labels): >= 8 pt in print
_TEXT_SIZE = 9
#: width (in) of a panel of the two-column figures: at most 6.8 in wide in all, their
#: 9 pt text prints at 8.5 pt or more
_PANEL_WIDTH = 3.4
#: most panels of one part of a front figure (three rows and the legend)
_FRONT_PANELS = 6
#: most rows (setup and mode) of one part of the lr × L2 grid
_GRID_ROWS = 4

__all__ = [
    "METRICS",
    "GROUP",
    "GRID_FORMATS",
    "LrRegTables",
    "lr_reg_configs",
    "summarise",
    "draw_fronts",
    "fronts_caption",
    "heat_setups",
    "draw_lr_l2_grid",
    "granularity_best",
    "draw_granularity",
    "granularity_caption",
    "front_table_markdown",
    "granularity_table_markdown",
    "summary_markdown",
]

#: metrics averaged over seeds
METRICS = [
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "mem_kib",
    "mem_bits_per_param",
    "mem_compression",
    "mem_fp32_kib",
    "mem_q_bits_per_param",
    "mem_quantized_fraction",
]
#: one seed-mean row per setup, flavour, mode, granularity, lr, L2 (and λ)
GROUP = [
    "setup",
    "dataset",
    "arch",
    "flavour",
    "mode",
    "kernel_granularity",
    "lr",
    "l2",
    "threshold",
    "total_epochs",
    "config_id",
]
#: heat-map cells: (metric, scale, number format, colour map, what); accuracy in %,
#: memory in bits
GRID_FORMATS = {
    "test_accuracy": (100, ".1f", "viridis", "test accuracy (%)"),
    "mem_bits_per_param": (1, ".2f", "viridis_r", "bits / parameter"),
}
#: y limit of an empty granularity panel (bits), and the headroom above the highest bar
#: (legend)
_EMPTY_BITS_LIMIT = 8
_HEADROOM = 1.3
_BAR_GROUP_WIDTH = 0.8  # seaborn's default width of one group of bars
#: weights of the red, green and blue channels in a colour's luminance (Rec. 709):
#: cell values are written white on darker cells, black on lighter ones
_LUMINANCE = (0.2126, 0.7152, 0.0722)
#: the FP32 reference of a run: same setup, same total epochs (pretraining included)
_REF_BY = ["setup", "total_epochs"]


@dataclass
class LrRegTables:
    """Seed means of the sweep and the display orders the figures and tables share.

    Attributes:
        agg: seed means of every configuration (FP32 and nested), with an ``lr_l2``
            label.
        nested: the nested rows of ``agg``.
        reference: FP32 reference test accuracy per (setup, total epochs) (the FP32
            configuration chosen on validation): a post-training run (pretraining plus
            training) is compared with an FP32 network trained as many epochs in all.
        selection: the same FP32 configuration's validation accuracy (every choice of
            lr, L2 and granularity is made on the validation split against it).
        runs: the per-seed runs with ``total_epochs`` and ``config_id`` (paired
            comparisons).
        setup_order, mode_order, gran_order: display orders of the values present.
    """

    agg: pd.DataFrame
    nested: pd.DataFrame
    reference: pd.Series
    selection: pd.Series
    runs: pd.DataFrame
    setup_order: list[str]
    mode_order: list[str]
    gran_order: list[str]

    def fp32(self, setup: str, rows: pd.DataFrame) -> float | None:
        """FP32 test accuracy at the total epochs of ``rows`` (one budget) in ``setup``."""
        budgets = rows["total_epochs"].unique()
        if len(budgets) != 1:
            raise ValueError(f"{setup}: rows of several budgets {sorted(budgets)}")
        return self.reference.get((setup, int(budgets[0])))


def lr_reg_configs(
    setups: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    *,
    learning_rates: Sequence[float],
    l2_coefficients: Sequence[float],
    modes: Sequence[str],
    granularities: Sequence[str],
    post_training_granularities: Sequence[str],
    seeds: Sequence[int],
) -> tuple[list[dict], list[dict]]:
    """``(nested configurations, FP32 references)`` of the learning-rate × L2 grid.

    Every setup crosses lr, L2 and seeds with its modes and granularities (post-training
    only the granularities also in ``post_training_granularities``); the FP32 references
    cross lr, L2 and seeds, once with ``epochs`` and, where the setup has post-training
    runs, once with ``pretrain_epochs + epochs`` (the same total budget as those runs).
    Unknown granularity names raise ``ValueError`` before anything trains.
    """
    analysis.check_granularities(granularities, "granularities")
    analysis.check_granularities(
        post_training_granularities, "post_training_granularities"
    )
    configs, references = [], []
    for setup in setups:
        base, opt = analysis.setup_config(setup, defaults)
        axes = {
            "lr": opt.get("learning_rates", learning_rates),
            "l2": opt.get("l2_coefficients", l2_coefficients),
            "seed": opt.get("seeds", seeds),
        }
        grans = analysis.check_granularities(opt.get("granularities", granularities))
        for mode in opt.get("modes", modes):
            mode_grans = (
                grans
                if mode == "from_scratch"
                else [g for g in grans if g in post_training_granularities]
            )
            configs += analysis.grid(
                {**base, "mode": mode},
                {"kernel_granularity": mode_grans, **axes},
                where=analysis.granularity_fits,
            )
        fp32 = {**base, "flavour": "fp32", "mode": "from_scratch"}
        budgets = [base["epochs"]]
        if "post_training" in opt.get("modes", modes):
            budgets.append(base.get("pretrain_epochs", base["epochs"]) + base["epochs"])
        references += analysis.grid(fp32, {**axes, "epochs": budgets})
    return configs, references


def summarise(runs: pd.DataFrame) -> LrRegTables:
    """Seed means, FP32 references (per setup and total epochs) and display orders."""
    runs = runs.assign(
        total_epochs=analysis.total_epochs(runs), config_id=analysis.config_id(runs)
    )
    agg = analysis.aggregate_seeds(runs, METRICS, by=GROUP)
    agg["lr_l2"] = [
        f"lr {analysis.fmt_sci(a)}, L2 {analysis.fmt_sci(b)}"
        for a, b in zip(agg["lr"], agg["l2"], strict=True)
    ]
    nested = agg[agg["flavour"] == "nested"].copy()
    return LrRegTables(
        agg=agg,
        nested=nested,
        reference=analysis.reference_accuracy(runs, by=_REF_BY),
        selection=analysis.reference_accuracy(
            runs, by=_REF_BY, accuracy=analysis.SELECT_ON
        ),
        runs=runs,
        setup_order=list(dict.fromkeys(runs["setup"])),
        mode_order=analysis.present_in_order(nested["mode"], analysis.MODE_ORDER),
        gran_order=analysis.present_in_order(
            nested["kernel_granularity"], analysis.GRANULARITY_ORDER
        ),
    )


def _gran_colours(t: LrRegTables, grans: Sequence[str]) -> list[Any]:
    """One colour per granularity, the same in every panel and part of a figure."""
    return [PALETTE[t.gran_order.index(g) % len(PALETTE)] for g in grans]


def _front_panel(
    ax: plt.Axes,
    t: LrRegTables,
    setup: str,
    mode: str,
    x: str,
    xlabel: str,
    max_drop: float,
) -> None:
    a = t.nested[(t.nested["setup"] == setup) & (t.nested["mode"] == mode)]
    hue_order = analysis.present_in_order(a["kernel_granularity"], t.gran_order)
    analysis.plot_front(
        ax,
        a,
        x,
        "test_accuracy",
        hue="kernel_granularity",
        hue_order=hue_order,
        palette=_gran_colours(t, hue_order),
    )
    analysis.reference_lines(ax, t.fp32(setup, a), max_drop=max_drop)
    fp32 = t.agg[(t.agg["setup"] == setup) & (t.agg["flavour"] == "fp32")]
    fp32_kib = fp32["mem_kib_mean"].max()
    ax.set_title(
        f"{setup}\n{mode.replace('_', ' ')} (FP32 network: {fp32_kib:.0f} KiB)",
        fontsize=_TEXT_SIZE,
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")


def _front_groups(t: LrRegTables) -> list[list[tuple[str, str]]]:
    """Per setup, its ``(setup, mode)`` panels that have runs."""
    n = t.nested
    return [
        [(s, m) for m in t.mode_order if ((n["setup"] == s) & (n["mode"] == m)).any()]
        for s in t.setup_order
    ]


def draw_fronts(
    t: LrRegTables, x: str, xlabel: str, *, max_drop: float
) -> list[plt.Figure]:
    """Accuracy against memory ``x``, a front per granularity; setup × mode panels.

    Returns the figure's parts (at most six panels, the modes of a setup together), for
    :func:`companion.chapters.style.save_figure`.
    """
    return [
        _fronts_part(t, panels, x, xlabel, max_drop)
        for panels in figure_parts(_front_groups(t), _FRONT_PANELS)
    ]


def _fronts_part(
    t: LrRegTables,
    panels: Sequence[tuple[str, str]],
    x: str,
    xlabel: str,
    max_drop: float,
) -> plt.Figure:
    fig, axes = panel_grid(len(panels), panel=(_PANEL_WIDTH, 2.9))
    for ax, (setup, mode) in zip(axes, panels, strict=True):
        _front_panel(ax, t, setup, mode, x, xlabel, max_drop)
    fig.tight_layout()
    legend_below(fig, ncol=3, fontsize=_TEXT_SIZE)
    return fig


def fronts_caption(what: str, *, max_drop: float) -> str:
    """Caption text of a front figure; ``what`` names the memory axis."""
    return (
        f"Test accuracy against {what} of nested-quantizer networks over the "
        "learning-rate × L2 grid (points: seed means ± std; step lines and "
        "diamonds: Pareto front per scale granularity; dashed: best FP32 network "
        f"of the grid, dotted: {max_drop * 100:g} point below it)"
    )


def heat_setups(t: LrRegTables) -> dict[str, str]:
    """Setups with a grid (more than one lr or L2) -> their first granularity.

    Without any grid the first setup is shown.
    """
    nested = t.nested
    shown = [
        s
        for s in t.setup_order
        if nested[nested["setup"] == s][["lr", "l2"]].drop_duplicates().shape[0] > 1
    ]
    shown = shown or t.setup_order[:1]
    return {
        s: nested[nested["setup"] == s]["kernel_granularity"].iloc[0] for s in shown
    }


def _heat_panel(ax: plt.Axes, a: pd.DataFrame, metric: str, title: str) -> None:
    """Seed means of ``metric`` over L2 (rows) × lr (columns), each cell annotated.

    Drawn with ``imshow`` (``seaborn.heatmap`` draws the whole figure once per panel
    to decide on rotating its tick labels).
    """
    scale, fmt, cmap, what = GRID_FORMATS[metric]
    table = a.assign(v=a[f"{metric}_mean"] * scale).pivot_table(
        index="l2", columns="lr", values="v"
    )
    values = table.to_numpy(float)
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            rgb = image.cmap(image.norm(v))[:3]
            ax.text(
                j,
                i,
                format(v, fmt),
                ha="center",
                va="center",
                fontsize=_TEXT_SIZE,
                color="white" if np.dot(rgb, _LUMINANCE) < 0.5 else "black",
            )
    ax.set_xticks(range(values.shape[1]), [analysis.fmt_sci(v) for v in table.columns])
    ax.set_yticks(range(values.shape[0]), [analysis.fmt_sci(v) for v in table.index])
    ax.tick_params(labelsize=_TEXT_SIZE, length=0)
    ax.grid(False)
    ax.set_xlabel("learning rate", fontsize=_TEXT_SIZE + 1)
    ax.set_ylabel("L2 coefficient", fontsize=_TEXT_SIZE + 1)
    ax.set_title(f"{title}: {what}", fontsize=_TEXT_SIZE)


def _grid_rows(t: LrRegTables, setup: str, gran: str, mode: str) -> pd.DataFrame:
    n = t.nested
    return n[
        (n["setup"] == setup) & (n["mode"] == mode) & (n["kernel_granularity"] == gran)
    ]


def draw_lr_l2_grid(t: LrRegTables) -> list[plt.Figure]:
    """Seed-mean accuracy and bits per parameter over lr × L2 per setup and mode.

    A row per setup of :func:`heat_setups` and mode, a column per metric; returns the
    figure's parts (at most four rows, the modes of a setup together), for
    :func:`companion.chapters.style.save_figure`.
    """
    groups = [
        [
            (setup, gran, mode)
            for mode in t.mode_order
            if len(_grid_rows(t, setup, gran, mode))
        ]
        for setup, gran in heat_setups(t).items()
    ]
    return [_grid_part(t, rows) for rows in figure_parts(groups, _GRID_ROWS)]


def _grid_part(t: LrRegTables, rows: Sequence[tuple[str, str, str]]) -> plt.Figure:
    fig, axes = plt.subplots(
        len(rows),
        len(GRID_FORMATS),
        figsize=(_PANEL_WIDTH * len(GRID_FORMATS), 2.3 * len(rows)),
        squeeze=False,
    )
    for row, (setup, gran, mode) in zip(axes, rows, strict=True):
        a = _grid_rows(t, setup, gran, mode)
        title = f"{setup} · {gran}\n{mode.replace('_', ' ')}"
        for ax, metric in zip(row, GRID_FORMATS, strict=True):
            _heat_panel(ax, a, metric, title)
    fig.tight_layout()
    return fig


def granularity_best(t: LrRegTables, *, max_drop: float) -> pd.DataFrame:
    """Best compression within ``max_drop`` per setup, mode, granularity, in order."""
    keep = [
        "lr",
        "l2",
        "mem_bits_per_param_mean",
        "mem_q_bits_per_param_mean",
        "mem_quantized_fraction_mean",
        "mem_kib_mean",
        "test_accuracy_std",
        "n_seeds",
        "config_id",
    ]
    best = analysis.best_compression_table(
        t.nested,
        t.selection,
        report_reference=t.reference,
        by=["setup", "mode", "kernel_granularity"],
        ref_by=_REF_BY,
        max_drop=max_drop,
        keep=keep,
    )
    return analysis.sort_by_order(
        best,
        {
            "setup": t.setup_order,
            "mode": t.mode_order,
            "kernel_granularity": t.gran_order,
        },
    )


def _mark_none(
    ax: plt.Axes, g: pd.DataFrame, order: Sequence[str], hues: Sequence[str]
) -> None:
    """Write "none" where no configuration of a granularity and mode qualified."""
    for i, gran in enumerate(order):
        for j, mode in enumerate(hues):
            sel = g[(g["kernel_granularity"] == gran) & (g["mode"] == mode)]
            if len(sel) and not bool(sel["within"].iloc[0]):
                x = i + (j - (len(hues) - 1) / 2) * _BAR_GROUP_WIDTH / len(hues)
                ax.text(
                    x,
                    0.03,
                    "none",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=_TEXT_SIZE,
                    transform=ax.get_xaxis_transform(),
                )


def draw_granularity(
    best: pd.DataFrame, t: LrRegTables, *, max_drop: float
) -> plt.Figure:
    """Bits per quantized parameter of :func:`granularity_best` as bars."""
    n = len(t.setup_order)
    fig, axes = panel_grid(n, panel=(_PANEL_WIDTH, 3.8))
    modes = [m.replace("_", " ") for m in t.mode_order]
    for ax, setup in zip(axes, t.setup_order, strict=True):
        g = best[best["setup"] == setup].copy()
        g["bits"] = g["mem_q_bits_per_param_mean"].astype(float)
        g["mode"] = g["mode"].str.replace("_", " ")
        order = analysis.present_in_order(g["kernel_granularity"], t.gran_order)
        hues = analysis.present_in_order(g["mode"], modes)
        sns.barplot(
            data=g,
            x="kernel_granularity",
            y="bits",
            hue="mode",
            order=order,
            hue_order=hues,
            palette=PALETTE[: len(hues)],
            ax=ax,
        )
        _mark_none(ax, g, order, hues)
        top = g["bits"].max()
        ax.set_ylim(0, _EMPTY_BITS_LIMIT if pd.isna(top) else top * _HEADROOM)
        ax.set_title(setup, fontsize=_TEXT_SIZE + 1)
        ax.set_xlabel("scale granularity")
        ax.set_ylabel(
            f"bits / quantized parameter\nwithin {max_drop * 100:g} pt of FP32"
        )
        ax.legend(fontsize=_TEXT_SIZE, title=None, loc="upper right", ncol=len(hues))
    fig.tight_layout()
    return fig


def granularity_caption(*, max_drop: float) -> str:
    """Caption text of the granularity figure."""
    return (
        "Smallest memory of the quantized layers (bits per quantized parameter, "
        "scales included; the CNN keeps its dense layers in float32, as in the "
        f"thesis) whose seed-mean test accuracy stays within {max_drop * 100:g} "
        "point of the FP32 reference, per scale granularity and mode (best "
        "configuration of the learning-rate × L2 grid by total compression; "
        "'none': no configuration qualified)"
    )


def _pm(d: pd.DataFrame, metric: str) -> list[str]:
    return [
        analysis.fmt_pm(m, s)
        for m, s in zip(d[f"{metric}_mean"], d[f"{metric}_std"], strict=True)
    ]


def front_table_markdown(
    t: LrRegTables, *, seeds: Sequence[int], profile: str, threshold: float
) -> str:
    """Pareto-front configurations (memory in KiB) per setup and mode, seed means."""
    front = analysis.fronts(
        t.nested, "mem_kib_mean", "test_accuracy_mean", by=["setup", "mode"]
    )
    front = analysis.sort_by_order(
        front, {"setup": t.setup_order, "mode": t.mode_order}, extra=["mem_kib_mean"]
    )
    shown = front.assign(
        **{
            "mode": front["mode"].str.replace("_", " "),
            "lr": front["lr"].map(analysis.fmt_sci),
            "L2": front["l2"].map(analysis.fmt_sci),
            "test accuracy (%)": _pm(front, "test_accuracy"),
            "memory (KiB)": front["mem_kib_mean"].round(1),
            "bits / parameter": front["mem_bits_per_param_mean"].round(2),
            "compression (×)": front["mem_compression_mean"].round(2),
        }
    )
    cols = [
        "setup",
        "mode",
        "kernel_granularity",
        "lr",
        "L2",
        "test accuracy (%)",
        "memory (KiB)",
        "bits / parameter",
        "compression (×)",
    ]
    table = shown[cols].rename(columns={"kernel_granularity": "granularity"})
    return (
        analysis.markdown_table(table)
        + "\nPareto-front configurations per setup and mode (seed means over "
        f"seeds {', '.join(map(str, seeds))}; profile `{profile}`, λ = "
        f"{analysis.fmt_sci(threshold)}).\n"
    )


def granularity_table_markdown(best: pd.DataFrame, *, max_drop: float) -> str:
    """:func:`granularity_best`'s table: accuracy, bits, quantized share, lr and L2."""
    shown = best.assign(
        **{
            "mode": best["mode"].str.replace("_", " "),
            "FP32 accuracy (%)": best["reference_accuracy"].map(
                lambda v: analysis.fmt_pm(v, None)
            ),
            "accuracy (%)": [
                analysis.fmt_pm(m, s)
                for m, s in zip(
                    best["accuracy"], best["test_accuracy_std"], strict=True
                )
            ],
            "bits / parameter": best["mem_bits_per_param_mean"].astype(float).round(2),
            "bits / quantized parameter": best["mem_q_bits_per_param_mean"]
            .astype(float)
            .round(2),
            "quantized share (%)": (
                best["mem_quantized_fraction_mean"].astype(float) * 100
            ).round(0),
            "compression (×)": best["compression"].round(2),
            "lr": best["lr"].map(analysis.fmt_sci),
            "L2": best["l2"].map(analysis.fmt_sci),
        }
    )
    cols = [
        "setup",
        "mode",
        "kernel_granularity",
        "FP32 accuracy (%)",
        "accuracy (%)",
        "bits / parameter",
        "bits / quantized parameter",
        "quantized share (%)",
        "compression (×)",
        "lr",
        "L2",
    ]
    table = shown[cols].rename(columns={"kernel_granularity": "granularity"})
    return (
        analysis.markdown_table(table)
        + f"\nLargest compression within {max_drop * 100:g} point of the FP32 "
        "reference per granularity (empty: no configuration qualified), chosen on the "
        "validation split, test accuracy shown. The reference of a post-training run is "
        "an FP32 network trained as many epochs in all (pretraining + training).\n"
    )


def _epochs(n: int) -> str:
    return f"{int(n)} epoch" + ("" if int(n) == 1 else "s")


def _granularity_verdict(t: LrRegTables, rows: pd.DataFrame) -> str:
    """Whether one granularity's best configuration needs fewer bits than every other's
    (paired 95 % intervals of per-seed bits, :func:`companion.chapters.stats.winner_or_tie`)."""
    rows = rows[rows["within"]]
    if len(rows) < 2:
        return ""
    table = pd.concat(
        [
            t.runs[t.runs["config_id"] == r["config_id"]].assign(
                gran=r["kernel_granularity"]
            )
            for r in rows.to_dict("records")
        ],
        ignore_index=True,
    )
    rank = paired.rank_by_bits(table, "gran").iloc[0]
    if rank["verdict"] in ("tie", "not shown"):
        return (
            f" Granularities not told apart: {rank['tied'] or rank['best']} (paired "
            "95 % intervals of the per-seed bits include 0)."
        )
    return f" {rank['verdict']} beats every other granularity (paired 95 % intervals)."


def summary_markdown(t: LrRegTables, *, max_drop: float) -> str:
    """One bullet per setup and mode: the best compression within ``max_drop``, how.

    Chosen on the validation split against the FP32 network with the same total epochs;
    the bullet says whether that granularity is told apart from the others
    (:func:`_granularity_verdict`).
    """
    per_gran = granularity_best(t, max_drop=max_drop)
    best = analysis.best_compression_table(
        t.nested,
        t.selection,
        report_reference=t.reference,
        by=["setup", "mode", "total_epochs"],
        ref_by=_REF_BY,
        max_drop=max_drop,
        keep=["kernel_granularity", "lr", "l2", "mem_bits_per_param_mean"],
    )
    best = analysis.sort_by_order(best, {"setup": t.setup_order, "mode": t.mode_order})
    lines = []
    for r in best.itertuples():
        head = f"- **{r.setup}, {r.mode.replace('_', ' ')}**: "
        if not r.within:
            lines.append(
                head + f"no configuration within {max_drop * 100:g} point of "
                f"FP32 trained {_epochs(r.total_epochs)} "
                f"({r.reference_accuracy * 100:.1f} %)."
            )
            continue
        rows = per_gran[(per_gran["setup"] == r.setup) & (per_gran["mode"] == r.mode)]
        lines.append(
            head + f"{r.compression:.2f}× smaller than FP32 "
            f"({float(r.mem_bits_per_param_mean):.2f} bits/parameter) "
            f"at {r.accuracy * 100:.1f} % test accuracy (FP32 trained as long, "
            f"{_epochs(r.total_epochs)} in all: {r.reference_accuracy * 100:.1f} %), "
            f"with {r.kernel_granularity} scales, lr "
            f"{analysis.fmt_sci(r.lr)}, L2 {analysis.fmt_sci(r.l2)}."
            + _granularity_verdict(t, rows)
        )
    return "\n".join(lines) + "\n"
