"""Multi-label metrics in pure NumPy: per-class AP, macro/micro mAP, P/R/F1 at thresholds, tuned thresholds, and the
algorithm's logged multi-label "accuracy" (mean over classes of binary accuracy at 0.5).

Average precision is the area under the precision-recall step curve (scikit-learn's ``average_precision_score``
definition: sum over thresholds of (R_n - R_{n-1}) * P_n, ties grouped). Classes without positives have no AP; they
are reported in ``classes_without_positives`` and excluded from the macro mean, never turned into NaN. Scores that
are NaN or infinite are refused (:class:`UsageError`): sorting them would give a plausible but meaningless mAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .exceptions import UsageError

__all__ = ["average_precision", "per_class_ap", "mean_average_precision", "micro_average_precision",
           "precision_recall_f1", "tune_thresholds", "multilabel_accuracy", "evaluate"]


def _check(y_true, scores):
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape:
        raise UsageError(f"labels {y_true.shape} and scores {scores.shape} must have the same shape")
    if y_true.size and not np.isin(y_true, (0, 1)).all():
        raise UsageError("labels must be 0/1 (multi-hot)")
    if not np.isfinite(scores).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(scores))[0]) if scores.ndim == 2 else (
            int(np.flatnonzero(~np.isfinite(scores))[0]), 0)
        raise UsageError(f"scores must be finite numbers: {int((~np.isfinite(scores)).sum())} are NaN or infinite "
                         f"(the first at row {row}, column {col}); no metric is defined on them.")
    return y_true.astype(bool), scores


def precision_recall_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                              np.ndarray] | None:
    """(precision, recall, threshold) of one binary problem at each distinct score, highest score first (tied
    scores are one point); ``None`` when there are no positives."""
    y, s = _check(y_true, scores)
    y, s = y.ravel(), s.ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    return tp / (tp + fp), tp / n_pos, s[distinct]


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """AP of one binary problem (the sum of precision over recall steps); ``None`` when there are no positives."""
    curve = precision_recall_curve(y_true, scores)
    if curve is None:
        return None
    precision, recall, _ = curve
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def per_class_ap(y_true: np.ndarray, scores: np.ndarray) -> list[float | None]:
    y, s = _check(y_true, scores)
    return [average_precision(y[:, c], s[:, c]) for c in range(y.shape[1])]


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Macro mAP over the classes that have positives (``None`` if none has)."""
    aps = [a for a in per_class_ap(y_true, scores) if a is not None]
    return float(np.mean(aps)) if aps else None


def micro_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """AP of all (image, class) pairs pooled."""
    y, s = _check(y_true, scores)
    return average_precision(y.ravel(), s.ravel())


def _prf(tp, fp, fn):
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return p, r, f


def precision_recall_f1(y_true: np.ndarray, scores: np.ndarray,
                        threshold: float | Sequence[float] = 0.5) -> dict:
    """Per-class, macro and micro precision / recall / F1 with ``score >= threshold`` as positive.

    Per-class values with no predicted (or no actual) positives are 0, following scikit-learn's zero_division=0.
    """
    y, s = _check(y_true, scores)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (y.shape[1],))
    pred = s >= t
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0).astype(np.float64)
    fn = (~pred & y).sum(axis=0).astype(np.float64)
    p, r, f = _prf(tp, fp, fn)
    mp, mr, mf = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    return {
        "per_class": {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist()},
        "macro": {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean())},
        "micro": {"precision": float(mp[0]), "recall": float(mr[0]), "f1": float(mf[0])},
        "threshold": t.tolist(),
    }


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray, *, default: float = 0.5) -> list[float]:
    """Per-class thresholds that maximise F1 on (validation) data.

    Candidates are the midpoints between consecutive distinct scores; the best one wins, ties go to the threshold
    closest to ``default``. A class without positives keeps ``default``.
    """
    y, s = _check(y_true, scores)
    out = []
    for c in range(y.shape[1]):
        yc, sc = y[:, c], s[:, c]
        if not yc.any():
            out.append(float(default))
            continue
        u = np.unique(sc)
        cands = np.r_[u[0] - 1e-6, (u[:-1] + u[1:]) / 2, u[-1] + 1e-6] if len(u) > 1 else np.array([u[0]])
        pred = sc[None, :] >= cands[:, None]
        tp = (pred & yc).sum(axis=1).astype(np.float64)
        fp = (pred & ~yc).sum(axis=1).astype(np.float64)
        fn = (~pred & yc).sum(axis=1).astype(np.float64)
        _, _, f = _prf(tp, fp, fn)
        best = np.flatnonzero(np.isclose(f, f.max()))
        out.append(float(cands[best[np.argmin(np.abs(cands[best] - default))]]))
    return out


def multilabel_accuracy(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """The algorithm's multi-label "accuracy": the mean over classes of binary accuracy at ``threshold``,
    which equals the fraction of correct (image, class) decisions."""
    y, s = _check(y_true, scores)
    if y.size == 0:
        return 0.0
    return float(((s >= threshold) == y).mean())


def evaluate(y_true: np.ndarray, scores: np.ndarray, *, class_names: Sequence[str] | None = None,
             thresholds: float | Sequence[float] = 0.5) -> dict:
    """Every metric at once, as a JSON-ready dict."""
    y, s = _check(y_true, scores)
    names = list(class_names) if class_names is not None else [str(i) for i in range(y.shape[1])]
    aps = per_class_ap(y, s)
    prf = precision_recall_f1(y, s, thresholds)
    return {
        "num_samples": int(y.shape[0]),
        "accuracy": multilabel_accuracy(y, s),
        "mAP": mean_average_precision(y, s),
        "micro_mAP": micro_average_precision(y, s),
        "per_class_AP": dict(zip(names, aps)),
        "classes_without_positives": [n for n, a in zip(names, aps) if a is None],
        "f1_macro": prf["macro"]["f1"],
        "f1_micro": prf["micro"]["f1"],
        "precision_macro": prf["macro"]["precision"],
        "recall_macro": prf["macro"]["recall"],
        "per_class_F1": dict(zip(names, prf["per_class"]["f1"])),
        "thresholds": prf["threshold"],
    }
