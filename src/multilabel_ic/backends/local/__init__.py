"""The local backend: the built-in Image Classification algorithm re-implemented in PyTorch.

Needs the ``local`` extra (PyTorch): without it, importing this package raises a :class:`MissingDependencyError`
with the pip line that installs it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
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

log = logging.getLogger("multilabel_ic.train")


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
            callbacks: Sequence[Callback] = (), initial_model: Any = None):
        """``initial_model``: continue from a ``model.tar.gz`` (a path, a :class:`Model`, or the checked
        :class:`~multilabel_ic.model.initial.InitialModel` that ``Trainer.fit`` makes of an s3:// URI or a job)."""
        from ..base import Model
        from .train import train as run

        initial = _local_initial_model(hp, initial_model)
        metrics = run(hp, train, validation, output_dir, self.options, callbacks,
                      engine=_engine_class(self.options.engine), initial=initial)
        tar = Path(metrics["artifact"])
        info = {} if initial is None else {"initial_model": {"source": initial.source, **initial.fingerprint()}}
        return Model(hyperparameters=hp, class_names=list(train.class_names), metrics=metrics, artifact=str(tar),
                     local_artifact=tar, backend=self, info=info)

    def predictor(self, model: Model, **kwargs: Any):
        from ...model.predictor import LocalPredictor

        kwargs.setdefault("device", self.options.device)
        kwargs.setdefault("thresholds", model.thresholds)
        kwargs.setdefault("augment", self.options.augment)
        if model.local_artifact is None:
            raise UsageError("this model has no local artifact to predict with")
        return LocalPredictor(model.local_artifact, class_names=model.class_names, **kwargs)


def _local_initial_model(hp: Hyperparameters, source: Any):
    """The checked initial model of a local run, or None. A remote one (s3://, a job) must come fetched."""
    if source is None:
        return None
    from ...model.initial import InitialModel, check_initial_model, read_initial_model, source_kind
    from ..base import Model

    if isinstance(source, Model):
        if source.local_artifact is None:
            raise UsageError(f"initial_model: the Model of {source.artifact} has no local artifact; pass it through "
                             f"Trainer(...).fit(..., initial_model=...), which downloads it.")
        source = source.local_artifact
    if not isinstance(source, InitialModel):
        if not isinstance(source, (str, os.PathLike)):
            raise UsageError(f"initial_model must be a path, an s3:// URI, a training job name or a Model; got "
                             f"{type(source).__name__}.")
        if source_kind(source) != "path":
            raise UsageError(f"initial_model {os.fspath(source)!r} is in SageMaker: pass it to "
                             f"Trainer(hp, backend='local').fit(..., initial_model=...), which downloads it first.")
        source = read_initial_model(source)
    check_initial_model(hp, source)
    if hp.use_pretrained_model:
        log.info("use_pretrained_model=1 is ignored: the run starts from the initial model %s", source.source)
    return source
