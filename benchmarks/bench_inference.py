"""The network's forward pass in every CPU runtime at hand, side by side: what the predictor could gain, and why.

    python benchmarks/bench_inference.py --batch 32 --size 224 --rounds 5 [--compile]

One network (ResNet-18 v2 with BatchNorm statistics where a trained model has them, so probabilities spread) and one
float32 batch go through each runtime; every round runs each runtime once, so drift hits all alike. For each: the
median seconds per batch, images/s, the speed over the first version's way (eager NCHW under no_grad), the achieved
GFLOP/s, and the largest probability difference to a float64 run of the same network (the predictor's contract is
1e-4). A float32 matrix product, timed in the same rounds, gives the CPU's attainable float32 rate, and with it the
most any float32 runtime can gain over the first way on this CPU. Writes inference.json.

Runtimes: PyTorch eager (NCHW; channels-last under inference_mode, the predictor's default), onnxruntime (the
predictor's ``runtime="onnxruntime"``), traced + frozen TorchScript, NNPACK's Winograd convolutions (in PyTorch's
CPU build) for the 3x3 stride-1 layers with BatchNorm folded, OpenVINO when it is installed, and with ``--compile``
torch.compile with and without inductor's freezing (they compile for a minute or more first).
"""

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import write
from torch.utils.flop_counter import FlopCounterMode

from multilabel_ic import Hyperparameters
from multilabel_ic.bench.local import trained_like_network
from multilabel_ic.model.export import onnx_session
from multilabel_ic.model.network import ResNetV2

MATMUL_N = 4096

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--layers", type=int, default=18)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--compile", action="store_true", help="also torch.compile (with and without freezing)")
ap.add_argument("--output", type=Path, default=Path("bench-output"))
args = ap.parse_args()

hp = Hyperparameters(num_classes=5, num_training_samples=1000, num_layers=args.layers,
                     image_shape=f"3,{args.size},{args.size}")
net = trained_like_network(hp)
# whole grey levels, as decoded images have (the OpenVINO runtime takes them as uint8)
x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (args.batch, 3, args.size, args.size))
                     .astype(np.float32))


def copy_of(model: ResNetV2) -> ResNetV2:
    return copy.deepcopy(model).eval()


with torch.no_grad():
    reference = torch.sigmoid(copy_of(net).double()(x.double())).float().numpy()
    flops_counter = FlopCounterMode(display=False)
    with flops_counter:
        net(x)
gflop = flops_counter.get_total_flops() / 1e9


def eager_nchw() -> Callable[[], np.ndarray]:
    def run():
        with torch.no_grad():
            return torch.sigmoid(net(x)).numpy()
    return run


def eager_channels_last() -> Callable[[], np.ndarray]:
    model = copy_of(net).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            return torch.sigmoid(model(xc)).numpy()
    return run


def onnxruntime() -> Callable[[], np.ndarray]:
    session, _ = onnx_session(copy_of(net), softmax=False, image_shape=(3, args.size, args.size))
    data = x.numpy()
    return lambda: session.run(["probabilities"], {"data": data})[0]


def torchscript_frozen() -> Callable[[], np.ndarray]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy_of(net), x[:2])))
        frozen(x)

    def run():
        with torch.no_grad():
            return torch.sigmoid(frozen(x)).numpy()
    return run


def _affine(bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale[None, :, None, None].contiguous(), (bn.bias - bn.running_mean * scale)[None, :, None, None].contiguous()


def _fold(conv, bn):
    """conv followed by bn -> one conv with a bias."""
    scale, shift = _affine(bn)
    return (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(), shift.flatten().contiguous()


def nnpack_winograd() -> Callable[[], np.ndarray]:
    """The same network written out for inference: each unit's bn2 folded into conv1, bn0 into conv0, and the 3x3
    stride-1 convolutions of stages 1-3 on NNPACK (Winograd F(6x6, 3x3) for these shapes); stage 4 (7x7 maps) stays
    on oneDNN, where NNPACK is slower there and less exact."""
    if not torch._nnpack_available():
        raise RuntimeError("this PyTorch build has no NNPACK")
    data_scale, data_shift = _affine(net.bn_data)
    w0, b0 = _fold(net.conv0, net.bn0)
    units = []
    for name in net.stage_names:
        u = getattr(net, name)
        w1, b1 = _fold(u.conv1, u.bn2)
        sc = None if u.sc is None else (u.sc.weight, u.sc.stride[0])
        units.append((_affine(u.bn1), w1, b1, u.conv1.stride[0], u.conv2.weight.contiguous(), sc, int(name[5]) <= 3))
    end_scale, end_shift = _affine(net.bn1)
    zeros = {c: torch.zeros(c) for c in {unit[4].shape[0] for unit in units}}  # conv2 has no bias

    def conv3x3(t, w, b, stride, winograd):
        if winograd and stride == 1:
            return torch._nnpack_spatial_convolution(t, w, zeros[w.shape[0]] if b is None else b, [1, 1], [1, 1])
        return F.conv2d(t, w, b, stride, 1)

    def run():
        with torch.inference_mode():
            t = F.conv2d(torch.addcmul(data_shift, x, data_scale), w0, b0, 2, 3).relu_()
            t = F.max_pool2d(t, 3, 2, 1)
            for (scale, shift), w1, b1, stride, w2, sc, winograd in units:
                act = torch.addcmul(shift, t, scale).relu_()
                out = conv3x3(conv3x3(act, w1, b1, stride, winograd).relu_(), w2, None, 1, winograd)
                out += t if sc is None else F.conv2d(act, sc[0], None, sc[1])
                t = out
            t = torch.addcmul(end_shift, t, end_scale).relu_().mean((2, 3))
            return torch.sigmoid(net.fc1(t)).numpy()
    return run


def openvino() -> Callable[[], np.ndarray]:
    """The predictor's runtime='openvino' (uint8 NHWC in, as the predictor feeds it)."""
    from multilabel_ic.model.openvino_runtime import openvino_runner

    run, _ = openvino_runner(copy_of(net), softmax=False, image_shape=(3, args.size, args.size))
    images = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1).astype(np.uint8))
    return lambda: run(images)


def compiled(freezing: bool) -> Callable[[], Callable[[], np.ndarray]]:
    def make():
        import torch._inductor.config as inductor

        torch._dynamo.reset()
        inductor.freezing = freezing
        model = torch.compile(copy_of(net).to(memory_format=torch.channels_last))
        xc = x.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.no_grad():
                return torch.sigmoid(model(xc)).numpy()
        run()
        return run
    return make


makers: dict[str, Callable[[], Callable[[], np.ndarray]]] = {
    "eager NCHW, no_grad (the first version's way)": eager_nchw,
    "eager channels-last, inference_mode (the predictor's default)": eager_channels_last,
    "onnxruntime (runtime='onnxruntime')": onnxruntime,
    "TorchScript traced + frozen": torchscript_frozen,
    "NNPACK Winograd 3x3 (stages 1-3), BN folded": nnpack_winograd,
    "OpenVINO f32 (runtime='openvino')": openvino,
}
if args.compile:
    makers["torch.compile (inductor)"] = compiled(False)
    makers["torch.compile, inductor freezing"] = compiled(True)

# The CPU's attainable float32 rate, timed in the same rounds: a large matrix product, the best case for its FMA
# units. The network's FLOPs at that rate bound what any float32 runtime can gain over the first way.
mat_a, mat_b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
mat_a @ mat_b
matmul_s: list[float] = []

runs: dict[str, Callable[[], np.ndarray]] = {}
results: dict[str, dict] = {}
for label, make in makers.items():
    t0 = time.perf_counter()
    try:
        runs[label] = make()
    except Exception as exc:  # a runtime that is not installed: say so
        results[label] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{label}: not run ({type(exc).__name__}: {exc})")
        continue
    probs = runs[label]()
    results[label] = {"setup_s": time.perf_counter() - t0, "steps_s": [],
                      "max_abs_diff_vs_float64": float(np.abs(probs - reference).max())}
for _ in range(args.rounds):
    for label, run in runs.items():
        t0 = time.perf_counter()
        run()
        results[label]["steps_s"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    mat_a @ mat_b
    matmul_s.append(time.perf_counter() - t0)
first = "eager NCHW, no_grad (the first version's way)"
base = statistics.median(results[first]["steps_s"])
print(f"ResNet-{args.layers} forward, batch {args.batch} at {args.size} px: {gflop:.1f} GFLOP per batch, "
      f"{torch.get_num_threads()} threads")
for label in runs:
    r = results[label]
    r["median_s"] = statistics.median(r["steps_s"])
    r["images_per_sec"] = args.batch / r["median_s"]
    r["speed_over_first"] = base / r["median_s"]
    r["gflop_per_s"] = gflop / r["median_s"]
    print(f"{label:<64} {r['median_s']:.3f} s  {r['images_per_sec']:6.1f} img/s  {r['speed_over_first']:.2f}x  "
          f"{r['gflop_per_s']:5.0f} GFLOP/s  max |p - float64| {r['max_abs_diff_vs_float64']:.1e}")
peak = 2 * MATMUL_N ** 3 / statistics.median(matmul_s) / 1e9
bound = peak / results[first]["gflop_per_s"]
print(f"float32 matrix product {MATMUL_N}x{MATMUL_N} (the CPU's attainable float32 rate): {peak:.0f} GFLOP/s; the "
      f"network at that rate would be {bound:.2f}x the first way, the most any float32 runtime can gain here")
write(args.output, "inference.json", {"batch": args.batch, "size": args.size, "layers": args.layers,
                                      "gflop_per_batch": gflop, "threads": torch.get_num_threads(),
                                      "float32_matmul_gflop_per_s": peak, "float32_bound_over_first": bound,
                                      "results": results})
