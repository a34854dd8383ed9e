"""companion.engine.store: atomic, checksummed run records; corrupted or partial records are never trusted."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest

from companion.engine.config import config_hash, validate_config
from companion.engine.store import RunStore, default_store, to_jsonable

CFG = {"dataset": "mnist", "epochs": 1, "train_limit": 64}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    return RunStore()


def _history():
    return pd.DataFrame(
        {
            "epoch": [0, 1],
            "loss": [np.nan, 0.5],
            "dense1/kernel/scale_mean": [1e-5, 2e-3],
        }
    )


def test_default_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "r1"))
    s = default_store()
    assert s.root == tmp_path / "r1" / "runs"
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "r2"))
    assert s.root == tmp_path / "r2" / "runs"  # resolved at use, not at construction


def test_put_get_roundtrip(store):
    rec = store.put(
        CFG,
        {"test_accuracy": np.float32(0.5), "n": np.int64(3), "nan": float("nan")},
        _history(),
    )
    h = config_hash(CFG)
    assert rec["config_hash"] == h and rec["complete"] is True
    assert (
        rec["test_accuracy"] == pytest.approx(0.5)
        and rec["n"] == 3
        and rec["nan"] is None
    )
    assert store.get(CFG) == rec
    assert store.get(validate_config(CFG)) == rec  # same hash for the validated form
    assert store.exists(CFG)
    assert not store.exists({**CFG, "seed": 1})
    assert sorted(os.listdir(store.root)) == [f"{h}.history.csv", f"{h}.json"]
    hist = store.load_history(h)
    assert list(hist.columns) == ["epoch", "loss", "dense1/kernel/scale_mean"]
    assert hist["loss"].isna().iloc[0] and hist["loss"].iloc[1] == 0.5
    df = store.list_records()
    assert len(df) == 1 and df.loc[0, "config_hash"] == h


def test_truncated_record_is_ignored_with_warning(store, caplog):
    store.put(CFG, {"test_accuracy": 0.5}, _history())
    path = store.record_path(config_hash(CFG))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING, logger="companion.engine.store"):
        assert store.get(CFG) is None
    assert "unreadable" in caplog.text and "recomputed" in caplog.text
    assert store.list_records().empty


@pytest.mark.parametrize(
    "edit,reason",
    [
        (lambda r: r.update(test_accuracy=0.99), "checksum"),
        (lambda r: r.pop("complete"), "not marked complete"),
        (lambda r: r.update(complete=False), "not marked complete"),
    ],
)
def test_edited_or_incomplete_record_is_ignored(store, caplog, edit, reason):
    store.put(CFG, {"test_accuracy": 0.5})
    path = store.record_path(config_hash(CFG))
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="companion.engine.store"):
        assert store.get(CFG) is None
    assert reason in caplog.text


def test_history_or_model_file_damage_invalidates_record(store, caplog):
    store.put(CFG, {"test_accuracy": 0.5}, _history())
    h = config_hash(CFG)
    store.history_path(h).write_text("epoch,loss\n0,1\n")
    with caplog.at_level(logging.WARNING, logger="companion.engine.store"):
        assert store.get(CFG) is None
    assert "does not match" in caplog.text
    store.put(CFG, {"test_accuracy": 0.5}, _history())
    store.history_path(h).unlink()
    assert store.get(CFG) is None


def test_model_saved_and_checked(store):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    rec = store.put(CFG, {"x": 1}, None, model)
    h = rec["config_hash"]
    assert store.model_path(h).exists() and rec["model_sha256"]
    loaded = keras.models.load_model(store.model_path(h))
    np.testing.assert_array_equal(
        loaded.get_layer("d").kernel.numpy(), model.get_layer("d").kernel.numpy()
    )
    with open(store.model_path(h), "ab") as fh:
        fh.write(b"garbage")
    assert store.get(CFG) is None


def test_leftover_temp_files_are_ignored(store):
    store.root.mkdir(parents=True)
    h = config_hash(CFG)
    # what a crash between write and rename leaves behind: temp names never count as records
    (store.root / f".{h}.json.abc123.tmp.json").write_text('{"complete": true}')
    (store.root / f".{h}.history.csv.x.tmp.csv").write_text("epoch\n0\n")
    assert store.get(CFG) is None
    assert store.hashes() == []
    assert store.list_records().empty
    store.put(CFG, {"test_accuracy": 0.5})
    assert store.hashes() == [h]
    assert store.get(CFG)["test_accuracy"] == 0.5


def test_record_written_last(store, monkeypatch):
    """A crash while saving the model leaves no record: the run counts as not done."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(RuntimeError):
        store.put(CFG, {"x": 1}, _history(), model)
    assert store.get(CFG) is None
    assert not store.record_path(config_hash(CFG)).exists()


def test_hash_validation_and_delete(store):
    with pytest.raises(ValueError, match="not a config hash"):
        store.record_path("../etc")
    rec = store.put(CFG, {"x": 1}, _history())
    store.delete(rec["config_hash"])
    assert store.get(CFG) is None and os.listdir(store.root) == []


def test_to_jsonable():
    assert to_jsonable(
        {
            "a": np.float32(1.5),
            "b": (1, np.int64(2)),
            "c": np.array([1.0, np.inf]),
            "d": np.bool_(True),
        }
    ) == {"a": 1.5, "b": [1, 2], "c": [1.0, None], "d": True}


def test_corrupted_record_is_warned_about_once(store, caplog):
    """run() and sweep() look a record up several times: one warning per corruption, not three."""
    store.put(CFG, {"test_accuracy": 0.5})
    path = store.record_path(config_hash(CFG))
    path.write_text(path.read_text()[:40])
    with caplog.at_level(logging.WARNING, logger="companion.engine.store"):
        for _ in range(3):
            assert store.get(CFG) is None
        assert (
            RunStore().get(CFG) is None
        )  # another store object on the same folder: still once
    assert caplog.text.count("ignoring run record") == 1
    caplog.clear()
    path.write_text("{}")  # a different damage: said again
    with caplog.at_level(logging.WARNING, logger="companion.engine.store"):
        assert store.get(CFG) is None
    assert (
        caplog.text.count("ignoring run record") == 1
        and "not marked complete" in caplog.text
    )


def test_stale_temp_and_lock_files_are_removed_on_first_write(store, caplog):
    import time

    from lqs.fileio import file_lock

    store.root.mkdir(parents=True)
    h = config_hash(CFG)
    old_tmp = store.root / f".{h}.json.k3j2h1a0.tmp.json"
    fresh_tmp = store.root / f".{h}.history.csv.a1b2c3d4.tmp.csv"
    unheld = store.root / ".0123456789abcdef.lock"
    for p in (old_tmp, fresh_tmp, unheld):
        p.write_text("x")
    two_hours_ago = time.time() - 7200
    os.utime(old_tmp, (two_hours_ago, two_hours_ago))
    held = store.lock_path("fedcba9876543210")
    with (
        file_lock(held),
        caplog.at_level(logging.INFO, logger="companion.engine.store"),
    ):
        store.put(CFG, {"test_accuracy": 0.5})
        assert held.exists()  # in use: kept
    assert not old_tmp.exists() and not unheld.exists()
    assert fresh_tmp.exists()  # a live writer's temporary file is never touched
    assert "removed 2 leftover" in caplog.text and str(store.root) in caplog.text
    assert not held.exists()  # released: the lock removes its own file


def test_disk_full_while_storing_names_the_file_and_the_fix(store, monkeypatch):
    import errno

    def no_space(self, path, *args, **kwargs):
        with open(path, "w") as fh:
            fh.write("epoch\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space)
    with pytest.raises(OSError) as err:
        store.put(CFG, {"test_accuracy": 0.5}, _history())
    msg = str(err.value)
    h = config_hash(CFG)
    assert err.value.errno == errno.ENOSPC
    assert (
        f"could not store run {h} in {store.root}" in msg
        and str(store.history_path(h)) in msg
    )
    assert "free space" in msg and "LQS_RESULTS" in msg
    assert sorted(os.listdir(store.root)) == []  # no temp file, no history, no record
    assert store.get(CFG) is None
