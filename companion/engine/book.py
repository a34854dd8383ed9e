"""Prepare the companion book: copy one profile's results into ``book/generated/``.

The book only renders what the notebooks produced (``execute_notebooks: off``). Before every build
``python -m companion.engine.book prepare --profile P`` (run by ``make book`` and ``make pdf``)

1. makes sure the local MathJax copy exists (``scripts/fetch_mathjax.sh``, needs ``npm`` once);
2. checks that every notebook listed in ``_toc.yml`` was executed for profile ``P`` and did not
   stop on an error, and fails naming the notebook and the command that runs it otherwise;
3. empties ``book/generated/`` and copies ``results/P/<notebook>/`` (figures, tables, generated
   Markdown snippets) to ``book/generated/<notebook>/`` and ``results/P/executed/*.ipynb`` to
   ``book/generated/executed/``;
4. writes ``book/generated/build_info.md``: profile, build date (UTC), git commit, ``lqs`` version
   and, per executed notebook, when it finished and how long papermill ran it;
5. writes ``book/generated/regimes.md``: the training regime of every experiment notebook under
   profile ``P`` next to the thesis's (:func:`companion.engine.regimes.regime_markdown`);
6. checks that every generated file a page includes (MyST ``{include}``) now exists, and fails
   naming the page, the notebook and the command otherwise.

``python -m companion.engine.book noise [--html book/_build/html]`` counts, per built page of an
executed notebook, what a reader should not have to read (:func:`page_noise`): library log lines,
progress-bar frames beyond one per sweep, empty output blocks. The browser test uses the same
function.

Book pages include generated snippets with MyST ``{include}``; a notebook that wants a figure in the
book writes a snippet built by :func:`figure_markdown`, which points at the copied figure with a
path absolute to the book's source folder, so it works from whichever page includes it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from companion.engine.runner import NOISE_LINE_RE, PROGRESS_RE
from companion.paths import (
    BOOK_DIR,
    GENERATED_DIR,
    ROOT,
    check_profile,
    executed_dir,
    results_root,
)
from lqs.fileio import atomic_write_text

__all__ = [
    "TOC_FILE",
    "EXECUTED_DOC_PREFIX",
    "MATHJAX_DIR",
    "COPIED_SUFFIXES",
    "NotebookRun",
    "PageNoise",
    "SWEEP_LINE_RE",
    "page_noise",
    "book_noise",
    "toc_files",
    "toc_notebooks",
    "page_includes",
    "ensure_mathjax",
    "read_notebook_run",
    "git_commit",
    "build_info_markdown",
    "figure_markdown",
    "prepare",
    "main",
]

#: the book's table of contents (Jupyter Book ``jb-book`` format)
TOC_FILE = ROOT / "_toc.yml"
#: TOC entries below this prefix are executed notebooks copied by :func:`prepare`
EXECUTED_DOC_PREFIX = "book/generated/executed/"
#: local MathJax 3 copy served with the HTML (``mathjax_path`` in ``_config.yml``)
MATHJAX_DIR = BOOK_DIR / "_static" / "mathjax"
FETCH_MATHJAX = ROOT / "scripts" / "fetch_mathjax.sh"
#: file types copied from ``results/<profile>/<notebook>/`` (figures, tables, snippets, captions)
COPIED_SUFFIXES = frozenset(
    {".png", ".svg", ".pdf", ".jpg", ".jpeg", ".gif", ".csv", ".md", ".txt"}
)
BUILD_INFO = "build_info.md"
#: the training-regime table of the profile (:mod:`companion.engine.regimes`)
REGIMES = "regimes.md"


@dataclass(frozen=True)
class NotebookRun:
    """What papermill recorded about one executed notebook (``metadata.papermill``).

    Arguments:
        name: notebook name (file stem).
        end_time: when execution finished (ISO 8601 string as papermill wrote it), if recorded.
        duration_s: wall-clock seconds papermill spent executing it, if recorded.
        failed: papermill recorded an exception (the notebook stopped on an error).
    """

    name: str
    end_time: str | None
    duration_s: float | None
    failed: bool


#: the line a sweep prints when it starts, e.g.
#: ``"<label>: N runs (k already stored) -> folder"``
SWEEP_LINE_RE = re.compile(r"^(?P<desc>.+?): \d+ runs \(\d+ already stored\) (?:->|→) ")


@dataclass(frozen=True)
class PageNoise:
    """What a reader should not have to read in the outputs of one built page.

    Arguments:
        log_lines: TensorFlow/absl/kernel log lines
            (:data:`companion.engine.runner.NOISE_LINE_RE`).
        progress_lines: tqdm progress lines (:data:`companion.engine.runner.PROGRESS_RE`).
        sweeps: sweeps the page announces (:data:`SWEEP_LINE_RE`).
        extra_progress: progress lines beyond one per sweep (per bar label: its progress
            lines minus its sweeps, at least one line allowed).
        empty_outputs: output blocks without text or image.
        outputs: output blocks in all.
    """

    log_lines: int
    progress_lines: int
    sweeps: int
    extra_progress: int
    empty_outputs: int
    outputs: int


def page_noise(html: str) -> PageNoise:
    """Count log lines, surplus progress frames and empty outputs in a page's cell outputs.

    Arguments:
        html: a built (or browser-rendered) HTML page; its cell outputs are the
            ``div.output`` blocks inside ``div.cell_output`` (MyST-NB), whose text is
            read line by line.
    """
    # bs4 comes with the book's toolchain (jupyter-book), not with the notebooks' stack
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    blocks = [
        b
        for area in soup.select("div.cell_output")
        for b in area.find_all(recursive=False)
    ]
    logs = progress = empty = 0
    bars: dict[str, int] = {}
    sweeps: dict[str, int] = {}
    for block in blocks:
        # a copy button (added in the browser: an icon titled "Copy to clipboard") is not
        # content
        text = "".join(
            t for t in block.find_all(string=True) if t.find_parent("button") is None
        )
        media = [
            m
            for m in block.find_all(["img", "svg", "table", "iframe", "video"])
            if m.find_parent("button") is None
        ]
        if not text.strip() and not media:
            empty += 1
        for line in text.splitlines():
            if NOISE_LINE_RE.match(line):
                logs += 1
            elif m := PROGRESS_RE.match(line):
                progress += 1
                bars[m["desc"].strip()] = bars.get(m["desc"].strip(), 0) + 1
            elif m := SWEEP_LINE_RE.match(line):
                sweeps[m["desc"].strip()] = sweeps.get(m["desc"].strip(), 0) + 1
    extra = sum(max(0, n - max(sweeps.get(desc, 0), 1)) for desc, n in bars.items())
    return PageNoise(
        log_lines=logs,
        progress_lines=progress,
        sweeps=sum(sweeps.values()),
        extra_progress=extra,
        empty_outputs=empty,
        outputs=len(blocks),
    )


def book_noise(html_dir: Path) -> dict[str, PageNoise]:
    """:func:`page_noise` of every built page of an executed notebook under ``html_dir``.

    Returns:
        ``{notebook name: counts}`` for ``<html_dir>/book/generated/executed/*.html``.
    """
    folder = Path(html_dir) / EXECUTED_DOC_PREFIX
    return {
        page.stem: page_noise(page.read_text(encoding="utf-8"))
        for page in sorted(folder.glob("*.html"))
    }


def toc_files(toc: Path = TOC_FILE) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book TOC (and its ``root``), in reading order.

    Arguments:
        toc: path of the ``_toc.yml`` (``jb-book`` or ``jb-article`` format; parts, chapters and
            nested sections are all walked).

    Returns:
        Document paths relative to the book root, without suffix, e.g. ``"book/intro"``.
    """
    data = yaml.safe_load(Path(toc).read_text(encoding="utf-8")) or {}
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(_strip_suffix(node[key]))
            for key in ("parts", "chapters", "sections", "subtrees", "entries"):
                if key in node:
                    walk(node[key])
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


def toc_notebooks(toc: Path = TOC_FILE) -> list[str]:
    """Names of the executed notebooks the TOC references (``book/generated/executed/<name>``).

    Arguments:
        toc: path of the ``_toc.yml``.

    Returns:
        Notebook names (= ``notebooks/<name>.md`` source stems) in reading order, no duplicates.
    """
    names: list[str] = []
    for doc in toc_files(toc):
        if doc.startswith(EXECUTED_DOC_PREFIX):
            name = doc[len(EXECUTED_DOC_PREFIX) :]
            if name not in names:
                names.append(name)
    return names


_INCLUDE_RE = re.compile(r"^[ \t]*(?:`{3,}|:{3,})[ \t]*\{include\}[ \t]+(\S+)", re.M)


def page_includes(toc: Path = TOC_FILE) -> list[tuple[str, Path]]:
    """Every active MyST ``{include}`` of the TOC's Markdown pages (``%`` comment lines skipped).

    Arguments:
        toc: path of the ``_toc.yml``; its documents are looked up next to it.

    Returns:
        ``(page, target)`` pairs, the page's document path (e.g. ``"book/intro"``) and the absolute
        path of the included file (relative paths resolved against the page's folder, paths that
        start with ``/`` against the book root).
    """
    root = Path(toc).resolve().parent
    found: list[tuple[str, Path]] = []
    for doc in toc_files(toc):
        page = root / f"{doc}.md"
        if not page.is_file():
            continue
        text = "\n".join(
            line
            for line in page.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("%")
        )
        for ref in _INCLUDE_RE.findall(text):
            target = (
                root / ref.lstrip("/") if ref.startswith("/") else page.parent / ref
            )
            found.append((doc, target.resolve()))
    return found


def _strip_suffix(doc: str) -> str:
    for suffix in (".md", ".ipynb", ".rst"):
        if doc.endswith(suffix):
            return doc[: -len(suffix)]
    return doc


def ensure_mathjax(fetch: bool = True) -> Path:
    """Return the local MathJax folder, fetching it with ``scripts/fetch_mathjax.sh`` when missing.

    Arguments:
        fetch: when ``False`` only check (raise instead of fetching).

    Raises:
        FileNotFoundError: MathJax is missing and ``fetch`` is false, or ``npm`` is not installed.
        RuntimeError: the fetch script failed.
    """
    if (MATHJAX_DIR / "tex-mml-chtml.js").is_file():
        return MATHJAX_DIR
    rel = MATHJAX_DIR.relative_to(ROOT)
    if not fetch:
        raise FileNotFoundError(
            f"MathJax is missing from {rel}/; run: bash scripts/fetch_mathjax.sh"
        )
    if shutil.which("npm") is None:
        raise FileNotFoundError(
            f"MathJax is missing from {rel}/ and npm is not installed to fetch it. Install npm "
            "(Debian/Ubuntu: apt-get install -y npm) and run: bash scripts/fetch_mathjax.sh "
            "(or copy the es5/ folder of the npm package mathjax@3.2.2 there by hand)"
        )
    proc = subprocess.run(
        ["bash", str(FETCH_MATHJAX)], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0 or not (MATHJAX_DIR / "tex-mml-chtml.js").is_file():
        raise RuntimeError(
            f"scripts/fetch_mathjax.sh failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return MATHJAX_DIR


def read_notebook_run(path: Path) -> NotebookRun:
    """Read papermill's execution record from an executed notebook.

    Arguments:
        path: ``<name>.ipynb`` written by papermill.

    Returns:
        A :class:`NotebookRun`; fields papermill did not record are ``None``.
    """
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    pm = nb.get("metadata", {}).get("papermill", {}) or {}
    duration = pm.get("duration")
    failed = pm.get("exception") is True or any(
        (cell.get("metadata", {}).get("papermill", {}) or {}).get("exception") is True
        for cell in nb.get("cells", [])
    )
    return NotebookRun(
        name=Path(path).stem,
        end_time=pm.get("end_time"),
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        failed=failed,
    )


def git_commit() -> str:
    """The checked-out commit (short hash, ``+ uncommitted changes`` when tracked files differ).

    Returns ``"none"`` when there is no git repository or no commit yet.
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        )

    try:
        head = git("rev-parse", "--short=12", "HEAD")
    except OSError:
        return "none (git not installed)"
    if head.returncode != 0:
        return "none (no git commit)"
    commit = head.stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    if dirty.returncode == 0 and dirty.stdout.strip():
        commit += " + uncommitted changes"
    return commit


def _fmt_time(iso: str | None) -> str:
    if not iso:
        return "not recorded"
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def build_info_markdown(
    profile: str,
    runs: list[NotebookRun],
    in_book: list[str],
    *,
    now: _dt.datetime | None = None,
    commit: str | None = None,
) -> str:
    """Markdown (no headings: it is included in several pages) describing one book build.

    Arguments:
        profile: the profile whose results the book shows.
        runs: the executed notebooks that were copied.
        in_book: notebook names the TOC lists (they get a link to their page).
        now: build time (default: now, UTC).
        commit: git commit text (default: :func:`git_commit`).
    """
    from lqs import __version__

    now = now or _dt.datetime.now(_dt.UTC)
    commit = git_commit() if commit is None else commit
    lines = [
        "| Build | |",
        "|---|---|",
        f"| Profile | `{profile}` |",
        f"| Built | {now.astimezone(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| Git commit | `{commit}` |",
        f"| lqs version | `{__version__}` |",
        "",
    ]
    if runs:
        lines += [
            f"Notebooks executed with profile `{profile}` (papermill's record):",
            "",
            "| Notebook | Finished | Run time |",
            "|---|---|---|",
        ]
        for run in runs:
            if run.name in in_book:  # absolute docname: valid from any including page
                name = f"{{doc}}`{run.name} </{EXECUTED_DOC_PREFIX}{run.name}>`"
            else:
                name = f"`{run.name}` (not in the book's TOC)"
            lines.append(
                f"| {name} | {_fmt_time(run.end_time)} | {_fmt_duration(run.duration_s)} |"
            )
    else:
        lines.append(f"No notebook has been executed with profile `{profile}` yet.")
    return "\n".join(lines) + "\n"


def figure_markdown(
    notebook: str,
    stem: str,
    caption: str,
    *,
    name: str | None = None,
    width: str | None = None,
) -> str:
    """A MyST ``{figure}`` snippet showing ``results_dir/<stem>.{png,pdf,svg}`` in the book.

    A notebook writes this text to ``results_dir/<stem>.md``; a page includes it with
    ``{include} generated/<notebook>/<stem>.md``. The image path is absolute to the book source
    (``/book/generated/<notebook>/<stem>.*``) so the include works from any page, and the ``*``
    lets Sphinx pick PNG/SVG for HTML and PDF for LaTeX.

    Arguments:
        notebook: notebook name (its results folder name).
        stem: figure file stem (without suffix).
        caption: caption text (MyST inline markup allowed; may name dataset, profile, parameters).
        name: label to reference the figure with ``{numref}`` (default ``fig-<notebook>-<stem>``).
        width: optional width, e.g. ``"80%"``.
    """
    label = name or f"fig-{notebook}-{stem}".replace("_", "-")
    opts = [f":name: {label}"]
    if width:
        opts.append(f":width: {width}")
    body = "\n".join(opts)
    return f"```{{figure}} /book/generated/{notebook}/{stem}.*\n{body}\n\n{caption.strip()}\n```\n"


def _copy_tree(src: Path, dest: Path) -> int:
    n = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in COPIED_SUFFIXES:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        n += 1
    return n


def prepare(
    profile: str,
    *,
    toc: Path = TOC_FILE,
    generated: Path = GENERATED_DIR,
    mathjax: bool = True,
    log: bool = True,
) -> Path:
    """Fill ``book/generated/`` with one profile's results; return the folder.

    Arguments:
        profile: ``smoke``, ``cpu`` or ``full``.
        toc: the TOC whose notebooks must have been executed.
        generated: destination folder (emptied first).
        mathjax: also make sure the local MathJax copy exists (fetching it if needed).
        log: print one line per step.

    Raises:
        ValueError: unknown profile, or a destination that is not a ``generated`` folder.
        FileNotFoundError: a TOC notebook was not executed for this profile (or MathJax cannot be
            fetched); the message names the command to run.
        RuntimeError: a TOC notebook stopped on an error when it was executed.
        FileNotFoundError: a page includes a generated file that is missing (after copying).
    """
    check_profile(profile)
    generated = Path(generated)
    if generated.name != "generated":
        raise ValueError(
            f"refusing to empty {generated}: the destination must be a 'generated' folder"
        )
    say = print if log else (lambda *a, **k: None)
    if mathjax:
        say(f"companion.engine.book: MathJax in {ensure_mathjax()}")

    src_root = results_root() / profile
    src_exec = executed_dir(profile)
    wanted = toc_notebooks(toc)
    missing = [n for n in wanted if not (src_exec / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} notebook(s) listed in {Path(toc).name} were not executed with profile "
            f"{profile!r}: {', '.join(missing)} (expected "
            f"{', '.join(str(src_exec / f'{n}.ipynb') for n in missing)}). Run: make notebooks "
            f"PROFILE={profile}   (one notebook: make run NB={missing[0]} PROFILE={profile})"
        )
    # NAME.ipynb only: the runner keeps failed runs as NAME.failed.ipynb and temp files hidden
    executed = (
        sorted(p for p in src_exec.glob("*.ipynb") if "." not in p.stem)
        if src_exec.is_dir()
        else []
    )
    runs = [read_notebook_run(p) for p in executed]
    failed = [r.name for r in runs if r.failed and r.name in wanted]
    if failed:
        raise RuntimeError(
            f"notebook(s) stopped on an error when executed with profile {profile!r}: "
            f"{', '.join(failed)}; open {src_exec}/<name>.ipynb for the traceback, fix, and rerun "
            f"make notebooks PROFILE={profile}"
        )

    if generated.exists():
        shutil.rmtree(generated)
    (generated / "executed").mkdir(parents=True)
    n_files = 0
    if src_root.is_dir():
        for folder in sorted(
            p for p in src_root.iterdir() if p.is_dir() and p.name != "executed"
        ):
            n_files += _copy_tree(folder, generated / folder.name)
    for run in runs:
        shutil.copy2(
            src_exec / f"{run.name}.ipynb", generated / "executed" / f"{run.name}.ipynb"
        )
    info = build_info_markdown(profile, runs, wanted)
    atomic_write_text(generated / BUILD_INFO, info)
    # imported here: the regimes read the run configuration, which loads TensorFlow
    from companion.engine.regimes import regime_markdown

    atomic_write_text(generated / REGIMES, regime_markdown(profile))
    _check_includes(toc, generated, profile)
    say(
        f"companion.engine.book: profile {profile}: {len(runs)} executed notebook(s), {n_files} result file(s) "
        f"-> {generated}"
    )
    return generated


def _check_includes(toc: Path, generated: Path, profile: str) -> None:
    """Fail, naming notebook and command, when a page includes a generated file that is missing."""
    home = Path(toc).resolve().parent / GENERATED_DIR.relative_to(
        ROOT
    )  # book/generated next to the TOC
    problems: list[str] = []
    notebooks: list[str] = []
    for doc, target in page_includes(toc):
        if not target.is_relative_to(home):
            continue  # a hand-written include: Sphinx reports it if missing
        rel = target.relative_to(home)
        if (generated / rel).is_file():
            continue
        notebook = rel.parts[0] if len(rel.parts) > 1 else "?"
        problems.append(
            f"{doc}.md includes generated/{rel.as_posix()} (notebook {notebook})"
        )
        if notebook not in notebooks:
            notebooks.append(notebook)
    if problems:
        runs = "; ".join(
            f"make run NB={n} PROFILE={profile}" for n in notebooks if n != "?"
        )
        raise FileNotFoundError(
            f"book pages include files that no notebook wrote for profile {profile!r}:\n  "
            + "\n  ".join(problems)
            + f"\nRun: make notebooks PROFILE={profile}"
            + (f"   (or: {runs})" if runs else "")
            + "\nIf the notebook renamed its output, update the {include} in the page."
        )


def _print_noise(counts: dict[str, PageNoise]) -> None:
    fields = list(PageNoise.__dataclass_fields__)
    print(f"{'page':<20}" + "".join(f"{f:>16}" for f in fields))
    for name, c in counts.items():
        print(f"{name:<20}" + "".join(f"{getattr(c, f):>16}" for f in fields))
    totals = [sum(getattr(c, f) for c in counts.values()) for f in fields]
    print(f"{'total':<20}" + "".join(f"{t:>16}" for t in totals))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m companion.engine.book prepare --profile P | toc-notebooks | noise``."""
    parser = argparse.ArgumentParser(
        prog="python -m companion.engine.book", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_prep = sub.add_parser(
        "prepare", help="copy results/<profile>/ into book/generated/"
    )
    p_prep.add_argument("--profile", required=True, help="smoke | cpu | full")
    p_prep.add_argument(
        "--no-mathjax", action="store_true", help="do not check/fetch MathJax"
    )
    sub.add_parser(
        "toc-notebooks", help="print the notebooks _toc.yml references, one per line"
    )
    p_noise = sub.add_parser(
        "noise", help="count log lines, progress frames, empty outputs per built page"
    )
    p_noise.add_argument(
        "--html", default=str(BOOK_DIR / "_build" / "html"), help="built HTML folder"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.profile, mathjax=not args.no_mathjax)
        elif args.command == "noise":
            _print_noise(book_noise(Path(args.html)))
        else:
            print("\n".join(toc_notebooks()))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"companion.engine.book: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
