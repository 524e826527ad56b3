"""int8 (and bfloat16 where the CPU has it) against float32 in the same CPU runtime: network and full path.

    flock /tmp/bench.lock python benchmarks/bench_lowp.py --size 224 --batch 32 --rounds 7

A ResNet-18 artifact (BatchNorm statistics as a trained network's, bench.local.trained_like_network) is exported in
int8 with the library's own export (for OpenVINO with NNCF and with onnxruntime.quantization, whose QDQ model
OpenVINO runs: ``openvino_ort``; for ONNX Runtime with onnxruntime.quantization), calibrated on
synthetic images and scored by the accuracy gate on them. Then, in paired interleaved rounds (each round runs every
variant once, so drift hits all alike; the ratios are medians of per-round ratios):

- network: a float32 NCHW batch through the float32 and the int8 models of OpenVINO and of ONNX Runtime, at
  ``--batch`` and at batch 1 (single-image latency);
- full path: ``LocalPredictor(runtime="openvino", precision=...)`` from JPEG bytes (decode, resize, network, checks).

OpenVINO's per-layer performance counters of the int8 model say which layers run in int8 and with which kernel; with
the network's multiply-adds they give the rate reached against this CPU's int8 and float32 peaks (from its
instruction set: see docs/benchmarks.md). A float32 matrix product in the same process gives the CPU's attainable
float32 rate. Writes lowp.json.
"""

import argparse
import json
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _common import write
from torch.utils.flop_counter import FlopCounterMode

from multilabel_ic import Dataset, Hyperparameters
from multilabel_ic.bench.local import trained_like_network
from multilabel_ic.data import COCO5, generate_coco
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.cpu_flags import instruction_set
from multilabel_ic.model.export import _onnx_runtime_session, onnx_bytes, wrapped_with_activation
from multilabel_ic.model.export_lowp import export_low_precision
from multilabel_ic.model.network import mxnet_state_dict
from multilabel_ic.model.predictor import LocalPredictor
from multilabel_ic.model.quantize import openvino_model

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--layers", type=int, default=18)
ap.add_argument("--rounds", type=int, default=7)
ap.add_argument("--images", type=int, default=64, help="synthetic images: calibration and the gate")
ap.add_argument("--output", type=Path, default=Path("bench-output"))
ap.add_argument("--reuse", action="store_true", help="reuse the int8 exports an earlier run left in --output")
args = ap.parse_args()

import openvino as ov  # noqa: E402

work = args.output / "lowp"
hp = Hyperparameters(num_classes=5, num_training_samples=1000, num_layers=args.layers,
                     image_shape=f"3,{args.size},{args.size}")
net = trained_like_network(hp)
arg_params, aux_params = mxnet_state_dict(net)
artifact = write_model_tar(work / "run" / "model.tar.gz",
                           {1: ({k: v.numpy() for k, v in arg_params.items()}, {k: v.numpy() for k, v in aux_params.items()})},
                           num_classes=5, num_layers=args.layers, image_shape=(3, args.size, args.size), multi_label=True)
ann, images = generate_coco(work / "data", num_images=args.images, seed=0)
data = Dataset.from_coco(ann, images=images, categories=COCO5)
lst = data.to_lst(work / "data" / "all.lst")

exports = {}
# name: (format, quantizer, file); "openvino_ort": onnxruntime.quantization's QDQ model run by OpenVINO
VARIANTS = {"openvino": ("openvino", "nncf", "model-int8.xml"),
            "openvino_ort": ("openvino", "onnxruntime", "model-int8-ort.xml"),
            "onnx": ("onnx", "onnxruntime", "model-int8.onnx")}
for fmt, (form, quantizer, file) in VARIANTS.items():
    t = time.perf_counter()
    done = artifact.with_name(file + ".json")
    if args.reuse and done.is_file():
        info = json.loads(done.read_text())
    else:
        info = export_low_precision(artifact, artifact.with_name(file), format=form, precision="int8",
                                    calibration=lst, validation=lst, images=images, accept_accuracy_loss=True,
                                    quantizer=quantizer)
    exports[fmt] = {"seconds": round(time.perf_counter() - t, 1), "model": info["model"],
                    "accuracy_gate": {k: info["accuracy_gate"][k] for k in (
                        "images", "mAP_float32", "mAP_delta", "max_abs_class_AP_delta", "decision_agreement",
                        "passed")}, "quantization": info["quantization"]}
    print(fmt, exports[fmt], flush=True)

module = wrapped_with_activation(net, False)
core = ov.Core()
config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
ov_fp32 = core.compile_model(openvino_model(module, (3, args.size, args.size)), "CPU", config)
ov_int8 = core.compile_model(core.read_model(exports["openvino"]["model"]), "CPU", config)
ov_ort_int8 = core.compile_model(core.read_model(exports["openvino_ort"]["model"]), "CPU", config)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    example = torch.zeros(2, 3, args.size, args.size)
    ort_fp32 = _onnx_runtime_session(onnx_bytes(module, example))
ort_int8 = _onnx_runtime_session(exports["onnx"]["model"])

rng = np.random.default_rng(1)
x = {b: rng.integers(0, 256, (b, 3, args.size, args.size)).astype(np.float32) for b in (args.batch, 1)}
requests = {"openvino_fp32": ov_fp32.create_infer_request(), "openvino_int8": ov_int8.create_infer_request(),
            "openvino_ort_int8": ov_ort_int8.create_infer_request()}
network = {
    "openvino_fp32": lambda b: requests["openvino_fp32"].infer({0: b}),
    "openvino_int8": lambda b: requests["openvino_int8"].infer({0: b}),
    "openvino_ort_int8": lambda b: requests["openvino_ort_int8"].infer({0: b}),
    "onnxruntime_fp32": lambda b: ort_fp32.run(["probabilities"], {"data": b}),
    "onnxruntime_int8": lambda b: ort_int8.run(["probabilities"], {"data": b}),
}
jpegs = [(images / p).read_bytes() for p in data.paths[:args.batch]]
predictors = {p: LocalPredictor(artifact, runtime="openvino", precision=p, device="cpu") for p in ("fp32", "int8")}
predictors["ort_int8"] = LocalPredictor(artifact, runtime="openvino", precision="int8", device="cpu",
                                        quantized_model=exports["openvino_ort"]["model"])
full = {f"openvino_{p}": pred.predict_batch for p, pred in predictors.items()}


def timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


for fn in network.values():  # warm-up
    fn(x[args.batch]), fn(x[1])
for fn in full.values():
    fn(jpegs)
gemm_a = torch.randn(2048, 2048)
times: dict[str, list[float]] = defaultdict(list)
for _ in range(args.rounds):
    times["gemm_2048"].append(min(timed(torch.mm, gemm_a, gemm_a) for _ in range(3)))
    for name, fn in network.items():
        times[f"network_b{args.batch}_{name}"].append(timed(fn, x[args.batch]))
        times[f"network_b1_{name}"].append(statistics.median(timed(fn, x[1]) for _ in range(5)))
    for name, fn in full.items():
        times[f"full_b{args.batch}_{name}"].append(timed(fn, jpegs))


def ratio(kind: str, runtime: str, int8: str = "int8") -> float:
    fp32, low = times[f"{kind}_{runtime}_fp32"], times[f"{kind}_{runtime}_{int8}"]
    return round(statistics.median(a / b for a, b in zip(fp32, low)), 3)


kinds = (f"network_b{args.batch}", "network_b1", f"full_b{args.batch}")
ratios = {f"{kind}_{rt}_int8_over_fp32": ratio(kind, rt)
          for kind in kinds for rt in ("openvino", "onnxruntime") if f"{kind}_{rt}_int8" in times}
ratios |= {f"{kind}_openvino_ort_int8_over_fp32": ratio(kind, "openvino", "ort_int8") for kind in kinds}
medians = {k: round(statistics.median(v), 5) for k, v in times.items()}

# the network's multiply-adds, and the CPU's attainable float32 rate (a matrix product in the same process)
with FlopCounterMode(display=False) as counter, torch.no_grad():
    net(torch.zeros(1, 3, args.size, args.size))
macs_per_image = counter.get_total_flops() / 2
gemm_gmacs = 2048**3 / statistics.median(times["gemm_2048"]) / 1e9
# the float32 network's rate as a fraction of the matrix product's, per round (the same drift hits both)
fp32_fraction = {rt: round(statistics.median(
    (macs_per_image * args.batch / net_t) / (2048**3 / gemm_t) for net_t, gemm_t in
    zip(times[f"network_b{args.batch}_{rt}_fp32"], times["gemm_2048"])), 3) for rt in ("openvino", "onnxruntime")}

# per-layer counters of OpenVINO's int8 and float32 models at --batch
profile = {}
for name, model_path in (("int8", exports["openvino"]["model"]), ("ort_int8", exports["openvino_ort"]["model"]),
                         ("fp32", None)):
    model = core.read_model(model_path) if model_path else openvino_model(module, (3, args.size, args.size))
    compiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: x[args.batch]})
    by_kernel: dict[str, float] = defaultdict(float)
    by_type: dict[str, float] = defaultdict(float)
    conv_kernels: dict[str, int] = defaultdict(int)
    for info in request.profiling_info:
        if info.status != info.Status.EXECUTED:
            continue
        us = info.real_time.total_seconds() * 1e6
        by_kernel[info.exec_type] += us
        by_type[info.node_type] += us
        if info.node_type in ("Convolution", "FullyConnected"):
            conv_kernels[info.exec_type] += 1
    total = sum(by_kernel.values())
    conv_us = by_type.get("Convolution", 0.0)
    profile[name] = {"total_ms": round(total / 1e3, 2),
                     "by_kernel_ms": {k: round(v / 1e3, 2) for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])},
                     "by_node_type_ms": {k: round(v / 1e3, 2) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
                     "convolution_layers_by_kernel": dict(conv_kernels),
                     "convolution_gmacs_per_s": round(macs_per_image * args.batch / (conv_us / 1e6) / 1e9, 1)
                     if conv_us else None}
    print(name, profile[name], flush=True)

load = Path("/proc/loadavg").read_text().split()[:3]
result = {"args": vars(args) | {"output": str(args.output)}, "cpu_flags": instruction_set(), "loadavg": load,
          "macs_per_image": macs_per_image, "float32_gemm_gmacs_per_s": round(gemm_gmacs, 1),
          "float32_network_fraction_of_gemm": fp32_fraction,
          "exports": exports, "median_seconds": medians, "ratios": ratios, "openvino_profile": profile,
          "rounds": {k: [round(t, 5) for t in v] for k, v in times.items()}}
print(ratios, medians, fp32_fraction, load, flush=True)
write(args.output, "lowp.json", result)
