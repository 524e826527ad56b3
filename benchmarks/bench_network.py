"""The network alone against torchvision's resnet of the same depth: fwd + bwd + SGD step, NCHW and channels-last.

    python benchmarks/bench_network.py --batch 32 --size 224 --rounds 4

Both take the same input and loss, and the models alternate within each round, so drift hits both alike. Writes
network.json.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torchvision
from _common import write

from multilabel_ic.model.network import ResNetV2

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--layers", type=int, default=18)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--output", type=Path, default=Path("bench-output"))
args = ap.parse_args()

torch.manual_seed(0)
x = torch.rand(args.batch, 3, args.size, args.size) * 255
y = (torch.rand(args.batch, 5) < 0.3).float()
runs = {}
for name in ("multilabel_ic", "torchvision"):
    for channels_last in (False, True):
        net = (ResNetV2(5, args.layers, (3, args.size, args.size)) if name == "multilabel_ic"
               else getattr(torchvision.models, f"resnet{args.layers}")(num_classes=5))
        xx = x
        if channels_last:
            net, xx = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        runs[(name, channels_last)] = (net.train(), torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9), xx)


def step(net, optimizer, xx):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xx), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


times: dict = {key: [] for key in runs}
for run in runs.values():
    step(*run)  # warm-up
for _ in range(args.rounds):
    for key, run in runs.items():
        t0 = time.perf_counter()
        step(*run)
        times[key].append(time.perf_counter() - t0)
results = {f"{name} {'channels_last' if cl else 'NCHW'}": {"median_step_s": statistics.median(t), "steps_s": t}
           for (name, cl), t in times.items()}
for label, r in results.items():
    print(f"{label:<30} {r['median_step_s']:.3f} s per step of {args.batch}")
ours, theirs = results["multilabel_ic channels_last"]["median_step_s"], results["torchvision NCHW"]["median_step_s"]
print(f"multilabel_ic (channels-last, the engine's default) / torchvision NCHW (a plain loop's default): "
      f"{theirs / ours:.2f}x the speed")
write(args.output, "network.json", {"batch": args.batch, "size": args.size, "layers": args.layers,
                                    "results": results})
