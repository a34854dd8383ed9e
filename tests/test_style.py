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
        lambda path, width_px: shown.append((path.name, width_px)),
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
