"""Threads for per-image work (decode, resize, encode): OpenCV releases the GIL, so threads use every core."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["usable_cores", "ordered_map"]

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ordered_map(fn: Callable[[int], T], count: int, *, threads: int | None = None, chunk: int = 256) -> Iterator[T]:
    """``fn(0), fn(1), ...`` in order, computed ``threads`` at a time (default: all cores); at most ``chunk``
    results are held at once. An exception from ``fn`` is raised at its position."""
    threads = threads or usable_cores()
    if threads <= 1:
        yield from map(fn, range(count))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, count, chunk):
            yield from pool.map(fn, range(start, min(start + chunk, count)))
