"""The one plot style of the notebooks and the one way to save a figure.

One seaborn theme (colour-blind-safe palette), a caption that names dataset, profile,
seeds and the varied parameters, and :func:`save_figure`: PNG (HTML) + PDF (print) +
caption + the ``<stem>_figure.md`` snippet the book includes, all written atomically;
the saved PNG is shown in the executed notebook and the figure is closed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from companion.engine.book import figure_markdown
from lqs.fileio import atomic_write, atomic_write_text

__all__ = ["PALETTE", "PNG_DPI", "SCREEN_DPI", "set_theme", "caption", "save_figure"]

#: colour-blind-safe qualitative palette (seaborn "colorblind", from Okabe & Ito)
PALETTE = sns.color_palette("colorblind")
#: resolution of the saved PNG: sharp in the HTML book at about 1.5x the display size
PNG_DPI = 150
#: pixels per inch of the notebook display (CSS pixels), so a figure shows at its own
#: size
SCREEN_DPI = 96


def set_theme(context: str = "notebook") -> None:
    """Apply the project's seaborn theme (white grid, colour-blind palette, fonts)."""
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,
            "axes.titleweight": "bold",
        }
    )


def caption(
    text: str,
    *,
    dataset: str,
    profile: str,
    seeds: Iterable[int] | int | None = None,
    varied: str | None = None,
) -> str:
    """A figure caption ending with its provenance: dataset, profile, seeds, varied."""
    parts = [f"Dataset: {dataset}", f"profile: {profile}"]
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        parts.append(f"seeds: {', '.join(map(str, seeds))}")
    if varied:
        parts.append(f"varied: {varied}")
    return f"{text.rstrip('.')}. {'; '.join(parts)}."


def save_figure(
    fig: plt.Figure,
    results_dir: str | os.PathLike[str],
    notebook: str,
    stem: str,
    caption_text: str,
    *,
    width: str | None = None,
    show: bool = True,
) -> list[Path]:
    """Save a notebook figure for the book, show it in the notebook, close it.

    Writes atomically (temporary file + rename) ``<stem>.png`` (:data:`PNG_DPI`),
    ``<stem>.pdf``, ``<stem>.caption.md`` and the snippet ``<stem>_figure.md``: a MyST
    ``{figure}`` (:func:`companion.engine.book.figure_markdown`) that a book page
    includes with ``{include} generated/<notebook>/<stem>_figure.md``. With ``show`` and
    inside IPython the saved PNG is displayed, so the executed notebook shows exactly
    the file the book uses (the backend is Agg everywhere, so ``plt.show()`` would show
    nothing). The figure is then closed.

    Arguments:
        fig: the matplotlib figure.
        results_dir: the notebook's results folder.
        notebook: the notebook's name (the snippet's image path and label use it).
        stem: file stem, stable across runs (the book refers to it).
        caption_text: the caption (:func:`caption` adds dataset, profile, seeds,
            varied).
        width: optional display width in the book (e.g. ``"80%"``).
        show: display the saved PNG when running under IPython.

    Returns:
        The written paths (PNG, PDF, caption, snippet).
    """
    if not stem or "/" in stem or "." in stem:
        raise ValueError(
            f"figure stem must be a plain file stem without '/' or '.', got {stem!r}"
        )
    out = Path(results_dir)
    written = [
        atomic_write(
            out / f"{stem}.{ext}",
            lambda tmp, ext=ext, kw=kw: fig.savefig(tmp, format=ext, **kw),
        )
        for ext, kw in (("png", {"dpi": PNG_DPI}), ("pdf", {}))
    ]
    written.append(
        atomic_write_text(out / f"{stem}.caption.md", caption_text.strip() + "\n")
    )
    snippet = figure_markdown(notebook, stem, caption_text, width=width)
    written.append(atomic_write_text(out / f"{stem}_figure.md", _with_newline(snippet)))
    if show:
        _display_png(out / f"{stem}.png", width_px=int(fig.get_figwidth() * SCREEN_DPI))
    plt.close(fig)
    return written


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _display_png(path: Path, width_px: int) -> None:
    """Display a PNG in the running IPython kernel (no-op outside IPython)."""
    # optional dependency: IPython ships with the notebook stack, not with every install
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is not None:
        display(Image(filename=str(path), width=width_px))
