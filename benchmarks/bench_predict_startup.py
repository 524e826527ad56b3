"""When each CPU runtime pays off on the command line: what a `predict` process spends before its first image.

    python benchmarks/bench_predict_startup.py --repeats 3                    # start-up only (CPU and wall seconds)
    python benchmarks/bench_predict_startup.py --cli --counts 1 64 --repeats 2  # whole `multilabel-ic predict` calls

A ResNet-18 at 224 px (BatchNorm statistics like a trained model's) is written as a model.tar.gz beside synthetic
COCO-format photos. Each variant runs in a fresh process, alternating within a repeat so that drift hits all alike
(the median of the repeats is kept): the default (``runtime="torch"``), and OpenVINO and onnxruntime with no cache
beside the artifact ("first call": it converts the network and writes the cache) and with the cache in place
("second call"). The start-up is the import of the predictor plus ``LocalPredictor(...)``, in CPU seconds (steadier
than wall time on a shared machine) and wall seconds. With ``--cli``, whole ``python -m multilabel_ic predict``
calls on ``--counts`` images are timed instead, and a line through the smallest and largest count gives each
variant's start-up and time per image, and from them the image count from which it is quicker than the default.
Writes predict_startup.json.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import setup, write

from multilabel_ic.bench.local import trained_like_network
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.network import mxnet_state_dict

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--cli", action="store_true", help="time whole predict calls instead of the start-up")
ap.add_argument("--counts", type=int, nargs="+", default=[1, 64])
ap.add_argument("--repeats", type=int, default=2)
ap.add_argument("--output", type=Path, default=Path("bench-predict-startup"))
args = ap.parse_args()

hp, data = setup(args.output, 2 * max(args.counts))
artifact = args.output / "model" / "model.tar.gz"
if not artifact.exists():
    params, aux = mxnet_state_dict(trained_like_network(hp))
    write_model_tar(artifact, {1: ({k: v.numpy() for k, v in params.items()}, {k: v.numpy() for k, v in aux.items()})},
                    num_classes=hp.num_classes, num_layers=hp.num_layers, image_shape=(hp.channels, hp.height, hp.width),
                    multi_label=True)
images = [str(data.image_path(i % len(data))) for i in range(max(args.counts))]


STARTUP = """
import sys, time
c0, w0 = time.process_time(), time.perf_counter()
from multilabel_ic.model.predictor import LocalPredictor
LocalPredictor(sys.argv[1], device="cpu", runtime=sys.argv[2])
print(time.process_time() - c0, time.perf_counter() - w0)
"""


def clear(cold: bool) -> None:
    if cold:
        for name in ("openvino", "onnxruntime"):
            artifact.with_name(f"{artifact.name}.{name}.cache").unlink(missing_ok=True)


def startup(runtime: str, cold: bool) -> list[float]:
    clear(cold)
    out = subprocess.run([sys.executable, "-c", STARTUP, str(artifact), runtime], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout.split()
    return [float(x) for x in out[-2:]]


def predict(runtime: str, count: int, *, cold: bool) -> float:
    clear(cold)
    cmd = [sys.executable, "-m", "multilabel_ic", "--quiet", "predict", "--model", str(artifact), "--runtime",
           runtime, *images[:count]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - t0


variants = {"default (torch)": ("torch", False), "openvino, first call": ("openvino", True),
            "openvino, second call": ("openvino", False), "onnxruntime, first call": ("onnxruntime", True),
            "onnxruntime, second call": ("onnxruntime", False)}
if not args.cli:
    rows: dict[str, list[list[float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (runtime, cold) in variants.items():
            rows[name].append(startup(runtime, cold))
            print(f"{name:<26} start-up: {rows[name][-1][0]:.2f} s CPU, {rows[name][-1][1]:.2f} s wall", flush=True)
    result = {"image_shape": hp.image_shape, "num_layers": hp.num_layers, "repeats": args.repeats, "startup": {
        name: {"cpu_s": statistics.median(r[0] for r in rs), "wall_s": statistics.median(r[1] for r in rs)}
        for name, rs in rows.items()}}
    base_cpu = result["startup"]["default (torch)"]["cpu_s"]
    for name, v in result["startup"].items():
        print(f"{name:<26} {v['cpu_s']:.2f} s CPU ({v['cpu_s'] - base_cpu:+.2f} over the default), "
              f"{v['wall_s']:.2f} s wall")
    write(args.output, "predict_startup.json", result)
    sys.exit(0)
times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in args.counts} for name in variants}
for _ in range(args.repeats):
    for count in args.counts:
        for name, (runtime, cold) in variants.items():
            times[name][count].append(predict(runtime, count, cold=cold))
            print(f"{name:<26} {count:>4} images: {times[name][count][-1]:.2f} s", flush=True)

low, high = min(args.counts), max(args.counts)
result: dict = {"image_shape": hp.image_shape, "num_layers": hp.num_layers, "counts": args.counts,
                "repeats": args.repeats, "variants": {}}
for name in variants:
    medians = {n: statistics.median(t) for n, t in times[name].items()}
    per_image = (medians[high] - medians[low]) / (high - low)
    result["variants"][name] = {"seconds": medians, "per_image_s": per_image,
                                "start_s": medians[low] - per_image * low}
base = result["variants"]["default (torch)"]
for name, v in result["variants"].items():
    if name != "default (torch)":
        saved = base["per_image_s"] - v["per_image_s"]
        v["pays_off_from_images"] = (v["start_s"] - base["start_s"]) / saved if saved > 0 else None
for name, v in result["variants"].items():
    print(f"{name:<26} start {v['start_s']:.2f} s, {1000 * v['per_image_s']:.1f} ms/image, "
          f"quicker than the default from {v.get('pays_off_from_images', '-')} images")
write(args.output, "predict_startup.json", result)
