"""What the CPU's instruction set offers the low-precision predictor, read from the kernel's ``/proc/cpuinfo``.

bfloat16 inference needs ``avx512_bf16`` (AVX-512 BF16, Cooper Lake, Zen 4 and later) or ``amx_bf16`` (AMX,
Sapphire Rapids and later): without them OpenVINO and PyTorch emulate it, slower than float32. int8 runs on any x86
CPU with AVX2, fastest with VNNI (``avx512_vnni`` or ``avx_vnni``: one instruction per 4-way int8 dot product instead
of ``VPMADDUBSW`` + ``VPMADDWD``) or AMX (``amx_int8``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..exceptions import UsageError

__all__ = ["cpu_flags", "BF16_FLAGS", "INT8_FLAGS", "require_bf16", "instruction_set"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
REPORTED = ("avx2", "fma", "f16c", "avx512f", *INT8_FLAGS, *BF16_FLAGS)
CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``flags`` in ``/proc/cpuinfo``); empty where that file does not exist."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def instruction_set() -> dict[str, bool]:
    """Whether the CPU has each flag that decides the low-precision speed (for reports and the bench JSON)."""
    flags = cpu_flags()
    return {flag: flag in flags for flag in REPORTED}


def require_bf16(parameter: str = "precision") -> None:
    """A :class:`UsageError` naming the missing flags when the CPU cannot run bfloat16 natively."""
    flags = cpu_flags()
    if not flags & set(BF16_FLAGS):
        where = f"the flags in {CPUINFO}" if flags else f"{CPUINFO}, which could not be read,"
        raise UsageError(f"{parameter}='bf16' needs a CPU with the avx512_bf16 or amx_bf16 instruction flag, and "
                         f"{where} name neither (bfloat16 would be emulated, slower than float32); use "
                         f"{parameter}='int8' or 'fp32' on this CPU.")
