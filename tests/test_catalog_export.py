"""The failure catalog's export cases: every output an export must not write (the artifact and its metadata by any
name, a run's other files, folders, files an earlier export did not write) is refused in one line before any work,
and a damaged or stale runtime cache of any kind is rebuilt with a warning, never used and never an error."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from catalog_support import (
    ApiCase,
    CliCase,
    Workspace,
    check_api_case,
    check_cli_case,
    json_values,
    with_metadata,
    write_file,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from multilabel_ic import OutputError, UsageError
from multilabel_ic.model import runtime_cache
from multilabel_ic.model.export import export_model


def _export(ws: Workspace, output: str | Path, *extra: str, model: Path | None = None) -> list[str]:
    return ["export", str(model or ws.model), "--output", str(output), *extra]


def _run_folder(ws: Workspace, tmp: Path) -> Path:
    """A copy of a finished run's folder: the artifact, its metadata, metrics and a checkpoint."""
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ws.model, run / "model.tar.gz")
    write_file(run / "model-metadata.json", json.dumps({"class_names": ["a", "b", "c", "d", "e"]}))
    write_file(run / "metrics.json", "{}")
    write_file(run / "checkpoints" / "last.pt", b"checkpoint")
    return run


def _symlink(tmp: Path, name: str, target: Path) -> Path:
    (tmp / name).symlink_to(target)
    return tmp / name


def _hard_link(tmp: Path, name: str, target: Path) -> Path:
    os.link(target, tmp / name)
    return tmp / name


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _run(ws: Workspace, tmp: Path, name: str, *extra: str) -> list[str]:
    run = _run_folder(ws, tmp)
    return _export(ws, run / name, *extra, model=run / "model.tar.gz")


CLI_CASES = [
    CliCase("export-output-is-the-artifact", lambda ws, t: _export(ws, ws.model), 2,
            "is the artifact being exported"),
    CliCase("export-output-is-the-artifact-by-a-symlink",
            lambda ws, t: _export(ws, _symlink(t, "link.onnx", ws.model)), 2, "is the artifact being exported"),
    CliCase("export-output-is-the-artifact-by-a-hard-link",
            lambda ws, t: _export(ws, _hard_link(t, "hard.onnx", ws.model)), 2, "is the artifact being exported"),
    CliCase("export-output-is-the-artifact-by-a-relative-path",
            lambda ws, t: _export(ws, os.path.relpath(ws.model)), 2, "is the artifact being exported"),
    CliCase("export-output-is-the-artifact-through-dotdot",
            lambda ws, t: _export(ws, ws.model.parent / ".." / ws.model.parent.name / ws.model.name), 2,
            "is the artifact being exported"),
    CliCase("export-output-is-the-artifacts-metadata",
            lambda ws, t: _export(ws, t / "m" / "model-metadata.json", model=with_metadata(ws, t, b"{}")), 2,
            "is the model-metadata.json of the artifact being exported"),
    CliCase("export-output-metadata-would-replace-the-artifacts-metadata",
            lambda ws, t: _export(ws, t / "m" / "model-metadata", model=with_metadata(ws, t, b"{}")), 2,
            "is the model-metadata.json of the artifact being exported"),
    CliCase("export-output-metadata-would-replace-the-runs-metrics",
            lambda ws, t: _run(ws, t, "metrics"), 2, "metrics.json exists and was not written by an export"),
    CliCase("export-output-is-the-runs-checkpoint",
            lambda ws, t: _run(ws, t, "checkpoints/last.pt", "--format", "torchscript"), 2,
            "last.pt exists and was not written by an export"),
    CliCase("export-output-is-another-runs-artifact",
            lambda ws, t: _export(ws, _run_folder(ws, t) / "model.tar.gz"), 2,
            "model.tar.gz exists and was not written by an export"),
    CliCase("export-output-is-an-unrelated-file",
            lambda ws, t: _export(ws, write_file(t / "notes.txt", "keep me")), 2,
            "notes.txt exists and was not written by an export"),
    CliCase("export-output-is-a-model-without-its-export-metadata",
            lambda ws, t: _export(ws, write_file(t / "other.onnx", b"onnx from elsewhere")), 2,
            "other.onnx exists and was not written by an export"),
    CliCase("export-output-metadata-is-not-an-exports",
            lambda ws, t: (write_file(t / "x.onnx", b"x"), write_file(t / "x.onnx.json", '{"format": "onnx"}'),
                           _export(ws, t / "x.onnx"))[-1], 2, "x.onnx exists and was not written by an export"),
    CliCase("export-output-is-a-symlink-to-another-file",
            lambda ws, t: _export(ws, _symlink(t, "l.onnx", write_file(t / "data.bin", b"1"))), 2,
            "l.onnx exists and was not written by an export"),
    CliCase("export-output-is-a-symlink-to-a-folder",
            lambda ws, t: _export(ws, _symlink(t, "to-dir.onnx", _mkdir(t / "d"))), 2, "is an existing folder"),
    CliCase("export-output-is-an-existing-folder", lambda ws, t: _export(ws, _mkdir(t / "exports")), 2,
            "is an existing folder; name the file to write, e.g."),
    CliCase("export-output-is-the-artifacts-folder", lambda ws, t: _export(ws, ws.model.parent), 2,
            "is an existing folder"),
    CliCase("export-output-ends-in-a-separator", lambda ws, t: _export(ws, f"{t / 'new'}{os.sep}"), 2,
            "ends in a path separator, so it names a folder"),
    CliCase("export-output-metadata-path-is-a-folder",
            lambda ws, t: (_mkdir(t / "y.onnx.json"), _export(ws, t / "y.onnx"))[-1], 2,
            "y.onnx.json is a folder, which the export would replace"),
    CliCase("export-output-folder-is-a-file",
            lambda ws, t: _export(ws, write_file(t / "afile", "x") / "sub" / "m.onnx"), 1,
            "is a file, not a folder"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


def _model_export(ws: Workspace, path: Path, format: str = "onnx"):
    from multilabel_ic import Hyperparameters
    from multilabel_ic.backends.base import Model

    hp = Hyperparameters(num_classes=5, num_training_samples=100, image_shape="3,28,28", num_layers=20)
    return Model(hyperparameters=hp, class_names=list("abcde"), metrics={}, artifact=str(ws.model),
                 local_artifact=ws.model).export(path, format=format)


API_CASES = [
    ApiCase("export-api-output-is-the-artifact", lambda ws, t: export_model(ws.model, ws.model), UsageError,
            "is the artifact being exported"),
    ApiCase("export-api-model-export-to-an-existing-folder", lambda ws, t: _model_export(ws, _mkdir(t / "out")),
            UsageError, "is an existing folder"),
    ApiCase("export-api-torchscript-over-another-runs-metadata",
            lambda ws, t: export_model(ws.model, _run_folder(ws, t) / "model-metadata", format="torchscript"),
            UsageError, "model-metadata.json exists and was not written by an export"),
    ApiCase("export-api-folder-is-a-file", lambda ws, t: export_model(ws.model, write_file(t / "f", "") / "m.onnx"),
            OutputError, "is a file, not a folder"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path, inputs={"run", "run/checkpoints", "run/checkpoints/last.pt", "run/model.tar.gz",
                                               "run/model-metadata.json", "run/metrics.json", "out", "f"})


# --------------------------------------------------------------------------------------------- the runtime cache

KEY = {"weights_sha256": "ab" * 32, "runtime": "openvino", "version": "1"}
PARTS = {"xml": b"<net/>", "bin": bytes(range(256)) * 4}


def _good() -> bytes:
    return runtime_cache._encode(KEY, PARTS)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


def _header(header) -> bytes:
    return runtime_cache.MAGIC + json.dumps(header).encode() + b"\n" + b"".join(PARTS.values())


def _fifo(path: Path) -> None:
    os.mkfifo(path)


DAMAGED = {  # id: a maker of what is at the cache's path, and a word of the warning
    "export-cache-empty": (lambda p: p.write_bytes(b""), "damaged"),
    "export-cache-truncated": (lambda p: p.write_bytes(_good()[:-10]), "truncated"),
    "export-cache-longer": (lambda p: p.write_bytes(_good() + b"x"), "wrong size"),
    "export-cache-flipped-weight-byte": (lambda p: p.write_bytes(_flip(_good(), len(_good()) - 100)), "checksum"),
    "export-cache-flipped-header-byte": (lambda p: p.write_bytes(_flip(_good(), len(runtime_cache.MAGIC) + 3)),
                                         "header"),
    "export-cache-other-file": (lambda p: p.write_bytes(b"PK\x03\x04 not a cache"), "not a runtime cache"),
    "export-cache-header-not-an-object": (lambda p: p.write_bytes(_header([1, 2])), "header"),
    "export-cache-parts-of-wrong-types": (lambda p: p.write_bytes(_header({"key": KEY, "parts": [["xml", "6", 1]]})),
                                          "header"),
    "export-cache-negative-size": (lambda p: p.write_bytes(_header({"key": KEY, "parts": [["xml", -6, "0"]]})),
                                   "header"),
    "export-cache-part-missing": (lambda p: p.write_bytes(runtime_cache._encode(KEY, {"xml": PARTS["xml"]})),
                                  "does not load"),
    "export-cache-stale-weights": (lambda p: p.write_bytes(runtime_cache._encode({**KEY, "weights_sha256": "0"},
                                                                                 PARTS)), "stale"),
    "export-cache-stale-version": (lambda p: p.write_bytes(runtime_cache._encode({**KEY, "version": "0"}, PARTS)),
                                   "stale: made for other version"),
    "export-cache-key-of-wrong-type": (lambda p: p.write_bytes(_header({"key": [1], "parts": []})), "stale"),
    "export-cache-is-a-fifo": (_fifo, "named pipe"),
    "export-cache-is-a-folder": (lambda p: p.mkdir(), "folder"),
    "export-cache-is-a-device": (lambda p: p.symlink_to("/dev/zero"), "character device"),
}


@pytest.mark.parametrize("case", list(DAMAGED), ids=list(DAMAGED))
def test_a_damaged_or_stale_runtime_cache_is_rebuilt_with_a_warning(case, tmp_path, caplog):
    make, word = DAMAGED[case]
    path = tmp_path / "model.tar.gz.openvino.cache"
    make(path)
    built = []

    def build():
        built.append(1)
        return dict(PARTS)

    def use(parts):
        return parts["xml"] + parts["bin"]

    caplog.clear()
    assert runtime_cache.load_or_build(path, KEY, build, use, what="OpenVINO model") == PARTS["xml"] + PARTS["bin"]
    assert built == [1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and word in warnings[0], warnings
    assert "converting it again" in warnings[0]
    if path.is_file() and not path.is_symlink():  # replaced by a good cache, used by the next call
        assert runtime_cache.load_or_build(path, KEY, lambda: pytest.fail("rebuilt"), use, what="x") == use(PARTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


_headers = st.fixed_dictionaries({"key": json_values | st.just(KEY), "parts": json_values | st.lists(
    st.tuples(st.sampled_from(["xml", "bin", ""]), st.integers(-2, 2000) | json_values, json_values).map(list),
    max_size=3)})


@settings(max_examples=50, deadline=None)
@given(blob=st.binary(max_size=200) | st.builds(lambda h: runtime_cache.MAGIC + h, st.binary(max_size=200))
       | st.builds(lambda h, tail: runtime_cache.MAGIC + json.dumps(h).encode() + b"\n" + tail,
                   _headers | json_values, st.binary(max_size=64)))
def test_fuzz_the_runtime_cache_reader(blob):
    """Any bytes read as a cache (any header of any types and sizes) give its parts or a reason, never an
    exception."""
    got = runtime_cache._decode(blob, KEY)
    assert isinstance(got, (dict, str))
