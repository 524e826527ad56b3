"""Export a ``model.tar.gz`` to ONNX or TorchScript, so that it serves without this library.

The exported graph is the network plus its output activation. The input is ``data``: float32 NCHW, RGB, 0-255 (no
mean or std: ``bn_data`` normalises), any batch size, at the artifact's height and width. The output is
``probabilities``: sigmoid for a multi-label model, softmax for a single-label one. Beside the file goes
``<file>.json``, with the class names, the tuned thresholds and the preprocessing written out. Each export is checked
before it is kept: the exported model and the PyTorch network that ``LocalPredictor`` runs must give the same
probabilities (max |diff| <= 1e-4) on a test batch; otherwise nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text, ensure_dir
from ..exceptions import ArtifactError, UsageError, require

__all__ = ["export_model", "onnx_session", "wrapped_with_activation", "check_agreement", "FORMATS", "TOLERANCE",
           "preprocessing"]

log = logging.getLogger("multilabel_ic")

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


def preprocessing(image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """How to turn an encoded image into the exported model's input (the endpoint's preprocessing)."""
    c, h, w = image_shape
    return {"decode": "RGB" if c == 3 else "grayscale", "resize": f"to {w}x{h} (width x height), bilinear "
            "(OpenCV INTER_LINEAR), aspect ratio not kept", "dtype": "float32", "range": [0, 255],
            "normalise": "none (the network's first layer does)", "layout": "NCHW", "input": "data",
            "shape": ["batch", c, h, w], "output": "probabilities"}


def wrapped_with_activation(net, softmax: bool):
    """``net`` (moved to the CPU, float32, eval mode) followed by its output activation: the exported graph."""
    import torch

    class WithActivation(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, softmax: bool):
            super().__init__()
            self.net, self.softmax = net, softmax

        def forward(self, data: torch.Tensor) -> torch.Tensor:
            logits = self.net(data).float()
            return torch.softmax(logits, dim=1) if self.softmax else torch.sigmoid(logits)

    return WithActivation(net.cpu().float(), softmax).eval()


def check_agreement(diff: float, what: str) -> float:
    """``diff`` (a runtime's max |probability difference| to the PyTorch network), or an ArtifactError past
    :data:`TOLERANCE` that names the way out."""
    if not diff <= TOLERANCE:
        raise ArtifactError(f"the {what} differs from the PyTorch network by {diff:.3g} (> {TOLERANCE}); "
                            f"use runtime='torch'.")
    return diff


def _test_batch(image_shape: tuple[int, int, int], count: int = 4) -> np.ndarray:
    c, h, w = image_shape
    return np.random.default_rng(0).uniform(0, 255, (count, c, h, w)).astype(np.float32)


def _export_onnx(module, example, path: Path) -> None:
    import torch

    require("onnx", extra="export")
    require("onnxscript", extra="export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["data"], output_names=["probabilities"],
                          dynamic_axes={"data": {0: "batch"}, "probabilities": {0: "batch"}}, dynamo=True,
                          verbose=False)


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    ort = require("onnxruntime", extra="export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"data": batch})[0])


def onnx_session(net, *, softmax: bool, image_shape: tuple[int, int, int]):
    """An onnxruntime session (CPU) of ``net`` plus its activation, checked against ``net`` to :data:`TOLERANCE`;
    returns ``(session, max |diff|)``. The ONNX file lives in a temporary folder only while it is loaded."""
    import torch

    ort = require("onnxruntime", extra="export")
    module = wrapped_with_activation(net, softmax)
    batch = _test_batch(image_shape, 3)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        _export_onnx(module, torch.from_numpy(_test_batch(image_shape, 2)), path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diff = float(np.abs(session.run(["probabilities"], {"data": batch})[0] - expected).max())
    return session, check_agreement(diff, "onnxruntime graph")


def _export_torchscript(module, example, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
    traced.save(str(path))


def _run_torchscript(path: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still supported
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(torch.from_numpy(batch)).numpy()


def export_model(artifact: str | os.PathLike, output: str | os.PathLike, *, format: str = "onnx",
                 epoch: int | None = None, class_names: list[str] | None = None) -> dict[str, Any]:
    """Export ``artifact`` to ``output`` (``format``: "onnx" or "torchscript"), checked against the predictor.

    Returns what was written: the paths, the max |difference| measured, the input/output names and shapes."""
    import torch

    from .artifact import read_metadata, read_model_tar
    from .network import ResNetV2, load_mxnet_state_dict

    if format not in FORMATS:
        raise UsageError(f"export format {format!r} is not one of {', '.join(FORMATS)}.")
    contents = read_model_tar(artifact, epoch=epoch)
    if contents.image_shape is None:
        raise ArtifactError(f"{artifact}: no model-shapes.json, so the input size is unknown; it cannot be exported.")
    meta = read_metadata(artifact) or {}
    names = list(class_names or meta.get("class_names") or [f"class_{i}" for i in range(contents.num_classes)])
    c, h, w = contents.image_shape
    shape = (int(c), int(h), int(w))
    net = ResNetV2(contents.num_classes, contents.num_layers, shape)  # the network LocalPredictor runs
    try:
        load_mxnet_state_dict(net, {k: torch.from_numpy(v) for k, v in contents.params.items()})
    except ValueError as exc:
        raise ArtifactError(f"{artifact}: {exc}") from exc
    module = wrapped_with_activation(net, contents.output == "softmax")
    out = Path(output)
    ensure_dir(out.parent)
    example = torch.from_numpy(_test_batch(shape, 2))
    batch = _test_batch(shape, 4)  # another batch size than the example: the batch axis must be free
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    export, run = ((_export_onnx, _run_onnx) if format == "onnx" else (_export_torchscript, _run_torchscript))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export(module, example, tmp)
        got = run(tmp, batch)
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise ArtifactError(f"the {format} export of {artifact} differs from the predictor by {diff:.3g} "
                                f"(> {TOLERANCE}); nothing was written.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = out.with_name(out.name + ".json")
    info = {"format": format, "model": str(out), "source_artifact": str(artifact), "epoch": contents.epoch,
            "class_names": names, "thresholds": meta.get("tuned_thresholds"),
            "activation": contents.output, "preprocessing": preprocessing(shape),
            "max_abs_diff_vs_predictor": diff}
    atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    log.info("exported %s to %s (max |diff| vs the predictor %.2e); preprocessing in %s", artifact, out, diff,
             sidecar)
    return {**info, "metadata": str(sidecar)}
