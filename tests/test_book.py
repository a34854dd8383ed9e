"""The companion book: companion.engine.book helpers (fast) and an end-to-end HTML build checked in a browser.

The tests marked ``book`` run ``make notebooks PROFILE=smoke`` and ``make book PROFILE=smoke`` once
per session (the book target builds with ``-n -W --keep-going``: any warning fails), then check the
built HTML: internal links and images resolve, every figure a page references exists, no page needs
a CDN for scripts, styles, math or fonts, the build information names the profile, and headless
Chromium renders the equations (MathJax from the local copy) and the figures from ``file://``.
Read as a reader would (Chromium at 1280 px): no page shows TensorFlow/absl log lines, more than
one progress line per sweep or an empty output; no code block, output or table is wider than its
container; every image has alt text or a caption (:func:`_read_page`). Screenshots of the first
page and of executed notebooks are kept in ``book/_build/browser-check/`` for review.

Run alone: ``.venv/bin/python -m pytest tests/test_book.py -q``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from companion.engine import book as lb
from companion.paths import ROOT

HTML = ROOT / "book" / "_build" / "html"
ARTIFACTS = (
    ROOT / "book" / "_build" / "browser-check"
)  # screenshots + dumped DOMs, for CI artifacts
PROFILE = "smoke"
TAIL = 6000


# ---------------------------------------------------------------------------------------------
# companion.engine.book helpers (fast, no build)
# ---------------------------------------------------------------------------------------------

TOC_TEXT = """
format: jb-book
root: book/intro
parts:
  - caption: One
    chapters:
      - file: book/a
        sections:
          - file: book/generated/executed/nb_one
          - file: book/generated/executed/nb_two.ipynb
  - caption: Two
    chapters:
      - file: book/b
        sections:
          - file: book/generated/executed/nb_one
"""


def _write_executed(
    path: Path, *, duration: float = 3.5, exception: bool = False
) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"papermill": {"exception": exception}},
                "source": "",
            }
        ],
        "metadata": {
            "papermill": {
                "duration": duration,
                "end_time": "2025-01-20T10:11:12.345678",
                "exception": exception or None,
            }
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def test_toc_files_and_notebooks(tmp_path: Path) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(TOC_TEXT)
    assert lb.toc_files(toc) == [
        "book/intro",
        "book/a",
        "book/generated/executed/nb_one",
        "book/generated/executed/nb_two",
        "book/b",
        "book/generated/executed/nb_one",
    ]
    assert lb.toc_notebooks(toc) == ["nb_one", "nb_two"]


def test_repository_toc_references_existing_sources() -> None:
    """Every page of _toc.yml exists, and every TOC notebook has a source and smoke/cpu/full profiles."""
    for doc in lb.toc_files():
        if doc.startswith(lb.EXECUTED_DOC_PREFIX):
            continue
        assert (ROOT / f"{doc}.md").is_file(), (
            f"_toc.yml lists {doc} but {doc}.md does not exist"
        )
    for name in lb.toc_notebooks():
        assert (ROOT / "notebooks" / f"{name}.md").is_file(), (
            f"_toc.yml lists notebook {name} without source"
        )
        for profile in ("smoke", "cpu", "full"):
            assert (ROOT / "profiles" / profile / f"{name}.yaml").is_file(), (
                name,
                profile,
            )


def test_figure_markdown() -> None:
    text = lb.figure_markdown(
        "pareto_lr_reg", "front_mnist", "Front on *MNIST*.", width="80%"
    )
    assert text.startswith("```{figure} /book/generated/pareto_lr_reg/front_mnist.*\n")
    assert ":name: fig-pareto-lr-reg-front-mnist" in text
    assert ":width: 80%" in text
    assert "Front on *MNIST*." in text and text.endswith("```\n")


def test_read_notebook_run(tmp_path: Path) -> None:
    _write_executed(tmp_path / "ok.ipynb", duration=12.0)
    _write_executed(tmp_path / "bad.ipynb", exception=True)
    ok, bad = (
        lb.read_notebook_run(tmp_path / "ok.ipynb"),
        lb.read_notebook_run(tmp_path / "bad.ipynb"),
    )
    assert (ok.name, ok.duration_s, ok.failed) == ("ok", 12.0, False)
    assert bad.failed


def test_build_info_markdown() -> None:
    runs = [
        lb.NotebookRun("nb_one", "2025-01-20T10:11:12+00:00", 75.0, False),
        lb.NotebookRun("x", None, None, False),
    ]
    now = dt.datetime(2025, 2, 3, 4, 5, tzinfo=dt.UTC)
    text = lb.build_info_markdown("cpu", runs, ["nb_one"], now=now, commit="abc123")
    assert "| Profile | `cpu` |" in text
    assert "2025-02-03 04:05 UTC" in text and "`abc123`" in text
    assert (
        "{doc}`nb_one </book/generated/executed/nb_one>`" in text
    )  # linked: in the TOC
    assert "| 2025-01-20 10:11 UTC | 75.0 s |" in text
    assert "`x` (not in the book's TOC) | not recorded | not recorded |" in text
    assert "\n#" not in text, "build info is included in several pages: no headings"


def test_prepare_fails_naming_missing_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(TOC_TEXT)
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    _write_executed(tmp_path / "results" / "smoke" / "executed" / "nb_one.ipynb")
    with pytest.raises(FileNotFoundError) as err:
        lb.prepare(
            "smoke", toc=toc, generated=tmp_path / "generated", mathjax=False, log=False
        )
    assert "nb_two" in str(err.value) and "make notebooks PROFILE=smoke" in str(
        err.value
    )
    assert "nb_one," not in str(err.value)
    with pytest.raises(ValueError, match="allowed"):
        lb.prepare(
            "huge", toc=toc, generated=tmp_path / "generated", mathjax=False, log=False
        )


def test_prepare_copies_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(TOC_TEXT)
    res = tmp_path / "results" / "smoke"
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    for name in ("nb_one", "nb_two"):
        _write_executed(res / "executed" / f"{name}.ipynb")
    _write_executed(res / "executed" / "nb_two.failed.ipynb", exception=True)  # ignored
    (res / "nb_one" / "sub").mkdir(parents=True)
    for f in (
        "fig.png",
        "fig.pdf",
        "table.csv",
        "snippet.md",
        "sub/deep.svg",
        "model.keras",
        ".tmp.png",
    ):
        (res / "nb_one" / f).write_bytes(b"x")
    gen = tmp_path / "generated"
    (gen / "stale").mkdir(parents=True)
    out = lb.prepare("smoke", toc=toc, generated=gen, mathjax=False, log=False)
    assert out == gen and not (gen / "stale").exists()
    copied = sorted(
        p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file()
    )
    assert copied == [
        "build_info.md",
        "executed/nb_one.ipynb",
        "executed/nb_two.ipynb",
        "nb_one/fig.pdf",
        "nb_one/fig.png",
        "nb_one/snippet.md",
        "nb_one/sub/deep.svg",
        "nb_one/table.csv",
        "regimes.md",
    ]
    assert "| Profile | `smoke` |" in (gen / "build_info.md").read_text()

    _write_executed(res / "executed" / "nb_two.ipynb", exception=True)
    with pytest.raises(RuntimeError, match="nb_two"):
        lb.prepare("smoke", toc=toc, generated=gen, mathjax=False, log=False)
    with pytest.raises(ValueError, match="generated"):
        lb.prepare(
            "smoke", toc=toc, generated=tmp_path / "book", mathjax=False, log=False
        )


def test_prepare_fails_naming_missing_include(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toc = tmp_path / "_toc.yml"
    toc.write_text(TOC_TEXT)
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.md").write_text(
        "# A\n\n```{include} generated/nb_one/snippet.md\n```\n\n"
        "% ```{include} generated/nb_one/commented_out.md\n% ```\n"
    )
    (tmp_path / "book" / "b.md").write_text(
        "# B\n\n````{include} /book/generated/nb_two/table.md\n````\n"
    )
    assert [
        (d, p.relative_to(tmp_path).as_posix()) for d, p in lb.page_includes(toc)
    ] == [
        ("book/a", "book/generated/nb_one/snippet.md"),
        ("book/b", "book/generated/nb_two/table.md"),
    ]
    res = tmp_path / "results" / "smoke"
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    for name in ("nb_one", "nb_two"):
        _write_executed(res / "executed" / f"{name}.ipynb")
    (res / "nb_one").mkdir(parents=True)
    (res / "nb_one" / "snippet.md").write_text("text")
    with pytest.raises(FileNotFoundError) as err:
        lb.prepare(
            "smoke",
            toc=toc,
            generated=tmp_path / "book" / "generated",
            mathjax=False,
            log=False,
        )
    msg = str(err.value)
    assert "book/b.md includes generated/nb_two/table.md (notebook nb_two)" in msg
    assert "make run NB=nb_two PROFILE=smoke" in msg and "snippet.md" not in msg


def _output_html(*blocks: str) -> str:
    body = "".join(
        f'<div class="output stream"><div class="highlight"><pre>{b}</pre></div></div>'
        for b in blocks
    )
    return f'<html><body><div class="cell_output docutils container">{body}</div></body></html>'


def test_page_noise_counts_what_a_reader_should_not_read() -> None:
    clean = _output_html(
        "sweep: 2 runs (1 already stored) -&gt; /runs\n",
        "sweep: 100%|##| 2/2 [00:02&lt;00:00, 1.0s/run]\n",
        "2 runs on MNIST\n",
    )
    assert lb.page_noise(clean) == lb.PageNoise(0, 1, 1, 0, 0, 3)
    noisy = _output_html(
        "WARNING: All log messages before absl::InitializeLog() is called are written\n"
        "I0000 00:00:1796032996.119074   22738 port.cc:153] oneDNN custom operations\n",
        "sweep: 2 runs (1 already stored) -&gt; /runs\n",
        "sweep:   0%|  | 0/2 [00:00&lt;?, ?run/s]\n",
        "sweep:  50%|# | 1/2 [00:01&lt;00:01, 1.0s/run]\n",
        "sweep: 100%|##| 2/2 [00:02&lt;00:00, 1.0s/run]\n",
        '\n<button class="copybtn"><svg><title>Copy</title></svg></button>',
    )
    counts = lb.page_noise(noisy)
    assert (counts.log_lines, counts.progress_lines, counts.sweeps) == (2, 3, 1)
    assert (counts.extra_progress, counts.empty_outputs) == (2, 1)
    # a bar without a sweep line may show one line
    assert (
        lb.page_noise(_output_html("x: 100%|##| 2/2 [00:02&lt;00:00]")).extra_progress
        == 0
    )


# ---------------------------------------------------------------------------------------------
# End-to-end: make notebooks + make book (smoke), then check the HTML
# ---------------------------------------------------------------------------------------------


def _run(
    cmd: list[str], *, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _fail_with_tail(what: str, proc: subprocess.CompletedProcess[str]) -> None:
    out = (proc.stdout or "") + (proc.stderr or "")
    pytest.fail(
        f"{what} failed with exit code {proc.returncode}; last output:\n{out[-TAIL:]}"
    )


@pytest.fixture(scope="session")
def built_book() -> dict[str, str]:
    """Run `make notebooks` and `make book` for the smoke profile once; return their output."""
    digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"lqs-book-test-{digest}.lock"
    with open(lock_path, "w") as lock:  # serialise builds across pytest-xdist workers
        fcntl.flock(lock, fcntl.LOCK_EX)
        outputs: dict[str, str] = {}
        for target in ("notebooks", "book"):
            proc = _run(["make", target, f"PROFILE={PROFILE}"])
            if proc.returncode != 0:
                _fail_with_tail(f"make {target} PROFILE={PROFILE}", proc)
            outputs[target] = proc.stdout + proc.stderr
        fcntl.flock(lock, fcntl.LOCK_UN)
    return outputs


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _pages() -> list[Path]:
    return sorted(
        p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts
    )


LINK_ATTRS = (
    ("a", "href"),
    ("link", "href"),
    ("script", "src"),
    ("img", "src"),
    ("source", "src"),
    ("iframe", "src"),
)


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) or url.startswith("//")


@pytest.mark.book
def test_build_succeeded_without_warnings(built_book: dict[str, str]) -> None:
    out = built_book["book"]
    assert "-n -W --keep-going" in out, (
        "make book must build nitpicky with warnings as errors"
    )
    assert "build succeeded" in out
    sphinx_warnings = [
        line
        for line in out.splitlines()
        if re.search(r"\b(WARNING|ERROR)\b", line)
        and not re.search(r"absl|IPKernelApp|TensorFlow", line)
    ]
    assert not sphinx_warnings, "\n".join(sphinx_warnings[:50])
    assert (HTML / "index.html").is_file()
    for doc in lb.toc_files():
        assert (HTML / f"{doc}.html").is_file(), f"{doc} of _toc.yml was not built"


@pytest.mark.book
def test_internal_links_and_images_resolve(built_book: dict[str, str]) -> None:
    broken: list[str] = []
    anchors_missing: list[str] = []
    ids_cache: dict[Path, set[str]] = {}
    for page in _pages():
        soup = _soup(page)
        for tag, attr in LINK_ATTRS:
            for el in soup.find_all(tag):
                url = el.get(attr)
                if not url or _is_external(url) or url.startswith("#"):
                    continue
                parts = urlsplit(url)
                target = (page.parent / unquote(parts.path)).resolve()
                if not target.exists():
                    broken.append(f"{page.relative_to(HTML)}: <{tag} {attr}={url!r}>")
                    continue
                if tag == "img" and target.stat().st_size == 0:
                    broken.append(f"{page.relative_to(HTML)}: empty image {url!r}")
                # anchors: checked for links between the book's own pages
                if (
                    parts.fragment
                    and target.suffix == ".html"
                    and "book" in target.relative_to(HTML).parts
                ):
                    if target not in ids_cache:
                        ids_cache[target] = {
                            e.get("id") for e in _soup(target).find_all(id=True)
                        }
                    if unquote(parts.fragment) not in ids_cache[target]:
                        anchors_missing.append(f"{page.relative_to(HTML)}: {url}")
    assert not broken, "broken local references:\n" + "\n".join(broken)
    assert not anchors_missing, "links to missing anchors:\n" + "\n".join(
        anchors_missing
    )


FIG_RE = re.compile(r"^\s*(?:```+|:::+)\s*\{(?:figure|image)\}\s+(\S+)", re.M)
MDIMG_RE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
INCLUDE_RE = re.compile(r"^\s*```+\s*\{include\}\s+(\S+)", re.M)


def _uncommented(text: str) -> str:
    return "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("%")
    )


@pytest.mark.book
def test_every_referenced_figure_exists(built_book: dict[str, str]) -> None:
    """Figures/images/includes named by book/*.md and the snippets they include exist after prepare."""
    missing: list[str] = []
    todo = sorted((ROOT / "book").glob("*.md"))
    seen: set[Path] = set()
    n_figures = 0
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        text = _uncommented(page.read_text(encoding="utf-8"))
        for inc in INCLUDE_RE.findall(text):
            target = (page.parent / inc).resolve()
            if target.is_file():
                todo.append(target)
            else:
                missing.append(f"{page.relative_to(ROOT)} includes missing {inc}")
        for ref in FIG_RE.findall(text) + MDIMG_RE.findall(text):
            if _is_external(ref):
                continue
            base = ROOT if ref.startswith("/") else page.parent
            pattern = ref.lstrip("/")
            matches = [
                p for p in base.glob(pattern) if p.is_file() and p.stat().st_size > 0
            ]
            n_figures += 1
            if not matches:
                missing.append(
                    f"{page.relative_to(ROOT)} references missing figure {ref}"
                )
    assert not missing, "\n".join(missing)
    assert n_figures >= 1, (
        "no page references a figure: the figure pipeline is untested"
    )


@pytest.mark.book
def test_no_external_requests_for_rendering(built_book: dict[str, str]) -> None:
    """Scripts, styles, fonts and math come from the build itself (the book must work offline)."""
    external: list[str] = []
    math_pages = 0
    for page in _pages():
        soup = _soup(page)
        for el in soup.find_all("script", src=True):
            if _is_external(el["src"]):
                external.append(f"{page.relative_to(HTML)}: script {el['src']}")
            if "mathjax" in el["src"].lower():
                math_pages += 1
                assert "_static/mathjax/" in el["src"], (
                    f"{page}: MathJax not from the local copy: {el['src']}"
                )
        for el in soup.find_all("link", href=True):
            rel = " ".join(el.get("rel") or [])
            if _is_external(el["href"]) and re.search(
                r"stylesheet|preload|icon|font|modulepreload", rel
            ):
                external.append(
                    f"{page.relative_to(HTML)}: <link rel={rel}> {el['href']}"
                )
    for css in (HTML / "_static").rglob("*.css"):
        for url in re.findall(
            r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)", css.read_text(errors="ignore")
        ):
            external.append(f"{css.relative_to(HTML)}: url({url})")
    assert not external, "resources loaded from other hosts:\n" + "\n".join(external)
    assert math_pages >= 1, "no page loads MathJax: equations are not rendered"
    assert (HTML / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert list(
        (HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob(
            "*.woff"
        )
    )


@pytest.mark.book
def test_build_info_shows_profile(built_book: dict[str, str]) -> None:
    for page in ("intro", "reproducing"):
        soup = _soup(HTML / "book" / f"{page}.html")
        rows = [
            [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
            for tr in soup.find_all("tr")
        ]
        assert ["Profile", PROFILE] in rows, (
            f"{page}.html has no 'Profile | {PROFILE}' row: {rows}"
        )
        assert any(r and r[0] == "Git commit" for r in rows)


# ---------------------------------------------------------------------------------------------
# Browser: headless Chromium over file://
# ---------------------------------------------------------------------------------------------

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--run-all-compositor-stages-before-draw",
    "--virtual-time-budget=10000",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary; installs it with scripts/install_chromium.sh when missing."""
    for cand in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        shutil.which("chromium"),
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    proc = _run(["bash", "scripts/install_chromium.sh"], timeout=1800)
    path = (
        proc.stdout.strip().splitlines()[-1]
        if proc.returncode == 0 and proc.stdout.strip()
        else ""
    )
    if not path or not os.access(path, os.X_OK):
        pytest.skip(
            "Chromium is not installed and scripts/install_chromium.sh could not install it "
            f"(needs root/apt; set CHROMIUM=/path/to/chromium):\n{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return path


def _chrome(chromium: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="lqs-chromium-") as profile_dir:
        return subprocess.run(
            [chromium, *CHROME_FLAGS, f"--user-data-dir={profile_dir}", *extra, url],
            capture_output=True,
            text=True,
            timeout=180,
        )


def _dump_dom(chromium: str, path: Path) -> str:
    proc = _chrome(chromium, path.as_uri(), "--dump-dom")
    if proc.returncode != 0 or "<html" not in proc.stdout:
        pytest.fail(
            f"chromium --dump-dom {path} failed ({proc.returncode}):\n{proc.stderr[-TAIL:]}"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{path.stem}.dom.html").write_text(proc.stdout, encoding="utf-8")
    return proc.stdout


RAW_TEX = re.compile(
    r"\$\$|\\\(|\\\[|\\(?:lfloor|rfloor|frac|mathcal|operatorname|nabla|tanh|lambda|log|max)\b"
)


def _visible_text_outside_math(dom: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(dom, "html.parser")
    for el in soup.find_all(
        [
            "mjx-container",
            "script",
            "style",
            "pre",
            "code",
            "noscript",
            "textarea",
            "template",
        ]
    ):
        el.decompose()
    return soup.get_text(" ")


@pytest.mark.book
def test_browser_renders_index(built_book: dict[str, str], chromium: str) -> None:
    dom = _dump_dom(chromium, HTML / "index.html")  # a redirect to book/intro.html
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(dom, "html.parser")
    assert soup.title and "Learned Quantization Schemes" in soup.title.get_text()
    rows = [
        [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
        for tr in soup.find_all("tr")
    ]
    assert ["Profile", PROFILE] in rows, (
        "the rendered start page does not show the build's profile"
    )


@pytest.mark.book
@pytest.mark.parametrize("page", ["method", "reproducing", "generated/executed/hello"])
def test_browser_renders_math(
    built_book: dict[str, str], chromium: str, page: str
) -> None:
    """MathJax (local copy) typesets every equation: containers exist and no TeX source is left."""
    dom = _dump_dom(chromium, HTML / "book" / f"{page}.html")
    n_math = dom.count("<mjx-container")
    assert n_math >= 1, f"{page}: MathJax rendered nothing (no <mjx-container>)"
    leftovers = sorted(set(RAW_TEX.findall(_visible_text_outside_math(dom))))
    assert not leftovers, f"{page}: raw TeX visible outside MathJax output: {leftovers}"


IMG_PROBE = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var out = [];
    document.querySelectorAll("img").forEach(function (im) {
      out.push({src: im.getAttribute("src"), w: im.naturalWidth, h: im.naturalHeight, done: im.complete});
    });
    var pre = document.createElement("pre");
    pre.id = "lqs-img-probe";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 500);
});
</script>
"""


@pytest.mark.book
@pytest.mark.parametrize(
    "page", ["background", "method", "reproducing", "generated/executed/hello"]
)
def test_browser_loads_figures(
    built_book: dict[str, str], chromium: str, page: str
) -> None:
    """Every <img> of the page decodes to a non-empty bitmap (naturalWidth/Height > 0) over file://."""
    src = HTML / "book" / f"{page}.html"
    html = re.sub(r'\sloading="lazy"', "", src.read_text(encoding="utf-8"))
    probe = src.with_name(
        f"_lqs_probe_{src.name}"
    )  # same folder, so relative URLs still resolve
    probe.write_text(html.replace("</body>", IMG_PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _dump_dom(chromium, probe)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="lqs-img-probe">(.*?)</pre>', dom, re.S)
    assert m, f"{page}: the image probe did not run (page load event never fired?)"
    from html import unescape

    images = json.loads(unescape(m.group(1)))
    content = [
        im for im in images if "_static/" not in (im["src"] or "")
    ]  # theme icons aside
    assert content, f"{page}: no figure on the page"
    bad = [im for im in images if not (im["w"] > 0 and im["h"] > 0)]
    assert not bad, f"{page}: images that did not load: {bad}"


#: the reader's window
READER_WIDTH = 1280
#: measured in the browser after layout: elements wider than their box, images without a
#: text alternative. Code cells and outputs (``div.highlight pre``, ``div.cell_output``,
#: ``div.output``) must not scroll sideways; a table must fit the box it sits in (the
#: theme's scroll container, else its parent); an image needs alt text that is not just
#: its file name, or a figure caption.
READER_PROBE = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var wide = [], noAlt = [];
    function name(el) {
      var t = (el.innerText || "").trim().split("\\n")[0].slice(0, 80);
      return el.tagName.toLowerCase() + "." + (el.className || "").toString().split(" ")[0]
        + " '" + t + "'";
    }
    var blocks = "div.highlight pre, div.cell_output, div.cell_output div.output";
    document.querySelectorAll(blocks).forEach(function (el) {
      if (el.scrollWidth > el.clientWidth + 1) {
        wide.push(name(el) + " " + el.scrollWidth + " > " + el.clientWidth);
      }
    });
    document.querySelectorAll("article table, main table").forEach(function (t) {
      var box = t.closest(".pst-scrollable-table-container") || t.parentElement;
      var w = t.getBoundingClientRect().width;
      if (w > box.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1) {
        wide.push(name(t) + " " + Math.round(w) + " > " + box.clientWidth);
      }
    });
    document.querySelectorAll("article img, main img").forEach(function (im) {
      var src = im.getAttribute("src") || "", alt = (im.getAttribute("alt") || "").trim();
      var file = src.split("/").pop();
      var named = alt && alt !== src && alt.split("/").pop() !== file;
      var fig = im.closest("figure");
      var captioned = fig && fig.querySelector("figcaption");
      if (!named && !captioned) { noAlt.push(src); }
    });
    var article = document.querySelector("article") || document.body;
    var pre = document.createElement("pre");
    pre.id = "lqs-reader-probe";
    pre.textContent = JSON.stringify(
      {wide: wide, noAlt: noAlt, width: article.clientWidth});
    document.body.appendChild(pre);
  }, 800);
});
</script>
"""


def _read_page(chromium: str, page: Path) -> tuple[str, dict]:
    """Render ``page`` at :data:`READER_WIDTH` px; return its DOM and the probe's findings."""
    html = re.sub(r'\sloading="lazy"', "", page.read_text(encoding="utf-8"))
    probe = page.with_name(f"_lqs_reader_{page.name}")  # same folder: URLs resolve
    probe.write_text(
        html.replace("</body>", READER_PROBE + "</body>"), encoding="utf-8"
    )
    try:
        proc = _chrome(
            chromium, probe.as_uri(), "--dump-dom", f"--window-size={READER_WIDTH},2000"
        )
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="lqs-reader-probe">(.*?)</pre>', proc.stdout, re.S)
    if not m:
        pytest.fail(f"{page}: the reader probe did not run:\n{proc.stderr[-TAIL:]}")
    from html import unescape

    dom = proc.stdout.replace(m.group(0), "")
    return dom, json.loads(unescape(m.group(1)))


def _reader_pages() -> list[str]:
    """Every page of the TOC (document paths relative to the book root)."""
    return list(dict.fromkeys(lb.toc_files()))


@pytest.mark.book
@pytest.mark.parametrize("doc", _reader_pages())
def test_browser_page_reads_like_a_book(
    built_book: dict[str, str], chromium: str, doc: str
) -> None:
    """No machinery output, nothing wider than its box, every image described."""
    dom, found = _read_page(chromium, HTML / f"{doc}.html")
    noise = lb.page_noise(dom)
    problems = []
    if noise.log_lines:
        problems.append(f"{noise.log_lines} TensorFlow/absl/kernel log line(s)")
    if noise.extra_progress:
        problems.append(
            f"{noise.extra_progress} progress line(s) beyond one per sweep "
            f"({noise.progress_lines} progress lines, {noise.sweeps} sweeps)"
        )
    if noise.empty_outputs:
        problems.append(f"{noise.empty_outputs} empty output block(s)")
    if found["wide"]:
        problems.append(
            f"wider than their box at {READER_WIDTH} px (content {found['width']} px): "
            + "; ".join(found["wide"][:10])
        )
    if found["noAlt"]:
        problems.append(
            "images without alt text or caption: " + ", ".join(found["noAlt"])
        )
    assert not problems, f"{doc}: " + "\n".join(problems)


#: pages kept as screenshots for review: the first page, and executed notebooks (one with
#: equations, code and a figure; one with sweeps, tables and figures)
#: (page, window height in px): tall enough to show an executed notebook's sweeps
SCREENSHOTS = {
    "intro": ("book/intro", 2000),
    "hello": ("book/generated/executed/hello", 2000),
    "baselines": ("book/generated/executed/baselines", 4400),
}


@pytest.mark.book
@pytest.mark.parametrize("shot_name", sorted(SCREENSHOTS))
def test_browser_screenshot_not_blank(
    built_book: dict[str, str], chromium: str, shot_name: str
) -> None:
    from PIL import Image, ImageStat

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{shot_name}.png"
    shot.unlink(missing_ok=True)
    doc, height = SCREENSHOTS[shot_name]
    proc = _chrome(
        chromium,
        (HTML / f"{doc}.html").as_uri(),
        f"--screenshot={shot}",
        f"--window-size={READER_WIDTH},{height}",
    )
    assert proc.returncode == 0 and shot.is_file() and shot.stat().st_size > 0, (
        proc.stderr[-TAIL:]
    )
    with Image.open(shot) as img:
        assert img.size == (READER_WIDTH, height)
        gray = img.convert("L")
        variance = ImageStat.Stat(gray).var[0]
        colors = len(set(gray.resize((320, height // 4)).getdata()))
    assert variance > 50 and colors > 16, (
        f"screenshot looks blank (variance {variance:.1f}, {colors} grey levels)"
    )


@pytest.mark.parametrize(
    ("page", "package"),
    [("api.md", "lqs"), ("machinery.md", "companion")],
    ids=["lqs", "companion"],
)
def test_api_pages_document_every_module(page, package):
    """A module missing from its API page would be undocumented in the book."""
    text = (ROOT / "book" / page).read_text(encoding="utf-8")
    documented = set(
        re.findall(rf"^\.\. automodule:: ({package}(?:\.\w+)*)$", text, flags=re.M)
    )
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / package).rglob("*.py")
        if p.stem not in ("__init__", "__main__")
    }
    assert modules - documented == set(), f"add a section to book/{page}"
    assert documented - modules == set(), (
        f"book/{page} lists a module that does not exist"
    )


# ---------------------------------------------------------------------------------------------
# PDF: `make pdf` (xelatex, after the HTML build) and what it must contain
# ---------------------------------------------------------------------------------------------

LATEX = ROOT / "book" / "_build" / "latex"
PDF = LATEX / "lqs-book.pdf"
#: what the LaTeX log says for a character no font (xelatex) or declaration (pdflatex) covers
MISSING_CHAR_RE = re.compile(
    r"Missing character: There is no .*|Unicode character .* not set up .*|! LaTeX Error: .*"
)
INCLUDE_GRAPHICS_RE = re.compile(
    r"\\sphinxincludegraphics(?:\[[^\]]*\])?\{\{([^}]*)\}([^}]*)\}"
)


@pytest.fixture(scope="session")
def built_pdf(built_book: dict[str, str]) -> str:
    """Run `make pdf` for the smoke profile once (TeX Live is installed by scripts/install_tex.sh if missing)."""
    digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"lqs-book-test-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _run(["make", "pdf", f"PROFILE={PROFILE}"], timeout=3600)
        fcntl.flock(lock, fcntl.LOCK_UN)
    if proc.returncode != 0:
        log = LATEX / "lqs-book.log"
        tail = (
            log.read_text(errors="replace")[-TAIL:]
            if log.is_file()
            else "(no LaTeX log)"
        )
        _fail_with_tail(f"make pdf PROFILE={PROFILE} (LaTeX log tail:\n{tail}\n)", proc)
    return proc.stdout + proc.stderr


def _latex_log() -> str:
    return (LATEX / "lqs-book.log").read_text(encoding="utf-8", errors="replace")


@pytest.mark.book
def test_pdf_is_built_with_a_unicode_engine(built_pdf: str) -> None:
    assert PDF.is_file() and PDF.read_bytes()[:5] == b"%PDF-", f"no PDF at {PDF}"
    log = _latex_log()
    assert log.startswith("This is XeTeX"), (
        "the PDF is built with xelatex (_config.yml latex_engine)"
    )
    pages = re.search(r"Output written on lqs-book\.\w+ \((\d+) pages", log)
    assert pages and int(pages.group(1)) >= 20, "the PDF has (almost) no pages"


@pytest.mark.book
def test_pdf_has_no_missing_characters(built_pdf: str) -> None:
    """Every character of the book (Greek, math symbols, notebook output) has a glyph: no 'Missing character'."""
    bad = sorted(set(MISSING_CHAR_RE.findall(_latex_log())))
    assert not bad, (
        "characters the PDF could not typeset (see book/_build/latex/lqs-book.log):\n"
        + "\n".join(bad[:40])
    )


@pytest.mark.book
def test_pdf_has_every_chapter_of_the_toc(built_pdf: str) -> None:
    tex = (LATEX / "lqs-book.tex").read_text(encoding="utf-8")
    missing = [
        doc
        for doc in lb.toc_files()
        if f"\\label{{\\detokenize{{{doc}::doc}}}}" not in tex
    ]
    assert not missing, f"_toc.yml documents missing from the PDF: {missing}"
    typeset = (LATEX / "lqs-book.toc").read_text(encoding="utf-8", errors="replace")
    chapters = re.findall(
        r"\\contentsline \{chapter\}\{(?:\\numberline \{\d+\})?(.*?)\}\{\d+\}", typeset
    )
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = toc.get("chapters") or [
        c for part in toc.get("parts", []) for c in part.get("chapters", [])
    ]
    assert entries, "_toc.yml lists no chapter"
    # inline code in a title (`lqs`) is typeset with macros: compare the plain text
    plain = [re.sub(r"\\[A-Za-z]+\s*|[{}]", "", c) for c in chapters]
    for entry in entries:
        page = (ROOT / f"{entry['file']}.md").read_text(encoding="utf-8")
        title = re.search(r"^# (.+)$", page, re.M).group(1).strip().replace("`", "")
        assert title in plain, (
            f"chapter {title!r} ({entry['file']}) is not in the PDF's contents: {chapters}"
        )


@pytest.mark.book
def test_pdf_has_every_figure_of_the_html_book(
    built_book: dict[str, str], built_pdf: str
) -> None:
    """The same images (by file stem) as the HTML pages show, each file present, each embedded in the PDF."""
    from collections import Counter

    html_images: Counter[str] = Counter()
    for page in _pages():
        for img in _soup(page).find_all("img"):
            src = img.get("src") or ""
            if src and "_static/" not in src and not src.startswith("data:"):
                html_images[Path(unquote(urlsplit(src).path)).stem] += 1
    tex = (LATEX / "lqs-book.tex").read_text(encoding="utf-8")
    included = INCLUDE_GRAPHICS_RE.findall(tex)
    pdf_images = Counter(stem for stem, _ in included)
    assert html_images, "the HTML book shows no figure"
    assert pdf_images == html_images, (
        f"figures only in HTML: {sorted(html_images - pdf_images)}; only in the PDF: {sorted(pdf_images - html_images)}"
    )
    files = {stem + ext for stem, ext in included}
    assert all((LATEX / f).is_file() for f in files), [
        f for f in files if not (LATEX / f).is_file()
    ]
    raw = (
        PDF.read_bytes()
    )  # image XObjects (PNG figures) and form XObjects (PDF figures) in the PDF itself
    n_png = sum(1 for f in files if f.endswith(".png"))
    n_pdf = sum(1 for f in files if f.endswith(".pdf"))
    assert len(re.findall(rb"/Subtype\s*/Image", raw)) >= n_png
    assert len(re.findall(rb"/Subtype\s*/Form", raw)) >= n_pdf
