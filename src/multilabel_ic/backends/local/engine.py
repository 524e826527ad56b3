"""The interface each local engine implements (the PyTorch engine, ``torch_engine.TorchEngine``; the MXNet Gluon
engine, ``gluon.GluonEngine``), for the one run skeleton in ``run.py`` to drive. Framework-free."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ...data.dataset import Dataset

__all__ = ["Engine", "Params"]

# MXNet-named parameters: (arg, aux) numpy dicts, as the artifact stores them
Params = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


class Engine(Protocol):
    """One engine's side of a run; ``run.run_training`` calls these in this order (docs/extending.md)."""

    name: str  # "pytorch" or "gluon": metrics.json's "engine"
    state_file: str  # the resume state, relative to the run folder (one of runfolder.STATE_FILES)

    def check_state(self, path: Path, fingerprint: dict) -> None:
        """Refuse a resume state of another run (``run.refuse_other_run``) or one this version cannot read."""

    def build_network(self, pretrained: Path | None) -> None:
        """Seed, then the network (with ImageNet weights when ``pretrained``), on the run's device."""

    def build_optimizer(self, weights: tuple[np.ndarray, np.ndarray] | None) -> None:
        """The optimizer, its LR schedule and the loss (with the class ``weights`` of use_weighted_loss=1)."""

    def load_state(self, path: Path, fingerprint: dict) -> dict:
        """Restore the network, optimizer and random state of a resumed run; return its loop state."""

    def save_state(self, path: Path, state: dict, fingerprint: dict) -> None: ...

    def prepare_data(self, train: Dataset, validation: Dataset | None, out: Path) -> int:
        """The input pipelines of the run; returns the number of loader workers (threads)."""

    def train_epoch(self, epoch: int, state: dict) -> dict:
        """One epoch's steps (counting ``state["num_update"]``); its record."""

    def score(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, sigmoid scores) of the whole validation set, in its order."""

    def current_params(self) -> Params:
        """The network's parameters now, MXNet-named."""

    def set_params(self, params: Params, *, source: str) -> None:
        """Load MXNet-named parameters (the shipped epoch's) into the network."""

    def describe(self) -> dict[str, Any]:
        """{"device": ..., "device_name": ...}: where the run computes, for RunInfo and metrics.json."""

    def close(self) -> None:
        """Remove what served this run only (not the artifact or the checkpoints)."""
