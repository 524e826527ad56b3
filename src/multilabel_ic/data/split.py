"""Deterministic train/validation splits: a seeded shuffle, or iterative stratification for multi-label data.

Iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML 2011) assigns the samples of the rarest label first,
so every class with at least two positives appears on both sides in proportion.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import UsageError

__all__ = ["random_split", "iterative_stratification"]


def _n_train(n: int, train_size: float | int) -> int:
    if isinstance(train_size, float) and 0 < train_size < 1:
        k = int(round(n * train_size))
    elif float(train_size).is_integer():
        k = int(train_size)
    else:
        raise UsageError(f"train_size must be a count or a fraction in (0, 1), got {train_size!r}")
    if not 0 < k < n:
        raise UsageError(f"train_size={train_size!r} leaves an empty side for a dataset of {n} samples; "
                         f"use a count in [1, {n - 1}] or a fraction in (0, 1).")
    return k


def random_split(n: int, train_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it: the first ``train_size`` indices train, the rest validate."""
    k = _n_train(n, train_size)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:k]), np.sort(order[k:])


def iterative_stratification(labels: np.ndarray, train_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split multi-hot ``labels`` (N, C) into train/validation indices with per-class proportions preserved."""
    labels = np.asarray(labels, dtype=bool)
    n = len(labels)
    k = _n_train(n, train_size)
    rng = np.random.default_rng(seed)
    ratios = np.array([k / n, (n - k) / n])
    desired = np.array([k, n - k], dtype=float)
    desired_per_label = np.outer(ratios, labels.sum(axis=0)).astype(float)  # (2, C)
    remaining = np.ones(n, dtype=bool)
    fold = np.full(n, -1)
    while remaining.any():
        counts = labels[remaining].sum(axis=0)
        if counts.sum() == 0:
            idx = rng.permutation(np.flatnonzero(remaining))
            for i in idx:
                f = _pick(desired, rng)
                fold[i] = f
                desired[f] -= 1
            break
        active = np.flatnonzero(counts > 0)
        label = active[np.argmin(counts[active])]
        idx = np.flatnonzero(remaining & labels[:, label])
        for i in rng.permutation(idx):
            want = desired_per_label[:, label]
            best = np.flatnonzero(want == want.max())
            if len(best) > 1:
                sub = desired[best]
                best = best[sub == sub.max()]
            f = int(rng.choice(best)) if len(best) > 1 else int(best[0])
            fold[i] = f
            remaining[i] = False
            desired[f] -= 1
            desired_per_label[f] -= labels[i]
    # The greedy pass can miss the requested size by a few samples; move the least informative ones to fix it.
    train = np.flatnonzero(fold == 0)
    val = np.flatnonzero(fold == 1)
    if len(train) != k:
        src, dst = (train, val) if len(train) > k else (val, train)
        excess = abs(len(train) - k)
        weight = labels[src].sum(axis=1)
        move = src[np.argsort(weight, kind="stable")[:excess]]
        fold[move] = 1 if len(train) > k else 0
        train, val = np.flatnonzero(fold == 0), np.flatnonzero(fold == 1)
    return train, val


def _pick(desired: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(desired == desired.max())
    return int(rng.choice(best)) if len(best) > 1 else int(best[0])
