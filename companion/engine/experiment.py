"""Train and evaluate one configuration, store it, and run sweeps that resume.

:func:`run` takes one configuration (:mod:`companion.engine.config`), returns one flat, tidy record and keeps it
in the results store (:mod:`companion.engine.store`): a configuration whose complete record exists is never
trained again. :func:`sweep` runs a list of configurations with a progress bar and returns one
row per configuration; an interrupted sweep resumes where it stopped, because every finished run
is already stored. :func:`load_model` and :func:`load_history` give later analyses the trained
network and its per-epoch history.

Both plan, execute and store: the configurations become jobs (validated once; a post-training
run's FP32 parent first; stored runs skipped); an executor (:mod:`companion.engine.executors`:
``serial`` in this process, or ``ray``, one Ray task per run) trains the missing ones with
:func:`train_job`, which returns the record, history and model bytes without touching the store;
this process stores each as it arrives. The record is the same whichever executor trained it.

What one run does (flavours and modes: :mod:`companion.engine.config`):

1. ``keras.utils.set_random_seed(seed)`` and, with ``deterministic`` (default),
   ``tf.config.experimental.enable_op_determinism()``: the same configuration gives identical
   numbers on the same CPU machine.
2. Data: ``companion.data.load_with_info(dataset, "train", limit=train_limit, image_size=image_size,
   seed=seed)`` and the same for ``"test"`` with ``test_limit``. Of the ``n`` training images,
   :func:`validation_split` holds out ``round(validation_fraction * n)`` as the validation split
   (class-stratified, drawn with a NumPy generator seeded from ``seed``); the network trains on the
   rest only. The split depends only on the dataset, ``train_limit``, ``validation_fraction`` and
   ``seed``, so every method of one seed -- and the FP32 parent of a post-training or ptq run --
   trains on the same images and is validated on the same held-out ones (the pairing across
   methods relies on it). ``validation_fraction = 0``: no validation split.
3. Model: :func:`lqs.models.build_model`. ``post_training`` mode first obtains the FP32 parent
   (:func:`companion.engine.config.parent_config`: a cached ``fp32`` run of ``pretrain_epochs``; all
   post-training runs of a sweep share it), loads its saved model and copies its weights
   (:func:`lqs.models.copy_float_weights`). ``loss_terms`` wraps the network with
   :func:`lqs.losses.with_loss_terms`.
4. Training: Adam (or SGD with momentum 0.9) with ``lr`` (changed at epoch boundaries by
   ``lr_steps``, :func:`companion.engine.config.lr_at`), sparse categorical cross-entropy,
   accuracy, :data:`STEPS_PER_EXECUTION` batches per call;
   ``fit(batch_size, epochs, shuffle=True, validation_data=validation split)`` (none without a
   split; every ``validation_every`` epochs, Keras's ``validation_freq``). The Keras ``loss`` includes L2 and loss-term penalties. A callback records, per epoch
   (epoch 0 = before training), the Keras metrics -- its ``val_*`` columns are the validation split,
   never the test set -- and, per quantized parameter, the scale mean/min/max, max|P_q|, the number
   of unique P_q values and the bit widths (:func:`lqs.memory.tensor_bits`).
5. ``ptq`` does not train: it applies :func:`lqs.baselines.ptq_minmax` to the FP32 parent and
   evaluates the result on the validation split (history row 0, ``val_*``).
6. Evaluation of the final model, once, on the training images, the validation split
   (``val_accuracy``, ``val_loss``) and the test set (``test_accuracy``, ``test_loss``);
   ``best_epoch`` / ``best_val_accuracy`` are the first trained epoch with the highest validation
   accuracy (ptq: epoch 0); without a validation split all validation columns are ``None``. Select
   on validation, report the test numbers of the selected configuration. Memory from
   :func:`lqs.memory.model_summary` (columns ``mem_*``).

The record holds every validated configuration value (keys that do not act are ``None``), the
``config_hash``, metrics, memory, timings, dataset provenance and package versions; see
:data:`RECORD_COLUMNS`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import platform
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import lqs
from companion import data as lqs_data
from companion import paths
from companion.engine.config import (
    CODE_VERSION,
    KEYS,
    config_hash,
    lr_at,
    parent_config,
    validate_config,
)
from companion.engine.executors import (
    Executor,
    Failure,
    Job,
    RayExecutor,
    SweepFailed,
    get_executor,
)
from companion.engine.store import STORE_FIELDS, RunStore, default_store
from lqs import memory as lqs_memory
from lqs import models as lqs_models

__all__ = [
    "RECORD_COLUMNS",
    "VOLATILE_COLUMNS",
    "stable_values",
    "HISTORY_STATS",
    "STEPS_PER_EXECUTION",
    "run",
    "sweep",
    "train_job",
    "ParentModel",
    "RunResult",
    "SweepFailed",
    "load_model",
    "load_history",
    "history_long",
    "quantizer_stats",
    "EpochStats",
    "validation_split",
]

log = logging.getLogger(__name__)

#: per quantized parameter statistics logged in the history (``<layer>/<parameter>/<stat>``)
HISTORY_STATS: tuple[str, ...] = (
    "scale_mean",
    "scale_min",
    "scale_max",
    "max_abs_q",
    "unique_values",
    "bits_mean",
    "bits_max",
)

#: batches per call into TensorFlow in ``fit`` and ``evaluate`` (Keras ``steps_per_execution``):
#: fewer trips through Python per step (measured on the MLP at batch 32 with one thread:
#: 2.9 -> 1.7 ms CPU per step). Records are bit-identical to one batch per call (checked for
#: every flavour, the CNN with dropout and batch norm, post-training and ptq runs): batches,
#: shuffling and dropout seeds do not change, and :class:`EpochStats` uses epoch hooks only.
STEPS_PER_EXECUTION = 64

_RESULT_COLUMNS = (
    "config_hash",
    "parent_hash",
    "train_accuracy",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "val_accuracy",
    "val_loss",
    "best_val_accuracy",
    "best_epoch",
    "epochs_trained",
    "diverged",
    "penalty_inverse",
    "penalty_max_bin",
    "penalty_deviation",
    "bits_per_param",
    "compression",
    "n_quantized_layers",
    "train_seconds",
    "eval_seconds",
    "seconds_per_epoch",
    "dataset_label",
    "dataset_source",
    "dataset_is_subset",
    "dataset_heldout",
    "dataset_note",
    "dataset_upstream_match",
    "n_train",
    "n_val",
    "n_test",
    "image_shape",
    "num_classes",
    "lqs_version",
    "code_version",
    "python_version",
    "tf_version",
    "keras_version",
    "numpy_version",
    "platform",
    "device",
    "created",
)
_MEM_KEYS = (
    "n_params",
    "n_scales",
    "n_layers",
    "total_bits",
    "fp32_bits",
    "bytes",
    "fp32_bytes",
    "kib",
    "fp32_kib",
    "bits_per_param",
    "compression",
    "n_quantized_params",
    "quantized_fraction",
    "max_bits",
    "q_total_bits",
    "q_fp32_bits",
    "q_bits_per_param",
    "q_compression",
    "total_bits_twos",
    "bytes_twos",
    "kib_twos",
    "bits_per_param_twos",
    "compression_twos",
    "max_bits_twos",
    "q_total_bits_twos",
    "q_bits_per_param_twos",
    "q_compression_twos",
)
#: the columns every record has (after the configuration keys, :data:`companion.engine.config.KEYS`)
RECORD_COLUMNS: tuple[str, ...] = _RESULT_COLUMNS + tuple(f"mem_{k}" for k in _MEM_KEYS)
#: record values that differ between two trainings of one configuration: wall times, the
#: creation time and the store's checksums (a saved model file embeds its save time)
VOLATILE_COLUMNS: frozenset[str] = frozenset(
    {
        "train_seconds",
        "eval_seconds",
        "seconds_per_epoch",
        "created",
        "model_sha256",
        "history_sha256",
        "record_sha256",
    }
)


def stable_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without :data:`VOLATILE_COLUMNS`: what two identical runs share."""
    return {k: v for k, v in record.items() if k not in VOLATILE_COLUMNS}


# --------------------------------------------------------------------------------------------
# per-epoch statistics


def _network(model: keras.Model) -> keras.Model:
    """The plain network inside a :class:`lqs.losses.LossTermsModel` (or the model itself)."""
    return getattr(model, "network", model)


def _quantized_layers(model: keras.Model) -> list:
    return [
        layer
        for layer in _network(model).layers
        if lqs_memory.is_quantized_layer(layer)
    ]


def quantizer_stats(model: keras.Model) -> dict[str, float]:
    """Statistics of every quantized parameter: ``{"<layer>/<parameter>/<stat>": value}``.

    Stats (:data:`HISTORY_STATS`): ``scale_mean``, ``scale_min``, ``scale_max`` of its scales (LSQ:
    steps; fixed bits: min-max scales), ``max_abs_q`` = max|P_q|, ``unique_values`` of P_q,
    ``bits_mean`` (element-weighted) and ``bits_max`` (widest group) of the memory definition
    (:func:`lqs.memory.tensor_bits`).
    """
    out: dict[str, float] = {}
    for layer in _quantized_layers(model):
        for t in layer.integer_parameters():
            acc = lqs_memory.tensor_bits(t)
            scale = np.asarray(t.scale, dtype=np.float64)
            prefix = f"{layer.name}/{t.name}"
            out[f"{prefix}/scale_mean"] = float(scale.mean())
            out[f"{prefix}/scale_min"] = float(scale.min())
            out[f"{prefix}/scale_max"] = float(scale.max())
            out[f"{prefix}/max_abs_q"] = float(
                max(abs(acc["value_min"]), abs(acc["value_max"]))
            )
            out[f"{prefix}/unique_values"] = float(acc["unique_values"])
            out[f"{prefix}/bits_mean"] = float(acc["bits_mean"])
            out[f"{prefix}/bits_max"] = float(acc["bits_max"])
    return out


class EpochStats(keras.callbacks.Callback):
    """Per-epoch history: Keras logs + :func:`quantizer_stats` + epoch seconds; row 0 = before training.

    ``rows`` holds one dict per epoch (``epoch`` 0..E); :meth:`frame` returns them as a DataFrame.
    ``seconds`` is the wall time of the epoch including validation, excluding these statistics.
    """

    def __init__(self, network: keras.Model):
        super().__init__()
        self.network = network
        self.rows: list[dict[str, Any]] = []
        self._t0 = 0.0

    def on_train_begin(self, logs=None):
        self.rows = [{"epoch": 0, "seconds": 0.0, **quantizer_stats(self.network)}]

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._t0
        row: dict[str, Any] = {"epoch": epoch + 1, "seconds": seconds}
        row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        row.update(quantizer_stats(self.network))
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        """The per-epoch rows as a DataFrame, one row per epoch (row 0 = before training)."""
        return pd.DataFrame(self.rows)


# --------------------------------------------------------------------------------------------
# helpers


def _versions() -> dict[str, str]:
    return {
        "lqs_version": lqs.__version__,
        "code_version": CODE_VERSION,
        "python_version": platform.python_version(),
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        # no hostname: the platform string names OS, kernel, machine and libc only
        "platform": platform.platform(),
        "device": _device(),
    }


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get(
                "device_name", "GPU"
            )
        except Exception:
            name = "GPU"
        return f"{len(gpus)}x {name}"
    return f"CPU ({platform.machine()})"


def _determinism_enabled() -> bool:
    from tensorflow.python.framework import (
        config as tf_config,  # the public API has only enable
    )

    return bool(tf_config.is_op_determinism_enabled())


def _set_determinism(enabled: bool) -> None:
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def _seed_everything(cfg: Mapping[str, Any]) -> None:
    keras.utils.set_random_seed(int(cfg["seed"]))
    _set_determinism(bool(cfg["deterministic"]))


def _optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    raise ValueError(
        f"unknown optimizer {name!r}; allowed: 'adam', 'sgd'"
    )  # validated before


def _compile(model: keras.Model, cfg: Mapping[str, Any], lr: float | None) -> None:
    model.compile(
        optimizer=_optimizer(cfg["optimizer"], lr if lr is not None else 1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )


#: mixed into the seed of :func:`validation_split`'s generator, so its draws are independent of
#: the ``train_limit`` subset's (``companion.data.stratified_subset`` draws with ``default_rng(seed)``)
_VALIDATION_STREAM = 1


def validation_split(
    y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class-stratified validation split of training labels: ``(train_idx, val_idx)``.

    ``k = floor(fraction * n + 0.5)`` of the ``n`` images are held out (``round`` half up). Class
    ``c`` with ``n_c`` images gives ``floor(fraction * n_c)`` of them; the ``k - sum floor(...)``
    remaining slots go one each to the classes with the largest remainders ``fraction * n_c -
    floor(fraction * n_c)`` (ties: lower class first), so each class's held-out count differs from
    ``fraction * n_c`` by less than one image. Within each class (classes in increasing order) the
    held-out images are the first of a permutation drawn by
    ``numpy.random.default_rng([seed, 1])``. Both index arrays are sorted (the split's order is
    kept), disjoint, and together cover ``range(n)``. ``k = 0`` (``fraction = 0``, or too few
    images) gives all images for training and an empty validation split.

    Arguments:
        y: integer labels of the training images.
        fraction: share held out, ``0 <= fraction < 0.5``
            (:data:`companion.engine.config.SCHEMA`'s ``validation_fraction``).
        seed: the run's seed; equal seeds give equal splits whatever the flavour.
    """
    if not (math.isfinite(fraction) and 0.0 <= fraction < 0.5):
        raise ValueError(
            f"validation_fraction must be >= 0 and < 0.5; got {fraction!r}. Give a fraction "
            "of the training images below one half, e.g. 0.1, or 0 for no validation split"
        )
    y = np.asarray(y)
    n = len(y)
    k = int(math.floor(fraction * n + 0.5))
    if k == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, np.int64)
    classes, counts = np.unique(y, return_counts=True)
    exact = fraction * counts
    quota = np.floor(exact).astype(int)
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[: k - int(quota.sum())]:
        quota[i] += 1
    rng = np.random.default_rng([int(seed), _VALIDATION_STREAM])
    held = [
        rng.permutation(np.flatnonzero(y == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    val_idx = np.sort(np.concatenate(held)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def _load_data(cfg: Mapping[str, Any]):
    """``(train, validation, test)``: ``(x, y, info)`` triples; validation ``None`` without a split.

    The training images are the ``train_limit`` subset minus the :func:`validation_split`; the
    validation triple carries the training split's info.
    """
    common = dict(image_size=cfg["image_size"], seed=cfg["seed"])
    x_tr, y_tr, info_tr = lqs_data.load_with_info(
        cfg["dataset"], "train", limit=cfg["train_limit"], **common
    )
    x_te, y_te, info_te = lqs_data.load_with_info(
        cfg["dataset"], "test", limit=cfg["test_limit"], **common
    )
    tr_idx, val_idx = validation_split(y_tr, cfg["validation_fraction"], cfg["seed"])
    val = None
    if len(val_idx):
        val = (x_tr[val_idx], y_tr[val_idx], info_tr)
        x_tr, y_tr = x_tr[tr_idx], y_tr[tr_idx]
    return (x_tr, y_tr, info_tr), val, (x_te, y_te, info_te)


def _info_get(info: Any, key: str, default: Any = None) -> Any:
    if isinstance(info, Mapping):
        return info.get(key, default)
    return getattr(info, key, default)


def _build(cfg: Mapping[str, Any], input_shape, num_classes: int) -> keras.Model:
    flavour = cfg["flavour"]
    options: dict[str, Any] = {}
    if flavour == "nested":
        options.update(aggregate=cfg["aggregate"], all_above_vote=cfg["all_above_vote"])
    if cfg.get("init_bits") is not None:
        options["init_bits"] = cfg["init_bits"]
    return lqs_models.build_model(
        cfg["arch"],
        flavour,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        kernel_granularity=cfg["kernel_granularity"] or "scalar",
        bias_granularity=cfg["bias_granularity"] or "scalar",
        quantize_bias=bool(cfg["quantize_bias"])
        if cfg["quantize_bias"] is not None
        else True,
        threshold=cfg["threshold"] if cfg["threshold"] is not None else 1e-9,
        bits=cfg["bits"] if cfg["bits"] is not None else 4,
        l2=cfg["l2"],
        seed=cfg["seed"],
        quantize_dense=cfg["quantize_dense"] if cfg["flavour"] != "fp32" else None,
        weight_init=cfg["weight_init"],
        **options,
    )


def _evaluate(model: keras.Model, x, y, batch_size: int) -> dict[str, float]:
    out = model.evaluate(
        x, y, batch_size=max(int(batch_size), 256), verbose=0, return_dict=True
    )
    return {k: float(v) for k, v in out.items()}


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine path in the book)."""
    try:
        return Path(path).resolve().relative_to(paths.ROOT).as_posix()
    except ValueError:
        return str(path)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# --------------------------------------------------------------------------------------------
# one run: what an executor's worker executes (no store access)


@dataclass
class ParentModel:
    """What a post-training or ptq run needs of its FP32 parent: its stored record and model file."""

    record: dict[str, Any]
    model: bytes  # the parent's ``.keras`` file


@dataclass
class RunResult:
    """What one trained run hands back to the driver, which stores it."""

    record: dict[str, Any]
    history: pd.DataFrame  # per epoch, row 0 = before training
    model: bytes | None  # the trained network's ``.keras`` file (None: not saved)


def train_job(
    job: Job,
    parent: ParentModel | None = None,
    verbose: int = 0,
    save_model: bool = True,
) -> RunResult:
    """Train (ptq: quantize) and evaluate one job; returns the record, history and model bytes.

    Touches no results store: an executor's worker runs it and the driver stores what it returns
    (:func:`sweep`). ``parent`` is required exactly for post-training and ptq jobs. TensorFlow's
    op-determinism switch is process-wide: it is restored to its previous state afterwards.
    """
    cfg = job.config
    if (cfg["mode"] == "post_training") != (parent is not None):
        raise ValueError(
            f"run {job.config_hash}: a post-training or ptq run needs its FP32 parent "
            f"and no other run takes one (mode {cfg['mode']!r}, parent given: "
            f"{parent is not None})"
        )
    was_deterministic = _determinism_enabled()
    try:
        return _train(cfg, job.config_hash, parent, verbose, save_model)
    finally:
        _set_determinism(was_deterministic)


@dataclass
class _Trained:
    """What training (or ptq's quantization) hands to evaluation and the record."""

    model: keras.Model  # what is evaluated (a loss-terms wrapper, or the network)
    network: keras.Model  # the plain network (memory, history, saved model)
    history: pd.DataFrame
    te_eval: dict[str, float]  # test-set evaluation
    val_eval: dict[str, float] | None  # validation-split evaluation (None: no split)
    train_seconds: float
    epochs_trained: int
    eval_start: float  # perf_counter when evaluation began (validation and test first)


def _train(
    cfg: dict[str, Any],
    h: str,
    parent: ParentModel | None,
    verbose: int,
    save_model: bool,
) -> RunResult:
    keras.backend.clear_session()
    _seed_everything(cfg)
    train, val, test = _load_data(cfg)
    (x_tr, y_tr, info_tr), (_, y_te, _) = train, test
    num_classes = int(
        _info_get(info_tr, "num_classes", int(max(y_tr.max(), y_te.max())) + 1)
    )

    if cfg["flavour"] == "ptq":
        out = _quantize_parent(cfg, parent, val, test)
    else:
        out = _fit(cfg, parent, verbose, train, val, test, num_classes)
    tr_eval = _evaluate(out.model, x_tr, y_tr, cfg["batch_size"])
    eval_seconds = time.perf_counter() - out.eval_start

    record = _record(
        cfg,
        h,
        parent.record if parent is not None else None,
        out,
        tr_eval,
        eval_seconds,
        train,
        val,
        test,
        num_classes,
    )
    model = _model_bytes(out.network) if save_model else None
    return RunResult(record, out.history, model)


def _model_bytes(model: keras.Model) -> bytes:
    """The ``.keras`` file of ``model`` as bytes (what the store writes as ``<hash>.keras``)."""
    with tempfile.TemporaryDirectory(prefix="lqs-model-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def _load_keras(path: Path) -> keras.Model:
    from lqs import baselines, layers, losses, quantizers  # noqa: F401 - register serializable classes

    return keras.models.load_model(path, compile=False)


def _model_from_bytes(data: bytes) -> keras.Model:
    with tempfile.TemporaryDirectory(prefix="lqs-model-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return _load_keras(path)


def _evaluate_splits(
    model: keras.Model, val, test, batch_size: int
) -> tuple[dict[str, float] | None, dict[str, float]]:
    """``(validation evaluation or None, test evaluation)`` of the final model."""
    val_eval = _evaluate(model, val[0], val[1], batch_size) if val is not None else None
    return val_eval, _evaluate(model, test[0], test[1], batch_size)


def _quantize_parent(
    cfg: dict[str, Any], parent: ParentModel | None, val, test
) -> _Trained:
    """ptq: min-max quantize the FP32 parent (no training); evaluate it on the validation split
    (history row 0, epoch 0) and the test set. The parent (same seed, ``train_limit`` and
    ``validation_fraction``: :func:`companion.engine.config.parent_config`) never trained on
    this validation split."""
    from lqs import baselines

    src = _model_from_bytes(parent.model)
    model = baselines.ptq_minmax(
        src,
        cfg["bits"],
        per_channel=cfg["kernel_granularity"] != "scalar",
        quantize_bias=bool(cfg["quantize_bias"]),
        quantize_dense=bool(cfg["quantize_dense"]),
    )
    _compile(model, cfg, cfg["pretrain_lr"])
    t0 = time.perf_counter()
    val_eval, te_eval = _evaluate_splits(model, val, test, cfg["batch_size"])
    stats = EpochStats(model)
    stats.on_train_begin()
    if val_eval is not None:
        stats.rows[0].update(
            {"val_loss": val_eval["loss"], "val_accuracy": val_eval["accuracy"]}
        )
    return _Trained(model, model, stats.frame(), te_eval, val_eval, 0.0, 0, t0)


def _fit(
    cfg: dict[str, Any],
    parent: ParentModel | None,
    verbose: int,
    train,
    val,
    test,
    num_classes: int,
) -> _Trained:
    """Build (post_training: copy the parent's weights), train (validating on the validation
    split each epoch) and evaluate the final model on the validation split and the test set."""
    x_tr, y_tr, _ = train
    network = _build(cfg, x_tr.shape[1:], num_classes)
    if parent is not None:
        src = _model_from_bytes(parent.model)
        lqs_models.copy_float_weights(src, network, init_bits=cfg["init_bits"])
        del src
    model = network
    if cfg["flavour"] == "loss_terms":
        from lqs import losses

        rates = {
            "inverse": cfg["rate_inverse"],
            "max_bin": cfg["rate_max_bin"],
            "deviation": cfg["rate_deviation"],
        }
        model = losses.with_loss_terms(network, rates, cfg["deviation_form"])
    _compile(model, cfg, cfg["lr"])
    stats = EpochStats(network)
    _seed_everything(
        cfg
    )  # the same shuffling/dropout stream whatever building consumed
    t0 = time.perf_counter()
    model.fit(
        x_tr,
        y_tr,
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        shuffle=True,
        validation_data=(val[0], val[1]) if val is not None else None,
        validation_freq=cfg["validation_every"],
        verbose=verbose,
        callbacks=[*_lr_schedule(cfg), stats],
    )
    train_seconds = time.perf_counter() - t0
    history = stats.frame()
    t0 = time.perf_counter()
    val_eval, te_eval = _evaluate_splits(model, val, test, cfg["batch_size"])
    return _Trained(
        model, network, history, te_eval, val_eval, train_seconds, cfg["epochs"], t0
    )


def _lr_schedule(cfg: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
    """The learning-rate steps of ``cfg`` as a Keras callback (none without ``lr_steps``).

    It sets the rate of every epoch to :func:`companion.engine.config.lr_at` at the epoch's
    start, and logs it (history column ``learning_rate``); it comes before
    :class:`EpochStats`, which reads the logs. Without steps no callback runs, so such a run
    trains exactly as before the key existed.
    """
    steps = cfg["lr_steps"]
    if not steps:
        return []
    base = float(cfg["lr"])
    return [keras.callbacks.LearningRateScheduler(lambda e, _lr: lr_at(base, steps, e))]


def _best_epoch(history: pd.DataFrame, epochs_trained: int) -> tuple[int, float] | None:
    """``(epoch, validation accuracy)`` of the first trained epoch with the highest validation
    accuracy (``val_accuracy`` of the history; a run without training: epoch 0); ``None`` when the
    history has no validation accuracy (no validation split)."""
    if "val_accuracy" not in history:
        return None
    trained = history[history["epoch"] >= (1 if epochs_trained else 0)]
    acc = trained["val_accuracy"].to_numpy(dtype=np.float64)
    if np.isnan(acc).all():
        return None
    i = int(np.nanargmax(acc))
    return int(trained["epoch"].iloc[i]), float(acc[i])


def _record(
    cfg: dict[str, Any],
    h: str,
    parent: dict[str, Any] | None,
    out: _Trained,
    tr_eval: dict[str, float],
    eval_seconds: float,
    train,
    val,
    test,
    num_classes: int,
) -> dict[str, Any]:
    """The flat record of one run: configuration, metrics, memory, timings, dataset provenance, versions."""
    (x_tr, y_tr, info_tr), (_, y_te, info_te) = train, test
    te_eval, val_eval = out.te_eval, out.val_eval
    # the best epoch is chosen on the validation split, never on the test set
    best = _best_epoch(out.history, out.epochs_trained)
    epochs_trained = out.epochs_trained
    mem = lqs_memory.model_summary(out.network)
    losses_ok = all(_finite(v) for v in (tr_eval["loss"], te_eval["loss"]))

    record: dict[str, Any] = dict(cfg)
    record.update(
        {
            "config_hash": h,
            "parent_hash": parent["config_hash"] if parent else None,
            "train_accuracy": tr_eval["accuracy"],
            "train_loss": tr_eval["loss"],
            "test_accuracy": te_eval["accuracy"],
            "test_loss": te_eval["loss"],
            "val_accuracy": val_eval["accuracy"] if val_eval is not None else None,
            "val_loss": val_eval["loss"] if val_eval is not None else None,
            "best_val_accuracy": best[1] if best is not None else None,
            "best_epoch": best[0] if best is not None else None,
            "epochs_trained": epochs_trained,
            "diverged": not losses_ok,
            "penalty_inverse": te_eval.get("penalty_inverse"),
            "penalty_max_bin": te_eval.get("penalty_max_bin"),
            "penalty_deviation": te_eval.get("penalty_deviation"),
            "bits_per_param": mem["bits_per_param"],
            "compression": mem["compression"],
            "n_quantized_layers": len(_quantized_layers(out.network)),
            "train_seconds": out.train_seconds,
            "eval_seconds": eval_seconds,
            "seconds_per_epoch": out.train_seconds / epochs_trained
            if epochs_trained
            else None,
            "dataset_label": _info_get(info_tr, "label", cfg["dataset"]),
            "dataset_source": _info_get(info_tr, "source"),
            "dataset_is_subset": _info_get(info_tr, "is_subset"),
            "dataset_heldout": _info_get(info_te, "heldout"),
            "dataset_note": _info_get(info_tr, "note"),
            "dataset_upstream_match": _info_get(info_tr, "upstream_match"),
            "n_train": int(len(y_tr)),
            "n_val": int(len(val[1])) if val is not None else 0,
            "n_test": int(len(y_te)),
            "image_shape": "x".join(str(int(d)) for d in x_tr.shape[1:]),
            "num_classes": num_classes,
            **_versions(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    record.update({f"mem_{k}": v for k, v in mem.items()})
    return record


# --------------------------------------------------------------------------------------------
# plan -> execute -> store

#: seconds between two looks at runs another process is training (their store lock is held)
_POLL_SECONDS = 0.5


@dataclass
class _Plan:
    """The jobs of a list of configurations and what the store already holds."""

    order: list[str]  # hash of every requested configuration, duplicates kept
    jobs: dict[str, Job]  # every job (requested ones and FP32 parents) by hash
    # complete records by hash, already stored or stored while executing
    stored: dict[str, dict[str, Any]]
    to_train: list[Job]  # the missing jobs, each once: parents first
    parents: set[str]  # hashes of the FP32 parents (their models are saved)
    forced: set[str]  # retrained even though stored (``force=True``)

    def width(self) -> int:
        """How many jobs could run at once: the larger of the parent and the other wave."""
        n_parents = sum(1 for j in self.to_train if j.config_hash in self.parents)
        return max(n_parents, len(self.to_train) - n_parents)


def _validate_all(configs: Iterable[Mapping[str, Any]], desc: str) -> list[dict]:
    validated = []
    for i, c in enumerate(configs):
        try:
            validated.append(validate_config(dict(c)))
        except ValueError as exc:
            raise ValueError(f"{desc}: config #{i}: {exc}") from None
    return validated


def _plan(validated: list[dict[str, Any]], store: RunStore, force: bool) -> _Plan:
    """Jobs of validated configurations: FP32 parents added, stored runs skipped, parents first."""
    order: list[str] = []
    jobs: dict[str, Job] = {}
    parents: dict[str, Job] = {}
    for cfg in validated:
        h, ph = config_hash(cfg), None
        if cfg["mode"] == "post_training":  # post-training and ptq runs
            pcfg = parent_config(cfg)
            ph = config_hash(pcfg)
            parents.setdefault(ph, Job.of(pcfg, ph))
        order.append(h)
        jobs.setdefault(h, Job.of(cfg, h, ph))
    forced = set(order) if force else set()
    stored: dict[str, dict[str, Any]] = {}
    for h in {**jobs, **parents}:
        if h not in forced:
            rec = store.load_record(h)
            # a parent is usable only with its model (load_record checked the file's checksum)
            if rec is not None and (h not in parents or rec.get("model_sha256")):
                stored[h] = rec
    all_jobs = {**parents, **jobs}
    to_train = [j for h, j in parents.items() if h not in stored]
    to_train += [j for h, j in jobs.items() if h not in stored and h not in parents]
    return _Plan(order, all_jobs, stored, to_train, set(parents), forced)


def _choose_executor(executor: str | Executor | None, plan: _Plan) -> Executor:
    """The executor asked for; a local Ray instance only when two or more runs can run at once."""
    chosen = get_executor(executor)
    if isinstance(chosen, RayExecutor) and chosen.local and plan.width() < 2:
        return get_executor("serial")  # starting Ray costs more than it saves here
    return chosen


def _execute_plan(
    plan: _Plan,
    executor: Executor,
    store: RunStore,
    *,
    verbose: int,
    save_model: bool,
    on_done: Callable[[str, dict[str, Any] | None], None],
) -> list[tuple[Job, Failure]]:
    """Hand the missing jobs to ``executor`` and store every record it returns; the failures.

    A job is dispatched under its store lock (:meth:`RunStore.try_lock`), after checking the
    store once more; a job another process holds is looked at again every
    :data:`_POLL_SECONDS` (it is usually stored by then). A post-training child is dispatched
    once its parent is stored; a failed parent fails its children. On an interruption
    (Ctrl-C) the executor is stopped and the runs that had finished are stored.
    """
    children: dict[str, list[Job]] = {}
    ready: deque[Job] = deque()
    for job in plan.to_train:
        if job.parent_hash is not None and job.parent_hash not in plan.stored:
            children.setdefault(job.parent_hash, []).append(job)
        else:
            ready.append(job)
    deferred: list[Job] = []
    locks: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    failures: list[tuple[Job, Failure]] = []

    def parent_of(job: Job) -> Any:
        ph = job.parent_hash
        if ph is not None and ph not in shared:
            model = store.model_path(ph).read_bytes()
            shared[ph] = executor.share(ParentModel(plan.stored[ph], model))
        return shared.get(ph) if ph is not None else None

    def finish(h: str, record: dict[str, Any]) -> None:
        plan.stored[h] = record
        ready.extend(children.pop(h, []))
        on_done(h, record)

    def fail(job: Job, failure: Failure) -> None:
        failures.append((job, failure))
        on_done(job.config_hash, None)
        for child in children.pop(job.config_hash, []):
            why = f"its FP32 parent {job.config_hash} failed ({failure.error})"
            fail(child, Failure(child.config_hash, why))

    def dispatch(job: Job) -> None:
        h = job.config_hash
        lock = store.try_lock(h)
        if lock is None:  # another process trains it now
            deferred.append(job)
            return
        rec = None if h in plan.forced else store.load_record(h)
        if rec is not None and (h not in plan.parents or rec.get("model_sha256")):
            lock.release()  # stored meanwhile (by another process)
            finish(h, rec)
            return
        locks[h] = lock
        keep_model = save_model or h in plan.parents
        executor.submit(h, train_job, job, parent_of(job), verbose, keep_model)

    def store_result(h: str, result: Any) -> None:
        job = plan.jobs[h]
        try:
            if isinstance(result, Failure):
                log.error("run %s failed: %s", job.describe(), result.error)
                fail(job, result)
            else:
                rec = store.put(job.config, result.record, result.history, result.model)
                finish(h, rec)
        finally:
            locks.pop(h).release()

    try:
        while ready or deferred or executor.pending:
            while ready:
                dispatch(ready.popleft())
            if executor.pending or deferred:
                timeout = _POLL_SECONDS if deferred else None
                for h, result in executor.wait(timeout):
                    store_result(h, result)
            ready.extend(deferred)
            deferred.clear()
    except BaseException:
        # Ctrl-C (or a store error): stop the workers, keep what had finished
        for h, result in executor.cancel():
            if not isinstance(result, Failure):
                try:
                    store_result(h, result)
                except Exception:  # pragma: no cover - already failing: log and go on
                    log.exception("could not store the finished run %s", h)
        raise
    finally:
        for lock in locks.values():
            lock.release()
    return failures


def _records(
    configs: Iterable[Mapping[str, Any]],
    *,
    desc: str,
    store: RunStore | None,
    force: bool,
    verbose: int,
    save_model: bool,
    progress: bool,
    announce: bool,
    executor: str | Executor | None,
) -> list[dict[str, Any]]:
    """Plan, execute and store; the record of every configuration, in order (see :func:`sweep`)."""
    from tqdm import tqdm

    validated = _validate_all(configs, desc)
    store = store if store is not None else default_store()
    plan = _plan(validated, store, force)
    cached = sum(1 for h in plan.order if h in plan.stored)
    if announce:
        print(
            f"{desc}: {len(validated)} runs ({cached} already stored) -> "
            f"{_shown_path(store.root)}",
            flush=True,
        )
    chosen = _choose_executor(executor, plan) if plan.to_train else None
    if announce and chosen is not None and chosen.name != "serial":
        print(
            f"{desc}: training {len(plan.to_train)} runs on {chosen.describe()}",
            flush=True,
        )
    counts = Counter(plan.order)
    extra = sum(1 for j in plan.to_train if j.config_hash not in counts)
    bar = tqdm(
        total=len(plan.order) + extra,
        initial=cached,
        desc=desc,
        unit="run",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def on_done(h: str, record: dict[str, Any] | None) -> None:
        bar.update(counts.get(h, 1))
        if record is not None and record.get("test_accuracy") is not None:
            bar.set_postfix_str(
                f"test acc {record['test_accuracy']:.3f}", refresh=False
            )

    failures: list[tuple[Job, Failure]] = []
    try:
        if chosen is not None:
            failures = _execute_plan(
                plan,
                chosen,
                store,
                verbose=verbose,
                save_model=save_model,
                on_done=on_done,
            )
    finally:
        bar.close()
    if failures:
        causes = [f.exception for _, f in failures if f.exception is not None]
        if len(plan.order) == 1 and causes:  # one run (+ its parent): the error itself
            raise causes[0]
        raise SweepFailed(desc, failures, len(plan.to_train) - len(failures))
    return [plan.stored[h] for h in plan.order]


def run(
    config: Mapping[str, Any],
    *,
    store: RunStore | None = None,
    force: bool = False,
    verbose: int = 0,
    save_model: bool = True,
    executor: str | Executor | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration, or return its stored record; one flat dict.

    Arguments:
        config: a configuration (:func:`companion.engine.config.validate_config` fills defaults; invalid
            configurations raise ``ValueError`` before anything is loaded or trained).
        store: the results store (default: :func:`companion.engine.store.default_store`, ``results/runs/``).
        force: retrain even if a complete record exists (it is replaced; a post-training run's
            stored FP32 parent is reused).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        save_model: also store the trained model (``<hash>.keras``; needed by post-training
            children, :func:`load_model` and later analyses). FP32 parents are always saved.
        executor: ``"serial"``, ``"ray"`` or an :class:`companion.engine.executors.Executor`
            (default ``LQS_EXECUTOR``, else serial). One run trains in this process unless a Ray
            cluster is joined (``RAY_ADDRESS``), and gives the same record on either.

    Returns:
        The record, holding the configuration keys (:data:`companion.engine.config.KEYS`) + :data:`RECORD_COLUMNS` +
        store fields (``complete``, checksums).

    A post-training or ptq run first obtains its FP32 parent (stored, else trained and stored).
    Training happens under the store's lock for this configuration (:meth:`companion.engine.store.RunStore.lock`):
    a second process asked for the same configuration waits and then returns the stored record.
    An exception of the training code propagates unchanged.
    """
    (record,) = _records(
        [config],
        desc="run",
        store=store,
        force=force,
        verbose=verbose,
        save_model=save_model,
        progress=False,
        announce=False,
        executor=executor,
    )
    return record


def sweep(
    configs: Iterable[Mapping[str, Any]],
    *,
    desc: str = "sweep",
    store: RunStore | None = None,
    force: bool = False,
    verbose: int = 0,
    save_model: bool = True,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> pd.DataFrame:
    """Run every configuration (reusing stored ones) and return one row per configuration.

    Plan -> execute -> store (:mod:`companion.engine.executors`): all configurations are validated
    first (``ValueError`` naming the index of the bad one), so a typo fails before hours of
    training; they become jobs (post-training runs' FP32 parents first, stored runs skipped); the
    missing jobs go to the executor; this process stores each returned record as it arrives, so
    after an interruption calling ``sweep`` again trains only what was not finished. Prints the
    store folder once; shows a tqdm bar (stderr) counting finished runs from every worker, with
    ETA and the last test accuracy.

    Arguments:
        configs: configurations (dicts).
        desc: label of the progress bar.
        store, force, verbose, save_model: as :func:`run`.
        progress: show the progress bar.
        executor: ``"serial"`` (this process), ``"ray"`` (one Ray task per run, local instance or
            ``RAY_ADDRESS``) or an :class:`companion.engine.executors.Executor`; default
            ``LQS_EXECUTOR``, else serial. The records are the same whichever trains them.

    Returns:
        DataFrame with the records in the order of ``configs`` (duplicates give the same row twice);
        no configuration gives an empty DataFrame that still has every record column
        (configuration keys, :data:`RECORD_COLUMNS`, the store's fields), so ``df["dataset_label"]``
        works on it.

    Raises:
        companion.engine.executors.SweepFailed: some runs raised or lost their worker; the message
            lists each with its config hash and error; every other run finished and is stored.
    """
    records = _records(
        configs,
        desc=desc,
        store=store,
        force=force,
        verbose=verbose,
        save_model=save_model,
        progress=progress,
        announce=True,
        executor=executor,
    )
    if not records:
        return pd.DataFrame(columns=[*KEYS, *RECORD_COLUMNS, *STORE_FIELDS])
    return pd.DataFrame(records)


# --------------------------------------------------------------------------------------------
# later analyses


def _hash_of(record_or_hash: Mapping[str, Any] | str) -> str:
    if isinstance(record_or_hash, str):
        return record_or_hash
    if isinstance(record_or_hash, Mapping) or hasattr(record_or_hash, "get"):
        h = record_or_hash.get("config_hash")
        if h:
            return str(h)
    raise ValueError(
        f"expected a run record (with 'config_hash') or a config hash, got {record_or_hash!r}"
    )


def load_model(
    record_or_hash: Mapping[str, Any] | str, *, store: RunStore | None = None
) -> keras.Model:
    """The trained network of a stored run (not compiled; loss-term runs: the plain network).

    Raises:
        FileNotFoundError: the run was stored without its model (``save_model=False``) or is absent.
    """
    store = store if store is not None else default_store()
    h = _hash_of(record_or_hash)
    path = store.model_path(h)
    if not path.exists():
        raise FileNotFoundError(
            f"no saved model for run {h} in {store.root} (expected {path.name}); rerun it with "
            "companion.engine.experiment.run(config, force=True, save_model=True)"
        )
    return _load_keras(path)


def load_history(
    record_or_hash: Mapping[str, Any] | str,
    *,
    store: RunStore | None = None,
    long: bool = False,
) -> pd.DataFrame:
    """The per-epoch history of a stored run (wide: one row per epoch; ``long=True``: :func:`history_long`)."""
    store = store if store is not None else default_store()
    df = store.load_history(_hash_of(record_or_hash))
    return history_long(df) if long else df


def history_long(history: pd.DataFrame) -> pd.DataFrame:
    """Quantizer statistics of a wide history as a tidy table: ``epoch, layer, parameter, stat, value``."""
    cols = [c for c in history.columns if c.count("/") == 2]
    long = history.melt(
        id_vars=["epoch"], value_vars=cols, var_name="key", value_name="value"
    )
    parts = long["key"].str.split("/", expand=True)
    long = long.assign(layer=parts[0], parameter=parts[1], stat=parts[2]).drop(
        columns="key"
    )
    return long[["epoch", "layer", "parameter", "stat", "value"]]
