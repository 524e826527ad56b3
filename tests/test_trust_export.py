"""Export and the predictor's CPU runtimes keep their promises: an ONNX file is one self-contained file that loads
when copied alone; a re-export leaves exactly the export's files (no hidden weights, no temporary file of any name);
every file gets the permissions of any other output under any umask; and a converted runtime model is cached beside
the artifact, reused, and rebuilt with a warning when damaged or stale, or converted in memory where it cannot be
written. The ONNX graph is made once per module (``_export_onnx`` is slow) and replayed where a test needs another."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from multilabel_ic import ArtifactError, UsageError
from multilabel_ic._io import output_error
from multilabel_ic.cli import main
from multilabel_ic.model import export, openvino_runtime, runtime_cache
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.export import export_model, wrapped_with_activation
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.model.predictor import LocalPredictor

UMASKS = {0o027: 0o640, 0o002: 0o664}  # neither gives mkstemp's 0o600


def _write_artifact(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = ResNetV2(5, 20, (3, 28, 28))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(5.0, 50.0)
    args, aux = mxnet_state_dict(net)
    return write_model_tar(path, {1: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                           num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder exported as an earlier version left it (a hidden weights file), then exported again: ONNX under
    two umasks (the first export for real, from an empty working folder), TorchScript under two umasks. Records the
    folder's listing and the files' modes after each export."""
    root = tmp_path_factory.mktemp("trust-export")
    folder = root / "run"
    artifact = _write_artifact(folder / "model.tar.gz")
    (folder / ".model.onnx.k2j4h1x0.tmp.data").write_bytes(b"\0" * 4096)  # an earlier version's orphan
    cwd = root / "cwd"
    cwd.mkdir()
    record: dict = {"artifact": artifact, "folder": folder, "cwd": cwd, "listings": [], "modes": []}
    with _umask(0o027), contextlib.chdir(cwd):
        record["info"] = export_model(artifact, folder / "model.onnx")
    record["proto"] = (folder / "model.onnx").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "_export_onnx", lambda module, example: onnx.load_from_string(record["proto"]))
        for step, (mask, fmt, name) in enumerate([(0o027, "onnx", None), (0o002, "onnx", "model.onnx"),
                                                   (0o027, "torchscript", "model.pt"),
                                                   (0o002, "torchscript", "model.pt")]):
            if step:
                with _umask(mask):
                    export_model(artifact, folder / name, format=fmt)
            if step == 2:  # traced once; the second replays it
                record["torchscript"] = (folder / "model.pt").read_bytes()
                mp.setattr(export, "_export_torchscript", lambda module, example: record["torchscript"])
            record["listings"].append(_listing(folder))
            out = folder / ("model.onnx" if fmt == "onnx" else "model.pt")
            record["modes"].append((mask, {p.name: _mode(p) for p in (out, out.with_name(out.name + ".json"))}))
    return record


def _net(artifact: Path):
    return LocalPredictor(artifact, device="cpu", channels_last=False).model


def test_the_onnx_file_holds_its_weights_and_runs_when_copied_alone(run, tmp_path):
    alone = tmp_path / "elsewhere" / "renamed.onnx"
    alone.parent.mkdir()
    shutil.copy(run["folder"] / "model.onnx", alone)
    model = onnx.load(str(alone))  # raises if a weights file were missing
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
    assert alone.stat().st_size > 0.9 * (run["artifact"].parent / "model.tar.gz").stat().st_size
    batch = np.random.default_rng(1).uniform(0, 255, (3, 3, 28, 28)).astype(np.float32)
    got = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"]).run(None, {"data": batch})[0]
    with torch.no_grad():
        want = wrapped_with_activation(_net(run["artifact"]), False)(torch.from_numpy(batch)).numpy()
    assert got.shape == (3, 5) and np.abs(got - want).max() <= 1e-4


def test_exports_and_reexports_leave_exactly_the_export_files(run):
    """No hidden file, no weights file, no temporary file of any name; an earlier version's orphaned weights are
    removed; torch writes nothing in the working folder."""
    onnx_files = ["model.onnx", "model.onnx.json", "model.tar.gz"]
    assert run["listings"] == [onnx_files, onnx_files, sorted([*onnx_files, "model.pt", "model.pt.json"]),
                               sorted([*onnx_files, "model.pt", "model.pt.json"])]
    assert _listing(run["cwd"]) == []
    assert "external_data" not in json.loads((run["folder"] / "model.onnx.json").read_text())


def test_every_exported_file_gets_the_umask_permissions(run):
    assert [mask for mask, _ in run["modes"]] == [0o027, 0o002, 0o027, 0o002]
    for mask, modes in run["modes"]:
        assert set(modes.values()) == {UMASKS[mask]}, (oct(mask), {k: oct(v) for k, v in modes.items()})


def test_a_network_past_protobufs_limit_keeps_its_weights_beside_it_under_a_stable_name(run, tmp_path, monkeypatch,
                                                                                          caplog):
    monkeypatch.setattr(export, "_export_onnx", lambda module, example: onnx.load_from_string(run["proto"]))
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 1000)
    folder = tmp_path / "big"
    for mask in UMASKS:  # twice: the second replaces the first's files
        with _umask(mask):
            info = export_model(run["artifact"], folder / "model.onnx")
        assert _listing(folder) == ["model.onnx", "model.onnx.data", "model.onnx.json"]
        assert {_mode(p) for p in folder.iterdir()} == {UMASKS[mask]}
    assert info["external_data"] == "model.onnx.data"
    assert json.loads((folder / "model.onnx.json").read_text())["external_data"] == "model.onnx.data"
    assert any("copy both files together" in r.getMessage() for r in caplog.records)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(folder / name, copy / name)
    batch = np.zeros((2, 3, 28, 28), np.float32)
    assert ort.InferenceSession(str(copy / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"data": batch})[0].shape == (2, 5)
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 2**31 - 1)  # exported again, small: the weights file goes
    export_model(run["artifact"], folder / "model.onnx")
    assert _listing(folder) == ["model.onnx", "model.onnx.json"]
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 1000)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "m.onnx.data").write_bytes(b"someone's data")
    with pytest.raises(UsageError, match=r"m.onnx.data exists and was not written by an export"):
        export_model(run["artifact"], tmp_path / "other" / "m.onnx")
    assert _listing(tmp_path / "other") == ["m.onnx.data"]


def test_a_failed_export_leaves_nothing_behind(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_export_onnx", lambda module, example: onnx.load_from_string(run["proto"]))
    monkeypatch.setattr(export, "_export_torchscript", lambda module, example: run["torchscript"])
    for name in ("_run_onnx", "_run_torchscript"):  # an exported model that drifts from the network
        monkeypatch.setattr(export, name, lambda model, batch, run=getattr(export, name): run(model, batch) + 1e-3)
    folder = tmp_path / "new" / "sub"
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(ArtifactError, match="nothing was written"):
            export_model(run["artifact"], folder / "m.bin", format=fmt)
    assert _listing(tmp_path) == []  # not even the folder


def test_a_dangling_symlink_is_not_replaced(run, tmp_path):
    (tmp_path / "d.onnx").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="d.onnx exists and was not written by an export"):
        export_model(run["artifact"], tmp_path / "d.onnx")
    assert (tmp_path / "d.onnx").is_symlink()


# --------------------------------------------------------------------------------------------- the runtime cache


def _images(n: int = 4) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(5)
    return [cv2.imencode(".png", rng.integers(0, 256, (30 + i, 28, 3), dtype=np.uint8))[1].tobytes() for i in range(n)]


def _copy_artifact(run, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(run["artifact"], folder / "model.tar.gz"))


def test_the_openvino_model_is_cached_beside_the_artifact_reused_and_rebuilt_when_damaged(run, tmp_path,
                                                                                          monkeypatch, caplog):
    artifact = _copy_artifact(run, tmp_path / "ov")
    cache = tmp_path / "ov" / "model.tar.gz.openvino.cache"
    want = np.asarray(LocalPredictor(artifact, device="cpu").predict_batch(_images()))
    with _umask(0o027):
        first = LocalPredictor(artifact, device="cpu", runtime="openvino")
    assert _listing(tmp_path / "ov") == ["model.tar.gz", cache.name] and _mode(cache) == 0o640
    good = cache.read_bytes()
    parts = runtime_cache._decode(good, json.loads(good.split(b"\n")[1])["key"])
    assert isinstance(parts, dict) and set(parts) == {"xml", "bin"}
    monkeypatch.setattr(openvino_runtime, "_convert", lambda *a: pytest.fail("converted although cached"))
    second = LocalPredictor(artifact, device="cpu", runtime="openvino")
    for predictor in (first, second):
        assert np.abs(np.asarray(predictor.predict_batch(_images())) - want).max() <= 1e-4
    cache.write_bytes(good[:-50] + bytes(b ^ 0x55 for b in good[-50:]))  # bit rot in the weights
    converted = []
    monkeypatch.setattr(openvino_runtime, "_convert", lambda *a: converted.append(1) or dict(parts))
    caplog.clear()
    with _umask(0o002):
        third = LocalPredictor(artifact, device="cpu", runtime="openvino")
    assert converted == [1] and cache.read_bytes() == good and _mode(cache) == 0o664
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "damaged" in warnings[0]
    assert np.abs(np.asarray(third.predict_batch(_images())) - want).max() <= 1e-4
    assert _listing(tmp_path / "ov") == ["model.tar.gz", cache.name]


def _replay_onnx(run, monkeypatch, calls: list) -> None:
    monkeypatch.setattr(export, "_export_onnx",
                        lambda module, example: calls.append(1) or onnx.load_from_string(run["proto"]))


def test_the_onnxruntime_graph_is_cached_and_the_cli_reuses_it(run, tmp_path, monkeypatch, capsys):
    artifact = _copy_artifact(run, tmp_path / "ort")
    image = tmp_path / "a.png"
    image.write_bytes(_images(1)[0])
    calls: list = []
    _replay_onnx(run, monkeypatch, calls)
    argv = ["predict", "--model", str(artifact), "--runtime", "onnxruntime", "--jsonlines", str(image)]
    assert main(argv) == 0 and calls == [1]
    first = capsys.readouterr().out
    assert main(argv) == 0 and calls == [1]  # the second call converted nothing
    assert capsys.readouterr().out == first
    assert _listing(tmp_path / "ort") == ["model.tar.gz", "model.tar.gz.onnxruntime.cache"]
    assert main([*argv[:-1], "--quiet", str(image)]) == 0 and calls == [1]
    LocalPredictor(artifact, device="cpu", runtime="onnxruntime", runtime_cache=False)
    assert calls == [1, 1]  # runtime_cache=False converts in memory


def test_an_artifact_folder_that_cannot_be_written_converts_in_memory(run, tmp_path, monkeypatch, caplog):
    artifact = _copy_artifact(run, tmp_path / "ro")
    calls: list = []
    _replay_onnx(run, monkeypatch, calls)

    def read_only(path, mode="wb"):
        raise output_error(path, OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(runtime_cache, "atomic_write", read_only)
    for _ in range(2):
        predictor = LocalPredictor(artifact, device="cpu", runtime="onnxruntime")
        assert len(predictor.predict_batch(_images(2))) == 2
    assert calls == [1, 1] and _listing(tmp_path / "ro") == ["model.tar.gz"]
    assert any("is not cached" in r.getMessage() and "Read-only" in r.getMessage() for r in caplog.records)


def test_a_cached_model_that_disagrees_with_the_network_is_rebuilt_and_a_fresh_one_is_refused(tmp_path, caplog):
    path = tmp_path / "m.cache"
    key = {"k": 1}
    runtime_cache.load_or_build(path, key, lambda: {"p": b"old"}, lambda parts: parts["p"], what="x")
    assert path.is_file()

    def use(parts):
        if parts["p"] != b"new":
            raise ArtifactError("differs from the PyTorch network")
        return parts["p"]

    assert runtime_cache.load_or_build(path, key, lambda: {"p": b"new"}, use, what="x") == b"new"
    assert "does not load or agree (differs from the PyTorch network)" in caplog.text
    before = path.read_bytes()
    with pytest.raises(ArtifactError):  # a fresh conversion that disagrees is an error, and is not cached
        runtime_cache.load_or_build(path, {"k": 2}, lambda: {"p": b"bad"}, use, what="x")
    assert path.read_bytes() == before


def test_the_cache_key_follows_everything_that_changes_the_converted_model(run):
    net = _net(run["artifact"])
    base = dict(runtime="openvino", version="1", image_shape=[3, 28, 28], softmax=False, input="uint8 NHWC")
    key = runtime_cache.network_key(net, **base)
    assert runtime_cache.network_key(_net(run["artifact"]), **base) == key  # the same weights, read again
    assert runtime_cache.network_key(net.to(memory_format=torch.channels_last), **base) == key
    keys = [runtime_cache.network_key(net, **{**base, name: value})
            for name, value in [("version", "2"), ("image_shape", [3, 32, 32]), ("softmax", True),
                                ("runtime", "onnxruntime")]]
    with torch.no_grad():
        weight = net.fc1.weight.view(-1)
        saved = weight[7].clone()
        weight[7] = torch.nextafter(saved, torch.tensor(float("inf")))  # one weight, one ulp
        keys.append(runtime_cache.network_key(net, **base))
        weight[7] = saved
        net.bn1.running_var[0] += 1  # a statistic, not a parameter
        keys.append(runtime_cache.network_key(net, **base))
    assert len({json.dumps(k, sort_keys=True) for k in [key, *keys]}) == 1 + len(keys)
