"""Export: the ONNX (run by onnxruntime) and TorchScript (torch.jit) files give the predictor's probabilities to
1e-4 on the synthetic images, at any batch size, and the preprocessing written beside them is all a server needs."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from multilabel_ic.cli import main
from multilabel_ic.exceptions import UsageError
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.export import export_model
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.model.predictor import LocalPredictor


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A ResNet-18 at 48 px with non-trivial BatchNorm statistics (so probabilities are not all 0 or 1)."""
    torch.manual_seed(0)
    net = ResNetV2(5, 18, (3, 48, 48))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(5.0, 50.0)
    args, aux = mxnet_state_dict(net)
    path = tmp_path_factory.mktemp("export") / "model.tar.gz"
    write_model_tar(path, {2: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                    num_classes=5, num_layers=18, image_shape=(3, 48, 48), multi_label=True)
    return path


@pytest.fixture(scope="module")
def onnx_export(artifact, tmp_path_factory):
    """The artifact exported to ONNX once (the exporter takes seconds), under umask 0o027, from an empty working
    folder: ``(folder, working folder, info, the ONNX file's bytes)``. Other tests replay its graph."""
    import contextlib
    import os

    folder, cwd = tmp_path_factory.mktemp("onnx"), tmp_path_factory.mktemp("cwd")
    old = os.umask(0o027)
    try:
        with contextlib.chdir(cwd):
            info = export_model(artifact, folder / "model.onnx")
    finally:
        os.umask(old)
    return folder, cwd, info, (folder / "model.onnx").read_bytes()


@pytest.fixture()
def replay_onnx(onnx_export, monkeypatch):
    """``_export_onnx`` gives the module's exported graph without exporting again; the list counts the calls."""
    import onnx

    from multilabel_ic.model import export

    calls: list = []
    monkeypatch.setattr(export, "_export_onnx",
                        lambda module, example: calls.append(1) or onnx.load_from_string(onnx_export[3]))
    return calls


def _served(image_bytes: bytes, pre: dict) -> np.ndarray:
    """What a server does from the sidecar's description alone, without this library."""
    _, c, h, w = pre["shape"]
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return img.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_the_predictor_on_the_synthetic_images(fmt, artifact, coco5, onnx_export, tmp_path):
    if fmt == "onnx":  # the module's export, copied ALONE: the ONNX file holds its weights
        folder, cwd, info, _ = onnx_export
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.json"]
        assert not any(cwd.iterdir())  # the exporter wrote nothing in the working folder either
        out = tmp_path / "copied-alone.onnx"
        shutil.copy(folder / "model.onnx", out)
        names = [f"class_{i}" for i in range(5)]
        meta = json.loads((folder / "model.onnx.json").read_text())
    else:
        out = tmp_path / "model.pt"
        info = export_model(artifact, out, format=fmt, class_names=list(coco5.class_names))
        names = list(coco5.class_names)
        meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert info["max_abs_diff_vs_predictor"] <= 1e-4
    assert meta["class_names"] == names and meta["activation"] == "sigmoid"
    predictor = LocalPredictor(artifact, device="cpu")
    images = [coco5.image_path(i).read_bytes() for i in range(10)]
    expected = np.asarray(predictor.predict_batch(images))
    assert 0.01 < expected.mean() < 0.99 and expected.std() > 1e-3  # informative probabilities
    batch = np.concatenate([_served(b, meta["preprocessing"]) for b in images])  # batch of 10 (exported with 2)
    if fmt == "onnx":
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"data": batch})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out)).eval()(torch.from_numpy(batch)).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_cli_export_and_model_export(artifact, coco5, tmp_path, capsys, replay_onnx):
    target = tmp_path / "cli" / "m.onnx"
    for _ in range(2):  # the second replaces the first's files
        assert main(["--quiet", "export", str(artifact), "--format", "onnx", "--output", str(target)]) == 0
        assert target.is_file() and "max |diff| vs the predictor" in capsys.readouterr().out
        assert sorted(p.name for p in target.parent.iterdir()) == ["m.onnx", "m.onnx.json"]
    assert main(["--quiet", "export", str(tmp_path / "missing.tar.gz")]) == 1
    assert "error:" in capsys.readouterr().err
    from multilabel_ic import Hyperparameters
    from multilabel_ic.backends.base import Model

    hp = Hyperparameters(num_classes=5, num_training_samples=100, image_shape="3,48,48")
    model = Model(hyperparameters=hp, class_names=list(coco5.class_names), metrics={}, artifact=str(artifact),
                  local_artifact=artifact)
    info = model.export(tmp_path / "api.pt", format="torchscript")
    assert info["class_names"] == list(coco5.class_names) and (tmp_path / "api.pt").is_file()
    with pytest.raises(UsageError, match="not one of onnx, torchscript"):
        model.export(tmp_path / "x.bin", format="tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.pt", "api.pt.json", "cli"]  # nothing else, no temp


def test_predictor_runtimes_give_the_same_probabilities(artifact, coco5, replay_onnx):
    """The first version's predictor (serial decode, NCHW eager), the default (threaded decode, channels-last,
    inference mode), the onnxruntime runtime and the OpenVINO runtime answer the same batch, in order, to 1e-4."""
    images = [coco5.image_path(i).read_bytes() for i in range(12)]
    first = LocalPredictor(artifact, device="cpu", decode_threads=1, channels_last=False, batch_size=5)
    want = np.asarray(first.predict_batch(images))
    default = LocalPredictor(artifact, device="cpu", decode_threads=3, batch_size=5)
    assert default.decode_threads == 3 and default.channels_last
    ort_predictor = LocalPredictor(artifact, device="cpu", runtime="onnxruntime", batch_size=5)
    ov_predictor = LocalPredictor(artifact, device="cpu", runtime="openvino", batch_size=5)
    assert ov_predictor._runner is not None and default._runner is None
    for predictor in (default, ort_predictor, ov_predictor):
        got = np.asarray(predictor.predict_batch(images))
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
        assert np.abs(np.asarray(predictor.predict(images[7])) - want[7]).max() <= 1e-4
        predictor.close()
    with pytest.raises(UsageError, match="runtime 'tensorrt' is not one of torch, onnxruntime, openvino"):
        LocalPredictor(artifact, device="cpu", runtime="tensorrt")


def test_openvino_runtime_takes_the_decoded_images_and_is_checked(artifact, monkeypatch, tmp_path):
    """The OpenVINO model is fed uint8 N x H x W x C as decoded, runs in float32, and a model that drifts from the
    PyTorch network is refused; without the package the error names the extra; it runs on the CPU only."""
    import sys

    import openvino

    from multilabel_ic.exceptions import ArtifactError, MissingDependencyError
    from multilabel_ic.model import openvino_runtime, runtime_cache

    torch_predictor = LocalPredictor(artifact, device="cpu")
    converted = []
    convert = openvino_runtime._convert
    monkeypatch.setattr(openvino_runtime, "_convert", lambda *a: converted.append(1) or convert(*a))
    run, diff = openvino_runtime.openvino_runner(torch_predictor.model, softmax=False, image_shape=(3, 48, 48),
                                                 cache=tmp_path / "ov.cache")
    assert converted == [1]
    assert 0 <= diff <= 1e-4
    images = np.random.default_rng(3).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        want = torch.sigmoid(torch_predictor.model(x)).numpy()
    got = run(images)
    assert got.dtype == np.float32 and got.shape == (4, 5) and np.abs(got - want).max() <= 1e-4
    monkeypatch.setattr("multilabel_ic.model.export.TOLERANCE", 0.0)
    cached = runtime_cache._decode((tmp_path / "ov.cache").read_bytes(), runtime_cache.network_key(
        torch_predictor.model, runtime="openvino", version=openvino.__version__, image_shape=[3, 48, 48],
        softmax=False, input="uint8 NHWC"))
    assert isinstance(cached, dict)
    monkeypatch.setattr(openvino_runtime, "_convert", lambda *a: converted.append(1) or cached)
    with pytest.raises(ArtifactError, match="OpenVINO model differs .* use runtime='torch'"):
        openvino_runtime.openvino_runner(torch_predictor.model, softmax=False, image_shape=(3, 48, 48),
                                         cache=tmp_path / "ov.cache")
    assert converted == [1, 1]  # the cached model disagrees: converted again, which disagrees too: refused
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'multilabel-ic\[openvino\]'"):
        LocalPredictor(artifact, device="cpu", runtime="openvino")
    with pytest.raises(UsageError, match="runs on the CPU"):
        LocalPredictor(artifact, device="meta", runtime="openvino")


def test_a_bad_image_in_a_threaded_batch_is_named(artifact, coco5):
    from multilabel_ic.exceptions import ImageDecodeError

    predictor = LocalPredictor(artifact, device="cpu", decode_threads=2)
    images = [coco5.image_path(0).read_bytes(), b"not an image", coco5.image_path(1).read_bytes()]
    with pytest.raises(ImageDecodeError, match="holiday.jpg: not a decodable image"):
        predictor.predict_batch(images, sources=["a.jpg", "holiday.jpg", "c.jpg"])


def test_compiled_predictor_gives_the_same_probabilities(artifact, coco5):
    """LocalPredictor(compile=True) runs the network through torch.compile (a compile error raises)."""
    import torch._dynamo

    images = [coco5.image_path(i).read_bytes() for i in range(6)]
    want = np.asarray(LocalPredictor(artifact, device="cpu").predict_batch(images))
    compiled = LocalPredictor(artifact, device="cpu", compile=True)
    torch._dynamo.reset()
    got = np.asarray(compiled.predict_batch(images))
    assert np.abs(got - want).max() <= 1e-4
    assert compiled._network is not compiled.model  # the compiled module ran, not the eager one
