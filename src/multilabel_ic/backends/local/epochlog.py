"""The algorithm's per-epoch log lines and epoch record, shared by both local engines (no framework imports).

An engine keeps running sums ``(loss, correct decisions, decisions, top-k hits)`` however suits its device, calls
:meth:`EpochLog.batch_done` after each batch (which asks for the window's sums only at a log point, so a CUDA step
never waits for the host), and :meth:`EpochLog.finish` at the end of the epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...exceptions import TrainingError

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["EpochLog", "check_finite", "padded_accuracy", "validation_record"]

log = logging.getLogger("multilabel_ic.train")

Sums = list[float]  # loss, correct decisions, decisions, top-k hits


def check_finite(loss_sum: float, epoch: int, nbatch: int, lr: float) -> None:
    if not np.isfinite(loss_sum):
        raise TrainingError(f"epoch {epoch}, up to batch {nbatch}: the loss is {loss_sum}; lower learning_rate "
                            f"(now {lr}) or use precision_dtype='float32'.")


class EpochLog:
    """Speedometer lines every ``log_interval`` batches (the first at batch ``log_interval``), then the epoch's
    Train-accuracy (the tail window, as the algorithm logs it) and Time cost lines."""

    def __init__(self, hp: Hyperparameters, epoch: int, *, log_interval: int, progress: bool,
                 batches: int | None = None):
        """``batches``: the epoch's steps (default ``hp.batches_per_epoch``; fewer across several hosts)."""
        from tqdm.auto import tqdm

        self.hp, self.epoch, self.log_interval = hp, epoch, log_interval
        self.batches = hp.batches_per_epoch if batches is None else batches
        self.multi = hp.is_multi_label
        self.speeds: list[float] = []
        self.data_time = self.compute_time = 0.0
        self.tic = self.start = self.t_wait = time.time()
        self.t0 = self.start
        self.bar = tqdm(total=self.batches, desc=f"epoch {epoch + 1}/{hp.epochs}", unit="batch",
                        disable=not progress, leave=False)

    def batch_start(self) -> None:
        self.t0 = time.time()
        self.data_time += self.t0 - self.t_wait

    def batch_done(self, nbatch: int, lr: float, read_window: Callable[[], Sums]) -> None:
        """After batch ``nbatch``; ``read_window`` returns the window's sums and starts a new window."""
        self.t_wait = time.time()
        self.compute_time += self.t_wait - self.t0
        self.bar.update(1)
        if nbatch == 0:
            self.tic = time.time()
        elif nbatch % self.log_interval == 0:
            loss_w, correct_w, total_w, topk_w = read_window()
            check_finite(loss_w, self.epoch, nbatch, lr)
            speed = self.log_interval * self.hp.mini_batch_size / max(time.time() - self.tic, 1e-9)
            self.speeds.append(speed)
            extra = (f"\ttop_k_accuracy_{self.hp.top_k}={topk_w / total_w:f}"
                     if self.hp.top_k and not self.multi else "")
            log.info("Epoch[%d] Batch [%d]\tSpeed: %.3f samples/sec\taccuracy=%f%s", self.epoch, nbatch, speed,
                     correct_w / total_w, extra)
            self.tic = time.time()

    def finish(self, whole: Sums, window: Sums, nbatch: int, lr: float) -> dict:
        """The epoch's log lines and record from the whole epoch's sums and the last (unlogged) window's."""
        hp, epoch = self.hp, self.epoch
        self.bar.close()
        elapsed = time.time() - self.start
        loss_all, correct_all, total_all, topk_all = whole
        check_finite(loss_all, epoch, nbatch, lr)
        _, correct_w, total_w, topk_w = window
        # the tail window (what the algorithm logs), or the whole epoch when the last batch just closed a window
        tail = correct_w / total_w if total_w else correct_all / max(total_all, 1)
        log.info("Epoch[%d] Train-accuracy=%f", epoch, tail)
        record = {"epoch": epoch, "train_accuracy": tail, "train_accuracy_epoch": correct_all / max(total_all, 1),
                  "train_loss": loss_all / max(self.batches, 1), "time_cost": elapsed, "speed": self.speeds,
                  "images_per_sec": self.batches * hp.mini_batch_size / max(elapsed, 1e-9),
                  "data_time": self.data_time, "compute_time": self.compute_time, "learning_rate": lr}
        if hp.top_k and not self.multi:
            topk_acc = topk_w / total_w if total_w else topk_all / max(total_all, 1)
            log.info("Epoch[%d] Train-top_k_accuracy_%d=%f", epoch, hp.top_k, topk_acc)
            record[f"train_top_k_accuracy_{hp.top_k}"] = topk_acc
        log.info("Epoch[%d] Time cost=%.3f", epoch, elapsed)
        return record


def padded_accuracy(labels: np.ndarray, scores: np.ndarray, batch_size: int, multi_label: bool) -> float:
    """The algorithm's Validation-accuracy: the last partial batch is filled by wrapping around to the first samples
    (ImageRecordIter's round_batch), and those repeats count."""
    from ...metrics import multilabel_accuracy

    pad = (-len(labels)) % batch_size
    y = np.concatenate([labels, labels[:pad]])
    s = np.concatenate([scores, scores[:pad]])
    return multilabel_accuracy(y, s) if multi_label else float((s.argmax(1) == y.argmax(1)).mean())


def validation_record(hp: Hyperparameters, labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                      epoch: int) -> dict:
    """Log the algorithm's Validation-accuracy line plus mAP, per-class AP and F1 of an epoch's validation scores."""
    from ...metrics import evaluate

    acc = padded_accuracy(labels, scores, hp.mini_batch_size, hp.is_multi_label)
    ev = evaluate(labels, scores, class_names=class_names)
    log.info("Epoch[%d] Validation-accuracy=%f", epoch, acc)
    log.info("Epoch[%d] Validation-mAP=%f", epoch, ev["mAP"] or 0.0)
    log.info("Epoch[%d] Validation-per-class-AP=%s", epoch,
             {k: round(v, 4) if v is not None else None for k, v in ev["per_class_AP"].items()})
    log.info("Epoch[%d] Validation-F1-macro=%f", epoch, ev["f1_macro"])
    return {"validation_accuracy": acc, "validation_mAP": ev["mAP"], "validation_per_class_AP": ev["per_class_AP"],
            "validation_f1_macro": ev["f1_macro"]}
