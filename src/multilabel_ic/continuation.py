"""Where a continued run's initial model comes from, for the backend that trains it: SageMaker reads a remote one
from S3 itself; any other backend gets a remote one (an ``s3://`` URI, a training job's name, a :class:`Model`
without a local artifact) downloaded into a temporary folder that lives as long as the run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .backends.base import Model
from .exceptions import UsageError
from .model.initial import InitialModel, source_kind

__all__ = ["initial_model_for", "is_remote"]


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
    if aws is None:
        from .backends.sagemaker import SageMakerBackend

        aws = SageMakerBackend()
    remote = source.artifact if isinstance(source, Model) else os.fspath(source)
    with tempfile.TemporaryDirectory(prefix="initial-model-") as tmp:
        yield aws.fetch_initial_model(remote, Path(tmp))
