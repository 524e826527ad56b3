"""Test doubles for code that uses multilabel_ic: a backend that trains nothing and a predictor with canned answers.

    from multilabel_ic.testing import FakeBackend
    model = Trainer(hp, backend=FakeBackend(probabilities=[0.9, 0.1, 0.2, 0.0, 0.4])).fit(train, validation=val)
    assert model.predictor().predict_labels(jpeg_bytes) == ["person"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .backends.base import Model, Predictor
from .exceptions import UsageError

if TYPE_CHECKING:
    from .callbacks import Callback
    from .data.dataset import Dataset
    from .hyperparameters import Hyperparameters

__all__ = ["FakeBackend", "FakePredictor"]


class FakePredictor(Predictor):
    """Answers every image with ``probabilities`` (a list, or a function of the image bytes)."""

    def __init__(self, class_names: Sequence[str], probabilities: Sequence[float] | Callable[[bytes], list]):
        self.class_names = list(class_names)
        self._answer = probabilities
        self.requests: list[bytes] = []

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        self.requests.append(bytes(image))
        probs = self._answer(image) if callable(self._answer) else self._answer
        if len(probs) != len(self.class_names):
            raise UsageError(f"canned answer has {len(probs)} values for {len(self.class_names)} classes")
        return [float(p) for p in probs]


class FakeBackend:
    """A backend that records what it was asked to fit and returns a model whose predictor gives canned answers."""

    name = "fake"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, probabilities: Sequence[float] | Callable[[bytes], list] | None = None,
                 metrics: dict | None = None):
        self.probabilities = probabilities
        self.metrics = metrics
        self.fits: list[dict] = []

    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *, output_dir: Path,
            callbacks: Sequence[Callback] = ()) -> Model:
        self.fits.append({"hyperparameters": hp, "train": train, "validation": validation, "output_dir": output_dir})
        metrics = self.metrics or {"backend": "fake", "epochs": [], "final": {}}
        return Model(hyperparameters=hp, class_names=list(train.class_names), metrics=metrics,
                     artifact="fake://model.tar.gz", local_artifact=None, backend=self)

    def predictor(self, model: Model, **kwargs) -> FakePredictor:
        probs = self.probabilities if self.probabilities is not None else [0.5] * len(model.class_names)
        return FakePredictor(model.class_names, probs)
