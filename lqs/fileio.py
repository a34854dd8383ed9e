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
and an existing target is left untouched. A full disk (``ENOSPC``, or a quota: ``EDQUOT``) raises
an ``OSError`` with that errno whose message names the target and says to free space.

Only a process killed while writing (``SIGKILL``, power loss) leaves its temporary file behind;
:func:`remove_stale_temp_files` removes such files once they are older than any write could take.

:func:`file_sha256` checksums files (run records, dataset archives). :func:`file_lock` is an
exclusive advisory lock (``fcntl.flock``) on a lock file, removed again when the lock is released;
the results store uses it so that two processes asked for the same configuration train it once.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "file_lock",
    "file_sha256",
    "remove_stale_temp_files",
]

#: errnos of a full disk or an exhausted quota
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: names of :func:`atomic_write`'s temporary files: ``.<name>.<random>.tmp<suffix>``
_TEMP_RE = re.compile(r"^\..+\.tmp(\.[^.]+)?$")


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


def atomic_write(
    target: str | os.PathLike[str], write: Callable[[Path], object], *, suffix: str = ""
) -> Path:
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent
        )
        os.close(fd)
    except OSError as exc:
        _raise_if_disk_full(exc, target)
        raise
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_if_disk_full(exc, target)
        raise
    _fsync_dir(target.parent)
    return target


def _raise_if_disk_full(exc: BaseException, target: Path) -> None:
    """Re-raise a full-disk error (anywhere in ``exc``'s chain) as an ``OSError`` naming ``target`` and the fix."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            code = errno.errorcode.get(cause.errno, str(cause.errno))
            raise OSError(
                cause.errno,
                f"no space left on the device while writing {target} ({code}): free space on the file system "
                f"of {target.parent} (see `df -h {target.parent}`) or write to a folder with room, then rerun. "
                f"Nothing was replaced: the temporary file was removed and any previous {target.name} is unchanged",
            ) from exc
        cause = cause.__cause__ or cause.__context__


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
    while True:
        fh = open(path, "a")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            if _same_file(fh, path):
                break
            # the previous holder removed the file while we waited: lock the current one instead
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except BaseException:
            fh.close()
            raise
        fh.close()
    try:
        yield path
    finally:
        try:
            path.unlink(
                missing_ok=True
            )  # removed while held: a waiter sees the change and retries
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def _same_file(fh, path: Path) -> bool:
    """Whether the open file ``fh`` is still the file at ``path`` (a lock file may be removed meanwhile)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fh.fileno())
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def remove_stale_temp_files(
    folder: str | os.PathLike[str],
    *,
    older_than: float = 3600.0,
    extra: Iterable[str] = (),
) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``; return what was removed.

    Removed: :func:`atomic_write`'s temporary files (``.<name>.<random>.tmp<suffix>``) and hidden
    files matching one of the ``extra`` glob patterns (e.g. ``"*.partial.ipynb"``), when last
    modified more than ``older_than`` seconds ago (a live writer finishes long before); lock files
    (``.*.lock``) nobody holds. Only ``folder`` itself is scanned (no subfolders); a missing folder
    gives ``[]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    now = time.time()
    patterns = tuple(extra)
    for path in sorted(folder.iterdir()):
        name = path.name
        if not name.startswith(".") or not path.is_file():
            continue
        if name.endswith(".lock"):
            if _remove_unheld_lock(path):
                removed.append(path)
            continue
        if not (
            _TEMP_RE.match(name) or any(fnmatch.fnmatch(name, p) for p in patterns)
        ):
            continue
        try:
            if now - path.stat().st_mtime > older_than:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process cleaned it meanwhile
            continue
    return removed


def _remove_unheld_lock(path: Path) -> bool:
    """Remove a lock file of :func:`file_lock` that no process holds (never blocks)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    try:
        fh = open(path, "a")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: in use
        try:
            if not _same_file(fh, path):
                return False
            path.unlink(missing_ok=True)
            return True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
