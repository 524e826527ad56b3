"""The failure catalog's low-precision cases: a precision the runtime does not run, an int8 export that is missing,
stale or not an int8 export of this runtime, and every bad input of ``export --precision int8|bf16`` (format,
output, calibration and validation lists) are refused in one line before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from catalog_support import (
    ApiCase,
    CliCase,
    Workspace,
    check_api_case,
    check_cli_case,
    make_predictor,
    write_file,
)

from multilabel_ic import Dataset, UsageError
from multilabel_ic.model.export_lowp import export_low_precision


def _predict(ws: Workspace, *extra: str, model: Path | None = None) -> list[str]:
    return ["predict", "--model", str(model or ws.model), *extra, str(ws.jpeg)]


def _with_export(ws: Workspace, tmp: Path, sidecar: bytes | None = None, **meta) -> Path:
    """A copy of the artifact with an int8 OpenVINO export beside it whose metadata is ``meta`` (or ``sidecar``)."""
    folder = tmp / "m"
    folder.mkdir(exist_ok=True)
    shutil.copy(ws.model, folder / "model.tar.gz")
    write_file(folder / "model-int8.xml", "<net/>")
    write_file(folder / "model-int8.bin", b"\0")
    doc = {"format": "openvino", "precision": "int8", "model": "model-int8.xml", "source_artifact": "model.tar.gz",
           "preprocessing": {}, "weights_sha256": "0" * 64, **meta}
    write_file(folder / "model-int8.xml.json", sidecar if sidecar is not None else json.dumps(doc))
    return folder / "model.tar.gz"


def _export(ws: Workspace, tmp: Path, *extra: str) -> list[str]:
    return ["export", str(ws.model), "--output", str(tmp / "q" / "model-int8.xml"), *extra]


def _int8(ws: Workspace, tmp: Path, *extra: str) -> list[str]:
    return _export(ws, tmp, "--format", "openvino", "--precision", "int8", *extra)


CLI_CASES = [
    CliCase("lowp-predict-int8-on-torch", lambda ws, t: _predict(ws, "--precision", "int8"), 2,
            "runs the int8 export on runtime='openvino' or 'onnxruntime'"),
    CliCase("lowp-predict-bf16-on-onnxruntime",
            lambda ws, t: _predict(ws, "--runtime", "onnxruntime", "--precision", "bf16"), 2,
            "use runtime='openvino'"),
    CliCase("lowp-predict-int8-without-an-openvino-export",
            lambda ws, t: _predict(ws, "--runtime", "openvino", "--precision", "int8"), 1,
            "needs its int8 openvino export at"),
    CliCase("lowp-predict-int8-without-an-onnx-export",
            lambda ws, t: _predict(ws, "--runtime", "onnxruntime", "--precision", "int8"), 1,
            "needs its int8 onnx export at"),
    CliCase("lowp-predict-int8-export-of-other-weights",
            lambda ws, t: _predict(ws, "--runtime", "openvino", "--precision", "int8", model=_with_export(ws, t)), 1,
            "was made from other weights"),
    CliCase("lowp-predict-int8-export-metadata-damaged",
            lambda ws, t: _predict(ws, "--runtime", "openvino", "--precision", "int8",
                                   model=_with_export(ws, t, sidecar=b'{"format": ')), 1,
            "not readable export metadata"),
    CliCase("lowp-predict-int8-export-is-float32",
            lambda ws, t: _predict(ws, "--runtime", "openvino", "--precision", "int8",
                                   model=_with_export(ws, t, precision="fp32")), 1,
            "not an int8 openvino export"),
    CliCase("lowp-predict-int8-export-for-the-other-runtime",
            lambda ws, t: _predict(ws, "--runtime", "openvino", "--precision", "int8",
                                   model=_with_export(ws, t, format="onnx")), 1,
            "not an int8 openvino export"),
    CliCase("lowp-serve-int8-on-torch", lambda ws, t: ["serve", str(ws.model), "--port", "0", "--precision", "int8"],
            2, "runs the int8 export on runtime='openvino' or 'onnxruntime'"),
    CliCase("lowp-export-int8-torchscript", lambda ws, t: _export(ws, t, "--format", "torchscript", "--precision",
                                                                  "int8"), 2, "TorchScript is float32"),
    CliCase("lowp-export-bf16-onnx", lambda ws, t: _export(ws, t, "--format", "onnx", "--precision", "bf16"), 2,
            "use format 'openvino'"),
    CliCase("lowp-export-int8-without-lists-or-run-config", lambda ws, t: _int8(ws, t), 2,
            "--validation is needed"),
    CliCase("lowp-export-int8-list-without-images",
            lambda ws, t: _int8(ws, t, "--calibration", str(ws.lst), "--validation", str(ws.lst)), 2,
            "needs --images"),
    CliCase("lowp-export-int8-calibration-list-missing",
            lambda ws, t: _int8(ws, t, "--calibration", str(t / "none.lst"), "--validation", str(ws.lst),
                                "--images", str(ws.images)), 1, ".lst file not found"),
    CliCase("lowp-export-int8-calibration-list-of-other-classes",
            lambda ws, t: _int8(ws, t, "--calibration", str(write_file(t / "three.lst", "0\t1\t0\t1\ta.jpg\n")),
                                "--validation", str(ws.lst), "--images", str(ws.images)), 1,
            "expected 7 columns"),
    CliCase("lowp-export-int8-calibration-size-zero",
            lambda ws, t: _int8(ws, t, "--calibration", str(ws.lst), "--validation", str(ws.lst), "--images",
                                str(ws.images), "--calibration-size", "0"), 2,
            "calibration_size must be a positive whole number"),
    CliCase("lowp-export-openvino-output-not-xml",
            lambda ws, t: ["export", str(ws.model), "--format", "openvino", "--precision", "int8", "--output",
                           str(t / "q.onnx")], 2, "an OpenVINO model is an .xml file"),
    CliCase("lowp-export-openvino-weights-file-not-an-exports",
            lambda ws, t: ["export", str(ws.model), "--format", "openvino", "--output", str(t / "q.xml")]
            if write_file(t / "q.bin", b"someone else's") else [], 2, "exists and was not written by an export"),
]

API_CASES = [
    ApiCase("lowp-api-predictor-precision-unknown", lambda ws, t: make_predictor(ws, precision="int4"), UsageError,
            "precision 'int4' is not one of fp32, int8, bf16"),
    ApiCase("lowp-api-export-format-torchscript",
            lambda ws, t: export_low_precision(ws.model, t / "x.pt", format="torchscript"), UsageError,
            "has no low-precision export"),
    ApiCase("lowp-api-export-precision-unknown",
            lambda ws, t: export_low_precision(ws.model, t / "x.xml", precision="fp16"), UsageError,
            "precision 'fp16' is not one of"),
    ApiCase("lowp-api-export-validation-of-other-classes",
            lambda ws, t: export_low_precision(
                ws.model, t / "x.xml", validation=Dataset(ws.data.paths, ws.data.labels[:, :3], list("abc"),
                                                          root=ws.images)),
            UsageError, "has 3 classes but the model has 5"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_case(case: CliCase, ws: Workspace, tmp_path: Path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_api_case(case: ApiCase, ws: Workspace, tmp_path: Path):
    check_api_case(case, ws, tmp_path)
