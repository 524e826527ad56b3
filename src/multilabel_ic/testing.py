"""Test doubles for code that uses multilabel_ic: a backend that trains nothing and a predictor with canned answers.

    from multilabel_ic.testing import FakeBackend
    model = Trainer(hp, backend=FakeBackend(probabilities=[0.9, 0.1, 0.2, 0.0, 0.4])).fit(train, validation=val)
    assert model.predictor().predict_labels(jpeg_bytes) == ["person"]

:class:`FakeLocalBackend` stands in for the local backend where a run's epochs matter but its network does not (a
tuning study's logic: trials, pruning, resuming): it trains nothing and scores each epoch by a function of the
hyperparameters, through the same callbacks, run folder files and resume rules as a local run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_write_text, ensure_dir, json_default
from .backends.base import Model, Predictor
from .exceptions import UsageError

if TYPE_CHECKING:
    from .callbacks import Callback
    from .data.dataset import Dataset
    from .hyperparameters import Hyperparameters

__all__ = ["FakeBackend", "FakeLocalBackend", "FakePredictor", "score_by_learning_rate"]


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


def score_by_learning_rate(hp: Hyperparameters, epoch: int) -> float:
    """The default score of :class:`FakeLocalBackend`: best at learning rate 0.01 (higher with ``adam``), rising with
    each epoch; deterministic."""
    closeness = 1.0 / (1.0 + abs(math.log10(hp.learning_rate) + 2.0))
    bonus = 1.0 if hp.optimizer == "adam" else 0.8
    return round(closeness * bonus * (epoch + 1) / hp.epochs, 6)


class FakeLocalBackend:
    """A local backend that trains nothing: each of ``hp.epochs`` epochs is scored ``score(hp, epoch)`` (validation
    accuracy and mAP alike) and goes through the run's callbacks as a local run's does (``on_train_start`` with the
    epochs a resumed run had finished, ``on_epoch_end`` after the epoch is saved, :class:`StopTraining` ends the run
    after that epoch). The run folder gets ``metrics.jsonl``, ``metrics.json`` and a stand-in ``model.tar.gz``; a run
    in a folder holding finished epochs resumes after them. ``before_epoch(output_dir, epoch)``, if given, is called
    as each epoch starts (to slow, block or stop a run there). ``fits`` records each run: its folder, hyperparameters
    and the epochs it trained."""

    name = "local"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, score: Callable[[Hyperparameters, int], float] = score_by_learning_rate, *,
                 options: Any = None, before_epoch: Callable[[Path, int], None] | None = None):
        from .backends.local import LocalOptions

        self.score = score
        self.options = options or LocalOptions(device="cpu", num_workers=0, progress=False)
        self.before_epoch = before_epoch
        self.fits: list[dict] = []

    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *, output_dir: Path,
            callbacks: Sequence[Callback] = ()) -> Model:
        from .callbacks import ArgsJson, CallbackList, MetricsJsonl, RunInfo

        out = ensure_dir(Path(output_dir))
        state = out / "fake-state.json"
        history: list[dict] = json.loads(state.read_text(encoding="utf-8")) if state.exists() else []
        hooks = CallbackList([ArgsJson(), MetricsJsonl(), *callbacks])
        hooks.on_train_start(RunInfo(output_dir=out, backend=self.name, hyperparameters=hp.to_sagemaker(
            include_defaults=True), class_names=list(train.class_names), history=list(history)))
        trained = []
        for epoch in range(len(history), hp.epochs):
            if hooks.stop_reason is not None:
                break
            if self.before_epoch is not None:
                self.before_epoch(out, epoch)
            value = float(self.score(hp, epoch))
            record = {"epoch": epoch, "train_loss": 1.0 - value, "train_accuracy": value,
                      "validation_accuracy": value, "validation_mAP": value}
            history.append(record)
            trained.append(epoch)
            atomic_write_text(state, json.dumps(history) + "\n")
            hooks.on_epoch_end(record)
        last = history[-1] if history else {"epoch": None, "validation_accuracy": None, "validation_mAP": None}
        metrics = {"backend": self.name, "epochs": history, "stopped_early": hooks.stop_reason is not None,
                   "hyperparameters": hp.to_sagemaker(),
                   "final": {"epoch": last["epoch"], "validation_accuracy": last["validation_accuracy"],
                             "mAP": last["validation_mAP"]}}
        tar = out / "model.tar.gz"
        atomic_write_text(tar, "a stand-in: FakeLocalBackend trains nothing\n")
        metrics["artifact"] = str(tar)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=json_default) + "\n")
        hooks.on_train_end(metrics)
        self.fits.append({"output_dir": out, "hyperparameters": hp, "epochs_trained": trained})
        return Model(hyperparameters=hp, class_names=list(train.class_names), metrics=metrics, artifact=str(tar),
                     local_artifact=tar, backend=self)

    def predictor(self, model: Model, **kwargs: Any) -> FakePredictor:
        return FakePredictor(model.class_names, [0.5] * len(model.class_names))
