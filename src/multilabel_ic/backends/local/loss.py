"""The losses a local run trains with, one factory for both engines.

The algorithm's heads: sigmoid binary cross-entropy with optional per-class weights (multi-label) and softmax
cross-entropy (single-label). Multi-label extensions (local only; SageMaker's built-in trains the weighted BCE):
asymmetric loss (ASL, Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021).

A multi-label loss is written once, as its positive and negative terms over a small table of element-wise ops
(:class:`Ops`), so the PyTorch engine (``TORCH_OPS``) and the Gluon engine (``gluon.MX_OPS``) compute the same
formula; :func:`create_loss` gives the PyTorch engine its criterion, :func:`loss_terms` the Gluon engine its terms.
Adding a loss: docs/extending.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ...exceptions import UsageError

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions

__all__ = ["class_weights", "weighted_bce", "Ops", "TORCH_OPS", "TERMS", "loss_terms", "create_loss", "check_loss",
           "loss_fingerprint", "asymmetric_loss"]


class Ops(NamedTuple):
    """The element-wise operations a loss formula may use, for one framework's arrays (which also support + - * **
    with numbers)."""

    sigmoid: Callable[[Any], Any]
    log_sigmoid: Callable[[Any], Any]
    log: Callable[[Any], Any]
    clip_max: Callable[[Any, float], Any]  # min(x, value)


TORCH_OPS = Ops(torch.sigmoid, F.logsigmoid, torch.log, lambda x, value: x.clamp(max=value))


def _bce_terms(z, ops: Ops, options: LocalOptions) -> tuple[Any, Any]:
    """log p and log (1 - p), p = sigmoid(z)."""
    return ops.log_sigmoid(z), ops.log_sigmoid(-z)


def _asl_terms(z, ops: Ops, options: LocalOptions) -> tuple[Any, Any]:
    """ASL's L+ = (1 - p)^gamma_pos log p and L- = p_m^gamma_neg log (1 - p_m), p_m = max(p - m, 0) (the paper's
    eq. 1-4: the negatives' probability is shifted by the margin m = asl_clip, then focused by gamma_neg)."""
    g_pos, g_neg, m = options.asl_gamma_pos, options.asl_gamma_neg, options.asl_clip
    pos = ops.log_sigmoid(z)
    if g_pos:
        pos = ops.sigmoid(-z) ** g_pos * pos
    if m:
        not_pm = ops.clip_max(1 - ops.sigmoid(z) + m, 1.0)  # 1 - p_m, at least m: its log is finite
        neg = ops.log(not_pm)
        p_m = 1 - not_pm
    else:
        neg, p_m = ops.log_sigmoid(-z), ops.sigmoid(z)
    if g_neg:
        neg = p_m ** g_neg * neg
    return pos, neg


# loss name (LocalOptions.loss) -> its (positive, negative) terms; the per-element loss is
# -(w_pos * y * positive + w_neg * (1 - y) * negative)
TERMS: dict[str, Callable[[Any, Ops, Any], tuple[Any, Any]]] = {"bce": _bce_terms, "asl": _asl_terms}


def loss_terms(z, ops: Ops, options: LocalOptions) -> tuple[Any, Any]:
    return TERMS[options.loss](z, ops, options)


def check_loss(hp: Hyperparameters, options: LocalOptions) -> None:
    """Refuse, before the run starts, a multi-label loss for a single-label run (its head is the softmax)."""
    if options.loss != "bce" and not hp.is_multi_label:
        raise UsageError(f"loss={options.loss!r} is a multi-label loss, but multi_label=0 trains the softmax head: "
                         f"set multi_label=1, or drop the loss option (--loss).")


def loss_fingerprint(options: LocalOptions) -> dict:
    """The run fingerprint's entries of the loss: none for the algorithm's BCE (a run folder made before losses
    were selectable resumes), the name and settings otherwise."""
    if options.loss == "bce":
        return {}
    if options.loss == "asl":
        return {"loss": {"name": "asl", "gamma_neg": options.asl_gamma_neg, "gamma_pos": options.asl_gamma_pos,
                         "clip": options.asl_clip}}
    raise AssertionError(options.loss)


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


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"mean"``: over the classes too (the gradient of the algorithm's ``LogisticRegressionOutput`` head,
    ``(sigmoid(z) - y) / C`` per sample); ``"sum"``: summed over the classes, averaged over the batch."""
    if reduction == "sum":
        return per.sum(dim=1).mean()
    return per.mean()


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
    return _reduce(per, reduction)


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, options: LocalOptions,
                    w_pos: torch.Tensor | None = None, w_neg: torch.Tensor | None = None, *,
                    reduction: str = "mean") -> torch.Tensor:
    """A multi-label loss of :data:`TERMS` (``options.loss``), normalised as :func:`weighted_bce` is."""
    pos, neg = loss_terms(logits.float(), TORCH_OPS, options)
    if w_pos is None or w_neg is None:
        per = -(targets * pos + (1 - targets) * neg)
    else:
        per = -(w_pos * targets * pos + w_neg * (1 - targets) * neg)
    return _reduce(per, reduction)


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def create_loss(hp: Hyperparameters, options: LocalOptions, weights: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> Criterion:
    """The PyTorch engine's criterion ``(logits, multi-hot targets) -> scalar loss`` of a run: softmax
    cross-entropy for ``multi_label=0``; for multi-label, ``options.loss`` with the class ``weights`` (w_pos, w_neg)
    of ``use_weighted_loss=1`` and ``options.bce_reduction``."""
    check_loss(hp, options)
    if not hp.is_multi_label:
        return lambda logits, y: F.cross_entropy(logits.float(), y.argmax(dim=1))
    w_pos, w_neg = weights if weights is not None else (None, None)
    reduction = options.bce_reduction
    if options.loss == "bce":
        return lambda logits, y: weighted_bce(logits, y, w_pos, w_neg, reduction=reduction)
    return lambda logits, y: asymmetric_loss(logits, y, options, w_pos, w_neg, reduction=reduction)
