"""The algorithm's losses: sigmoid binary cross-entropy with optional per-class weights (multi-label), softmax
cross-entropy (single-label), and the class weights computed from the training labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["class_weights", "weighted_bce"]


def class_weights(labels: np.ndarray, mode: str = "neg_pos_ratio") -> tuple[np.ndarray, np.ndarray]:
    """(positive weights, negative weights) per class from the training label distribution.

    neg_pos_ratio: w_pos = N_neg / N_pos, w_neg = 1 (the ``pos_cls_weights`` the algorithm's error messages name).
    balanced: w_pos = N / (2 N_pos), w_neg = N / (2 N_neg), so both sides weigh half. A class with no positives (or
    no negatives) gets weight 1.
    """
    y = np.asarray(labels, dtype=np.float64)
    n = len(y)
    pos = y.sum(axis=0)
    neg = n - pos
    ok = (pos > 0) & (neg > 0)
    if mode == "neg_pos_ratio":
        w_pos = np.where(ok, neg / np.maximum(pos, 1), 1.0)
        w_neg = np.ones_like(w_pos)
    elif mode == "balanced":
        w_pos = np.where(ok, n / (2 * np.maximum(pos, 1)), 1.0)
        w_neg = np.where(ok, n / (2 * np.maximum(neg, 1)), 1.0)
    else:
        raise ValueError(mode)
    return w_pos.astype(np.float32), w_neg.astype(np.float32)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, w_pos: torch.Tensor | None = None,
                 w_neg: torch.Tensor | None = None, *, reduction: str = "mean") -> torch.Tensor:
    """Sigmoid BCE averaged over the batch; optional per-class positive/negative weights.

    ``reduction="mean"`` averages over the classes too: the gradient of the algorithm's ``LogisticRegressionOutput``
    head, ``(sigmoid(z) - y) / C`` per sample (the op divides by its number of outputs; the batch mean comes from
    ``rescale_grad``). ``"sum"`` sums over the classes, giving C times larger gradients (this project's rule before
    0.2). The weighted form is normalised the same way: per-class weights multiply each class's term before the mean.
    """
    logits = logits.float()
    if w_pos is None or w_neg is None:
        per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    else:
        log_p = F.logsigmoid(logits)
        log_not_p = F.logsigmoid(-logits)
        per = -(w_pos * targets * log_p + w_neg * (1 - targets) * log_not_p)
    if reduction == "sum":
        return per.sum(dim=1).mean()
    return per.mean()
