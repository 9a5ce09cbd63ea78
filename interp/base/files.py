"""Plain atomic file I/O: every file the toolkit writes goes through :func:`atomic_write`.

The content is written to a temporary name in the target's directory, flushed to disk, then
renamed onto the target, so a killed process leaves either the old file or the new one, never
half of one. The new file gets the mode a plain ``open(path, "w")`` would give it (``0666`` less
the umask, so ``0644`` under umask 022), or the mode of the file it replaces, so a ``chmod``
survives a rewrite. The temporary name is short and independent of the target's name, so every
name the file system allows can be written. An operating-system failure (read-only file
system, full disk, a directory where a file is expected, a name too long, no permission)
raises :class:`WriteError`: one line naming the path and the cause, nothing left behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None

__all__ = ["FolderBusy", "WriteError", "atomic_write", "atomic_write_text", "held_folder", "holds_nothing", "locked",
           "new_file_mode", "out_folder"]

#: An atomic write's temporary file: ``.interp-<random>.tmp`` beside its target.
_TMP_PREFIX, _TMP_SUFFIX = ".interp-", ".tmp"


class WriteError(OSError):
    """A file could not be written; ``str()`` is one line naming the path and the cause."""

    def __str__(self) -> str:
        return str(self.strerror)


class FolderBusy(OSError):
    """Another process holds the folder (:func:`held_folder`)."""


def new_file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open(path, "w")`` gives a new file.

    The umask is read from ``/proc/self/status`` where Linux offers it; elsewhere it is set and
    restored, which another thread creating a file at that instant would see.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def _make_parent(path: Path) -> None:
    """Create ``path``'s folder (and its parents); a :class:`WriteError` naming a file in the way."""
    blocker = _file_in_the_way(path.parents)
    if blocker is not None:
        raise WriteError(errno.ENOTDIR, f"cannot write {path}: {blocker} is a file, not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)


def _cause(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same directory, fsynced).

    A symbolic link is written through: its target gets the new content (a table shared by a
    link stays one file). Raises :class:`WriteError` for any operating-system failure, with the
    temporary file removed.
    """
    path = Path(os.path.realpath(path))
    tmp = path.parent / f"{_TMP_PREFIX}{secrets.token_hex(4)}{_TMP_SUFFIX}"
    try:
        if path.is_dir():
            raise WriteError(errno.EISDIR, f"cannot write {path}: it is a directory")
        if path.exists() and not path.is_file():  # a FIFO, a device, a socket: never replaced by a file
            raise WriteError(errno.EINVAL, f"cannot write {path}: it is not a regular file")
        _make_parent(path)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else new_file_mode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        write(str(tmp))
        os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(exc.errno, f"cannot write {path}: {_cause(exc)}") from exc
    except BaseException:
        _remove(tmp)
        raise


def _file_in_the_way(folders) -> Path | None:
    """The first of ``folders`` that exists and is not a folder (a file where a folder must be), or None."""
    return next((folder for folder in folders if folder.exists() and not folder.is_dir()), None)


def out_folder(path: str | Path, flag: str = "--out-dir") -> Path:
    """``path`` as a folder to write into (not created): ``NotADirectoryError`` (one line naming
    ``flag``, exit 2 in the CLI) when it, or a folder above it, is a file."""
    path = Path(path)
    blocker = _file_in_the_way((path, *path.parents))
    if blocker is not None:
        raise NotADirectoryError(f"{flag} {path}: {blocker} is a file, not a directory")
    return path


def holds_nothing(directory: str | Path) -> bool:
    """Whether ``directory`` is missing, empty, or holds only the temporary files of atomic writes that
    a killed process left behind (``.interp-*.tmp``: never a finished file), so work may start there."""
    directory = Path(directory)
    if not directory.exists():
        return True
    return all(p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX) and p.is_file()
               for p in directory.iterdir())


def _remove(tmp: Path) -> None:
    with suppress(OSError):  # already gone, or the disk is failing: the original error is reported
        tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock for ``path`` (POSIX ``flock``) while the block runs.

    Writers that read a file, merge into it and write it back hold this lock around all three,
    so two processes never drop each other's rows. The lock is a hidden empty file beside
    ``path`` (``.interp-lock-HASH``, a fixed length whatever the name), left in place. Where
    ``fcntl`` does not exist the block runs unlocked. The lock of a symbolic link is its target's,
    as is what :func:`atomic_write` writes.
    """
    path = Path(os.path.realpath(path))
    name = hashlib.blake2b(path.name.encode(), digest_size=6).hexdigest()
    lock = path.parent / f".interp-lock-{name}"
    try:
        _make_parent(path)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, new_file_mode())
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {_cause(exc)}") from exc
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def held_folder(path: str | Path) -> Iterator[None]:
    """Create the folder ``path`` (and its parents) and hold an exclusive advisory lock on it (POSIX
    ``flock`` of the folder itself) while the block runs; :class:`FolderBusy` at once, without
    waiting, when another process holds it. Where ``fcntl`` does not exist the block runs unlocked."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY) if fcntl is not None else None  # a folder opens so on POSIX only
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {_cause(exc)}") from exc
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderBusy(f"{path} is held by another process") from None
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock
