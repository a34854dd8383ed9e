"""lqs.fileio: atomic writes (content, permissions, nothing left behind on failure) and the file lock."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lqs.fileio import atomic_write, atomic_write_text, file_lock


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_text_content_and_mode(tmp_path):
    target = tmp_path / "sub" / "a.md"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600
    assert _leftovers(target.parent) == []
    atomic_write_text(target, "second")  # replaces
    assert target.read_text() == "second"


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, error):
    target = tmp_path / "r.json"
    target.write_text("old")

    def half_then_fail(p):
        p.write_text("half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_suffix_reaches_the_writer(tmp_path):
    seen = []
    atomic_write(
        tmp_path / "m.keras",
        lambda p: (seen.append(p), p.write_bytes(b"x")),
        suffix=".keras",
    )
    assert seen[0].name.endswith(".tmp.keras") and seen[0].parent == tmp_path
    assert (tmp_path / "m.keras").read_bytes() == b"x"


def test_file_lock_is_exclusive(tmp_path):
    lock = tmp_path / ".x.lock"
    order: list[str] = []
    holding = threading.Event()

    def second():
        holding.wait(5)
        with file_lock(lock):
            order.append("second acquired")

    t = threading.Thread(target=second)
    t.start()
    with file_lock(lock):
        holding.set()
        time.sleep(0.3)  # the other thread is blocked in flock meanwhile
        order.append("first released")
    t.join(5)
    assert order == ["first released", "second acquired"]


@pytest.mark.parametrize("chained", [False, True])
def test_disk_full_names_the_target_and_the_fix(tmp_path, chained):
    import errno

    target = tmp_path / "r.json"
    target.write_text("old")

    def no_space(p):
        p.write_text("half")
        err = OSError(errno.ENOSPC, "No space left on device")
        if not chained:
            raise err
        raise RuntimeError(
            "the writer wrapped it"
        ) from err  # e.g. a library re-raising

    with pytest.raises(OSError) as err:
        atomic_write(target, no_space)
    assert err.value.errno == errno.ENOSPC
    msg = str(err.value)
    assert str(target) in msg and "free space" in msg and f"df -h {tmp_path}" in msg
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_other_os_errors_pass_unchanged(tmp_path):
    import errno

    def denied(p):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "x", denied)


def test_file_lock_removes_its_file_and_waiters_relock(tmp_path):
    """The lock file is removed on release; a waiter that opened the removed file locks the new one."""
    lock = tmp_path / ".y.lock"
    inside: list[int] = []
    holding = threading.Event()

    def worker(i):
        holding.wait(5)
        with file_lock(lock):
            inside.append(i)
            assert len(inside) == 1  # never two holders at once
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    with file_lock(lock):
        holding.set()
        time.sleep(0.2)
    for t in threads:
        t.join(5)
    assert not lock.exists()


def test_remove_stale_temp_files(tmp_path):
    from lqs.fileio import remove_stale_temp_files

    old = time.time() - 7200
    names = [
        ".a.json.abcd1234.tmp.json",
        ".b.csv.zz.tmp",
        ".nb.x1.partial.ipynb",
        "visible.tmp",
        ".fresh.q.tmp",
        ".keep.me",
    ]
    for n in names:
        (tmp_path / n).write_text("x")
        if n != ".fresh.q.tmp":
            os.utime(tmp_path / n, (old, old))
    (tmp_path / ".free.lock").write_text("")
    removed = remove_stale_temp_files(
        tmp_path, older_than=3600, extra=("*.partial.ipynb",)
    )
    assert sorted(p.name for p in removed) == [
        ".a.json.abcd1234.tmp.json",
        ".b.csv.zz.tmp",
        ".free.lock",
        ".nb.x1.partial.ipynb",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".fresh.q.tmp",
        ".keep.me",
        "visible.tmp",
    ]
    assert remove_stale_temp_files(tmp_path / "missing") == []
