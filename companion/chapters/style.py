"""The one plot style of the notebooks and the one way to save a figure.

One seaborn theme (colour-blind-safe palette), one colour per method in every chapter
(:data:`METHOD_COLORS`, :func:`method_color`), a caption that names dataset, profile,
seeds and the varied parameters, and :func:`save_figure`: PNG (HTML) + PDF (print) +
caption + the ``<stem>_figure.md`` snippet the book includes, all written atomically;
the saved PNG is shown in the executed notebook and the figure is closed. Importing
this module applies the theme (:func:`set_theme`), so every figure of every notebook
is drawn in it.

Legibility: a figure is printed at most :data:`PRINT_WIDTH_IN` wide (the book's text
column), so a wider figure shrinks, and its text with it. :func:`save_figure` measures
every text artist at that printed size (:func:`smallest_text`) and warns
(:class:`FigureLegibilityWarning`) -- or raises with ``strict`` -- when the smallest is
below :data:`MIN_FONT_PT`; the measured size is stored in the PNG (key
:data:`FONT_METADATA_KEY`) so the tests check every figure a notebook wrote.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.text import Text

from companion.engine.book import figure_markdown
from lqs.fileio import atomic_write, atomic_write_text

__all__ = [
    "PALETTE",
    "PNG_DPI",
    "SCREEN_DPI",
    "PRINT_WIDTH_IN",
    "PRINT_HEIGHT_IN",
    "MAX_FIGURE_WIDTH_IN",
    "MIN_FONT_PT",
    "FONT_METADATA_KEY",
    "METHOD_COLORS",
    "TERM_COLORS",
    "FigureLegibilityWarning",
    "set_theme",
    "method_color",
    "sequential_colors",
    "panel_grid",
    "printed_scale",
    "smallest_text",
    "caption",
    "save_figure",
]

#: colour-blind-safe qualitative palette (seaborn "colorblind", from Okabe & Ito)
PALETTE = sns.color_palette("colorblind")

#: one colour per method, the same in every figure of every chapter (keyed by the run
#: configuration's ``flavour``; :func:`method_color` also takes the display names)
METHOD_COLORS: dict[str, str] = {
    "fp32": "#000000",  # black: also the FP32 reference lines
    "nested": "#0173b2",  # blue
    "loss_terms": "#029e73",  # green
    "ptq": "#949494",  # grey
    "fixed_bits": "#cc78bc",  # purple
    "lsq": "#d55e00",  # vermillion
}
#: colours of the loss-term variants the loss-term chapter compares with one another,
#: none of them the colour of another method of :data:`METHOD_COLORS`; the published
#: default term (the deviation term in the implementation's form) is the loss-term green
TERM_COLORS: dict[str, str] = {
    "none": "#ca9161",  # brown: the same network without a term (rate 0)
    "inverse": "#de8f05",  # orange
    "max_bin": "#56b4e9",  # sky blue
    "deviation_reconstructed": "#fbafe4",  # pink
    "deviation_implementation": METHOD_COLORS["loss_terms"],
}
#: display names of the methods (``companion.chapters.analysis.method_label``,
#: generalization study model keys) -> :data:`METHOD_COLORS` key
_METHOD_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "nested": "nested",
    "loss terms": "loss_terms",
    "loss_terms": "loss_terms",
    "ptq": "ptq",
    "ptq min-max": "ptq",
    "fixed-bit ste": "fixed_bits",
    "fixed-bit": "fixed_bits",
    "fixed_bits": "fixed_bits",
    "lsq": "lsq",
}

#: width in inches of the book's text column in print, Sphinx's LaTeX default (US letter
#: with 1 in margins); a wider figure is scaled down to it (``\sphinxincludegraphics``)
PRINT_WIDTH_IN = 6.5
#: height in inches of the printed text block; a taller figure is scaled down to it
PRINT_HEIGHT_IN = 9.0
#: widest figure in inches whose theme text (11 pt and more) and 9 pt annotations stay
#: legible in print; figure builders keep their figures at most this wide (panels wrap)
MAX_FIGURE_WIDTH_IN = 7.2
#: smallest legible text (pt) at the printed size of a figure
MIN_FONT_PT = 8.0
#: PNG text key holding the smallest printed font size (pt) :func:`save_figure` measured
FONT_METADATA_KEY = "lqs:smallest-font-pt"


class FigureLegibilityWarning(UserWarning):
    """A figure's smallest text is below :data:`MIN_FONT_PT` at its printed size."""


#: resolution of the saved PNG, sharp in the HTML book at about 1.5x the display size
PNG_DPI = 150
#: pixels per inch of the notebook display (CSS pixels), so a figure shows at its own
#: size
SCREEN_DPI = 96


def set_theme(context: str = "notebook") -> None:
    """Apply the project's seaborn theme (white grid, colour-blind palette, fonts).

    The ``notebook`` context's text is 11-12 pt: legible in print for figures up to
    ``PRINT_WIDTH_IN * 11 / MIN_FONT_PT`` (about 8.9 in) wide.
    """
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,
            "axes.titleweight": "bold",
        }
    )


def method_color(method: str) -> str:
    """The colour of a method (:data:`METHOD_COLORS`) from its flavour or display name.

    Accepts flavours (``"fixed_bits"``), display names with qualifiers (``"PTQ min-max
    per-channel"``, ``"LSQ 4 bits"``) and model keys of the generalization study
    (``"fixed_bits_2"``, ``"fp32"``).

    Raises:
        ValueError: an unknown method; the message lists the known ones.
    """
    name = method.strip().lower()
    for alias in sorted(_METHOD_ALIASES, key=len, reverse=True):
        if name == alias or re.match(rf"{re.escape(alias)}[\s_(]", name):
            return METHOD_COLORS[_METHOD_ALIASES[alias]]
    raise ValueError(
        f"unknown method {method!r}; allowed: {', '.join(METHOD_COLORS)} "
        "(or their display names, e.g. 'PTQ min-max per-channel')"
    )


def sequential_colors(n: int, *, reverse: bool = False) -> list[Any]:
    """``n`` colours of one sequential map (viridis) for an ordered quantity (λ, rate).

    Ordered values get a ramp, never the method colours, so a λ is not read as a method.
    """
    colours = sns.color_palette("viridis", max(n, 1))
    return list(reversed(colours)) if reverse else list(colours)


def panel_grid(
    n: int,
    *,
    max_cols: int = 2,
    panel: tuple[float, float] = (3.4, 2.8),
    extra: tuple[float, float] = (0.0, 0.0),
    **kwargs: Any,
) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels wrapped into rows of at most ``max_cols``.

    The width is capped at :data:`MAX_FIGURE_WIDTH_IN` (panels get narrower rather than
    the figure wider); unused cells of the last row are removed.

    Arguments:
        n: number of panels.
        max_cols: panels per row.
        panel: (width, height) of one panel in inches.
        extra: inches added to the width and height (legends, colour bars).
        kwargs: passed to ``plt.subplots`` (``sharex``, ``sharey``, ...).

    Returns:
        The figure and its ``n`` axes in reading order.
    """
    n = max(int(n), 1)
    cols = min(n, max_cols)
    rows = -(-n // cols)
    width = min(panel[0] * cols + extra[0], MAX_FIGURE_WIDTH_IN)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, panel[1] * rows + extra[1]), squeeze=False, **kwargs
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


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
    strict: bool | None = None,
) -> list[Path]:
    """Save a notebook figure for the book, show it in the notebook, close it.

    Writes atomically (temporary file + rename) ``<stem>.png`` (:data:`PNG_DPI`),
    ``<stem>.pdf``, ``<stem>.caption.md`` and the snippet ``<stem>_figure.md``: a MyST
    ``{figure}`` (:func:`companion.engine.book.figure_markdown`) that a book page
    includes with ``{include} generated/<notebook>/<stem>_figure.md``. With ``show`` and
    inside IPython the saved PNG is displayed, so the executed notebook shows exactly
    the file the book uses (the backend is Agg everywhere, so ``plt.show()`` would show
    nothing). The figure is then closed.

    Before saving, the smallest text of the figure at its printed size
    (:func:`smallest_text`) is measured and stored in the PNG (:data:`FONT_METADATA_KEY`);
    below :data:`MIN_FONT_PT` it warns (:class:`FigureLegibilityWarning`), or raises
    ``ValueError`` with ``strict`` (default: the environment variable
    ``LQS_STRICT_FIGURES=1``).

    Arguments:
        fig: the matplotlib figure.
        results_dir: the notebook's results folder.
        notebook: the notebook's name (the snippet's image path and label use it).
        stem: file stem, stable across runs (the book refers to it).
        caption_text: the caption (:func:`caption` adds dataset, profile, seeds,
            varied).
        width: optional display width in the book (e.g. ``"80%"``).
        show: display the saved PNG when running under IPython.
        strict: raise instead of warning when text is too small to read in print.

    Returns:
        The written paths (PNG, PDF, caption, snippet).
    """
    if not stem or "/" in stem or "." in stem:
        raise ValueError(
            f"figure stem must be a plain file stem without '/' or '.', got {stem!r}"
        )
    out = Path(results_dir)
    size, text = smallest_text(fig, width=width)
    if size < MIN_FONT_PT:
        message = (
            f"figure {notebook}/{stem}: text {text!r} is {size:.1f} pt when printed "
            f"{PRINT_WIDTH_IN} in wide (smallest allowed: {MIN_FONT_PT} pt); make the "
            "figure narrower or the text larger"
        )
        if (
            strict
            if strict is not None
            else os.environ.get("LQS_STRICT_FIGURES") == "1"
        ):
            plt.close(fig)
            raise ValueError(message)
        warnings.warn(message, FigureLegibilityWarning, stacklevel=2)
    png_meta = {FONT_METADATA_KEY: f"{size:.2f}"}
    written = [
        atomic_write(
            out / f"{stem}.{ext}",
            lambda tmp, ext=ext, kw=kw: fig.savefig(tmp, format=ext, **kw),
        )
        for ext, kw in (
            ("png", {"dpi": PNG_DPI, "metadata": png_meta, "bbox_inches": "tight"}),
            ("pdf", {"bbox_inches": "tight"}),
        )
    ]
    written.append(
        atomic_write_text(out / f"{stem}.caption.md", caption_text.strip() + "\n")
    )
    snippet = figure_markdown(notebook, stem, caption_text, width=width)
    written.append(atomic_write_text(out / f"{stem}_figure.md", _with_newline(snippet)))
    if show:
        _display_png(
            out / f"{stem}.png",
            width_px=int(fig.get_figwidth() * SCREEN_DPI),
            alt=_plain(caption_text),
        )
    plt.close(fig)
    return written


def _text_artists(fig: plt.Figure) -> list[Text]:
    """Every visible, non-empty text of ``fig`` that ends up in the saved image."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    # the saved area (save_figure saves the tight box): every artist's extent
    box = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    found = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        ext = t.get_window_extent(renderer)
        if ext.width <= 0 or not ext.overlaps(box):
            continue  # not drawn (a tick beyond the view limits) or outside the image
        found.append(t)
    return found


def printed_scale(fig: plt.Figure, width: str | None = None) -> float:
    """How much the saved figure is scaled when printed in the book's text column.

    The saved image is the figure's tight bounding box plus ``savefig.pad_inches``
    (:func:`save_figure` always saves the tight box); it is printed at ``width`` (a
    percentage of the text column, as given to :func:`save_figure`) or, without it, at
    its own size up to :data:`PRINT_WIDTH_IN`; a figure taller than
    :data:`PRINT_HEIGHT_IN` at that size is scaled down to it (Sphinx's LaTeX does both).
    """
    renderer = fig.canvas.get_renderer()
    pad = plt.rcParams["savefig.pad_inches"]
    box = fig.get_tightbbox(renderer)
    saved_w, saved_h = box.width + 2 * pad, box.height + 2 * pad
    if width and width.strip().endswith("%"):
        scale = float(width.strip()[:-1]) / 100 * PRINT_WIDTH_IN / saved_w
    else:
        scale = min(1.0, PRINT_WIDTH_IN / saved_w)
    return min(scale, PRINT_HEIGHT_IN / saved_h)


def smallest_text(fig: plt.Figure, width: str | None = None) -> tuple[float, str]:
    """``(size_pt, text)``: the smallest drawn text of ``fig`` at its printed size.

    Every text artist counts (titles, labels, tick labels, legends, annotations, colour
    bars); its font size is scaled by :func:`printed_scale`. A figure without text gives
    ``(inf, "")``.
    """
    texts = _text_artists(fig)
    if not texts:
        return float("inf"), ""
    scale = printed_scale(fig, width)
    smallest = min(texts, key=lambda t: t.get_fontsize())
    return float(smallest.get_fontsize() * scale), smallest.get_text()


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _plain(text: str) -> str:
    """Caption text without MyST/Markdown markup, for an image's alt text."""
    return re.sub(r"[`*$\\]|\{[a-z]+\}", "", " ".join(text.split()))


def _display_png(path: Path, width_px: int, alt: str | None = None) -> None:
    """Display a PNG in the running IPython kernel (no-op outside IPython).

    ``alt`` goes into the output's metadata; the runner hands it to the book as the
    image's alt text (:func:`companion.engine.runner.clean_outputs`).
    """
    # optional dependency: IPython ships with the notebook stack, not with every install
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is not None:
        display(Image(filename=str(path), width=width_px, alt=alt))


# every notebook that imports the figure writer draws in the one theme
set_theme()
