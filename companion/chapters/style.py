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
:data:`FONT_METADATA_KEY`) so the tests check every figure a notebook wrote. A figure
keeps its panels at a legible size by wrapping them into rows (:func:`panel_grid`),
putting its legend under them (:func:`legend_below`) and, past :data:`MAX_PANELS`,
being drawn in parts (:func:`figure_parts`) that :func:`save_figure` saves under one
book include.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.legend import Legend
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
    "MAX_PANELS",
    "FONT_METADATA_KEY",
    "METHOD_COLORS",
    "TERM_COLORS",
    "FigureLegibilityWarning",
    "set_theme",
    "method_color",
    "sequential_colors",
    "panel_grid",
    "legend_below",
    "figure_parts",
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
#: the most panels one figure holds, two columns of four rows filling the printed text
#: block with legible text; a figure with more is drawn in parts (:func:`figure_parts`,
#: :func:`save_figure`)
MAX_PANELS = 8
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


def legend_below(
    fig: plt.Figure,
    handles: Sequence[Any] | None = None,
    labels: Sequence[str] | None = None,
    *,
    ncol: int = 2,
    fontsize: float = 9,
    **kwargs: Any,
) -> Legend:
    """A figure legend centred under the panels, outside them; call after the layout.

    The saved image (the tight box, :func:`save_figure`) grows to hold it, so it never
    covers data and never squeezes the panels. Without ``handles`` it lists the
    entries of every axis of ``fig``, each label once, and removes the axes' own
    legends.

    Arguments:
        fig: the figure, already laid out (``fig.tight_layout()``).
        handles, labels: the legend entries (default: those of the axes).
        ncol: columns of entries.
        fontsize: size of the entries and the title (pt).
        kwargs: passed to ``fig.legend`` (``title``, ...).
    """
    if handles is None:
        entries: dict[str, Any] = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                entries.setdefault(label, handle)
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        handles, labels = list(entries.values()), list(entries)
    return fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol,
        fontsize=fontsize,
        title_fontsize=fontsize,
        frameon=False,
        **kwargs,
    )


_T = TypeVar("_T")


def figure_parts(
    groups: Iterable[Sequence[_T]], max_panels: int = MAX_PANELS
) -> list[list[_T]]:
    """Panels packed into figures of at most ``max_panels`` panels, groups kept whole.

    Consecutive groups (e.g. the panels of one setup) share a figure while they fit; a
    group is split only when it alone has more than ``max_panels`` panels. Draw each
    part as one figure and save the list with :func:`save_figure`.

    Arguments:
        groups: the panels of the figure, group by group, in display order.
        max_panels: most panels of one part (one panel for a figure with two axes per
            panel counts half: pass ``MAX_PANELS // 2``).

    Returns:
        The panels of each part; one part when everything fits.
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be at least 1, got {max_panels}")
    parts: list[list[_T]] = []
    for group in groups:
        chunks = [
            list(group[i : i + max_panels]) for i in range(0, len(group), max_panels)
        ]
        for chunk in chunks:
            if parts and len(parts[-1]) + len(chunk) <= max_panels:
                parts[-1].extend(chunk)
            else:
                parts.append(chunk)
    return parts or [[]]


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
    fig: plt.Figure | Sequence[plt.Figure],
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

    A figure drawn in parts (a list of figures, :func:`figure_parts`) is saved as
    ``<stem>_1`` ... ``<stem>_<n>``, each caption ending with "Part k of n.", and
    ``<stem>_figure.md`` includes them all: the page that includes it shows every part
    (a list of one figure is saved as ``stem``).

    Arguments:
        fig: the matplotlib figure, or the parts of one.
        results_dir: the notebook's results folder.
        notebook: the notebook's name (the snippet's image path and label use it).
        stem: file stem, stable across runs (the book refers to it).
        caption_text: the caption (:func:`caption` adds dataset, profile, seeds,
            varied).
        width: optional display width in the book (e.g. ``"80%"``).
        show: display the saved PNG when running under IPython.
        strict: raise instead of warning when text is too small to read in print.

    Returns:
        The written paths (PNG, PDF, caption, snippet; of every part).
    """
    if not stem or "/" in stem or "." in stem:
        raise ValueError(
            f"figure stem must be a plain file stem without '/' or '.', got {stem!r}"
        )
    kwargs = dict(width=width, show=show, strict=strict)
    if not isinstance(fig, plt.Figure):
        parts = list(fig)
        if len(parts) != 1:
            return _save_parts(parts, results_dir, notebook, stem, caption_text, kwargs)
        fig = parts[0]
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


def _save_parts(
    parts: list[plt.Figure],
    results_dir: str | os.PathLike[str],
    notebook: str,
    stem: str,
    caption_text: str,
    kwargs: dict[str, Any],
) -> list[Path]:
    """Save ``parts`` as ``<stem>_<k>`` and a ``<stem>_figure.md`` including them all."""
    if not parts:
        raise ValueError(f"figure {notebook}/{stem}: no parts to save")
    written, stems = [], [f"{stem}_{k}" for k in range(1, len(parts) + 1)]
    for k, (fig, part) in enumerate(zip(parts, stems, strict=True), start=1):
        text = f"{caption_text.rstrip()} Part {k} of {len(parts)}."
        written += save_figure(fig, results_dir, notebook, part, text, **kwargs)
    out = Path(results_dir)
    snippet = "\n".join((out / f"{part}_figure.md").read_text() for part in stems)
    written.append(atomic_write_text(out / f"{stem}_figure.md", snippet))
    return written


def _is_drawn(t: Text, renderer: Any, box: Any) -> bool:
    """Whether a text ends up in the saved image (``box``: its area, in pixels)."""
    if not t.get_visible() or not t.get_text().strip():
        return False
    if t.axes is not None and not t.axes.get_visible():
        return False
    ext = t.get_window_extent(renderer)
    # not drawn (a tick beyond the view limits) or outside the image
    return ext.width > 0 and ext.overlaps(box)


def _scale_of(box: Any, width: str | None) -> float:
    """Printed scale of the image saved from the tight ``box`` (inches) plus its pad."""
    pad = 2 * plt.rcParams["savefig.pad_inches"]
    saved_w, saved_h = box.width + pad, box.height + pad
    if width and width.strip().endswith("%"):
        scale = float(width.strip()[:-1]) / 100 * PRINT_WIDTH_IN / saved_w
    else:
        scale = min(1.0, PRINT_WIDTH_IN / saved_w)
    return min(scale, PRINT_HEIGHT_IN / saved_h)


def _saved_box(fig: plt.Figure) -> Any:
    """The saved area of ``fig`` in inches (the tight box, :func:`save_figure`)."""
    return fig.get_tightbbox(fig.canvas.get_renderer())


def printed_scale(fig: plt.Figure, width: str | None = None) -> float:
    """How much the saved figure is scaled when printed in the book's text column.

    The saved image is the figure's tight bounding box plus ``savefig.pad_inches``
    (:func:`save_figure` always saves the tight box); it is printed at ``width`` (a
    percentage of the text column, as given to :func:`save_figure`) or, without it, at
    its own size up to :data:`PRINT_WIDTH_IN`; a figure taller than
    :data:`PRINT_HEIGHT_IN` at that size is scaled down to it (Sphinx's LaTeX does both).
    """
    return _scale_of(_saved_box(fig), width)


def smallest_text(fig: plt.Figure, width: str | None = None) -> tuple[float, str]:
    """``(size_pt, text)``: the smallest drawn text of ``fig`` at its printed size.

    Every text artist counts (titles, labels, tick labels, legends, annotations, colour
    bars); its font size is scaled by :func:`printed_scale`. A figure without text gives
    ``(inf, "")``. Texts are tried from the smallest font up, so only the few smallest
    are measured.
    """
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    box = _saved_box(fig)
    scale = _scale_of(box, width)
    pixels = box.transformed(fig.dpi_scale_trans)
    for t in sorted(fig.findobj(Text), key=lambda t: t.get_fontsize()):
        if _is_drawn(t, renderer, pixels):
            return float(t.get_fontsize() * scale), t.get_text()
    return float("inf"), ""


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
