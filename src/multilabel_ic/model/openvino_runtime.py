"""The predictor's OpenVINO runtime: the network plus its activation as an OpenVINO CPU model, in float32.

The model takes the predictor's decoded images as they are (uint8, N x H x W x C); OpenVINO's preprocessing does the
layout change and the float conversion inside the compiled graph. It is converted from the PyTorch network in memory
(``openvino.convert_model``; no file is written) and checked against it to 1e-4 (:func:`~.export.check_agreement`) before use.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import numpy as np

from ..exceptions import require
from .export import check_agreement, wrapped_with_activation

__all__ = ["openvino_runner"]


def openvino_runner(net, *, softmax: bool, image_shape: tuple[int, int, int]
                    ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """``(run, max |diff|)``: ``run(uint8 NHWC batch) -> probabilities`` (float32, N x classes) on the CPU, and its
    largest difference to ``net`` on a test batch. float32 throughout (``INFERENCE_PRECISION_HINT``), so that a CPU
    with bfloat16 units does not trade precision for speed."""
    import torch

    ov = require("openvino", extra="openvino")
    from openvino.preprocess import PrePostProcessor

    c, h, w = image_shape
    module = wrapped_with_activation(net, softmax)
    test = np.random.default_rng(0).integers(0, 256, (3, h, w, c), dtype=np.uint8)
    with torch.no_grad():
        expected = module(torch.from_numpy(test).permute(0, 3, 1, 2).float()).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the network's Python-side shape checks
            model = ov.convert_model(module, example_input=torch.zeros(2, c, h, w),
                                     input=[ov.PartialShape([-1, c, h, w])])
    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.input().preprocess().convert_element_type(ov.Type.f32)
    compiled = ov.Core().compile_model(steps.build(), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                              "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request: callers from several threads take turns

    def run(batch: np.ndarray) -> np.ndarray:
        with lock:
            return np.array(request.infer({0: np.ascontiguousarray(batch)})[0], dtype=np.float32)  # a copy

    return run, check_agreement(float(np.abs(run(test) - expected).max()), "OpenVINO model")
