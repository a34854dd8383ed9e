"""Ray workers pinned to a core each against workers the scheduler places: the same sweep, alternately.

Trains the batch of runs of ``executor_throughput.py`` (default: 8 nested MLP runs of 2,000
steps) on a local Ray instance with one worker per core, ``--rounds`` times with
``LQS_PIN_WORKERS=on`` and as often with ``off``, alternating which comes first; each sweep gets a
new Ray instance (a worker keeps its core while it lives) and an empty temporary store. Ray's
start and the workers' TensorFlow import are not timed. Reports the median wall and CPU seconds of
each, the wall-time ratio of every round (unpinned / pinned: above 1, pinning is faster) and
whether all sweeps stored the same numbers. Writes ``results/benchmarks/worker_pinning_<arch>.{csv,md}``.
Needs Fashion-MNIST (``make data``) and at least two cores. Usage::

    .venv/bin/python benchmarks/worker_pinning.py               # MLP, 3 rounds: about 4 minutes here
    .venv/bin/python benchmarks/worker_pinning.py --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import executor_throughput as throughput  # noqa: E402
import pandas as pd  # noqa: E402

from companion.engine import executors  # noqa: E402
from companion.paths import results_root  # noqa: E402
from lqs.fileio import atomic_write_text  # noqa: E402


def pinned_sweep(cfgs: list[dict], pin: str, folder: Path) -> dict:
    """One sweep of ``cfgs`` on a new local Ray instance (one worker per core) with
    ``LQS_PIN_WORKERS=pin``: :func:`executor_throughput.timed_sweep`'s timings, whether the
    workers were pinned and how many there were."""
    os.environ[executors.ENV_PIN_WORKERS] = pin
    ray_ex = executors.RayExecutor()
    throughput.start_ray(ray_ex)  # not timed
    pinned, workers = ray_ex.pins_cores, ray_ex.workers
    try:
        timed = throughput.timed_sweep(cfgs, ray_ex, folder)
        return {**timed, "pinned": pinned, "workers": workers}
    finally:
        executors.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(throughput.DEFAULTS), default="mlp")
    parser.add_argument("--rounds", type=int, default=3, help="pinned/unpinned pairs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or len(os.sched_getaffinity(0)) < 2:
        parser.error("needs --rounds >= 1 and at least two usable cores")
    import ray

    ray.cloudpickle.register_pickle_by_value(throughput)  # workers cannot import it
    cfgs = throughput.configs(args.arch, *throughput.DEFAULTS[args.arch])
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    times: dict[str, list[dict]] = {"on": [], "off": []}
    identical = True
    with tempfile.TemporaryDirectory(prefix="lqs-pin-") as tmp:
        first = None
        for i in range(args.rounds):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for pin in order:
                t = pinned_sweep(cfgs, pin, Path(tmp) / f"{pin}-{i}")
                times[pin].append(t)
                first = first or t["store"]
                identical = identical and throughput.same_numbers(first, t["store"])
            on, off = times["on"][-1], times["off"][-1]
            print(
                f"round {i + 1}/{args.rounds}: pinned {on['wall_s']:.1f} s wall "
                f"({on['cpu_s']:.1f} s CPU), unpinned {off['wall_s']:.1f} s wall "
                f"({off['cpu_s']:.1f} s CPU), ratio {off['wall_s'] / on['wall_s']:.2f}",
                flush=True,
            )
    os.environ.pop(executors.ENV_PIN_WORKERS)
    if not all(t["pinned"] for t in times["on"]) or any(
        t["pinned"] for t in times["off"]
    ):
        print("WARNING: pinning did not follow LQS_PIN_WORKERS", file=sys.stderr)
        return 1
    ratios = [
        off["wall_s"] / on["wall_s"] for on, off in zip(*times.values(), strict=True)
    ]
    row = {
        "arch": args.arch,
        "runs": len(cfgs),
        "rounds": args.rounds,
        "workers": times["on"][0]["workers"],
    }
    for pin, label in (("on", "pinned"), ("off", "unpinned")):
        for key in ("wall_s", "cpu_s"):
            row[f"{label}_{key}"] = statistics.median(t[key] for t in times[pin])
    row |= {
        "ratio_per_round": " ".join(f"{r:.2f}" for r in ratios),
        "median_ratio": statistics.median(ratios),
        "same_numbers": identical,
        "load_average_at_start": load,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    stem = results_root() / "benchmarks" / f"worker_pinning_{args.arch}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stem.with_suffix(".csv"), pd.DataFrame([row]).to_csv(index=False))
    table = "\n".join(
        [
            f"| Ray workers (median of {args.rounds}) | wall s | CPU s |",
            "|---|---|---|",
            f"| pinned, one core each | {row['pinned_wall_s']:.1f} | {row['pinned_cpu_s']:.1f} |",
            f"| unpinned | {row['unpinned_wall_s']:.1f} | {row['unpinned_cpu_s']:.1f} |",
            "",
            f"{throughput.describe(cfgs)} per sweep; unpinned / pinned wall time per round: "
            f"{row['ratio_per_round']} (median {row['median_ratio']:.2f}); same numbers in "
            f"every sweep: {identical}; load average at start {load}.",
        ]
    )
    atomic_write_text(stem.with_suffix(".md"), table + "\n")
    print(table)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
