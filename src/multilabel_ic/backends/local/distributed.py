"""Training on several processes with PyTorch's distributed engine (DDP under ``torchrun``), with the algorithm's batch
semantics.

- **One host, N processes** (N GPUs): ``mini_batch_size`` is split across them, as MXNet splits a batch across the
  GPUs of one SageMaker instance. Each process takes ``mini_batch_size / N`` images per step; the step's gradient is
  the mean over the whole ``mini_batch_size``.
- **H hosts** (``torchrun --nnodes H``): every host takes ``mini_batch_size`` per step, so the global batch is
  ``H x mini_batch_size``, as with kv_store ``dist_sync``. An epoch is
  ``num_training_samples // (H x mini_batch_size)`` steps, and the learning-rate schedule counts those.

Every process reads its own slice of each global batch of the seeded epoch order, so a run sees every image once per
epoch. Its augmentation draws depend on the image's position in that order, so a run is deterministic for a seed
and world size. BatchNorm statistics are per process, as MXNet's multi-device training has them. The moving
statistics are averaged over the processes when parameters are saved (MXNet's ``get_params``).
``LocalOptions(sync_batchnorm=True)`` uses ``SyncBatchNorm`` instead (CUDA only).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...exceptions import TrainingError, UsageError

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["Distributed", "TIMEOUT", "init_process_group"]

TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("MULTILABEL_IC_DIST_TIMEOUT_MIN", "30")))


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_world_size`` per host."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """From torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); one process without them."""
        env = os.environ
        if "WORLD_SIZE" not in env or int(env["WORLD_SIZE"]) <= 1:
            return cls()
        world = int(env["WORLD_SIZE"])
        return cls(rank=int(env.get("RANK", 0)), world_size=world,
                   local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)), local_rank=int(env.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def hosts(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    def batch_per_process(self, hp: Hyperparameters) -> int:
        if hp.mini_batch_size % self.local_world_size:
            raise UsageError(f"mini_batch_size={hp.mini_batch_size} is split across the {self.local_world_size} "
                             f"processes of a host: make it a multiple of {self.local_world_size} (or change "
                             f"--nproc-per-node).")
        return hp.mini_batch_size // self.local_world_size

    def global_batch(self, hp: Hyperparameters) -> int:
        return self.hosts * hp.mini_batch_size

    def batches_per_epoch(self, hp: Hyperparameters) -> int:
        """Steps per epoch: num_training_samples // (hosts x mini_batch_size) (hp.batches_per_epoch on one host)."""
        steps = hp.steps_per_epoch(self.hosts)
        if steps < 1:
            raise UsageError(f"num_training_samples={hp.num_training_samples} is less than one global batch of "
                             f"{self.hosts} hosts x mini_batch_size={hp.mini_batch_size}: use fewer hosts or a "
                             f"smaller mini_batch_size.")
        return steps

    def local_device(self, device: torch.device) -> torch.device:
        """This process's device: CUDA device ``local_rank`` when CUDA is used, else ``device`` (the CPU)."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group (NCCL on CUDA, gloo on the CPU), with a timeout so a lost peer ends the run. A group
        the caller already made is used as it is (and left to the caller)."""
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
            _STARTED.append(True)

    def stop(self) -> None:
        """Leave the process group that :meth:`start` made: every process, when its part of the run is over."""
        import torch.distributed as dist

        if _STARTED and dist.is_initialized():
            _STARTED.clear()
            dist.destroy_process_group()

    # -- collectives (no-ops in one process); each is called by every process at the same point --
    def barrier(self) -> None:
        if self.enabled:
            _collective(lambda d: d.barrier())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes."""
        if not self.enabled:
            return values
        t = _on_backend(torch.tensor(values, dtype=torch.float64))
        _collective(lambda d: d.all_reduce(t, op=d.ReduceOp.SUM))
        return t.cpu().tolist()

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        _collective(lambda d: d.broadcast_object_list(box, src=0))
        return box[0]

    def gather_rows(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Every process's ``values`` (indexed by ``rows``) put together in row order, on every process."""
        if not self.enabled:
            return values[np.argsort(rows, kind="stable")]
        parts: list[Any] = [None] * self.world_size
        _collective(lambda d: d.all_gather_object(parts, (rows, values)))
        all_rows = np.concatenate([p[0] for p in parts])
        all_values = np.concatenate([p[1] for p in parts])
        return all_values[np.argsort(all_rows, kind="stable")]

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average BatchNorm moving statistics over the processes (what MXNet's get_params returns)."""
        if not self.enabled:
            return
        for name, buf in module.named_buffers():
            if buf.is_floating_point() and ("running_mean" in name or "running_var" in name):
                _collective(lambda d, b=buf: d.all_reduce(b, op=d.ReduceOp.SUM))
                buf.div_(self.world_size)


def init_process_group(backend: str, **kwargs: Any) -> None:
    """``torch.distributed.init_process_group``, in a way that lets ``destroy_process_group`` end the group.

    torch._dynamo.utils (which DDP imports), imported once a group exists, keeps that group alive past
    destroy_process_group: its gloo threads then run on into the interpreter's exit, which now and then aborts the
    process ("terminate called without an active exception"). Imported first, it does not."""
    import torch._dynamo.utils  # noqa: F401
    import torch.distributed as dist

    dist.init_process_group(backend, **kwargs)


_STARTED: list[bool] = []  # whether this process's group was made by start() (then stop() ends it)


def _on_backend(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    return t.cuda() if dist.get_backend() == "nccl" else t


def _collective(fn) -> None:
    """Run a collective; a peer that died turns into one clear error (torchrun's agent then ends the run)."""
    import torch.distributed as dist

    try:
        fn(dist)
    except (RuntimeError, dist.DistBackendError) as exc:
        raise TrainingError(f"another process of the distributed run stopped ({' '.join(str(exc).split())[:200]}); "
                            f"run the same command again to resume from the last finished epoch.") from exc
