"""Small file helpers shared by every writer: atomic writes, so an interrupted run never leaves half a file.

Files are written to a temporary ``.<name>.<random>.tmp`` beside their destination and renamed into place; they get
the permissions a plain ``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0o600``. An ``OSError``
of the file system (full disk, no permission, a file where a folder should be) becomes an :class:`OutputError` that
names the path and the fix; a full disk also names the space the file needs and the space that is free.
:func:`atomic_serialize` does the same for a serializer (``torch.save``) that hides the disk's error behind its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .exceptions import OutputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_serialize", "quiet_stdout",
           "remove_stale_temp_files", "ensure_dir", "output_error", "json_default", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_umask_lock = threading.Lock()


def _file_mode() -> int:
    """0o666 less the process umask (read without changing it for longer than one call)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def output_error(path: str | os.PathLike, exc: OSError, *, what: str = "write", needed: int | None = None
                 ) -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met while writing ``path``, with the fix in the message; for a full
    disk, ``needed`` (the bytes being written, or an estimate) and the free space are named too."""
    path = Path(path)
    code = exc.errno
    if code in _DISK_FULL:
        free = _free_bytes(path.parent)
        space = "; ".join(([f"the file needs about {_megabytes(needed)}"] if needed is not None else [])
                          + ([f"{_megabytes(free)} are free in {path.parent}"] if free is not None else []))
        hint = (f"the disk is full: free some space{f' ({space})' if space else ''} and run the same command again "
                "(a training run resumes from its last checkpoint)")
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


def _open_temp(fd: int, tmp: str, mode: str, **kwargs: Any) -> IO:
    """The temporary file's object (one place, so that a test can give it a file system that fills up)."""
    return os.fdopen(fd, mode, **kwargs)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, size: int | None = None) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds; ``size``
    (the bytes to be written, when known) is named if the disk fills."""
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
        with _open_temp(fd, tmp, mode, encoding="utf-8" if text else None, newline="" if text else None) as fh:
            try:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                if exc.errno in _DISK_FULL and not isinstance(exc, OutputError):
                    raise output_error(path, exc, needed=size) from exc
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
    with atomic_write(path, "wb", size=len(data)) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", size=len(text.encode("utf-8", "surrogatepass"))) as fh:
        fh.write(text)


class _RecordingWriter:
    """A binary file's stand-in that remembers the first ``OSError`` of a write, for serializers that replace it
    with their own error (``torch.save``: ``RuntimeError: ... unexpected pos``)."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _disk_full_in(exc: BaseException | None) -> OSError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_serialize(path: str | os.PathLike, serialize: Callable[[IO[bytes]], Any], *, size: int) -> None:
    """``serialize(fh)`` into ``path`` atomically. Whatever the serializer raises once the disk is full (its own
    error too: ``torch.save``'s ``RuntimeError``) becomes an :class:`OutputError` that names ``path``, ``size`` (the
    bytes it writes, or an estimate), the free space and the fix; nothing is left half-written."""
    path = Path(path)
    with atomic_write(path, "wb", size=size) as fh:
        recorder = _RecordingWriter(fh)
        try:
            serialize(recorder)  # type: ignore[arg-type]
        except OutputError:
            raise
        except Exception as exc:
            full = recorder.error if recorder.error is not None and recorder.error.errno in _DISK_FULL \
                else _disk_full_in(exc)
            if full is None:
                free = _free_bytes(path.parent)
                if free is None or free >= size:
                    raise
                full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise output_error(path, full, needed=size) from exc


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
