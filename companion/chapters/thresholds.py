"""Helpers of the ``pareto_threshold`` notebook: the nested quantizer's λ sweep.

Configurations (:func:`threshold_configs`), seed means, the three figures (accuracy and
memory against λ, the quantized integers per layer, the scale dynamics) and the
generated Markdown (:func:`threshold_table_markdown`, :func:`threshold_best`,
:func:`threshold_best_markdown`). Training goes through
:func:`companion.engine.experiment.sweep` in the notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from companion.chapters import analysis
from companion.chapters.style import PALETTE, legend_below, sequential_colors

#: legend text: >= 8 pt in print
_TEXT_SIZE = 9
#: width (in) of the figures (legends outside the panels included) and the height of
#: one row of panels: 9 pt text prints at 8.5 pt or more and four setups fit a page
_ROW_WIDTH = 6.8
_ROW_HEIGHT = 2.2
#: height (in) of one legend entry at 9 pt
_LEGEND_ENTRY_HEIGHT = 0.19

__all__ = [
    "METRICS",
    "NEAR_BEST",
    "SWEEP_CAPTION",
    "VALUES_CAPTION",
    "threshold_configs",
    "seed_means",
    "draw_threshold_sweep",
    "kernel_value_means",
    "draw_threshold_values",
    "dynamics_tables",
    "draw_threshold_dynamics",
    "dynamics_caption",
    "threshold_table_markdown",
    "threshold_best",
    "threshold_best_markdown",
]

#: metrics averaged over seeds (``<metric>_mean``/``_std`` in ``seed_means.csv``)
METRICS = [
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "mem_bits_per_param",
    "mem_compression",
    "mem_kib",
]
#: a λ is "near the best" when it reaches this share of the best compression (and the
#: accuracy bar)
NEAR_BEST = 0.98
#: tolerance on the accuracy bar: seed means equal to the bar up to float rounding still
#: qualify
_BAR_EPS = 1e-12
#: line styles that tell the layers apart in the dynamics figure (colour = λ)
_LAYER_STYLES = ["-", "--", ":", "-."]
_GROUP = ["setup", "dataset", "arch", "kernel_granularity", "threshold", "lr", "l2"]

SWEEP_CAPTION = (
    "Test accuracy (left; FP32 reference dashed, one point below it dotted) and "
    "memory in bits per parameter (right, scales included) of nested-quantizer "
    "networks against the threshold λ, mean ± std over seeds (bands)"
)
VALUES_CAPTION = (
    "Distinct quantized values (left) and integer range max|P_q| (right) of each "
    "quantized kernel at the end of training against the threshold λ, mean ± std "
    "over seeds"
)


def threshold_configs(
    setups: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    *,
    granularities: Sequence[str],
    thresholds: Sequence[float],
    seeds: Sequence[int],
    dynamics_thresholds: Sequence[float],
    dynamics_epochs: int,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Configurations of the sweep: ``(nested runs, FP32 references, dynamics runs)``.

    Per setup the nested grid crosses granularities (that fit the network), thresholds
    and seeds; the FP32 reference uses the setup's seeds. The dynamics runs train the
    first setup's first granularity and first seed for ``dynamics_epochs`` at each of
    ``dynamics_thresholds``. Unknown granularity names raise ``ValueError`` before
    anything trains.
    """
    analysis.check_granularities(granularities, "granularities")
    configs, references, dynamics = [], [], []
    for i, setup in enumerate(setups):
        base, opt = analysis.setup_config(setup, defaults)
        # a post-training parent trains as long as the references
        base.setdefault("pretrain_epochs", base["epochs"])
        grans = analysis.check_granularities(opt.get("granularities", granularities))
        setup_seeds = opt.get("seeds", seeds)
        axes = {
            "kernel_granularity": grans,
            "threshold": opt.get("thresholds", thresholds),
            "seed": setup_seeds,
        }
        configs += analysis.grid(base, axes, where=analysis.granularity_fits)
        fp32 = {**base, "flavour": "fp32", "mode": "from_scratch"}
        references += analysis.grid(fp32, {"seed": setup_seeds})
        if i == 0:
            first = {
                **base,
                "epochs": dynamics_epochs,
                "kernel_granularity": grans[0],
                "seed": setup_seeds[0],
            }
            dynamics += analysis.grid(first, {"threshold": dynamics_thresholds})
    return configs, references, dynamics


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed means of the nested runs: one row per setup, granularity, λ (and lr, L2)."""
    nested = runs[runs["flavour"] == "nested"]
    return analysis.aggregate_seeds(nested, METRICS, by=_GROUP)


def _log_threshold_axes(row: Sequence[plt.Axes], setup: str) -> None:
    for ax in row:
        ax.set_xscale("log")
        ax.set_xlabel("threshold λ")
        ax.set_title(setup, fontsize=_TEXT_SIZE + 1)


def _row_axes(
    n: int, legend_entries: Sequence[int] | None = None
) -> tuple[plt.Figure, Any]:
    """``n`` rows of two panels, short enough for four setups on one printed page.

    A row with a legend of ``legend_entries`` entries beside it is as tall as the
    legend.
    """
    heights = [
        max(_ROW_HEIGHT, _LEGEND_ENTRY_HEIGHT * (k + 3))
        for k in (legend_entries or [0] * n)
    ]
    return plt.subplots(
        n,
        2,
        figsize=(_ROW_WIDTH, sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )


def draw_threshold_sweep(
    agg: pd.DataFrame,
    reference: Mapping[str, float],
    setup_order: Sequence[str],
    *,
    max_drop: float,
) -> plt.Figure:
    """Accuracy (with the FP32 reference) and memory against λ: a row per setup.

    One colour per granularity in every row; the legend is under the panels.
    """
    fig, axes = _row_axes(len(setup_order))
    grans = analysis.present_in_order(
        agg["kernel_granularity"], analysis.GRANULARITY_ORDER
    )
    for row, setup in zip(axes, setup_order, strict=True):
        a = agg[agg["setup"] == setup]
        order = analysis.present_in_order(a["kernel_granularity"], grans)
        kw = dict(
            hue="kernel_granularity",
            hue_order=order,
            palette=[PALETTE[grans.index(g) % len(PALETTE)] for g in order],
        )
        analysis.plot_band(row[0], a, "threshold", "test_accuracy", scale=100, **kw)
        analysis.reference_lines(row[0], reference.get(setup), max_drop=max_drop)
        analysis.plot_band(row[1], a, "threshold", "mem_bits_per_param", **kw)
        row[0].set_ylabel("test accuracy (%)")
        row[1].set_ylabel("memory\n(bits / parameter)")
        _log_threshold_axes(row, setup)
    fig.tight_layout()
    legend_below(fig, ncol=4, fontsize=_TEXT_SIZE, title="granularity")
    return fig


def kernel_value_means(stats: pd.DataFrame) -> pd.DataFrame:
    """Seed means of each kernel's distinct values and ``max|P_q|`` per setup and λ.

    ``stats`` is :func:`~companion.chapters.analysis.history_stats` of the last epoch
    with ``keep=["setup", "kernel_granularity", "threshold", "seed"]``;
    ``layer_granularity`` names layer and granularity.
    """
    kern = stats[stats["parameter"] == "kernel"].copy()
    kern["layer_granularity"] = kern["layer"] + " · " + kern["kernel_granularity"]
    wide = kern.pivot_table(
        index=["setup", "layer_granularity", "threshold", "seed"],
        columns="stat",
        values="value",
    ).reset_index()
    return analysis.aggregate_seeds(
        wide.rename_axis(columns=None),
        ["unique_values", "max_abs_q"],
        by=["setup", "layer_granularity", "threshold"],
    )


def draw_threshold_values(kagg: pd.DataFrame, setup_order: Sequence[str]) -> plt.Figure:
    """Distinct values and ``max|P_q|`` of each kernel against λ (log-log).

    A row per setup, its kernels' legend to the right of the row.
    """
    entries = [
        kagg.loc[kagg["setup"] == s, "layer_granularity"].nunique() for s in setup_order
    ]
    fig, axes = _row_axes(len(setup_order), entries)
    for row, setup in zip(axes, setup_order, strict=True):
        a = kagg[kagg["setup"] == setup]
        analysis.plot_band(
            row[0], a, "threshold", "unique_values", hue="layer_granularity"
        )
        analysis.plot_band(row[1], a, "threshold", "max_abs_q", hue="layer_granularity")
        row[0].set_ylabel("distinct values of $P_q$")
        row[1].set_ylabel("range $\\max|P_q|$")
        _log_threshold_axes(row, setup)
        for ax in row:
            ax.set_yscale("log")
        row[1].legend(
            title="kernel · granularity",
            fontsize=_TEXT_SIZE,
            title_fontsize=_TEXT_SIZE,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
        )
    fig.tight_layout()
    return fig


def dynamics_tables(
    hist: pd.DataFrame, histories: Sequence[pd.DataFrame], thresholds: Sequence[float]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kernel statistics per λ, layer, epoch; histories with a threshold column)``.

    ``hist`` is :func:`~companion.chapters.analysis.history_stats` of the dynamics runs
    (``keep`` with ``threshold``); ``histories`` their
    :func:`companion.engine.experiment.load_history` tables in the order of
    ``thresholds``.
    """
    kernel = hist[hist["parameter"] == "kernel"]
    kh = kernel.pivot_table(
        index=["threshold", "layer", "epoch"], columns="stat", values="value"
    ).reset_index()
    acc = pd.concat(
        [h.assign(threshold=t) for h, t in zip(histories, thresholds, strict=True)]
    )
    return kh, acc


def draw_threshold_dynamics(
    kh: pd.DataFrame, acc: pd.DataFrame, title: str
) -> plt.Figure:
    """Mean kernel scale (log), mean bits per element and validation accuracy per epoch."""
    fig, axes = plt.subplots(3, 1, figsize=(_ROW_WIDTH, 8.2), sharex=True)
    lambdas = sorted(kh["threshold"].unique())
    ramp = sequential_colors(len(lambdas))
    for i, lam in enumerate(lambdas):
        colour = ramp[i]
        for j, layer in enumerate(sorted(kh["layer"].unique())):
            d = kh[(kh["threshold"] == lam) & (kh["layer"] == layer)]
            kw = dict(
                color=colour, ls=_LAYER_STYLES[j % len(_LAYER_STYLES)], marker="o", ms=3
            )
            axes[0].plot(
                d["epoch"],
                d["scale_mean"],
                label=f"λ={analysis.fmt_sci(lam)} · {layer}",
                **kw,
            )
            axes[1].plot(d["epoch"], d["bits_mean"], **kw)
        a = acc[acc["threshold"] == lam]
        if "val_accuracy" in a:
            axes[2].plot(
                a["epoch"],
                a["val_accuracy"] * 100,
                color=colour,
                marker="o",
                ms=3,
                label=f"λ={analysis.fmt_sci(lam)}",
            )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean scale $s$ of the kernel")
    axes[1].set_ylabel("mean bits per kernel element")
    axes[2].set_ylabel("validation accuracy (%)")
    axes[-1].set_xlabel("epoch (0 = initialisation)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=_TEXT_SIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[2].legend(fontsize=_TEXT_SIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=_TEXT_SIZE + 1, fontweight="bold")
    fig.tight_layout()
    return fig


def dynamics_caption(epochs: int) -> str:
    """Caption text of the dynamics figure (provenance added by ``style.caption``)."""
    return (
        f"Scale dynamics of the quantized kernels ({epochs} epochs; line style = "
        "layer, colour = λ): mean scale (top, log), mean bits per element "
        "(middle) and accuracy on the validation split held out from the training "
        "images (bottom) per epoch"
    )


def _pm_column(d: pd.DataFrame, metric: str, **kwargs: Any) -> list[str]:
    return [
        analysis.fmt_pm(m, s, **kwargs)
        for m, s in zip(d[f"{metric}_mean"], d[f"{metric}_std"], strict=True)
    ]


def threshold_table_markdown(agg: pd.DataFrame) -> str:
    """Every (setup, granularity, λ): accuracy and bits ± std, compression, seeds."""
    table = agg.sort_values(["setup", "kernel_granularity", "threshold"])
    table = table.assign(
        **{
            "λ": table["threshold"].map(analysis.fmt_sci),
            "test accuracy (%)": _pm_column(table, "test_accuracy"),
            "bits / parameter": _pm_column(
                table, "mem_bits_per_param", scale=1, digits=2
            ),
            "compression (×)": table["mem_compression_mean"].round(2),
            "seeds": table["n_seeds"],
        }
    )
    cols = [
        "setup",
        "kernel_granularity",
        "λ",
        "test accuracy (%)",
        "bits / parameter",
        "compression (×)",
        "seeds",
    ]
    return analysis.markdown_table(
        table[cols].rename(columns={"kernel_granularity": "granularity"})
    )


def threshold_best(
    agg: pd.DataFrame,
    reference: Mapping[str, float],
    selection: Mapping[str, float],
    *,
    max_drop: float,
) -> pd.DataFrame:
    """Best compression within ``max_drop`` of FP32 per setup and granularity.

    Chosen on the validation split against FP32's validation accuracy (``selection``);
    the table reports the chosen λ's test accuracy next to FP32's (``reference``).
    ``near_best_thresholds`` gives ``"<min λ> … <max λ>"`` over the λ whose seed means
    stay within the (validation) accuracy bar and reach :data:`NEAR_BEST` of the best
    compression (empty when only one).
    """
    best = analysis.best_compression_table(
        agg,
        selection,
        report_reference=reference,
        by=["setup", "dataset", "arch", "kernel_granularity"],
        ref_by="setup",
        max_drop=max_drop,
        keep=["threshold", "test_accuracy_std", "mem_bits_per_param_mean"],
    )
    near = []
    for r in best.itertuples():
        a = agg[
            (agg["setup"] == r.setup)
            & (agg["kernel_granularity"] == r.kernel_granularity)
        ]
        bar = r.selection_reference - max_drop - _BAR_EPS
        ok = a[
            (a[f"{analysis.SELECT_ON}_mean"] >= bar)
            & (a["mem_compression_mean"] >= NEAR_BEST * r.compression)
        ]
        lo, hi = (
            analysis.fmt_sci(ok["threshold"].min()),
            analysis.fmt_sci(ok["threshold"].max()),
        )
        near.append(f"{lo} … {hi}" if r.within and len(ok) > 1 else "")
    best["near_best_thresholds"] = near
    return best


def threshold_best_markdown(
    best: pd.DataFrame, *, max_drop: float, profile: str, seeds: Sequence[int]
) -> str:
    """The ``threshold_best`` snippet: :func:`threshold_best`'s table and a note."""
    shown = best.assign(
        **{
            "FP32 accuracy (%)": best["reference_accuracy"].map(
                lambda v: analysis.fmt_pm(v, None)
            ),
            "best λ": best["threshold"].map(analysis.fmt_sci),
            "accuracy (%)": [
                analysis.fmt_pm(m, s)
                for m, s in zip(
                    best["accuracy"], best["test_accuracy_std"], strict=True
                )
            ],
            "bits / parameter": best["mem_bits_per_param_mean"].astype(float).round(2),
            "compression (×)": best["compression"].round(2),
            "λ within 2 % of it": best["near_best_thresholds"],
        }
    )
    cols = [
        "setup",
        "kernel_granularity",
        "FP32 accuracy (%)",
        "best λ",
        "accuracy (%)",
        "bits / parameter",
        "compression (×)",
        "λ within 2 % of it",
    ]
    note = (
        "\nLargest compression whose seed-mean validation accuracy is at most "
        f"{max_drop * 100:g} point below the FP32 network's (empty: no λ "
        "qualified); the accuracy shown is that λ's test accuracy. The last column "
        "gives the range of λ whose runs also stay within that bar and reach at least "
        f"{NEAR_BEST * 100:g} % of that compression (a description, not a test: the "
        "baselines headline says which λ tie on paired per-seed bits). Profile "
        f"`{profile}`, seeds {', '.join(map(str, seeds))}.\n"
    )
    table = shown[cols].rename(columns={"kernel_granularity": "granularity"})
    return analysis.markdown_table(table) + note
