"""Reading a file the user names, bounded: never blocks on a FIFO, never reads a device or a file without end.

Every file the project reads whole (run files, hyperparameter files, metadata and metrics JSON, .lst files, the cache
index) goes through :func:`read_bounded`: it opens the path without blocking, refuses anything but a regular file,
and reads at most ``limit`` bytes, so ``--config /dev/zero`` or a named pipe is one clear error, not a hang or a
``MemoryError``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .exceptions import DataError, MultilabelICError

__all__ = ["read_bounded", "read_bounded_text", "open_bounded", "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _open_regular(path: Path, *, limit: int, what: str, error: type[MultilabelICError]) -> tuple[int, int]:
    """(descriptor, size) of the regular file ``path`` opened without blocking, or ``error``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; check the path.") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}; give the path of the file.") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc}); check the path and its "
                    "permissions.") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):  # Linux opens a folder read-only without an error
            raise error(f"{path}: is a folder, not a {what}; give the path of the file.")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: the {what} is {_kind(info.st_mode)}, not a regular file; give the path of a file.")
        if info.st_size > limit:
            raise error(f"{path}: the {what} is {info.st_size} bytes, more than the {limit} bytes a {what} may "
                        "have; check that this is the right file.")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_bounded(path: str | os.PathLike, *, limit: int, what: str,
                 error: type[MultilabelICError] = DataError) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or ``error`` naming the path, the ``what`` and the fix.

    The file is opened with ``O_NONBLOCK`` so that a FIFO does not wait for a writer; its type and size are checked on
    the open descriptor (no race with a rename), and the read stops at ``limit + 1`` bytes in case it grows.
    """
    path = Path(path)
    fd, _ = _open_regular(path, limit=limit, what=what, error=error)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(f"{path}: the {what} grew past {limit} bytes while it was read; check that this is the right "
                        "file.")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc}); check the file.") from None
    finally:
        os.close(fd)


def open_bounded(path: str | os.PathLike, *, limit: int, what: str,
                 error: type[MultilabelICError] = DataError) -> BinaryIO:
    """The regular file ``path`` opened for reading (binary), with the checks of :func:`read_bounded`, for a reader
    that streams it (``torch.load``) instead of holding its bytes twice."""
    path = Path(path)
    fd, _ = _open_regular(path, limit=limit, what=what, error=error)
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded_text(path: str | os.PathLike, *, limit: int, what: str,
                      error: type[MultilabelICError] = DataError) -> str:
    """:func:`read_bounded`, decoded as UTF-8 (a decoding error names the file and the byte offset)."""
    data = read_bounded(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{Path(path)}: the {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
