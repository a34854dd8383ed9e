"""companion.chapters.style: the theme, captions with provenance, the figure saver."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from companion.chapters import style


def test_caption_ends_with_the_provenance_line():
    text = style.caption(
        "A line.", dataset="MNIST", profile="smoke", seeds=[0, 1], varied="lr"
    )
    assert text == "A line. Dataset: MNIST; profile: smoke; seeds: 0, 1; varied: lr."
    assert (
        style.caption("x", dataset="d", profile="p", seeds=3)
        == "x. Dataset: d; profile: p; seeds: 3."
    )


def test_save_figure_writes_png_pdf_caption_and_book_snippet(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    text = "A line. Dataset: x; profile: smoke."
    written = style.save_figure(fig, tmp_path, "nb", "line", text, width="80%")
    assert not plt.fignum_exists(
        fig.number
    )  # closed: notebooks do not accumulate figures
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["line.caption.md", "line.pdf", "line.png", "line_figure.md"]
    assert sorted(p.name for p in written) == names
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "line.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "line.caption.md").read_text() == text + "\n"
    snippet = (tmp_path / "line_figure.md").read_text()
    assert snippet.startswith("```{figure} /book/generated/nb/line.*")
    assert ":width: 80%" in snippet and "profile: smoke" in snippet
    assert snippet.endswith("\n")


def test_save_figure_displays_the_saved_png_under_ipython(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(
        style,
        "_display_png",
        lambda path, width_px, alt=None: shown.append((path.name, width_px)),
    )
    fig = plt.figure(figsize=(3, 1))
    style.save_figure(fig, tmp_path, "nb", "small", "c", show=True)
    assert shown == [("small.png", 3 * style.SCREEN_DPI)]
    style.save_figure(plt.figure(), tmp_path, "nb", "quiet", "c", show=False)
    assert len(shown) == 1


@pytest.mark.parametrize("stem", ["", "a/b", "fig.png"])
def test_save_figure_rejects_stems_that_are_not_plain(tmp_path, stem):
    fig = plt.figure()
    with pytest.raises(ValueError, match="stem"):
        style.save_figure(fig, tmp_path, "nb", stem, "c")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# legibility: the smallest text of a figure at its printed size


def test_smallest_text_scales_with_the_printed_width():
    fig, ax = plt.subplots(figsize=(style.PRINT_WIDTH_IN / 2, 2))
    ax.set_title("title", fontsize=12)
    ax.set_xlabel("x", fontsize=9)
    ax.tick_params(labelsize=10)
    size, text = style.smallest_text(fig)
    assert (size, text) == (9, "x")  # narrower than the text column: printed as is
    assert style.smallest_text(fig, width="25%")[0] < 6  # a quarter of the column
    fig.set_size_inches(3 * style.PRINT_WIDTH_IN, 2)  # three times too wide
    size, _ = style.smallest_text(fig)
    assert 3 < size < 4.5  # 9 pt at a third to a half (the tight box is narrower)
    plt.close(fig)


def test_smallest_text_ignores_hidden_and_empty_text():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xlabel("shown", fontsize=10)
    ax.text(0.5, 0.5, "hidden", fontsize=4).set_visible(False)
    ax.text(0.5, 0.5, "   ", fontsize=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=10)
    assert style.smallest_text(fig) == (10, "shown")
    plt.close(fig)


def test_save_figure_warns_raises_and_records_small_text(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("LQS_STRICT_FIGURES", raising=False)

    def tiny():
        fig, ax = plt.subplots(figsize=(12, 3))
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("small", fontsize=7)
        return fig

    with pytest.warns(style.FigureLegibilityWarning, match="small"):
        style.save_figure(tiny(), tmp_path, "nb", "tiny", "c", show=False)
    with Image.open(tmp_path / "tiny.png") as img:
        assert float(img.text[style.FONT_METADATA_KEY]) < style.MIN_FONT_PT
    with pytest.raises(ValueError, match="pt when printed"):
        style.save_figure(tiny(), tmp_path, "nb", "tiny2", "c", show=False, strict=True)
    monkeypatch.setenv("LQS_STRICT_FIGURES", "1")
    with pytest.raises(ValueError, match="tiny3"):
        style.save_figure(tiny(), tmp_path, "nb", "tiny3", "c", show=False)
    assert not (tmp_path / "tiny3.png").exists()


def test_save_figure_records_a_legible_figure(tmp_path, recwarn):
    from PIL import Image

    style.set_theme()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xlabel("x (bits)")
    ax.legend()
    style.save_figure(fig, tmp_path, "nb", "fine", "c", show=False, strict=True)
    assert not [w for w in recwarn if w.category is style.FigureLegibilityWarning]
    with Image.open(tmp_path / "fine.png") as img:
        assert float(img.text[style.FONT_METADATA_KEY]) >= style.MIN_FONT_PT


def test_figure_parts_keep_groups_whole_and_split_only_oversized_ones():
    groups = [["a1", "a2"], ["b1", "b2", "b3"], ["c1"]]
    assert style.figure_parts(groups, 8) == [["a1", "a2", "b1", "b2", "b3", "c1"]]
    assert style.figure_parts(groups, 4) == [["a1", "a2"], ["b1", "b2", "b3", "c1"]]
    assert style.figure_parts(groups, 3) == [["a1", "a2"], ["b1", "b2", "b3"], ["c1"]]
    # a group larger than a part is chunked, the next group fills the last chunk
    assert style.figure_parts([list("abcde"), ["f"]], 2) == [
        ["a", "b"],
        ["c", "d"],
        ["e", "f"],
    ]
    assert style.figure_parts([], 4) == [[]]
    with pytest.raises(ValueError, match="max_panels"):
        style.figure_parts(groups, 0)


def test_legend_below_collects_each_label_once_under_the_panels():
    fig, axes = style.panel_grid(2)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="line")
        ax.axhline(0.5, label=f"ref {id(ax) % 2}")
        ax.legend()
    fig.tight_layout()
    legend = style.legend_below(fig, ncol=3)
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "line" and labels.count("line") == 1
    assert all(ax.get_legend() is None for ax in axes)
    fig.draw_without_rendering()
    top = legend.get_window_extent().y1
    assert top <= min(ax.get_tightbbox().y0 for ax in axes) + 1  # under the panels
    plt.close(fig)


def test_save_figure_saves_parts_under_one_book_include(tmp_path, recwarn):
    parts = [plt.subplots(figsize=(3, 2))[0] for _ in range(2)]
    written = style.save_figure(parts, tmp_path, "nb", "fronts", "Fronts.", show=False)
    names = {p.name for p in written}
    assert {"fronts_1.png", "fronts_2.pdf", "fronts_figure.md"} <= names
    assert not (tmp_path / "fronts.png").exists()
    assert (tmp_path / "fronts_2.caption.md").read_text() == "Fronts. Part 2 of 2.\n"
    snippet = (tmp_path / "fronts_figure.md").read_text()
    assert snippet.count("```{figure}") == 2
    assert "/nb/fronts_1.*" in snippet and "/nb/fronts_2.*" in snippet
    assert not any(plt.fignum_exists(f.number) for f in parts)
    # a single part is saved under the stem itself
    style.save_figure(
        [plt.figure(figsize=(2, 2))], tmp_path, "nb", "one", "c", show=False
    )
    assert (tmp_path / "one.png").exists() and not (tmp_path / "one_1.png").exists()


def test_display_png_gets_the_caption_as_alt_text(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(
        style, "_display_png", lambda path, width_px, alt=None: shown.append(alt)
    )
    fig = plt.figure(figsize=(3, 1))
    style.save_figure(fig, tmp_path, "nb", "a", "Front on *MNIST*, $\\lambda$ = 1e-6.")
    assert shown == ["Front on MNIST, lambda = 1e-6."]


# ---------------------------------------------------------------------------------------------
# one colour per method, in every chapter


def test_every_method_has_its_own_colour():
    colours = style.METHOD_COLORS
    assert set(colours) == {"fp32", "nested", "loss_terms", "ptq", "fixed_bits", "lsq"}
    assert len(set(colours.values())) == len(colours)
    # the loss-term variants never take another method's colour
    others = {v for k, v in colours.items() if k != "loss_terms"}
    assert not others & set(style.TERM_COLORS.values())
    assert len(set(style.TERM_COLORS.values())) == len(style.TERM_COLORS)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("FP32", "fp32"),
        ("fp32", "fp32"),
        ("nested", "nested"),
        ("nested per-channel", "nested"),
        ("loss terms", "loss_terms"),
        ("loss_terms", "loss_terms"),
        ("PTQ min-max per-tensor", "ptq"),
        ("ptq", "ptq"),
        ("fixed-bit STE per-channel", "fixed_bits"),
        ("fixed_bits_2", "fixed_bits"),
        ("LSQ per-tensor", "lsq"),
        ("lsq", "lsq"),
    ],
)
def test_method_color_reads_flavours_and_display_names(name, key):
    assert style.method_color(name) == style.METHOD_COLORS[key]


def test_method_color_refuses_unknown_methods():
    with pytest.raises(ValueError, match="allowed: fp32, nested"):
        style.method_color("dropout")


def test_every_chapter_draws_methods_in_the_one_mapping():
    """The chapters' method colours all come from style.METHOD_COLORS / TERM_COLORS."""
    from matplotlib.colors import to_hex

    from companion.chapters import analysis, loss_terms, qgen

    for method in analysis.METHOD_ORDER:
        assert to_hex(analysis.method_style(method)["color"]) == style.method_color(
            method
        )
    models = ["fp32", "fixed_bits_8", "fixed_bits_4", "fixed_bits_2", "lsq", "nested"]
    colours = {k: to_hex(v) for k, v in qgen.model_colors(models).items()}
    for key in ("fp32", "lsq", "nested"):
        assert colours[key] == style.METHOD_COLORS[key]
    fixed = [colours[k] for k in models if k.startswith("fixed_bits")]
    assert len(set(fixed)) == 3  # one shade per bit width ...
    assert colours["fixed_bits_4"] == style.METHOD_COLORS["fixed_bits"]  # ... around it
    assert {k: to_hex(v) for k, v in loss_terms.TERM_COLOUR.items()} == {
        k: to_hex(v) for k, v in style.TERM_COLORS.items()
    }
