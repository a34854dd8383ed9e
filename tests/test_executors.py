"""companion.engine.executors: plan -> execute -> store on the serial and the Ray executor.

Training runs use a tiny *real* dataset: Fashion-MNIST idx files of 8x8 synthetic images written
under a temporary ``LQS_DATA`` (the loader reads them like the official files), so the driver
and the Ray workers load the same pixels through the same code. The Ray tests share one local
Ray instance (module fixture, 2 workers) and shut it down at the end.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from companion.engine import executors, experiment
from companion.engine.config import config_hash, parent_config
from companion.engine.executors import (
    Failure,
    Job,
    RayExecutor,
    SerialExecutor,
    SweepFailed,
)
from companion.engine.store import RunStore

#: train_job as defined (the tests below replace it in the driver; Ray workers import it afresh)
REAL_TRAIN_JOB = experiment.train_job

BASE = {
    "dataset": "fashion_mnist",
    "epochs": 2,
    "batch_size": 16,
    "lr": 1e-2,
    "seed": 0,
}


def _write_idx(folder: Path, split: str, n: int, seed: int) -> None:
    """8x8 images whose class is a bright row (0-7) or column (8-9), as gzipped idx files."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10)[rng.permutation(n)].astype(np.uint8)
    x = (rng.random((n, 8, 8)) * 80).astype(np.uint8)
    for i, c in enumerate(y):
        if c < 8:
            x[i, c, :] += 170
        else:
            x[i, :, c - 8] += 170
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 8, 8) + x.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + y.tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """``LQS_DATA`` with tiny Fashion-MNIST idx files (96 train, 40 test images), for this module."""
    root = tmp_path_factory.mktemp("data")
    (root / "fashion_mnist").mkdir()
    _write_idx(root / "fashion_mnist", "train", 96, 1)
    _write_idx(root / "fashion_mnist", "test", 40, 2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LQS_DATA", str(root))
        mp.setenv("LQS_DEBIAN_FASHION_MNIST", str(root / "no-debian"))
        mp.delenv("RAY_ADDRESS", raising=False)
        yield root


@pytest.fixture
def results(data_dir, tmp_path, monkeypatch):
    """A results folder of this test (the driver's; workers never write)."""
    monkeypatch.setenv("LQS_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv(executors.ENV_EXECUTOR, raising=False)
    return RunStore()


@pytest.fixture(scope="module")
def ray_instance(data_dir, tmp_path_factory):
    """One local Ray instance with 2 workers for the Ray tests of this module; its workers claim
    their cores in a folder of this module (not the machine's, which a real sweep may use)."""
    ray = pytest.importorskip("ray")
    cores = tmp_path_factory.mktemp("cores")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(executors, "core_lock_dir", lambda: cores)
        executors._start_ray(2, None)
        # workers cannot import this test module: its functions travel by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray
        executors.shutdown()
    assert not ray.is_initialized()


def _counting(calls: list):
    def train(job, *args, **kwargs):
        calls.append(job.config_hash)
        return REAL_TRAIN_JOB(job, *args, **kwargs)

    return train


# ==================================================================================== choosing


def test_executor_from_environment(monkeypatch):
    monkeypatch.delenv(executors.ENV_EXECUTOR, raising=False)
    assert isinstance(executors.get_executor(), SerialExecutor)  # library default
    monkeypatch.setenv(executors.ENV_EXECUTOR, "ray")
    monkeypatch.setenv(executors.ENV_WORKERS, "3")
    monkeypatch.setenv(executors.ENV_GPUS_PER_RUN, "0.25")
    monkeypatch.setenv("RAY_ADDRESS", "")
    ex = executors.get_executor()
    assert isinstance(ex, RayExecutor) and ex.local
    assert ex.describe() == "ray (local, 3 workers, 0.25 GPU per run)"
    assert executors.get_executor("serial").name == "serial"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not executors.get_executor().local
    monkeypatch.setenv(executors.ENV_EXECUTOR, "dask")
    with pytest.raises(
        ValueError, match=r"LQS_EXECUTOR='dask'.*allowed: 'serial', 'ray'"
    ):
        executors.get_executor()
    monkeypatch.setenv(executors.ENV_EXECUTOR, "ray")
    monkeypatch.setenv(executors.ENV_WORKERS, "zero")
    with pytest.raises(ValueError, match=r"LQS_WORKERS='zero' is not a positive int"):
        executors.get_executor()


def test_pin_mode_from_environment(monkeypatch):
    monkeypatch.delenv(executors.ENV_PIN_WORKERS, raising=False)
    assert executors.pin_mode() == "auto"
    monkeypatch.setenv(executors.ENV_PIN_WORKERS, " OFF ")
    assert executors.pin_mode() == "off"
    monkeypatch.setenv(executors.ENV_PIN_WORKERS, "sometimes")
    allowed = r"LQS_PIN_WORKERS='sometimes' is not a pinning mode; allowed: 'auto', 'on', 'off'"
    with pytest.raises(ValueError, match=allowed + r".*LQS_PIN_WORKERS=off"):
        executors.pin_mode()
    # the executor checks it when it is made: before Ray starts or anything trains
    with pytest.raises(ValueError, match=allowed):
        RayExecutor()


@pytest.mark.parametrize(
    ("mode", "workers", "address", "pinned"),
    [
        ("auto", 4, "", True),  # one worker per usable core
        ("auto", 3, "", False),  # fewer workers: they may use the spare core
        ("auto", 5, "", False),
        ("auto", 4, "10.0.0.1:6379", False),  # a cluster's nodes: unknown here
        ("on", 3, "10.0.0.1:6379", True),
        ("off", 4, "", False),
    ],
)
def test_which_ray_workers_claim_a_core(monkeypatch, mode, workers, address, pinned):
    monkeypatch.setattr(executors, "_usable_cores", lambda: 4)
    monkeypatch.setenv(executors.ENV_PIN_WORKERS, mode)
    monkeypatch.setenv("RAY_ADDRESS", address)
    ex = RayExecutor(workers=workers)
    assert ex.pins_cores is pinned
    assert ex.describe().endswith(", one core each)") is pinned


_CLAIM_SCRIPT = """
import json, os, sys, threading
from pathlib import Path
from companion.engine import executors
started, stop = threading.Event(), threading.Event()
t = threading.Thread(target=lambda: (started.set(), stop.wait()))
t.start()
started.wait()
cpu = executors.claim_core(Path(sys.argv[1]))
again = executors.claim_core(Path(sys.argv[1]))
mine, thread = (sorted(os.sched_getaffinity(i)) for i in (0, t.native_id))
stop.set()
print(json.dumps([cpu, again, mine, thread]))
"""


def _claim_in_new_process(folder: Path) -> tuple:
    """(claimed core, the second call's core, affinity of the main thread, of an older thread)."""
    out = subprocess.run(
        [sys.executable, "-c", _CLAIM_SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(json.loads(out))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_claim_core_pins_every_thread_to_a_core_nobody_holds(tmp_path):
    """A process claims the first usable core whose lock nobody holds and pins all its threads
    (also one started before the claim) there; with every core held it stays where it was; a
    claim ends with its process."""
    from companion.engine.store import HeldLock

    cores = sorted(os.sched_getaffinity(0))
    held = [HeldLock.acquire(tmp_path / f"core-{c}.lock") for c in cores[:-1]]
    last = cores[-1]
    pinned_to_last = (last, last, [last], [last])
    assert _claim_in_new_process(tmp_path) == pinned_to_last
    # the first claimant's lock ended with its process: the same core is free again
    assert _claim_in_new_process(tmp_path) == pinned_to_last
    held.append(HeldLock.acquire(tmp_path / f"core-{last}.lock"))
    assert _claim_in_new_process(tmp_path) == (None, None, cores, cores)
    held.pop(0).release()
    first = cores[0]
    assert _claim_in_new_process(tmp_path) == (first, first, [first], [first])
    for lock in held:
        lock.release()


def test_importing_the_engine_does_not_import_ray():
    code = (
        "import sys, lqs, companion.engine.experiment, companion.engine.executors; "
        "sys.exit('ray' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


def test_job_is_immutable_and_picklable():
    import pickle

    cfg = experiment.validate_config(BASE)
    job = Job.of(cfg, config_hash(cfg))
    assert job.config == cfg and job.config is not job.config
    with pytest.raises(AttributeError):
        job.config_hash = "0" * 16  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(job)) == job
    assert job.describe().startswith(f"{job.config_hash} (flavour=nested")


def test_try_lock_passes_over_a_held_lock(results):
    h = config_hash(BASE)
    held = results.try_lock(h)
    assert held is not None and results.try_lock(h) is None
    got = []
    t = threading.Thread(target=lambda: got.append(results.try_lock(h)))
    t.start()
    t.join()
    assert got == [None]
    held.release()
    held.release()  # idempotent
    again = results.try_lock(h)
    assert again is not None
    again.release()
    with results.lock(h):  # the blocking lock of RunStore.lock is the same lock
        assert results.try_lock(h) is None


# ==================================================================================== plan


def test_plan_parents_first_stored_skipped(results):
    child = {**BASE, "mode": "post_training", "pretrain_epochs": 1, "epochs": 1}
    ptq = {**BASE, "flavour": "ptq", "bits": 4, "pretrain_epochs": 1}
    configs = [BASE, child, ptq, {**child, "threshold": 1e-6}, BASE]
    validated = experiment._validate_all(configs, "t")
    plan = experiment._plan(validated, results, force=False)
    ph = config_hash(parent_config(child))
    assert ph == config_hash(parent_config(ptq))  # one FP32 parent for both
    assert [j.config_hash for j in plan.to_train][0] == ph
    assert len(plan.to_train) == 5 and plan.parents == {ph}
    assert plan.order == [config_hash(c) for c in configs]
    assert plan.width() == 4
    # a stored run is skipped; a single run (or a parent then one child) trains in-process
    results.put(BASE, {"test_accuracy": 0.5})
    plan = experiment._plan(validated[:1], results, force=False)
    assert plan.to_train == [] and set(plan.stored) == {config_hash(BASE)}
    assert experiment._plan(validated[:1], results, force=True).to_train
    lone = experiment._plan(validated[1:2], results, force=False)
    assert lone.width() == 1
    assert isinstance(experiment._choose_executor("ray", lone), SerialExecutor)
    # a stored parent without its model is trained again (children need the model)
    results.put(parent_config(child), {"test_accuracy": 0.5})
    plan = experiment._plan(validated[1:2], results, force=False)
    assert [j.config_hash for j in plan.to_train] == [ph, config_hash(child)]


# ==================================================================================== failures


def test_serial_failure_reported_others_stored_rerun_trains_it(results, monkeypatch):
    configs = [{**BASE, "epochs": 1, "seed": s} for s in (0, 1, 2)]
    bad = config_hash(configs[1])
    calls: list[str] = []

    def flaky(job, *args, **kwargs):
        calls.append(job.config_hash)
        if job.config_hash == bad:
            raise ArithmeticError("simulated failure")
        return REAL_TRAIN_JOB(job, *args, **kwargs)

    monkeypatch.setattr(experiment, "train_job", flaky)
    with pytest.raises(SweepFailed) as info:
        experiment.sweep(configs, desc="flaky", progress=False)
    message = str(info.value)
    assert (
        f"{bad} (flavour=nested" in message and "ArithmeticError: simulated" in message
    )
    assert "1 run(s) failed (2 other run(s) finished and are stored" in message
    assert [f.key for _, f in info.value.failures] == [bad]
    assert results.exists(configs[0]) and results.exists(configs[2])
    assert not results.exists(configs[1])
    assert not list(results.root.glob(".*.lock"))  # every lock released
    monkeypatch.setattr(experiment, "train_job", _counting(calls := []))
    df = experiment.sweep(configs, desc="flaky", progress=False)
    assert calls == [bad] and df["complete"].all()
    # a single run raises its own error, unchanged
    monkeypatch.setattr(experiment, "train_job", flaky)
    with pytest.raises(ArithmeticError):
        experiment.run(configs[1], force=True)


def test_failed_parent_fails_its_children(results, monkeypatch):
    child = {**BASE, "mode": "post_training", "pretrain_epochs": 1, "epochs": 1}
    ph = config_hash(parent_config(child))

    def parent_breaks(job, *args, **kwargs):
        if job.config_hash == ph:
            raise RuntimeError("parent broke")
        return REAL_TRAIN_JOB(job, *args, **kwargs)

    monkeypatch.setattr(experiment, "train_job", parent_breaks)
    configs = [child, {**child, "threshold": 1e-6}, {**BASE, "epochs": 1}]
    with pytest.raises(SweepFailed) as info:
        experiment.sweep(configs, progress=False)
    keys = [f.key for _, f in info.value.failures]
    assert keys == [ph, config_hash(configs[0]), config_hash(configs[1])]
    assert f"its FP32 parent {ph} failed (RuntimeError: parent broke)" in str(
        info.value
    )
    assert results.exists(configs[2])
    with pytest.raises(
        RuntimeError, match="parent broke"
    ):  # one run: the parent's error
        experiment.run(child)


# ==================================================================================== Ray


def _dying_or_raising(job, *args, **kwargs):
    """In a Ray worker: seed 1 raises, seed 2 kills its worker on the first attempt."""
    marks = Path(os.environ["LQS_DATA"]) / f"attempts-{job.config_hash}"
    with open(marks, "a") as f:
        f.write("x")
    seed = job.config["seed"]
    if seed == 1:
        raise ArithmeticError("raised in the worker")
    if seed == 2 and marks.stat().st_size == 1:
        os._exit(1)  # the worker dies; Ray retries the task on a new one
    return REAL_TRAIN_JOB(job, *args, **kwargs)


def _assert_same_run(a: RunStore, b: RunStore, h: str) -> None:
    ra, rb = a.load_record(h), b.load_record(h)
    assert experiment.stable_values(ra) == experiment.stable_values(rb), h
    ha, hb = a.load_history(h), b.load_history(h)
    pd.testing.assert_frame_equal(
        ha.drop(columns="seconds"), hb.drop(columns="seconds")
    )
    if ra["model_sha256"]:
        wa = experiment.load_model(h, store=a).get_weights()
        wb = experiment.load_model(h, store=b).get_weights()
        assert len(wa) == len(wb)
        for x, y in zip(wa, wb, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_serial_and_ray_records_are_bit_identical(
    ray_instance, results, tmp_path, capsys
):
    """The same sweep on both executors: equal records, histories (timing apart) and weights."""
    configs = [
        {**BASE, "flavour": "nested", "kernel_granularity": "column"},
        {**BASE, "flavour": "loss_terms", "rate_inverse": 1e-4, "rate_max_bin": 1e-3},
        {**BASE, "mode": "post_training", "pretrain_epochs": 1, "epochs": 1},
        {**BASE, "flavour": "ptq", "bits": 4, "pretrain_epochs": 1},
        {**BASE, "arch": "cnn", "epochs": 1, "kernel_granularity": "filter"},
    ]
    serial = RunStore(tmp_path / "serial")
    ray_store = RunStore(tmp_path / "ray")
    experiment.sweep(configs, store=serial, executor="serial", progress=False)
    capsys.readouterr()
    df = experiment.sweep(configs, desc="on-ray", store=ray_store, executor="ray")
    out, err = capsys.readouterr()
    pinned = ", one core each" if executors._usable_cores() == 2 else ""
    assert f"on-ray: training 6 runs on ray (local, 2 workers{pinned})" in out
    assert (
        "6/6" in err.replace("\r", "\n").splitlines()[-1]
    )  # the bar counted every run
    assert len(df) == 5 and df["complete"].all()
    assert serial.hashes() == ray_store.hashes() and len(serial.hashes()) == 6
    for h in serial.hashes():
        _assert_same_run(serial, ray_store, h)


@pytest.mark.slow
def test_ray_failures_retries_and_rerun(ray_instance, results, data_dir, monkeypatch):
    """A raised error is reported (not retried), a lost worker is retried; a rerun trains the rest."""
    configs = [{**BASE, "epochs": 1, "seed": s} for s in (0, 1, 2)]
    hashes = [config_hash(c) for c in configs]
    monkeypatch.setattr(experiment, "train_job", _dying_or_raising)
    with pytest.raises(SweepFailed) as info:
        experiment.sweep(configs, desc="ray-fail", executor="ray", progress=False)
    (job, failure), *others = info.value.failures
    assert others == [] and failure.key == hashes[1] and not failure.worker_died
    assert "ArithmeticError: raised in the worker" in str(info.value)
    attempts = {h: (data_dir / f"attempts-{h}").stat().st_size for h in hashes}
    assert attempts == {hashes[0]: 1, hashes[1]: 1, hashes[2]: 2}
    assert results.exists(configs[0]) and results.exists(configs[2])
    monkeypatch.setattr(experiment, "train_job", _counting(calls := []))
    experiment.sweep(configs, desc="ray-fail", executor="ray", progress=False)
    assert calls == [hashes[1]]  # one missing run: trained in this process


def _niceness() -> int:
    return os.nice(0)


def _pinned_worker() -> tuple[int, list[int]]:
    import time

    time.sleep(1.0)  # hold this worker, so that the other task goes to the other one
    return os.getpid(), sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two usable cores (Linux)",
)
def test_ray_workers_each_run_on_a_core_of_their_own(ray_instance, monkeypatch):
    monkeypatch.setenv(executors.ENV_PIN_WORKERS, "on")
    ex = RayExecutor()
    for key in ("a", "b"):
        ex.submit(key, _pinned_worker)
    got = []
    while ex.pending:
        got.extend(value for _, value in ex.wait())
    (pid_a, cores_a), (pid_b, cores_b) = got
    usable = os.sched_getaffinity(0)
    assert pid_a != pid_b and len(cores_a) == len(cores_b) == 1
    assert cores_a != cores_b and set(cores_a + cores_b) <= usable


def test_ray_workers_run_at_the_drivers_priority(ray_instance):
    """Ray's default would add 15 to a worker's niceness; the executor keeps the driver's."""
    task = ray_instance.remote(_niceness)
    assert ray_instance.get([task.remote() for _ in range(2)]) == [os.nice(0)] * 2


@pytest.mark.slow
def test_ray_interrupt_keeps_finished_runs(ray_instance, results, monkeypatch):
    """Ctrl-C while runs are in flight: the workers stop, the finished runs are stored."""
    configs = [{**BASE, "epochs": 1, "seed": s} for s in (10, 11, 12, 13)]
    original = RayExecutor.wait
    seen = []

    def wait_then_interrupt(self, timeout=None):
        if seen:
            raise KeyboardInterrupt
        seen.extend(finished := original(self, timeout))
        return finished

    monkeypatch.setattr(RayExecutor, "wait", wait_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        experiment.sweep(configs, executor="ray", progress=False)
    assert seen and all(not isinstance(r, Failure) for _, r in seen)
    stored = [c for c in configs if results.exists(c)]
    assert len(stored) >= len(seen)
    assert not list(results.root.glob(".*.lock"))
    monkeypatch.setattr(RayExecutor, "wait", original)
    df = experiment.sweep(configs, executor="ray", progress=False)
    assert df["complete"].all()
