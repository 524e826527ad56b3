"""Read and write MXNet/SageMaker .lst files: ``index \\t label(s) \\t relative/path``.

Two layouts: multi-hot (``index \\t y_0 ... y_{C-1} \\t path``, the multi-label one) and class-id
(``index \\t class \\t path``, the single-label one). Every malformed line is reported with file and line number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from .._io import atomic_write
from .._read import GiB, read_bounded
from ..exceptions import DataError, UsageError

__all__ = ["LstEntry", "read_lst", "write_lst", "check_relative_path", "read_text_file"]


class LstEntry(NamedTuple):
    index: int  # type: ignore[assignment]  # the .lst index column (shadows tuple.index, as in MXNet's naming)
    labels: np.ndarray  # multi-hot uint8 (C,)
    path: str  # relative, POSIX separators


def check_relative_path(path: str, *, where: str) -> str:
    """Reject absolute paths and paths that escape the image root; return the normalised POSIX path."""
    if not path:
        raise DataError(f"{where}: empty image path.")
    p = path.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        raise DataError(f"{where}: image path {path!r} is absolute; .lst paths must be relative to the image root "
                        f"(the image channel), e.g. 'val2017/000000000139.jpg'.")
    parts = PurePosixPath(p).parts
    if ".." in parts:
        raise DataError(f"{where}: image path {path!r} escapes the image root ('..'); keep images under the root.")
    return str(PurePosixPath(*[q for q in parts if q != "."]))


def read_text_file(path: Path, *, what: str, limit: int = 2 * GiB) -> str:
    """A UTF-8 text file, or a :class:`DataError` that says why it cannot be one (missing, a folder, a FIFO or a
    device, larger than ``limit``, binary)."""
    data = read_bounded(path, limit=limit, what=what, error=DataError)
    if b"\0" in data[:8192]:
        raise DataError(f"{path}: is a binary file, not a {what} (text, one tab-separated line per image).")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({exc.reason}); save the {what} as UTF-8.") from None


def _parse_label(token: str, *, where: str) -> int:
    try:
        v = float(token)
    except ValueError:
        raise DataError(f"{where}: label {token!r} is not a number; multi-hot labels must be 0 or 1.") from None
    if v not in (0.0, 1.0):
        raise DataError(f"{where}: label {token!r} is not 0 or 1; multi-hot labels must be 0 or 1.")
    return int(v)


def read_lst(path: str | os.PathLike, *, num_classes: int | None = None, layout: str = "auto") -> list[LstEntry]:
    """Read a .lst file.

    ``layout`` is ``"multi-hot"``, ``"class-id"`` or ``"auto"`` (multi-hot when there are more than three columns,
    or when ``num_classes`` is 1 and there are three). With ``num_classes`` every line must have that many labels
    (multi-hot) or a class in ``[0, num_classes)`` (class-id).
    """
    path = Path(path)
    if layout not in ("auto", "multi-hot", "class-id"):
        raise UsageError(f"layout must be 'auto', 'multi-hot' or 'class-id', got {layout!r}")
    text = read_text_file(path, what=".lst file")
    entries: list[LstEntry] = []
    seen: dict[int, int] = {}
    expected_cols: int | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        cols = raw.rstrip("\r").split("\t")
        if len(cols) < 3:
            raise DataError(f"{where}: expected tab-separated 'index<TAB>label(s)<TAB>path', got {len(cols)} "
                            f"column(s): {raw[:80]!r}. Check that the separators are tabs, not spaces.")
        if expected_cols is None:
            expected_cols = len(cols)
            if layout == "auto":
                layout = "multi-hot" if len(cols) > 3 or num_classes == 1 else "class-id"
            if layout == "multi-hot" and num_classes is not None and len(cols) != num_classes + 2:
                raise DataError(f"{where}: expected {num_classes + 2} columns (index, {num_classes} labels, path) "
                                f"for num_classes={num_classes}, got {len(cols)}.")
        elif len(cols) != expected_cols:
            raise DataError(f"{where}: expected {expected_cols} columns like the first line, got {len(cols)}.")
        try:
            value = float(cols[0])
            if not value.is_integer():
                raise ValueError
            index = int(value)
        except (ValueError, OverflowError):
            raise DataError(f"{where}: index {cols[0]!r} is not an integer.") from None
        if index in seen:
            raise DataError(f"{where}: duplicate index {index} (first used on line {seen[index]}); indices must be "
                            f"unique.")
        seen[index] = lineno
        rel = check_relative_path(cols[-1].strip(), where=where)
        if layout == "multi-hot":
            labels = np.array([_parse_label(t, where=where) for t in cols[1:-1]], dtype=np.uint8)
        else:
            try:
                cls = float(cols[1])
            except ValueError:
                raise DataError(f"{where}: class {cols[1]!r} is not a number.") from None
            n = num_classes
            if not cls.is_integer() or cls < 0 or (n is not None and cls >= n):
                raise DataError(f"{where}: class {cols[1]!r} must be an integer in [0, {n if n else 'num_classes'}).")
            labels = np.zeros(max(int(cls) + 1, n or 0), dtype=np.uint8)
            labels[int(cls)] = 1
        entries.append(LstEntry(index, labels, rel))
    if layout == "class-id" and entries and num_classes is None:
        width = max(len(e.labels) for e in entries)
        entries = [LstEntry(e.index, np.pad(e.labels, (0, width - len(e.labels))), e.path) for e in entries]
    return entries


def write_lst(path: str | os.PathLike, entries: Iterable[tuple[int, np.ndarray, str]], *,
              layout: str = "multi-hot") -> Path:
    """Write a .lst file atomically. ``class-id`` needs exactly one positive label per entry."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        for index, labels, rel in entries:
            rel = check_relative_path(str(rel), where=f"{path} (entry {index})")
            labels = np.asarray(labels)
            if layout == "multi-hot":
                cols = [str(int(v)) for v in labels]
            elif layout == "class-id":
                pos = np.flatnonzero(labels)
                if len(pos) != 1:
                    raise DataError(f"{path}: entry {index} has {len(pos)} positive labels; the class-id layout "
                                    f"needs exactly one. Use layout='multi-hot' for multi-label data.")
                cols = [str(int(pos[0]))]
            else:
                raise UsageError(f"layout must be 'multi-hot' or 'class-id', got {layout!r}")
            fh.write("\t".join([str(int(index)), *cols, rel]) + "\n")
    return path
