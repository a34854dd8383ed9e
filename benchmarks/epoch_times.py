"""Seconds per training epoch of the thesis networks on this machine (sizes the ``cpu`` profile).

For each network at the image size and training-set size the ``cpu`` profile uses, flavours
``fp32`` and ``nested``, batch 32 (thesis) and 128, this script times training steps and
extrapolates to one epoch:

=========  ==========  ===============  ==========================================================
arch       input       train images     why
=========  ==========  ===============  ==========================================================
mlp        28x28x1     8000             MNIST (10k subset) / Fashion-MNIST MLP runs
cnn        28x28x1     10000            Fashion-MNIST: the offline stand-in for the conv experiments
cnn        32x32x3     10000            CIFAR-10, when its archive is present
resnet     64x64x3     2000             Imagenette at companion.data.IMAGENETTE_DEFAULT_SIZE (64 px)
=========  ==========  ===============  ==========================================================

Method: synthetic random images and labels (timing only -- no accuracy is measured); the model is
built with :func:`lqs.models.build_model`, compiled like :func:`companion.engine.experiment.run` (Adam,
sparse categorical cross-entropy, accuracy) and trained for a few warm-up steps (graph tracing,
reported separately as ``first_call_s``), then for ``steps`` timed steps; ``epoch_s`` =
seconds per step x steps per epoch (``ceil(n / batch)``). ``eval_s_per_1k`` is the inference time
for 1000 images (the per-epoch evaluation of the validation split costs ``n_val / 1000``
times that, the final evaluations ``(n_train + n_val + n_test) / 1000`` times), ``stats_s`` one call of the per-epoch quantizer statistics of
:class:`companion.engine.experiment.EpochStats`. ``cpu_s_per_step`` is process CPU time per step (all
threads; ``epoch_cpu_s`` per epoch) and ``load1`` the 1-minute load average when the case ran: wall times on a busy machine
are inflated, CPU times much less.

Writes ``results/benchmarks/epoch_times.csv`` and ``.md``. ``--quick`` times fewer steps.
Usage: ``python benchmarks/epoch_times.py [--quick] [--target-seconds 3]``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from companion import paths
from companion.engine.experiment import quantizer_stats
from lqs.models import build_model

#: (arch, input shape, training images of the cpu profile, label)
CASES = (
    ("mlp", (28, 28, 1), 8000, "MNIST/Fashion-MNIST MLP"),
    ("cnn", (28, 28, 1), 10000, "Fashion-MNIST CNN"),
    ("cnn", (32, 32, 3), 10000, "CIFAR-10 CNN"),
    ("resnet", (64, 64, 3), 2000, "Imagenette ResNet (64 px)"),
)
FLAVOURS = ("fp32", "nested")
BATCHES = (32, 128)
DATA_LABEL = "synthetic random data (timing only)"


def _data(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n).astype(
        np.int64
    )


def time_case(
    arch, shape, n_train, flavour, batch, target_s, max_steps, measure_eval=True
):
    keras.backend.clear_session()
    model = build_model(arch, flavour, input_shape=shape, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    steps_per_epoch = math.ceil(n_train / batch)
    warm = 3
    x, y = _data(shape, batch * warm)
    t0 = time.perf_counter()
    model.fit(
        x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True
    )  # traces the train step
    first_call = time.perf_counter() - t0
    # probe, then choose the number of timed steps so that the timing takes about target_s
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
    per_step = (time.perf_counter() - t0) / warm
    steps = int(min(steps_per_epoch, max_steps, max(5, target_s / max(per_step, 1e-4))))
    x, y = _data(shape, batch * steps, seed=1)
    c0, t0 = time.process_time(), time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    eval_1k = math.nan
    if (
        measure_eval
    ):  # inference (validation / evaluation) throughput, after a warm-up call
        xe, ye = _data(shape, 1024, seed=2)
        model.evaluate(xe[:256], ye[:256], batch_size=256, verbose=0)
        t0 = time.perf_counter()
        model.evaluate(xe, ye, batch_size=256, verbose=0)
        eval_1k = (time.perf_counter() - t0) / len(xe) * 1000
    t0 = time.perf_counter()
    quantizer_stats(model)
    stats_s = time.perf_counter() - t0
    return {
        "arch": arch,
        "input": "x".join(map(str, shape)),
        "flavour": flavour,
        "batch_size": batch,
        "n_train": n_train,
        "steps_per_epoch": steps_per_epoch,
        "timed_steps": steps,
        "extrapolated": steps < steps_per_epoch,
        "s_per_step": wall / steps,
        "cpu_s_per_step": cpu / steps,
        "epoch_s": wall / steps * steps_per_epoch,
        "epoch_cpu_s": cpu / steps * steps_per_epoch,
        "first_call_s": first_call,
        "eval_s_per_1k": eval_1k,
        "stats_s": stats_s,
        "load1": os.getloadavg()[0],
    }


def to_markdown(df: pd.DataFrame, meta: dict) -> str:
    lines = [
        "# Seconds per training epoch (cpu-profile data sizes)",
        "",
        f"Data: {DATA_LABEL}. Machine: {meta['platform']}, {meta['cpus']} CPUs, TensorFlow {meta['tf']}, "
        f"Keras {meta['keras']}; {meta['date']}.",
        "`epoch_s` = measured seconds per step x steps per epoch"
        + (
            " (extrapolated from `timed_steps` steps)"
            if df["extrapolated"].any()
            else ""
        )
        + "; excludes graph tracing (`first_call_s`, once per run) and the per-epoch validation "
        "(`eval_s_per_1k` seconds per 1000 validation images). `load1`: 1-minute load average during the case "
        "(> number of CPUs means the machine was shared and wall times are inflated). `epoch CPU s`: process "
        "CPU seconds (all threads) per epoch; on an otherwise idle machine with N cores the wall time of an "
        "epoch lies between `epoch CPU s / N` and `epoch CPU s`.",
        "",
        "| model | input | flavour | batch | train images | epoch_s (wall) | epoch CPU s | s/step | CPU s/step | first call s | eval s / 1k | timed steps | load1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.arch} | {r.input} | {r.flavour} | {r.batch_size} | {r.n_train} | {r.epoch_s:.1f} | {r.epoch_cpu_s:.1f} | "
            f"{r.s_per_step:.4f} | {r.cpu_s_per_step:.4f} | {r.first_call_s:.1f} | {r.eval_s_per_1k:.2f} | "
            f"{r.timed_steps}/{r.steps_per_epoch} | {r.load1:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="time fewer steps (about 1 s per case)"
    )
    parser.add_argument(
        "--target-seconds", type=float, default=3.0, help="timed seconds per case"
    )
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default results/benchmarks)",
    )
    args = parser.parse_args(argv)
    target = 1.0 if args.quick else args.target_seconds
    out = args.out or (paths.results_root() / "benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.perf_counter()
    for arch, shape, n, label in CASES:
        for flavour in FLAVOURS:
            for batch in BATCHES:
                # inference does not depend on the training batch size: measured once per model
                row = time_case(
                    arch,
                    shape,
                    n,
                    flavour,
                    batch,
                    target,
                    args.max_steps,
                    measure_eval=batch == BATCHES[0],
                )
                if batch != BATCHES[0]:
                    row["eval_s_per_1k"] = rows[-1]["eval_s_per_1k"]
                row["case"] = label
                rows.append(row)
                print(
                    f"{label:28s} {flavour:7s} batch {batch:4d}: {row['epoch_s']:7.1f} s/epoch "
                    f"({row['timed_steps']}/{row['steps_per_epoch']} steps timed, load {row['load1']:.1f})",
                    flush=True,
                )
    df = pd.DataFrame(rows)
    meta = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tf": tf.__version__,
        "keras": keras.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    df["data"] = DATA_LABEL
    df["platform"] = meta["platform"]
    df["cpus"] = meta["cpus"]
    df.to_csv(out / "epoch_times.csv", index=False)
    (out / "epoch_times.md").write_text(to_markdown(df, meta))
    print(
        f"wrote {out / 'epoch_times.csv'} and {out / 'epoch_times.md'} in {time.perf_counter() - t_start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
