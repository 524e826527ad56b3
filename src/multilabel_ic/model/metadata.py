"""``model-metadata.json`` beside ``model.tar.gz``: what the algorithm's artifact does not store.

Written by both backends (:func:`write_metadata`), read by the predictor, ``evaluate``, ``export`` and ``report``
(:func:`read_metadata`). Every field is checked by type and size when it is read, and a wrong one is refused in one
line that names it, never used: a string of class names would otherwise give the labels ``'a'``, ``'c'``.

=================  ==========================================================================================
field              value
=================  ==========================================================================================
class_names        required: a list of unique non-empty strings, one per class of the model (``num_classes``)
tuned_thresholds   null or absent, or a list of finite numbers in [0, 1], one per class
hyperparameters    null or absent, or the training's SageMaker hyperparameter map (strings), a valid one whose
                   ``num_classes`` is the model's; ``resize`` in it is what ``evaluate`` scores with by default
backend            absent, or "local" / "sagemaker"
engine             absent, or a non-empty string (local runs: the training engine)
job_name           absent, or a non-empty string (SageMaker runs: the training job)
artifact           absent, or a non-empty string (SageMaker runs: the artifact's S3 URI)
=================  ==========================================================================================
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .._read import MiB, read_bounded_text
from ..data.dataset import MAX_CLASS_NAME
from ..exceptions import ArtifactError, HyperparameterError

__all__ = ["METADATA_NAME", "FIELDS", "write_metadata", "read_metadata", "check_metadata", "metadata_resize"]

METADATA_NAME = "model-metadata.json"
MAX_BYTES = 16 * MiB  # room for ~16k class names of 1024 characters
MAX_CLASSES = 100_000
MAX_NAME = MAX_CLASS_NAME
THRESHOLD_SLACK = 1e-5  # tuned thresholds sit 1e-6 outside the scores they separate, which are in [0, 1]
FIELDS = ("class_names", "tuned_thresholds", "hyperparameters", "backend", "engine", "job_name", "artifact")
_STRINGS = {"engine": 64, "job_name": 256, "artifact": 2048}


class _Bad(Exception):
    def __init__(self, field: str, want: str, got: Any):
        super().__init__(field, want, got)
        self.field, self.want, self.got = field, want, got


def _describe(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _class_names(value: Any, num_classes: int | None) -> list[str]:
    size = f"{num_classes} " if num_classes is not None else ""
    want = f"a list of {size}unique non-empty strings (one per class of the model, in label order)"
    if not isinstance(value, list) or not value or len(value) > MAX_CLASSES:
        raise _Bad("class_names", want, value)
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise _Bad(f"class_names[{i}]", f"a non-empty string of at most {MAX_NAME} characters", name)
    if len(set(value)) != len(value):
        dupes = sorted({n for n in value if value.count(n) > 1})
        raise _Bad("class_names", want + f"; {', '.join(dupes)[:60]} appear more than once", value)
    if num_classes is not None and len(value) != num_classes:
        raise _Bad("class_names", want, value)
    return list(value)


def _thresholds(value: Any, count: int) -> list[float] | None:
    if value is None:
        return None
    want = f"null, or a list of {count} numbers in [0, 1] (one per class)"
    if not isinstance(value, list) or len(value) != count:
        raise _Bad("tuned_thresholds", want, value)
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not (
                -THRESHOLD_SLACK <= t <= 1 + THRESHOLD_SLACK):
            raise _Bad(f"tuned_thresholds[{i}]", "a finite number in [0, 1]", t)
    return [float(t) for t in value]


def _hyperparameters(value: Any, count: int) -> dict[str, str] | None:
    if value is None:
        return None
    from ..hyperparameters import Hyperparameters

    want = "null, or the training's hyperparameters as a map of names to strings"
    if not isinstance(value, dict) or len(value) > 100:
        raise _Bad("hyperparameters", want, value)
    for key, v in value.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or len(str(v)) > 256:
            raise _Bad(f"hyperparameters.{key}", "a string (the SageMaker hyperparameter value)", v)
    try:
        hp = Hyperparameters.from_sagemaker({k: str(v) for k, v in value.items()})
    except (HyperparameterError, TypeError, ValueError) as exc:
        raise _Bad("hyperparameters", f"a valid hyperparameter map ({str(exc).split('. ')[0][:160]})", value) from None
    if hp.num_classes != count:
        raise _Bad("hyperparameters.num_classes", f"{count}, the number of class names", value.get("num_classes"))
    return dict(value)


def _check(doc: dict, num_classes: int | None) -> dict:
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise _Bad(unknown[0][:40], f"absent (the fields are {', '.join(FIELDS)})", doc[unknown[0]])
    if "class_names" not in doc:
        raise _Bad("class_names", "present: the class names in label order", None)
    names = _class_names(doc["class_names"], num_classes)
    out: dict[str, Any] = {"class_names": names,
                           "tuned_thresholds": _thresholds(doc.get("tuned_thresholds"), len(names)),
                           "hyperparameters": _hyperparameters(doc.get("hyperparameters"), len(names))}
    if "backend" in doc:
        if doc["backend"] not in ("local", "sagemaker"):
            raise _Bad("backend", '"local" or "sagemaker"', doc["backend"])
        out["backend"] = doc["backend"]
    for key, limit in _STRINGS.items():
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key] or len(doc[key]) > limit:
                raise _Bad(key, f"a non-empty string of at most {limit} characters", doc[key])
            out[key] = doc[key]
    return out


def check_metadata(doc: Any, *, source: str | os.PathLike, num_classes: int | None = None) -> dict:
    """``doc`` with every field checked (see the module's table), or one :class:`ArtifactError` naming the field."""
    if not isinstance(doc, dict):
        raise ArtifactError(f"{source}: expected a JSON object with class_names and tuned_thresholds, got "
                            f"{_describe(doc)}; delete it or write it again.")
    try:
        return _check(doc, num_classes)
    except _Bad as bad:
        raise ArtifactError(f"{source}: {bad.field} must be {bad.want}; got {_describe(bad.got)}. Write the file "
                            f"again, or delete it and pass the class names (--classes).") from None


def metadata_resize(meta: dict | None) -> int | None:
    """The ``resize`` the model was trained with (from its checked hyperparameters), or None."""
    hp = (meta or {}).get("hyperparameters") or {}
    value = hp.get("resize")
    return int(value) if value not in (None, "") else None


def write_metadata(artifact: str | os.PathLike, *, class_names, hyperparameters: dict, thresholds=None,
                   extra: dict | None = None) -> Path:
    """``model-metadata.json`` beside ``model.tar.gz``: what the algorithm's artifact does not store (class names,
    tuned thresholds, the hyperparameters). It is kept out of the tarball so the artifact stays the algorithm's.
    The document is checked as :func:`read_metadata` checks it, so what is written is always read back."""
    from .._io import atomic_write_text

    path = Path(artifact).parent / METADATA_NAME
    doc = {"class_names": list(class_names), "tuned_thresholds": None if thresholds is None else list(thresholds),
           "hyperparameters": hyperparameters, **(extra or {})}
    check_metadata(doc, source=path)
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def read_metadata(artifact: str | os.PathLike, *, num_classes: int | None = None) -> dict | None:
    """The checked ``model-metadata.json`` beside an artifact, or None when there is none. Read bounded (a FIFO or a
    device in its place is refused, not waited on); ``num_classes`` (the model's) is the length the lists must have."""
    path = Path(artifact).parent / METADATA_NAME
    if not os.path.lexists(path):
        return None
    text = read_bounded_text(path, limit=MAX_BYTES, what="model metadata", error=ArtifactError)
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({str(exc)[:120]}); delete it or write it again.") from None
    return check_metadata(doc, source=path, num_classes=num_classes)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")
