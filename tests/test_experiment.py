"""companion.engine.config (schema, validation, hash) and companion.engine.experiment (run, sweep, caching, determinism).

Training runs use tiny synthetic data (``companion.data.load_with_info`` is replaced by a stand-in
labelled "synthetic") and a results folder in ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import lqs
from companion import data as lqs_data
from companion.engine import config as lqs_config
from companion.engine import experiment
from companion.engine.config import (
    KEYS,
    SCHEMA,
    config_hash,
    parent_config,
    validate_config,
)
from companion.engine.store import RunStore
from lqs.models import build_model

# ==================================================================================== config


def test_defaults_filled_and_idempotent():
    cfg = validate_config({})
    assert list(cfg) == list(KEYS)
    assert (
        cfg["dataset"] == "mnist"
        and cfg["arch"] == "mlp"
        and cfg["flavour"] == "nested"
    )
    assert cfg["mode"] == "from_scratch" and cfg["quantize_dense"] is True
    assert (cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["optimizer"]) == (
        1e-4,
        32,
        2,
        "adam",
    )
    assert cfg["threshold"] == 1e-9 and cfg["deterministic"] is True
    # keys that do not act for a nested from-scratch run are None
    for key in (
        "bits",
        "pretrain_epochs",
        "pretrain_lr",
        "rate_inverse",
        "rate_max_bin",
        "rate_deviation",
        "deviation_form",
    ):
        assert cfg[key] is None, key
    assert validate_config(cfg) == cfg
    for flavour in ("fp32", "loss_terms", "lsq", "fixed_bits", "ptq"):
        c = validate_config({"flavour": flavour, "dataset": "cifar10"})
        assert validate_config(c) == c


@pytest.mark.parametrize(
    "dataset,arch,quantize_dense",
    [
        ("mnist", "mlp", True),
        ("fashion_mnist", "mlp", True),
        ("cifar10", "cnn", False),
        ("imagenette", "resnet", False),
    ],
)
def test_arch_default_from_dataset(dataset, arch, quantize_dense):
    cfg = validate_config({"dataset": dataset})
    assert cfg["arch"] == arch and cfg["quantize_dense"] is quantize_dense


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"colour": 1}, r"unknown config key\(s\) 'colour'; allowed keys: dataset"),
        ({"profile": "cpu"}, r"unknown config key\(s\) 'profile'"),
        ({"dataset": "svhn"}, r"'dataset' has the value 'svhn'; allowed: 'mnist'"),
        ({"dataset": 3}, r"'dataset' has the wrong type"),
        (
            {"arch": "vgg"},
            r"'arch' has the value 'vgg'; allowed: 'mlp', 'cnn', 'resnet'",
        ),
        ({"flavour": "int8"}, r"'flavour' has the value 'int8'"),
        ({"mode": "later"}, r"'mode' has the value 'later'"),
        (
            {"kernel_granularity": "pixel"},
            r"'kernel_granularity' has the value 'pixel'",
        ),
        (
            {"kernel_granularity": "filter"},
            r"'kernel_granularity' has the value 'filter': does not fit arch 'mlp'",
        ),
        ({"kernel_granularity": "channel"}, r"channel/filter need convolutions"),
        (
            {"dataset": "cifar10", "flavour": "ptq", "kernel_granularity": "row"},
            r"allowed: 'scalar', 'filter'",
        ),
        (
            {"bias_granularity": "column"},
            r"'bias_granularity' has the value 'column'; allowed: 'scalar', 'row'",
        ),
        (
            {"quantize_bias": 1},
            r"'quantize_bias' has the wrong type: 1 \(int\); allowed: a boolean",
        ),
        (
            {"quantize_dense": False},
            r"'quantize_dense' has the value False: the MLP has only dense layers",
        ),
        (
            {"threshold": -1e-9},
            r"'threshold' has the value -1e-09 out of range; allowed: a number >= 0",
        ),
        ({"threshold": float("nan")}, r"'threshold' has the value nan out of range"),
        ({"threshold": "1e-9"}, r"'threshold' has the wrong type.*YAML"),
        ({"all_above_vote": "yes"}, r"'all_above_vote' has the wrong type"),
        (
            {"aggregate": "max"},
            r"'aggregate' has the value 'max'; allowed: 'mean', 'sum'",
        ),
        (
            {"init_bits": 1},
            r"'init_bits' has the value 1 out of range; allowed: an integer in 2..16 or None",
        ),
        (
            {"bits": 1, "flavour": "lsq"},
            r"'bits' has the value 1 out of range; allowed: an integer in 2..16",
        ),
        (
            {"bits": 17},
            r"'bits' has the value 17 out of range",
        ),  # checked even where bits does not act
        ({"bits": 4.5}, r"'bits' has the wrong type: 4.5"),
        ({"lr": 0.0}, r"'lr' has the value 0.0 out of range; allowed: a number > 0"),
        ({"lr": -1e-3}, r"'lr' has the value -0.001 out of range"),
        ({"pretrain_lr": -1.0}, r"'pretrain_lr' has the value -1.0 out of range"),
        (
            {"l2": -1e-4},
            r"'l2' has the value -0.0001 out of range; allowed: a number >= 0",
        ),
        (
            {"optimizer": "lamb"},
            r"'optimizer' has the value 'lamb'; allowed: 'adam', 'sgd'",
        ),
        (
            {"batch_size": 0},
            r"'batch_size' has the value 0 out of range; allowed: an integer >= 1",
        ),
        (
            {"epochs": 0},
            r"'epochs' has the value 0 out of range; allowed: an integer >= 1",
        ),
        ({"epochs": True}, r"'epochs' has the wrong type: True \(bool\)"),
        ({"epochs": "2"}, r"'epochs' has the wrong type"),
        ({"pretrain_epochs": 0}, r"'pretrain_epochs' has the value 0 out of range"),
        (
            {"seed": -1},
            r"'seed' has the value -1 out of range; allowed: an integer >= 0",
        ),
        (
            {"train_limit": 0},
            r"'train_limit' has the value 0 out of range; allowed: an integer >= 1 or None",
        ),
        ({"test_limit": -5}, r"'test_limit' has the value -5 out of range"),
        (
            {"image_size": 4},
            r"'image_size' has the value 4 out of range; allowed: an integer >= 8 or None",
        ),
        (
            {"rate_inverse": -1.0, "flavour": "loss_terms"},
            r"'rate_inverse' has the value -1.0 out of range",
        ),
        (
            {"rate_max_bin": float("inf")},
            r"'rate_max_bin' has the value inf out of range",
        ),
        ({"rate_deviation": "big"}, r"'rate_deviation' has the wrong type"),
        (
            {"deviation_form": "text"},
            r"'deviation_form' has the value 'text'; allowed: 'reconstructed', 'implementation'",
        ),
        ({"deterministic": 0}, r"'deterministic' has the wrong type"),
        (
            {"flavour": "fp32", "mode": "post_training"},
            r"'mode' has the value 'post_training': an fp32 network",
        ),
        (
            {"flavour": "ptq", "mode": "from_scratch"},
            r"'mode' has the value 'from_scratch': ptq quantizes",
        ),
    ],
)
def test_validation_errors_name_key_value_and_allowed(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_config(bad)


def test_validation_rejects_non_dict():
    with pytest.raises(ValueError, match="config must be a dict"):
        validate_config([("epochs", 1)])


def test_numpy_and_float_integers_accepted():
    cfg = validate_config(
        {
            "epochs": np.int64(3),
            "lr": np.float32(0.5),
            "batch_size": 64.0,
            "quantize_bias": np.bool_(False),
        }
    )
    assert cfg["epochs"] == 3 and type(cfg["epochs"]) is int
    assert (
        type(cfg["lr"]) is float
        and cfg["batch_size"] == 64
        and cfg["quantize_bias"] is False
    )


def test_keys_that_do_not_act_become_none():
    lsq = validate_config({"flavour": "lsq", "bits": 3, "threshold": 1e-3})
    assert lsq["bits"] == 3 and lsq["threshold"] is None and lsq["aggregate"] is None
    assert lsq["bias_granularity"] is None and lsq["quantize_bias"] is True
    fp32 = validate_config(
        {"flavour": "fp32", "kernel_granularity": "column", "rate_inverse": 1.0}
    )
    assert (
        fp32["kernel_granularity"] is None
        and fp32["rate_inverse"] is None
        and fp32["quantize_bias"] is None
    )
    lt = validate_config(
        {"flavour": "loss_terms", "rate_inverse": 1e-3, "threshold": 1e-3}
    )
    assert (
        lt["rate_inverse"] == 1e-3
        and lt["rate_max_bin"] == 0.0
        and lt["threshold"] is None
    )
    assert lt["deviation_form"] == "implementation"
    ptq = validate_config({"flavour": "ptq", "lr": 1e-3, "epochs": 7})
    assert (
        ptq["mode"] == "post_training"
        and ptq["pretrain_lr"] == 1e-3
        and ptq["lr"] is None
    )
    assert ptq["epochs"] is None and ptq["pretrain_epochs"] == 2
    # a sweep over a key that does not act maps to one configuration
    assert config_hash({"flavour": "nested", "bits": 2}) == config_hash(
        {"flavour": "nested", "bits": 8}
    )
    # a validated config validates to itself, but turned into another flavour its None for a key that
    # now acts is refused (None is never silently the default: leave the key out instead)
    nested = validate_config({})
    with pytest.raises(
        ValueError,
        match=r"config key 'bits' is None .* acts for flavour 'lsq'.*default \(4\)",
    ):
        validate_config({**nested, "flavour": "lsq"})
    lsq = {k: v for k, v in nested.items() if v is not None or k in ("arch", "mode")}
    assert validate_config({**lsq, "flavour": "lsq"})["bits"] == SCHEMA["bits"].default


def test_parent_config_shared_by_post_training_runs():
    a = {
        "dataset": "cifar10",
        "mode": "post_training",
        "threshold": 1e-9,
        "epochs": 3,
        "pretrain_epochs": 4,
    }
    b = {**a, "threshold": 1e-7, "kernel_granularity": "filter", "epochs": 1}
    c = {**a, "flavour": "ptq", "mode": None, "bits": 4}
    pa, pb, pc = parent_config(a), parent_config(b), parent_config(c)
    assert pa == pb == pc
    assert (
        pa["flavour"] == "fp32"
        and pa["mode"] == "from_scratch"
        and pa["epochs"] == 4
        and pa["arch"] == "cnn"
    )
    assert parent_config({**a, "pretrain_lr": 1e-3})["lr"] == 1e-3
    # the parent holds out the child's validation split: same seed, train_limit and fraction
    for child in (a, c):
        for fraction in (0.0, 0.1, 0.25):
            p = parent_config(
                {**child, "validation_fraction": fraction, "train_limit": 50}
            )
            assert (p["validation_fraction"], p["train_limit"], p["seed"]) == (
                fraction,
                50,
                0,
            )
    assert parent_config({**a, "seed": 1}) != pa
    with pytest.raises(ValueError, match="only 'post_training'"):
        parent_config({})


def test_hash_format_and_stability():
    h = config_hash({"epochs": 3, "lr": 1e-3})
    assert len(h) == 16 and all(ch in "0123456789abcdef" for ch in h)
    assert config_hash({"lr": 1e-3, "epochs": 3}) == h  # key order
    assert (
        config_hash(validate_config({"epochs": 3, "lr": 1e-3})) == h
    )  # validated form
    assert (
        config_hash({"epochs": 3, "lr": 0.001, "arch": "mlp", "seed": 0}) == h
    )  # explicit defaults
    # independent reference: sha256 of the sorted, compact JSON of config + versions (no Python
    # hash()); lr_steps and validation_every, added later, are left out while they hold their
    # defaults (None, 1)
    cfg = validate_config({"epochs": 3, "lr": 1e-3})
    assert cfg.pop("lr_steps") is None and cfg.pop("validation_every") == 1
    payload = {
        "config": cfg,
        "lqs": lqs.__version__,
        "code": lqs_config.CODE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert h == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_hash_depends_on_versions(monkeypatch):
    h = config_hash({})
    monkeypatch.setattr(lqs_config, "CODE_VERSION", "999")
    assert config_hash({}) != h
    monkeypatch.undo()
    monkeypatch.setattr(lqs, "__version__", "9.9.9")
    assert config_hash({}) != h


# one change per key, on a base configuration where that key acts
_SENSITIVITY = {
    "dataset": ({}, "fashion_mnist"),
    "arch": ({"dataset": "fashion_mnist"}, "cnn"),
    "flavour": ({}, "fp32"),
    "mode": ({}, "post_training"),
    "kernel_granularity": ({}, "column"),
    "bias_granularity": ({}, "row"),
    "quantize_bias": ({}, False),
    "quantize_dense": ({"dataset": "cifar10"}, True),
    "threshold": ({}, 1e-7),
    "all_above_vote": ({}, False),
    "aggregate": ({}, "sum"),
    "init_bits": ({}, 8),
    "bits": ({"flavour": "lsq"}, 8),
    "lr": ({}, 1e-3),
    "pretrain_lr": ({"mode": "post_training"}, 1e-3),
    "lr_steps": ({}, [[1, 0.5]]),
    "l2": ({}, 1e-4),
    "optimizer": ({}, "sgd"),
    "weight_init": ({}, "random_normal"),
    "batch_size": ({}, 64),
    "epochs": ({}, 3),
    "pretrain_epochs": ({"mode": "post_training"}, 5),
    "seed": ({}, 1),
    "train_limit": ({}, 1000),
    "validation_fraction": ({}, 0.2),
    "validation_every": ({}, 8),
    "test_limit": ({}, 1000),
    "image_size": ({}, 32),
    "rate_inverse": ({"flavour": "loss_terms"}, 1e-6),
    "rate_max_bin": ({"flavour": "loss_terms"}, 1e-6),
    "rate_deviation": ({"flavour": "loss_terms"}, 1e-6),
    "deviation_form": ({"flavour": "loss_terms"}, "reconstructed"),
    "deterministic": ({}, False),
}


def test_sensitivity_table_covers_every_key():
    assert set(_SENSITIVITY) == set(KEYS)


@pytest.mark.parametrize("key", list(_SENSITIVITY))
def test_hash_sensitive_to_every_key(key):
    base, value = _SENSITIVITY[key]
    changed = {**base, key: value}
    assert validate_config(changed)[key] == value
    assert validate_config(base)[key] != value
    assert config_hash(changed) != config_hash(base)


def test_describe_lists_every_key():
    table = lqs_config.describe()
    for key in KEYS:
        assert f"| `{key}` |" in table
    assert all(line.replace("\\|", "").count("|") == 7 for line in table.splitlines())
    assert set(lqs_config._APPLIES_TEXT) == set(lqs_config._APPLIES)


# ==================================================================================== experiment


def fake_load_with_info(name, split, *, limit=None, image_size=None, seed=0):
    """Synthetic 8x8x1 images whose class is a bright row (0-7) or column (8-9); labelled as such."""
    n_full = {"train": 96, "test": 40}[split]
    n = min(n_full, limit) if limit else n_full
    rng = np.random.default_rng(100 + (split == "test"))
    y = (np.arange(n_full) % 10)[rng.permutation(n_full)][:n].astype(np.int64)
    x = (0.3 * rng.random((n, 8, 8, 1))).astype(np.float32)
    for i, c in enumerate(y):
        if c < 8:
            x[i, c, :, 0] += 0.7
        else:
            x[i, :, c - 8, 0] += 0.7
    info = lqs_data.DatasetInfo(
        name=name,
        label=f"synthetic stand-in for {name}",
        source="synthetic",
        split=split,
        n=n,
        split_size=n_full,
        is_subset=True,
        heldout="synthetic test split",
        image_shape=(8, 8, 1),
        num_classes=10,
        class_names=tuple(map(str, range(10))),
        limit=limit,
        seed=seed,
        files=(),
        upstream_match=None,
        note="tests/test_experiment.py",
    )
    return x, y, info


TINY = {"dataset": "mnist", "epochs": 2, "batch_size": 16, "lr": 1e-2, "seed": 0}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Synthetic data, a results folder in tmp_path, and a counter of trainings (``env.calls``)."""
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(lqs_data, "load_with_info", fake_load_with_info)
    calls: list[dict] = []
    original = experiment.train_job

    def counting(job, *args, **kwargs):
        calls.append(job.config)
        return original(job, *args, **kwargs)

    monkeypatch.setattr(experiment, "train_job", counting)

    class Env:
        pass

    e = Env()
    e.calls = calls
    e.store = RunStore()
    e.monkeypatch = monkeypatch
    e.original = original
    return e


def test_run_record_columns_and_values(env):
    from tensorflow.python.framework import config as tf_config

    determinism_before = tf_config.is_op_determinism_enabled()
    rec = experiment.run(TINY)
    assert (
        tf_config.is_op_determinism_enabled() == determinism_before
    )  # process-wide switch restored
    for key in (
        KEYS
        + experiment.RECORD_COLUMNS
        + ("complete", "record_sha256", "history_sha256", "model_sha256")
    ):
        assert key in rec, key
    # a sweep of no configuration (e.g. every dataset missing) still has every record column
    empty = experiment.sweep([], progress=False)
    assert len(empty) == 0 and set(empty.columns) == set(rec)
    cfg = validate_config(TINY)
    assert {k: rec[k] for k in KEYS} == cfg
    assert rec["config_hash"] == config_hash(TINY)
    assert (
        rec["dataset_label"] == "synthetic stand-in for mnist"
        and rec["dataset_source"] == "synthetic"
    )
    # 96 training images, round(0.1 * 96) = 10 of them held out for validation
    assert (
        rec["n_train"],
        rec["n_val"],
        rec["n_test"],
        rec["image_shape"],
        rec["num_classes"],
    ) == (86, 10, 40, "8x8x1", 10)
    assert 0 <= rec["test_accuracy"] <= 1 and 0 <= rec["train_accuracy"] <= 1
    assert 0 <= rec["val_accuracy"] <= 1 and rec["val_loss"] > 0
    assert rec["best_val_accuracy"] >= rec["val_accuracy"] - 1e-6
    assert rec["best_epoch"] in (1, 2) and "best_test_accuracy" not in rec
    assert (
        rec["epochs_trained"] == 2
        and rec["train_seconds"] > 0
        and rec["eval_seconds"] > 0
    )
    assert (
        rec["mem_n_params"] == 64 * 128 + 128 + 128 * 10 + 10
        and rec["n_quantized_layers"] == 2
    )
    assert (
        rec["bits_per_param"] == rec["mem_bits_per_param"]
        and rec["compression"] == rec["mem_compression"]
    )
    assert (
        rec["tf_version"]
        and rec["keras_version"] == keras.__version__
        and rec["lqs_version"] == lqs.__version__
    )
    import socket

    assert socket.gethostname() not in rec["platform"]
    assert rec["diverged"] is False and rec["parent_hash"] is None
    # history: epoch 0 (before training) + one row per epoch, metrics and per-parameter statistics
    hist = experiment.load_history(rec)
    assert list(hist["epoch"]) == [0, 1, 2]
    for col in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
        assert col in hist
    for layer in ("dense1", "dense2"):
        for param in ("kernel", "bias"):
            for stat in experiment.HISTORY_STATS:
                assert f"{layer}/{param}/{stat}" in hist
    assert hist["val_accuracy"].iloc[1:].max() == pytest.approx(
        rec["best_val_accuracy"]
    )
    assert hist["dense1/kernel/scale_mean"].iloc[0] == pytest.approx(
        lqs.quantizers.MIN_SCALE
    )
    assert (
        hist["dense1/kernel/scale_mean"].iloc[-1]
        > hist["dense1/kernel/scale_mean"].iloc[0]
    )  # scales learned
    long = experiment.load_history(rec, long=True)
    assert list(long.columns) == ["epoch", "layer", "parameter", "stat", "value"]
    assert len(long) == 3 * 2 * 2 * len(experiment.HISTORY_STATS)
    # the stored model reproduces the recorded test accuracy
    model = experiment.load_model(rec["config_hash"])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y, _ = fake_load_with_info("mnist", "test")
    assert model.evaluate(x, y, verbose=0, return_dict=True)[
        "accuracy"
    ] == pytest.approx(rec["test_accuracy"])


def test_invalid_config_fails_before_loading(env, monkeypatch):
    def no_data(*a, **k):
        raise AssertionError("data must not be loaded for an invalid config")

    monkeypatch.setattr(lqs_data, "load_with_info", no_data)
    with pytest.raises(ValueError, match="'epochs'"):
        experiment.run({**TINY, "epochs": 0})
    with pytest.raises(ValueError, match="config #1: .*'lr'"):
        experiment.sweep([TINY, {**TINY, "lr": -1.0}], progress=False)
    assert env.calls == []


def test_truncated_record_is_recomputed(env):
    cfg = {**TINY, "epochs": 1}
    rec = experiment.run(cfg)
    path = env.store.record_path(rec["config_hash"])
    path.write_text(path.read_text()[:50])
    again = experiment.run(cfg)
    assert len(env.calls) == 2 and again["complete"] is True
    assert env.store.get(cfg) is not None


def _weights(h):
    return experiment.load_model(h).get_weights()


@pytest.mark.parametrize("flavour", ["nested", "loss_terms"])
def test_deterministic_reruns(env, flavour):
    cfg = {**TINY, "flavour": flavour}
    if flavour == "loss_terms":
        cfg.update(rate_inverse=1e-4, rate_max_bin=1e-3, rate_deviation=1e-2)
    a = experiment.run(cfg)
    wa = _weights(a["config_hash"])
    assert (
        experiment.run(dict(cfg)) == a and len(env.calls) == 1
    )  # cached: not trained again
    b = experiment.run(cfg, force=True)
    wb = _weights(b["config_hash"])
    assert len(env.calls) == 2
    for key in (
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "val_loss",
        "val_accuracy",
        "best_val_accuracy",
        "best_epoch",
        "mem_total_bits",
    ):
        assert a[key] == b[key], key
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)
    ha, hb = env.store.load_history(a["config_hash"]), experiment.load_history(b)
    cols = [c for c in ha.columns if c != "seconds"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols])
    if flavour == "loss_terms":
        assert "penalty_inverse" in ha and a["penalty_inverse"] > 0
    else:  # another seed: other numbers
        c = experiment.run({**cfg, "seed": 1})
        assert c["config_hash"] != a["config_hash"]
        assert not all(
            np.array_equal(x, y)
            for x, y in zip(wa, _weights(c["config_hash"]), strict=True)
        )


def test_lr_steps_change_the_rate_at_epoch_boundaries(env):
    plain = experiment.run(TINY)
    assert "learning_rate" not in experiment.load_history(plain)
    # empty steps are the default: the same hash, the stored run is returned
    assert experiment.run({**TINY, "lr_steps": []}) == plain and len(env.calls) == 1
    # a factor-1 step runs the scheduler and changes no number
    same = experiment.run({**TINY, "lr_steps": [[1, 1.0]]})
    assert same["config_hash"] != plain["config_hash"] and same["lr_steps"] == [
        [1, 1.0]
    ]
    for key in ("train_loss", "test_loss", "val_loss", "test_accuracy"):
        assert same[key] == plain[key], key
    for x, y in zip(
        _weights(same["config_hash"]), _weights(plain["config_hash"]), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    # halved after the first epoch (Keras's epoch index 1), logged per epoch
    halved = experiment.run({**TINY, "lr_steps": [[1, 0.5]]})
    rates = experiment.load_history(halved)["learning_rate"].to_numpy()[1:]
    np.testing.assert_allclose(rates, [1e-2, 5e-3], rtol=1e-6)
    assert halved["train_loss"] != plain["train_loss"]


def test_validation_every_skips_validations_and_changes_no_trained_number(env):
    every = experiment.run({**TINY, "epochs": 3})
    sparse = experiment.run({**TINY, "epochs": 3, "validation_every": 2})
    assert sparse["config_hash"] != every["config_hash"] and len(env.calls) == 2
    for key in ("train_loss", "test_loss", "val_loss", "val_accuracy", "test_accuracy"):
        assert sparse[key] == every[key], key
    for x, y in zip(
        _weights(sparse["config_hash"]), _weights(every["config_hash"]), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    full = experiment.load_history(every)["val_loss"].to_numpy()
    some = experiment.load_history(sparse)["val_loss"].to_numpy()
    # validated after epoch 2 only (Keras validation_freq); the other rows are empty
    assert np.isnan(some[[1, 3]]).all() and some[2] == full[2]
    assert sparse["best_epoch"] == 2


def test_post_training_parent_trains_with_the_lr_steps(env):
    cfg = {
        **TINY,
        "mode": "post_training",
        "pretrain_epochs": 2,
        "lr_steps": [[1, 0.5]],
    }
    child = experiment.run(cfg)
    parent = env.store.load_record(child["parent_hash"])
    assert parent["flavour"] == "fp32" and parent["lr_steps"] == [[1, 0.5]]
    for rec in (parent, child):  # the child restarts at lr with the same steps
        rates = experiment.load_history(rec)["learning_rate"].to_numpy()[1:]
        np.testing.assert_allclose(rates, [1e-2, 5e-3], rtol=1e-6)


def test_post_training_reuses_one_fp32_parent(env):
    # the parent trains with pretrain_lr; the children barely move (lr 1e-9), so their float
    # weights must equal the parent's: proof that they started from it
    base = {
        **TINY,
        "mode": "post_training",
        "pretrain_epochs": 2,
        "pretrain_lr": 1e-2,
        "lr": 1e-9,
        "epochs": 1,
    }
    a = experiment.run({**base, "threshold": 1e-9})
    b = experiment.run({**base, "threshold": 1e-6, "kernel_granularity": "column"})
    flavours = [c["flavour"] for c in env.calls]
    assert flavours == ["fp32", "nested", "nested"]  # the parent is planned first
    assert a["parent_hash"] == b["parent_hash"] == config_hash(parent_config(base))
    parent = env.store.load_record(a["parent_hash"])
    assert (
        parent["flavour"] == "fp32" and parent["epochs"] == 2 and parent["lr"] == 1e-2
    )
    fp32 = experiment.load_model(parent)
    for child_rec in (a, b):
        child = experiment.load_model(child_rec)
        for name in ("dense1", "dense2"):
            np.testing.assert_allclose(
                child.get_layer(name).kernel.numpy(),
                fp32.get_layer(name).kernel.numpy(),
                atol=1e-6,
            )
    fresh = (
        build_model("mlp", "fp32", input_shape=(8, 8, 1), seed=0)
        .get_layer("dense1")
        .kernel.numpy()
    )
    assert (
        np.abs(fresh - fp32.get_layer("dense1").kernel.numpy()).max() > 1e-3
    )  # the parent did train


def test_ptq_evaluates_without_training(env, monkeypatch):
    cfg = {**TINY, "flavour": "ptq", "bits": 4, "pretrain_epochs": 2}
    parent = experiment.run(parent_config(cfg))
    assert len(env.calls) == 1
    fits = []
    original_fit = keras.Model.fit

    def spy_fit(self, *a, **k):
        fits.append(self.name)
        return original_fit(self, *a, **k)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    rec = experiment.run(cfg)
    assert fits == []  # the parent was cached, the PTQ run trains nothing
    assert (
        rec["epochs_trained"] == 0
        and rec["train_seconds"] == 0
        and rec["parent_hash"] == parent["config_hash"]
    )
    assert rec["mem_max_bits"] <= 4 and rec["n_quantized_layers"] == 2
    assert rec["mem_compression"] > 7
    per_channel = experiment.run({**cfg, "kernel_granularity": "column"})
    assert per_channel["mem_n_scales"] > rec["mem_n_scales"]
    assert [c["flavour"] for c in env.calls].count("fp32") == 1


@pytest.mark.parametrize("flavour", ["lsq", "fixed_bits"])
def test_baseline_flavours_run(env, flavour):
    rec = experiment.run({**TINY, "flavour": flavour, "bits": 3, "epochs": 1})
    assert rec["mem_max_bits"] <= 4 and rec["n_quantized_layers"] == 2
    hist = experiment.load_history(rec)
    assert "dense1/kernel/bits_max" in hist


def test_sweep_resumes_after_crash(env, capsys):
    configs = [{**TINY, "epochs": 1, "seed": s} for s in (0, 1, 2)]
    state = {"n": 0}

    def crash_on_second(job, *args, **kwargs):
        state["n"] += 1
        env.calls.append(job.config)
        if state["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return env.original(job, *args, **kwargs)

    env.monkeypatch.setattr(experiment, "train_job", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        experiment.sweep(configs, desc="resume-test", progress=False)
    assert [c["seed"] for c in env.calls] == [0, 1]
    assert env.store.exists(configs[0]) and not env.store.exists(configs[1])
    df = experiment.sweep(configs, desc="resume-test", progress=False)
    # the first run was not retrained: only seeds 1 and 2 ran again
    assert [c["seed"] for c in env.calls] == [0, 1, 1, 2]
    assert list(df["seed"]) == [0, 1, 2] and len(df) == 3
    assert df["complete"].all()
    for key in KEYS + experiment.RECORD_COLUMNS:
        assert key in df.columns
    out = capsys.readouterr().out
    assert str(env.store.root) in out and "1 already stored" in out
    # a third sweep trains nothing
    experiment.sweep(configs, progress=False)
    assert len(env.calls) == 4


def test_load_model_missing(env):
    rec = experiment.run({**TINY, "epochs": 1}, save_model=False)
    assert rec["model_sha256"] is None
    with pytest.raises(FileNotFoundError, match="save_model=True"):
        experiment.load_model(rec)
    with pytest.raises(ValueError, match="config hash"):
        experiment.load_model({"nothing": 1})


def test_concurrent_runs_of_one_config_train_once(env):
    """Two callers asking for one configuration at once: one trains, the other waits for its record."""
    import threading
    import time

    def slow(job, parent, verbose, save_model):
        env.calls.append(job.config)
        time.sleep(
            0.3
        )  # without the store lock the other caller would start training meanwhile
        return experiment.RunResult({"test_accuracy": 0.5}, None, None)

    env.monkeypatch.setattr(experiment, "train_job", slow)
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda: results.append(experiment.run(TINY)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(env.calls) == 1
    assert (
        len(results) == 2 and results[0]["record_sha256"] == results[1]["record_sha256"]
    )
    assert not env.store.lock_path(
        config_hash(TINY)
    ).exists()  # the lock file goes with the lock: no leftovers
    assert env.store.load_record(config_hash(TINY)) is not None


def test_steps_per_execution_changes_no_number(env, monkeypatch):
    """fit runs STEPS_PER_EXECUTION batches per call; the record equals one batch per call."""
    default = experiment.STEPS_PER_EXECUTION
    assert default > 1
    seen = []
    original_fit = keras.Model.fit

    def spy_fit(self, *a, **k):
        seen.append(self.steps_per_execution)
        return original_fit(self, *a, **k)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    cfg = {**TINY, "flavour": "loss_terms", "rate_inverse": 1e-4, "rate_max_bin": 1e-3}
    h = config_hash(cfg)
    results = []
    # 86 training images at batch 16 = 6 batches per epoch: one partial execution, 4 + 2, 1 x 6
    for n in (default, 4, 1):
        monkeypatch.setattr(experiment, "STEPS_PER_EXECUTION", n)
        rec = experiment.run(cfg, force=True)
        hist = env.store.load_history(h).drop(columns="seconds")
        results.append((rec, hist, _weights(h)))
    assert seen == [default, 4, 1]
    (ref, ref_hist, ref_w), *others = results[::-1]
    for rec, hist, w in others:
        for key in (
            "train_loss",
            "test_loss",
            "test_accuracy",
            "val_loss",
            "penalty_inverse",
        ):
            assert rec[key] == ref[key], key
        pd.testing.assert_frame_equal(hist, ref_hist)
        for x, y in zip(w, ref_w, strict=True):
            np.testing.assert_array_equal(x, y)


# ==================================================================================== validation split


def test_validation_split_hand_computed():
    # classes of 10, 9, 9, 5, 1 images, fraction 0.1: k = floor(3.4 + 0.5) = 3; fraction * n_c =
    # 1.0, 0.9, 0.9, 0.5, 0.1 -> floors 1, 0, 0, 0, 0 and the 2 remaining slots go to the largest
    # remainders (classes 1 and 2, 0.9 each) -> 1, 1, 1, 0, 0
    y = np.repeat(np.arange(5), [10, 9, 9, 5, 1])
    np.random.default_rng(0).shuffle(y)
    tr, va = experiment.validation_split(y, 0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(y[va], minlength=5), [1, 1, 1, 0, 0])
    assert len(tr) == 31 and len(va) == 3


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.49])
def test_validation_split_stratified_disjoint_and_seeded(fraction):
    rng = np.random.default_rng(7)
    y = rng.choice(10, size=1003, p=np.arange(1, 11) / 55)  # imbalanced classes
    tr, va = experiment.validation_split(y, fraction, seed=3)
    n, full = len(y), np.bincount(y, minlength=10)
    assert len(va) == int(np.floor(fraction * n + 0.5))
    # every class holds out fraction * count images, to within one
    held = np.bincount(y[va], minlength=10)
    assert np.all(np.abs(held - fraction * full) < 1), (held, fraction * full)
    # disjoint, covering every image, original order kept
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    # the seed alone decides: equal seeds, equal splits; another seed, another split
    again = experiment.validation_split(y.copy(), fraction, seed=3)
    np.testing.assert_array_equal(again[0], tr)
    np.testing.assert_array_equal(again[1], va)
    other = experiment.validation_split(y, fraction, seed=4)
    assert not np.array_equal(other[1], va)
    np.testing.assert_array_equal(
        np.bincount(y[other[1]], minlength=10), held
    )  # same per-class counts


def test_validation_split_empty_and_refused():
    y = np.arange(96) % 10
    for fraction, n in ((0.0, 96), (0.004, 96), (0.1, 4)):  # round(fraction * n) = 0
        tr, va = experiment.validation_split(y[:n], fraction, seed=0)
        np.testing.assert_array_equal(tr, np.arange(n))
        assert va.size == 0
    for bad in (0.5, -0.1, float("nan")):
        with pytest.raises(
            ValueError, match=r"validation_fraction must be >= 0 and < 0.5"
        ):
            experiment.validation_split(y, bad, seed=0)


def test_best_epoch_is_chosen_on_validation():
    hist = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3, 4],
            "accuracy": [0.1, 0.5, 0.6, 0.9, 0.95],  # training accuracy: ignored
            "val_accuracy": [
                0.99,
                0.4,
                0.8,
                0.8,
                np.nan,
            ],  # epoch 0 (untrained): ignored
        }
    )
    assert experiment._best_epoch(hist, 4) == (2, 0.8)  # the first of the tied best
    assert experiment._best_epoch(hist.iloc[:1], 0) == (0, 0.99)  # ptq: epoch 0
    assert experiment._best_epoch(hist.drop(columns="val_accuracy"), 4) is None


@pytest.fixture
def fits(monkeypatch):
    """What every ``keras.Model.fit`` call received: training images, labels, validation_data."""
    seen: list[dict] = []
    original_fit = keras.Model.fit

    def spy_fit(self, x=None, y=None, *args, **kwargs):
        seen.append(
            {"x": np.asarray(x), "y": np.asarray(y), "val": kwargs["validation_data"]}
        )
        return original_fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    return seen


def _rows(x: np.ndarray) -> set[bytes]:
    """Each image as bytes (the synthetic images are all different)."""
    return {row.tobytes() for row in np.asarray(x).reshape(len(x), -1)}


def _heldout(fit: dict) -> tuple[np.ndarray, np.ndarray]:
    """The training images a fit did not train on, found independently of validation_split."""
    x, y, _ = fake_load_with_info("mnist", "train")
    trained = _rows(fit["x"])
    keep = np.array([row.tobytes() not in trained for row in x.reshape(len(x), -1)])
    return x[keep], y[keep]


def _evaluate_stored(rec: dict, x, y) -> dict:
    model = experiment.load_model(rec)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.evaluate(x, y, verbose=0, return_dict=True)


def test_run_validates_on_heldout_training_images(env, fits):
    rec = experiment.run({**TINY, "epochs": 3})
    (fit,) = fits
    x_val, y_val = fit["val"]
    x_held, y_held = _heldout(fit)
    # validation = exactly the training images not trained on; never the test set
    assert _rows(x_val) == _rows(x_held) and len(x_val) == rec["n_val"] == 10
    assert len(fit["x"]) == rec["n_train"] == 86
    x_te, _, _ = fake_load_with_info("mnist", "test")
    assert not _rows(x_val) & _rows(x_te) and not _rows(fit["x"]) & _rows(x_te)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=10), np.ones(10))
    # the recorded validation metrics are the final model's on those images
    ref = _evaluate_stored(rec, x_held, y_held)
    assert rec["val_accuracy"] == pytest.approx(ref["accuracy"])
    assert rec["val_loss"] == pytest.approx(ref["loss"], rel=1e-5)
    # the history's val_* are the validation split; the best epoch is picked on them
    hist = experiment.load_history(rec)
    assert hist["val_accuracy"].iloc[-1] == pytest.approx(rec["val_accuracy"])
    val_acc = hist["val_accuracy"].to_numpy()[1:]
    assert rec["best_epoch"] == 1 + int(np.argmax(val_acc))
    assert rec["best_val_accuracy"] == pytest.approx(val_acc.max())


def test_split_shared_by_flavours_of_one_seed(env, fits):
    base = {**TINY, "epochs": 1}
    configs = [
        {**base, "flavour": "nested"},
        {**base, "flavour": "loss_terms", "rate_inverse": 1e-4},
        {**base, "flavour": "fp32"},
        {**base, "flavour": "lsq", "bits": 3},
        {**base, "flavour": "nested", "seed": 1},
    ]
    recs = [experiment.run(c) for c in configs]
    assert len(fits) == 5 and len({r["config_hash"] for r in recs}) == 5
    ref = fits[0]
    for fit in fits[1:4]:  # seed 0: the same training images and validation split
        np.testing.assert_array_equal(fit["x"], ref["x"])
        np.testing.assert_array_equal(fit["y"], ref["y"])
        np.testing.assert_array_equal(fit["val"][0], ref["val"][0])
        np.testing.assert_array_equal(fit["val"][1], ref["val"][1])
    other = fits[4]  # seed 1: another split of the same images
    assert _rows(other["val"][0]) != _rows(ref["val"][0])
    assert _rows(other["x"]) | _rows(other["val"][0]) == _rows(ref["x"]) | _rows(
        ref["val"][0]
    )


def test_post_training_and_ptq_parent_trains_on_the_same_images(env, fits):
    base = {**TINY, "pretrain_epochs": 1, "epochs": 1, "validation_fraction": 0.2}
    child = experiment.run({**base, "mode": "post_training"})
    parent_fit, child_fit = fits
    np.testing.assert_array_equal(parent_fit["x"], child_fit["x"])
    np.testing.assert_array_equal(parent_fit["val"][0], child_fit["val"][0])
    parent = env.store.load_record(child["parent_hash"])
    assert parent["validation_fraction"] == 0.2 and parent["n_val"] == child["n_val"]
    assert child["n_val"] == round(0.2 * 96) and child["n_train"] == 96 - child["n_val"]
    # ptq: the same parent (cached), evaluated on the split its parent never trained on
    ptq = experiment.run({**base, "flavour": "ptq", "bits": 4})
    assert len(fits) == 2 and ptq["parent_hash"] == child["parent_hash"]
    x_held, y_held = _heldout(parent_fit)
    ref = _evaluate_stored(ptq, x_held, y_held)
    assert ptq["val_accuracy"] == pytest.approx(ref["accuracy"])
    assert (ptq["best_epoch"], ptq["best_val_accuracy"]) == (0, ptq["val_accuracy"])
    assert ptq["n_val"] == child["n_val"] and ptq["n_train"] == child["n_train"]
    hist = experiment.load_history(ptq)
    assert hist["val_accuracy"].iloc[0] == pytest.approx(ptq["val_accuracy"])


def test_validation_fraction_zero_trains_on_everything(env, fits):
    base = {**TINY, "epochs": 1, "pretrain_epochs": 1, "validation_fraction": 0}
    rec = experiment.run(base)
    ptq = experiment.run({**base, "flavour": "ptq", "bits": 4})
    assert [f["val"] for f in fits] == [None, None]  # the run and ptq's FP32 parent
    for r in (rec, ptq):
        assert (r["n_train"], r["n_val"], r["validation_fraction"]) == (96, 0, 0.0)
        for key in ("val_accuracy", "val_loss", "best_val_accuracy", "best_epoch"):
            assert r[key] is None, key
        assert 0 <= r["test_accuracy"] <= 1
        assert "val_accuracy" not in experiment.load_history(r)
    assert len(fits[0]["x"]) == 96


def test_sweep_announces_a_store_inside_the_repository_by_its_relative_path():
    """The executed notebooks are book pages: no machine-specific path in them."""
    from companion import paths

    assert experiment._shown_path(paths.ROOT / "results" / "runs") == "results/runs"
    assert experiment._shown_path(Path("/elsewhere/runs")) == "/elsewhere/runs"
