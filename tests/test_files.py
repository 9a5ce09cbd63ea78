"""interp.files: atomic writes with the umask's mode, every legal name, one-line OS errors, locks."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from interp.base import files
from interp.base.files import WriteError, atomic_write_text, locked


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == expected


def test_a_rewrite_keeps_the_files_mode(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "one")
    os.chmod(path, 0o640)
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and _mode(path) == 0o640


@pytest.mark.parametrize("length", [242, 250, 255])
def test_every_legal_name_can_be_written(tmp_path, length):
    path = tmp_path / ("n" * (length - 4) + ".csv")
    atomic_write_text(path, "x")
    assert path.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_name_too_long_is_one_line(tmp_path):
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / ("n" * 300), "x")
    assert str(info.value).count("\n") == 0 and "file name too long" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_a_directory_where_a_file_is_expected(tmp_path):
    with pytest.raises(WriteError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    fifo = tmp_path / "report.html"
    os.mkfifo(fifo)  # replaced by a regular file without a word (as /dev/full was)
    with pytest.raises(WriteError, match="it is not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_file_where_a_folder_is_expected_is_named(tmp_path):
    (tmp_path / "f").write_text("a file")
    for write in (lambda: atomic_write_text(tmp_path / "f" / "sub" / "x.csv", "x"),
                  lambda: locked(tmp_path / "f" / "x.csv").__enter__()):
        with pytest.raises(WriteError, match=f"cannot write .*x.csv: {tmp_path / 'f'} is a file, not a directory$"):
            write()


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system")])
def test_os_failures_are_one_line_and_leave_nothing(tmp_path, monkeypatch, code, cause):
    def fail(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", fail)
    path = tmp_path / "table.csv"
    with pytest.raises(WriteError) as info:
        atomic_write_text(path, "x")
    assert str(info.value).startswith(f"cannot write {path}: {cause}") and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # starts processes or waits out a timeout
def test_the_lock_is_exclusive_between_processes(tmp_path):
    import multiprocessing
    import time

    path = tmp_path / "t.csv"
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()

    def hold() -> None:
        with locked(path):
            started.set()
            time.sleep(1.0)

    proc = ctx.Process(target=hold)
    proc.start()
    assert started.wait(10)
    t0 = time.monotonic()
    with locked(path):
        waited = time.monotonic() - t0
    proc.join()
    assert waited >= 0.5


def test_a_link_is_written_through_and_shares_its_targets_lock(tmp_path):
    import fcntl

    shared = tmp_path / "shared" / "scores.csv"
    shared.parent.mkdir()
    atomic_write_text(shared, "old\n")
    link = tmp_path / "mine" / "scores.csv"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(shared, link.parent))
    atomic_write_text(link, "new\n")  # the target gets the rows; the link stays a link
    assert link.is_symlink() and shared.read_text() == "new\n"
    assert [p.name for p in link.parent.iterdir()] == ["scores.csv"]  # no lock or temporary file beside the link
    with locked(link):  # a writer of the target's own path waits for one writing through the link
        lock = next(shared.parent.glob(".interp-lock-*"))
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
