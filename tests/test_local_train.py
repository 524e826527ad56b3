"""End-to-end behaviour of the local backend on small synthetic data (CPU)."""

import json
import signal
import tarfile

import numpy as np
import pytest
import torch
from resume_support import interrupt_and_resume

from multilabel_ic import DataError, Hyperparameters, Trainer, TrainingError, UsageError
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.backends.local.imagestore import decode_resized
from multilabel_ic.backends.local.runfolder import checkpoint_and_stop
from multilabel_ic.backends.local.torch_engine import torch_params
from multilabel_ic.model.artifact import read_model_tar
from multilabel_ic.model.network import ResNetV2

TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=2,
            learning_rate=0.001, optimizer="adam", multi_label=1, use_weighted_loss=1,
            augmentation_type="crop_color_transform")


def _opts(**kw):
    return LocalOptions(num_workers=0, progress=False, **kw)


@pytest.fixture(scope="module")
def splits(coco5):
    return coco5.split(0.75, seed=0)


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    train, val = splits
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    out = tmp_path_factory.mktemp("fit")
    model = Trainer(hp, backend="local", output_dir=out, options=_opts(log_interval=2)).fit(train, validation=val)
    return model, out, hp


def test_fit_returns_model_with_metrics_and_artifact(trained, splits):
    model, out, hp = trained
    m = model.metrics
    assert len(m["epochs"]) == 2 and m["backend"] == "local" and m["device"] == "cpu"
    for rec in m["epochs"]:
        assert 0 <= rec["validation_accuracy"] <= 1 and rec["images_per_sec"] > 0 and rec["time_cost"] > 0
        assert set(rec["validation_per_class_AP"]) == set(model.class_names)
        assert rec["data_time"] >= 0 and rec["compute_time"] > 0
    assert m["final"]["epoch"] in (1, 2) and 0 <= m["final"]["mAP"] <= 1
    assert len(m["final"]["tuned_thresholds"]) == 5
    assert json.loads((out / "metrics.json").read_text())["final"]["mAP"] == pytest.approx(m["final"]["mAP"])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    with tarfile.open(model.local_artifact) as t:
        names = t.getnames()
    assert "image-classification-symbol.json" in names and "model-shapes.json" in names
    assert [n for n in names if n.endswith(".params")] == [f"image-classification-{m['final']['epoch']:04d}.params"]
    assert m["hyperparameters"]["augmentation_type"] == "crop_color_transform"


def test_log_lines_have_the_algorithms_format(splits, tmp_path, caplog):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    Trainer(hp, output_dir=tmp_path, options=_opts(log_interval=2)).fit(train, validation=val)
    text = caplog.text
    import re

    assert re.search(r"Epoch\[0\] Batch \[2\]\tSpeed: \d+\.\d{3} samples/sec\taccuracy=\d\.\d{6}", text)
    assert re.search(r"Epoch\[0\] Train-accuracy=\d\.\d{6}", text)
    assert re.search(r"Epoch\[0\] Time cost=\d+\.\d{3}", text)
    assert re.search(r"Epoch\[0\] Validation-accuracy=\d\.\d{6}", text)
    assert "Storing the best model with validation accuracy" in text and 'Saved checkpoint to "' in text


def test_predictor_contract(trained, splits):
    model, _, _ = trained
    _, val = splits
    pred = model.predictor()
    img = val.image_path(0).read_bytes()
    probs = pred.predict(img)
    assert len(probs) == 5 and all(0.0 <= p <= 1.0 for p in probs) and isinstance(probs[0], float)
    assert pred.predict(img, content_type="image/jpeg") == pytest.approx(probs, abs=1e-6)
    batch = pred.predict_batch([img, val.image_path(1).read_bytes()])
    assert batch[0] == pytest.approx(probs, abs=1e-5)
    lines = pred.predict_batch([img], output="jsonlines").splitlines()
    assert json.loads(lines[0])["prediction"] == pytest.approx(probs, abs=1e-5)
    labels = pred.predict_labels(img, threshold=0.0)
    assert labels == model.class_names
    assert pred.predict_labels(img, threshold=1.01) == []
    assert isinstance(pred.predict_labels([img, img], threshold="tuned"), list)


def test_predictor_rejects_bad_input(trained):
    model, _, _ = trained
    pred = model.predictor()
    from multilabel_ic import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="<request body>: not a decodable image"):
        pred.predict(b"hello")
    with pytest.raises(UsageError, match="content type 'text/csv' is not accepted"):
        pred.predict(b"x", content_type="text/csv")


def test_same_seed_same_metrics(splits, tmp_path):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    a = Trainer(hp, output_dir=tmp_path / "a", options=_opts(seed=7)).fit(train, validation=val)
    b = Trainer(hp, output_dir=tmp_path / "b", options=_opts(seed=7)).fit(train, validation=val)
    assert a.metrics["epochs"][0]["train_loss"] == b.metrics["epochs"][0]["train_loss"]
    assert a.metrics["final"]["per_class_AP"] == b.metrics["final"]["per_class_AP"]


def test_checkpoint_frequency_ships_every_kth_epoch(splits, tmp_path):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 2, "checkpoint_frequency": 1}, num_training_samples=len(train))
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    with tarfile.open(model.local_artifact) as t:
        params = sorted(n for n in t.getnames() if n.endswith(".params"))
    assert params == ["image-classification-0001.params", "image-classification-0002.params"]


def test_early_stopping_rule(tmp_path):
    hp = Hyperparameters(num_classes=2, num_training_samples=10, mini_batch_size=2, epochs=30, early_stopping=True,
                         early_stopping_min_epochs=3, early_stopping_patience=2, early_stopping_tolerance=0.1,
                         num_layers=20, image_shape="3,28,28")
    model = ResNetV2(2, 20, (3, 28, 28))
    (tmp_path / "model").mkdir()
    state = {"best_acc": None, "best_epoch": None, "es_bad": 0, "saved": []}
    # 0.5 -> 0.52 (+4%, below the 10% tolerance: no improvement) -> 0.53 (no) -> stop at epoch 2 (>= min 3 epochs)
    decisions = [checkpoint_and_stop(hp, torch_params(model), tmp_path, e, {"validation_accuracy": a}, state, {})
                 for e, a in enumerate([0.5, 0.52, 0.53])]
    assert decisions == [False, False, True]
    assert state["best_acc"] == 0.53 and state["saved"] == [3]  # the best model is still kept
    state = {"best_acc": None, "best_epoch": None, "es_bad": 0, "saved": []}
    decisions = [checkpoint_and_stop(hp, torch_params(model), tmp_path, e, {"validation_accuracy": a}, state, {})
                 for e, a in enumerate([0.5, 0.6, 0.7, 0.71, 0.72])]
    assert decisions == [False, False, False, False, True]


def test_early_stopping_ends_training(splits, tmp_path, caplog):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 6, "learning_rate": 1e-6}, num_training_samples=len(train),
                         early_stopping=True, early_stopping_min_epochs=1, early_stopping_patience=1,
                         early_stopping_tolerance=0.5)
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    assert model.metrics["stopped_early"] and len(model.metrics["epochs"]) == 2
    assert "Early stopping at epoch 1" in caplog.text


def test_float16_on_cpu_uses_bfloat16(splits, tmp_path, caplog):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train), precision_dtype="float16")
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    assert "bfloat16 autocast" in caplog.text
    assert np.isfinite(model.metrics["epochs"][0]["train_loss"])


def test_precision_choices(caplog):
    from multilabel_ic.backends.local.device import precision_for

    def chosen(*a):
        p = precision_for(*a)
        return p.dtype, p.loss_scaling

    hp = Hyperparameters(**TINY, num_training_samples=64, precision_dtype="float16")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert chosen(hp, cpu, _opts()) == (torch.bfloat16, False)
    assert chosen(hp, cpu, _opts(cpu_float16="float32")) == (None, False)
    assert chosen(hp, cuda, _opts()) == (torch.float16, True)  # loss scaling with float16
    assert chosen(hp, cuda, _opts(cuda_half="bfloat16")) == (torch.bfloat16, False)
    assert chosen(hp.replace(precision_dtype="float32"), cuda, _opts()) == (None, False)
    assert precision_for(hp, cpu, _opts(channels_last=False)).channels_last is False
    with pytest.raises(ValueError, match="cuda_half"):
        _opts(cuda_half="fp8")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_training(splits, tmp_path, dtype):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train), precision_dtype=dtype)
    model = Trainer(hp, output_dir=tmp_path, device="cuda", options=_opts()).fit(train, validation=val)
    assert model.metrics["device"].startswith("cuda") and np.isfinite(model.metrics["epochs"][0]["train_loss"])


def test_bad_inputs(splits, tmp_path):
    train, val = splits
    with pytest.raises(DataError, match="6 classes but num_classes=5"):
        from multilabel_ic import Dataset

        six = Dataset(train.paths, np.pad(train.labels, ((0, 0), (0, 1))), train.class_names + ["x"], root=train.root)
        Trainer(Hyperparameters(**TINY, num_training_samples=len(train)), output_dir=tmp_path,
                options=_opts()).fit(six)
    few = train.subset(range(8))
    with pytest.raises(DataError, match="must be bigger or equal to the mini_batch_size"):
        Trainer(Hyperparameters(**TINY, num_training_samples=64), output_dir=tmp_path / "b",
                options=_opts()).fit(few)
    with pytest.raises(UsageError, match="CUDA is not available"):
        if torch.cuda.is_available():
            raise UsageError("CUDA is not available (skipped: this machine has CUDA)")
        Trainer(Hyperparameters(**TINY, num_training_samples=len(train)), output_dir=tmp_path / "c",
                device="cuda", options=_opts()).fit(train)


def test_num_training_samples_mismatch_warns(splits, tmp_path, caplog):
    train, _ = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=32)
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train)
    assert "num_training_samples=32 but the training data has" in caplog.text
    assert set(model.metrics["final"].values()) == {None} and model.metrics["saved_epochs"] == [1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_interruption_matches_an_uninterrupted_run(synthetic_coco, tmp_path, sig):
    losses = interrupt_and_resume(synthetic_coco, tmp_path, sig)  # equal to the uninterrupted run's, or it fails
    assert len(losses) == 3 and np.isfinite(losses).all()


def test_resume_refuses_different_hyperparameters(splits, tmp_path):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train)
    with pytest.raises(TrainingError, match="other hyperparameters"):
        Trainer(hp.replace(learning_rate=0.01), output_dir=tmp_path, options=_opts()).fit(train)


def test_metadata_beside_the_artifact_restores_class_names_and_thresholds(trained):
    model, out, _ = trained
    meta = json.loads((out / "model-metadata.json").read_text())
    assert meta["class_names"] == model.class_names and len(meta["tuned_thresholds"]) == 5
    from multilabel_ic.model.predictor import LocalPredictor

    pred = LocalPredictor(model.local_artifact)  # nothing but the path
    assert pred.class_names == model.class_names and pred.thresholds == meta["tuned_thresholds"]
    with tarfile.open(model.local_artifact) as t:
        assert "model-metadata.json" not in t.getnames()  # the artifact stays the algorithm's


def test_a_resumed_run_steps_the_learning_rate_at_the_same_updates(splits, tmp_path):
    """The MultiFactor schedule counts absolute updates, restored from the checkpoint: interrupted after epoch 0 and
    resumed, a run with lr_scheduler_step has the learning rates of an unbroken one."""
    from multilabel_ic.callbacks import Callback

    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 3, "optimizer": "sgd", "learning_rate": 0.1},
                         num_training_samples=len(train), lr_scheduler_step="1,2", lr_scheduler_factor=0.1)
    ref = Trainer(hp, output_dir=tmp_path / "ref", options=_opts()).fit(train, validation=val)
    expected = [r["learning_rate"] for r in ref.metrics["epochs"]]
    assert expected == pytest.approx([0.1, 0.01, 0.001])

    class CtrlCAfterFirstEpoch(Callback):
        def on_epoch_end(self, record):
            raise KeyboardInterrupt  # after the checkpoint of epoch 0 is saved

    with pytest.raises(KeyboardInterrupt):
        Trainer(hp, output_dir=tmp_path / "run", options=_opts(), callbacks=[CtrlCAfterFirstEpoch()]).fit(train, val)
    resumed = Trainer(hp, output_dir=tmp_path / "run", options=_opts()).fit(train, validation=val)
    assert [r["learning_rate"] for r in resumed.metrics["epochs"]] == pytest.approx(expected)
    assert [r["train_loss"] for r in resumed.metrics["epochs"]] == pytest.approx(
        [r["train_loss"] for r in ref.metrics["epochs"]], rel=1e-5)


def test_reference_pipeline_and_the_fallback_when_no_cache_fits(splits, tmp_path, caplog):
    """The reference pipeline trains without a decode cache; a cache over its size limit is not written and the run
    falls back to the reference pipeline, saying so; the batched default writes its cache once and reuses it."""
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    caplog.set_level("INFO", logger="multilabel_ic")
    ref = Trainer(hp, backend="local", output_dir=tmp_path / "ref",
                  options=_opts(input_pipeline="reference")).fit(train, validation=val)
    assert not (tmp_path / "ref" / "cache").exists() and "input pipeline: reference" in caplog.text
    caplog.clear()
    Trainer(hp, backend="local", output_dir=tmp_path / "small",
            options=_opts(cache_max_gb=1e-6)).fit(train, validation=val)
    assert "not caching decoded images" in caplog.text and "input pipeline: reference" in caplog.text
    assert not list((tmp_path / "small" / "cache").glob("*.u8"))
    caplog.clear()
    shared = tmp_path / "shared-cache"
    first = Trainer(hp, backend="local", output_dir=tmp_path / "a", options=_opts(cache_dir=str(shared)))
    batched = first.fit(train, validation=val)
    assert len(list(shared.glob("*.u8"))) == 2 and "decoding" in caplog.text  # training and validation images
    caplog.clear()
    Trainer(hp, backend="local", output_dir=tmp_path / "b", options=_opts(cache_dir=str(shared))).fit(
        train, validation=val)
    assert "decoding" not in caplog.text and "decoded-image cache" in caplog.text
    # the two pipelines differ by interpolation rounding only: the same run to within the spread of seeds
    assert abs(batched.metrics["final"]["mAP"] - ref.metrics["final"]["mAP"]) < 0.15


def test_compile_trains_the_same_run_through_torch_compile(splits, tmp_path, caplog, monkeypatch):
    """compile=True compiles the network (training and validation) and trains the eager run's model, to float
    rounding: the same losses, validation AP and parameters. (SGD: Adam's division by the gradients' running
    magnitude would amplify rounding in near-zero gradients.)"""
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1, "optimizer": "sgd"}, num_training_samples=len(train))
    eager = Trainer(hp, output_dir=tmp_path / "eager", options=_opts()).fit(train, validation=val)
    compiled_modules = []
    original = ResNetV2.compile

    def spy(self, *args, **kwargs):
        compiled_modules.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ResNetV2, "compile", spy)
    caplog.set_level("INFO", logger="multilabel_ic")
    compiled = Trainer(hp, output_dir=tmp_path / "compiled", options=_opts(compile=True)).fit(train, validation=val)
    assert len(compiled_modules) == 1 and compiled_modules[0]._compiled_call_impl is not None
    assert "torch.compile compiles the network" in caplog.text
    assert compiled.metrics["epochs"][0]["train_loss"] == pytest.approx(eager.metrics["epochs"][0]["train_loss"],
                                                                       rel=1e-3)
    assert compiled.metrics["final"]["per_class_AP"] == pytest.approx(eager.metrics["final"]["per_class_AP"],
                                                                      abs=0.02)
    a, b = read_model_tar(eager.local_artifact).params, read_model_tar(compiled.local_artifact).params
    assert a.keys() == b.keys()
    for k in a:  # parameters near 0 (betas) to 1e-4 absolute, larger ones (bn_data's variance) relative
        assert np.abs(a[k] - b[k]).max() <= 1e-4 * max(1.0, np.abs(a[k]).max()), k


def test_compile_is_refused_where_it_cannot_run(splits, tmp_path, monkeypatch):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1}, num_training_samples=len(train))
    with pytest.raises(UsageError, match="PyTorch-engine option"):
        _opts(compile=True, engine="gluon")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(UsageError, match="needs a C\\+\\+ compiler"):
        Trainer(hp, output_dir=tmp_path / "c", options=_opts(compile=True)).fit(train, validation=val)
    assert not (tmp_path / "c").exists()
    with pytest.raises(UsageError, match="compile"):
        LocalOptions(compile="yes")


def test_training_images_over_the_raw_cache_limit_train_from_a_jpeg_cache(splits, tmp_path, caplog):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 1, "resize": 36}, num_training_samples=len(train))
    raw = sum(decode_resized(train, i, hp.resize, hp.channels).nbytes for i in range(len(train)))
    caplog.set_level("INFO", logger="multilabel_ic")
    model = Trainer(hp, output_dir=tmp_path, options=_opts(cache_max_gb=raw / 2 / 1e9)).fit(train, validation=val)
    assert "caching them as JPEG (quality 95" in caplog.text
    assert "input pipeline: decode cache -> batched augmentation" in caplog.text
    assert len(list((tmp_path / "cache").glob("*.jpegs"))) == 1  # the training images; validation fits raw
    assert np.isfinite(model.metrics["epochs"][0]["train_loss"]) and 0 <= model.metrics["final"]["mAP"] <= 1


def test_evaluate_with_the_validation_transform_reproduces_the_runs_map(trained, splits, tmp_path, capsys):
    """``evaluate --preprocess centre_crop`` scores with the model's resize (from model-metadata.json), so the run's
    validation data gives exactly the mAP of its metrics.json; ``--resize`` overrides it."""
    from multilabel_ic.cli import main

    model, out, hp = trained
    _, val = splits
    lst = val.to_lst(tmp_path / "val.lst")
    argv = ["evaluate", "--model", str(model.local_artifact), "--lst", str(lst), "--images", str(val.root),
            "--preprocess", "centre_crop"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mAP"] == json.loads((out / "metrics.json").read_text())["final"]["mAP"]
    assert result["preprocessing"] == f"shorter side to {hp.resize}, centre crop 28x28"
    assert main([*argv, "--resize", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["preprocessing"] == "shorter side to 64, centre crop 28x28"
    assert main([*argv[:-2], "--resize", "64"]) == 2  # the endpoint's plain resize has no resize step
    assert "--resize 64: give a positive number of pixels, with --preprocess centre_crop" in capsys.readouterr().err
