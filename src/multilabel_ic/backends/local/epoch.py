"""One training epoch and one evaluation pass, with the algorithm's Speedometer log lines.

Running sums (loss, correct decisions, top-k hits) stay on the device and are read back only where a log line needs
them, so a CUDA step never waits for the host; a non-finite loss is therefore caught at the next log point.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...model.network import to_network_input
from .distributed import Distributed
from .epochlog import EpochLog, validation_record
from .pipeline import DeviceFeeder, EpochSampler, ImageDataset, epoch_order

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader

    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions
    from .device import Precision
    from .loss import Criterion
    from .optim import MultiFactorSchedule

__all__ = ["train_step", "run_epoch", "predict_scores", "validate"]

log = logging.getLogger("multilabel_ic.train")


class _Sums:
    """loss, correct, total, top-k hits: accumulated on the device, read with one transfer."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self):
        self.values = torch.zeros(4, dtype=torch.float64, device=self.device)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, total: int, topk: torch.Tensor | None = None):
        self.values[0] += loss.detach().double()
        self.values[1] += correct.double()
        self.values[2] += total
        if topk is not None:
            self.values[3] += topk.double()

    def read(self) -> list[float]:
        return self.values.tolist()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
               y: torch.Tensor, *, criterion: Criterion, precision: Precision, multi_label: bool,
               top_k: int | None = None):
    """One optimisation step on a device batch, as the algorithm takes it: forward (in the ``precision``'s
    autocast), the ``criterion`` (loss.create_loss: the head's loss), backward through the loss scaler, the
    optimizer's MXNet rule. Returns ``(loss, correct decisions, decisions, top-k hits or None)`` as device tensors,
    so that nothing here waits for the device."""
    with precision.autocast():
        logits = model(x)
    topk = None
    loss = criterion(logits, y)
    if multi_label:
        correct = ((logits.detach().float() >= 0) == (y >= 0.5)).sum()
        total = y.numel()
    else:
        target = y.argmax(dim=1)
        correct = (logits.detach().argmax(dim=1) == target).sum()
        total = y.shape[0]
        if top_k:
            topk = (logits.detach().topk(top_k, dim=1).indices == target[:, None]).any(dim=1).sum()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, correct, total, topk


def run_epoch(hp: Hyperparameters, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
              schedule: MultiFactorSchedule, feeder: DeviceFeeder, *, criterion: Criterion, precision: Precision,
              epoch: int, state: dict[str, Any], options: LocalOptions, dist: Distributed = Distributed()) -> dict:
    """Train one epoch (``hp.batches_per_epoch`` steps; fewer across hosts); return its record (speeds,
    accuracies, loss, timing). With several processes, the loss and accuracy sums are added over them.

    ``feeder`` serves the run's one training DataLoader on the device; its :class:`EpochSampler` gets this epoch's
    order here."""
    multi, device = hp.is_multi_label, precision.device
    sampler, dataset = feeder.loader.batch_sampler, feeder.loader.dataset
    assert isinstance(sampler, EpochSampler) and isinstance(dataset, ImageDataset), "a loader of make_loader()"
    batches = dist.batches_per_epoch(hp)
    sampler.set_epoch(epoch_order(len(dataset), batches, dist.global_batch(hp), options.seed, epoch), epoch)
    window, whole = _Sums(device), _Sums(device)
    lr = optimizer.param_groups[0]["lr"]
    epoch_log = EpochLog(hp, epoch, log_interval=options.log_interval, progress=options.progress and dist.is_main,
                         batches=batches)

    def read_window() -> list[float]:  # the one host sync per log interval
        values = window.read()
        window.reset()
        return dist.sum(values)

    nbatch = -1
    for nbatch, (x, y) in enumerate(feeder):
        epoch_log.batch_start()
        state["num_update"] += 1
        lr = schedule(state["num_update"])
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss, correct, total, topk = train_step(model, optimizer, scaler, x, y, criterion=criterion,
                                                precision=precision, multi_label=multi, top_k=hp.top_k)
        window.add(loss, correct, total, topk)
        whole.add(loss, correct, total, topk)
        epoch_log.batch_done(nbatch, lr, read_window)
    return epoch_log.finish(dist.sum(whole.read()), dist.sum(window.read()), nbatch, lr)


def predict_scores(model: nn.Module, loader: DataLoader, precision: Precision) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and labels over a loader, in order (the model is left in training mode)."""
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x = to_network_input(x, precision.device, channels_last=precision.channels_last)
            with precision.autocast():
                logits = model(x)
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(y.numpy())
    model.train()
    return np.concatenate(scores), np.concatenate(labels)


def validate(hp: Hyperparameters, model: nn.Module, loader: DataLoader, class_names: Sequence[str], *,
             precision: Precision, epoch: int) -> dict:
    """Score the validation set after an epoch and log the algorithm's line plus mAP, per-class AP and F1."""
    scores, labels = predict_scores(model, loader, precision)
    return validation_record(hp, labels, scores, class_names, epoch)
