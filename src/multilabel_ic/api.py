"""The public, backend-neutral API: ``Trainer`` fits a ``Model``; a ``Predictor`` answers like the endpoint.

``Trainer(hp, backend="local" | SageMakerBackend(...))``. A backend is anything with ``fit(...)`` and
``predictor(...)`` (see :class:`Backend`); concrete backends are imported only when used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .data.dataset import Dataset
from .hyperparameters import Hyperparameters

__all__ = ["Trainer", "Model", "Predictor", "Backend", "get_backend"]


@runtime_checkable
class Backend(Protocol):
    """What a training backend provides: fit a job, and give a predictor for the model it made."""

    name: str

    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *,
            output_dir: Path) -> Model: ...

    def predictor(self, model: Model, **kwargs: Any) -> Predictor: ...


@dataclass
class Model:
    """A trained model: its metrics, where its ``model.tar.gz`` is, and how to get a predictor."""

    hyperparameters: Hyperparameters
    class_names: list[str]
    metrics: dict
    artifact: str  # local path, or s3:// URI for SageMaker
    local_artifact: Path | None
    backend: Any = field(repr=False, default=None)
    info: dict = field(default_factory=dict)

    def predictor(self, **kwargs: Any) -> Predictor:
        """A predictor for this model (the local engine over the artifact unless the backend says otherwise)."""
        if self.backend is not None:
            return self.backend.predictor(self, **kwargs)
        from .backends.local.predictor import LocalPredictor

        return LocalPredictor(self.local_artifact, class_names=self.class_names, **kwargs)

    def deploy(self, **kwargs: Any) -> Predictor:
        """Create a SageMaker endpoint for this model (SageMaker backend only)."""
        if self.backend is None or not hasattr(self.backend, "deploy"):
            raise NotImplementedError("deploy() needs a model trained with the SageMaker backend; for a local model "
                                      "use model.predictor(), or upload the artifact with SageMakerBackend.deploy().")
        return self.backend.deploy(self, **kwargs)

    @property
    def thresholds(self) -> list[float] | None:
        return (self.metrics.get("final") or {}).get("tuned_thresholds")


class Predictor:
    """Per-class probabilities for encoded images, in the SageMaker endpoint's response format.

    Subclasses implement :meth:`predict`; the rest is shared, so the local and the endpoint predictor behave the same.
    """

    class_names: list[str]
    thresholds: list[float] | None = None

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        """One encoded image (JPEG/PNG bytes) -> ``[p_0, ..., p_{C-1}]`` (the endpoint's JSON body)."""
        raise NotImplementedError

    def predict_batch(self, images: Sequence[bytes], *, output: str = "list") -> list[list[float]] | str:
        """Many images; ``output="jsonlines"`` gives batch transform's ``{"prediction": [...]}`` lines."""
        self._check_output(output)
        return self._format(output, [self.predict(img) for img in images])

    def _threshold(self, threshold: float | Sequence[float] | str) -> float | Sequence[float]:
        """A number, one per class, or "tuned" (the thresholds tuned on validation data)."""
        if isinstance(threshold, str):
            if threshold != "tuned" or not self.thresholds:
                raise ValueError("threshold='tuned' needs thresholds tuned on validation data "
                                 "(model.metrics['final']['tuned_thresholds'])")
            return self.thresholds
        return threshold

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in ("list", "jsonlines"):
            raise ValueError(f"output must be 'list' or 'jsonlines', got {output!r}")

    @staticmethod
    def _format(output: str, preds: list[list[float]]) -> list[list[float]] | str:
        if output == "jsonlines":
            return "".join(json.dumps({"prediction": p}) + "\n" for p in preds)
        return preds

    def predict_labels(self, images: bytes | Sequence[bytes], *,
                       threshold: float | Sequence[float] | str = 0.5) -> list[str] | list[list[str]]:
        """Class names whose probability reaches the threshold (a float, one per class, or ``"tuned"``)."""
        single = isinstance(images, (bytes, bytearray))
        batch = [images] if single else list(images)
        t = np.broadcast_to(np.asarray(self._threshold(threshold), dtype=float), (len(self.class_names),))
        out = []
        for p in self.predict_batch(batch):
            out.append([n for n, v, th in zip(self.class_names, p, t) if v >= th])
        return out[0] if single else out

    def evaluate(self, dataset: Dataset, *, threshold: float | Sequence[float] | str = 0.5) -> dict:
        """Score this predictor on ``dataset`` (mAP, per-class AP, F1 at ``threshold``, accuracy), exactly as the
        endpoint would be scored: every image goes through :meth:`predict_batch`."""
        from .metrics import evaluate

        if list(dataset.class_names) != list(self.class_names):
            raise ValueError(f"the dataset's classes {dataset.class_names} differ from the model's {self.class_names}")
        threshold = self._threshold(threshold)
        scores = self.predict_batch([dataset.image_path(i).read_bytes() for i in range(len(dataset))])
        return evaluate(dataset.labels, np.asarray(scores), class_names=self.class_names, thresholds=threshold)

    def close(self) -> None:
        """Release resources (a SageMaker predictor deletes its endpoint)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def get_backend(backend: str | Backend, **kwargs: Any) -> Backend:
    if isinstance(backend, str):
        if backend == "local":
            from .backends.local import LocalBackend

            return LocalBackend(**kwargs)
        if backend == "sagemaker":
            from .backends.sagemaker import SageMakerBackend

            return SageMakerBackend(**kwargs)
        raise ValueError(f"unknown backend {backend!r}: use 'local', 'sagemaker' or a backend object")
    return backend


class Trainer:
    """Train the built-in algorithm with ``hyperparameters`` on a backend.

    >>> model = Trainer(hp, backend="local", output_dir="runs/coco5").fit(train, validation=val)  # doctest: +SKIP
    """

    def __init__(self, hyperparameters: Hyperparameters, backend: str | Backend = "local", *,
                 output_dir: str | os.PathLike = "runs/multilabel-ic", device: str | None = None,
                 options: Any = None):
        if not isinstance(hyperparameters, Hyperparameters):
            raise TypeError("hyperparameters must be a multilabel_ic.Hyperparameters")
        self.hyperparameters = hyperparameters
        kwargs = {}
        if isinstance(backend, str) and backend == "local":
            kwargs = {"device": device, "options": options}
        self.backend = get_backend(backend, **kwargs)
        self.output_dir = Path(output_dir)

    def fit(self, train: Dataset, validation: Dataset | None = None) -> Model:
        """Train and return the :class:`Model` (metrics per epoch and final, artifact location, ``predictor()``)."""
        return self.backend.fit(self.hyperparameters, train, validation, output_dir=self.output_dir)
