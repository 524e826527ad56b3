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
import torch.nn.functional as F

from ...model.network import to_network_input
from .distributed import Distributed
from .epochlog import EpochLog, validation_record
from .loss import weighted_bce
from .pipeline import DeviceFeeder, EpochSampler, ImageDataset, epoch_order

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader

    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions
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
               y: torch.Tensor, *, amp_dtype: torch.dtype | None, multi_label: bool,
               w_pos: torch.Tensor | None = None, w_neg: torch.Tensor | None = None, top_k: int | None = None,
               bce_reduction: str = "mean"):
    """One optimisation step on a device batch, as the algorithm takes it: forward (autocast when ``amp_dtype``),
    the head's loss (weighted sigmoid BCE, or softmax cross-entropy), backward through the loss scaler, the
    optimizer's MXNet rule. Returns ``(loss, correct decisions, decisions, top-k hits or None)`` as device tensors,
    so that nothing here waits for the device."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x)
    topk = None
    if multi_label:
        loss = weighted_bce(logits, y, w_pos, w_neg, reduction=bce_reduction)
        correct = ((logits.detach().float() >= 0) == (y >= 0.5)).sum()
        total = y.numel()
    else:
        target = y.argmax(dim=1)
        loss = F.cross_entropy(logits.float(), target)
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
              schedule: MultiFactorSchedule, feeder: DeviceFeeder, *, device: torch.device,
              amp_dtype: torch.dtype | None, w_pos: torch.Tensor | None, w_neg: torch.Tensor | None, epoch: int, state: dict[str, Any], options: LocalOptions,
              dist: Distributed = Distributed()) -> dict:
    """Train one epoch (``hp.batches_per_epoch`` steps; fewer across hosts); return its record (speeds,
    accuracies, loss, timing). With several processes, the loss and accuracy sums are added over them.

    ``feeder`` serves the run's one training DataLoader on the device; its :class:`EpochSampler` gets this epoch's
    order here."""
    multi = hp.multi_label == 1
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
        loss, correct, total, topk = train_step(model, optimizer, scaler, x, y, amp_dtype=amp_dtype, multi_label=multi,
                                                w_pos=w_pos, w_neg=w_neg, top_k=hp.top_k,
                                                bce_reduction=options.bce_reduction)
        window.add(loss, correct, total, topk)
        whole.add(loss, correct, total, topk)
        epoch_log.batch_done(nbatch, lr, read_window)
    return epoch_log.finish(dist.sum(whole.read()), dist.sum(window.read()), nbatch, lr)


def predict_scores(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
                   channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and labels over a loader, in order (the model is left in training mode)."""
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x = to_network_input(x, device, channels_last=channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(y.numpy())
    model.train()
    return np.concatenate(scores), np.concatenate(labels)


def validate(hp: Hyperparameters, model: nn.Module, loader: DataLoader, class_names: Sequence[str], *,
             device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool, epoch: int) -> dict:
    """Score the validation set after an epoch and log the algorithm's line plus mAP, per-class AP and F1."""
    scores, labels = predict_scores(model, loader, device, amp_dtype, channels_last)
    return validation_record(hp, labels, scores, class_names, epoch)
