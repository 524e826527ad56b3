"""Continue from a model: the initial ``model.tar.gz``'s parameters, the classifier (``fc1``) included, loaded into
the network a local run has just built (after pretrained weights, before the optimizer), for either engine.

Only the weights carry over: the optimizer state, the update count and so the learning-rate schedule start afresh,
as the built-in algorithm's do when its ``model`` channel is given (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ...exceptions import ArtifactError
from ...model.artifact import read_model_tar

if TYPE_CHECKING:
    from ...model.initial import InitialModel
    from .engine import Engine

__all__ = ["initial_params", "load_initial"]

log = logging.getLogger("multilabel_ic.train")


def initial_params(initial: InitialModel) -> dict[str, np.ndarray]:
    """The MXNet-named parameters of the initial model's epoch (read again: the file was checked when resolved)."""
    return read_model_tar(initial.path, epoch=initial.epoch).params


def _refuse(initial: InitialModel, exc: Exception) -> ArtifactError:
    return ArtifactError(f"initial model {initial.source}: its parameters do not fit the network ({exc}); is it a "
                         f"model.tar.gz of the algorithm with these num_layers, image_shape and num_classes?")


def _loaded(initial: InitialModel) -> None:
    log.info("continuing from the initial model %s (epoch %d, sha256 %s...): every parameter, the classifier included; "
             "the optimizer and the learning-rate schedule start afresh", initial.source, initial.epoch,
             initial.sha256[:12])


def load_initial(engine: Engine, initial: InitialModel) -> None:
    """Either engine: every parameter and BatchNorm statistic of the network it has just built, from the initial
    model, through the engine's own ``set_params`` (which refuses a parameter the file lacks or shapes differently)."""
    try:
        engine.set_params((initial_params(initial), {}), source=str(initial.source))
    except (ArtifactError, ValueError) as exc:
        raise _refuse(initial, exc) from exc
    _loaded(initial)
