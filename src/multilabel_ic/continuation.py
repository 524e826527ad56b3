"""Where a continued run's initial model comes from, for the backend that trains it: SageMaker reads a remote one
from S3 itself; any other backend gets a remote one (an ``s3://`` URI, a training job's name, a :class:`Model`
without a local artifact) downloaded into a temporary folder that lives as long as the run.

The processes of one run (``train --nproc-per-node N``) share one download: the launcher fetches the model once
(:func:`fetched_once`) and hands its path to them in an environment variable (:func:`handed_down`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .backends.base import Model
from .exceptions import UsageError
from .model.initial import InitialModel, read_initial_model, source_kind

__all__ = ["initial_model_for", "is_remote", "fetched_once", "handed_down", "HANDED_DOWN_ENV"]

HANDED_DOWN_ENV = "MULTILABEL_IC_INITIAL_MODEL"  # {"source", "path", "s3_uri"} of a model fetched by the launcher


def is_remote(source: Any) -> bool:
    """Whether ``source`` is in SageMaker only: an ``s3://`` URI, a training job's name, or such a Model."""
    if isinstance(source, InitialModel):
        return False
    if isinstance(source, Model):
        return source.local_artifact is None and str(source.artifact).startswith("s3://")
    if isinstance(source, (str, os.PathLike)):
        return source_kind(source) != "path"
    raise UsageError(f"initial_model must be a path, an s3:// URI, a training job name or a Model; got "
                     f"{type(source).__name__}.")


@contextmanager
def initial_model_for(source: Any, backend: Any, *, aws: Any = None) -> Iterator[Any]:
    """``source`` as ``backend.fit(initial_model=...)`` takes it: unchanged for SageMaker, or where it is already
    here; else fetched with ``aws`` (a ``SageMakerBackend``; by default one on the default AWS session) into a
    temporary folder, removed when the block ends."""
    if source is None or getattr(backend, "name", None) == "sagemaker" or not is_remote(source):
        yield source
        return
    given = handed_down(source) if isinstance(source, (str, os.PathLike)) else None
    if given is not None:  # fetched once by the launcher of this run's processes
        yield given
        return
    if aws is None:
        from .backends.sagemaker import SageMakerBackend

        aws = SageMakerBackend()
    remote = source.artifact if isinstance(source, Model) else os.fspath(source)
    with tempfile.TemporaryDirectory(prefix="initial-model-") as tmp:
        yield aws.fetch_initial_model(remote, Path(tmp))


@contextmanager
def fetched_once(source: str | os.PathLike, aws: Any) -> Iterator[tuple[InitialModel, dict[str, str]]]:
    """A remote ``source`` downloaded once, with ``aws`` (a ``SageMakerBackend``), into a temporary folder that
    lives as long as the block: (the model, the environment that hands it to the processes started in the block)."""
    with tempfile.TemporaryDirectory(prefix="initial-model-") as tmp:
        initial = aws.fetch_initial_model(os.fspath(source), Path(tmp))
        yield initial, {HANDED_DOWN_ENV: json.dumps({"source": initial.source, "path": str(initial.path),
                                                     "s3_uri": initial.s3_uri})}


def handed_down(source: str | os.PathLike) -> InitialModel | None:
    """The initial model the launcher of this process fetched for ``source`` (read from its download), or None
    when it fetched none, or another one."""
    raw = os.environ.get(HANDED_DOWN_ENV)
    if not raw:
        return None
    given = json.loads(raw)
    if given.get("source") != os.fspath(source):
        return None
    return read_initial_model(given["path"], source=given["source"], s3_uri=given.get("s3_uri"))
