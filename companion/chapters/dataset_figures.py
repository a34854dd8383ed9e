"""Figures, tables and generated Markdown of the ``dataset_insights`` notebook.

The statistics themselves are in :mod:`companion.chapters.insights` (pure NumPy/pandas);
this module loads the splits, trains the two networks compared per dataset through the
engine (:func:`train_pairs`), compares their predictions (:func:`compare_pairs`), draws
the figures and writes the sentences the book quotes (:func:`hurt_summary_markdown`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from companion import data
from companion.chapters import analysis, insights
from companion.chapters.style import PALETTE, figure_parts, method_color, panel_grid
from companion.engine import experiment

__all__ = [
    "SPLITS",
    "RELOAD_TOLERANCE",
    "Split",
    "load_splits",
    "draw_samples",
    "class_balance_table",
    "draw_class_balance",
    "class_balance_markdown",
    "pixel_stats_table",
    "pixel_stats_markdown",
    "intensity_histograms",
    "draw_intensity_histograms",
    "THRESHOLD_SOURCES",
    "threshold_from_front",
    "quantized_configs",
    "train_pairs",
    "train_seed_baselines",
    "check_reloaded",
    "PairComparison",
    "compare_pairs",
    "pair_text",
    "draw_per_class",
    "draw_confusion_difference",
    "draw_most_changed",
    "per_class_markdown",
    "pairs_markdown",
    "hurt_line",
    "hurt_summary_markdown",
]

SPLITS = ("train", "test")
#: a reloaded network must reproduce its recorded test accuracy to this (one image in
#: 500)
RELOAD_TOLERANCE = 2e-3
#: batch size of the predictions (memory only; the numbers do not depend on it)
_PREDICT_BATCH = 512
#: most images per row of the "most changed" grid
_MAX_COLUMNS = 4
#: most images of one part of the "most changed" grid (three rows fit the page)
_IMAGES_PER_PART = 3 * _MAX_COLUMNS
#: longest line (characters) under an image of that grid
_TITLE_CHARS = 20
#: most datasets (one full-width panel each) of one part of the comparison figures
_DATASETS_PER_PART = 2
#: line colour of each channel in the intensity histogram
_CHANNEL_COLOUR = {"grey": "black", "R": "tab:red", "G": "tab:green", "B": "tab:blue"}
#: colours of the training and test splits (no method's colour: these are data)
_SPLIT_COLOURS = [PALETTE[9], PALETTE[5]]
#: text written into panels (labels, annotations, legends): >= 8 pt in print
_TEXT_SIZE = 9

Split = tuple[np.ndarray, np.ndarray, Any]  # (x, y, companion.data.DatasetInfo)


def load_splits(
    setups: Sequence[Mapping[str, Any]], common: Mapping[str, Any]
) -> dict[str, dict[str, Split]]:
    """The complete train and test splits of every setup's dataset."""
    splits = {}
    for s in setups:
        image_size = {**common, **s}.get("image_size")
        splits[s["dataset"]] = {
            split: data.load_with_info(s["dataset"], split, image_size=image_size)
            for split in SPLITS
        }
    return splits


def _show_image(ax: plt.Axes, img: np.ndarray) -> None:
    """One image in [0, 1]; grey images in inverted grey scale (high values dark)."""
    grey = img.shape[-1] == 1
    ax.imshow(
        img[..., 0] if grey else img, cmap="gray_r" if grey else None, vmin=0, vmax=1
    )
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)


def draw_samples(x: np.ndarray, y: np.ndarray, info: Any, per_class: int) -> plt.Figure:
    """The first ``per_class`` training images of every class, one row per class."""
    picks = insights.sample_indices(y, per_class, num_classes=info.num_classes)
    names = list(info.class_names)
    cell = min(1.0, 5.4 / max(per_class, 1))  # at most 6.8 in wide with the names
    fig, axes = plt.subplots(
        info.num_classes,
        per_class,
        figsize=(cell * per_class + 1.4, cell * info.num_classes + 0.3),
        squeeze=False,
    )
    for k, row in enumerate(axes):
        for j, ax in enumerate(row):
            if j < len(picks[k]):
                _show_image(ax, x[picks[k][j]])
            else:
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_visible(False)
        row[0].set_ylabel(
            names[k], rotation=0, ha="right", va="center", fontsize=_TEXT_SIZE
        )
    fig.suptitle(
        f"{info.label}: first {per_class} training images per class", fontsize=10
    )
    fig.tight_layout()
    return fig


def _each_split(splits: Mapping[str, Mapping[str, Split]]):
    for d, sp in splits.items():
        for split, (x, y, info) in sp.items():
            yield d, split, x, y, info


def class_balance_table(splits: Mapping[str, Mapping[str, Split]]) -> pd.DataFrame:
    """Class balance (:func:`~companion.chapters.insights.class_balance`) per split."""
    return pd.concat(
        [
            insights.class_balance(y, info.num_classes, info.class_names).assign(
                dataset=d, dataset_label=info.label, split=split
            )
            for d, split, x, y, info in _each_split(splits)
        ],
        ignore_index=True,
    )


def draw_class_balance(balance: pd.DataFrame, labels: Mapping[str, str]) -> plt.Figure:
    """Share of each class per split (bars, %), a panel per dataset; dotted: uniform."""
    fig, axes = panel_grid(len(labels), panel=(3.5, 3.6))
    for ax, d in zip(axes, labels, strict=True):
        b = balance[balance["dataset"] == d].assign(pct=lambda t: t["share"] * 100)
        sns.barplot(
            data=b,
            x="class",
            y="pct",
            hue="split",
            hue_order=list(SPLITS),
            palette=_SPLIT_COLOURS,
            ax=ax,
        )
        ax.axhline(
            100 / b["class"].nunique(), color="black", ls=":", lw=1, label="uniform"
        )
        ax.set_title(labels[d], fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("share of the split (%)")
        ax.tick_params(axis="x", rotation=60, labelsize=_TEXT_SIZE)
        ax.set_ylim(0, b["pct"].max() * 1.35)  # headroom for the legend above the bars
        ax.legend(fontsize=_TEXT_SIZE, ncol=3, loc="upper center")
    fig.tight_layout()
    return fig


def class_balance_markdown(balance: pd.DataFrame) -> str:
    """Examples per split with the sizes of its smallest and largest class."""
    summary = (
        balance.groupby(["dataset_label", "split"], sort=False)
        .agg(
            examples=("count", "sum"),
            smallest_class=("count", "min"),
            largest_class=("count", "max"),
        )
        .reset_index()
    )
    ratio = summary["largest_class"] / summary["smallest_class"]
    summary["largest / smallest"] = ratio.round(3)
    table = summary.rename(
        columns={
            "dataset_label": "dataset",
            "smallest_class": "smallest class",
            "largest_class": "largest class",
        }
    )
    return (
        analysis.markdown_table(table) + "\nExamples per split and the sizes of "
        "its smallest and largest class "
        "(complete splits).\n"
    )


def pixel_stats_table(splits: Mapping[str, Mapping[str, Split]]) -> pd.DataFrame:
    """Pixel statistics (:func:`~companion.chapters.insights.pixel_stats`) per split."""
    return pd.concat(
        [
            insights.pixel_stats(x).assign(
                dataset=d, dataset_label=info.label, split=split
            )
            for d, split, x, y, info in _each_split(splits)
        ],
        ignore_index=True,
    )


def pixel_stats_markdown(stats: pd.DataFrame) -> str:
    """Mean, std, min and max per dataset, split and channel."""
    cols = ["dataset_label", "split", "channel", "mean", "std", "min", "max"]
    table = stats[cols].rename(columns={"dataset_label": "dataset"})
    return (
        analysis.markdown_table(table, floatfmt=".4f")
        + "\nPixel intensities scaled to [0, 1]; mean and population standard "
        "deviation over all images and positions of each split.\n"
    )


def intensity_histograms(
    splits: Mapping[str, Mapping[str, Split]], bins: int
) -> pd.DataFrame:
    """Pixel-value histograms of every training split, one set per dataset."""
    return pd.concat(
        [
            insights.intensity_histogram(sp["train"][0], bins=bins).assign(dataset=d)
            for d, sp in splits.items()
        ],
        ignore_index=True,
    )


def draw_intensity_histograms(
    hist: pd.DataFrame, labels: Mapping[str, str]
) -> plt.Figure:
    """Density of pixel values per channel (log scale), one panel per dataset."""
    fig, axes = panel_grid(len(labels), panel=(3.5, 3.3))
    for ax, d in zip(axes, labels, strict=True):
        for ch, h in hist[hist["dataset"] == d].groupby("channel", sort=False):
            edges = np.append(h["bin_left"].to_numpy(), h["bin_right"].iloc[-1])
            ax.stairs(
                h["density"], edges, color=_CHANNEL_COLOUR.get(ch), lw=1.5, label=ch
            )
        ax.set_yscale("log")
        ax.set_xlabel("pixel value (stored byte / 255)")
        ax.set_ylabel("density (log scale)")
        ax.set_title(labels[d], fontsize=10)
        ax.legend(fontsize=_TEXT_SIZE, title="channel", title_fontsize=_TEXT_SIZE)
    fig.tight_layout()
    return fig


#: where the quantized network's threshold comes from: the ``quantized`` parameter as given,
#: or the ``pareto_threshold`` notebook's best λ (within one point of FP32, selected on the
#: validation split) for the same dataset, network and granularity
THRESHOLD_SOURCES: tuple[str, ...] = ("given", "pareto_threshold")


def threshold_from_front(
    best: pd.DataFrame, setup: Mapping[str, Any], granularity: str, where: str
) -> float:
    """The best λ of ``pareto_threshold`` (its ``threshold_best.csv`` as ``best``) for a setup.

    Raises ``ValueError`` naming ``where`` (the file) and the fix when the table has no
    qualifying λ for the setup's dataset, network and ``granularity``.
    """
    rows = best[
        (best["dataset"] == setup["dataset"])
        & (best["arch"] == setup.get("arch", best["arch"]))
        & (best["kernel_granularity"] == granularity)
    ]
    rows = rows[rows["within"].astype(bool) & rows["threshold"].notna()]
    if rows.empty:
        raise ValueError(
            f"threshold_source='pareto_threshold': {where} has no λ within the accuracy "
            f"bar for dataset {setup['dataset']!r}, arch {setup.get('arch')!r}, "
            f"granularity {granularity!r}; run the pareto_threshold notebook of this "
            "profile with that setup first, or set threshold_source='given' and "
            "quantized.threshold to a number"
        )
    return float(rows["threshold"].iloc[0])


def quantized_configs(
    setups: Sequence[Mapping[str, Any]],
    quantized: Mapping[str, Any],
    *,
    source: str,
    best_csv: Any,
) -> dict[str, dict[str, Any]]:
    """The quantized configuration per dataset: ``quantized``, its λ from ``source``.

    Arguments:
        setups: the notebook's setups (dataset, arch, overrides).
        quantized: the configuration keys of the quantized run.
        source: one of :data:`THRESHOLD_SOURCES`.
        best_csv: path of ``pareto_threshold``'s ``threshold_best.csv`` (read for
            ``source='pareto_threshold'`` only).
    """
    if source not in THRESHOLD_SOURCES:
        raise ValueError(
            f"threshold_source={source!r} is not allowed; allowed: "
            f"{', '.join(map(repr, THRESHOLD_SOURCES))}"
        )
    if source == "given":
        return {s["dataset"]: dict(quantized) for s in setups}
    try:
        best = pd.read_csv(best_csv)
    except FileNotFoundError:
        raise ValueError(
            f"threshold_source='pareto_threshold' needs {best_csv}, which does not "
            "exist: run the pareto_threshold notebook of this profile first (make "
            "notebooks runs it before this one), or set threshold_source='given'"
        ) from None
    granularity = quantized.get("kernel_granularity", "scalar")
    return {
        s["dataset"]: {
            **quantized,
            "threshold": threshold_from_front(best, s, granularity, str(best_csv)),
        }
        for s in setups
    }


def train_pairs(
    setups: Sequence[Mapping[str, Any]],
    common: Mapping[str, Any],
    quantized: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, tuple[dict, dict]], pd.DataFrame]:
    """The FP32 and the quantized network of every setup (engine runs, stored, reused).

    ``quantized`` maps each dataset to its quantized configuration keys
    (:func:`quantized_configs`). Returns ``(pairs, runs)``: ``pairs`` maps each dataset to
    its (FP32 record, quantized record), ``runs`` is the table of both records with a
    ``method`` column.
    """
    pairs, records = {}, []
    for s in setups:
        base = {**common, **s}
        fp32 = experiment.run({**base, "flavour": "fp32"})
        qnt = experiment.run({**base, **quantized[s["dataset"]]})
        pairs[s["dataset"]] = (fp32, qnt)
        records += [fp32, qnt]
    runs = pd.DataFrame(records)
    runs["method"] = [analysis.method_label(r) for r in records]
    return pairs, runs


def train_seed_baselines(
    setups: Sequence[Mapping[str, Any]], common: Mapping[str, Any]
) -> dict[str, dict]:
    """A second FP32 network per setup, the same configuration with the next seed.

    Its per-class differences to the first FP32 network are what seed alone moves a
    class (other initialisation, data order and validation split), the yardstick of the
    quantized network's per-class swings.
    """
    out = {}
    for s in setups:
        base = {**common, **s, "flavour": "fp32"}
        out[s["dataset"]] = experiment.run({**base, "seed": int(base["seed"]) + 1})
    return out


def check_reloaded(proba: np.ndarray, y: np.ndarray, record: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless a reloaded network reproduces its accuracy."""
    acc = float(np.mean(proba.argmax(1) == y))
    if abs(acc - record["test_accuracy"]) >= RELOAD_TOLERANCE:
        raise ValueError(
            f"{record['dataset']} {record['flavour']}: the reloaded "
            f"network reaches {acc:.4f} test accuracy, its record says "
            f"{record['test_accuracy']:.4f} (stale store? rerun with a "
            "fresh results folder)"
        )


@dataclass
class PairComparison:
    """Per dataset: test split and both networks' probabilities; tidy comparisons."""

    tests: dict[str, tuple[np.ndarray, np.ndarray, Any, np.ndarray, np.ndarray]]
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    changed: pd.DataFrame


def _confusion_rows(d: str, info: Any, diff: np.ndarray) -> pd.DataFrame:
    names = list(info.class_names)
    n = len(diff)
    return pd.DataFrame(
        [
            (d, info.label, names[i], names[j], i, j, diff[i, j])
            for i in range(n)
            for j in range(n)
        ],
        columns=[
            "dataset",
            "dataset_label",
            "true",
            "predicted",
            "true_label",
            "predicted_label",
            "change",
        ],
    )


def _reloaded_on(record: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """Probabilities of a stored network on ``x``, after checking that the reloaded
    network reproduces its recorded accuracy on its own test subset (a subset drawn
    with another seed holds other images)."""
    model = experiment.load_model(record)
    x_own, y_own, _ = data.load_with_info(
        record["dataset"],
        "test",
        limit=record["test_limit"],
        image_size=record["image_size"],
        seed=record["seed"],
    )
    check_reloaded(
        model.predict(x_own, batch_size=_PREDICT_BATCH, verbose=0), y_own, record
    )
    return model.predict(x, batch_size=_PREDICT_BATCH, verbose=0)


def compare_pairs(
    pairs: Mapping[str, tuple[dict, dict]],
    *,
    top_k: int,
    seed_baselines: Mapping[str, dict] | None = None,
) -> PairComparison:
    """Predictions of both reloaded networks on their test subset, compared.

    With ``seed_baselines`` (:func:`train_seed_baselines`) the per-class table gains
    ``seed_change``: the other-seed FP32 network's per-class accuracy minus the FP32
    network's, on the same test images.
    """
    tests, per_class, confusion, changed = {}, [], [], []
    for d, (fp32, qnt) in pairs.items():
        x, y, info = data.load_with_info(
            d,
            "test",
            limit=fp32["test_limit"],
            image_size=fp32["image_size"],
            seed=fp32["seed"],
        )
        p_ref = experiment.load_model(fp32).predict(
            x, batch_size=_PREDICT_BATCH, verbose=0
        )
        p_qnt = experiment.load_model(qnt).predict(
            x, batch_size=_PREDICT_BATCH, verbose=0
        )
        check_reloaded(p_ref, y, fp32)
        check_reloaded(p_qnt, y, qnt)
        tests[d] = (x, y, info, p_ref, p_qnt)
        pred_ref, pred_qnt = p_ref.argmax(1), p_qnt.argmax(1)
        tags = dict(dataset=d, dataset_label=info.label)
        table = insights.per_class_table(
            y, pred_ref, pred_qnt, info.num_classes, info.class_names
        ).assign(**tags)
        if seed_baselines is not None:
            p_other = _reloaded_on(seed_baselines[d], x)
            table["seed_change"] = insights.per_class_table(
                y, pred_ref, p_other.argmax(1), info.num_classes, info.class_names
            )["change"].to_numpy()
        per_class.append(table)
        diff = insights.confusion_difference(y, pred_ref, pred_qnt, info.num_classes)
        confusion.append(_confusion_rows(d, info, diff))
        changed.append(
            insights.most_changed(
                y, p_ref, p_qnt, k=top_k, class_names=info.class_names
            ).assign(**tags)
        )
    return PairComparison(
        tests=tests,
        per_class=pd.concat(per_class, ignore_index=True),
        confusion=pd.concat(confusion, ignore_index=True),
        changed=pd.concat(changed, ignore_index=True),
    )


def pair_text(fp32: Mapping[str, Any], qnt: Mapping[str, Any]) -> str:
    """``"FP32 a % vs nested (scalar scales, b bits/param) c %"``: the two networks."""
    return (
        f"FP32 {fp32['test_accuracy'] * 100:.2f} % vs "
        f"{analysis.method_label(qnt)} ({qnt['kernel_granularity']} scales, "
        f"{qnt['mem_bits_per_param']:.2f} bits/param) "
        f"{qnt['test_accuracy'] * 100:.2f} %"
    )


def _annotate_changes(ax: plt.Axes, t: pd.DataFrame) -> None:
    for i, r in enumerate(t.itertuples()):
        ax.annotate(
            f"{r.change * 100:+.1f}",
            (i, 101),
            ha="center",
            va="bottom",
            fontsize=_TEXT_SIZE,
            color="firebrick" if r.change < 0 else "black",
        )


def _dataset_parts(pairs: Mapping[str, Any]) -> list[list[str]]:
    """The datasets of ``pairs`` in figure parts of :data:`_DATASETS_PER_PART`."""
    return figure_parts([[d] for d in pairs], _DATASETS_PER_PART)


def draw_per_class(
    per_class: pd.DataFrame,
    pairs: Mapping[str, tuple[dict, dict]],
    labels: Mapping[str, str],
) -> list[plt.Figure]:
    """Test accuracy per class of both networks (bars, %) and the changes.

    One panel per dataset; returns the figure's parts (two datasets each), for
    :func:`companion.chapters.style.save_figure`.
    """
    return [
        _per_class_part(per_class, pairs, labels, part)
        for part in _dataset_parts(pairs)
    ]


def _per_class_part(
    per_class: pd.DataFrame,
    pairs: Mapping[str, tuple[dict, dict]],
    labels: Mapping[str, str],
    datasets: Sequence[str],
) -> plt.Figure:
    fig, axes = panel_grid(len(datasets), max_cols=1, panel=(6.6, 3.8))
    networks = {"accuracy_reference": "FP32", "accuracy_quantized": "quantized"}
    for ax, d in zip(axes, datasets, strict=True):
        t = per_class[per_class["dataset"] == d]
        long = t.melt(
            id_vars=["class"],
            value_vars=list(networks),
            var_name="network",
            value_name="acc",
        )
        long["network"] = long["network"].map(networks)
        long["acc"] *= 100
        sns.barplot(
            data=long,
            x="class",
            y="acc",
            hue="network",
            hue_order=list(networks.values()),
            palette=[
                method_color("fp32"),
                method_color(analysis.method_label(pairs[d][1])),
            ],
            ax=ax,
        )
        _annotate_changes(ax, t)
        ax.set_ylim(0, 112)  # room for the change labels above 100 %
        ax.set_yticks(range(0, 101, 20))
        ax.set_xlabel("")
        ax.set_ylabel("test accuracy of the class (%)")
        ax.set_title(f"{labels[d]}\n{pair_text(*pairs[d])}", fontsize=_TEXT_SIZE + 1)
        ax.tick_params(axis="x", rotation=45, labelsize=_TEXT_SIZE)
        ax.legend(fontsize=_TEXT_SIZE, loc="lower left")
    fig.tight_layout()
    return fig


def draw_confusion_difference(
    confusion: pd.DataFrame,
    pairs: Mapping[str, tuple[dict, dict]],
    labels: Mapping[str, str],
) -> list[plt.Figure]:
    """Quantized minus FP32 confusion matrix (points of the true class), per dataset.

    Returns the figure's parts (two datasets each), for
    :func:`companion.chapters.style.save_figure`.
    """
    return [
        _confusion_part(confusion, pairs, labels, part)
        for part in _dataset_parts(pairs)
    ]


def _confusion_part(
    confusion: pd.DataFrame,
    pairs: Mapping[str, tuple[dict, dict]],
    labels: Mapping[str, str],
    datasets: Sequence[str],
) -> plt.Figure:
    fig, axes = panel_grid(len(datasets), max_cols=1, panel=(6.0, 4.4))
    for ax, d in zip(axes, datasets, strict=True):
        c = confusion[confusion["dataset"] == d]
        m = (
            c.pivot(index="true_label", columns="predicted_label", values="change")
            * 100
        )
        names = list(c.drop_duplicates("true_label").sort_values("true_label")["true"])
        lim = max(
            float(np.abs(m.to_numpy()).max()), 0.5
        )  # at least ±0.5 points of colour
        digits = 1 if lim < 10 else 0
        # no "-0": values that round to zero are written "0"
        text = m.map(lambda v, d=digits: f"{v:.{d}f}" if round(v, d) != 0 else "0")
        sns.heatmap(
            m,
            cmap="RdBu_r",
            center=0,
            vmin=-lim,
            vmax=lim,
            annot=text,
            fmt="",
            annot_kws={"fontsize": _TEXT_SIZE},
            square=True,
            ax=ax,
            xticklabels=names,
            yticklabels=names,
            cbar_kws={"label": "change (points of the true class)", "shrink": 0.8},
        )
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.tick_params(axis="both", labelsize=_TEXT_SIZE)
        ax.set_title(f"{labels[d]}\n{pair_text(*pairs[d])}", fontsize=_TEXT_SIZE + 1)
    fig.tight_layout()
    return fig


def _wrapped(text: str) -> str:
    """``text`` broken into lines that fit one image column of the grid."""
    return "\n".join(textwrap.wrap(text, _TITLE_CHARS, break_on_hyphens=False))


def _changed_title(r: Mapping[str, Any]) -> str:
    return "\n".join(
        _wrapped(line)
        for line in (
            f"true: {r['class']}",
            f"FP32: {r['pred_class_reference']} ({r['p_pred_reference']:.2f})",
            f"quant.: {r['pred_class_quantized']} ({r['p_pred_quantized']:.2f})",
        )
    )


def draw_most_changed(
    x: np.ndarray, changed: pd.DataFrame, label: str
) -> list[plt.Figure]:
    """The most changed test images (``insights.most_changed``), both predictions.

    Returns the figure's parts (:data:`_IMAGES_PER_PART` images each), for
    :func:`companion.chapters.style.save_figure`.
    """
    records = changed.to_dict("records")
    return [
        _most_changed_part(x, records[i : i + _IMAGES_PER_PART], label)
        for i in range(0, max(len(records), 1), _IMAGES_PER_PART)
    ]


def _most_changed_part(
    x: np.ndarray, records: Sequence[Mapping[str, Any]], label: str
) -> plt.Figure:
    cols = max(min(_MAX_COLUMNS, len(records)), 1)
    rows = max(int(np.ceil(len(records) / cols)), 1)
    titles = [_changed_title(r) for r in records]
    lines = max((t.count("\n") + 1 for t in titles), default=3)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(1.65 * cols, (1.65 + 0.17 * lines) * rows + 0.4),
        squeeze=False,
    )
    for ax in axes.ravel():
        ax.set_visible(False)
    for ax, r, title in zip(axes.ravel(), records, titles, strict=False):
        ax.set_visible(True)
        _show_image(ax, x[r["index"]])
        ax.set_title(title, fontsize=_TEXT_SIZE, fontweight="normal")
    fig.suptitle(
        f"{label}: largest drops of p(true class),\nFP32 → "
        "quantized (probabilities in brackets)",
        fontsize=_TEXT_SIZE + 1,
    )
    fig.tight_layout(h_pad=1.2)
    return fig


def per_class_markdown(per_class: pd.DataFrame) -> str:
    """Accuracy per class of both networks and the change, in points."""
    shown = per_class.assign(
        **{
            "FP32 (%)": (per_class["accuracy_reference"] * 100).round(1),
            "quantized (%)": (per_class["accuracy_quantized"] * 100).round(1),
            "change (points)": (per_class["change"] * 100).round(1),
        }
    )
    cols = [
        "dataset_label",
        "class",
        "n",
        "FP32 (%)",
        "quantized (%)",
        "change (points)",
    ]
    note = ""
    if "seed_change" in per_class:
        shown["FP32 other seed − FP32 (points)"] = (
            per_class["seed_change"] * 100
        ).round(1)
        cols.append("FP32 other seed − FP32 (points)")
        note = (
            " The last column is what a second FP32 network, trained with the next "
            "seed, changes per class: a quantized change of that size is seed noise."
        )
    table = shown[cols].rename(columns={"dataset_label": "dataset", "n": "test images"})
    return (
        analysis.markdown_table(table, floatfmt=".1f")
        + "\nTest accuracy per class of the FP32 and the quantized network (same "
        f"data, architecture, epochs and seed).{note}\n"
    )


def pairs_markdown(runs: pd.DataFrame, *, seeds: Sequence[int], profile: str) -> str:
    """The two networks compared per dataset: configuration, accuracy and memory."""
    shown = runs.assign(
        **{
            "test accuracy (%)": (runs["test_accuracy"] * 100).round(1),
            "bits / parameter": runs["mem_bits_per_param"].round(2),
            "memory (KiB)": runs["mem_kib"].round(1),
            "compression (×)": runs["mem_compression"].round(2),
            "lr": runs["lr"].map(analysis.fmt_sci),
            "λ": runs["threshold"].map(analysis.fmt_sci),
        }
    )
    cols = [
        "dataset_label",
        "arch",
        "method",
        "kernel_granularity",
        "λ",
        "lr",
        "epochs",
        "train_limit",
        "test accuracy (%)",
        "bits / parameter",
        "memory (KiB)",
        "compression (×)",
    ]
    table = shown[cols].rename(
        columns={
            "dataset_label": "dataset",
            "kernel_granularity": "granularity",
            "train_limit": "training images",
        }
    )
    return (
        analysis.markdown_table(table) + "\nThe two networks compared per "
        "dataset (seed "
        f"{', '.join(map(str, seeds))}, profile "
        f"`{profile}`).\n"
    )


def hurt_line(
    per_class: pd.DataFrame,
    confusion: pd.DataFrame,
    label: str,
    pair: tuple[Mapping[str, Any], Mapping[str, Any]],
) -> str:
    """One bullet: class lost and gained most, confusion grown most, the mean change.

    ``per_class`` and ``confusion`` hold one dataset's rows; ``pair`` its (FP32,
    quantized) records.
    """
    t = per_class.sort_values(["change", "label"])
    worst, best = t.iloc[0], t.iloc[-1]
    off = confusion[confusion["true_label"] != confusion["predicted_label"]]
    top = off.sort_values(
        ["change", "true_label", "predicted_label"], ascending=[False, True, True]
    ).iloc[0]
    text = f"- **{label}** ({pair_text(*pair)}): "
    if worst["change"] < 0:
        text += (
            f"the class that lost most is {worst['class']} "
            f"({worst['change'] * 100:+.1f} points, "
            f"{worst['accuracy_reference'] * 100:.1f} % → "
            f"{worst['accuracy_quantized'] * 100:.1f} %)"
        )
    else:
        text += "no class lost accuracy"
    if best["change"] > 0:
        text += (
            f", the one that gained most {best['class']} ({best['change'] * 100:+.1f} "
            "points)"
        )
    if top["change"] > 0:
        text += (
            f"; the confusion that grew most is {top['true']} → "
            f"{top['predicted']} ({top['change'] * 100:+.1f} points of the "
            f"{top['true']} test images)"
        )
    overall = (pair[1]["test_accuracy"] - pair[0]["test_accuracy"]) * 100
    text += (
        ". Averaged over the classes, a class moved by "
        f"{t['change'].abs().mean() * 100:.1f} points (mean absolute "
        "change) while the overall test accuracy changed by "
        f"{overall:+.2f} points"
    )
    if "seed_change" not in t:
        return text + "."
    noise = t["seed_change"].abs()
    beyond = t[t["change"].abs() > noise.max()]
    return text + (
        f"; a second FP32 network (next seed) moves a class by {noise.mean() * 100:.1f} "
        f"points on average and at most {noise.max() * 100:.1f}, so "
        + (
            f"{len(beyond)} class(es) moved more than seed alone does."
            if len(beyond)
            else "no class moved more than seed alone does."
        )
    )


def hurt_summary_markdown(
    cmp: PairComparison,
    pairs: Mapping[str, tuple[dict, dict]],
    labels: Mapping[str, str],
) -> str:
    """The ``hurt_summary`` snippet: :func:`hurt_line` for every dataset."""
    lines = [
        hurt_line(
            cmp.per_class[cmp.per_class["dataset"] == d],
            cmp.confusion[cmp.confusion["dataset"] == d],
            labels[d],
            pairs[d],
        )
        for d in pairs
    ]
    return "\n".join(lines) + "\n"
