"""The checks on what an endpoint or a transform job answers: a list of one finite number per class, or a
:class:`BackendError` that says where the answer came from, what is wrong with it and what to do."""

from __future__ import annotations

import math
from typing import Any

from ...exceptions import BackendError

__all__ = ["check_scores"]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_scores(value: Any, *, expected: int | None, where: str, fix: str,
                 expected_from: str = "class names") -> list[float]:
    """``value`` as ``[p_0, ..., p_{C-1}]``: a non-empty JSON list of finite numbers (not booleans), of length
    ``expected`` when that is known (``expected_from`` says where that number comes from)."""
    if not isinstance(value, list) or not value:
        raise BackendError(f"{where}: expected a list of one score per class, got {_show(value)}; {fix}.")
    for i, p in enumerate(value):
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise BackendError(f"{where}: score {i} is {_show(p)}, not a number; {fix}.")
        if not math.isfinite(p):
            raise BackendError(f"{where}: score {i} is {p}, not a finite number (the model's weights are "
                               f"probably broken); {fix}.")
    if expected is not None and len(value) != expected:
        raise BackendError(f"{where}: {len(value)} scores for {expected} {expected_from}; {fix}.")
    return [float(p) for p in value]
