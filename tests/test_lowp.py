"""The low-precision predictor: int8 exports (NNCF for OpenVINO, onnxruntime.quantization for ONNX Runtime) held to
the accuracy gate, the predictor's ``precision`` choice, and bfloat16 only where the CPU has the instructions.

One tiny network (ResNet-20 at 28 px, BatchNorm statistics as a trained one's so probabilities spread) and the
catalog workspace's 24 images; each quantization runs once per module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from catalog_support import CLASSES, file_tree

from multilabel_ic import AccuracyGateError, Dataset, Hyperparameters, UsageError
from multilabel_ic.bench.local import trained_like_network
from multilabel_ic.cli import main
from multilabel_ic.model import cpu_flags
from multilabel_ic.model.accuracy_gate import AGREEMENT_LIMIT, CLASS_AP_LIMIT, MAP_LIMIT, accuracy_gate
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.export_lowp import export_low_precision
from multilabel_ic.model.metadata import write_metadata
from multilabel_ic.model.network import mxnet_state_dict
from multilabel_ic.model.predictor import LocalPredictor

NAMES = CLASSES.split(",")


@pytest.fixture(scope="module")
def run(tmp_path_factory, ws) -> Path:
    """A run folder as `multilabel-ic train` leaves it: the artifact, its metadata (tuned thresholds) and a
    run-config.json that names the workspace's .lst as the train and the validation list."""
    folder = tmp_path_factory.mktemp("lowp") / "run"
    hp = Hyperparameters(num_classes=5, num_training_samples=24, mini_batch_size=8, num_layers=20,
                         image_shape="3,28,28")
    args, aux = mxnet_state_dict(trained_like_network(hp))
    artifact = write_model_tar(folder / "model.tar.gz", {1: ({k: v.numpy() for k, v in args.items()},
                                                             {k: v.numpy() for k, v in aux.items()})},
                               num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)
    write_metadata(artifact, class_names=NAMES, hyperparameters=hp.to_sagemaker(), thresholds=[0.4] * 5)
    (folder / "run-config.json").write_text(json.dumps({"data": {"train_lst": str(ws.lst), "images": str(ws.images),
                                                                 "validation_lst": str(ws.lst)}}))
    return artifact


@pytest.fixture(scope="module")
def int8_openvino(run) -> dict:
    """The default int8 export: OpenVINO, calibrated and gated on the run's own lists (from run-config.json)."""
    return export_low_precision(run, format="openvino", precision="int8")


def _planted(folder: Path, ws, make) -> Path:
    """A calibration list of the workspace's paths and labels whose images are ``make()``: a bad calibration."""
    import cv2

    for rel in ws.data.paths:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / rel), make())
    return Dataset(ws.data.paths, ws.data.labels, NAMES, root=folder).to_lst(folder / "planted.lst")


@pytest.fixture(scope="module")
def blank(tmp_path_factory, ws) -> Path:
    """24 blank (white) images."""
    return _planted(tmp_path_factory.mktemp("blank"), ws, lambda: np.full((40, 40, 3), 255, np.uint8))


@pytest.fixture(scope="module")
def dark(tmp_path_factory, ws) -> Path:
    """24 near-black noise images (0-7): the activation ranges of a tiny corner of the input."""
    rng = np.random.default_rng(0)
    return _planted(tmp_path_factory.mktemp("dark"), ws, lambda: rng.integers(0, 8, (40, 40, 3)).astype(np.uint8))


def test_int8_export_writes_model_and_metadata_from_the_runs_lists(run, int8_openvino, ws):
    out = run.with_name("model-int8.xml")
    assert int8_openvino["model"] == str(out) and out.is_file() and out.with_suffix(".bin").is_file()
    meta = json.loads(out.with_name("model-int8.xml.json").read_text())
    assert meta["precision"] == "int8" and meta["format"] == "openvino"
    assert meta["calibration"]["source"] == str(ws.lst) and meta["calibration"]["images"] == len(ws.data)
    assert meta["quantization"]["tool"] == "nncf" and meta["quantization"]["version"]
    gate = meta["accuracy_gate"]
    assert gate["validation"] == str(ws.lst) and gate["images"] == len(ws.data) and gate["thresholds"] == "tuned"
    assert gate["passed"] and abs(gate["mAP_delta"]) <= MAP_LIMIT and gate["max_abs_class_AP_delta"] <= CLASS_AP_LIMIT
    assert gate["decision_agreement"] >= AGREEMENT_LIMIT
    assert meta["accepted_accuracy_loss"] is False
    # the model runs in int8: NNCF put FakeQuantize operations in front of the convolutions
    assert out.read_text().count('type="FakeQuantize"') >= 19
    # ... except the classifier, kept in float32 and named in the metadata
    kept = meta["quantization"]["float32_layers"]
    assert list(kept) == ["classifier"]
    inputs = _producers(out)
    assert all(types[0] == "FakeQuantize" for kind, types in inputs.values() if kind == "Convolution")
    assert inputs[kept["classifier"]][0] == "MatMul" and "FakeQuantize" not in inputs[kept["classifier"]][1]


def _producers(xml: Path) -> dict[str, tuple[str, list[str]]]:
    """Each multiply-add operation of an OpenVINO IR by name: its type and the types of the operations feeding it
    (data first, then the weights' path)."""
    import openvino as ov

    found = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            found[op.get_friendly_name()] = (op.get_type_name(), [op.input_value(i).get_node().get_type_name()
                                                                  for i in range(op.get_input_size())])
    return found


def test_int8_predictor_and_cli_use_the_export(run, int8_openvino, ws, capsys):
    images = [(ws.images / p).read_bytes() for p in ws.data.paths]
    fp32 = np.array(LocalPredictor(run, device="cpu").predict_batch(images))
    int8 = LocalPredictor(run, runtime="openvino", precision="int8", device="cpu")
    got = np.array(int8.predict_batch(images))
    assert int8.precision == "int8" and got.shape == fp32.shape
    assert np.abs(got - fp32).max() > 1e-4  # the quantized model, not the float32 one ...
    agreement = np.mean((got >= 0.4) == (fp32 >= 0.4))  # ... whose decisions the gate measured on these images
    assert agreement == pytest.approx(int8_openvino["accuracy_gate"]["decision_agreement"], abs=1e-9)
    assert main(["predict", "--model", str(run), "--runtime", "openvino", "--precision", "int8", "--jsonlines",
                 str(ws.jpeg)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    np.testing.assert_allclose(line["prediction"], got[0], atol=1e-6)


def test_int8_export_of_other_weights_is_refused(run, int8_openvino, tmp_path):
    """A run retrained after the export (other weights under the same name) does not silently use the old model."""
    other = tmp_path / "model.tar.gz"
    hp = Hyperparameters(num_classes=5, num_training_samples=24, mini_batch_size=8, num_layers=20,
                         image_shape="3,28,28")
    args, aux = mxnet_state_dict(trained_like_network(hp, seed=1))
    write_model_tar(other, {1: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                    num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)
    for suffix in (".xml", ".bin", ".xml.json"):
        shutil.copy(run.with_name("model-int8" + suffix), tmp_path / ("model-int8" + suffix))
    with pytest.raises(Exception, match="made from other weights") as e:
        LocalPredictor(other, runtime="openvino", precision="int8", device="cpu")
    assert "--precision int8" in str(e.value)


def test_gate_refuses_a_badly_calibrated_model_and_leaves_no_file(run, blank, ws, tmp_path, capsys):
    out = tmp_path / "exports" / "bad.xml"
    argv = ["export", str(run), "--format", "openvino", "--precision", "int8", "--calibration", str(blank),
            "--images", str(blank.parent), "--validation", str(ws.lst), "--output", str(out)]
    before = file_tree(tmp_path), file_tree(run.parent)
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "fails the accuracy gate" in errors[0] and "--accept-accuracy-loss" in errors[0]
    mine, _, others = errors[0].partition("nothing was written.")
    for figure in ("mAP ", "largest class AP change", "decisions agree on"):  # all three figures, both runtimes
        assert figure in mine and figure in others, errors[0]
    # the other int8 models of the same blank calibration, gated on the same images, are named with their verdict
    assert "of the same calibration passes it" in errors[0] and "run the same export with --format" in errors[0] \
        or "The other int8 models of the same calibration fail it too" in errors[0]
    assert (file_tree(tmp_path), file_tree(run.parent)) == before

    # kept on request, with the failure recorded, and the predictor warns when it uses it
    assert main([*argv, "--accept-accuracy-loss"]) == 0
    assert "FAILED, kept because --accept-accuracy-loss" in capsys.readouterr().out
    meta = json.loads(out.with_name("bad.xml.json").read_text())
    assert meta["accepted_accuracy_loss"] is True and meta["accuracy_gate"]["passed"] is False
    assert meta["accuracy_gate"]["failures"]
    assert meta["calibration"]["source"] == str(blank)


def test_int8_onnx_export_is_gated_and_runs_in_the_predictor(run, ws, tmp_path):
    out = tmp_path / "model-int8.onnx"
    shutil.copy(run, tmp_path / "model.tar.gz")
    shutil.copy(run.with_name("model-metadata.json"), tmp_path / "model-metadata.json")
    info = export_low_precision(tmp_path / "model.tar.gz", format="onnx", precision="int8",
                                calibration=ws.data, validation=ws.data, accept_accuracy_loss=True)
    assert info["model"] == str(out) and info["quantization"]["tool"] == "onnxruntime.quantization"
    gate = info["accuracy_gate"]  # measured and recorded whether it passes or not (kept: the loss was accepted)
    assert gate["images"] == len(ws.data) and info["calibration"]["images"] == len(ws.data)
    assert gate["passed"] == (not gate.get("failures")) == (not info["accepted_accuracy_loss"])
    assert gate["passed"] == (abs(gate["mAP_delta"]) <= MAP_LIMIT and gate["max_abs_class_AP_delta"] <= CLASS_AP_LIMIT
                              and gate["decision_agreement"] >= AGREEMENT_LIMIT)
    import onnx

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    pred = LocalPredictor(tmp_path / "model.tar.gz", runtime="onnxruntime", precision="int8", device="cpu")
    assert len(pred.predict((ws.images / ws.data.paths[0]).read_bytes())) == 5


# --- the gate itself: each of its three limits refuses on its own


def _scores(n: int = 200, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, classes))
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, (n, classes)), 0, 1)
    return labels, scores


def test_gate_passes_identical_scores_and_reports_three_figures():
    labels, scores = _scores()
    gate = accuracy_gate(labels, scores, scores.copy(), None, list("abcd"))
    assert gate["passed"] and gate["mAP_delta"] == 0 and gate["max_abs_class_AP_delta"] == 0
    assert gate["decision_agreement"] == 1.0 and "failures" not in gate


@pytest.mark.parametrize("defect", ["mAP", "one_class_AP", "decisions"])
def test_gate_refuses_each_kind_of_loss(defect):
    labels, reference = _scores()
    low = reference.copy()
    rng = np.random.default_rng(1)
    if defect == "mAP":  # every class loses ranking quality
        low = np.clip(low + rng.normal(0, 0.25, low.shape), 0, 1)
    elif defect == "one_class_AP":  # one class shuffled: its AP falls, the mean less than per class
        low[:, 2] = rng.permutation(low[:, 2])
    else:  # a monotone shift: every AP is the same, but scores cross the thresholds
        low = np.clip(low + 0.02, 0, 1)
    gate = accuracy_gate(labels, reference, low, [0.5] * 4, list("abcd"))
    assert not gate["passed"]
    text = " ".join(gate["failures"])
    expected = {"mAP": "mAP ", "one_class_AP": "AP of class 'c'", "decisions": "label decisions agree"}[defect]
    assert expected in text, text
    if defect == "decisions":
        assert gate["mAP_delta"] == pytest.approx(0, abs=1e-12) and len(gate["failures"]) == 1


# --- bfloat16: only where the CPU has the instructions


@pytest.fixture()
def no_bf16(monkeypatch):
    monkeypatch.setattr(cpu_flags, "cpu_flags", lambda: frozenset({"avx2", "fma", "f16c"}))


@pytest.fixture()
def with_bf16(monkeypatch):
    monkeypatch.setattr(cpu_flags, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))


def test_bf16_without_the_cpu_flags_names_them(run, no_bf16, capsys):
    with pytest.raises(UsageError, match="needs a CPU with the avx512_bf16 or amx_bf16 instruction flag") as e:
        LocalPredictor(run, runtime="openvino", precision="bf16", device="cpu")
    assert "\n" not in str(e.value)
    for argv in (["predict", "--model", str(run), "--runtime", "openvino", "--precision", "bf16", str(run)],
                 ["export", str(run), "--format", "openvino", "--precision", "bf16"],
                 ["serve", str(run), "--port", "0", "--runtime", "openvino", "--precision", "bf16"]):
        assert main(argv) == 2
        assert "avx512_bf16 or amx_bf16" in capsys.readouterr().err
    assert not run.with_name("model-bf16.xml").exists()


def test_bf16_with_the_cpu_flags_passes_openvinos_hint(run, with_bf16, ws, monkeypatch):
    import openvino as ov

    hints = []

    class Core(ov.Core):
        def compile_model(self, model, device=None, config=None):
            hints.append((config or {}).get("INFERENCE_PRECISION_HINT"))
            return super().compile_model(model, device, config)

    monkeypatch.setattr(ov, "Core", Core)
    pred = LocalPredictor(run, runtime="openvino", precision="bf16", device="cpu", runtime_cache=False)
    assert hints == ["bf16"] and len(pred.predict(ws.jpeg.read_bytes())) == 5
    info = export_low_precision(run, format="openvino", precision="bf16", validation=ws.lst, images=ws.images,
                                output=run.parent / "bf16" / "model-bf16.xml")
    assert hints[-1] == "bf16" and info["conversion"]["inference_precision_hint"] == "bf16"
    assert "accuracy_gate" in info and "calibration" not in info


def test_gate_failure_is_an_accuracy_gate_error(run, dark, ws):
    with pytest.raises(AccuracyGateError, match="fails the accuracy gate") as refused:
        export_low_precision(run, run.parent / "api-bad.xml", format="openvino", precision="int8",
                             calibration=Dataset.from_lst(dark, root=dark.parent, class_names=NAMES),
                             validation=ws.data)
    assert not list(run.parent.glob("api-bad*")) and not list(run.parent.glob("*.onnx"))
    # the error carries both gates: this export's, and the alternatives' on the same images, which it names: the
    # other quantizer of the same format first, then the other format, up to the first that passes
    assert refused.value.gate["passed"] is False
    other = refused.value.other_runtime
    tried = [*other["tried"], other]
    order = [("openvino", "onnxruntime"), ("onnx", "onnxruntime")]
    assert [(o["format"], o["quantizer"]) for o in tried] == order[:len(tried)]
    assert all(o["gate"]["images"] == refused.value.gate["images"] for o in tried)
    assert not any(o["gate"]["passed"] for o in tried[:-1])
    if other["gate"]["passed"]:
        assert f"The {other['format']} int8 model quantized with onnxruntime of the same calibration passes it" \
            in str(refused.value)
    else:
        assert len(tried) == 2 and "The other int8 models of the same calibration fail it too" in str(refused.value)


def test_the_advice_names_the_alternative_only_when_it_passes():
    """The refusal's advice, from the alternatives' gates: the command to run when one passes, their figures either
    way, nothing when none could be checked."""
    from multilabel_ic.model.export_lowp import _alternative_advice, _alternatives

    assert _alternatives("openvino", "nncf") == [("openvino", "onnxruntime"), ("onnx", "onnxruntime")]
    assert _alternatives("onnx", "onnxruntime") == [("openvino", "nncf"), ("openvino", "onnxruntime")]
    figures = {"mAP": 0.9, "mAP_float32": 0.901, "mAP_delta": -0.001, "max_abs_class_AP_delta": 0.002,
               "decision_agreement": 0.995, "passed": True}
    passed = _alternative_advice({"format": "onnx", "quantizer": "onnxruntime", "gate": figures, "tried": []})
    assert "passes it" in passed and "--format onnx." in passed and "99.50%" in passed
    same_format = _alternative_advice({"format": "openvino", "quantizer": "onnxruntime", "gate": figures,
                                       "tried": []})
    assert "run the same export with --format openvino --quantizer onnxruntime." in same_format
    failing = {**figures, "passed": False, "decision_agreement": 0.97}
    failed = _alternative_advice({"format": "onnx", "quantizer": "onnxruntime", "gate": failing,
                                  "tried": [{"format": "openvino", "quantizer": "onnxruntime", "gate": failing}]})
    assert "fail it too" in failed and "--format" not in failed and failed.count("97.00%") == 2
    assert "openvino int8 model quantized with onnxruntime" in failed and "onnx int8 model" in failed
    assert _alternative_advice(None) == ""


def test_openvino_export_of_the_onnxruntime_quantization(run, ws, tmp_path, capsys):
    """--quantizer onnxruntime: onnxruntime.quantization's QDQ model as an OpenVINO IR, whose FakeQuantize operations
    feed every convolution and the classifier; gated, recorded, and run by the predictor."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("model.tar.gz", "model-metadata.json", "run-config.json"):
        shutil.copy(run.with_name(name), folder / name)
    assert main(["export", str(folder / "model.tar.gz"), "--format", "openvino", "--precision", "int8",
                 "--quantizer", "onnxruntime", "--accept-accuracy-loss"]) == 0
    out = folder / "model-int8.xml"
    meta = json.loads(out.with_name("model-int8.xml.json").read_text())
    assert meta["quantization"]["tool"] == "onnxruntime.quantization" and meta["quantization"]["runtime"] == "openvino"
    assert "accuracy_gate" in meta and f"{out} (openvino, int8)" in capsys.readouterr().out
    inputs = _producers(out)
    assert len(inputs) >= 20 and all(producers[0] == "FakeQuantize" for _, producers in inputs.values()), inputs
    images = [(ws.images / p).read_bytes() for p in ws.data.paths]
    got = np.array(LocalPredictor(folder / "model.tar.gz", runtime="openvino", precision="int8",
                                  device="cpu").predict_batch(images))
    agreement = np.mean((got >= 0.4) == (np.array(LocalPredictor(run, device="cpu").predict_batch(images)) >= 0.4))
    assert agreement == pytest.approx(meta["accuracy_gate"]["decision_agreement"], abs=1e-9)


@pytest.mark.parametrize("settings, message", [
    (dict(format="onnx", precision="int8", quantizer="nncf"), "quantizer 'nncf' does not make onnx models"),
    (dict(format="openvino", precision="fp32", quantizer="onnxruntime"), "is for precision 'int8'"),
])
def test_a_quantizer_that_cannot_make_the_model_is_refused_before_any_work(run, settings, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        export_low_precision(run, tmp_path / "out.xml", **settings)
    assert not list(tmp_path.iterdir())


def test_float32_openvino_export_matches_the_predictor(run, int8_openvino, tmp_path, capsys):
    out = tmp_path / "model.xml"
    assert main(["export", str(run), "--format", "openvino", "--output", str(out)]) == 0
    assert "max |diff| vs the predictor" in capsys.readouterr().out
    meta = json.loads(out.with_name("model.xml.json").read_text())
    assert meta["precision"] == "fp32" and meta["max_abs_diff_vs_predictor"] <= 1e-4
    assert "accuracy_gate" not in meta and out.with_suffix(".bin").is_file()
    assert 'type="FakeQuantize"' not in out.read_text()
    assert main(["export", str(run), "--format", "openvino", "--output", str(out)]) == 0  # replaces its own export
