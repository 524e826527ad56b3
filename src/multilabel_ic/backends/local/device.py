"""The PyTorch engine's device and precision: the device a run trains on, and one :class:`Precision` value (autocast
dtype, loss scaling, memory format) that the loop, the validation pass and the benchmarks receive instead of
re-deriving them."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...exceptions import UsageError

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions

__all__ = ["Precision", "select_device", "precision_for", "check_compiler"]

log = logging.getLogger("multilabel_ic.train")


@dataclass(frozen=True)
class Precision:
    """How a run computes on ``device``: autocast to ``dtype`` (None: float32), whether the loss is scaled (float16
    on CUDA), and whether images and the network are channels-last (NHWC)."""

    device: torch.device
    dtype: torch.dtype | None = None
    loss_scaling: bool = False
    channels_last: bool = False

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.loss_scaling)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The network on the device, in the memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def select_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device {name!r} is not a device name: use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use device='cpu'.")
    return dev


def check_compiler(device: torch.device) -> None:
    """``compile=True`` needs what inductor generates code with: a C++ compiler for CPU kernels, Triton for CUDA."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise UsageError("compile=True on CUDA needs Triton (pip install triton; PyTorch's Linux CUDA wheels "
                             "bring it), or train without compile.")
    elif not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "clang++", "c++"))):
        raise UsageError("compile=True on the CPU needs a C++ compiler for torch.compile's kernels (install g++, "
                         "or set CXX), or train without compile.")


def precision_for(hp: Hyperparameters, device: torch.device, options: LocalOptions) -> Precision:
    """The :class:`Precision` of ``precision_dtype`` on ``device`` (channels-last as ``options`` say: on the CPU
    too, oneDNN convolutions are ~10% faster in NHWC)."""
    cl = options.channels_last
    if hp.precision_dtype != "float16":
        return Precision(device, None, False, cl)
    if device.type == "cuda":
        if options.cuda_half == "bfloat16":
            log.info("precision_dtype=float16: bfloat16 autocast with float32 master weights (cuda_half='bfloat16')")
            return Precision(device, torch.bfloat16, False, cl)
        log.info("precision_dtype=float16: mixed precision (float16 autocast, float32 master weights, loss scaling)")
        return Precision(device, torch.float16, True, cl)
    if options.cpu_float16 == "bfloat16":
        log.info("precision_dtype=float16 on CPU: using bfloat16 autocast (CPUs lack fast float16)")
        return Precision(device, torch.bfloat16, False, cl)
    log.info("precision_dtype=float16 on CPU: training in float32 (cpu_float16='float32')")
    return Precision(device, None, False, cl)
