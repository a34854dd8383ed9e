"""Wall and CPU time of every notebook under one profile, cold (nothing cached) or warm.

Runs ``python -m companion.engine.runner NAME --profile P --quiet`` for every notebook, one after the other in
the order ``make notebooks`` uses (:func:`companion.engine.runner.execution_order`), and records per notebook:

* ``wall_s`` -- elapsed seconds of the runner (papermill start-up, kernel, the notebook);
* ``cpu_s`` -- user + system CPU seconds of the runner and everything it started (the kernel and
  TensorFlow's threads; ``resource.getrusage(RUSAGE_CHILDREN)`` differences);
* ``runs_trained`` -- run records added to the results store while it ran (0 when warm);
* ``load1_before`` -- the 1-minute load average when it started (a busy machine inflates wall time,
  CPU time much less).

``--cold`` (the default) points ``LQS_RESULTS`` at a new empty folder, so every training run is
recomputed, as on a fresh clone; ``--warm`` uses the normal ``results/`` (cached runs are reused).
The dataset files are found as usual (``LQS_DATA`` / ``data/``).

Writes ``results/benchmarks/profile_times_<profile>_<cold|warm>.csv`` and ``.md``.
Usage: ``python benchmarks/profile_times.py --profile smoke [--warm] [--only loss_terms baselines]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from companion import paths  # noqa: E402
from companion.engine import runner  # noqa: E402
from lqs.fileio import atomic_write_text  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _n_records(results_root: Path) -> int:
    runs = results_root / "runs"
    return (
        sum(1 for p in runs.glob("*.json") if len(p.stem) == 16) if runs.is_dir() else 0
    )


def time_notebook(
    name: str, profile: str, env: dict[str, str], results_root: Path
) -> dict:
    """Run one notebook in a subprocess; its wall and CPU time and how many runs it trained."""
    before_runs = _n_records(results_root)
    load = os.getloadavg()[0]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "companion.engine.runner",
            name,
            "--profile",
            profile,
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(
            f"notebook {name} (profile {profile}) failed with exit code {proc.returncode}:\n{tail}"
        )
    return {
        "notebook": name,
        "profile": profile,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "runs_trained": _n_records(results_root) - before_runs,
        "load1_before": round(load, 2),
    }


def markdown(df: pd.DataFrame, meta: dict) -> str:
    lines = [
        f"Profile `{meta['profile']}`, {meta['mode']} ({meta['note']}). Machine: {meta['platform']}, "
        f"{meta['cpus']} CPUs; started {meta['started']}.",
        "",
        "| notebook | wall (min) | CPU (min) | runs trained | load before |",
        "|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.notebook} | {r.wall_s / 60:.1f} | {r.cpu_s / 60:.1f} | {r.runs_trained} | {r.load1_before:.1f} |"
        )
    lines.append(
        f"| **total** | **{df['wall_s'].sum() / 60:.1f}** | **{df['cpu_s'].sum() / 60:.1f}** | "
        f"**{df['runs_trained'].sum()}** | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile", default="smoke", help="smoke | cpu | full (default smoke)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--cold",
        dest="cold",
        action="store_true",
        default=True,
        help="empty results folder: every run is trained (default)",
    )
    mode.add_argument(
        "--warm", dest="cold", action="store_false", help="reuse results/ (cached runs)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NB",
        help="time only these notebooks (in make's order)",
    )
    args = parser.parse_args(argv)
    paths.check_profile(args.profile)
    names = runner.execution_order(args.only)

    env = dict(os.environ)
    scratch = None
    if args.cold:
        scratch = tempfile.TemporaryDirectory(prefix=f"lqs-profile-{args.profile}-")
        env["LQS_RESULTS"] = scratch.name
    results_root = Path(env.get("LQS_RESULTS", paths.ROOT / "results"))
    meta = {
        "profile": args.profile,
        "mode": "cold" if args.cold else "warm",
        "note": "empty results folder, every run trained"
        if args.cold
        else "cached runs reused",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    print(
        f"timing {len(names)} notebooks, profile {args.profile}, {meta['mode']} "
        f"(results in {results_root})",
        flush=True,
    )
    rows = []
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", end=" ", flush=True)
            rows.append(time_notebook(name, args.profile, env, results_root))
            print(
                f"{rows[-1]['wall_s']:.0f} s wall, {rows[-1]['cpu_s']:.0f} s CPU, "
                f"{rows[-1]['runs_trained']} runs trained",
                flush=True,
            )
    finally:
        if scratch is not None:
            scratch.cleanup()
    df = pd.DataFrame(rows)
    out = paths.results_root() / "benchmarks"
    stem = f"profile_times_{args.profile}_{meta['mode']}"
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False))
    text = markdown(df, meta)
    atomic_write_text(out / f"{stem}.md", text)
    print(text)
    print(f"written: {out / stem}.csv and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
