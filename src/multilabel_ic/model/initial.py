"""The initial model of a continued run (incremental training): which ``model.tar.gz`` it is, what network it holds,
and whether that network fits the run's hyperparameters. Framework-free and backend-free.

The built-in algorithm continues only a model of the same ``num_layers``, ``image_shape`` and ``num_classes``
(its ``model`` channel; ic-spec 2.5); ``multi_label`` picks the head (sigmoid or softmax) and must match too.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import ArtifactError, UsageError
from .artifact import read_model_tar

if TYPE_CHECKING:
    from ..hyperparameters import Hyperparameters

__all__ = ["InitialModel", "read_initial_model", "check_initial_model", "source_kind", "ARCHITECTURE_FIELDS"]

# the hyperparameters that decide the network's parameters and head
ARCHITECTURE_FIELDS = ("num_layers", "image_shape", "num_classes", "multi_label")
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's training job names


@dataclass(frozen=True)
class InitialModel:
    """A readable ``model.tar.gz`` on this machine and the network it holds (from its files, not from metadata)."""

    source: str  # what the user named: a path, an s3:// URI or a training job
    path: Path  # the artifact on this machine (downloaded for an s3:// URI or a job)
    sha256: str
    epoch: int  # the saved epoch a run continues from (the latest in the artifact)
    num_layers: int
    image_shape: tuple[int, int, int] | None  # None: the artifact has no model-shapes.json
    num_classes: int
    multi_label: bool
    s3_uri: str | None = None  # where it already is in S3 (None: a local file, uploaded for a SageMaker job)

    def fingerprint(self) -> dict:
        """What a run folder records of it: a resume must continue from the same weights."""
        return {"sha256": self.sha256, "epoch": self.epoch}


def source_kind(source: str | os.PathLike) -> str:
    """``"s3"`` (an ``s3://`` URI), ``"path"`` (a file or folder here, or anything path-like) or ``"job"`` (a
    SageMaker training job name: no such file here, and a valid job name)."""
    text = os.fspath(source)
    if text.startswith("s3://"):
        return "s3"
    if os.path.lexists(text) or not _JOB_NAME.match(text):
        return "path"
    return "job"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_initial_model(path: str | os.PathLike, *, source: str | None = None,
                       s3_uri: str | None = None) -> InitialModel:
    """The :class:`InitialModel` of a ``model.tar.gz`` (or of a run folder that holds one): an
    :class:`ArtifactError` naming it when it is missing, damaged or not a model of the algorithm."""
    p = Path(path)
    label = source or str(p)
    if p.is_dir():
        p = p / "model.tar.gz"
    if not p.is_file():
        raise ArtifactError(f"initial model {label}: no model.tar.gz there; give the model.tar.gz of a training run "
                            f"(a local run folder's, an s3:// URI, or a SageMaker training job's name).")
    try:
        contents = read_model_tar(p)
    except ArtifactError as exc:
        said = str(exc)  # the reader's message starts with the file's path, which the label already names
        said = said[len(str(p)):].lstrip(":").lstrip() if said.startswith(str(p)) else said
        raise ArtifactError(f"initial model {label}: {said}") from exc
    return InitialModel(source=label, path=p, sha256=_sha256(p), epoch=contents.epoch,
                        num_layers=contents.num_layers, image_shape=contents.image_shape,
                        num_classes=contents.num_classes, multi_label=contents.output == "sigmoid", s3_uri=s3_uri)


def _shape(value: tuple[int, ...] | None) -> str:
    return "not recorded" if value is None else ",".join(map(str, value))


def check_initial_model(hp: Hyperparameters, initial: InitialModel) -> None:
    """A :class:`UsageError` naming every architecture field of ``hp`` that differs from the model's, with both
    values, before anything is uploaded or trained."""
    mine = {"num_layers": hp.num_layers, "image_shape": (hp.channels, hp.height, hp.width),
            "num_classes": hp.num_classes, "multi_label": hp.multi_label == 1}
    theirs = {"num_layers": initial.num_layers, "image_shape": initial.image_shape,
              "num_classes": initial.num_classes, "multi_label": initial.multi_label}
    shown = {"image_shape": _shape, "multi_label": lambda v: str(int(v))}
    differ = []
    for name in ARCHITECTURE_FIELDS:
        if name == "image_shape" and theirs[name] is None:
            continue  # an artifact without model-shapes.json: its parameters are checked when they are loaded
        if mine[name] != theirs[name]:
            show = shown.get(name, str)
            differ.append(f"{name} is {show(theirs[name])} in the model and {show(mine[name])} here")
    if differ:
        raise UsageError(
            f"initial model {initial.source} does not fit these hyperparameters: {'; '.join(differ)}. A run continues "
            f"only a model of the same num_layers, image_shape, num_classes and multi_label: set them to the model's "
            f"values, or train from scratch without an initial model.")
