"""Shared figure style and the few plot helpers the notebooks reuse.

One seaborn theme (colour-blind-safe palette), figures saved as PNG (HTML) and PDF (print) with
stable names, and a caption that names dataset, profile, seeds and the varied parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # noqa: E402 - headless everywhere (papermill, CI)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lqs.fileio import atomic_write, atomic_write_text  # noqa: E402
from lqs.pareto import pareto_mask  # noqa: E402

__all__ = ["PALETTE", "set_theme", "caption", "save_figure", "plot_pareto"]

#: colour-blind-safe qualitative palette (seaborn "colorblind", from Okabe & Ito)
PALETTE = sns.color_palette("colorblind")


def set_theme(context: str = "notebook") -> None:
    """Apply the project's seaborn theme (white grid, colour-blind palette, readable fonts)."""
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "pdf.fonttype": 42, "axes.titleweight": "bold"})


def caption(text: str, *, dataset: str, profile: str, seeds: Iterable[int] | int | None = None,
            varied: str | None = None) -> str:
    """A figure caption ending with the provenance line: dataset, profile, seeds, varied parameters."""
    parts = [f"Dataset: {dataset}", f"profile: {profile}"]
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        parts.append(f"seeds: {', '.join(map(str, seeds))}")
    if varied:
        parts.append(f"varied: {varied}")
    return f"{text.rstrip('.')}. {'; '.join(parts)}."


def save_figure(fig: plt.Figure, results_dir: str | Path, stem: str, caption_text: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` plus ``<stem>.caption.md`` in ``results_dir``.

    Files are written to temporary names and renamed, so a crash never leaves a half-written figure.
    """
    out = Path(results_dir)
    written = [atomic_write(out / f"{stem}.{ext}", lambda tmp: fig.savefig(tmp, format=ext, **kwargs))
               for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {}))]
    written.append(atomic_write_text(out / f"{stem}.caption.md", caption_text.strip() + "\n"))
    return written


def plot_pareto(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, hue: str | None = None,
                style: str | None = None, front_label: str = "Pareto front") -> plt.Axes:
    """Scatter ``y`` against ``x`` (all runs, faint) and draw each ``hue`` group's Pareto front as a step line."""
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=True))
    colours = dict(zip([g for g, _ in groups], PALETTE))
    hue_kwargs = {} if hue is None else {"hue": hue, "hue_order": list(colours), "palette": list(colours.values())}
    sns.scatterplot(data=df, x=x, y=y, style=style, ax=ax, alpha=0.45, s=30, legend="brief", **hue_kwargs)
    for key, group in groups:
        front = group[pareto_mask(group[x], group[y])].sort_values(x)
        ax.step(front[x], front[y], where="post", color=colours.get(key, "black"), lw=1.6)
        ax.scatter(front[x], front[y], color=colours.get(key, "black"), s=60, marker="D", edgecolor="black",
                   zorder=3, label=None)
    ax.set_title(ax.get_title() or front_label)
    return ax
