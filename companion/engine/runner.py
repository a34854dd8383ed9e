"""Execute one notebook with a profile's parameters (papermill), atomically.

``python -m companion.engine.runner NAME --profile P [--set key=value ...] [--dry-run]``

1. reads ``notebooks/NAME.md`` (MyST, jupytext) and its single cell tagged ``parameters``;
2. reads ``profiles/P/NAME.yaml`` and the ``--set`` overrides, checks that every key exists in the
   parameters cell and that each value has the type of the cell's default;
3. runs the notebook with papermill, writing the executed notebook to a temporary file that is
   renamed to ``results/P/executed/NAME.ipynb`` only on success (a failed run is kept as
   ``NAME.failed.ipynb`` and the command exits non-zero).

With overrides the outputs go to ``results/custom/P/NAME-<hash>/`` instead, so a one-off rerun with
new parameters never overwrites the profile's figures.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from companion import paths
from lqs.fileio import atomic_write_text

__all__ = ["RUNS_AFTER", "execution_order", "load_yaml", "notebook_parameters", "resolve_parameters",
           "output_locations", "execute", "main"]

#: notebooks that read another notebook's outputs, and which ones (the Makefile encodes the same
#: order as order-only prerequisites; ``tests/test_runner.py`` checks that the two agree)
RUNS_AFTER: dict[str, tuple[str, ...]] = {"baselines": ("loss_terms",)}


def execution_order(notebooks: list[str] | None = None) -> list[str]:
    """Notebook names in an order that runs every notebook after the ones it reads (:data:`RUNS_AFTER`).

    Alphabetical otherwise, as ``make notebooks`` runs them. ``None``: every ``notebooks/*.md``.
    """
    names = sorted(notebooks if notebooks is not None else (p.stem for p in paths.NOTEBOOKS_DIR.glob("*.md")))
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
        raise FileNotFoundError(f"no notebook {notebook!r} ({path}); existing: {', '.join(existing)}")
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            raise ValueError(f"{path}: the parameters cell may only hold `name = literal` lines, got {ast.unparse(node)!r}")
        try:
            params[name] = ast.literal_eval(value)
        except ValueError:
            raise ValueError(f"{path}: parameter {name!r} is not a plain literal: {ast.unparse(value)!r}") from None
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
            f"(like its default {default!r}), got {value!r} ({type(value).__name__})"
        )
    return value


def resolve_parameters(notebook: str, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the notebook defaults, the profile YAML and ``overrides``; every key must be a parameter."""
    paths.check_profile(profile)
    defaults = notebook_parameters(notebook)
    pfile = paths.profile_file(notebook, profile)
    if not pfile.exists():
        raise FileNotFoundError(f"missing profile file {pfile}: every notebook needs profiles/{profile}/{notebook}.yaml")
    loaded = load_yaml(pfile) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{pfile} must hold a mapping of parameter: value, got {type(loaded).__name__}")
    merged = dict(defaults)
    for source, values in ((str(pfile), loaded), ("--set", overrides or {})):
        for key, value in values.items():
            if key not in defaults:
                raise ValueError(
                    f"{source}: unknown parameter {key!r} for notebook {notebook!r}; allowed: {', '.join(sorted(defaults))}"
                )
            merged[key] = _check_type(key, value, defaults[key], source)
    merged["profile"] = profile
    return merged


def output_locations(notebook: str, profile: str, overrides: dict[str, Any] | None) -> tuple[Path, Path]:
    """(results_dir, executed notebook path) for a profile run or a one-off run with overrides."""
    if not overrides:
        return paths.results_dir(notebook, profile), paths.executed_dir(profile) / f"{notebook}.ipynb"
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    base = paths.results_root() / "custom" / paths.check_profile(profile) / f"{notebook}-{digest}"
    return base, base / f"{notebook}.ipynb"


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. lr=1e-3)")
    key, raw = text.split("=", 1)
    return key.strip(), load_yaml(raw, source=f"--set {text}")


def execute(notebook: str, profile: str, overrides: dict[str, Any] | None = None, *, log=print,
            echo: bool = True) -> Path:
    """Run ``notebook`` under ``profile`` (+ ``overrides``) with papermill; return the executed notebook path.

    With ``echo`` the notebook's printed output and stderr -- the sweeps' tqdm progress bars with
    their ETA, "N runs (k already stored) -> folder" lines -- are streamed to this process's
    stdout/stderr while it runs, so a long ``make reproduce`` shows where it is.
    """
    import jupytext
    import papermill as pm

    params = resolve_parameters(notebook, profile, overrides)
    results_dir, executed = output_locations(notebook, profile, overrides)
    params["results_dir"] = str(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    executed.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / "parameters.json", json.dumps(params, indent=2, sort_keys=True, default=str))
    log(f"[companion.engine.runner] {notebook} (profile {profile}) -> results in {results_dir}, notebook {executed}")

    nb = jupytext.read(paths.NOTEBOOKS_DIR / f"{notebook}.md")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{notebook}.ipynb"
        jupytext.write(nb, source)
        fd, partial = tempfile.mkstemp(prefix=f".{notebook}.", suffix=".partial.ipynb", dir=executed.parent)
        os.close(fd)
        start = time.time()
        try:
            pm.execute_notebook(
                str(source),
                partial,
                parameters=params,
                kernel_name="python3",
                cwd=str(paths.ROOT),
                progress_bar=sys.stderr.isatty(),
                log_output=False,
                stdout_file=sys.stdout if echo else None,
                stderr_file=sys.stderr if echo else None,
            )
        except BaseException:
            failed = executed.with_suffix(".failed.ipynb")
            if Path(partial).exists():
                os.replace(partial, failed)
                log(f"[companion.engine.runner] {notebook} FAILED after {time.time() - start:.0f} s; see {failed}")
            raise
        os.chmod(partial, 0o644)  # mkstemp creates 0600; executed notebooks are shared outputs
        os.replace(partial, executed)
    executed.with_suffix(".failed.ipynb").unlink(missing_ok=True)
    log(f"[companion.engine.runner] {notebook} done in {time.time() - start:.0f} s")
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.engine.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="notebook name (file notebooks/<name>.md)")
    parser.add_argument("--profile", default="cpu", help="smoke | cpu | full (default cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter (YAML value), repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved parameters and exit")
    parser.add_argument("--quiet", action="store_true",
                        help="do not stream the notebook's output (progress bars, prints) while it runs")
    args = parser.parse_args(argv)
    try:
        overrides = dict(_parse_override(o) for o in args.overrides)
        if args.dry_run:
            params = resolve_parameters(args.notebook, args.profile, overrides)
            params["results_dir"] = str(output_locations(args.notebook, args.profile, overrides)[0])
            print(json.dumps(params, indent=2, sort_keys=True, default=str))
            return 0
        execute(args.notebook, args.profile, overrides, echo=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # papermill's PapermillExecutionError and kernel errors
        print(f"error: notebook {args.notebook} failed: {type(err).__name__}: {str(err)[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
