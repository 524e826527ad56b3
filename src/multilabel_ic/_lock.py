"""An exclusive lock on an output folder, so two runs never write into one folder at once.

The lock is an OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on ``<folder>/.lock``: the kernel releases
it when the holding process ends, however it ends, so a run killed with ``kill -9`` never blocks the next one. The
file holds the holder's PID and host so that a refused run can say who holds it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from .exceptions import OutputError, RunConflictError

__all__ = ["FolderLock", "LOCK_NAME"]

LOCK_NAME = ".lock"


def _try_lock(fh: IO) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class FolderLock:
    """``with FolderLock(folder): ...`` holds ``folder/.lock``; a second holder gets a :class:`RunConflictError`."""

    def __init__(self, folder: str | os.PathLike, *, what: str = "training"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fh: IO | None = None

    def acquire(self) -> FolderLock:
        for _ in range(10):
            fh = self._open_and_lock()
            # the holder removes the file when it releases: make sure ours is still the file at the path
            try:
                if os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            fh.close()
        else:
            raise RunConflictError(f"{self.path}: could not take the lock (the file keeps changing); try again.")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def _open_and_lock(self) -> IO:
        try:
            fh = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the lock file ({exc.strerror}); choose another output "
                              f"folder or fix its permissions.") from exc
        if not _try_lock(fh):
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            try:
                info = json.loads(holder)
                who = f"process {info['pid']} on {info['host']} (since {info['since']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise RunConflictError(
                f"{self.folder} is in use by {who}: two {self.what} runs cannot share an output folder. Wait for it "
                f"to finish, stop it, or choose another output folder.")
        return fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self.path.unlink()  # while still holding it, so that a finished run leaves no lock file
            except OSError:
                pass
            self._fh.close()  # closing the descriptor releases the lock
            self._fh = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
