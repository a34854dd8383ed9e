"""Atomic file writes and advisory locks: no reader ever sees a half-written result.

Every file lqs writes (run records, histories, models, CSVs, figures, snippets, data caches,
integer exports) goes through :func:`atomic_write`:

1. the content is written to a *unique* temporary file in the target's folder
   (``.<name>.<random>.tmp<suffix>``, so concurrent writers never share a temporary file);
2. it is flushed and fsynced, and given the usual permissions (``0o666 & ~umask``; ``mkstemp``
   would leave ``0o600``);
3. ``os.replace`` renames it over the target -- atomic on POSIX and Windows within one file system;
4. the folder is fsynced (POSIX), so the rename itself survives a crash.

If writing fails or is interrupted (``KeyboardInterrupt`` included) the temporary file is removed
and an existing target is left untouched.

:func:`file_sha256` checksums files (run records, dataset archives). :func:`file_lock` is an
exclusive advisory lock (``fcntl.flock``) on a lock file; the results store uses it so that two
processes asked for the same configuration train it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_write", "atomic_write_text", "file_lock", "file_sha256"]


def _default_mode() -> int:
    """Permissions a plain ``open(..., "w")`` would give a new file (``0o666`` minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], object], *, suffix: str = "") -> Path:
    """Create ``target`` atomically by calling ``write(tmp_path)`` and renaming the result.

    Arguments:
        target: the final path; its folder is created if needed.
        write: called once with the temporary path (an empty existing file) to fill it, e.g.
            ``lambda p: fig.savefig(p, format="png")``.
        suffix: appended to the temporary name, for writers that insist on an extension
            (Keras ``model.save`` needs ``.keras``).

    Returns:
        ``target`` as a :class:`~pathlib.Path`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically (:func:`atomic_write`)."""
    return atomic_write(target, lambda p: p.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    Blocks until no other process (or other open file in this process) holds the lock. Where
    ``fcntl`` is not available (Windows) the block runs unlocked: results stay correct because
    writes are atomic, only duplicated work is no longer prevented.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere lqs is tested
        yield path
        return
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
