"""Training-step overhead of the nested-quantizer layers vs plain Keras layers (CPU).

Times one training step (forward + backward + Adam update inside a ``tf.function``, warm-up
excluded) of the thesis networks, each built once with plain Keras layers and once with lqs layers:

* ``mlp``: MNIST MLP, Flatten(28x28) -> Dense 128 relu -> Dense 10 softmax; lqs: both ``QDense``.
* ``cnn``: CIFAR-10 CNN, three blocks [Conv 3x3 same -> ReLU -> BatchNorm] x 2 with 32/64/128
  filters, MaxPool 2, Dropout 0.2/0.3/0.4; Flatten -> Dense 128 relu -> BatchNorm -> Dropout 0.5 ->
  Dense 10 softmax; lqs: the six convolutions are ``QConv2D`` (as in the thesis).

at batch 32 and 256, and the lqs layers once more with ``LQS_FUSED_KERNELS=off`` while their step
is traced (flavour ``lqs_tf``: TensorFlow's operations instead of lqs.fused's kernels, the same
numbers). The flavours of a case are timed interleaved (alternating order), so a load change on
the machine hits all of them; the table reports medians and the ratios to plain.
Quantizers use the defaults (scalar scales, threshold scale gradient).

Usage (from the repository root)::

    .venv/bin/python benchmarks/layer_overhead.py            # main run; merges QKeras timings if present
    .venv/bin/python benchmarks/layer_overhead.py --quick    # few reps, for a smoke check
    .venv/bin/python benchmarks/layer_overhead.py --profile  # also: where the lqs time goes (MLP)
    .venv/bin/python benchmarks/layer_overhead.py --threads 1   # one thread, as every training run
    .venv/bin/python benchmarks/layer_overhead.py --case mlp:32 # only the MLP at batch 32
    /tmp/qk-venv/bin/python benchmarks/layer_overhead.py --qkeras   # QKeras timings (separate venv)

Outputs under ``companion.paths.results_root() / "benchmarks"``: ``layer_overhead.csv`` and
``layer_overhead.md`` (main run), ``layer_overhead_qkeras.csv`` (``--qkeras``),
``layer_overhead_profile.{csv,md}`` (``--profile``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from companion.paths import results_root  # noqa: E402

#: (model, batch) -> (warm-up steps, timed reps); the big CNN at batch 256 gets fewer reps
PLAN: dict[tuple[str, int], tuple[int, int]] = {
    ("mlp", 32): (10, 200),
    ("mlp", 256): (10, 100),
    ("cnn", 32): (5, 30),
    ("cnn", 256): (1, 5),
}
QUICK_PLAN = {k: (2, 3) for k in PLAN}
INPUT_SHAPES = {"mlp": (28, 28), "cnn": (32, 32, 3)}


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


def _layer_factories(flavour: str) -> tuple[Callable, Callable]:
    """(dense_factory, conv_factory) for a flavour: plain Keras, lqs nested, or QKeras 4-bit."""
    if flavour == "plain":
        return keras.layers.Dense, keras.layers.Conv2D
    if flavour in ("lqs", "lqs_tf"):
        from lqs.layers import QConv2D, QDense

        return QDense, QConv2D
    if flavour == "qkeras":
        import qkeras

        def q() -> dict:
            return {
                "kernel_quantizer": qkeras.quantized_bits(4, 0, 1),
                "bias_quantizer": qkeras.quantized_bits(4, 0, 1),
            }

        return (lambda *a, **k: qkeras.QDense(*a, **k, **q())), (
            lambda *a, **k: qkeras.QConv2D(*a, **k, **q())
        )
    raise ValueError(
        f"unknown flavour {flavour!r}; allowed: 'plain', 'lqs', 'lqs_tf', 'qkeras'"
    )


def build_model(name: str, flavour: str) -> keras.Model:
    """The thesis MLP or CNN with the flavour's quantized layers (CNN: convolutions only)."""
    dense_q, conv_q = _layer_factories(flavour)
    L = keras.layers
    if name == "mlp":
        return keras.Sequential(
            [
                keras.Input(INPUT_SHAPES["mlp"]),
                L.Flatten(),
                dense_q(128, activation="relu"),
                dense_q(10, activation="softmax"),
            ],
            name=f"mlp_{flavour}",
        )
    if name == "cnn":
        layers: list = [keras.Input(INPUT_SHAPES["cnn"])]
        for filters, drop in ((32, 0.2), (64, 0.3), (128, 0.4)):
            for _ in range(2):
                layers += [
                    conv_q(filters, (3, 3), padding="same", activation="relu"),
                    L.BatchNormalization(),
                ]
            layers += [L.MaxPooling2D(2), L.Dropout(drop)]
        layers += [
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.BatchNormalization(),
            L.Dropout(0.5),
            L.Dense(10, activation="softmax"),
        ]
        return keras.Sequential(layers, name=f"cnn_{flavour}")
    raise ValueError(f"unknown model {name!r}; allowed: 'mlp', 'cnn'")


def make_train_step(model: keras.Model, jit_compile: bool = False) -> Callable:
    """One Adam step (forward, backward, update) as a ``tf.function``; returns the loss."""
    optimizer = keras.optimizers.Adam(1e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def graph_ops(step: Callable, args: tuple) -> int:
    """Operations in the traced graph of a training step (before Grappler's rewrites)."""
    return len(step.get_concrete_function(*args).graph.get_operations())


def batch_for(name: str, batch: int, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *INPUT_SHAPES[name]), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    return tf.constant(x), tf.constant(y)


def time_interleaved(
    steps: dict[str, Callable],
    args: tuple,
    warmup: int,
    reps: int,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall milliseconds per call of each step function, warm-up excluded, alternating the order.

    If ``cpu`` is a dict, it receives the process CPU milliseconds (all threads, ``time.process_time``)
    of each call: less sensitive than wall time to other processes competing for the cores.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn(*args).numpy()
    times: dict[str, list[float]] = {k: [] for k in steps}
    if cpu is not None:
        cpu.update({k: [] for k in steps})
    names = list(steps)
    for r in range(reps):
        for k in names if r % 2 == 0 else reversed(names):
            c0 = time.process_time()
            t0 = time.perf_counter()
            steps[k](*args).numpy()
            times[k].append((time.perf_counter() - t0) * 1e3)
            if cpu is not None:
                cpu[k].append((time.process_time() - c0) * 1e3)
    return times


def _iqr(xs: list[float]) -> float:
    q = np.percentile(xs, [25, 75])
    return float(q[1] - q[0])


# ------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # 0 = not set through the API: TF_NUM_*_THREADS (what every training run pins), else all cores
    intra = tf.config.threading.get_intra_op_parallelism_threads() or int(
        os.environ.get("TF_NUM_INTRAOP_THREADS", 0)
    )
    inter = tf.config.threading.get_inter_op_parallelism_threads() or int(
        os.environ.get("TF_NUM_INTEROP_THREADS", 0)
    )
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "intra_op_threads": f"{intra} (0 = TF default: all cores)",
        "inter_op_threads": f"{inter} (0 = TF default)",
        "load_average_at_start": load,
        "fused_kernels": _fused_status(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _fused_status() -> str:
    """Whether lqs's fused kernels are on (the default flavour ``lqs`` uses them)."""
    from lqs import fused

    mode = fused.mode()
    return f"{mode} ({'loaded' if fused.kernels() is not None else 'not used'})"


def out_dir() -> Path:
    d = results_root() / "benchmarks"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------


#: flavour -> LQS_FUSED_KERNELS while its step is traced (lqs_tf: the same layers without
#: the fused kernels of lqs.fused, i.e. TensorFlow's operations only)
FUSED_MODES: dict[str, str] = {"lqs_tf": "off"}


@contextlib.contextmanager
def fused_mode(flavour: str):
    """Set ``LQS_FUSED_KERNELS`` for ``flavour`` (see :data:`FUSED_MODES`) inside the block."""
    old = os.environ.get("LQS_FUSED_KERNELS")
    if flavour in FUSED_MODES:
        os.environ["LQS_FUSED_KERNELS"] = FUSED_MODES[flavour]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LQS_FUSED_KERNELS", None)
        else:
            os.environ["LQS_FUSED_KERNELS"] = old


def run_cases(
    flavours: tuple[str, ...], plan: dict, log: Callable = print
) -> pd.DataFrame:
    """Median step time of every (model, batch) for each flavour, timed interleaved."""
    rows = []
    for (name, batch), (warmup, reps) in plan.items():
        keras.utils.set_random_seed(0)
        steps = {f: make_train_step(build_model(name, f)) for f in flavours}
        cpu: dict[str, list[float]] = {}
        args = batch_for(name, batch)
        for f in flavours:  # trace now, under the flavour's kernel choice
            with fused_mode(f):
                steps[f].get_concrete_function(*args)
        times = time_interleaved(steps, args, warmup, reps, cpu=cpu)
        row = {"model": name, "batch": batch, "warmup": warmup, "reps": reps}
        for f in flavours:
            row[f"{f}_ops"] = graph_ops(steps[f], args)
            row[f"{f}_ms"] = statistics.median(times[f])
            row[f"{f}_iqr_ms"] = _iqr(times[f])
            row[f"{f}_min_ms"] = min(times[f])
            row[f"{f}_cpu_ms"] = statistics.median(cpu[f])
        rows.append(row)
        log(
            "  ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
            )
        )
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame) -> str:
    cols = [
        "model",
        "batch",
        "reps",
        "plain_ms",
        "lqs_ms",
        "ratio",
        "ratio_min",
        "ratio_cpu",
        "ops",
    ]
    heads = [
        "model",
        "batch",
        "reps",
        "plain ms",
        "lqs ms",
        "lqs / plain",
        "(of minima)",
        "(of CPU time)",
        "graph ops plain / lqs",
    ]
    if "lqs_tf_ms" in df:
        cols += ["lqs_tf_ms", "lqs_tf_ratio_cpu"]
        heads += ["lqs, TF ops ms", "lqs, TF ops / plain (of CPU time)"]
    if "qkeras_ms" in df:
        cols += ["qkeras_ms", "qkeras_ratio", "qkeras_ratio_cpu"]
        heads += ["QKeras ms", "QKeras / plain", "(of CPU time)"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            if c == "ops":
                cells.append(f"{int(r['plain_ops'])} / {int(r['lqs_ops'])}")
            elif c in ("model",):
                cells.append(str(v))
            elif c in ("batch", "reps"):
                cells.append(str(int(v)))
            elif "ratio" in c:
                cells.append("-" if pd.isna(v) else f"{v:.2f}")
            else:
                cells.append("-" if pd.isna(v) else f"{v:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def select_plan(quick: bool, cases: list[str] | None = None) -> dict:
    """The (model, batch) plan, optionally restricted to ``cases`` given as ``"mlp:32"``."""
    plan = QUICK_PLAN if quick else PLAN
    if not cases:
        return plan
    wanted = set()
    for case in cases:
        name, _, batch = case.partition(":")
        key = (name, int(batch)) if batch.isdigit() else None
        if key not in plan:
            allowed = ", ".join(f"{m}:{b}" for m, b in plan)
            raise ValueError(f"unknown case {case!r}; allowed: {allowed}")
        wanted.add(key)
    return {k: v for k, v in plan.items() if k in wanted}


def main_run(quick: bool, cases: list[str] | None = None) -> pd.DataFrame:
    env = environment()
    print("environment:", env)
    df = run_cases(("plain", "lqs", "lqs_tf"), select_plan(quick, cases))
    df["lqs_tf_ratio_cpu"] = df["lqs_tf_cpu_ms"] / df["plain_cpu_ms"]
    df["ratio"] = df["lqs_ms"] / df["plain_ms"]
    df["ratio_min"] = df["lqs_min_ms"] / df["plain_min_ms"]
    df["ratio_cpu"] = df["lqs_cpu_ms"] / df["plain_cpu_ms"]
    qk_path = out_dir() / "layer_overhead_qkeras.csv"
    qk_note = f"QKeras: not run (no {qk_path.name}; see benchmarks/README.md)"
    if qk_path.exists():
        qk = pd.read_csv(qk_path)
        # the QKeras ratio uses the plain timing of the QKeras run (same process, same interleaving)
        qk = qk.assign(qkeras_ratio=qk["qkeras_ms"] / qk["plain_ms"])
        if "qkeras_cpu_ms" in qk:
            qk["qkeras_ratio_cpu"] = qk["qkeras_cpu_ms"] / qk["plain_cpu_ms"]
        else:
            qk["qkeras_ratio_cpu"] = float("nan")
        qk = qk.rename(columns={"plain_ms": "qkeras_run_plain_ms"})
        qk = qk[
            [
                "model",
                "batch",
                "qkeras_ms",
                "qkeras_run_plain_ms",
                "qkeras_ratio",
                "qkeras_ratio_cpu",
            ]
        ]
        df = df.merge(qk, on=["model", "batch"], how="left")
        qk_note = (
            f"QKeras ({qk_path.name}): QDense/QConv2D with quantized_bits(4, 0, 1) for kernel and bias, "
            "timed in a separate venv; its ratio divides by the plain Keras time measured in that same run"
        )
    for k, v in env.items():
        df[k] = v
    d = out_dir()
    df.to_csv(d / "layer_overhead.csv.tmp", index=False)
    os.replace(d / "layer_overhead.csv.tmp", d / "layer_overhead.csv")
    md = [
        "# Training-step time: lqs layers vs plain Keras (CPU)",
        "",
        "One Adam training step (forward + backward + update, `tf.function`), median over the reps after",
        'warm-up; lqs and plain timed interleaved. "lqs": the default (lqs.fused\'s kernels where',
        'they apply); "lqs, TF ops": the same layers with LQS_FUSED_KERNELS=off (the same numbers).',
        "MLP: both Dense layers quantized; CNN: the six",
        'convolutions quantized (thesis setup). "(of minima)": the ratio of the fastest reps;',
        '"(of CPU time)": the ratio of the median process CPU time per step (all threads), less',
        "sensitive than wall time to other load on the machine.",
        "",
        markdown_table(df),
        "",
        qk_note,
        "",
        "Environment: " + "; ".join(f"{k}: {v}" for k, v in env.items()),
        "",
    ]
    text = "\n".join(md)
    _write_atomic(d / "layer_overhead.md", text)
    print()
    print(text)
    print(f"wrote {d / 'layer_overhead.csv'} and {d / 'layer_overhead.md'}")
    return df


def qkeras_run(quick: bool) -> pd.DataFrame:
    import qkeras

    env = environment()
    print("environment:", env, "qkeras:", getattr(qkeras, "__version__", "?"))
    df = run_cases(("plain", "qkeras"), QUICK_PLAN if quick else PLAN)
    df["qkeras_version"] = getattr(qkeras, "__version__", "?")
    for k, v in env.items():
        df[k] = v
    path = out_dir() / "layer_overhead_qkeras.csv"
    df.to_csv(path.with_name(path.name + ".tmp"), index=False)
    os.replace(path.with_name(path.name + ".tmp"), path)
    print(df[["model", "batch", "plain_ms", "qkeras_ms"]].to_string(index=False))
    print(f"wrote {path}")
    return df


# ------------------------------------------------------------------------------------------
# profile: where the lqs time goes (MLP)
# ------------------------------------------------------------------------------------------


def literal_nested_quantize(
    p, scale, threshold: float, *, aggregate: str = "mean", all_above_vote: bool = True
):
    """The nested quantizer with its backward written out literally (DESIGN.md), no shortcuts.

    Same forward and bit for bit the same gradients as ``lqs.quantizers.nested_quantize``
    (``tests/test_quantizers.py`` checks the library against the same form):
    ``where(P_rec == 0, eps, |P_rec|)``, the ``tanh`` of every vote, "no ratio below the
    threshold" as a full-size ``reduce_any``. ``--profile`` times it against the library to
    show what the library's shortcuts save.
    """
    from lqs.quantizers import EPS, group_axes

    p = tf.convert_to_tensor(p)
    scale = tf.cast(tf.convert_to_tensor(scale), p.dtype)
    axes = group_axes(p.shape, scale.shape)
    count = 1.0 if aggregate == "mean" else float(np.prod([p.shape[a] for a in axes]))
    reduce = tf.reduce_mean if aggregate == "mean" else tf.reduce_sum

    @tf.custom_gradient
    def _quantize(p_in, s_in):
        p_q = tf.floor(p_in / s_in)
        p_rec = p_q * s_in

        def grad(upstream):
            lam = tf.constant(threshold, upstream.dtype)
            denom = tf.where(p_rec == 0, tf.constant(EPS, p_rec.dtype), tf.abs(p_rec))
            ratio = tf.abs(upstream) / denom
            below = ratio < lam
            vote = tf.where(below, tf.tanh(lam - ratio), tf.zeros_like(ratio))
            group = -reduce(vote, axis=axes, keepdims=True)
            if all_above_vote:
                none = tf.logical_not(tf.reduce_any(below, axis=axes, keepdims=True))
                group = tf.where(none, -tf.tanh(lam) * count, group)
            m = tf.reduce_max(tf.abs(p_q), axis=axes, keepdims=True)
            return upstream, tf.reshape(m * group, scale.shape)

        return p_rec, grad

    return _quantize(p, scale)


def profile_run(quick: bool) -> pd.DataFrame:
    """Decompose the MLP overhead: quantizers alone, literal-equation backward, STE, jit_compile.

    Medians of wall and process CPU time per call (CPU time: the stable one on a shared machine).
    """
    import lqs.quantizers as lq
    from lqs.layers import QDense

    reps = 5 if quick else 100
    rows = []
    current = lq.nested_quantize

    # 1. the quantizers alone: forward + backward of both MLP kernels and biases (~102k elements)
    shapes = [(784, 128), (128,), (128, 10), (10,)]
    params = [tf.Variable(tf.random.normal(s, stddev=0.05)) for s in shapes]
    scales = [tf.Variable(tf.fill((1,), 0.01)) for _ in shapes]

    def quantizer_fn(kind: str):
        @tf.function
        def fn():
            with tf.GradientTape() as tape:
                if kind == "nested (lqs)":
                    outs = [current(p, s, 1e-9) for p, s in zip(params, scales)]
                elif kind == "nested (literal equations)":
                    outs = [
                        literal_nested_quantize(p, s, 1e-9)
                        for p, s in zip(params, scales)
                    ]
                elif kind == "ste":
                    outs = [lq.ste_quantize(p, s) for p, s in zip(params, scales)]
                else:
                    outs = [tf.identity(p) for p in params]
                total = tf.add_n([tf.reduce_sum(o) for o in outs])
            grads = tape.gradient(total, params + scales, unconnected_gradients="zero")
            return tf.add_n([tf.reduce_sum(g) for g in grads])

        return fn

    kinds = ("identity", "ste", "nested (literal equations)", "nested (lqs)")
    cpu: dict[str, list[float]] = {}
    qt = time_interleaved(
        {k: quantizer_fn(k) for k in kinds}, (), warmup=5, reps=reps, cpu=cpu
    )
    for k, v in qt.items():
        rows.append(
            {
                "what": f"quantizers alone, 4 MLP tensors fwd+bwd: {k}",
                "batch": 0,
                "ms": statistics.median(v),
                "cpu_ms": statistics.median(cpu[k]),
            }
        )

    # 2. whole MLP step: plain vs lqs variants (the literal backward is patched in for its model only)
    def mlp_lqs(**kw):
        return keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Flatten(),
                QDense(128, activation="relu", **kw),
                QDense(10, activation="softmax", **kw),
            ],
        )

    def traced_with(fn, model):
        step = make_train_step(model)

        def run(
            x, y
        ):  # the patch only matters while tracing; keep it for every call to be safe
            lq.nested_quantize = fn
            try:
                return step(x, y)
            finally:
                lq.nested_quantize = current

        return run

    for batch in (32, 256):
        keras.utils.set_random_seed(0)
        steps = {
            "plain": make_train_step(build_model("mlp", "plain")),
            "lqs": make_train_step(mlp_lqs()),
            "lqs, literal-equation backward": traced_with(
                literal_nested_quantize, mlp_lqs()
            ),
            "lqs, scale_gradient=ste": make_train_step(mlp_lqs(scale_gradient="ste")),
            "plain, jit_compile": make_train_step(
                build_model("mlp", "plain"), jit_compile=True
            ),
            "lqs, jit_compile": make_train_step(mlp_lqs(), jit_compile=True),
        }
        cpu = {}
        t = time_interleaved(
            steps, batch_for("mlp", batch), warmup=5, reps=reps, cpu=cpu
        )
        for k, v in t.items():
            rows.append(
                {
                    "what": f"MLP train step: {k}",
                    "batch": batch,
                    "ms": statistics.median(v),
                    "cpu_ms": statistics.median(cpu[k]),
                }
            )
    df = pd.DataFrame(rows)
    plain = df.loc[df["what"] == "MLP train step: plain"].set_index("batch")
    for col in ("ms", "cpu_ms"):
        base = df["batch"].map(plain[col])
        df[f"{col}_vs_plain"] = df[col] / base  # NaN for the quantizer-only rows
    d = out_dir()
    df.to_csv(d / "layer_overhead_profile.csv", index=False)

    def ratio(v: float) -> str:
        return "-" if np.isnan(v) else f"{v:.2f}"

    text = "\n".join(
        [
            "| what | batch | ms | / plain | CPU ms | / plain (CPU) |",
            "|---|---|---|---|---|---|",
        ]
        + [
            f"| {r.what} | {r.batch or '-'} | {r.ms:.3f} | {ratio(r.ms_vs_plain)} "
            f"| {r.cpu_ms:.3f} | {ratio(r.cpu_ms_vs_plain)} |"
            for r in df.itertuples()
        ]
    )
    _write_atomic(d / "layer_overhead_profile.md", text + "\n")
    print(text)
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qkeras",
        action="store_true",
        help="time QKeras layers (run from a venv with qkeras-v3)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also decompose the MLP overhead"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 warm-ups and 3 reps per case (smoke check)",
    )
    parser.add_argument(
        "--case",
        action="append",
        metavar="MODEL:BATCH",
        help="time only this case (repeatable), e.g. --case mlp:32; default: all four",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra-/inter-op threads (1: what every training run uses, "
        "companion.engine.executors.THREADS; default 0: TensorFlow's default, all cores)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.qkeras:
        qkeras_run(args.quick)
        return 0
    main_run(args.quick, args.case)
    if args.profile:
        profile_run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
