"""Continue from a model on SageMaker: the initial ``model.tar.gz`` found (a path here, an ``s3://`` URI, a training
job's name, or a :class:`Model`), read and checked against the hyperparameters before anything is uploaded, then
given to the built-in algorithm as its ``model`` channel (``application/x-sagemaker-model``). A local artifact is
uploaded content-addressed, like the data channels, under ``<prefix>/data/model/<digest>/model.tar.gz``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import BackendError, UsageError
from ...model.initial import InitialModel, check_initial_model, read_initial_model, source_kind
from .s3 import download_file, upload_channel

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters
    from .session import Session

__all__ = ["fetch_initial_model", "initial_model_for_job", "model_channel_uri", "artifact_of_job"]

log = logging.getLogger("multilabel_ic.sagemaker")


def artifact_of_job(backend: Session, name: str) -> str:
    """The ``s3://`` URI of the model.tar.gz a completed training job wrote."""
    fix = ("give the name of a completed training job (aws sagemaker list-training-jobs), its model.tar.gz's s3:// "
           "URI, or a local model.tar.gz")
    try:
        desc = backend._call("sagemaker", "describe_training_job", TrainingJobName=name)
    except BackendError as exc:
        raise BackendError(f"initial model {name}: no training job of that name can be described in "
                           f"{backend.region} ({exc}); {fix}.") from exc
    status = desc.get("TrainingJobStatus")
    uri = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if status != "Completed" or not uri:
        raise UsageError(f"initial model {name}: training job {name} is {status}, not Completed, so it has no model "
                         f"to continue from; wait for it (multilabel-ic attach {name}) or {fix}.")
    return uri


def fetch_initial_model(backend: Session, source: str, folder: Path) -> InitialModel:
    """A remote initial model (an ``s3://`` URI or a training job's name) downloaded into ``folder`` and read; a
    path is read where it is."""
    kind = source_kind(source)
    if kind == "path":
        return read_initial_model(source)
    uri = artifact_of_job(backend, source) if kind == "job" else source
    backend.check_artifact(uri)
    local = download_file(backend.client("s3"), uri, Path(folder) / "model.tar.gz", progress=backend.progress,
                          what=f"the initial model {source}")
    return read_initial_model(local, source=source, s3_uri=uri)


def initial_model_for_job(backend: Session, hp: Hyperparameters, source: Any) -> InitialModel:
    """The checked initial model of a SageMaker job, whatever ``source`` is; a remote artifact is downloaded into a
    temporary folder for the check only (the job reads it from S3)."""
    from ..base import Model

    if isinstance(source, Model):
        remote = source.artifact if str(source.artifact).startswith("s3://") else None
        if source.local_artifact is not None:
            source = read_initial_model(source.local_artifact, source=source.artifact, s3_uri=remote)
        elif remote is not None:
            source = remote
        else:
            raise UsageError(f"initial_model: the Model of {source.artifact} has neither a local nor an s3:// "
                             f"artifact; pass the model.tar.gz's path or URI.")
    if not isinstance(source, InitialModel):
        if not isinstance(source, str) and not hasattr(source, "__fspath__"):
            raise UsageError(f"initial_model must be a path, an s3:// URI, a training job name or a Model; got "
                             f"{type(source).__name__}.")
        with tempfile.TemporaryDirectory(prefix="initial-model-") as tmp:
            source = fetch_initial_model(backend, str(source), Path(tmp))
    check_initial_model(hp, source)
    return source


def model_channel_uri(backend: Session, initial: InitialModel) -> str:
    """Where the job's ``model`` channel reads the initial model: its own ``s3://`` URI, or a local artifact
    uploaded content-addressed (the same file is uploaded once)."""
    if initial.s3_uri:
        return initial.s3_uri
    prefix = upload_channel(backend.client("s3"), [(initial.path, "model.tar.gz")], bucket=backend._need_bucket(),
                            prefix=backend.prefix, channel="model", progress=backend.progress, desc="initial model")
    log.info("channel model: %smodel.tar.gz (the initial model %s)", prefix, initial.source)
    return f"{prefix}model.tar.gz"
