"""The predictor's OpenVINO runtime: the network plus its activation as an OpenVINO CPU model, in float32.

The model takes the predictor's decoded images as they are (uint8, N x H x W x C); OpenVINO's preprocessing does the
layout change and the float conversion inside the compiled graph. It is converted from the PyTorch network
(``openvino.convert_model``, 5-10 s for ResNet-18) or read from the cache beside the artifact that
:mod:`.runtime_cache` keeps (its IR, float32, well under a second), and checked against the network to 1e-4
(:func:`~.export.check_agreement`) before use, either way.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..exceptions import require
from .export import check_agreement, wrapped_with_activation
from .runtime_cache import load_or_build, network_key

__all__ = ["openvino_runner", "with_uint8_input", "BF16_TOLERANCE"]


def _convert(module, image_shape: tuple[int, int, int]) -> dict[str, bytes]:
    """The OpenVINO IR (``xml`` and ``bin``, float32) of ``module`` with the uint8 NHWC preprocessing built in."""
    import torch

    ov = require("openvino", extra="openvino")
    c, h, w = image_shape
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the network's Python-side shape checks
        model = ov.convert_model(module, example_input=torch.zeros(2, c, h, w),
                                 input=[ov.PartialShape([-1, c, h, w])])
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(with_uint8_input(model), str(xml), compress_to_fp16=False)
        return {"xml": xml.read_bytes(), "bin": xml.with_suffix(".bin").read_bytes()}


BF16_TOLERANCE = 0.05  # bfloat16 keeps 8 bits of mantissa; the accuracy gate of its export is the real check


def with_uint8_input(model):
    """``model`` (input float32 NCHW) taking the predictor's decoded images instead: uint8 N x H x W x C, the layout
    change and the float conversion done inside the compiled graph."""
    ov = require("openvino", extra="openvino")
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.input().preprocess().convert_element_type(ov.Type.f32)
    return steps.build()


def openvino_runner(net, *, softmax: bool, image_shape: tuple[int, int, int], cache: Path | None = None,
                    precision: str = "fp32") -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """``(run, max |diff|)``: ``run(uint8 NHWC batch) -> probabilities`` (float32, N x classes) on the CPU, and its
    largest difference to ``net`` on a test batch. float32 throughout (``INFERENCE_PRECISION_HINT``), so that a CPU
    with bfloat16 units does not trade precision for speed, unless ``precision="bf16"`` (the hint "bf16"; checked
    to :data:`BF16_TOLERANCE`). ``cache``: the file the converted model is kept in (:mod:`.runtime_cache`); None
    converts in memory."""
    import torch

    ov = require("openvino", extra="openvino")
    c, h, w = image_shape
    module = wrapped_with_activation(net, softmax)
    test = np.random.default_rng(0).integers(0, 256, (3, h, w, c), dtype=np.uint8)
    with torch.no_grad():
        expected = module(torch.from_numpy(test).permute(0, 3, 1, 2).float()).numpy()

    def use(parts: dict[str, bytes]) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        core = ov.Core()
        weights = np.frombuffer(parts["bin"], np.uint8)
        model = core.read_model(model=parts["xml"], weights=ov.Tensor(weights))
        hint = "bf16" if precision == "bf16" else "f32"
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        lock = threading.Lock()  # one infer request: callers from several threads take turns

        def run(batch: np.ndarray) -> np.ndarray:
            with lock:
                return np.array(request.infer({0: np.ascontiguousarray(batch)})[0], dtype=np.float32)  # a copy

        run.weights = weights  # type: ignore[attr-defined]  # the model may share this memory: keep it alive
        bf16 = precision == "bf16"
        return run, check_agreement(float(np.abs(run(test) - expected).max()),
                                    "OpenVINO model (bfloat16)" if bf16 else "OpenVINO model",
                                    BF16_TOLERANCE if bf16 else None)

    key = network_key(net, runtime="openvino", version=ov.__version__, image_shape=list(image_shape),
                      softmax=softmax, input="uint8 NHWC")
    return load_or_build(cache, key, lambda: _convert(module, image_shape), use, what="OpenVINO model")
