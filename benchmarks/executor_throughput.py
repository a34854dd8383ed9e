"""Sweep throughput of the serial and the Ray executor: the same training runs, both ways.

Trains one batch of runs (:func:`companion.engine.experiment.sweep`) with ``executor="serial"``
(one run after the other in this process) and with ``executor="ray"`` (a local Ray instance with
``--workers`` single-threaded workers, default: one per core, each pinned to a core of its own
unless ``LQS_PIN_WORKERS=off``), each into its own empty temporary results folder, so nothing is
reused between them. ``--repeat`` pairs (default 3) are timed one after the other, serial first
in odd pairs and Ray first in even ones, so a machine that gets slower or faster meanwhile moves
both; reported are the median times and, as the paired statistic, each pair's speed-up and their
median. Reports runs
per hour, wall and CPU seconds (this process plus, for Ray, every process it started: raylet,
workers, ...), and checks that both executors stored the same numbers. Both are timed warm: this
process imports TensorFlow before the first serial sweep, and every Ray worker imports it before
the first Ray sweep (with Ray's own start, reported apart, and in a second speed-up that
includes it). The serial sweeps run while Ray's idle processes are up.

* ``--arch mlp`` (default): 8 nested MLP runs (Fashion-MNIST, seeds 0..7) of 2,000 steps at
  batch 32 (8,000 training images, 8 epochs);
* ``--arch cnn``: 4 nested CNN runs (Fashion-MNIST 28x28, the thesis CNN) of 100 steps
  (1,600 images, 2 epochs).

The last line reads ``serial <x> runs/h, ray <y> runs/h (<n> workers), speedup <y/x>``
(``x``, ``y``: of the median wall times), followed by the speed-up of every pair and their median.
Writes ``results/benchmarks/executor_throughput_<arch>.{csv,md}``. Needs Fashion-MNIST
(``make data``). Usage::

    .venv/bin/python benchmarks/executor_throughput.py              # MLP, about 3 minutes here
    .venv/bin/python benchmarks/executor_throughput.py --arch cnn   # CNN
    .venv/bin/python benchmarks/executor_throughput.py --runs 4 --steps 500 --repeat 1  # quicker
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from companion.engine import executors, experiment  # noqa: E402
from companion.engine.store import RunStore  # noqa: E402
from companion.paths import results_root  # noqa: E402
from lqs.fileio import atomic_write_text  # noqa: E402

BATCH = 32
#: per architecture: (runs, steps per run, training images)
DEFAULTS = {"mlp": (8, 2000, 8000), "cnn": (4, 100, 1600)}


def configs(arch: str, runs: int, steps: int, images: int) -> list[dict]:
    """``runs`` nested runs (seeds 0..runs-1) of about ``steps`` steps each at batch 32."""
    per_epoch = math.ceil(images / BATCH)
    epochs = max(1, round(steps / per_epoch))
    return [
        {
            "dataset": "fashion_mnist",
            "arch": arch,
            "flavour": "nested",
            "batch_size": BATCH,
            "epochs": epochs,
            "train_limit": images,
            "test_limit": 1000,
            "seed": seed,
        }
        for seed in range(runs)
    ]


def describe(cfgs: list[dict]) -> str:
    """What a batch of :func:`configs` trains, for the reports: e.g. ``8 nested mlp runs
    (fashion_mnist, 8,000 images, batch 32, 2000 steps each)``."""
    c = cfgs[0]
    steps = c["epochs"] * math.ceil(c["train_limit"] / c["batch_size"])
    return (
        f"{len(cfgs)} {c['flavour']} {c['arch']} runs ({c['dataset']}, {c['train_limit']:,} "
        f"images, batch {c['batch_size']}, {steps} steps each)"
    )


def _descendants_cpu(proc: psutil.Process) -> dict[int, float]:
    out = {}
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
            out[child.pid] = t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return out


def timed_sweep(cfgs: list[dict], executor, folder: Path) -> dict:
    """Wall and CPU seconds of one sweep into an empty store in ``folder``."""
    me = psutil.Process()
    store = RunStore(folder)
    before = _descendants_cpu(me)
    c0, t0 = time.process_time(), time.perf_counter()
    df = experiment.sweep(
        cfgs, desc=executor.name, store=store, executor=executor, progress=False
    )
    wall = time.perf_counter() - t0
    after = _descendants_cpu(me)
    children = sum(v - before.get(pid, 0.0) for pid, v in after.items())
    assert len(df) == len(cfgs) and df["complete"].all()
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - c0 + children,
        "runs_per_h": len(cfgs) * 3600 / wall,
        "train_s_mean": float(df["train_seconds"].mean()),
        "store": store,
    }


def _warm_worker() -> int:
    """In a Ray worker: import TensorFlow and the engine, as the serial process did at import."""
    import companion.engine.experiment  # noqa: F401

    time.sleep(1.0)  # hold the worker, so that every worker gets one of these tasks
    return os.getpid()


def start_ray(ray_ex: executors.RayExecutor) -> tuple[float, int]:
    """Start Ray and import TensorFlow in every worker; (seconds, distinct worker processes).

    The serial executor runs in this process, which imported TensorFlow before its timing
    starts; the workers' imports are start-up too, reported apart like Ray's own.
    """
    t0 = time.perf_counter()
    ray_ex.share(None)
    for i in range(ray_ex.workers):
        ray_ex.submit(f"warm-{i}", _warm_worker)
    pids = set()
    while ray_ex.pending:
        pids.update(pid for _, pid in ray_ex.wait())
    return time.perf_counter() - t0, len(pids)


def same_numbers(a: RunStore, b: RunStore) -> bool:
    """Whether two stores hold the same records (timings apart) and histories."""
    if a.hashes() != b.hashes():
        return False
    for h in a.hashes():
        ra, rb = a.load_record(h), b.load_record(h)
        if experiment.stable_values(ra) != experiment.stable_values(rb):
            return False
        ha, hb = a.load_history(h), b.load_history(h)
        if not ha.drop(columns="seconds").equals(hb.drop(columns="seconds")):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(DEFAULTS), default="mlp")
    parser.add_argument("--runs", type=int, help="runs per executor")
    parser.add_argument("--steps", type=int, help="training steps per run (batch 32)")
    parser.add_argument(
        "--workers",
        type=int,
        help="Ray workers (default: LQS_WORKERS, else one per core)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="serial/ray pairs, timed alternately; the medians are reported (default 3)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1 serial/ray pair is needed")
    runs, steps, images = DEFAULTS[args.arch]
    runs, steps = args.runs or runs, args.steps or steps
    cfgs = configs(args.arch, runs, steps, images)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{runs} {args.arch} runs of {cfgs[0]['epochs']} epochs x "
        f"{math.ceil(images / BATCH)} steps; {os.cpu_count()} cores; load {load}",
        flush=True,
    )
    ray_ex = executors.RayExecutor(workers=args.workers)
    ray_start, warmed = start_ray(ray_ex)  # reported apart
    workers, label, pinned = ray_ex.workers, ray_ex.describe(), ray_ex.pins_cores
    pairs, identical = [], True
    for i in range(args.repeat):
        order = (executors.SerialExecutor(), ray_ex)[:: 1 if i % 2 == 0 else -1]
        with tempfile.TemporaryDirectory(prefix="lqs-bench-") as tmp:
            timed = {
                ex.name: timed_sweep(cfgs, ex, Path(tmp) / ex.name) for ex in order
            }
            serial, ray = timed["serial"], timed["ray"]
            identical = identical and same_numbers(serial["store"], ray["store"])
        pairs.append((serial, ray))
        print(
            f"pair {i + 1}/{args.repeat}: serial {serial['wall_s']:.1f} s wall "
            f"({serial['cpu_s']:.1f} s CPU), ray {ray['wall_s']:.1f} s wall "
            f"({ray['cpu_s']:.1f} s CPU), speedup {serial['wall_s'] / ray['wall_s']:.2f}",
            flush=True,
        )
    executors.shutdown()

    serial, ray = (_medians([pair[k] for pair in pairs], len(cfgs)) for k in (0, 1))
    speedups = [s["wall_s"] / r["wall_s"] for s, r in pairs]
    speedup = ray["runs_per_h"] / serial["runs_per_h"]
    row = {
        "arch": args.arch,
        "runs": runs,
        "steps_per_run": cfgs[0]["epochs"] * math.ceil(images / BATCH),
        "workers": workers,
        "ray_executor": label,
        "pinned": pinned,
        "repeats": args.repeat,
        "serial_wall_s": serial["wall_s"],
        "serial_cpu_s": serial["cpu_s"],
        "serial_runs_per_h": serial["runs_per_h"],
        "ray_start_s": ray_start,
        "workers_warmed": warmed,
        "ray_wall_s": ray["wall_s"],
        "ray_cpu_s": ray["cpu_s"],
        "ray_runs_per_h": ray["runs_per_h"],
        "speedup": speedup,
        "speedup_per_pair": " ".join(f"{x:.2f}" for x in speedups),
        "median_pair_speedup": statistics.median(speedups),
        "speedup_with_start": serial["wall_s"] / (ray["wall_s"] + ray_start),
        "same_numbers": identical,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    out = results_root() / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"executor_throughput_{args.arch}"
    atomic_write_text(stem.with_suffix(".csv"), pd.DataFrame([row]).to_csv(index=False))
    table = "\n".join(
        [
            f"| executor (median of {args.repeat}) | wall s | CPU s | runs/h |",
            "|---|---|---|---|",
            f"| serial | {serial['wall_s']:.1f} | {serial['cpu_s']:.1f} | "
            f"{serial['runs_per_h']:.0f} |",
            f"| {label} | {ray['wall_s']:.1f} | {ray['cpu_s']:.1f} | "
            f"{ray['runs_per_h']:.0f} |",
            "",
            f"{describe(cfgs)}, {args.repeat} serial/ray "
            "pairs, alternately serial or Ray first (speed-up per pair: "
            f"{row['speedup_per_pair']}, median {row['median_pair_speedup']:.2f}); start-up "
            f"(Ray, and TensorFlow imported in {warmed} workers) {ray_start:.1f} s not included "
            f"(speedup with it: {row['speedup_with_start']:.2f}); same numbers on both: "
            f"{identical}; load average at start {load}.",
        ]
    )
    atomic_write_text(stem.with_suffix(".md"), table + "\n")
    print(table)
    if not identical:
        print("WARNING: the two executors stored different numbers", file=sys.stderr)
    print(
        f"serial {serial['runs_per_h']:.0f} runs/h, ray {ray['runs_per_h']:.0f} runs/h "
        f"({workers} workers), speedup {speedup:.2f} (per pair: {row['speedup_per_pair']}; "
        f"median {row['median_pair_speedup']:.2f})"
    )
    return 0 if identical else 1


def _medians(timings: list[dict], runs: int) -> dict[str, float]:
    """Median wall and CPU seconds of several :func:`timed_sweep` results of ``runs`` runs
    each, and the runs/h of the median wall time."""
    wall = statistics.median(t["wall_s"] for t in timings)
    return {
        "wall_s": wall,
        "cpu_s": statistics.median(t["cpu_s"] for t in timings),
        "runs_per_h": runs * 3600 / wall,
    }


if __name__ == "__main__":
    raise SystemExit(main())
