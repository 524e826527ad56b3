"""The accuracy gate of a low-precision model: on held-out images, its scores against float32's.

Three figures, each with its limit:

- macro mAP: the low-precision model's within :data:`MAP_LIMIT` (0.005) of float32's;
- each class's AP: within :data:`CLASS_AP_LIMIT` (0.02) of float32's (classes without a positive have no AP);
- label decisions at the run's tuned thresholds (0.5 where it has none): the two models agree on at least
  :data:`AGREEMENT_LIMIT` (99%) of the (image, class) pairs.

The gate passes when all three hold. It measures the loss to float32, not the model's accuracy: a float32 model
that is poor on these images gives a gate that a faithful int8 copy of it passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import mean_average_precision, per_class_ap

__all__ = ["accuracy_gate", "gate_failures", "gate_summary", "MAP_LIMIT", "CLASS_AP_LIMIT", "AGREEMENT_LIMIT"]

MAP_LIMIT = 0.005
CLASS_AP_LIMIT = 0.02
AGREEMENT_LIMIT = 0.99


def accuracy_gate(labels: np.ndarray, reference: np.ndarray, scores: np.ndarray,
                  thresholds: Sequence[float] | None, class_names: Sequence[str]) -> dict[str, Any]:
    """The gate's figures for ``scores`` (low precision) against ``reference`` (float32) on images of ``labels``
    (N x C multi-hot), with ``passed`` and, when it failed, ``failures`` (one phrase per broken limit)."""
    labels, reference, scores = np.asarray(labels), np.asarray(reference, float), np.asarray(scores, float)
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * labels.shape[1], dtype=float)
    ref_ap, low_ap = per_class_ap(labels, reference), per_class_ap(labels, scores)
    ref_map, low_map = mean_average_precision(labels, reference), mean_average_precision(labels, scores)
    deltas = {name: (None if a is None or b is None else b - a) for name, a, b in zip(class_names, ref_ap, low_ap)}
    agreement = float(np.mean((reference >= cut) == (scores >= cut)))
    result: dict[str, Any] = {
        "images": int(labels.shape[0]),
        "mAP_float32": ref_map, "mAP": low_map,
        "mAP_delta": None if ref_map is None or low_map is None else low_map - ref_map,
        "per_class_AP_float32": dict(zip(class_names, ref_ap)), "per_class_AP": dict(zip(class_names, low_ap)),
        "per_class_AP_delta": deltas,
        "max_abs_class_AP_delta": max((abs(d) for d in deltas.values() if d is not None), default=None),
        "decision_agreement": agreement,
        "thresholds": "tuned" if thresholds is not None else "0.5 (the model has no tuned thresholds)",
        "limits": {"mAP_delta": MAP_LIMIT, "class_AP_delta": CLASS_AP_LIMIT, "decision_agreement": AGREEMENT_LIMIT},
    }
    failures = gate_failures(result)
    result["passed"] = not failures
    if failures:
        result["failures"] = failures
    return result


def gate_failures(result: dict[str, Any]) -> list[str]:
    """The limits a gate result breaks, each as a phrase with the figure and the limit."""
    failures = []
    if result["mAP_delta"] is None:
        failures.append("no class has a positive image, so mAP cannot be compared")
    elif abs(result["mAP_delta"]) > MAP_LIMIT:
        failures.append(f"mAP {result['mAP']:.4f} vs float32 {result['mAP_float32']:.4f} "
                        f"(|delta| {abs(result['mAP_delta']):.4f} > {MAP_LIMIT})")
    worst = sorted(((abs(d), name) for name, d in result["per_class_AP_delta"].items() if d is not None),
                   reverse=True)
    if worst and worst[0][0] > CLASS_AP_LIMIT:
        over = [name for delta, name in worst if delta > CLASS_AP_LIMIT]
        failures.append(f"AP of class {worst[0][1]!r} moved by {worst[0][0]:.4f} (> {CLASS_AP_LIMIT}; "
                        f"{len(over)} class{'es' if len(over) > 1 else ''} over)")
    if result["decision_agreement"] < AGREEMENT_LIMIT:
        failures.append(f"label decisions agree on {100 * result['decision_agreement']:.2f}% of (image, class) "
                        f"pairs (< {100 * AGREEMENT_LIMIT:.0f}%)")
    return failures


def gate_summary(result: dict[str, Any]) -> str:
    """The three figures against their limits, in one line."""
    def number(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    return (f"mAP {number(result['mAP'], '.4f')} vs float32 {number(result['mAP_float32'], '.4f')} (delta "
            f"{number(result['mAP_delta'], '+.4f')}, limit {MAP_LIMIT}); largest class AP change "
            f"{number(result['max_abs_class_AP_delta'], '.4f')} (limit {CLASS_AP_LIMIT}); decisions agree on "
            f"{100 * result['decision_agreement']:.2f}% of (image, class) pairs (limit {100 * AGREEMENT_LIMIT:.0f}%)")
