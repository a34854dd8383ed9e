"""Where a sweep's training runs happen: in this process (``serial``) or on Ray (``ray``).

A sweep (:func:`companion.engine.experiment.sweep`) plans, executes, stores:

1. **plan** -- its configurations become :class:`Job` objects (validated once, immutable, with their
   config hash; a post-training run's FP32 parent is a job of its own and comes first; runs already
   in the store are skipped);
2. **execute** -- the missing jobs go to an :class:`Executor`, which runs
   ``fn(*args)`` for each and hands back what it returned (or a :class:`Failure`);
3. **store** -- the calling process (the *driver*) writes every returned record into the results
   store. Workers never touch the store, so a Ray cluster needs no shared file system.

The executors:

* :class:`SerialExecutor` runs each task in the calling process, one after the other (debugging;
  most unit tests).
* :class:`RayExecutor` runs one Ray task per job. Without ``RAY_ADDRESS`` it starts a local Ray
  instance with one single-threaded worker per core (``LQS_WORKERS`` changes the count); with
  ``RAY_ADDRESS`` it joins that cluster instead (each node needs the pinned environment and the
  datasets at the driver's ``LQS_DATA`` path; the ``lqs`` and ``companion`` packages travel with
  the job). ``LQS_GPUS_PER_RUN`` (e.g. ``0.25``) is the share of a GPU each run asks for (default
  on a cluster with GPUs: 1); workers enable TensorFlow's GPU memory growth. A local instance
  with one worker per core pins each worker to a core of its own (``LQS_PIN_WORKERS``; why:
  :func:`claim_core`). A worker that dies is retried (:data:`MAX_RETRIES`); an exception raised
  by the training code is not.

:func:`get_executor` picks one from ``LQS_EXECUTOR`` (``serial`` when unset; ``make reproduce``,
``make run`` and ``make notebooks`` export ``ray``, except for the smoke profile). A cluster with
token authentication (Ray's default) also wants ``RAY_AUTH_MODE=token`` and its token here.

**Same answer on either.** Every run trains with TensorFlow's intra- and inter-op thread pools
pinned to one thread (:data:`THREADS`): Ray workers from their start, the serial executor in its
process (:func:`pin_threads`). Multi-threaded Eigen/oneDNN kernels may split a reduction
differently (measured: a CNN's weights differ in the last bits between 1 and 2 intra-op threads,
an MLP's do not), so with the same pins a record is bit-identical whichever executor trained it.

Ray is an optional dependency: only :class:`RayExecutor` imports it, so ``import
companion.engine.experiment`` stays fast and the serial executor works without Ray installed.
"""

from __future__ import annotations

import abc
import atexit
import logging
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion import paths

__all__ = [
    "EXECUTORS",
    "ENV_EXECUTOR",
    "ENV_WORKERS",
    "ENV_GPUS_PER_RUN",
    "ENV_PIN_WORKERS",
    "PIN_MODES",
    "THREADS",
    "MAX_RETRIES",
    "Job",
    "Failure",
    "SweepFailed",
    "Executor",
    "SerialExecutor",
    "RayExecutor",
    "executor_name",
    "get_executor",
    "claim_core",
    "core_lock_dir",
    "pin_mode",
    "pin_threads",
    "shutdown",
]

log = logging.getLogger(__name__)

#: the executors :func:`get_executor` knows
EXECUTORS: tuple[str, ...] = ("serial", "ray")
#: environment variables that choose and size the executor
ENV_EXECUTOR = "LQS_EXECUTOR"
ENV_WORKERS = "LQS_WORKERS"
ENV_GPUS_PER_RUN = "LQS_GPUS_PER_RUN"
ENV_PIN_WORKERS = "LQS_PIN_WORKERS"
#: values of ``LQS_PIN_WORKERS``: ``auto`` pins the workers of a local instance with one worker
#: per usable core; ``on`` pins every worker that finds a free core; ``off`` never pins
PIN_MODES: tuple[str, ...] = ("auto", "on", "off")
#: TensorFlow intra-op and inter-op threads of every run, whichever executor trains it
THREADS = 1
#: how often Ray reruns a task whose worker died (an exception of the training code: never)
MAX_RETRIES = 2
#: Ray settings: no usage statistics; no task events (they feed the dashboard, which is off);
#: no stack trace printed on SIGTERM (Jupyter terminates a kernel that takes more than 2.5 s to
#: exit, and shutting Ray down takes 1-2 s of that: the notebook is complete by then); workers at
#: the driver's priority (Ray's default raises their niceness by 15, so on a shared machine a
#: sweep yielded to every other job, which the serial executor does not: `nice make ...` still
#: lowers both). A value already in the environment wins.
_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_task_events_report_interval_ms": "0",
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
    "RAY_worker_niceness": "0",
}
#: seconds between two looks for Ctrl-C while waiting for Ray tasks
_SIGNAL_POLL = 0.5
#: environment of every run (Ray: the workers'; serial: set by :func:`pin_threads`)
_THREAD_ENV = {
    "TF_NUM_INTRAOP_THREADS": str(THREADS),
    "TF_NUM_INTEROP_THREADS": str(THREADS),
    "OMP_NUM_THREADS": str(THREADS),
}


# --------------------------------------------------------------------------------------------
# jobs and failures


@dataclass(frozen=True)
class Job:
    """One training run: a validated configuration (immutable) and its hash.

    ``parent_hash`` names the FP32 parent of a post-training or ptq run (``None`` otherwise); the
    parent is stored before the job is handed to an executor.
    """

    config_hash: str
    items: tuple[tuple[str, Any], ...]
    parent_hash: str | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any], config_hash: str, parent_hash=None) -> Job:
        """The job of an already validated configuration."""
        return cls(config_hash, tuple(config.items()), parent_hash)

    @property
    def config(self) -> dict[str, Any]:
        """A fresh copy of the validated configuration."""
        return dict(self.items)

    def describe(self) -> str:
        """``<hash> (flavour=..., dataset=..., ...)``: the hash and the keys a reader looks for."""
        cfg = self.config
        keys = ("flavour", "mode", "dataset", "arch", "kernel_granularity", "seed")
        text = ", ".join(f"{k}={cfg[k]}" for k in keys if cfg.get(k) is not None)
        return f"{self.config_hash} ({text})"


@dataclass
class Failure:
    """A task that did not return: its key (config hash), the error and the traceback.

    ``worker_died``: the worker process was lost (killed, out of memory) and Ray's retries did not
    help, as opposed to an exception raised by the task. ``exception`` is the original exception
    where it is at hand (serial executor; Ray when it could be deserialised).
    """

    key: str
    error: str
    details: str = ""
    worker_died: bool = False
    exception: BaseException | None = field(default=None, repr=False, compare=False)


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed; the others are stored. ``failures``: one per failed job."""

    def __init__(self, desc: str, failures: list[tuple[Job, Failure]], n_ok: int):
        self.failures = failures
        lines = [
            f"{desc}: {len(failures)} run(s) failed ({n_ok} other run(s) finished and are "
            "stored; calling the sweep again trains only the missing ones):"
        ]
        for job, f in failures:
            lines.append(f"  {job.describe()}: {f.error}")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------
# per-run settings


_PIN_WARNED = False


def pin_threads() -> bool:
    """Pin TensorFlow to :data:`THREADS` intra-/inter-op threads in this process; True when pinned.

    Works while TensorFlow's runtime is not initialised yet (no op has run); sets the
    environment (``TF_NUM_INTRAOP_THREADS``, ...) too, so child processes follow. Where the runtime
    already runs with other pools, logs a warning once: records of networks whose kernels split
    reductions over threads (convolutions) can then differ in the last bits from the Ray workers'.
    """
    global _PIN_WARNED
    import tensorflow as tf  # here: executors itself stays importable without TensorFlow work

    already = all(os.environ.get(k) == v for k, v in _THREAD_ENV.items())
    os.environ.update(_THREAD_ENV)
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(THREADS)
        threading.set_inter_op_parallelism_threads(THREADS)
        return True
    except RuntimeError:  # the runtime is initialised: its pools stay as they are
        current = (
            threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads(),
        )
        # 0 = "from the environment": pinned if the environment already said so
        if current == (THREADS, THREADS) or (current == (0, 0) and already):
            return True
        if not _PIN_WARNED:
            _PIN_WARNED = True
            log.warning(
                "TensorFlow already runs with %s intra/inter-op threads in this process, not %d: "
                "runs trained here can differ in the last bits from those of the ray executor. "
                "Set TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 before starting Python "
                "(or sweep before any other TensorFlow work) for identical records",
                current,
                THREADS,
            )
        return False


def _configure_worker(env: Mapping[str, str], core_locks: str | None) -> None:
    """In a Ray worker, before each task: the driver's paths, pinned threads, GPU memory growth,
    and (``core_locks``: the folder of core claims, or ``None``) a core of its own."""
    os.environ.update(env)
    # before TensorFlow starts its threads (they inherit the core)
    if core_locks is not None:
        claim_core(Path(core_locks))
    if getattr(_configure_worker, "done", False):
        return
    import tensorflow as tf  # a worker imports it anyway; executors itself does not need it

    pin_threads()
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # pragma: no cover - the runtime started before this task
            pass
    _configure_worker.done = True  # type: ignore[attr-defined]


def _run_task(
    env: Mapping[str, str], core_locks: str | None, fn: Callable, *args: Any
) -> Any:
    """What a Ray worker executes: configure the process, then ``fn(*args)``."""
    _configure_worker(env, core_locks)
    return fn(*args)


def _task_env() -> dict[str, str]:
    """Environment a task needs from the driver: where the data is (same path on every node)."""
    return {"LQS_DATA": str(paths.data_dir().resolve())}


# --------------------------------------------------------------------------------------------
# one core per worker

#: the core this process claimed (:func:`claim_core`) and the lock that holds it while it lives
_CLAIMED: tuple[int, Any] | None = None


def pin_mode() -> str:
    """``LQS_PIN_WORKERS`` (default ``auto``); ``ValueError`` for a value not in :data:`PIN_MODES`."""
    mode = os.environ.get(ENV_PIN_WORKERS, "").strip().lower() or "auto"
    fix = f"{ENV_PIN_WORKERS}=off to let the operating system move the workers between cores"
    return _one_of(ENV_PIN_WORKERS, mode, PIN_MODES, "a pinning mode", fix)


def core_lock_dir() -> Path:
    """Where the workers of this machine claim their cores: one lock file per core, per user."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"lqs-cores-{os.getuid()}"


def claim_core(folder: Path) -> int | None:
    """Pin this process, every thread of it, to one usable core that no other process claimed.

    The claim is an exclusive ``flock`` on ``folder/core-<n>.lock`` (a
    :class:`companion.engine.store.HeldLock`), held while the process lives; the operating system
    drops it when the process ends, however it ends. Cores are tried in order among those this
    process may use (``os.sched_getaffinity``), so a ``taskset`` given to ``make`` is respected.
    Returns the core, the one claimed before if there is one, or ``None`` when every core is
    claimed or the platform cannot pin (the process then runs where the scheduler puts it).

    Why: two single-threaded workers on two cores hand work between their own threads (the
    training loop, TensorFlow's executor, tf.data) thousands of times a second; left to the
    scheduler, a woken thread is often placed on the core the other worker holds while its own
    core idles (profiled here: each worker ran 82 % of its training time, a core idled 17 %).
    Pinned, the same sweep took 8 % less CPU time (``benchmarks/worker_pinning.py``).
    """
    global _CLAIMED
    if _CLAIMED is not None:
        return _CLAIMED[0]
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - macOS, Windows
        return None
    from companion.engine.store import HeldLock

    for cpu in sorted(os.sched_getaffinity(0)):
        lock = HeldLock.acquire(folder / f"core-{cpu}.lock")
        if lock is not None:
            _pin_process(cpu)
            _CLAIMED = (cpu, lock)
            return cpu
    return None


def _pin_process(cpu: int) -> None:
    """Every thread of this process onto ``cpu``; threads started later inherit it."""
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - no /proc: this thread only
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except OSError:  # ended meanwhile
            pass


# --------------------------------------------------------------------------------------------
# executors


class Executor(abc.ABC):
    """Runs tasks ``fn(*args)``, each under a key, and hands back what they returned.

    The driver loop: :meth:`submit` tasks, :meth:`wait` for finished ones (``(key, value)`` or
    ``(key, Failure)``), :meth:`cancel` on interruption. :meth:`share` turns a large argument
    several tasks use (a parent model) into something cheap to pass.
    """

    name: str = ""

    @property
    @abc.abstractmethod
    def workers(self) -> int:
        """How many tasks run at once."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Submitted tasks not yet handed back by :meth:`wait`."""

    @abc.abstractmethod
    def submit(self, key: str, fn: Callable, *args: Any) -> None:
        """Schedule ``fn(*args)`` under ``key`` (a config hash)."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[tuple[str, Any]]:
        """Block until at least one task finished (or ``timeout`` seconds); return the finished ones."""

    @abc.abstractmethod
    def cancel(self) -> list[tuple[str, Any]]:
        """Stop every task; return those that had finished but were not handed back yet."""

    def share(self, value: Any) -> Any:
        """A handle to pass ``value`` to several tasks (the value itself by default)."""
        return value

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    """Runs each task in this process, in submission order, when :meth:`wait` asks for it.

    Threads are pinned first (:func:`pin_threads`). An ``Exception`` of a task becomes a
    :class:`Failure` (the others still run); ``KeyboardInterrupt`` and other ``BaseException``
    propagate at once.
    """

    name = "serial"

    def __init__(self) -> None:
        self._queue: deque[tuple[str, Callable, tuple]] = deque()

    @property
    def workers(self) -> int:
        return 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, key: str, fn: Callable, *args: Any) -> None:
        self._queue.append((key, fn, args))

    def wait(self, timeout: float | None = None) -> list[tuple[str, Any]]:
        if not self._queue:
            if timeout:
                time.sleep(timeout)
            return []
        key, fn, args = self._queue.popleft()
        pin_threads()
        try:
            return [(key, fn(*args))]
        except Exception as exc:
            return [(key, _failure(key, exc, traceback.format_exc()))]

    def cancel(self) -> list[tuple[str, Any]]:
        self._queue.clear()
        return []


def _failure(key: str, exc: BaseException, details: str = "") -> Failure:
    return Failure(key, f"{type(exc).__name__}: {exc}", details, exception=exc)


def _positive(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise ValueError(
            f"{name}={text!r} is not a positive {kind.__name__}; e.g. {name}=2 "
            f"(unset it for the default)"
        )
    return value


class RayExecutor(Executor):
    """One Ray task per run, on a local Ray instance or (``RAY_ADDRESS``) on a cluster.

    Arguments:
        workers: local instance only: tasks at once, one CPU each (default ``LQS_WORKERS``,
            else the number of cores this process may use).
        gpus_per_run: share of a GPU each task asks for (default ``LQS_GPUS_PER_RUN``; unset:
            1 where the cluster has GPUs, else 0).
        address: a Ray cluster to join (default ``RAY_ADDRESS``); ``None``: a local instance.

    Ray starts on the first :meth:`submit` and is shut down when the process ends
    (:func:`shutdown`). With one worker per core, each worker claims a core of its own on its
    first task (:attr:`pins_cores`, :func:`claim_core`). Usage statistics and the dashboard are
    off; worker output stays in Ray's log files (``log_to_driver=False``), so notebooks show only
    the sweep's own lines.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        gpus_per_run: float | None = None,
        address: str | None = None,
    ):
        env_workers = os.environ.get(ENV_WORKERS, "").strip()
        env_gpus = os.environ.get(ENV_GPUS_PER_RUN, "").strip()
        if workers is None and env_workers:
            workers = _positive(ENV_WORKERS, env_workers, int)
        if gpus_per_run is None and env_gpus:
            gpus_per_run = _positive(ENV_GPUS_PER_RUN, env_gpus, float)
        self._workers = int(workers) if workers else _usable_cores()
        self._gpus = gpus_per_run
        self._pin = pin_mode()
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self._remote = None
        self._refs: dict[Any, str] = {}

    @property
    def local(self) -> bool:
        """Whether this executor starts its own Ray instance (no cluster address)."""
        return not self.address

    @property
    def workers(self) -> int:
        if self._remote is not None:  # what the running instance or cluster offers
            return int(_ray().cluster_resources().get("CPU", 1))
        return self._workers

    @property
    def pending(self) -> int:
        return len(self._refs)

    @property
    def pins_cores(self) -> bool:
        """Whether each worker claims a core of its own (:func:`claim_core`): ``LQS_PIN_WORKERS``
        ``on``, or ``auto`` (the default) with a local instance of one worker per usable core."""
        if self._pin == "auto":
            return self.local and self.workers == _usable_cores()
        return self._pin == "on"

    def _start(self):
        if self._remote is None:
            _start_ray(self._workers, self.address)
            gpus = self._gpus
            if gpus is None:  # one GPU per run where there are GPUs
                gpus = 1.0 if _ray().cluster_resources().get("GPU", 0) > 0 else 0.0
            self._remote = (
                _ray()
                .remote(_run_task)
                .options(
                    num_cpus=1,
                    num_gpus=gpus,
                    max_retries=MAX_RETRIES,
                    retry_exceptions=False,
                )
            )
        return self._remote

    def describe(self) -> str:
        where = "local" if self.local else f"cluster {self.address}"
        gpus = f", {self._gpus} GPU per run" if self._gpus else ""
        pinned = ", one core each" if self.pins_cores else ""
        return f"ray ({where}, {self.workers} workers{gpus}{pinned})"

    def share(self, value: Any) -> Any:
        self._start()
        return _ray().put(value)

    def submit(self, key: str, fn: Callable, *args: Any) -> None:
        remote = self._start()
        locks = str(core_lock_dir()) if self.pins_cores else None
        self._refs[remote.remote(_task_env(), locks, fn, *args)] = key

    def _collect(self, refs: list) -> list[tuple[str, Any]]:
        ray = _ray()
        out = []
        for ref in refs:
            key = self._refs.pop(ref)
            try:
                out.append((key, ray.get(ref)))
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, BaseException):
                    out.append((key, _failure(key, cause, str(err))))
                else:
                    out.append((key, Failure(key, _first_line(err), str(err))))
            except (
                ray.exceptions.RayError
            ) as err:  # worker died, out of memory, node lost
                f = Failure(
                    key, f"worker lost: {_first_line(err)}", str(err), True, err
                )
                out.append((key, f))
        return out

    def wait(self, timeout: float | None = None) -> list[tuple[str, Any]]:
        if not self._refs:
            if timeout:
                time.sleep(timeout)
            return []
        ray = _ray()
        refs = list(self._refs)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # short waits: a blocking ray.wait would not let Ctrl-C (KeyboardInterrupt) through
            left = _SIGNAL_POLL if deadline is None else deadline - time.monotonic()
            ready, _ = ray.wait(
                refs, num_returns=1, timeout=max(min(left, _SIGNAL_POLL), 0)
            )
            if ready or (deadline is not None and time.monotonic() >= deadline):
                break
        if ready:  # everything else that finished meanwhile, too
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return self._collect(ready)

    def cancel(self) -> list[tuple[str, Any]]:
        if not self._refs:
            return []
        ray = _ray()
        refs = list(self._refs)
        ready, running = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in running:
            ray.cancel(ref, force=True)  # stops the worker process of a running task
            self._refs.pop(ref, None)
        return self._collect(ready)


def _usable_cores() -> int:
    """Cores this process may run on (a ``taskset`` counts), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _set_ray_env() -> None:
    """:data:`_RAY_ENV` into this process's environment (a value already there wins)."""
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)


def _ray():
    # Ray is optional (only this executor needs it) and slow to import: imported on first use
    if "ray" not in sys.modules:
        import warnings

        _set_ray_env()  # read when Ray is imported

        # imported in a notebook kernel, Ray says ipywidgets is missing (an INFO log) and
        # tqdm warns about IProgress: neither concerns a sweep, keep them out of notebooks
        logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import ray  # noqa: F401
    return sys.modules["ray"]


def _start_ray(workers: int, address: str | None) -> None:
    """Start a local Ray instance (``address`` None) or join a cluster, once per process."""
    ray = _ray()
    if ray.is_initialized():
        return
    common = dict(log_to_driver=False, logging_level=logging.ERROR)
    if not address:
        # local workers inherit this environment (so the workers Ray starts with the instance
        # already have the pinned threads and Ray's settings, even when Ray was imported
        # before _ray() could set them); this process's TensorFlow gets the same pins
        os.environ.update(_THREAD_ENV)
        _set_ray_env()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, **common)
    else:  # a cluster's nodes get the settings and the code with the job
        import companion  # only for their folders (lqs imports TensorFlow: not at the top)
        import lqs

        env_vars = {**_THREAD_ENV, **_RAY_ENV}
        if "PYTHONHASHSEED" in os.environ:
            env_vars["PYTHONHASHSEED"] = os.environ["PYTHONHASHSEED"]
        runtime_env = {
            "env_vars": env_vars,
            "py_modules": [
                os.path.dirname(lqs.__file__),
                os.path.dirname(companion.__file__),
            ],
        }
        ray.init(address=address, runtime_env=runtime_env, **common)
    atexit.register(shutdown)


def shutdown() -> None:
    """Shut down the Ray instance this process started or joined (no-op without Ray)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------------------------
# choosing one


def executor_name(name: str | None = None) -> str:
    """``name``, else ``LQS_EXECUTOR``, else ``"serial"``; ``ValueError`` for anything unknown."""
    chosen = name if name is not None else os.environ.get(ENV_EXECUTOR, "").strip()
    source = "executor" if name is not None else ENV_EXECUTOR
    return _one_of(
        source, chosen or "serial", EXECUTORS, "an executor", f"{ENV_EXECUTOR}=serial"
    )


def _one_of(
    source: str, value: str, allowed: tuple[str, ...], what: str, fix: str
) -> str:
    """``value`` if it is in ``allowed``; else a ``ValueError`` naming ``source``, ``value``,
    the allowed values and ``fix`` (an example setting)."""
    if value not in allowed:
        raise ValueError(
            f"{source}={value!r} is not {what}; allowed: "
            f"{', '.join(map(repr, allowed))} (e.g. {fix})"
        )
    return value


def get_executor(name: str | Executor | None = None) -> Executor:
    """A new executor ``name`` (or ``LQS_EXECUTOR``; default ``serial``) for one sweep.

    Executors are cheap: the Ray instance behind :class:`RayExecutor` is started once per
    process and shared. An :class:`Executor` instance is returned as it is.
    """
    if isinstance(name, Executor):
        return name
    return SerialExecutor() if executor_name(name) == "serial" else RayExecutor()
