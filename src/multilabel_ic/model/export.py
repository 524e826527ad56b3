"""Export a ``model.tar.gz`` to ONNX or TorchScript, so that it serves without this library.

The exported graph is the network plus its output activation. The input is ``data``: float32 NCHW, RGB, 0-255 (no
mean or std: ``bn_data`` normalises), any batch size, at the artifact's height and width. The output is
``probabilities``: sigmoid for a multi-label model, softmax for a single-label one. Beside the file goes
``<file>.json``, with the class names, the tuned thresholds and the preprocessing written out. Each export is checked
before it is kept: the exported model and the PyTorch network that ``LocalPredictor`` runs must give the same
probabilities (max |diff| <= 1e-4) on a test batch; otherwise nothing is written.

Each file is written atomically (a temporary file renamed into place) with the permissions of any other output
(0o666 less the umask). An ONNX file holds its weights: it can be copied alone. Only a network past protobuf's 2 GB
(none of the algorithm's) has them in ``<file>.data`` beside it, a stable name written inside the ONNX file. The
output may replace only an earlier export: :mod:`.export_output` refuses the rest before any work is done.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._io import TEMP_SUFFIX, atomic_write_bytes, atomic_write_text, ensure_dir, output_error
from .._io import _file_mode as file_mode
from ..exceptions import ArtifactError, UsageError, require
from .export_output import check_export_output, is_export_metadata, metadata_path

__all__ = ["export_model", "onnx_session", "onnx_bytes", "wrapped_with_activation", "check_agreement", "FORMATS",
           "TOLERANCE", "preprocessing"]

log = logging.getLogger("multilabel_ic")

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
PROTOBUF_LIMIT = 2**31 - 1  # protobuf's limit on one message: past it, an ONNX file keeps its weights beside it


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


def check_agreement(diff: float, what: str, tolerance: float | None = None) -> float:
    """``diff`` (a runtime's max |probability difference| to the PyTorch network), or an ArtifactError past
    ``tolerance`` (default :data:`TOLERANCE`) that names the way out."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    if not diff <= tolerance:
        raise ArtifactError(f"the {what} differs from the PyTorch network by {diff:.3g} (> {tolerance}); "
                            f"use runtime='torch'.")
    return diff


def _test_batch(image_shape: tuple[int, int, int], count: int = 4) -> np.ndarray:
    c, h, w = image_shape
    return np.random.default_rng(0).uniform(0, 255, (count, c, h, w)).astype(np.float32)


def _export_onnx(module, example):
    """The ONNX ModelProto of ``module`` (weights inside it, not in a file beside it)."""
    import torch

    require("onnx", extra="export")
    require("onnxscript", extra="export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), None, input_names=["data"], output_names=["probabilities"],
                                    dynamic_axes={"data": {0: "batch"}, "probabilities": {0: "batch"}}, dynamo=True,
                                    verbose=False)
    return program.model_proto


def onnx_bytes(module, example) -> bytes:
    """``module`` as one self-contained ONNX file's bytes, for networks below protobuf's 2 GB limit."""
    proto = _export_onnx(module, example)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise ArtifactError(f"the network's ONNX graph is {proto.ByteSize() / 2**30:.1f} GiB, more than protobuf's "
                            "2 GiB: it cannot be held in one ONNX file; use runtime='torch' or 'openvino'.")
    return proto.SerializeToString()


def _onnx_runtime_session(model: bytes | str):
    ort = require("onnxruntime", extra="export")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _run_onnx(model: bytes | Path, batch: np.ndarray) -> np.ndarray:
    session = _onnx_runtime_session(model if isinstance(model, bytes) else str(model))
    return np.asarray(session.run(["probabilities"], {"data": batch})[0])


def onnx_session(net, *, softmax: bool, image_shape: tuple[int, int, int], cache: Path | None = None):
    """An onnxruntime session (CPU) of ``net`` plus its activation, checked against ``net`` to :data:`TOLERANCE`;
    returns ``(session, max |diff|)``. The ONNX graph is built in memory, or read from ``cache`` (a file that
    :mod:`.runtime_cache` keeps: reused when made from the same weights and versions, else rebuilt)."""
    import torch

    from .runtime_cache import load_or_build, network_key

    ort = require("onnxruntime", extra="export")
    module = wrapped_with_activation(net, softmax)
    batch = _test_batch(image_shape, 3)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()

    def use(parts):
        session = _onnx_runtime_session(parts["onnx"])
        diff = float(np.abs(session.run(["probabilities"], {"data": batch})[0] - expected).max())
        return session, check_agreement(diff, "onnxruntime graph")

    key = network_key(net, runtime="onnxruntime", version=ort.__version__, image_shape=list(image_shape),
                      softmax=softmax, input="float32 NCHW")
    example = torch.from_numpy(_test_batch(image_shape, 2))
    return load_or_build(cache, key, lambda: {"onnx": onnx_bytes(module, example)}, use, what="onnxruntime graph")


def _export_torchscript(module, example) -> bytes:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _run_torchscript(data: bytes, batch: np.ndarray) -> np.ndarray:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still supported
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return loaded(torch.from_numpy(batch)).numpy()


def export_model(artifact: str | os.PathLike, output: str | os.PathLike, *, format: str = "onnx",
                 epoch: int | None = None, class_names: list[str] | None = None) -> dict[str, Any]:
    """Export ``artifact`` to ``output`` (``format``: "onnx" or "torchscript"), checked against the predictor.

    ``output`` names the file to write; it may replace only an earlier export (:mod:`.export_output`). Returns what
    was written: the paths, the max |difference| measured, the input/output names and shapes."""
    import torch

    from .artifact import read_metadata, read_model_tar
    from .network import ResNetV2, load_mxnet_state_dict

    if format not in FORMATS:
        raise UsageError(f"export format {format!r} is not one of {', '.join(FORMATS)}.")
    default_name = "model.onnx" if format == "onnx" else "model.pt"
    out = check_export_output(artifact, output, default_name=default_name)
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
    example = torch.from_numpy(_test_batch(shape, 2))
    batch = _test_batch(shape, 4)  # another batch size than the example: the batch axis must be free
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()

    def agreed(got: np.ndarray) -> float:
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise ArtifactError(f"the {format} export of {artifact} differs from the predictor by {diff:.3g} "
                                f"(> {TOLERANCE}); nothing was written.")
        return diff

    sidecar = metadata_path(out)
    earlier = _earlier_external_data(sidecar)
    external = None
    if format == "torchscript":
        data = _export_torchscript(module, example)
        diff = agreed(_run_torchscript(data, batch))
        ensure_dir(out.parent)
        atomic_write_bytes(out, data)
    else:
        proto = _export_onnx(module, example)
        if proto.ByteSize() <= PROTOBUF_LIMIT:
            data = proto.SerializeToString()
            diff = agreed(_run_onnx(data, batch))
            ensure_dir(out.parent)
            atomic_write_bytes(out, data)
        else:
            external = out.with_name(out.name + ".data")
            check_export_output(artifact, out, default_name=default_name, written=[external])
            ensure_dir(out.parent)
            diff = _write_with_external_data(proto, out, external, lambda path: agreed(_run_onnx(path, batch)))
    if earlier is not None and earlier != external:  # an earlier export's weights file this one does not use
        earlier.unlink(missing_ok=True)
    _remove_orphaned_weights(out)
    info = {"format": format, "model": str(out), "source_artifact": str(artifact), "epoch": contents.epoch,
            "class_names": names, "thresholds": meta.get("tuned_thresholds"),
            "activation": contents.output, "preprocessing": preprocessing(shape),
            "max_abs_diff_vs_predictor": diff}
    if external is not None:
        info["external_data"] = external.name
        log.warning("%s: the network is larger than protobuf's 2 GiB, so its weights are in %s beside it; copy "
                    "both files together", out, external.name)
    atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    log.info("exported %s to %s (max |diff| vs the predictor %.2e); preprocessing in %s", artifact, out, diff,
             sidecar)
    return {**info, "metadata": str(sidecar)}


def _write_with_external_data(proto, out: Path, external: Path, check: Callable[[Path], float]) -> float:
    """Write ``proto`` as ``out`` plus its weights in ``external`` (its stable name is inside ``out``): both are
    written and checked in a temporary folder beside them, then renamed into place, weights first."""
    import onnx

    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent) as folder:
        staged = Path(folder) / out.name
        try:
            onnx.save_model(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=external.name)  # small constants stay inline: onnxruntime reads them to infer shapes
        except OSError as exc:
            raise output_error(out, exc) from exc
        diff = check(staged)
        for name, target in ((external.name, external), (out.name, out)):
            os.chmod(Path(folder) / name, file_mode())
            try:
                os.replace(Path(folder) / name, target)
            except OSError as exc:
                raise output_error(target, exc) from exc
    return diff


def _earlier_external_data(sidecar: Path) -> Path | None:
    """The weights file of the earlier export at this path, if it had one (read before it is replaced)."""
    if not is_export_metadata(sidecar):
        return None
    name = json.loads(sidecar.read_bytes()).get("external_data")
    return sidecar.with_name(name) if isinstance(name, str) and name and Path(name).name == name else None


def _remove_orphaned_weights(out: Path) -> None:
    """Delete the hidden ``.<file>.<random>.tmp.data`` weights that earlier versions left beside ``out``."""
    for orphan in out.parent.glob(f".{glob.escape(out.name)}.*{TEMP_SUFFIX}.data"):
        if orphan.is_file():
            orphan.unlink(missing_ok=True)
            log.info("removed %s, the weights file an earlier version's export left beside %s", orphan.name,
                     out.name)
