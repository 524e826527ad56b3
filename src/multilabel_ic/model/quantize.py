"""Post-training static int8 quantization of the exported graph, with each runtime's maintained toolkit.

- OpenVINO: NNCF's ``nncf.quantize`` (the ``lowp`` extra) on the OpenVINO model converted from the network plus its
  activation; its default (performance) preset: symmetric int8 activations, per-channel int8 weights, the
  FakeQuantize operations that the CPU plugin fuses into its int8 convolutions. The classifier (the network's one
  MatMul, a negligible share of the multiply-adds) stays in float32, through NNCF's ``ignored_scope``: its int8
  rounding moved scores near the tuned thresholds enough to change label decisions (docs/export.md).
- ONNX Runtime: ``onnxruntime.quantization.quantize_static`` (the ``export`` extra) in QDQ format, the
  convolutions and the classifier only (:data:`OPS`; the pre-activation BatchNorms stay in float32), per-channel
  int8 weights, uint8 activations, MinMax calibration, after its ``quant_pre_process`` (shape inference and graph
  optimisation). Its QDQ model also runs in OpenVINO (:func:`openvino_from_onnx`): the OpenVINO export's
  ``quantizer="onnxruntime"``.

Both take the calibration images as float32 NCHW batches (0-255, the export's input) and return the files of the
quantized model (``{"xml", "bin"}`` or ``{"onnx"}``) with what made them (``tool``, ``version``, the settings).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import require

__all__ = ["quantize_openvino", "quantize_onnx", "openvino_from_onnx", "openvino_model", "openvino_parts",
           "float32_layers"]

log = logging.getLogger("multilabel_ic")
OPS = ("Conv", "Gemm", "MatMul")  # what onnxruntime quantizes: the multiply-adds


_converted: dict[str, Any] = {}  # the last conversion, by its key: an int8 and a bf16 export of one model share it


def openvino_model(module, image_shape: tuple[int, int, int]):
    """The OpenVINO model (float32, input ``data`` float32 NCHW of any batch size) of ``module``: a fresh copy of
    the last one converted when ``module`` has the same weights and input shape."""
    from .runtime_cache import network_key

    ov = require("openvino", extra="openvino")
    key = json.dumps(network_key(module, image_shape=list(image_shape), openvino=ov.__version__), sort_keys=True)
    if key not in _converted:
        _converted.clear()
        _converted[key] = _convert(module, image_shape)
    return _converted[key].clone()


def _convert(module, image_shape: tuple[int, int, int]):
    import torch

    ov = require("openvino", extra="openvino")
    c, h, w = image_shape
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the network's Python-side shape checks
        # traced here without the tracer's check (a second and third run of the network in Python): the export's
        # own check, the accuracy gate or the agreement to 1e-4, runs the converted model against the network
        traced = torch.jit.trace(module, torch.zeros(2, c, h, w), check_trace=False)
        model = ov.convert_model(traced, example_input=torch.zeros(2, c, h, w), input=[ov.PartialShape([-1, c, h, w])])
    model.inputs[0].get_tensor().set_names({"data"})
    model.outputs[0].get_tensor().set_names({"probabilities"})
    return model


def openvino_from_onnx(model: bytes) -> dict[str, bytes]:
    """The OpenVINO IR (``xml``, ``bin``) of an ONNX model. A QDQ int8 model keeps its quantization: its
    QuantizeLinear/DequantizeLinear pairs become FakeQuantize operations, which the CPU plugin fuses into its int8
    convolutions, as it does NNCF's."""
    ov = require("openvino", extra="openvino")
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-openvino-") as folder:
        source = Path(folder) / "model.onnx"
        source.write_bytes(model)
        converted = ov.convert_model(str(source))
        converted.inputs[0].get_tensor().set_names({"data"})
        converted.outputs[0].get_tensor().set_names({"probabilities"})
        return openvino_parts(converted)


def openvino_parts(model) -> dict[str, bytes]:
    """An OpenVINO model as the bytes of its IR files (``xml``, ``bin``), weights kept as they are."""
    ov = require("openvino", extra="openvino")
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return {"xml": xml.read_bytes(), "bin": xml.with_suffix(".bin").read_bytes()}


def quantize_openvino(module, image_shape: tuple[int, int, int], calibration: Sequence[np.ndarray]
                      ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The int8 OpenVINO IR of ``module`` calibrated on ``calibration`` (float32 NCHW batches), and its settings."""
    nncf = require("nncf", extra="lowp")
    model = openvino_model(module, image_shape)
    count = sum(len(b) for b in calibration)
    kept = float32_layers(model)
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its progress bars and notes, not the user's business
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: on stderr, as the library's own progress
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), subset_size=count,
                                  preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU,
                                  ignored_scope=nncf.IgnoredScope(names=list(kept.values())))
    settings = {"tool": "nncf", "version": nncf.__version__, "runtime": "openvino",
                "runtime_version": require("openvino", extra="openvino").__version__,
                "method": "nncf.quantize (post-training static): symmetric int8 activations, per-channel int8 "
                          "weights, MinMax statistics on the calibration set", "preset": "performance",
                "float32_layers": kept}
    return openvino_parts(quantized), settings


def float32_layers(model) -> dict[str, str]:
    """The layers of an OpenVINO ``model`` that the int8 export keeps in float32, by role: ``classifier``, the
    network's last MatMul (the fully connected layer in front of the activation)."""
    matmuls = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    return {"classifier": matmuls[-1]} if matmuls else {}


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader``: the calibration batches, one by one."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._batches = iter(list(batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"data": batch}


def quantize_onnx(model: bytes, calibration: Sequence[np.ndarray]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The int8 (QDQ) ONNX model of ``model`` calibrated on ``calibration``, and its settings."""
    ort = require("onnxruntime", extra="export")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration)
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-onnx-") as folder:
        source, prepared, out = (Path(folder) / name for name in ("model.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=list(OPS), activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        data = out.read_bytes()
    settings = {"tool": "onnxruntime.quantization", "version": ort.__version__, "runtime": "onnxruntime",
                "runtime_version": ort.__version__,
                "method": "quantize_static (post-training static), QDQ: uint8 activations, per-channel int8 "
                          "weights, MinMax statistics on the calibration set", "op_types_to_quantize": list(OPS)}
    return {"onnx": data}, settings
