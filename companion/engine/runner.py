"""Execute one notebook with a profile's parameters (papermill), atomically.

``python -m companion.engine.runner NAME --profile P [--set key=value ...] [--params "k=v k2=v2"] [--dry-run]``

1. reads ``notebooks/NAME.md`` (MyST, jupytext) and its single cell tagged ``parameters``;
2. reads ``profiles/P/NAME.yaml`` and the ``--set``/``--params`` overrides and validates every value
   before anything runs -- this is the one place notebook parameters are checked: every key exists
   in the parameters cell, each value has the type of the cell's default, ``null`` only where the
   parameter is nullable, and each value (each list element) satisfies the parameter's declared
   rule (:mod:`companion.engine.parameters`: ranges, choices, lists non-empty); a notebook whose
   ``setups`` name only datasets that are not present (or, with ``strict_data``, any missing one)
   is refused before it starts;
3. removes the previous executed notebook (a failed run never leaves an older success looking
   current), runs the notebook with papermill into a temporary folder and moves the result to
   ``results/P/executed/NAME.ipynb`` only on success; a failed run is kept as
   ``NAME.failed.ipynb``, the command prints the exception's last line whole and that path, and
   exits non-zero;
4. keeps the executed notebook readable (:func:`clean_outputs`): the kernel runs with TensorFlow's
   and gRPC's logging turned down and without capturing what C/C++ libraries write to its file
   descriptors (:data:`KERNEL_ENV`, :data:`KERNEL_ARGUMENTS`), so TensorFlow/absl log lines reach the
   terminal at most, never the notebook; tqdm progress frames are reduced to each bar's final line,
   leftover library log lines and empty outputs are dropped. The terminal still gets every
   progress frame live (``echo``).

With overrides the outputs go to ``results/custom/P/NAME-<hash>/`` instead, so a one-off rerun with
new parameters never overwrites the profile's figures.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from companion import data, paths
from companion.engine import parameters as _rules
from lqs.fileio import atomic_write, atomic_write_text, remove_stale_temp_files

__all__ = [
    "RUNS_AFTER",
    "NotebookFailed",
    "execution_order",
    "load_yaml",
    "notebook_parameters",
    "resolve_parameters",
    "check_datasets",
    "NotRun",
    "write_not_run",
    "split_params",
    "output_locations",
    "KERNEL_ENV",
    "KERNEL_ARGUMENTS",
    "NOISE_LINE_RE",
    "PROGRESS_RE",
    "LEGIBILITY_WARNING",
    "FIGURE_WARNING_RE",
    "figure_warnings",
    "clean_text",
    "clean_outputs",
    "wrap_parameters",
    "execute",
    "main",
]

#: parameters the runner sets itself (``--profile``; the results folder): never given by a profile or ``--set``
_RUNNER_SET = {
    "profile": "--profile P",
    "results_dir": "the runner (results/<profile>/<notebook>/)",
}

#: notebooks that read another notebook's outputs, and which ones (the Makefile encodes the same
#: order as order-only prerequisites; ``tests/test_runner.py`` checks that the two agree)
RUNS_AFTER: dict[str, tuple[str, ...]] = {
    "baselines": ("loss_terms",),
    "dataset_insights": ("pareto_threshold",),
}


def execution_order(notebooks: list[str] | None = None) -> list[str]:
    """Notebook names in an order that runs every notebook after the ones it reads (:data:`RUNS_AFTER`).

    Alphabetical otherwise, as ``make notebooks`` runs them. ``None``: every ``notebooks/*.md``.
    """
    names = sorted(
        notebooks
        if notebooks is not None
        else (p.stem for p in paths.NOTEBOOKS_DIR.glob("*.md"))
    )
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in stack:
            raise ValueError(f"RUNS_AFTER has a cycle through {name!r}")
        for before in RUNS_AFTER.get(name, ()):
            if before in names:
                visit(before, stack + (name,))
        order.append(name)

    for name in names:
        visit(name)
    return order


class _Loader(yaml.SafeLoader):
    """YAML loader that reads ``1e-9`` as a float (PyYAML's YAML 1.1 resolver needs ``1.0e-9``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text_or_path: str | Path, *, source: str | None = None) -> Any:
    """Parse YAML text (or a file) with the float fix; ``ValueError`` names the file and line on bad syntax."""
    if isinstance(text_or_path, Path):
        source = str(text_or_path)
        text = text_or_path.read_text()
    else:
        text = text_or_path
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        where = f" in {source}" if source else ""
        raise ValueError(f"malformed YAML{where}: {err}") from None


def notebook_parameters(notebook: str) -> dict[str, Any]:
    """Defaults of the single ``parameters``-tagged cell of ``notebooks/<notebook>.md``.

    Raises:
        FileNotFoundError: no such notebook (the message lists the existing ones).
        ValueError: zero or several parameters cells, or a cell that is not plain literal assignments.
    """
    import jupytext

    path = paths.NOTEBOOKS_DIR / f"{notebook}.md"
    if not path.exists():
        existing = sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.md"))
        raise FileNotFoundError(
            f"no notebook {notebook!r} ({path}); existing: {', '.join(existing)}"
        )
    nb = jupytext.read(path)
    cells = [
        c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise ValueError(
            f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}"
        )
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            name, value = node.target.id, node.value
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name, value = node.targets[0].id, node.value
        else:
            raise ValueError(
                f"{path}: the parameters cell may only hold `name = literal` lines, got {ast.unparse(node)!r}"
            )
        try:
            params[name] = ast.literal_eval(value)
        except ValueError:
            raise ValueError(
                f"{path}: parameter {name!r} is not a plain literal: {ast.unparse(value)!r}"
            ) from None
    return params


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    """Return ``value`` converted to the default's type where lossless; raise ``ValueError`` otherwise."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(
            f"{source}: parameter {key!r} must be of type {type(default).__name__} "
            f"(like its default {default!r}), got {value!r} ({type(value).__name__}). {_fix(key, default, source)}"
        )
    return value


def _fix(key: str, default: Any, source: str) -> str:
    """How to fix a bad value of ``key`` given in ``source``."""
    example = f"{key}={_rules.describe_value(default)}"
    if source.startswith("--set"):
        return (
            f"Fix: give an allowed value, e.g. --set '{example}' (make run: PARAMS=\"{example}\"; the notebook's "
            "default), or leave the override out"
        )
    return f"Fix: write an allowed value in {source}, e.g. {example.replace('=', ': ', 1)} (the notebook's default)"


def _check_parameter(key: str, value: Any, default: Any, source: str) -> Any:
    """Type (like the default), null and the declared rule (:mod:`companion.engine.parameters`) of one value."""
    value = _check_type(key, value, default, source)
    rule = _rules.rules().get(key, _rules.UNDECLARED)
    if value is None:
        if default is None or rule.nullable:
            return None
        raise ValueError(
            f"{source}: parameter {key!r} is null (YAML null: an empty value as in `{key}=`, or null/~) but it "
            f"needs a value of type {type(default).__name__} (like its default {default!r}); allowed: {rule.allowed}. "
            f"{_fix(key, default, source)}"
        )
    try:
        _rules.check(key, value, rule)
    except ValueError as err:
        raise ValueError(
            f"{source}: parameter {key!r} {err}. {_fix(key, default, source)}"
        ) from None
    return value


def resolve_parameters(
    notebook: str, profile: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge the notebook defaults, the profile YAML and ``overrides``; every key must be a parameter."""
    paths.check_profile(profile)
    defaults = notebook_parameters(notebook)
    pfile = paths.profile_file(notebook, profile)
    if not pfile.exists():
        raise FileNotFoundError(
            f"missing profile file {pfile}: every notebook needs profiles/{profile}/{notebook}.yaml"
        )
    loaded = load_yaml(pfile) or {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{pfile} must hold a mapping of parameter: value, got {type(loaded).__name__}"
        )
    merged = dict(defaults)
    cell = f"{paths.NOTEBOOKS_DIR / notebook}.md (parameters cell)"
    for key, value in defaults.items():  # the cell's own defaults follow the same rules
        if key not in _RUNNER_SET:
            _check_parameter(key, value, value, cell)
    for source, values in ((str(pfile), loaded), ("--set", overrides or {})):
        for key, value in values.items():
            if key not in defaults:
                raise ValueError(
                    f"{source}: unknown parameter {key!r} for notebook {notebook!r}; allowed: {', '.join(sorted(defaults))}"
                )
            if key == "profile" and source == str(pfile) and value == profile:
                continue  # a profile file may name its own profile
            if key in _RUNNER_SET:
                raise ValueError(
                    f"{source}: parameter {key!r} = {value!r} is set by {_RUNNER_SET[key]}, not here; "
                    f"remove it from {source}"
                )
            merged[key] = _check_parameter(key, value, defaults[key], source)
    merged["profile"] = profile
    return merged


class NotRun(FileNotFoundError):
    """No dataset a notebook's setups request is present (and ``strict_data`` is false).

    The runner then builds the "not run" result instead of executing the notebook: the
    ``<notebook>_missing.md`` snippet naming each missing file and its fix, and exit 0.

    Attributes:
        requested: the requested dataset names, in order.
    """

    def __init__(self, message: str, requested: list[str]):
        super().__init__(message)
        self.requested = requested


def check_datasets(notebook: str, params: dict[str, Any]) -> None:
    """Refuse, before anything runs, a notebook whose ``setups`` could not run on any dataset.

    Without ``strict_data`` a notebook skips the requested datasets that are missing and reports
    them "not run"; when *every* requested dataset is missing nothing would be trained, so the run
    is refused here with the missing files and the fetch command. With ``strict_data`` any
    missing dataset is refused. Notebooks without ``setups`` are not checked.

    Raises:
        FileNotFoundError: naming the notebook, each missing dataset, its file and the fix.
    """
    setups = params.get("setups")
    if not isinstance(setups, list) or not setups:
        return

    requested = list(
        dict.fromkeys(
            s["dataset"] for s in setups if isinstance(s, dict) and "dataset" in s
        )
    )
    strict = bool(params.get("strict_data", False))
    missing: list[str] = []
    for name in requested:
        row = data.available([name]).iloc[0]
        if bool(row["present"]):
            if not strict:
                return  # one present dataset is enough: the notebook reports the others "not run"
            continue
        missing.append(
            f"{row['label']} ({name}): {row['missing']} missing; fix: {row['fetch']}"
        )
    if not missing:
        return
    if strict:
        why = "strict_data is true and requested datasets are missing"
    else:
        why = "none of the datasets its setups request is present, so nothing would run"
    message = (
        f"notebook {notebook!r} not run: {why}:\n  "
        + "\n  ".join(missing)
        + "\nFetch the data (make data), or ask for a present dataset, e.g. --set "
        "'setups=[{dataset: fashion_mnist}]' (python -m companion.data report lists what "
        "is present)"
    )
    if strict:
        raise FileNotFoundError(message)
    raise NotRun(message, requested)


def write_not_run(notebook: str, results_dir: Path, requested: list[str]) -> Path:
    """The "not run" result of a notebook whose datasets are all missing.

    Writes ``results_dir/<notebook>_missing.md`` -- the admonition the book shows, one
    "not run: <file> missing" line and its fix per dataset -- and returns its path.
    """
    # deferred: the chapter helpers import the engine (cycle) and load TensorFlow
    from companion.chapters.analysis import missing_data_markdown

    text = missing_data_markdown(data.available(requested), requested)
    path = results_dir / f"{notebook}_missing.md"
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def output_locations(
    notebook: str, profile: str, overrides: dict[str, Any] | None
) -> tuple[Path, Path]:
    """(results_dir, executed notebook path) for a profile run or a one-off run with overrides."""
    if not overrides:
        return paths.results_dir(notebook, profile), paths.executed_dir(
            profile
        ) / f"{notebook}.ipynb"
    digest = hashlib.sha256(
        json.dumps(overrides, sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    base = (
        paths.results_root()
        / "custom"
        / paths.check_profile(profile)
        / f"{notebook}-{digest}"
    )
    return base, base / f"{notebook}.ipynb"


def _parse_override(text: str, source: str = "--set") -> tuple[str, Any]:
    if "=" not in text or text.startswith("="):
        raise ValueError(
            f"{source}: override {text!r} must look like key=value without spaces around '=' "
            "(e.g. lr=1e-3; an empty value, key=, is YAML null)"
        )
    key, raw = text.split("=", 1)
    return key.strip(), load_yaml(raw, source=f"{source} {text}")


def split_params(text: str) -> list[str]:
    """Split one string of overrides into ``key=value`` items (``make run PARAMS="..."``, ``--params``).

    Items are separated by whitespace or ``;`` outside brackets and quotes, so YAML flow values
    keep their spaces: ``"seeds=[0, 1] epochs=3; setups=[{dataset: mnist, arch: mlp}]"`` gives
    ``["seeds=[0, 1]", "epochs=3", "setups=[{dataset: mnist, arch: mlp}]"]``.

    Raises:
        ValueError: an unclosed quote or bracket, or an item that is not ``key=value``; the
            message quotes the text and shows the expected form.
    """
    example = 'e.g. PARAMS="seeds=[0, 1] epochs=3" (items separated by spaces or ;)'
    items: list[str] = []
    buf: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            buf.append(ch)
            quote = "" if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                raise ValueError(
                    f"PARAMS {text!r}: {ch!r} closes a bracket that was not opened; {example}"
                )
        elif depth == 0 and (ch.isspace() or ch == ";"):
            if buf:
                items.append("".join(buf))
                buf = []
            continue
        buf.append(ch)
    if quote:
        raise ValueError(f"PARAMS {text!r}: the quote {quote} is not closed; {example}")
    if depth:
        raise ValueError(f"PARAMS {text!r}: {depth} bracket(s) not closed; {example}")
    if buf:
        items.append("".join(buf))
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ValueError(
                f"PARAMS {text!r}: {item!r} is not key=value; write key=value without spaces around '=', {example}"
            )
    return items


class NotebookFailed(RuntimeError):
    """A notebook stopped on an exception; the message gives its last line whole and the failed notebook's path.

    Attributes:
        notebook: the notebook name.
        failed: path of the executed notebook kept for inspection (``NAME.failed.ipynb``), or ``None``.
        error: the exception's last line, ``"Type: message"``.
    """

    def __init__(
        self, notebook: str, error: str, failed: Path | None, cell: Any = None
    ):
        self.notebook, self.error, self.failed = notebook, error, failed
        where = f" in cell [{cell}]" if cell is not None else ""
        see = (
            f"\nthe failed notebook (with the traceback): {failed}"
            if failed is not None
            else ""
        )
        super().__init__(f"notebook {notebook} failed{where}: {error}{see}")


def _last_line(err: BaseException) -> tuple[str, Any]:
    """``("Type: message", cell)`` of a notebook's exception: papermill's ename/evalue, else the exception itself."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename is not None:
        return f"{ename}: {evalue}", getattr(err, "exec_count", None)
    text = str(err).strip()
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__), None


# --------------------------------------------------------------------------------------------
# What the executed notebook keeps: what a reader needs, not the machinery's chatter

#: environment of the kernels the runner starts, TensorFlow's C++ logging at FATAL only
#: and gRPC's at errors only (absl's own "before absl::InitializeLog()" lines ignore these
#: variables: the kernel argument below keeps them out of the notebook)
KERNEL_ENV: dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
}
#: ipykernel forwards what C/C++ code writes to the process's file descriptors 1 and 2 into the
#: notebook (TensorFlow, XLA and absl log lines, e.g. ``E0000 ... node_def_util.cc:682] NodeDef
#: mentions attr ...``); without that capture those lines go to the terminal only, while
#: Python's own ``print``, warnings and tqdm bars still reach the notebook. The Python loggers
#: of TensorFlow and absl (``WARNING:tensorflow:... retracing``) pass errors only, from before
#: the first cell runs.
KERNEL_ARGUMENTS: tuple[str, ...] = (
    "--IPKernelApp.capture_fd_output=False",
    *(  # a filter, not a level: TensorFlow sets its logger to INFO in a notebook
        f"--IPKernelApp.exec_lines=__import__('logging').getLogger('{name}')"
        ".addFilter(lambda record: record.levelno >= 40)"
        for name in ("tensorflow", "absl")
    ),
)

#: one line of library machinery in a notebook output, such as absl/glog-format C++ log
#: lines (``E0000 00:00:1700000000.123 4242 node_def_util.cc:682] ...``), absl's "All log messages
#: before absl::InitializeLog()" banner and the continuation line of TensorFlow's CPU
#: feature note, TensorFlow's older C++ format
#: (``2024-01-01 10:00:00.123: I tensorflow/...``), absl's and TensorFlow's Python logging
#: (``WARNING:absl:``, ``WARNING:tensorflow:... triggered tf.function retracing``) and the
#: kernel's own warnings (``[IPKernelApp] WARNING``)
NOISE_LINE_RE = re.compile(
    r"""^\s*(?:
        [IWEF]\d{4}\ +\d\d:\d\d:\d+\.\d+\ +\d+\ +[\w./-]+:\d+\]
      | WARNING:\ All\ log\ messages\ before\ absl::InitializeLog\(\)
      | To\ enable\ the\ following\ instructions:.*rebuild\ TensorFlow
      | \d{4}-\d\d-\d\d\ \d\d:\d\d:\d\d\.\d+:\ [IWEF]\ [\w./-]+:\d+\]
      | (?:DEBUG|INFO|WARNING|ERROR|CRITICAL):(?:absl|tensorflow):
      | \[IPKernelApp\]\ (?:WARNING|ERROR|INFO)
    )""",
    re.X,
)
#: one tqdm progress frame, the bar's label (group ``desc``) then its percentage, bar and
#: count, e.g. ``sweep:  40%|####      | 2/5 [00:03<00:04,  1.5s/run, test acc 0.9]``
PROGRESS_RE = re.compile(r"^(?P<desc>.*?):?\s+\d{1,3}%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+")


#: the category of the warning that ``companion.chapters.style.save_figure`` gives when a
#: figure's text is too small in print; a message for the person running the build, not
#: for the reader, so the runner prints it to the terminal (:func:`execute`) and keeps it
#: out of the stored notebook (:func:`clean_text`)
LEGIBILITY_WARNING = "FigureLegibilityWarning"
#: the first line of such a warning as Python shows it (file, line, category and message
#: joined by colons); the indented line after it is the source line that warned
FIGURE_WARNING_RE = re.compile(rf"^\S.*?:\d+: {LEGIBILITY_WARNING}: (?P<message>.*)$")


def _split_figure_warnings(lines: list[str]) -> tuple[list[str], list[str]]:
    """``(lines without figure-legibility warnings, the warnings' messages)``."""
    kept: list[str] = []
    messages: list[str] = []
    warned = False
    for line in lines:
        if warned and line[:1].isspace():  # the source line shown under a warning
            warned = False
            continue
        match = FIGURE_WARNING_RE.match(line)
        warned = match is not None
        if match:
            messages.append(match["message"])
        else:
            kept.append(line)
    return kept, messages


def figure_warnings(nb: dict[str, Any]) -> list[str]:
    """Messages of the figure-legibility warnings in ``nb``'s stream outputs, in order.

    Arguments:
        nb: an executed notebook (a JSON dict or an ``nbformat`` notebook).
    """
    return [
        message
        for cell in nb.get("cells", [])
        for out in cell.get("outputs", []) or []
        if out.get("output_type") == "stream"
        for message in _split_figure_warnings(
            _resolve_carriage_returns(_joined(out.get("text", "")))
        )[1]
    ]


def _resolve_carriage_returns(text: str) -> list[str]:
    """Lines of ``text`` as a terminal shows them (a carriage return restarts its line)."""
    lines = []
    for line in text.split("\n"):
        frames = [f for f in line.split("\r") if f.strip()]
        lines.append(frames[-1] if frames else "")
    return lines


def clean_text(text: str) -> str:
    """A stream's text as a reader wants it: no log lines, each progress bar's last frame only.

    Carriage-return-separated tqdm updates collapse to what a terminal finally shows; lines matching
    :data:`NOISE_LINE_RE` and figure-legibility warnings (:data:`FIGURE_WARNING_RE`, with their
    source line; :func:`execute` prints them) are dropped; of several lines of the same progress bar (same label,
    :data:`PROGRESS_RE`) only the last is kept, where it stood -- a bar that starts again
    (its count goes back, or its total changes) is another bar; runs of blank lines shrink
    to one and leading/trailing blank lines go. Returns ``""`` when nothing is left.
    """
    lines, _ = _split_figure_warnings(_resolve_carriage_returns(text))
    lines = [ln for ln in lines if not NOISE_LINE_RE.match(ln)]
    final = _final_frames(lines)
    kept: list[str] = []
    for i, line in enumerate(lines):
        if PROGRESS_RE.match(line) and i not in final:
            continue
        if not line.strip() and (not kept or not kept[-1].strip()):
            continue
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def _final_frames(lines: list[str]) -> set[int]:
    """Indices of the last frame of every progress bar in ``lines`` (see :func:`clean_text`)."""
    final: set[int] = set()
    open_bars: dict[str, tuple[int, int, str]] = {}  # label -> (index, count, total)
    for i, line in enumerate(lines):
        m = PROGRESS_RE.match(line)
        if not m:
            continue
        label = m["desc"].strip()
        count = re.search(r"\|\s*([\d.]+)[kMG]?/([\d.?]+[kMG]?)", line)
        done, total = (float(count[1]), count[2]) if count else (0.0, "")
        if label in open_bars:
            index, before, before_total = open_bars[label]
            if done < before or total != before_total:  # the bar started again
                final.add(index)
        open_bars[label] = (i, done, total)
    final.update(index for index, _, _ in open_bars.values())
    return final


def _empty(output: dict[str, Any]) -> bool:
    """An output a reader would see as an empty box: blank text, or display data without content."""
    kind = output.get("output_type")
    if kind == "stream":
        return not _joined(output.get("text", "")).strip()
    if kind in ("display_data", "execute_result"):
        data = (output.get("data") or {}).values()
        return not any(
            _joined(v).strip() if isinstance(v, (str, list)) else v for v in data
        )
    return False


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def clean_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """Make an executed notebook's outputs readable; returns ``nb`` (changed in place).

    Per code cell: consecutive stream outputs of the same stream are merged (tqdm writes one
    output per update) and cleaned with :func:`clean_text`; a stderr output left with
    nothing but the final progress lines joins the printed output around it (a finished
    bar is a result, not an error); stream outputs left empty and display outputs without
    content are dropped; images get the alt text their output metadata names; papermill's
    injected parameters cell is wrapped to the book's code width
    (:func:`wrap_parameters`). Errors, figures and tables are kept as they are. Works on
    a plain JSON dict or an ``nbformat`` notebook.
    """
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or not cell.get("outputs"):
            continue
        outputs = _merge_streams(cell["outputs"])
        for out in outputs:
            if out.get("output_type") != "stream":
                continue
            out["text"] = clean_text(out["text"])
            lines = [ln for ln in out["text"].splitlines() if ln.strip()]
            if out.get("name") == "stderr" and lines:
                if all(PROGRESS_RE.match(ln) for ln in lines):
                    out["name"] = "stdout"
        outputs = [out for out in outputs if not _empty(out)]
        cell["outputs"] = _merge_streams(outputs)
        _set_image_alt(cell)
    for cell in nb.get("cells", []):
        if "injected-parameters" in (cell.get("metadata") or {}).get("tags", []):
            cell["source"] = wrap_parameters(_joined(cell.get("source", "")))
    return nb


def _merge_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``outputs`` with consecutive outputs of the same stream joined into one."""
    merged: list[dict[str, Any]] = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if out.get("output_type") != "stream":
            merged.append(out)
        elif (
            prev is not None
            and prev.get("output_type") == "stream"
            and prev.get("name") == out.get("name")
        ):
            prev["text"] = _joined(prev["text"]) + _joined(out.get("text", ""))
        else:
            out["text"] = _joined(out.get("text", ""))
            merged.append(out)
    return merged


#: the longest code line the book shows without scrolling sideways (ruff's line length)
MAX_CODE_LINE = 88


def wrap_parameters(source: str, width: int = MAX_CODE_LINE) -> str:
    """Papermill's injected parameters cell with every line at most ``width`` long.

    A ``name = literal`` line that is too long is rewritten with its lists and dicts
    broken one element per line (the value is unchanged); other lines stay as they are.
    """
    lines = []
    for line in source.splitlines():
        if len(line) > width and " = " in line and not line.startswith("#"):
            name, _, text = line.partition(" = ")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                lines.append(line)
                continue
            lines.append(f"{name} = {_literal(value, 0, width - len(name) - 3)}")
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def _flat(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_flat(k)}: {_flat(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(map(_flat, value)) + "]"
    return repr(value)


def _literal(value: Any, indent: int, room: int) -> str:
    """``value`` as Python source: one line if it fits in ``room``, else one item a line."""
    flat = _flat(value)
    if len(flat) <= room or not isinstance(value, (list, dict)) or not value:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [
            f"{pad}{_flat(k)}: "
            + _literal(v, indent + 4, MAX_CODE_LINE - len(pad) - len(_flat(k)) - 3)
            + ","
            for k, v in value.items()
        ]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    items = [
        f"{pad}{_literal(v, indent + 4, MAX_CODE_LINE - len(pad) - 1)}," for v in value
    ]
    return "[\n" + "\n".join(items) + "\n" + " " * indent + "]"


def _set_image_alt(cell: dict[str, Any]) -> None:
    """Give the cell's images the alt text their outputs carry (MyST-NB reads it per cell).

    ``companion.chapters.style.save_figure`` displays each figure with its caption as
    ``alt`` in the output metadata; MyST-NB only takes image options from the cell's
    metadata (``mystnb: image: alt``), so the distinct alt texts of the cell go there,
    unless the cell sets one itself.
    """
    alts: list[str] = []
    for out in cell["outputs"]:
        for mime, meta in (out.get("metadata") or {}).items():
            alt = meta.get("alt") if isinstance(meta, dict) else None
            if mime.startswith("image/") and alt and alt not in alts:
                alts.append(str(alt))
    if not alts:
        return
    mystnb = cell.setdefault("metadata", {}).setdefault("mystnb", {})
    mystnb.setdefault("image", {}).setdefault("alt", " / ".join(alts))


def _clean_file(path: Path) -> list[str]:
    """Rewrite the executed notebook at ``path`` with :func:`clean_outputs` (atomically).

    Returns the messages of the figure-legibility warnings the cleaning removed
    (:func:`figure_warnings`).
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    warned = figure_warnings(nb)
    text = (
        json.dumps(clean_outputs(nb), indent=1, sort_keys=True, ensure_ascii=False)
        + "\n"
    )
    atomic_write_text(path, text)
    return warned


@contextlib.contextmanager
def _kernel_environment():
    """Set :data:`KERNEL_ENV` for the kernels started inside the block, restore it afterwards."""
    saved = {key: os.environ.get(key) for key in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: leftover files of runs killed before they could clean up are removed when older than this
STALE_SECONDS = 3600


def execute(
    notebook: str,
    profile: str,
    overrides: dict[str, Any] | None = None,
    *,
    log=print,
    echo: bool = True,
) -> Path:
    """Run ``notebook`` under ``profile`` (+ ``overrides``) with papermill; return the executed notebook path.

    Parameters are validated first (:func:`resolve_parameters`, :func:`check_datasets`); nothing
    runs when one is wrong. When none of the requested datasets is present (and
    ``strict_data`` is false) the notebook is not executed: the "not run" result
    (:func:`write_not_run`) is written and its path returned. The previous executed notebook is removed before the run, papermill
    writes into a temporary folder and the result is moved into place (atomically) only on
    success: a failed or interrupted run never leaves an older success looking current. A failed
    run is kept as ``NAME.failed.ipynb`` and :class:`NotebookFailed` is raised. Leftover temporary
    files of killed runs (older than :data:`STALE_SECONDS`) in the output folders are removed.

    With ``echo`` the notebook's printed output and stderr -- the sweeps' tqdm progress bars with
    their ETA, "N runs (k already stored) -> folder" lines -- are streamed to this process's
    stdout/stderr while it runs, so a long ``make reproduce`` shows where it is. The stored
    notebook keeps what a reader needs (:func:`clean_outputs`): each bar's final line, no
    library log lines, no empty outputs, no figure-legibility warnings -- those are logged
    (``log``) once the run is done, with or without ``echo``.
    """
    params = resolve_parameters(notebook, profile, overrides)
    results_dir, executed = output_locations(notebook, profile, overrides)
    try:
        check_datasets(notebook, params)
    except NotRun as err:
        written = write_not_run(notebook, results_dir, err.requested)
        log(f"[companion.engine.runner] {err}\n-> the 'not run' result: {written}")
        return written
    params["results_dir"] = str(results_dir)
    _prepare_outputs(params, results_dir, executed, log)
    log(
        f"[companion.engine.runner] {notebook} (profile {profile}) -> results in "
        f"{results_dir}, notebook {executed}"
    )
    failed = executed.with_suffix(".failed.ipynb")
    start = time.time()
    with tempfile.TemporaryDirectory(prefix=f"lqs-{notebook}-") as tmp:
        output = _papermill(notebook, params, Path(tmp), failed, echo, log)
        for message in _clean_file(output):
            log(
                f"[companion.engine.runner] {notebook}: {LEGIBILITY_WARNING}: {message}"
            )
        atomic_write(executed, lambda p: shutil.copyfile(output, p))
    failed.unlink(missing_ok=True)
    log(f"[companion.engine.runner] {notebook} done in {time.time() - start:.0f} s")
    return executed


def _prepare_outputs(
    params: dict[str, Any], results_dir: Path, executed: Path, log
) -> None:
    """Create the output folders, remove leftovers of killed runs, write the parameters
    and remove the previous executed notebook (a failed run must not leave an older
    success looking current)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    for folder in dict.fromkeys((results_dir, executed.parent)):
        for stale in remove_stale_temp_files(
            folder, older_than=STALE_SECONDS, extra=("*.partial.ipynb",)
        ):
            log(
                f"[companion.engine.runner] removed the leftover temporary file {stale} "
                "(of a run that was killed)"
            )
    atomic_write_text(
        results_dir / "parameters.json",
        json.dumps(params, indent=2, sort_keys=True, default=str),
    )
    executed.unlink(missing_ok=True)


def _papermill(
    notebook: str, params: dict[str, Any], tmp: Path, failed: Path, echo: bool, log
) -> Path:
    """Execute the notebook's MyST source with papermill into ``tmp``; return the output.

    On failure the (cleaned) output is kept as ``failed`` and :class:`NotebookFailed` is
    raised with the exception's last line; KeyboardInterrupt and SystemExit propagate.
    """
    import jupytext
    import papermill as pm

    source, output = tmp / f"{notebook}.ipynb", tmp / f"{notebook}.out.ipynb"
    jupytext.write(jupytext.read(paths.NOTEBOOKS_DIR / f"{notebook}.md"), source)
    start = time.time()
    try:
        with _kernel_environment():
            pm.execute_notebook(
                str(source),
                str(output),
                parameters=params,
                kernel_name="python3",
                cwd=str(paths.ROOT),
                progress_bar=sys.stderr.isatty(),
                log_output=False,
                stdout_file=sys.stdout if echo else None,
                stderr_file=sys.stderr if echo else None,
                extra_arguments=list(KERNEL_ARGUMENTS),
            )
    except BaseException as err:
        kept = None
        if output.exists():
            with contextlib.suppress(ValueError, OSError):  # keep it raw then
                _clean_file(output)
            atomic_write(failed, lambda p: shutil.copyfile(output, p))
            kept = failed
        log(
            f"[companion.engine.runner] {notebook} FAILED after "
            f"{time.time() - start:.0f} s" + (f"; see {failed}" if kept else "")
        )
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: stop
            raise
        line, cell = _last_line(err)
        raise NotebookFailed(notebook, line, kept, cell) from err
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m companion.engine.runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("notebook", help="notebook name (file notebooks/<name>.md)")
    parser.add_argument(
        "--profile", default="cpu", help="smoke | cpu | full (default cpu)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter (YAML value; empty = null), repeatable",
    )
    parser.add_argument(
        "--params",
        default="",
        metavar='"K=V K2=V2"',
        help="several overrides in one string, separated by spaces or ';' outside brackets and "
        'quotes (what `make run PARAMS=...` passes), e.g. "seeds=[0, 1] epochs=3"',
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the resolved parameters and exit (nothing runs)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="do not stream the notebook's output (progress bars, prints) while it runs",
    )
    args = parser.parse_args(argv)
    try:
        items = [("--set", o) for o in args.overrides] + [
            ("PARAMS", o) for o in split_params(args.params)
        ]
        overrides = dict(_parse_override(text, source) for source, text in items)
        if args.dry_run:
            params = resolve_parameters(args.notebook, args.profile, overrides)
            try:
                check_datasets(args.notebook, params)
            except NotRun as err:
                print(f"{err}\n(dry run: the run would write the 'not run' result)")
                return 0
            params["results_dir"] = str(
                output_locations(args.notebook, args.profile, overrides)[0]
            )
            print(json.dumps(params, indent=2, sort_keys=True, default=str))
            return 0
        execute(args.notebook, args.profile, overrides, echo=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permissions: the message names the path
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(
            f"error: notebook {args.notebook} could not run: {type(err).__name__}: {err}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
