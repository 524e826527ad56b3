"""MXNet's optimizer update rules and MultiFactorScheduler, in PyTorch (MXNet optimizer.py, lr_scheduler.py).

The rules differ from PyTorch's built-ins in ways that matter for parity: Adam's eps is not bias-corrected, RMSProp
puts eps inside the square root, NAG uses MXNet's formulation, and weight decay is L2 added to the gradient only for
parameters whose MXNet name ends in ``_weight`` or ``_gamma``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...model.network import mxnet_name

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["MXNetOptimizer", "MultiFactorSchedule", "create_optimizer", "param_groups_for"]

log = logging.getLogger("multilabel_ic.train")


class MultiFactorSchedule:
    """``mx.lr_scheduler.MultiFactorScheduler``: lr = base * factor^k where k counts steps with num_update > step."""

    def __init__(self, base_lr: float, steps: Iterable[int], factor: float):
        self.base_lr, self.steps, self.factor = base_lr, list(steps), factor
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError("schedule steps must be strictly increasing")
        self._logged = 0

    def __call__(self, num_update: int) -> float:
        k = sum(1 for s in self.steps if num_update > s)
        if k > self._logged:
            self._logged = k
            log.info("Update[%d]: Change learning rate to %0.5e", num_update, self.base_lr * self.factor ** k)
        return self.base_lr * self.factor ** k

    @classmethod
    def from_hyperparameters(cls, hp: Hyperparameters, begin_epoch: int = 0,
                             num_workers: int = 1) -> MultiFactorSchedule:
        size = hp.steps_per_epoch(num_workers, schedule=True)
        steps = [size * (e - begin_epoch) for e in hp.lr_steps if e - begin_epoch > 0]
        return cls(hp.learning_rate, steps, hp.lr_scheduler_factor)


class MXNetOptimizer(torch.optim.Optimizer):
    """sgd / nag / adam / rmsprop with MXNet's update rules. Each group has its own ``wd`` (0 for no decay).

    ``rescale_grad`` is 1 here: the loss is already a batch mean, which is what MXNet's 1/batch_size rescale gives.
    ``foreach=True`` (the default) updates all float32 tensors of a group with multi-tensor kernels (few launches on
    CUDA); ``foreach=False`` runs the same rule tensor by tensor, the reference the tests compare against.
    """

    def __init__(self, params, *, kind: str, lr: float, wd: float = 0.0, momentum: float = 0.0,
                 beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, gamma1: float = 0.9,
                 foreach: bool = True):
        if kind not in ("sgd", "nag", "adam", "rmsprop"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind, self.foreach = kind, foreach
        super().__init__(params, dict(lr=lr, wd=wd, momentum=momentum, beta1=beta1, beta2=beta2, epsilon=epsilon,
                                      gamma1=gamma1))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if self.foreach and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params):
                self._step_foreach(group, params)
            else:
                for p in params:
                    self._step_one(group, p)
        return loss

    def _state(self, params, name: str):
        return [self.state[p].setdefault(name, torch.zeros_like(p)) for p in params]

    def _step_foreach(self, group, params) -> None:
        lr, wd = group["lr"], group["wd"]
        w = [p.data for p in params]
        grads = [p.grad for p in params]
        g = list(torch._foreach_add(grads, w, alpha=wd)) if wd else list(grads)  # g' = g + wd*w (new tensors)
        if self.kind == "sgd":
            if group["momentum"] == 0:
                torch._foreach_add_(w, g, alpha=-lr)
                return
            mom = self._state(params, "mom")
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_add_(mom, g, alpha=-lr)
            torch._foreach_add_(w, mom)
        elif self.kind == "nag":
            m = group["momentum"]
            mom = self._state(params, "mom")
            torch._foreach_mul_(mom, m)
            torch._foreach_add_(mom, g)
            torch._foreach_add_(w, g, alpha=-lr)  # w -= lr*(g' + mom*state), without touching the gradients
            torch._foreach_add_(w, mom, alpha=-lr * m)
        elif self.kind == "adam":
            b1, b2 = group["beta1"], group["beta2"]
            m, v = self._state(params, "m"), self._state(params, "v")
            t = self.state[params[0]]["t"] = self.state[params[0]].get("t", 0) + 1
            for p in params[1:]:
                self.state[p]["t"] = t
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, g, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, g, g, value=1 - b2)
            lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["epsilon"])
            torch._foreach_addcdiv_(w, m, denom, value=-lr_t)
        else:  # rmsprop, centered=False
            n = self._state(params, "n")
            gm = group["gamma1"]
            torch._foreach_mul_(n, gm)
            torch._foreach_addcmul_(n, g, g, value=1 - gm)
            denom = torch._foreach_add(n, group["epsilon"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(w, g, denom, value=-lr)

    def _step_one(self, group, p) -> None:
        lr, wd = group["lr"], group["wd"]
        g = p.grad.float()
        w = p.data.float() if p.dtype != torch.float32 else p.data
        g = g.add(w, alpha=wd) if wd else g
        state = self.state[p]
        if self.kind == "sgd":
            mom = group["momentum"]
            if mom == 0:
                w.add_(g, alpha=-lr)
            else:
                buf = state.setdefault("mom", torch.zeros_like(w))
                buf.mul_(mom).add_(g, alpha=-lr)  # mom = momentum*mom - lr*g'
                w.add_(buf)
        elif self.kind == "nag":
            mom = group["momentum"]
            buf = state.setdefault("mom", torch.zeros_like(w))
            buf.mul_(mom).add_(g)  # state = mom*state + g'
            w.add_(g.add(buf, alpha=mom), alpha=-lr)  # w -= lr*(g' + mom*state)
        elif self.kind == "adam":
            t = state["t"] = state.get("t", 0) + 1
            m = state.setdefault("m", torch.zeros_like(w))
            v = state.setdefault("v", torch.zeros_like(w))
            b1, b2 = group["beta1"], group["beta2"]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            w.addcdiv_(m, v.sqrt().add_(group["epsilon"]), value=-lr_t)
        else:  # rmsprop, centered=False
            n = state.setdefault("n", torch.zeros_like(w))
            gm = group["gamma1"]
            n.mul_(gm).addcmul_(g, g, value=1 - gm)
            w.addcdiv_(g, n.add(group["epsilon"]).sqrt(), value=-lr)
        if w is not p.data:
            p.data.copy_(w)


def param_groups_for(model: nn.Module, wd: float) -> list[dict]:
    """Two groups: decayed (MXNet names ending in _weight or _gamma) and not decayed (biases, betas)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for key, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = mxnet_name(key, model) or key
        (decay if name.endswith(("_weight", "_gamma")) else no_decay).append(p)
    return [{"params": decay, "wd": wd}, {"params": no_decay, "wd": 0.0}]


def create_optimizer(model: nn.Module, hp: Hyperparameters) -> MXNetOptimizer:
    """The optimizer the algorithm builds from the hyperparameters.

    The docs say weight_decay is for sgd and nag only; MXNet applies ``wd`` in every optimizer. We follow MXNet (the
    docs' 'ignored' is unconfirmed); pass weight_decay=0 for adam/rmsprop to get the documented behaviour.
    """
    return MXNetOptimizer(param_groups_for(model, hp.weight_decay), kind=hp.optimizer, lr=hp.learning_rate,
                          momentum=hp.momentum, beta1=hp.beta_1, beta2=hp.beta_2, epsilon=hp.eps, gamma1=hp.gamma)
