"""The results store: one complete, checksummed record per configuration hash.

Layout, in :func:`companion.paths.runs_dir` (``results/runs/``; ``LQS_RESULTS`` moves it), for a run
whose validated configuration hashes to ``H`` (:func:`companion.engine.config.config_hash`):

* ``H.history.csv`` -- the per-epoch history (one row per epoch, epoch 0 = before training);
* ``H.keras`` -- the trained model (optional, ``save_model=True`` by default);
* ``H.json`` -- the flat run record, written **last**.

Every file is written atomically: to a temporary file in the same folder (``.H.*.tmp``), flushed
and fsynced, then ``os.replace``-d into place, so a crash never leaves a half-written file under a
final name. The record carries ``complete: true``, the sha256 of the history and model files
(``history_sha256``, ``model_sha256``) and ``record_sha256``, the sha256 of the canonical JSON of
the record without that field. :meth:`RunStore.load_record` returns ``None`` -- and logs a warning,
once per process and file state -- for a record that is missing, unreadable, truncated, edited, not
complete, or whose history or model file does not match; the experiment then simply recomputes the
run. Leftover temporary files are never read (only names ``<16 hex digits>.json`` count as records);
those of writers killed mid-write are removed once older than :data:`STALE_SECONDS` (the first time
a process writes to the store). Writes go through :func:`lqs.fileio.atomic_write`; a full disk raises
an ``OSError`` naming the file, the run and the fix. :meth:`RunStore.lock` (a lock file ``.H.lock``,
removed on release; :meth:`RunStore.try_lock` takes it without waiting) lets concurrent processes
train each configuration once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from companion import paths
from companion.engine.config import canonical_json, config_hash, validate_config
from lqs.fileio import atomic_write, file_lock, file_sha256, remove_stale_temp_files

__all__ = [
    "RunStore",
    "default_store",
    "to_jsonable",
    "file_sha256",
    "RECORD_RE",
    "STALE_SECONDS",
    "STORE_FIELDS",
    "HeldLock",
]

log = logging.getLogger(__name__)

#: fields :meth:`RunStore.put` adds to every record (after the run's own columns)
STORE_FIELDS: tuple[str, ...] = (
    "history_sha256",
    "model_sha256",
    "complete",
    "record_sha256",
)
#: temporary files of killed writers older than this are removed (no write takes an hour)
STALE_SECONDS = 3600.0
#: (record path, size, mtime, reason) already warned about in this process: one warning per corruption
_WARNED: set[tuple[str, int, float, str]] = set()
#: store folders cleaned of stale temporary files in this process
_CLEANED: set[str] = set()

#: file names of records (anything else in the folder is ignored)
RECORD_RE = re.compile(r"^[0-9a-f]{16}\.json$")
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


def to_jsonable(value: Any) -> Any:
    """Plain JSON value of ``value`` (numpy scalars/arrays, tuples, Paths); NaN/inf become ``None``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _record_sha256(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


class RunStore:
    """Run records keyed by configuration hash, in ``root`` (default: :func:`companion.paths.runs_dir`).

    ``root=None`` resolves the folder at every use, so ``LQS_RESULTS`` set after construction
    (tests) still applies.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self._root = None if root is None else Path(root)

    # ---------------------------------------------------------------- paths
    @property
    def root(self) -> Path:
        """The store folder (not created until the first write)."""
        return self._root if self._root is not None else paths.runs_dir()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def _check_hash(self, h: str) -> str:
        if not isinstance(h, str) or not _HASH_RE.match(h):
            raise ValueError(
                f"not a config hash: {h!r} (16 lowercase hex digits, see companion.engine.config.config_hash)"
            )
        return h

    def record_path(self, h: str) -> Path:
        return self.root / f"{self._check_hash(h)}.json"

    def history_path(self, h: str) -> Path:
        return self.root / f"{self._check_hash(h)}.history.csv"

    def model_path(self, h: str) -> Path:
        return self.root / f"{self._check_hash(h)}.keras"

    # ---------------------------------------------------------------- locking
    def lock_path(self, h: str) -> Path:
        """The lock file of configuration ``h`` (hidden, never read as a record)."""
        return self.root / f".{self._check_hash(h)}.lock"

    def lock(self, h: str) -> contextlib.AbstractContextManager[Path]:
        """Context manager: exclusive lock on configuration ``h`` across processes (:func:`lqs.fileio.file_lock`).

        :func:`companion.engine.experiment.run` holds it while training, so two processes asked for the same
        configuration train it once: the second waits, then finds the stored record.
        """
        return file_lock(self.lock_path(h))

    def try_lock(self, h: str) -> HeldLock | None:
        """The lock on configuration ``h`` if no one holds it now, else ``None`` (never blocks).

        Same lock as :meth:`lock` (a sweep holds the locks of the runs it has handed to an
        executor and passes over runs another process trains); release it with
        :meth:`HeldLock.release`.
        """
        return HeldLock.acquire(self.lock_path(h))

    # ---------------------------------------------------------------- write
    def put(
        self,
        config: dict[str, Any],
        record: dict[str, Any],
        history: pd.DataFrame | None = None,
        model: Any = None,
    ) -> dict[str, Any]:
        """Store one finished run; returns the record as stored (with hash, checksums, ``complete``).

        Order: history, model, then the record (so a record on disk implies its files are there).

        Arguments:
            config: the run's configuration (validated here; its hash names the files).
            record: flat dict of results (JSON-able values; numpy scalars are converted, NaN
                becomes ``null``).
            history: per-epoch ``DataFrame`` (or None).
            model: a Keras model to save as ``H.keras``, or the bytes of such a file (what a
                worker returns), or None.
        """
        cfg = validate_config(config)
        h = config_hash(cfg)
        self.remove_stale_files()
        try:
            return self._put(h, record, history, model)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise OSError(
                    exc.errno,
                    f"could not store run {h} in {self.root}: {exc.strerror or exc}. The run is not stored "
                    "(it will be recomputed); free space there, or move the results folder to a disk with room "
                    "by setting LQS_RESULTS=/path/with/room, and rerun",
                ) from exc
            raise

    def _put(
        self, h: str, record: dict[str, Any], history: pd.DataFrame | None, model: Any
    ) -> dict[str, Any]:
        out = to_jsonable(dict(record))
        out["config_hash"] = h
        out["history_sha256"] = None
        out["model_sha256"] = None
        if history is not None:
            hist_path = self.history_path(h)
            atomic_write(
                hist_path, lambda p: history.to_csv(p, index=False), suffix=".csv"
            )
            out["history_sha256"] = file_sha256(hist_path)
        if model is not None:
            mpath = self.model_path(h)
            if isinstance(model, (bytes, bytearray)):  # a .keras file made by a worker
                atomic_write(mpath, lambda p: p.write_bytes(model), suffix=".keras")
            else:
                atomic_write(mpath, lambda p: model.save(p), suffix=".keras")
            out["model_sha256"] = file_sha256(mpath)
        out["complete"] = True
        out["record_sha256"] = _record_sha256(out)
        text = json.dumps(out, indent=1, sort_keys=False, allow_nan=False)
        atomic_write(
            self.record_path(h),
            lambda p: p.write_text(text + "\n", encoding="utf-8"),
            suffix=".json",
        )
        return out

    # ---------------------------------------------------------------- read
    def load_record(self, h: str, *, check_files: bool = True) -> dict[str, Any] | None:
        """The stored record of hash ``h``, or ``None`` if absent or not trustworthy (warning logged).

        A record is trusted when it parses, says ``complete: true``, its ``record_sha256`` matches
        its content and (``check_files``) its history/model files exist with the recorded sha256.
        """
        path = self.record_path(h)
        if not path.exists():
            return None
        why = None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            record, why = None, f"unreadable ({exc.__class__.__name__}: {exc})"
        if why is None and not isinstance(record, dict):
            why = "not a JSON object"
        if why is None and record.get("complete") is not True:
            why = "not marked complete"
        if why is None and record.get("record_sha256") != _record_sha256(record):
            why = "checksum mismatch (edited or corrupted)"
        if why is None and record.get("config_hash") != h:
            why = f"holds config_hash {record.get('config_hash')!r}"
        if why is None and check_files:
            for key, fpath in (
                ("history_sha256", self.history_path(h)),
                ("model_sha256", self.model_path(h)),
            ):
                want = record.get(key)
                if want is None:
                    continue
                if not fpath.exists():
                    why = f"its file {fpath.name} is missing"
                elif file_sha256(fpath) != want:
                    why = f"its file {fpath.name} does not match the recorded checksum"
                if why:
                    break
        if why is not None:
            try:
                st = path.stat()
                state = (str(path), st.st_size, st.st_mtime, why)
            except OSError:
                state = (str(path), -1, -1.0, why)
            if (
                state not in _WARNED
            ):  # run() and sweep() look a record up several times: say it once
                _WARNED.add(state)
                log.warning(
                    "ignoring run record %s: %s; the run will be recomputed", path, why
                )
            return None
        return record

    def remove_stale_files(self) -> list[Path]:
        """Remove temporary files of killed writers (older than :data:`STALE_SECONDS`) and unheld lock files.

        Runs once per process and store folder (on the first write); returns the removed paths
        and logs where they were.
        """
        root = self.root
        if str(root) in _CLEANED:
            return []
        _CLEANED.add(str(root))
        removed = remove_stale_temp_files(root, older_than=STALE_SECONDS)
        if removed:
            log.info(
                "removed %d leftover temporary/lock file(s) of killed runs from %s",
                len(removed),
                root,
            )
        return removed

    def get(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The complete record of ``config`` (validated and hashed here), or ``None``."""
        return self.load_record(config_hash(config))

    def exists(self, config: dict[str, Any]) -> bool:
        """Whether a complete, intact record of ``config`` is stored."""
        return self.get(config) is not None

    def hashes(self) -> list[str]:
        """Hashes of every record file present (not checked), sorted."""
        if not self.root.exists():
            return []
        return sorted(
            p.name[:-5] for p in self.root.iterdir() if RECORD_RE.match(p.name)
        )

    def records(self) -> Iterator[dict[str, Any]]:
        """Every intact record (corrupted ones are skipped with a warning)."""
        for h in self.hashes():
            rec = self.load_record(h)
            if rec is not None:
                yield rec

    def list_records(self) -> pd.DataFrame:
        """All intact records as a DataFrame, one row per run (sorted by ``created``, then hash)."""
        rows = list(self.records())
        df = pd.DataFrame(rows)
        if len(df) and "created" in df:
            df = df.sort_values(["created", "config_hash"], kind="stable").reset_index(
                drop=True
            )
        return df

    def load_history(self, h: str) -> pd.DataFrame:
        """The per-epoch history of a stored run (``FileNotFoundError`` if it has none)."""
        path = self.history_path(h)
        if not path.exists():
            raise FileNotFoundError(
                f"no history for run {h} in {self.root} (expected {path.name})"
            )
        return pd.read_csv(path)

    def delete(self, h: str) -> None:
        """Remove a run's record first (so it stops counting), then its files."""
        for p in (self.record_path(h), self.history_path(h), self.model_path(h)):
            p.unlink(missing_ok=True)


class HeldLock:
    """An exclusive lock on a lock file, taken without waiting (:meth:`RunStore.try_lock`).

    Compatible with :func:`lqs.fileio.file_lock` (``flock`` on the same file; the file is removed
    on release, and a lock on a file removed meanwhile does not count).
    """

    def __init__(self, path: Path, handle: Any):
        self.path = path
        self._handle = handle

    @classmethod
    def acquire(cls, path: Path) -> HeldLock | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - POSIX everywhere lqs is tested
            return cls(path, None)
        fh = open(path, "a")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        except BaseException:
            fh.close()
            raise
        try:  # the previous holder may have removed the file while we opened it
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
            return cls.acquire(path)
        return cls(path, fh)

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        fh, self._handle = self._handle, None
        if fh is None:
            return
        import fcntl

        try:
            self.path.unlink(missing_ok=True)  # removed while held: a waiter retries
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def default_store() -> RunStore:
    """The store in :func:`companion.paths.runs_dir` (resolved at each use)."""
    return RunStore()
