"""The public, backend-neutral API: ``Trainer`` fits a :class:`~multilabel_ic.backends.base.Model` on a backend.

``Trainer(hp, backend="local" | LocalBackend(...) | SageMakerBackend(...), output_dir=...)``. The contract
(``Backend``, ``Model``, ``Predictor``) lives in :mod:`multilabel_ic.backends.base`; concrete backends are imported
only when named.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends import BACKENDS, backend_class
from .backends.base import Backend, Model, Predictor, check_backend
from .callbacks import Callback
from .data.dataset import Dataset
from .exceptions import UsageError
from .hyperparameters import Hyperparameters

__all__ = ["Trainer", "Model", "Predictor", "Backend", "get_backend"]


def get_backend(backend: str | Backend, **kwargs: Any) -> Backend:
    """A backend object from its name (``"local"``, ``"sagemaker"``) and keyword arguments, or ``backend`` itself
    once it is checked against the contract."""
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}: use {', '.join(map(repr, BACKENDS))} or a backend object")
        return backend_class(backend)(**kwargs)
    if kwargs:
        raise UsageError(f"{', '.join(kwargs)} can only be given with backend='local'; pass them to the backend "
                         f"object instead, e.g. LocalBackend(device='cuda', options=LocalOptions(...)).")
    return check_backend(backend)


class Trainer:
    """Train the built-in algorithm with ``hyperparameters`` on a backend.

    >>> model = Trainer(hp, backend="local", output_dir="runs/coco5").fit(train, validation=val)  # doctest: +SKIP

    ``device=`` and ``options=`` are shorthand for ``backend=LocalBackend(device=..., options=...)`` and are refused
    with any other backend.
    """

    def __init__(self, hyperparameters: Hyperparameters, backend: str | Backend = "local", *,
                 output_dir: str | os.PathLike = "runs/multilabel-ic", device: str | None = None,
                 options: Any = None, callbacks: Sequence[Callback] = ()):
        if not isinstance(hyperparameters, Hyperparameters):
            raise UsageError(f"hyperparameters must be a multilabel_ic.Hyperparameters, got "
                             f"{type(hyperparameters).__name__}; build one with Hyperparameters(num_classes=..., ...).")
        self.hyperparameters = hyperparameters
        local_args = {k: v for k, v in (("device", device), ("options", options)) if v is not None}
        self.backend = get_backend(backend, **local_args)
        self.output_dir = Path(output_dir)
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise UsageError(f"callbacks must be multilabel_ic.callbacks.Callback objects, got "
                                 f"{type(cb).__name__}")

    def fit(self, train: Dataset, validation: Dataset | None = None, *, initial_model: Any = None) -> Model:
        """Train and return the :class:`Model` (metrics per epoch and final, artifact location, ``predictor()``).

        ``initial_model``: continue from an earlier ``model.tar.gz`` (a path, an ``s3://`` URI, a SageMaker training
        job's name, or a :class:`Model`), of the same num_layers, image_shape, num_classes and multi_label
        (docs/lifecycle.md)."""
        for name, data in (("train", train), ("validation", validation)):
            if data is not None and not isinstance(data, Dataset):
                raise UsageError(f"{name} must be a multilabel_ic.Dataset, got {type(data).__name__}; build one with "
                                 f"Dataset.from_lst(...), Dataset.from_coco(...) or Dataset.from_recordio(...).")
        if initial_model is None:
            return self.backend.fit(self.hyperparameters, train, validation, output_dir=self.output_dir,
                                    callbacks=self.callbacks)
        fit: Any = self.backend.fit  # the contract's fit has no initial_model: a backend opts in by taking it
        if "initial_model" not in inspect.signature(fit).parameters:
            raise UsageError(f"backend {getattr(self.backend, 'name', self.backend)!r} cannot continue from a model: "
                             f"use backend='local' or a SageMakerBackend, or drop initial_model.")
        from .continuation import initial_model_for

        with initial_model_for(initial_model, self.backend) as initial:
            return fit(self.hyperparameters, train, validation, output_dir=self.output_dir, callbacks=self.callbacks,
                       initial_model=initial)
