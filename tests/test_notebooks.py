"""Every notebook: clean MyST source, one parameters cell, a profile per profile; the smoke profile runs."""

from __future__ import annotations

import json
import subprocess

import jupytext
import pytest
from PIL import Image

from companion import paths
from companion.chapters import style
from companion.engine import runner

NOTEBOOKS = sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.md"))


def test_there_are_notebooks_and_no_ipynb_sources():
    assert NOTEBOOKS, "notebooks/ holds no MyST notebook"
    assert not list(paths.NOTEBOOKS_DIR.glob("*.ipynb")), (
        "notebooks/ must hold MyST .md sources only"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_is_clean_myst_with_one_parameters_cell(name):
    path = paths.NOTEBOOKS_DIR / f"{name}.md"
    assert "format_name: myst" in path.read_text().split("---")[1], (
        f"{path} lacks the jupytext MyST header"
    )
    nb = jupytext.read(path)
    for cell in nb.cells:
        assert not cell.get("outputs"), f"{path} stores outputs"
    params = runner.notebook_parameters(name)
    assert {"profile", "results_dir"} <= set(params), (
        f"{path}: parameters cell needs profile and results_dir"
    )


#: the longest code line the book shows without scrolling sideways (ruff's line length)
MAX_LINE = 88


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_code_cells_fit_the_book(name):
    """Every code line of a notebook is at most 88 characters (the book's code width).

    Format with ruff (line length 88); wrap long strings as implicit concatenations.
    """
    nb = jupytext.read(paths.NOTEBOOKS_DIR / f"{name}.md")
    long = [
        f"cell {i}: {len(line)} chars: {line}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if len(line) > MAX_LINE
    ]
    assert not long, f"{name}: code lines longer than {MAX_LINE}:\n" + "\n".join(long)


#: calls whose return value (written paths) would otherwise be printed as a cell's output
_WRITERS = ("save_figure", "save", "write_snippet", "write_csv")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_cell_prints_the_paths_a_writer_returns(name):
    """A cell ending in ``analysis.save_figure(...)`` would show a list of paths under the figure."""
    import ast

    nb = jupytext.read(paths.NOTEBOOKS_DIR / f"{name}.md")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(
            line for line in cell.source.splitlines() if not line.startswith("%")
        )
        body = ast.parse(code).body
        last = body[-1] if body else None
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            func = ast.unparse(last.value.func).rsplit(".", 1)[-1]
            if func in _WRITERS:
                assert cell.source.rstrip().endswith(";"), (
                    f"{name}: end the cell's last call to {func} with ';'"
                )


@pytest.mark.parametrize("profile", paths.PROFILES)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_profile_resolves(name, profile):
    params = runner.resolve_parameters(name, profile)
    assert params["profile"] == profile


@pytest.fixture(scope="session")
def smoke_notebooks():
    """Execute every notebook with the smoke profile through Make (cached: only what changed reruns).

    ``-k``: a failing notebook does not stop the others, but make's exit code still says it failed.
    """
    proc = subprocess.run(
        ["make", "-k", "notebooks", "PROFILE=smoke"],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
    )
    return proc


def _tail(proc) -> str:
    return f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.notebooks
def test_make_notebooks_succeeded(smoke_notebooks):
    """Any notebook failing fails the suite (the executed notebooks of an earlier success prove nothing)."""
    failed = sorted(p.name for p in paths.executed_dir("smoke").glob("*.failed.ipynb"))
    assert smoke_notebooks.returncode == 0, (
        f"make -k notebooks PROFILE=smoke exited {smoke_notebooks.returncode}; failed: {failed}\n{_tail(smoke_notebooks)}"
    )


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_smoke_run(name, smoke_notebooks):
    executed = paths.executed_dir("smoke") / f"{name}.ipynb"
    failed = executed.with_suffix(".failed.ipynb")
    assert not failed.exists(), (
        f"{name} failed under smoke; see {failed}\n{_tail(smoke_notebooks)}"
    )
    assert executed.exists(), (
        f"{name} did not run under smoke:\n{_tail(smoke_notebooks)}"
    )
    sources = (paths.NOTEBOOKS_DIR / f"{name}.md", paths.profile_file(name, "smoke"))
    assert executed.stat().st_mtime >= max(p.stat().st_mtime for p in sources), (
        f"{executed} is older than its source or profile: a stale result (run make notebooks PROFILE=smoke)"
    )
    nb = json.loads(executed.read_text())
    errors = [
        o
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{name}: error outputs {errors[:1]}"
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == "smoke"
    results = paths.results_dir(name, "smoke")
    for png in results.glob("*.png"):
        assert png.stat().st_size > 1000, f"{png} looks empty"
        caption = results / f"{png.stem}.caption.md"
        assert caption.exists() and "profile: smoke" in caption.read_text(), (
            f"{png} has no provenance caption"
        )
        with Image.open(png) as img:
            smallest = img.text.get(style.FONT_METADATA_KEY)
        assert smallest is not None, f"{png} was not written by style.save_figure"
        assert float(smallest) >= style.MIN_FONT_PT, (
            f"{png}: smallest text {smallest} pt when printed "
            f"{style.PRINT_WIDTH_IN} in wide (at least {style.MIN_FONT_PT} pt)"
        )
    noise = [
        line
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
        for line in "".join(o.get("text", "")).splitlines()
        if runner.NOISE_LINE_RE.match(line)
        or "FigureLegibilityWarning" in line
        or "\r" in line
    ]
    assert not noise, (
        f"{name}: log lines or progress frames in the outputs: {noise[:5]}"
    )
