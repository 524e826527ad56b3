"""``multilabel-ic export --format openvino|onnx --precision int8|bf16``: the low-precision export's options and
its report (docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .exceptions import UsageError

__all__ = ["add_lowp_export_args", "export_low_precision_cli"]


def add_lowp_export_args(x: argparse.ArgumentParser) -> None:
    x.add_argument("--precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="int8: post-training static quantization (NNCF for openvino, onnxruntime.quantization for "
                        "onnx); bf16: OpenVINO's bfloat16 hint (CPUs with avx512_bf16/amx_bf16); both are held to "
                        "the accuracy gate")
    x.add_argument("--quantizer", choices=["nncf", "onnxruntime"], default=None,
                   help="int8 with --format openvino: the toolkit that quantizes, NNCF (the default) or "
                        "onnxruntime.quantization, whose QDQ model OpenVINO runs (docs/export.md)")
    x.add_argument("--calibration", type=Path, default=None, help="int8: a .lst of calibration images (default: the "
                   "run's train .lst in run-config.json beside the model)")
    x.add_argument("--calibration-size", type=int, default=300, help="int8: at most this many calibration images, "
                   "evenly spread over the list (default 300)")
    x.add_argument("--validation", type=Path, default=None, help="the accuracy gate's held-out .lst (default: the "
                   "run's validation .lst in run-config.json)")
    x.add_argument("--images", type=Path, default=None, help="the folder the paths of --calibration/--validation "
                   "are relative to (default: the run's)")
    x.add_argument("--accept-accuracy-loss", action="store_true", help="keep a model that fails the accuracy gate "
                   "(the failure is recorded in its metadata)")


def export_low_precision_cli(args: argparse.Namespace) -> int:
    from .model.export_lowp import export_low_precision

    if args.format == "torchscript":
        raise UsageError(f"--precision {args.precision} needs --format openvino or onnx; TorchScript is float32.")
    info = export_low_precision(args.model, args.output, format=args.format, precision=args.precision,
                                calibration=args.calibration, validation=args.validation, images=args.images,
                                calibration_size=args.calibration_size,
                                accept_accuracy_loss=args.accept_accuracy_loss, epoch=args.epoch,
                                quantizer=args.quantizer)
    gate = info.get("accuracy_gate")
    print(f"{info['model']} ({args.format}, {args.precision}); metadata: {info['metadata']}")
    if gate is not None:
        from .model.accuracy_gate import gate_summary

        verdict = "passed" if gate["passed"] else "FAILED, kept because --accept-accuracy-loss was given"
        print(f"accuracy gate on {gate['images']} images of {gate['validation']}: {gate_summary(gate)}: {verdict}")
    else:
        print(f"max |diff| vs the predictor {info['max_abs_diff_vs_predictor']:.1e}")
    return 0
