"""One training epoch and one evaluation pass, with the algorithm's Speedometer log lines.

Running sums (loss, correct decisions, top-k hits) stay on the device and are read back only where a log line needs
them, so a CUDA step never waits for the host; a non-finite loss is therefore caught at the next log point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ...exceptions import TrainingError
from ...model.network import to_network_input
from .loss import weighted_bce
from .pipeline import EpochSampler, ImageDataset, epoch_order

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader

    from ...backends.local.train import LocalOptions
    from ...hyperparameters import Hyperparameters
    from .optim import MultiFactorSchedule

__all__ = ["train_step", "run_epoch", "predict_scores", "validate", "padded_accuracy"]

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


def _check_finite(loss_sum: float, epoch: int, nbatch: int, lr: float) -> None:
    if not np.isfinite(loss_sum):
        raise TrainingError(f"epoch {epoch}, up to batch {nbatch}: the loss is {loss_sum}; lower learning_rate "
                            f"(now {lr}) or use precision_dtype='float32'.")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
               y: torch.Tensor, *, amp_dtype: torch.dtype | None, multi_label: bool,
               w_pos: torch.Tensor | None = None, w_neg: torch.Tensor | None = None, top_k: int | None = None):
    """One optimisation step on a device batch, as the algorithm takes it: forward (autocast when ``amp_dtype``),
    the head's loss (weighted sigmoid BCE, or softmax cross-entropy), backward through the loss scaler, the
    optimizer's MXNet rule. Returns ``(loss, correct decisions, decisions, top-k hits or None)`` as device tensors,
    so that nothing here waits for the device."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x)
    topk = None
    if multi_label:
        loss = weighted_bce(logits, y, w_pos, w_neg)
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
              schedule: MultiFactorSchedule, loader: DataLoader, *, device: torch.device,
              amp_dtype: torch.dtype | None, channels_last: bool, w_pos: torch.Tensor | None,
              w_neg: torch.Tensor | None, epoch: int, state: dict[str, Any], options: LocalOptions) -> dict:
    """Train ``hp.batches_per_epoch`` batches; return the epoch's record (speeds, accuracies, loss, timing).

    ``loader`` is the run's one training DataLoader; its :class:`EpochSampler` gets this epoch's order here."""
    from tqdm.auto import tqdm

    multi = hp.multi_label == 1
    bs = hp.mini_batch_size
    sampler, dataset = loader.batch_sampler, loader.dataset
    assert isinstance(sampler, EpochSampler) and isinstance(dataset, ImageDataset), "a loader of make_loader()"
    sampler.set_epoch(epoch_order(len(dataset), hp.batches_per_epoch, bs, options.seed, epoch), epoch)
    window, whole = _Sums(device), _Sums(device)
    speeds: list[float] = []
    data_time = compute_time = 0.0
    tic = epoch_start = t_wait = time.time()
    lr = optimizer.param_groups[0]["lr"]
    bar = tqdm(total=hp.batches_per_epoch, desc=f"epoch {epoch + 1}/{hp.epochs}", unit="batch",
               disable=not options.progress, leave=False)
    nbatch = -1
    for nbatch, (x, y) in enumerate(loader):
        t0 = time.time()
        data_time += t0 - t_wait
        state["num_update"] += 1
        lr = schedule(state["num_update"])
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = to_network_input(x, device, channels_last=channels_last)
        y = y.to(device, non_blocking=True)
        loss, correct, total, topk = train_step(model, optimizer, scaler, x, y, amp_dtype=amp_dtype, multi_label=multi,
                                                w_pos=w_pos, w_neg=w_neg, top_k=hp.top_k)
        window.add(loss, correct, total, topk)
        whole.add(loss, correct, total, topk)
        t_wait = time.time()
        compute_time += t_wait - t0
        bar.update(1)
        if nbatch == 0:
            tic = time.time()
        elif nbatch % options.log_interval == 0:
            loss_w, correct_w, total_w, topk_w = window.read()  # the one host sync per log interval
            _check_finite(loss_w, epoch, nbatch, lr)
            speed = options.log_interval * bs / max(time.time() - tic, 1e-9)
            speeds.append(speed)
            extra = f"\ttop_k_accuracy_{hp.top_k}={topk_w / total_w:f}" if hp.top_k and not multi else ""
            log.info("Epoch[%d] Batch [%d]\tSpeed: %.3f samples/sec\taccuracy=%f%s", epoch, nbatch, speed,
                     correct_w / total_w, extra)
            window.reset()
            tic = time.time()
    bar.close()
    elapsed = time.time() - epoch_start
    loss_all, correct_all, total_all, topk_all = whole.read()
    _check_finite(loss_all, epoch, nbatch, lr)
    _, correct_w, total_w, topk_w = window.read()
    # the tail window (what the algorithm logs), or the whole epoch when the last batch just closed a window
    tail = correct_w / total_w if total_w else correct_all / max(total_all, 1)
    log.info("Epoch[%d] Train-accuracy=%f", epoch, tail)
    record = {"epoch": epoch, "train_accuracy": tail, "train_accuracy_epoch": correct_all / max(total_all, 1),
              "train_loss": loss_all / max(hp.batches_per_epoch, 1), "time_cost": elapsed, "speed": speeds,
              "images_per_sec": hp.batches_per_epoch * bs / max(elapsed, 1e-9), "data_time": data_time,
              "compute_time": compute_time, "learning_rate": lr}
    if hp.top_k and not multi:
        topk_acc = topk_w / total_w if total_w else topk_all / max(total_all, 1)
        log.info("Epoch[%d] Train-top_k_accuracy_%d=%f", epoch, hp.top_k, topk_acc)
        record[f"train_top_k_accuracy_{hp.top_k}"] = topk_acc
    log.info("Epoch[%d] Time cost=%.3f", epoch, elapsed)
    return record


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


def padded_accuracy(labels: np.ndarray, scores: np.ndarray, batch_size: int, multi_label: bool) -> float:
    """The algorithm's Validation-accuracy: the last partial batch is filled by wrapping around to the first samples
    (ImageRecordIter's round_batch), and those repeats count."""
    from ...metrics import multilabel_accuracy

    pad = (-len(labels)) % batch_size
    y = np.concatenate([labels, labels[:pad]])
    s = np.concatenate([scores, scores[:pad]])
    return multilabel_accuracy(y, s) if multi_label else float((s.argmax(1) == y.argmax(1)).mean())


def validate(hp: Hyperparameters, model: nn.Module, loader: DataLoader, class_names: Sequence[str], *,
             device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool, epoch: int) -> dict:
    """Score the validation set after an epoch and log the algorithm's line plus mAP, per-class AP and F1."""
    from ...metrics import evaluate

    scores, labels = predict_scores(model, loader, device, amp_dtype, channels_last)
    acc = padded_accuracy(labels, scores, hp.mini_batch_size, hp.multi_label == 1)
    ev = evaluate(labels, scores, class_names=class_names)
    log.info("Epoch[%d] Validation-accuracy=%f", epoch, acc)
    log.info("Epoch[%d] Validation-mAP=%f", epoch, ev["mAP"] or 0.0)
    log.info("Epoch[%d] Validation-per-class-AP=%s", epoch,
             {k: round(v, 4) if v is not None else None for k, v in ev["per_class_AP"].items()})
    log.info("Epoch[%d] Validation-F1-macro=%f", epoch, ev["f1_macro"])
    return {"validation_accuracy": acc, "validation_mAP": ev["mAP"], "validation_per_class_AP": ev["per_class_AP"],
            "validation_f1_macro": ev["f1_macro"]}
