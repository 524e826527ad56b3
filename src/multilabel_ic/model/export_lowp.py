"""Export a ``model.tar.gz`` in low precision for the CPU: int8 (post-training static quantization) or bfloat16,
for OpenVINO (an IR: ``<file>.xml`` and ``<file>.bin``) or ONNX Runtime (``<file>.onnx``), held to an accuracy gate.

int8 is calibrated on images the caller names (a ``.lst`` or a :class:`~multilabel_ic.Dataset`; by default the
training ``.lst`` in the run's ``run-config.json``), at most ``calibration_size`` (300) of them spread evenly over
the list, with the validation preprocessing (the predictor's). The gate (:mod:`.accuracy_gate`) then scores the
quantized model against the float32 network on held-out images (by default the run's validation ``.lst``); when it
fails, nothing is written and :class:`~multilabel_ic.exceptions.AccuracyGateError` says which limit broke, unless
``accept_accuracy_loss``. bfloat16 is OpenVINO's inference precision hint on the float32 IR (the file holds float32
weights; the hint is recorded in the metadata), gated the same way, and refused on a CPU without the instructions.

The model's input and output are those of :mod:`.export` (``data``: float32 NCHW 0-255; ``probabilities``). Beside
the model goes ``<file>.json``: the export metadata of :mod:`.export` plus the precision, the calibration set, the
tool and its version, the gate's figures and the SHA-256 of the weights it was made from (the predictor's
``precision="int8"`` refuses an export of other weights). Every file is written atomically once the gate passed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_bytes, atomic_write_text, ensure_dir
from ..data.dataset import Dataset
from ..exceptions import AccuracyGateError, UsageError, require
from .accuracy_gate import accuracy_gate, gate_summary
from .cpu_flags import instruction_set, require_bf16
from .export import check_agreement, onnx_bytes, preprocessing, wrapped_with_activation
from .export_output import check_export_output, metadata_path
from .lowp_runtime import OPENVINO_HINTS, default_output

__all__ = ["export_low_precision", "PRECISIONS", "LOWP_FORMATS", "QUANTIZERS", "CALIBRATION_SIZE",
           "default_output", "RUN_CONFIG", "OPENVINO_HINTS"]

log = logging.getLogger("multilabel_ic")

PRECISIONS = ("fp32", "int8", "bf16")
LOWP_FORMATS = ("openvino", "onnx")
# the int8 quantizers of each format, its default first: NNCF or onnxruntime.quantization (whose QDQ model OpenVINO
# also runs) for OpenVINO; onnxruntime.quantization for ONNX Runtime
QUANTIZERS = {"openvino": ("nncf", "onnxruntime"), "onnx": ("onnxruntime",)}
CALIBRATION_SIZE = 300
RUN_CONFIG = "run-config.json"
BATCH = 32
Batches = list[np.ndarray]


def _run_data(artifact: Path, role: str) -> tuple[Path, Path] | None:
    """The ``(lst, images)`` of ``role`` ("train_lst", "validation_lst") in the run's ``run-config.json``."""
    path = artifact.parent / RUN_CONFIG
    if not path.is_file():
        return None
    from ..run_config import read_config_table

    data = read_config_table(path).get("data")
    if not isinstance(data, dict) or not isinstance(data.get(role), str) or not isinstance(data.get("images"), str):
        return None
    return Path(data[role]), Path(data["images"])


def _dataset(value: Dataset | str | os.PathLike | None, *, role: str, option: str, artifact: Path,
             images: str | os.PathLike | None, class_names: list[str]) -> tuple[Dataset, str]:
    """The images of ``option`` (a Dataset, a .lst under ``images``, or the run's), and where they came from."""
    if isinstance(value, Dataset):
        data, source = value, f"a Dataset of {len(value)} images under {value.root}"
    else:
        if value is None:
            found = _run_data(artifact, role)
            if found is None:
                raise UsageError(f"{option} is needed: {artifact.parent / RUN_CONFIG} (written by `multilabel-ic "
                                 f"train`) does not name the run's {role.replace('_', ' ')}; pass {option} LST with "
                                 f"--images DIR (Python: {option.strip('-')}=Dataset or .lst path).")
            lst, root = found
        else:
            if images is None:
                raise UsageError(f"{option} {value} needs --images (Python: images=), the folder its paths are "
                                 f"relative to.")
            lst, root = Path(value), Path(images)
        data, source = Dataset.from_lst(lst, root=root, class_names=class_names), str(lst)
    if len(data.class_names) != len(class_names):
        raise UsageError(f"{option} ({source}) has {len(data.class_names)} classes but the model has "
                         f"{len(class_names)}; give images labelled for this model.")
    return data, source


def _spread(count: int, size: int) -> np.ndarray:
    """At most ``size`` of ``count`` rows, evenly spread (the first and the last included)."""
    return np.unique(np.linspace(0, count - 1, min(count, size)).round().astype(int))


def _inputs(predictor, data: Dataset) -> np.ndarray:
    """The images of ``data`` as the export's input: float32 NCHW 0-255, preprocessed as the predictor does."""
    from ..images import read_bytes

    arrays = [predictor.preprocess(read_bytes(path), str(path)) for path, _ in data]
    return np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)


def _score(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(run(inputs[i:i + BATCH]), dtype=np.float64)
                           for i in range(0, len(inputs), BATCH)])


def _openvino_run(parts: dict[str, bytes], precision: str) -> Callable[[np.ndarray], np.ndarray]:
    ov = require("openvino", extra="openvino")
    core = ov.Core()
    model = core.read_model(model=parts["xml"], weights=ov.Tensor(np.frombuffer(parts["bin"], np.uint8)))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]})
    return lambda batch: np.asarray(compiled(np.ascontiguousarray(batch))[0])


def _onnx_run(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    from .export import _onnx_runtime_session

    session = _onnx_runtime_session(data)
    return lambda batch: np.asarray(session.run(["probabilities"], {"data": np.ascontiguousarray(batch)})[0])


def _build(format: str, precision: str, module, shape: tuple[int, int, int], calibration: np.ndarray | None,
           quantizer: str | None = None) -> tuple[dict[str, bytes], dict[str, Any], Callable[[np.ndarray], np.ndarray]]:
    """The model's files, how they were made, and a function that runs them."""
    import torch

    from .quantize import openvino_from_onnx, openvino_model, openvino_parts, quantize_onnx, quantize_openvino

    batches = [calibration[i:i + 1] for i in range(len(calibration))] if calibration is not None else []
    def onnx_model() -> bytes:
        example = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32))
        return onnx_bytes(module, example)

    if format == "openvino":
        if precision == "int8" and quantizer == "onnxruntime":
            ov = require("openvino", extra="openvino")
            onnx_parts, settings = quantize_onnx(onnx_model(), batches)
            parts = openvino_from_onnx(onnx_parts["onnx"])
            settings.update(runtime="openvino", runtime_version=ov.__version__,
                            converted_with=f"openvino.convert_model {ov.__version__} (QDQ pairs as FakeQuantize)")
        elif precision == "int8":
            parts, settings = quantize_openvino(module, shape, batches)
        else:
            ov = require("openvino", extra="openvino")
            parts = openvino_parts(openvino_model(module, shape))
            settings = {"tool": "openvino.convert_model", "version": ov.__version__, "runtime": "openvino",
                        "runtime_version": ov.__version__}
        settings["inference_precision_hint"] = OPENVINO_HINTS[precision]
        return parts, settings, _openvino_run(parts, precision)
    parts, settings = quantize_onnx(onnx_model(), batches)
    return parts, settings, _onnx_run(parts["onnx"])


def export_low_precision(artifact: str | os.PathLike, output: str | os.PathLike | None = None, *,
                         format: str = "openvino", precision: str = "int8",
                         calibration: Dataset | str | os.PathLike | None = None,
                         validation: Dataset | str | os.PathLike | None = None,
                         images: str | os.PathLike | None = None, calibration_size: int = CALIBRATION_SIZE,
                         accept_accuracy_loss: bool = False, epoch: int | None = None,
                         class_names: list[str] | None = None, quantizer: str | None = None) -> dict[str, Any]:
    """Export ``artifact`` for ``format`` ("openvino", "onnx") in ``precision`` ("int8", "bf16", "fp32"), checked by
    the accuracy gate (float32: against the predictor to 1e-4). Returns the metadata written, with ``metadata``.
    ``quantizer`` (int8): the toolkit that quantizes, one of :data:`QUANTIZERS` for the format (default: its first).
    """
    from .artifact import read_metadata
    from .predictor import LocalPredictor
    from .runtime_cache import network_key

    if format not in LOWP_FORMATS:
        raise UsageError(f"format {format!r} has no low-precision export; use one of {', '.join(LOWP_FORMATS)}.")
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "bf16" and format != "openvino":
        raise UsageError("precision 'bf16' is OpenVINO's inference precision hint; use format 'openvino' (ONNX "
                         "Runtime has no bfloat16 kernels for the CPU).")
    if precision == "fp32" and format == "onnx":
        raise UsageError("a float32 ONNX export is `multilabel-ic export MODEL --format onnx` (export_model); "
                         "precision 'fp32' here is for format 'openvino'.")
    if quantizer is not None and precision != "int8":
        raise UsageError(f"quantizer {quantizer!r} is for precision 'int8'; leave it out for {precision!r}.")
    if quantizer is not None and quantizer not in QUANTIZERS[format]:
        raise UsageError(f"quantizer {quantizer!r} does not make {format} models; use one of "
                         f"{', '.join(QUANTIZERS[format])}.")
    if precision == "int8":
        quantizer = quantizer or QUANTIZERS[format][0]
    if precision == "bf16":
        require_bf16("precision")
    if not isinstance(calibration_size, int) or isinstance(calibration_size, bool) or calibration_size < 1:
        raise UsageError(f"calibration_size must be a positive whole number of images, got {calibration_size!r}.")
    artifact = Path(artifact)
    target = output if output is not None else default_output(artifact, format, precision)
    weights = [Path(os.fspath(target)).with_suffix(".bin")] if format == "openvino" else []
    out = check_export_output(artifact, target, default_name=default_output(artifact, format, precision).name,
                              written=weights)
    if format == "openvino" and out.suffix != ".xml":
        raise UsageError(f"export output {out}: an OpenVINO model is an .xml file (its weights go beside it in "
                         f"{out.stem}.bin); name it e.g. {out.with_suffix('.xml')}.")
    meta = read_metadata(artifact) or {}
    predictor = LocalPredictor(artifact, epoch=epoch, device="cpu", class_names=class_names, channels_last=False,
                               decode_threads=1)
    names = predictor.class_names
    held_out = calibrated = None
    if precision != "fp32":
        held_out = _dataset(validation, role="validation_lst", option="--validation", artifact=artifact,
                            images=images, class_names=names)
    if precision == "int8":
        calibrated = _dataset(calibration, role="train_lst", option="--calibration", artifact=artifact,
                              images=images, class_names=names)
    c, h, w = predictor.image_shape
    shape = (int(c), int(h), int(w))
    module = wrapped_with_activation(predictor.model, predictor.output == "softmax")
    rows = calib = None
    if calibrated is not None:
        rows = _spread(len(calibrated[0]), calibration_size)
        calib = _inputs(predictor, calibrated[0].subset(rows))
    parts, settings, run = _build(format, precision, module, shape, calib, quantizer)
    info: dict[str, Any] = {"format": format, "precision": precision, "model": str(out),
                            "source_artifact": str(artifact), "epoch": predictor.epoch, "class_names": names,
                            "thresholds": meta.get("tuned_thresholds"), "activation": predictor.output,
                            "preprocessing": preprocessing(shape),
                            "weights_sha256": network_key(predictor.model)["weights_sha256"],
                            "quantization" if precision == "int8" else "conversion": settings,
                            "cpu_flags": instruction_set()}
    if calibrated is not None and rows is not None:
        info["calibration"] = {"source": calibrated[1], "images": len(rows), "of": len(calibrated[0]),
                               "selection": "evenly spread over the list", "preprocessing": "the predictor's "
                               "(validation) preprocessing"}
    if held_out is None:  # float32: the same probabilities as the predictor
        test = np.random.default_rng(0).uniform(0, 255, (4, *shape)).astype(np.float32)
        info["max_abs_diff_vs_predictor"] = check_agreement(_agreement(module, run, test), "OpenVINO export")
    else:
        data, source = held_out
        inputs = _inputs(predictor, data)
        reference = _score(lambda b: _torch_run(module, b), inputs)
        gate = accuracy_gate(data.labels, reference, _score(run, inputs), meta.get("tuned_thresholds"), names)
        info["accuracy_gate"] = {"validation": source, **gate}
        if not gate["passed"]:
            if not accept_accuracy_loss:
                other = _alternative(precision, format, quantizer, module, shape, calib, data.labels, reference,
                                     inputs, meta.get("tuned_thresholds"), names)
                error = AccuracyGateError(
                    f"{artifact}: the {precision} {format} model fails the accuracy gate on {gate['images']} images "
                    f"of {source} ({'; '.join(gate['failures'])}): {gate_summary(gate)}; nothing was written. "
                    f"{_alternative_advice(other)}Calibrate on images like the ones it will serve "
                    f"(--calibration), or keep it anyway with --accept-accuracy-loss.")
                error.gate, error.other_runtime = gate, other
                raise error
            log.warning("%s: the %s model fails the accuracy gate (%s); kept because the loss was accepted",
                        artifact, precision, "; ".join(gate["failures"]))
        info["accepted_accuracy_loss"] = bool(accept_accuracy_loss and not gate["passed"])
    ensure_dir(out.parent)
    if format == "openvino":
        atomic_write_bytes(out.with_suffix(".bin"), parts["bin"])
        atomic_write_bytes(out, parts["xml"])
        info["weights"] = out.with_suffix(".bin").name
    else:
        atomic_write_bytes(out, parts["onnx"])
    sidecar = metadata_path(out)
    atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    log.info("exported %s to %s (%s, %s); metadata in %s", artifact, out, format, precision, sidecar)
    return {**info, "metadata": str(sidecar)}


def _alternatives(format: str, quantizer: str | None) -> list[tuple[str, str]]:
    """The other (format, quantizer) pairs of an int8 export, the same format first."""
    pairs = [(f, q) for f in LOWP_FORMATS for q in QUANTIZERS[f] if (f, q) != (format, quantizer)]
    return sorted(pairs, key=lambda pair: pair[0] != format)


def _alternative(precision: str, format: str, quantizer: str | None, module, shape: tuple[int, int, int],
                 calib: np.ndarray | None, labels: np.ndarray, reference: np.ndarray, inputs: np.ndarray,
                 thresholds: Any, names: list[str]) -> dict[str, Any] | None:
    """When an int8 export fails the gate: the other int8 models of the same calibration (the other quantizer of the
    same format first, then the other format), gated on the same images, up to the first that passes
    (``{"format", "quantizer", "gate", "tried"}``, ``tried``: the gates of those that failed before it); the last
    one tried when none passes, so that the refusal can say so. None for bfloat16, or when no other could be
    checked (a toolkit not installed, a failure)."""
    if precision != "int8":
        return None
    found: dict[str, Any] | None = None
    tried: list[dict[str, Any]] = []
    for other_format, other_quantizer in _alternatives(format, quantizer):
        try:
            _, _, run = _build(other_format, precision, module, shape, calib, other_quantizer)
            gate = accuracy_gate(labels, reference, _score(run, inputs), thresholds, names)
        except Exception as exc:  # the advice is a courtesy: the refusal stands without it
            log.debug("the %s int8 model (%s) could not be checked for the advice: %s", other_format,
                      other_quantizer, exc)
            continue
        if found is not None:
            tried.append(found)
        found = {"format": other_format, "quantizer": other_quantizer, "gate": gate}
        if gate["passed"]:
            break
    if found is not None:
        found["tried"] = tried
    return found


def _alternative_advice(other: dict[str, Any] | None) -> str:
    if other is None:
        return ""

    def model(o: dict[str, Any]) -> str:
        return f"{o['format']} int8 model quantized with {o.get('quantizer') or QUANTIZERS[o['format']][0]}"

    gate = other["gate"]
    if gate["passed"]:
        option = f"--format {other['format']}"
        if len(QUANTIZERS[other["format"]]) > 1:
            option += f" --quantizer {other['quantizer']}"
        return (f"The {model(other)} of the same calibration passes it ({gate_summary(gate)}): run the same export "
                f"with {option}. ")
    failed = [*other.get("tried", []), other]
    return ("The other int8 models of the same calibration fail it too: "
            + "; ".join(f"the {model(o)} ({gate_summary(o['gate'])})" for o in failed) + ". ")


def _torch_run(module, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def _agreement(module, run: Callable[[np.ndarray], np.ndarray], test: np.ndarray) -> float:
    return float(np.abs(np.asarray(run(test)) - _torch_run(module, test)).max())
