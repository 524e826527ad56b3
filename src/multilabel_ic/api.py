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
from .exceptions import DataError, UsageError
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
            raise UsageError("deploy() needs a model trained with the SageMaker backend; for a local model "
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

    def predict_batch(self, images: Sequence[bytes], *, output: str = "list",
                      sources: Sequence[str] | None = None) -> list[list[float]] | str:
        """Many images; ``output="jsonlines"`` gives batch transform's ``{"prediction": [...]}`` lines.
        ``sources`` (e.g. the file names) name the images in error messages."""
        self._check_output(output)
        images = self._check_images(images, sources)
        return self._format(output, [self.predict(img) for img in images])

    @staticmethod
    def _check_images(images, sources: Sequence[str] | None = None) -> list[bytes]:
        """The batch as a list of bytes, or a :class:`UsageError` that names the first item that is not bytes."""
        if isinstance(images, (bytes, bytearray, str, os.PathLike)):
            raise UsageError(f"predict_batch takes a list of encoded images (bytes), got one {type(images).__name__}; "
                             f"use predict() for one image, and Path(path).read_bytes() to read a file.")
        images = list(images)
        if sources is not None and len(sources) != len(images):
            raise UsageError(f"sources has {len(sources)} names for {len(images)} images.")
        for i, img in enumerate(images):
            if not isinstance(img, (bytes, bytearray, memoryview)):
                name = sources[i] if sources is not None else f"image {i}"
                raise UsageError(f"{name}: expected the encoded image as bytes, got {type(img).__name__}; read a file "
                                 f"with Path(path).read_bytes().")
        return images

    def _threshold(self, threshold: float | Sequence[float] | str) -> float | Sequence[float]:
        """A number, one per class, or "tuned" (the thresholds tuned on validation data)."""
        if isinstance(threshold, str):
            if threshold != "tuned":
                raise UsageError(f"threshold must be a number, a list of {len(self.class_names)} numbers (one per "
                                 f"class) or 'tuned'; got {threshold!r}")
            if not self.thresholds:
                raise UsageError("threshold='tuned' needs thresholds tuned on validation data "
                                 "(model.metrics['final']['tuned_thresholds']); this model has none (it was trained "
                                 "without validation data, or its model-metadata.json is missing).")
            return self.thresholds
        try:
            values = np.asarray(threshold, dtype=float)
        except (TypeError, ValueError):
            raise UsageError(f"threshold must be a number, a list of numbers or 'tuned'; got {threshold!r}") from None
        if values.ndim > 1 or (values.ndim == 1 and len(values) != len(self.class_names)):
            raise UsageError(f"threshold has {values.size} values but the model has {len(self.class_names)} classes "
                             f"({', '.join(self.class_names)}); give one number, or one per class.")
        if not np.all(np.isfinite(values)):
            raise UsageError(f"threshold values must be finite numbers; got {threshold!r}")
        return threshold

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in ("list", "jsonlines"):
            raise UsageError(f"output must be 'list' or 'jsonlines', got {output!r}")

    @staticmethod
    def _format(output: str, preds: list[list[float]]) -> list[list[float]] | str:
        if output == "jsonlines":
            return "".join(json.dumps({"prediction": p}) + "\n" for p in preds)
        return preds

    def predict_labels(self, images: bytes | Sequence[bytes], *,
                       threshold: float | Sequence[float] | str = 0.5) -> list[str] | list[list[str]]:
        """Class names whose probability reaches the threshold (a float, one per class, or ``"tuned"``)."""
        single = isinstance(images, (bytes, bytearray, memoryview))
        if isinstance(images, (str, os.PathLike)):
            raise UsageError(f"predict_labels takes encoded image bytes (or a list of them), got "
                             f"{type(images).__name__} {str(images)[:60]!r}; read a file with Path(path).read_bytes().")
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
            raise DataError(f"the dataset's classes {dataset.class_names} differ from the model's {self.class_names}; "
                            f"pass class_names= in the model's order when reading the data.")
        threshold = self._threshold(threshold)
        dataset.check_images(what="evaluation data")
        from .images import read_bytes

        paths = [dataset.image_path(i) for i in range(len(dataset))]
        scores = self.predict_batch([read_bytes(p) for p in paths], sources=[str(p) for p in paths])
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
        raise UsageError(f"unknown backend {backend!r}: use 'local', 'sagemaker' or a backend object")
    if not (callable(getattr(backend, "fit", None)) and callable(getattr(backend, "predictor", None))):
        raise UsageError(f"backend={backend!r} is not a backend: pass 'local', 'sagemaker', or an object with fit() "
                         f"and predictor() methods (see multilabel_ic.Backend).")
    return backend


class Trainer:
    """Train the built-in algorithm with ``hyperparameters`` on a backend.

    >>> model = Trainer(hp, backend="local", output_dir="runs/coco5").fit(train, validation=val)  # doctest: +SKIP
    """

    def __init__(self, hyperparameters: Hyperparameters, backend: str | Backend = "local", *,
                 output_dir: str | os.PathLike = "runs/multilabel-ic", device: str | None = None,
                 options: Any = None):
        if not isinstance(hyperparameters, Hyperparameters):
            raise UsageError(f"hyperparameters must be a multilabel_ic.Hyperparameters, got "
                             f"{type(hyperparameters).__name__}; build one with Hyperparameters(num_classes=..., ...).")
        self.hyperparameters = hyperparameters
        kwargs = {}
        if isinstance(backend, str) and backend == "local":
            kwargs = {"device": device, "options": options}
        self.backend = get_backend(backend, **kwargs)
        self.output_dir = Path(output_dir)

    def fit(self, train: Dataset, validation: Dataset | None = None) -> Model:
        """Train and return the :class:`Model` (metrics per epoch and final, artifact location, ``predictor()``)."""
        for name, data in (("train", train), ("validation", validation)):
            if data is not None and not isinstance(data, Dataset):
                raise UsageError(f"{name} must be a multilabel_ic.Dataset, got {type(data).__name__}; build one with "
                                 f"Dataset.from_lst(...), Dataset.from_coco(...) or Dataset.from_recordio(...).")
        return self.backend.fit(self.hyperparameters, train, validation, output_dir=self.output_dir)
