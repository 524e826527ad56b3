"""Shared helpers: timing statistics, machine description, peak memory."""

from __future__ import annotations

import platform
import resource
import statistics
import time

from .._parallel import usable_cores

__all__ = ["stats", "cpu_description", "machine_info", "peak_host_mb", "Timer"]


def stats(values: list[float]) -> dict:
    """median, min, max and the interquartile spread of a list of figures."""
    if not values:
        return {"median": None, "min": None, "max": None, "p25": None, "p75": None, "n": 0}
    v = sorted(values)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "p25": q[0], "p75": q[2], "n": len(v)}


def peak_host_mb() -> float:
    """Peak resident memory of this process (and finished children) in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU's model name and, on x86, its family and model numbers (they tell CPU generations apart where the
    name does not, e.g. "AMD EPYC" in a VM): from /proc/cpuinfo on Linux, else ``platform.processor()``."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name}, family {fields['cpu family']} model {fields['model']}"
    return name


def machine_info(device=None) -> dict:
    import numpy
    import torch
    import torchvision

    info = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": usable_cores(),
            "processor": cpu_description(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "cuda_available": torch.cuda.is_available(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    if device is not None and str(device).startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = f"CPU ({info['processor']}, {info['cpu_count']} cores)"
    return info


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
