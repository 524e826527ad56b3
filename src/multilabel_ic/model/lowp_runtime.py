"""The predictor's int8 model: the export that ``export --precision int8`` wrote beside the artifact (calibrated and
held to the accuracy gate), loaded for OpenVINO or ONNX Runtime and fed the decoded uint8 images.

It is used only when its metadata says it is an int8 export for this runtime, made from the very weights the
predictor loaded (their SHA-256): an export of an earlier epoch or another run is refused in one line that names the
command that makes it again. An export kept with ``--accept-accuracy-loss`` is used with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._read import MiB, read_bounded
from ..exceptions import ArtifactError, MultilabelICError, require
from .export_output import metadata_path
from .runtime_cache import network_key

__all__ = ["quantized_runner", "default_output", "OPENVINO_HINTS"]

log = logging.getLogger("multilabel_ic")

FORMAT_OF = {"openvino": "openvino", "onnxruntime": "onnx"}
OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}  # int8: the layers NNCF left in float run in f32


def default_output(artifact: str | os.PathLike, format: str, precision: str) -> Path:
    """``model-int8.xml`` (``model.xml`` for float32), ``model-int8.onnx``, ... beside the artifact."""
    stem = "model" if precision == "fp32" else f"model-{precision}"
    return Path(artifact).with_name(stem + (".xml" if format == "openvino" else ".onnx"))


def _checked_metadata(artifact: Path, model: Path, runtime: str, net) -> dict:
    fmt = FORMAT_OF[runtime]
    remake = f"make it with `multilabel-ic export {artifact} --format {fmt} --precision int8` (it calibrates and " \
             f"checks the accuracy)"
    sidecar = metadata_path(model)
    if not model.is_file() or not sidecar.is_file():
        raise ArtifactError(f"{artifact}: precision 'int8' needs its int8 {fmt} export at {model} (with "
                            f"{sidecar.name}), which is not there; {remake}, or name one with quantized_model=.")
    try:
        meta = json.loads(read_bounded(sidecar, limit=16 * MiB, what="export metadata"))
    except (MultilabelICError, ValueError) as exc:
        raise ArtifactError(f"{sidecar}: not readable export metadata ({exc}); {remake}.") from exc
    if not isinstance(meta, dict) or meta.get("precision") != "int8" or meta.get("format") != fmt:
        got = f"{meta.get('format')} {meta.get('precision')}" if isinstance(meta, dict) else "not an export"
        raise ArtifactError(f"{model}: its metadata says {got}, not an int8 {fmt} export; {remake}.")
    if meta.get("weights_sha256") != network_key(net)["weights_sha256"]:
        raise ArtifactError(f"{model} was made from other weights than {artifact} holds (another epoch or run); "
                            f"{remake.replace('make it', 'make it again')}.")
    if meta.get("accepted_accuracy_loss"):
        log.warning("%s failed its accuracy gate and was kept with --accept-accuracy-loss (%s)", model,
                    "; ".join((meta.get("accuracy_gate") or {}).get("failures") or []))
    return meta


def quantized_runner(artifact: str | os.PathLike, runtime: str, net, *, model: str | os.PathLike | None = None
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """``run(uint8 NHWC batch) -> probabilities`` with the int8 export of ``artifact`` for ``runtime``
    ("openvino", "onnxruntime") at ``model`` (default: where the export writes it)."""
    artifact = Path(artifact)
    path = Path(model) if model is not None else default_output(artifact, FORMAT_OF[runtime], "int8")
    _checked_metadata(artifact, path, runtime, net)
    lock = threading.Lock()
    if runtime == "openvino":
        ov = require("openvino", extra="openvino")
        from .openvino_runtime import with_uint8_input

        core = ov.Core()
        compiled = core.compile_model(with_uint8_input(core.read_model(str(path))), "CPU",
                                      {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS["int8"],
                                       "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()

        def run(batch: np.ndarray) -> np.ndarray:
            with lock:
                return np.array(request.infer({0: np.ascontiguousarray(batch)})[0], dtype=np.float32)

        return run
    from .export import _onnx_runtime_session

    session = _onnx_runtime_session(str(path))
    return lambda batch: np.asarray(session.run(["probabilities"], {
        "data": np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)})[0])
