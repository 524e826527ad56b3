"""Continue from a model: the initial ``model.tar.gz``'s parameters, the classifier (``fc1``) included, loaded into
the network a local run has just built (after pretrained weights, before the optimizer), for either engine.

Only the weights carry over: the optimizer state, the update count and so the learning-rate schedule start afresh,
as the built-in algorithm's do when its ``model`` channel is given (docs/lifecycle.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...exceptions import ArtifactError
from ...model.artifact import read_model_tar

if TYPE_CHECKING:
    from ...model.initial import InitialModel
    from ...model.network import ResNetV2

__all__ = ["initial_params", "load_initial_model", "load_initial_gluon"]

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


def load_initial_model(model: ResNetV2, initial: InitialModel) -> None:
    """PyTorch engine: every parameter and BatchNorm statistic of ``model`` from the initial model."""
    import torch

    from ...model.network import load_mxnet_state_dict

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in initial_params(initial).items()}
    try:
        load_mxnet_state_dict(model, tensors, strict=True)
    except ValueError as exc:
        raise _refuse(initial, exc) from exc
    _loaded(initial)


def load_initial_gluon(net: Any, initial: InitialModel, set_params: Callable[..., list[str]]) -> None:
    """Gluon engine: every parameter of the block (a ``SymbolBlock`` of the artifact's symbol) from the model, set by
    the engine's own ``set_params(net, params, source=...)`` (which returns the names that got no value)."""
    try:
        missing = set_params(net, initial_params(initial), source=str(initial.source))
    except ArtifactError as exc:
        raise _refuse(initial, exc) from exc
    if missing:
        raise _refuse(initial, ValueError(f"missing {', '.join(missing[:5])}"))
    _loaded(initial)
