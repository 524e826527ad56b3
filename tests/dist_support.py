"""Workers for the distributed tests: run under torch.multiprocessing.spawn with the gloo backend on this machine
(a file rendezvous; no network). Each writes what it computed to a file the test reads."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from multilabel_ic.backends.local.device import Precision
from multilabel_ic.backends.local.distributed import Distributed, init_process_group
from multilabel_ic.backends.local.epoch import train_step
from multilabel_ic.backends.local.loss import weighted_bce
from multilabel_ic.backends.local.optim import MXNetOptimizer, param_groups_for
from multilabel_ic.model.network import ResNetV2

OPTIMIZER_SETTINGS = {"sgd": dict(momentum=0.9), "nag": dict(momentum=0.9), "adam": {}, "rmsprop": {}}


def make_model(seed: int = 0) -> ResNetV2:
    """ResNet-20 at 28 px in float64: the split batch and the whole one then differ only by float64 rounding, which
    no optimizer amplifies past the tests' tolerance (in float32, Adam's normalised step turned a rounding difference
    of a near-zero gradient into 3e-5 of weight on CPUs whose kernels sum in another order)."""
    torch.manual_seed(seed)
    model = ResNetV2(5, 20, (3, 28, 28))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.bn_data.running_mean.fill_(127.0)  # pixel statistics, so that eval-mode activations stay in range
        model.bn_data.running_var.fill_(75.0 ** 2)
    return model.double()


def batches(steps: int, batch: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    return [(torch.from_numpy(rng.uniform(0, 255, (batch, 3, 28, 28))),
             torch.from_numpy((rng.random((batch, 5)) > 0.6).astype(np.float64))) for _ in range(steps)]


def optimizer_for(model, kind: str) -> MXNetOptimizer:
    return MXNetOptimizer(param_groups_for(model, 1e-3), kind=kind, lr=0.01, **OPTIMIZER_SETTINGS[kind])


def train_steps(model, kind: str, data, *, bn_train: bool) -> None:
    """Steps of the local engine's train_step on ``data`` (BatchNorm in train or eval mode)."""
    model.train(bn_train)
    optimizer = optimizer_for(model.module if hasattr(model, "module") else model, kind)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for x, y in data:
        train_step(model, optimizer, scaler, x, y, criterion=weighted_bce, precision=Precision(torch.device("cpu")),
                   multi_label=True)


def worker(rank: int, world: int, init_file: str, kind: str, bn_train: bool, steps: int, batch: int,
           out_file: str) -> None:
    """One process of a ``world``-process run: its slice of every global batch, DDP with per-process BatchNorm."""
    init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    per = batch // world
    mine = [(x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]) for x, y in batches(steps, batch)]
    train_steps(ddp, kind, mine, bn_train=bn_train)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    Distributed(rank=rank, world_size=world, local_world_size=world).average_buffers(model)
    del ddp  # its reducer holds the group
    dist.destroy_process_group()
    threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    torch.save({"state": model.state_dict(), "own_stats": stats, "threads": threads}, f"{out_file}.{rank}")
