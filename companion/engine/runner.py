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
   exits non-zero.

With overrides the outputs go to ``results/custom/P/NAME-<hash>/`` instead, so a one-off rerun with
new parameters never overwrites the profile's figures.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from companion import paths
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
    "split_params",
    "output_locations",
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
RUNS_AFTER: dict[str, tuple[str, ...]] = {"baselines": ("loss_terms",)}


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
    from companion import data

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
    raise FileNotFoundError(
        f"notebook {notebook!r} not run: {why}:\n  "
        + "\n  ".join(missing)
        + "\nFetch the data (make data), or ask for a present dataset, e.g. --set 'setups=[{dataset: fashion_mnist}]'"
        + " (python -m companion.data report lists what is present)"
    )


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
    runs when one is wrong. The previous executed notebook is removed before the run, papermill
    writes into a temporary folder and the result is moved into place (atomically) only on
    success: a failed or interrupted run never leaves an older success looking current. A failed
    run is kept as ``NAME.failed.ipynb`` and :class:`NotebookFailed` is raised. Leftover temporary
    files of killed runs (older than :data:`STALE_SECONDS`) in the output folders are removed.

    With ``echo`` the notebook's printed output and stderr -- the sweeps' tqdm progress bars with
    their ETA, "N runs (k already stored) -> folder" lines -- are streamed to this process's
    stdout/stderr while it runs, so a long ``make reproduce`` shows where it is.
    """
    import jupytext
    import papermill as pm

    params = resolve_parameters(notebook, profile, overrides)
    check_datasets(notebook, params)
    results_dir, executed = output_locations(notebook, profile, overrides)
    params["results_dir"] = str(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    for folder in dict.fromkeys((results_dir, executed.parent)):
        for stale in remove_stale_temp_files(
            folder, older_than=STALE_SECONDS, extra=("*.partial.ipynb",)
        ):
            log(
                f"[companion.engine.runner] removed the leftover temporary file {stale} (of a run that was killed)"
            )
    atomic_write_text(
        results_dir / "parameters.json",
        json.dumps(params, indent=2, sort_keys=True, default=str),
    )
    failed = executed.with_suffix(".failed.ipynb")
    executed.unlink(
        missing_ok=True
    )  # a failed run must not leave the previous success looking current
    log(
        f"[companion.engine.runner] {notebook} (profile {profile}) -> results in {results_dir}, notebook {executed}"
    )

    nb = jupytext.read(paths.NOTEBOOKS_DIR / f"{notebook}.md")
    with tempfile.TemporaryDirectory(prefix=f"lqs-{notebook}-") as tmp:
        source, output = (
            Path(tmp) / f"{notebook}.ipynb",
            Path(tmp) / f"{notebook}.out.ipynb",
        )
        jupytext.write(nb, source)
        start = time.time()
        try:
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
            )
        except BaseException as err:
            kept = None
            if output.exists():
                atomic_write(failed, lambda p: shutil.copyfile(output, p))
                kept = failed
            log(
                f"[companion.engine.runner] {notebook} FAILED after {time.time() - start:.0f} s"
                + (f"; see {failed}" if kept else "")
            )
            if not isinstance(
                err, Exception
            ):  # KeyboardInterrupt, SystemExit: stop as asked
                raise
            line, cell = _last_line(err)
            raise NotebookFailed(notebook, line, kept, cell) from err
        atomic_write(executed, lambda p: shutil.copyfile(output, p))
    failed.unlink(missing_ok=True)
    log(f"[companion.engine.runner] {notebook} done in {time.time() - start:.0f} s")
    return executed


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
            check_datasets(args.notebook, params)
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
