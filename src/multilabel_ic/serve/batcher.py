"""Dynamic batching: requests decoded in parallel go through the network together.

Each request decodes its image on the decode thread pool, then waits in the batcher's queue. One task takes what is
queued (at most ``max_batch``) and runs it as one batch on the inference thread. While other requests are still
decoding it waits for them, at most ``max_delay_ms`` after the first of the batch arrived; when none are, it runs at
once, so a lone request pays no delay. One network per process, one batch at a time: the network's own threads use
the cores.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "BatchResult", "inference_thread"]

log = logging.getLogger("multilabel_ic.serve")


def inference_thread() -> ThreadPoolExecutor:
    """The single thread that loads the network and runs every batch of it.

    Loading on the thread that will run the batches matters on the CPU: torch's OpenMP runtime keeps a team of
    worker threads for each thread that has run a parallel operation, and once the process holds more such workers
    than cores it stops letting them spin between operations, so each of a network's ~100 parallel regions pays a
    sleep and a wake-up (measured: 3 context switches per forward with one team, ~160 with two).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-infer")


@dataclass
class BatchResult:
    """One request's probabilities and the size of the batch it ran in."""

    probabilities: list[float]
    batch_size: int


@dataclass
class _Item:
    array: Any
    future: asyncio.Future = field(repr=False)


class Batcher:
    """``await batcher.decode(fn, *args)`` on the decode pool, then ``await batcher.infer(array)`` -> BatchResult.

    ``run_batch(list_of_arrays) -> list_of_probabilities`` is called on one thread, one batch at a time;
    ``on_batch(images, seconds)``, when given, after each batch that ran (the server's metrics).
    """

    def __init__(self, run_batch: Callable[[Sequence[Any]], list[list[float]]], *, max_batch: int = 32,
                 max_delay_ms: float = 5.0, decode_threads: int = 2,
                 on_batch: Callable[[int, float], None] | None = None,
                 infer_pool: ThreadPoolExecutor | None = None):
        self.run_batch = run_batch
        self.on_batch = on_batch  # (images, seconds) after each batch that ran
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self._items: collections.deque[_Item] = collections.deque()
        self._decoding = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._decode_pool = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix="serve-decode")
        # the one inference thread (the caller's, when given: the one that loaded the model, see inference_thread)
        self._infer_pool = infer_pool or inference_thread()
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Finish: cancel the loop (requests still queued get an error) and stop the threads."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._decode_pool.shutdown(wait=False)
        self._infer_pool.shutdown(wait=False)

    async def decode(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (a decode) on the decode pool; the batcher waits for running decodes to join a batch."""
        self._decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._decode_pool, fn, *args)
        finally:
            self._decoding -= 1
            self._notify()

    async def infer(self, array: Any) -> BatchResult:
        """Queue one decoded image; its probabilities once its batch has run."""
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(array, future))
        self._notify()
        return await future

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.max_delay
            # more are on their way (decoding): wait for them, up to the delay
            while len(self._items) < self.max_batch and self._decoding > 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
            batch = [item for item in batch if not item.future.done()]  # a request that went away
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._infer_pool, self.run_batch, [i.array for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the network answered {len(results)} results for {len(batch)} images")
            except Exception as exc:  # a failure of the network, not of one request: every request of it fails
                log.error("a batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            took = time.perf_counter() - started
            log.debug("batch of %d in %.1f ms", len(batch), took * 1000)
            if self.on_batch is not None:
                self.on_batch(len(batch), took)
            for item, probs in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(BatchResult(list(probs), len(batch)))
