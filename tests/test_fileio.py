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
    atomic_write(tmp_path / "m.keras", lambda p: (seen.append(p), p.write_bytes(b"x")), suffix=".keras")
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
