"""The local backend: the built-in Image Classification algorithm re-implemented in PyTorch.

Needs the ``local`` extra (PyTorch): without it, importing this package raises a :class:`MissingDependencyError`
with the pip line that installs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import UsageError, require

require("torch", extra="local")

from ...local_options import LocalOptions  # noqa: E402
from ...model.transforms import AugmentOptions  # noqa: E402  (after the dependency check)

if TYPE_CHECKING:
    from ...backends.base import Model
    from ...callbacks import Callback
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters

__all__ = ["LocalBackend", "LocalOptions", "AugmentOptions", "ENGINES", "check_launch"]

# LocalOptions.engine -> (module, class) of the engine that trains (engine.Engine; docs/extending.md)
ENGINES = {"pytorch": ("torch_engine", "TorchEngine"), "gluon": ("gluon_engine", "GluonEngine")}


def _engine_class(name: str) -> Any:
    import importlib

    module, cls = ENGINES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def check_launch(*args: Any, **kwargs: Any) -> None:
    """:func:`.train.check_launch`: what each process of a torchrun launch would refuse, checked once."""
    from .train import check_launch as check

    check(*args, **kwargs)


class LocalBackend:
    """Train on this machine's CUDA GPU (or CPU) with the algorithm's semantics."""

    name = "local"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, device: str | None = None, options: LocalOptions | None = None, *, engine: str | None = None):
        """``engine``: "pytorch" (the default) or "gluon" (MXNet itself; the ``gluon`` extra, docs/gluon.md)."""
        options = options or LocalOptions()
        if device is not None:
            options = dataclasses.replace(options, device=device)
        if engine is not None:
            options = dataclasses.replace(options, engine=engine)
        if options.engine == "gluon":
            from . import gluon  # noqa: F401  (fails here, with the install line, not after the data is read)
        self.options = options

    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *, output_dir: Path,
            callbacks: Sequence[Callback] = ()):
        from ..base import Model
        from .train import train as run

        metrics = run(hp, train, validation, output_dir, self.options, callbacks,
                      engine=_engine_class(self.options.engine))
        tar = Path(metrics["artifact"])
        return Model(hyperparameters=hp, class_names=list(train.class_names), metrics=metrics, artifact=str(tar),
                     local_artifact=tar, backend=self)

    def predictor(self, model: Model, **kwargs: Any):
        from ...model.predictor import LocalPredictor

        kwargs.setdefault("device", self.options.device)
        kwargs.setdefault("thresholds", model.thresholds)
        kwargs.setdefault("augment", self.options.augment)
        if model.local_artifact is None:
            raise UsageError("this model has no local artifact to predict with")
        return LocalPredictor(model.local_artifact, class_names=model.class_names, **kwargs)
