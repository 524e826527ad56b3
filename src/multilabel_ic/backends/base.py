"""The contract between the public API and the backends: what a backend provides, what training returns, and what a
predictor answers. It imports no backend; both backends and the model package implement or use it.

- :class:`Backend`: ``fit(hp, train, validation, output_dir=...) -> Model`` and ``predictor(model) -> Predictor``, plus
  the optional capabilities it declares in ``capabilities`` (``"deploy"``, ``"batch_transform"``).
- :class:`Model`: a trained model (metrics, artifact location, backend).
- :class:`Predictor`: per-class probabilities for encoded images, in the SageMaker endpoint's response format
  (defined a floor down, in :mod:`multilabel_ic.model.predictor_base`, and re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..data.dataset import Dataset
from ..exceptions import UsageError
from ..hyperparameters import Hyperparameters
from ..model.predictor_base import ANSWER_FIX, Predictor, check_scores, parse_probabilities

__all__ = ["Backend", "Model", "Predictor", "check_backend", "METRIC_KEYS", "FINAL_KEYS", "final_metrics",
           "parse_probabilities", "check_scores", "ANSWER_FIX"]

# The keys of Model.metrics that every backend fills (None where it cannot know), and of metrics["final"]: the
# scores of the shipped model on the validation data (docs/metrics.md says where each comes from per backend).
METRIC_KEYS = ("backend", "epochs", "final", "best_epoch", "saved_epochs", "stopped_early", "images_per_sec_median",
               "hyperparameters", "artifact")
FINAL_KEYS = ("epoch", "validation_accuracy", "num_samples", "accuracy", "mAP", "micro_mAP", "per_class_AP",
              "classes_without_positives", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "per_class_F1",
              "thresholds", "tuned_thresholds")


def final_metrics(**values: Any) -> dict:
    """``metrics["final"]`` with every key of :data:`FINAL_KEYS` (None unless given)."""
    unknown = set(values) - set(FINAL_KEYS)
    if unknown:
        raise ValueError(f"not final metric keys: {sorted(unknown)}")
    return {k: values.get(k) for k in FINAL_KEYS}


@runtime_checkable
class Backend(Protocol):
    """What a training backend provides: fit a job, and give a predictor for the model it made.

    ``capabilities`` names what it offers beyond that: ``"deploy"`` (``deploy(model, ...)``, an endpoint) and
    ``"batch_transform"`` (``batch_transform(model, data, ...)``).
    """

    name: str
    capabilities: frozenset[str]

    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *,
            output_dir: Path, callbacks: Sequence[Any] = ()) -> Model: ...

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
        """A predictor for this model, from the backend that trained it (the local engine over the artifact)."""
        if self.backend is None:
            raise UsageError("this Model has no backend to make a predictor; load the artifact directly: "
                             "multilabel_ic.model.predictor.LocalPredictor(model.local_artifact)")
        return self.backend.predictor(self, **kwargs)

    def deploy(self, **kwargs: Any) -> Predictor:
        """Create a SageMaker endpoint for this model (SageMaker backend only)."""
        if self.backend is None or "deploy" not in getattr(self.backend, "capabilities", ()):
            raise UsageError("deploy() needs a model trained with the SageMaker backend; for a local model "
                                      "use model.predictor(), or upload the artifact with SageMakerBackend.deploy().")
        return self.backend.deploy(self, **kwargs)

    @property
    def thresholds(self) -> list[float] | None:
        return (self.metrics.get("final") or {}).get("tuned_thresholds")

    def export(self, path: str | Path, *, format: str = "onnx") -> dict:
        """Export the model to ONNX or TorchScript (checked against the predictor to 1e-4), with a ``.json`` beside
        it that holds the class names, thresholds and preprocessing; see docs/export.md."""
        if self.local_artifact is None:
            raise UsageError("this Model has no local model.tar.gz to export")
        from ..model.export import export_model

        return export_model(self.local_artifact, path, format=format, class_names=self.class_names)


def check_backend(backend: Any) -> Backend:
    """``backend`` if it meets the contract, else a :class:`UsageError` that says what is missing."""
    missing = [m for m in ("fit", "predictor") if not callable(getattr(backend, m, None))]
    if missing:
        lacks = " and ".join(m + "()" for m in missing)
        raise UsageError(f"backend={backend!r} is not a backend: it lacks {lacks}. Pass 'local', 'sagemaker', or an "
                         f"object with fit() and predictor() methods (see multilabel_ic.backends.base.Backend).")
    caps: frozenset[str] = getattr(backend, "capabilities", frozenset())
    for cap in caps:
        if not callable(getattr(backend, cap, None)):
            raise UsageError(f"backend={backend!r} declares the capability {cap!r} but has no {cap}() method.")
    return backend
