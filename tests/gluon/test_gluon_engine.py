"""The Gluon engine trains the algorithm with MXNet itself: the run folder, log lines, metrics, resume and artifact
are the PyTorch engine's, and either engine's artifact loads into the other framework."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from multilabel_ic import Hyperparameters, Trainer
from multilabel_ic.backends.local import LocalBackend, LocalOptions
from multilabel_ic.backends.sagemaker.cloudwatch import parse_log_lines
from multilabel_ic.callbacks import Callback
from multilabel_ic.cli import main
from multilabel_ic.exceptions import RunConflictError, UsageError
from multilabel_ic.logs import AlgorithmFormatter
from multilabel_ic.model.artifact import read_model_tar
from multilabel_ic.parity import cross_load, run_parity

TINY = dict(num_classes=5, num_layers=18, image_shape="3,32,32", resize=36, mini_batch_size=8, epochs=2,
            learning_rate=0.01, optimizer="sgd", multi_label=1, use_weighted_loss=1,
            augmentation_type="crop_color_transform", lr_scheduler_step="1", lr_scheduler_factor=0.5)
OPTIONS = LocalOptions(num_workers=1, progress=False, log_interval=4, engine="gluon")  # 1 thread: bit-reproducible


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, record):
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def split(coco5):
    return coco5.split(0.75, seed=0)


@pytest.fixture(scope="module")
def unbroken(split, tmp_path_factory):
    train, val = split
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AlgorithmFormatter())
    logger = logging.getLogger("multilabel_ic")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        model = Trainer(hp, backend=LocalBackend(options=OPTIONS),
                        output_dir=tmp_path_factory.mktemp("gluon")).fit(train, validation=val)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return hp, model, stream.getvalue()


def test_gluon_run_writes_the_local_layout_and_log_lines(unbroken):
    hp, model, text = unbroken
    out = model.local_artifact.parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "gluon" and metrics["backend"] == "local"
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert metrics["epochs"][1]["learning_rate"] == pytest.approx(0.005)  # MultiFactorScheduler stepped at epoch 1
    assert (out / "checkpoints" / "last-gluon.params").is_file() and not (out / "recordio").exists()
    parsed = parse_log_lines([line.replace("\t", "#011") for line in text.splitlines()]).epochs()
    assert [p["epoch"] for p in parsed] == [0, 1]
    for p, m in zip(parsed, metrics["epochs"]):
        assert p["validation_mAP"] == pytest.approx(m["validation_mAP"], abs=1e-6)
        assert p["train_accuracy"] == pytest.approx(m["train_accuracy"], abs=1e-6)
    # the shipped (last, best) epoch's final metrics come from the same validation records
    shipped = metrics["final"]["epoch"]
    assert metrics["final"]["mAP"] == pytest.approx(metrics["epochs"][shipped - 1]["validation_mAP"], abs=1e-9)
    contents = read_model_tar(model.local_artifact)
    assert contents.num_layers == 18 and contents.num_classes == 5 and contents.output == "sigmoid"


def test_gluon_artifact_cross_loads_within_1e_4(unbroken, split):
    _, model, _ = unbroken
    _, val = split
    images = [val.image_path(i).read_bytes() for i in range(12)]
    check = cross_load(model.local_artifact, images)
    assert check["images"] == 12 and check["max_abs_diff"] <= 1e-4
    probs = model.predictor().predict_batch(images)
    assert np.asarray(probs).shape == (12, 5)


def test_gluon_run_resumes_bit_identically(unbroken, split, tmp_path):
    hp, model, _ = unbroken
    train, val = split
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        Trainer(hp, backend=LocalBackend(options=OPTIONS), output_dir=out,
                callbacks=[_StopAfterFirstEpoch()]).fit(train, validation=val)
    resumed = Trainer(hp, backend=LocalBackend(options=OPTIONS), output_dir=out).fit(train, validation=val)
    a, b = read_model_tar(model.local_artifact).params, read_model_tar(resumed.local_artifact).params
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0
    assert resumed.metrics["final"]["mAP"] == model.metrics["final"]["mAP"]


def test_engines_do_not_resume_each_others_runs(unbroken, split):
    hp, model, _ = unbroken
    train, val = split
    with pytest.raises(RunConflictError, match="engine"):
        Trainer(hp, backend=LocalBackend(options=LocalOptions(progress=False, num_workers=0)),
                output_dir=model.local_artifact.parent).fit(train, validation=val)


def test_gluon_refuses_the_pytorch_only_jitter(split, tmp_path):
    from multilabel_ic.model.transforms import AugmentOptions

    train, val = split
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    options = LocalOptions(progress=False, engine="gluon", augment=AugmentOptions(hsl_jitter="uniform"))
    with pytest.raises(UsageError, match="approx_gaussian"):
        Trainer(hp, backend=LocalBackend(options=options), output_dir=tmp_path / "run").fit(train, validation=val)
    assert not (tmp_path / "run").exists()


def test_cli_trains_with_the_gluon_engine(split, tmp_path, capsys):
    train, val = split
    train.to_lst(tmp_path / "train.lst")
    val.to_lst(tmp_path / "val.lst")
    code = main(["--quiet", "train", "--engine", "gluon", "--train-lst", str(tmp_path / "train.lst"),
                 "--validation-lst", str(tmp_path / "val.lst"), "--images", str(train.root),
                 "--classes", ",".join(train.class_names), "--output", str(tmp_path / "run"), "--workers", "1",
                 *[f"--hp={k}={v}" for k, v in {**TINY, "epochs": 1}.items()]])
    assert code == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["engine"] == "gluon"
    assert "model artifact:" in capsys.readouterr().out


def test_parity_report(split, tmp_path):
    train, val = split
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    report = run_parity(train, val, hp, seeds=[0, 1], output=tmp_path,
                        options=LocalOptions(progress=False, num_workers=1))
    assert set(report["runs"]) == {"pytorch", "gluon"} and all(len(r) == 2 for r in report["runs"].values())
    for engine, runs in report["runs"].items():
        assert report["final_mAP"][engine]["mean"] == pytest.approx(np.mean([r["final_mAP"] for r in runs]))
    assert report["cross_load_within_1e-4"] is True
    assert report["within_seed_spread"] == (report["mean_gap"] <= report["seed_spread"])
    written = json.loads((tmp_path / "parity.json").read_text())
    assert written["final_mAP"] == report["final_mAP"]
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pytorch |" in (tmp_path / "parity.md").read_text()


def test_gluon_engine_starts_from_the_pretrained_params(split, tmp_path):
    """The same ImageNet .params file as the PyTorch engine: every layer but fc1 starts from it (here with a
    learning rate of 1e-12 and no weight decay, so the saved parameters are the file's; bn_data's gamma fixed at 1)."""
    import torch

    from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
    from multilabel_ic.model.params import save_params

    train, val = split
    torch.manual_seed(5)
    args, aux = mxnet_state_dict(ResNetV2(1000, 18, (3, 40, 40)))
    zoo = {f"arg:{k}": v.numpy() for k, v in args.items()} | {f"aux:{k}": v.numpy() for k, v in aux.items()}
    zoo["arg:bn_data_gamma"][:] = 0.5  # a stored gamma that MXNet ignores
    save_params(tmp_path / "resnet-18-0000.params", zoo)
    hp = Hyperparameters(**{**TINY, "image_shape": "3,40,40", "resize": 44, "epochs": 1, "learning_rate": 1e-12, "weight_decay": 0.0,
                            "use_pretrained_model": 1}, num_training_samples=len(train))
    options = LocalOptions(num_workers=1, progress=False, engine="gluon", pretrained=str(tmp_path / "resnet-18-0000.params"))
    model = Trainer(hp, backend=LocalBackend(options=options), output_dir=tmp_path / "run").fit(train, validation=val)
    saved = read_model_tar(model.local_artifact).params
    for name in ("conv0_weight", "stage1_unit1_conv1_weight", "stage4_unit2_conv2_weight", "bn1_beta"):
        np.testing.assert_allclose(saved[name], zoo[f"arg:{name}"], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(saved["bn_data_gamma"], np.ones(3, np.float32))
    assert saved["fc1_weight"].shape == (5, 512)  # a new head for the 5 classes


def test_the_recordio_copy_is_made_in_the_run_folder_and_removed_there(split, tmp_path, monkeypatch):
    """The engine's RecordIO copy of the data goes to <output>/recordio (never the working directory) and close()
    removes it, leaving the run folder's other files."""
    from multilabel_ic.backends.local.distributed import Distributed
    from multilabel_ic.backends.local.gluon_engine import GluonEngine

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    train, val = split[0].subset(range(16)), split[1].subset(range(8))
    hp = Hyperparameters(**{**TINY, "num_training_samples": 16})
    engine = GluonEngine(hp, OPTIONS, GluonEngine.open(hp, OPTIONS, Distributed()), Distributed())
    engine.prepare_data(train, val, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "recordio").iterdir()) == [
        "train.idx", "train.rec", "validation.idx", "validation.rec"]
    assert list(cwd.iterdir()) == []
    engine.close()
    assert not (tmp_path / "out" / "recordio").exists() and list(cwd.iterdir()) == []
