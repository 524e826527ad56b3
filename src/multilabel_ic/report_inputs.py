"""What the run report reads from a run folder, checked: ``metrics.json`` (or, for a run that has not finished, its
``metrics.jsonl``) and the class names and thresholds of ``model-metadata.json``.

Each file is read bounded (a FIFO or a device in its place is refused, not waited on) and each value the report uses
is checked for its type, so a damaged or hand-edited run folder is one line that names the file and the field, never
a ``KeyError`` or ``TypeError`` from deep inside the drawing.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from ._read import MiB, read_bounded
from .exceptions import UsageError

__all__ = ["read_run_metrics", "read_class_names", "METRICS_LIMIT"]

log = logging.getLogger("multilabel_ic")

METRICS_LIMIT = 64 * MiB  # metrics.json / metrics.jsonl: ~1 KB per epoch

# the per-epoch fields the report draws or tabulates: each a number or null
_EPOCH_NUMBERS = ("train_loss", "train_accuracy", "train_accuracy_epoch", "validation_accuracy", "validation_mAP",
                  "time_cost", "images_per_sec")
_FINAL_NUMBERS = ("mAP", "micro_mAP", "f1_macro", "validation_accuracy")


class _Bad(Exception):
    """A field of the wrong type: its argument says which and what it should be."""


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _number(value: Any, field: str, *, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{field} must be a number{' or null' if nullable else ''}, not {_type_name(value)}")


def _epoch_record(record: Any, field: str) -> dict:
    if not isinstance(record, dict):
        raise _Bad(f"{field} must be an object (one epoch's metrics), not {_type_name(record)}")
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise _Bad(f"{field}.epoch must be an epoch number (an integer from 0), not {epoch!r}"[:200])
    for key in _EPOCH_NUMBERS:
        _number(record.get(key), f"{field}.{key}")
    speed = record.get("speed")
    if speed is not None:
        if not isinstance(speed, list):
            raise _Bad(f"{field}.speed must be a list of numbers, not {_type_name(speed)}")
        for i, value in enumerate(speed):
            _number(value, f"{field}.speed[{i}]", nullable=False)
    return record


def _check_metrics(doc: Any) -> dict:
    if not isinstance(doc, dict):
        raise _Bad(f"expected a JSON object of the run's metrics, got {_type_name(doc)}")
    epochs = doc.get("epochs")
    if epochs is not None and not isinstance(epochs, list):
        raise _Bad(f"epochs must be a list of per-epoch objects, not {_type_name(epochs)}")
    for i, record in enumerate(epochs or []):
        _epoch_record(record, f"epochs[{i}]")
    final = doc.get("final")
    if final is not None:
        if not isinstance(final, dict):
            raise _Bad(f"final must be an object of the shipped model's metrics, not {_type_name(final)}")
        for key in _FINAL_NUMBERS:
            _number(final.get(key), f"final.{key}")
        epoch = final.get("epoch")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise _Bad(f"final.epoch must be an integer or null, not {_type_name(epoch)}")
        per_class = final.get("per_class_AP")
        if per_class is not None:
            if not isinstance(per_class, dict):
                raise _Bad(f"final.per_class_AP must be an object of class name -> AP, not {_type_name(per_class)}")
            for name, ap in per_class.items():
                _number(ap, f"final.per_class_AP[{name!r}]")
        _thresholds(final.get("tuned_thresholds"), "final.tuned_thresholds")
    for key in ("images_per_sec_median", "speedometer_median"):
        _number(doc.get(key), key)
    hp = doc.get("hyperparameters")
    if hp is not None and not isinstance(hp, dict):
        raise _Bad(f"hyperparameters must be an object of name -> value, not {_type_name(hp)}")
    artifact = doc.get("artifact")
    if artifact is not None and not isinstance(artifact, str):
        raise _Bad(f"artifact must be a path or an s3:// URI (a string), not {_type_name(artifact)}")
    return doc


def _thresholds(values: Any, field: str) -> None:
    if values is None:
        return
    if not isinstance(values, list):
        raise _Bad(f"{field} must be a list of numbers (one per class), not {_type_name(values)}")
    for i, value in enumerate(values):
        _number(value, f"{field}[{i}]", nullable=False)
        if not math.isfinite(value):
            raise _Bad(f"{field}[{i}] must be a finite number, not {value!r}")


def _read_text(path: Path, what: str) -> str:
    data = read_bounded(path, limit=METRICS_LIMIT, what=what, error=UsageError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: the {what} is not UTF-8 text (byte {exc.start}); it is damaged: train the run "
                         "again, or restore the file.") from None


def _damaged(path: Path, detail: str) -> UsageError:
    return UsageError(f"{path}: {detail}; the file is damaged: train the run again (or restore the file), then run "
                      "report again.")


def read_run_metrics(run: Path) -> tuple[dict, bool]:
    """(the run's metrics, finished): ``metrics.json`` of a finished run, else the epochs of ``metrics.jsonl``
    (finished=False); every field the report uses checked, or a :class:`UsageError` naming the file and field."""
    path = run / "metrics.json"
    if path.exists() or path.is_symlink():
        text = _read_text(path, "metrics file")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _damaged(path, f"not valid JSON ({' '.join(str(exc).split())})") from None
        try:
            return _check_metrics(doc), True
        except _Bad as exc:
            raise _damaged(path, str(exc)) from None
    lines_path = run / "metrics.jsonl"
    if not (lines_path.exists() or lines_path.is_symlink()):
        raise UsageError(f"{run}: no metrics.json; give the folder of a finished training run.")
    return {"epochs": _read_epoch_lines(lines_path), "final": None}, False


def _read_epoch_lines(path: Path) -> list[dict]:
    text = _read_text(path, "metrics log")
    lines = text.split("\n")
    epochs = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            if lineno == len(lines):  # the last line, without its newline: a run killed while it was written
                log.warning("%s:%d: an incomplete last line (the run stopped while writing it) is left out", path,
                            lineno)
                break
            raise _damaged(Path(f"{path}:{lineno}"), f"not valid JSON ({' '.join(str(exc).split())})") from None
        try:
            epochs.append(_epoch_record(record, "the line"))
        except _Bad as exc:
            raise _damaged(Path(f"{path}:{lineno}"), str(exc)) from None
    return epochs


def read_class_names(run: Path, metrics: dict | None = None) -> tuple[list[str], list[float] | None]:
    """(class names, tuned thresholds) from ``model-metadata.json`` beside the run's artifact, checked field by field
    by its reader (:func:`~multilabel_ic.model.metadata.read_metadata`), with the metrics' per-class AP as the
    fallback for the names."""
    from .model.metadata import read_metadata

    meta = read_metadata(run / "model.tar.gz") or {}
    names = meta.get("class_names")
    if not names and metrics is not None:
        names = list((metrics.get("final") or {}).get("per_class_AP") or {})
    return list(names or []), meta.get("tuned_thresholds")
