"""SageMaker augmented manifests (JSON Lines) for Pipe-mode training, in both multi-label formats.

``{"source-ref": "s3://bucket/prefix/a.jpg", "class": "[1, 0, 1]"}`` (multi-hot, the default) or
``"class": "[0, 2]"`` (class-id, Ground Truth's format; content type ``application/x-recordio; label-format=class-id``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..exceptions import DataError, UsageError
from .lst import check_relative_path, read_text_file

__all__ = ["write_manifest", "read_manifest", "LABEL_FORMATS"]

LABEL_FORMATS = ("multi-hot", "class-id")


def write_manifest(path: str | os.PathLike, entries: Iterable[tuple[str, np.ndarray]], *, image_prefix: str,
                   label_format: str = "multi-hot", source_attribute: str = "source-ref",
                   label_attribute: str = "class") -> Path:
    """Write ``(relative path, multi-hot labels)`` entries; image references are ``image_prefix + path``."""
    if label_format not in LABEL_FORMATS:
        raise UsageError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    prefix = image_prefix if not image_prefix or image_prefix.endswith("/") else image_prefix + "/"
    path = Path(path)
    with atomic_write(path, "w") as fh:
        for rel, labels in entries:
            labels = np.asarray(labels)
            values = [int(v) for v in labels] if label_format == "multi-hot" else [int(i) for i in np.flatnonzero(labels)]
            fh.write(json.dumps({source_attribute: prefix + rel, label_attribute: json.dumps(values)}) + "\n")
    return path


def read_manifest(path: str | os.PathLike, *, num_classes: int, image_prefix: str = "",
                  label_format: str = "multi-hot", source_attribute: str = "source-ref",
                  label_attribute: str = "class") -> list[tuple[str, np.ndarray]]:
    """Read a manifest into ``(relative path, multi-hot labels)``; ``image_prefix`` is stripped from references."""
    if label_format not in LABEL_FORMATS:
        raise UsageError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    path = Path(path)
    out = []
    prefix = image_prefix if not image_prefix or image_prefix.endswith("/") else image_prefix + "/"
    for lineno, line in enumerate(read_text_file(path, what="manifest").splitlines(), 1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}).") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object per line, got a JSON {type(obj).__name__}.")
        for attr in (source_attribute, label_attribute):
            if attr not in obj:
                raise DataError(f"{where}: missing attribute {attr!r} (AttributeNames must list the image first, "
                                f"then the label: [{source_attribute!r}, {label_attribute!r}]).")
        ref = str(obj[source_attribute])
        if prefix and not ref.startswith(prefix):
            raise DataError(f"{where}: image reference {ref!r} does not start with {prefix!r}.")
        rel = check_relative_path(ref[len(prefix):], where=where)
        raw = obj[label_attribute]
        try:
            values = json.loads(raw) if isinstance(raw, str) else raw
            values = [int(v) if float(v).is_integer() else float("nan") for v in values]
        except (TypeError, ValueError):
            raise DataError(f"{where}: label {raw!r} is not a JSON list of integers.") from None
        labels = np.zeros(num_classes, dtype=np.uint8)
        if label_format == "multi-hot":
            if len(values) != num_classes or any(v not in (0, 1) for v in values):
                raise DataError(f"{where}: multi-hot label {raw!r} must be {num_classes} values of 0 or 1 "
                                f"(use label_format='class-id' for lists of class ids).")
            labels[:] = values
        else:
            if any(not 0 <= v < num_classes for v in values):
                raise DataError(f"{where}: class-id label {raw!r} has ids outside [0, {num_classes}).")
            labels[values] = 1
        out.append((rel, labels))
    return out
