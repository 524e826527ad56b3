"""The local backend: the built-in Image Classification algorithm re-implemented in PyTorch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .augment import AugmentOptions
from .train import LocalOptions

__all__ = ["LocalBackend", "LocalOptions", "AugmentOptions"]


class LocalBackend:
    """Train on this machine's CUDA GPU (or CPU) with the algorithm's semantics."""

    name = "local"

    def __init__(self, device: str | None = None, options: LocalOptions | None = None):
        options = options or LocalOptions()
        if device is not None:
            options = dataclasses.replace(options, device=device)
        self.options = options

    def fit(self, hp, train, validation, *, output_dir: Path):
        from ...api import Model
        from .train import train as run

        metrics = run(hp, train, validation, output_dir, self.options)
        tar = Path(metrics["artifact"])
        return Model(hyperparameters=hp, class_names=list(train.class_names), metrics=metrics, artifact=str(tar),
                     local_artifact=tar, backend=self)

    def predictor(self, model, **kwargs: Any):
        from .predictor import LocalPredictor

        kwargs.setdefault("device", self.options.device)
        kwargs.setdefault("thresholds", model.thresholds)
        kwargs.setdefault("augment", self.options.augment)
        return LocalPredictor(model.local_artifact, class_names=model.class_names, **kwargs)
