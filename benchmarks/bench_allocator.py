"""Freed CPU memory kept in the heap for reuse (glibc's mallopt) against the C library's defaults, side by side.

    python benchmarks/bench_allocator.py --size 224 --batch 32 --rounds 3

PyTorch takes CPU tensors from malloc. glibc serves large blocks with mmap, gives them back to the kernel when they
are freed and trims its heap, so a step can page-fault its activations in afresh. This measures what raising glibc's
mmap and trim thresholds (so freed blocks stay for the next step) would gain. Each round runs two fresh processes,
one with the raised thresholds and one with the defaults, in turn, so drift hits both alike. Each process times the
engine's model-only training step (``bench_ceiling``: fwd + bwd + optimizer step on a batch already in memory) and
the predictor's eager forward pass (channels-last, inference mode). For each setting it reports the median step,
the page faults per step and the peak resident memory. Writes allocator.json. Linux with glibc only.
"""

import argparse
import ctypes
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import write

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--steps", type=int, default=10, help="timed steps per process and measurement")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--output", type=Path, default=Path("bench-output"))
ap.add_argument("--child", choices=("kept", "defaults"), help=argparse.SUPPRESS)
args = ap.parse_args()
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def child() -> None:
    """One process: the training step, then the forward pass; one JSON line on stdout."""
    if args.child == "kept":
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if not (mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
            sys.exit("this glibc refused the thresholds")
    import torch

    from multilabel_ic import Hyperparameters
    from multilabel_ic.bench.local import bench_ceiling, trained_like_network
    from multilabel_ic.model.network import to_network_input

    hp = Hyperparameters(num_classes=5, num_training_samples=2500, num_layers=18, mini_batch_size=args.batch,
                         image_shape=f"3,{args.size},{args.size}", multi_label=1, use_weighted_loss=1)
    out: dict = {}
    bench_ceiling(hp, device="cpu", steps=1, warmup=1, window=1)  # warm-up: the first steps fault in the heap
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train = bench_ceiling(hp, device="cpu", steps=args.steps, warmup=0, window=1)
    out["train_step_s"] = args.batch / train["images_per_sec"]["median"]
    out["train_faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    net = trained_like_network(hp).to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8)  # decoded, NHWC
    times = []
    for i in range(args.steps + 2):
        if i == 2:  # after two warm-up passes
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        with torch.inference_mode():
            torch.sigmoid(net(to_network_input(images, torch.device("cpu"), channels_last=True)))
        if i >= 2:
            times.append(time.perf_counter() - t0)
    out["forward_s"] = statistics.median(times)
    out["forward_faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if args.child:
    child()
    sys.exit(0)
if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    sys.exit("bench_allocator.py measures glibc's malloc settings: it runs on Linux with glibc only")

settings = {"freed blocks kept": "kept", "C library defaults": "defaults"}
runs: dict[str, list[dict]] = {name: [] for name in settings}
for r in range(args.rounds):
    for name, value in settings.items():
        done = subprocess.run([sys.executable, __file__, "--child", value, "--size", str(args.size), "--batch",
                               str(args.batch), "--steps", str(args.steps)], capture_output=True, text=True,
                              check=True)
        runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr)

summary: dict[str, dict] = {}
for name, results in runs.items():
    summary[name] = {key: statistics.median(res[key] for res in results)
                     for key in ("train_step_s", "train_faults_per_step", "forward_s", "forward_faults_per_step",
                                 "peak_rss_mb")}
kept, default = summary["freed blocks kept"], summary["C library defaults"]
speed = {"train_step": default["train_step_s"] / kept["train_step_s"],
         "forward": default["forward_s"] / kept["forward_s"]}
print(f"ResNet-18 at {args.size} px, batch {args.batch}, {args.rounds} rounds of two processes")
for name, s in summary.items():
    print(f"{name:<24} training step {s['train_step_s']:.3f} s ({s['train_faults_per_step']:8.0f} page faults), "
          f"forward {s['forward_s']:.3f} s ({s['forward_faults_per_step']:7.0f} page faults), peak "
          f"{s['peak_rss_mb']:.0f} MB")
print(f"kept over the defaults: training step {speed['train_step']:.2f}x, forward pass {speed['forward']:.2f}x")
write(args.output, "allocator.json", {"size": args.size, "batch": args.batch, "steps": args.steps,
                                      "rounds": args.rounds, "runs": runs, "summary": summary,
                                      "speed_kept_over_defaults": speed})
