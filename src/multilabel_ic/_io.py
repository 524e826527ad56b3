"""Small file helpers shared by every writer: atomic writes, so an interrupted run never leaves half a file.

Files are written to a temporary ``.<name>.<random>.tmp`` beside their destination and renamed into place; they get
the permissions a plain ``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0o600``. An ``OSError``
of the file system (full disk, no permission, a file where a folder should be) becomes an :class:`OutputError` that
names the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .exceptions import OutputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "quiet_stdout", "remove_stale_temp_files",
           "ensure_dir", "output_error", "json_default", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_umask_lock = threading.Lock()


def _file_mode() -> int:
    """0o666 less the process umask (read without changing it for longer than one call)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def output_error(path: str | os.PathLike, exc: OSError, *, what: str = "write") -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met while writing ``path``, with the fix in the message."""
    path = Path(path)
    code = exc.errno
    if code in _DISK_FULL:
        hint = ("the disk is full: free some space and run the same command again (a training run resumes from its "
                "last checkpoint)")
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"no permission to write in {path.parent}: choose another output folder or fix its permissions"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        hint = f"a file is in the way of the folder {path.parent}: choose another output folder or move that file"
    elif code == errno.EISDIR:
        hint = f"{path} is a folder: choose another file name"
    else:
        hint = "check the path and the file system"
    err = OutputError(f"{path}: cannot {what} ({exc.strerror or exc}); {hint}.")
    err.errno = code
    return err


def ensure_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) or fail with an :class:`OutputError` that says why and how to fix it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder: choose another output folder or move the file.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path / ".", exc, what=f"create the {what}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} is not writable: choose another output folder or fix its permissions.")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds."""
    path = Path(path)
    ensure_dir(path.parent, what="folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _file_mode())
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None, newline="" if text else None) as fh:
            try:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                if exc.errno in _DISK_FULL and not isinstance(exc, OutputError):
                    raise output_error(path, exc) from exc
                raise
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for what metrics and run files hold: numpy scalars and arrays, paths, dataclasses."""
    import dataclasses

    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def remove_stale_temp_files(*folders: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files that :func:`atomic_write` leaves when its process is killed.

    Call it only while holding the folder's lock (no other writer of this library can be using them).
    """
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
            if tmp.is_file():
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence libraries that print progress to stdout (pycocotools)."""
    import io
    import sys

    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        yield
    finally:
        sys.stdout = saved
