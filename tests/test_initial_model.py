"""Continue from a model (incremental training) on the local backend: the initial weights, the classifier included,
are what the continued run starts from; its folder records them; it resumes after kill -9 like any run."""

from __future__ import annotations

import hashlib
import signal

import numpy as np
import pytest
import torch

from multilabel_ic import ArtifactError, Hyperparameters, RunConflictError, Trainer, UsageError
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.model.artifact import read_model_tar, write_model_tar
from multilabel_ic.model.initial import check_initial_model, read_initial_model, source_kind
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

# the catalog's tiny network (ResNet-20 at 28 px): a few seconds a run on a CPU
SMALL = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, optimizer="adam",
             learning_rate=0.01, multi_label=1, use_weighted_loss=1)


def _opts(**kw):
    return LocalOptions(num_workers=0, progress=False, **kw)


def _hp(train, **kw):
    return Hyperparameters(**{**SMALL, "num_training_samples": len(train), "epochs": 1, **kw})


@pytest.fixture(scope="module")
def splits(coco5):
    return coco5.split(0.75, seed=0)


@pytest.fixture(scope="module")
def base(splits, tmp_path_factory):
    """The earlier model: 4 epochs on the training split."""
    train, val = splits
    out = tmp_path_factory.mktemp("base")
    return Trainer(_hp(train, epochs=4), output_dir=out, options=_opts()).fit(train, validation=val)


def _random_artifact(path, *, num_classes=5, num_layers=20, shape=(3, 28, 28), multi_label=True, seed=1):
    torch.manual_seed(seed)
    args, aux = mxnet_state_dict(ResNetV2(num_classes, num_layers, shape))
    return write_model_tar(path, {1: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                           num_classes=num_classes, num_layers=num_layers, image_shape=shape, multi_label=multi_label)


def test_the_continued_run_scores_the_initial_model_exactly_before_its_first_update(base, splits, tmp_path,
                                                                                    monkeypatch):
    """With the training epoch replaced by one that updates nothing, the continued run's first validation pass scores
    the network it built from the artifact: its mAP, per-class AP and accuracy are exactly the earlier run's shipped
    model's, which needs every parameter, fc1 included, to have come from the artifact."""
    from multilabel_ic.backends.local.torch_engine import TorchEngine

    train, val = splits
    template = {k: v for k, v in base.metrics["epochs"][0].items() if not k.startswith("validation")}
    monkeypatch.setattr(TorchEngine, "train_epoch", lambda self, epoch, state: {**template, "epoch": epoch})
    continued = Trainer(_hp(train), output_dir=tmp_path, options=_opts(seed=7)).fit(
        train, validation=val, initial_model=base.local_artifact)
    first, final = continued.metrics["epochs"][0], base.metrics["final"]
    assert first["validation_mAP"] == final["mAP"]
    assert first["validation_per_class_AP"] == final["per_class_AP"]
    assert first["validation_accuracy"] == final["validation_accuracy"]
    ours, theirs = read_model_tar(continued.local_artifact).params, read_model_tar(base.local_artifact).params
    assert ours.keys() == theirs.keys()
    for name in ours:  # what it ships is the initial model itself, bit for bit (bn_data_gamma is fixed at 1)
        np.testing.assert_array_equal(ours[name], np.ones_like(theirs[name]) if name == "bn_data_gamma"
                                      else theirs[name], err_msg=name)
    assert continued.info["initial_model"]["sha256"] == hashlib.sha256(base.local_artifact.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first_epochs(base, splits, tmp_path_factory):
    """One epoch from scratch and one continued from the base model (given as its run folder), same data and seed."""
    train, val = splits
    root = tmp_path_factory.mktemp("first")
    scratch = Trainer(_hp(train), output_dir=root / "scratch", options=_opts()).fit(train, validation=val)
    continued = Trainer(_hp(train), output_dir=root / "continued", options=_opts()).fit(
        train, validation=val, initial_model=str(base.local_artifact.parent))  # a run folder names its artifact
    return scratch, continued


def test_a_continued_first_epoch_beats_one_from_scratch(first_epochs, splits):
    scratch, continued = first_epochs
    s, c = scratch.metrics["epochs"][0], continued.metrics["epochs"][0]
    assert c["train_loss"] < s["train_loss"]
    assert c["validation_mAP"] > s["validation_mAP"]
    # the schedule starts afresh: the first epoch runs at the job's own learning rate
    assert c["learning_rate"] == s["learning_rate"] == pytest.approx(SMALL["learning_rate"])


def test_a_run_folder_resumes_only_with_the_same_initial_model(first_epochs, base, splits, tmp_path):
    train, val = splits
    scratch, continued = first_epochs
    other = _random_artifact(tmp_path / "other" / "model.tar.gz")
    for folder, initial in ((continued, other), (continued, None), (scratch, base.local_artifact)):
        with pytest.raises(RunConflictError, match="other initial model"):
            Trainer(_hp(train), output_dir=folder.local_artifact.parent, options=_opts()).fit(
                train, validation=val, initial_model=initial)


@pytest.mark.parametrize("change", ["num_layers", "image_shape", "num_classes", "multi_label", "all"])
def test_every_architecture_field_that_differs_is_named_with_both_values(change, tmp_path):
    initial = read_initial_model(_random_artifact(tmp_path / "model.tar.gz"))
    values = {"num_layers": (32, "num_layers is 20 in the model and 32 here"),
              "image_shape": ("3,26,26", "image_shape is 3,28,28 in the model and 3,26,26 here"),
              "num_classes": (4, "num_classes is 5 in the model and 4 here"),
              "multi_label": (0, "multi_label is 1 in the model and 0 here")}
    chosen = list(values) if change == "all" else [change]
    hp = Hyperparameters(**{**SMALL, "num_training_samples": 90, "use_weighted_loss": 0,
                            **{k: values[k][0] for k in chosen}})
    with pytest.raises(UsageError) as e:
        check_initial_model(hp, initial)
    message = str(e.value)
    assert "\n" not in message and str(initial.path) in message
    for field, (_, says) in values.items():
        assert (says in message) == (field in chosen), (field, message)
    check_initial_model(Hyperparameters(**SMALL, num_training_samples=90), initial)  # the model's own: accepted


def test_a_mismatch_is_refused_before_the_output_folder_is_touched(splits, tmp_path):
    train, _ = splits
    initial = _random_artifact(tmp_path / "in" / "model.tar.gz", num_classes=4)
    with pytest.raises(UsageError, match="num_classes is 4 in the model and 5 here"):
        Trainer(_hp(train), output_dir=tmp_path / "out", options=_opts()).fit(train, initial_model=initial)
    assert not (tmp_path / "out").exists()


def test_sources_are_told_apart(tmp_path):
    (tmp_path / "my-job").write_bytes(b"")
    assert source_kind("s3://b/k/model.tar.gz") == "s3"
    assert source_kind("ic-multilabel-2026-11-24-07-41-14-abcd") == "job"
    assert source_kind(tmp_path / "my-job") == "path"  # a file of that name wins
    assert source_kind("runs/a/model.tar.gz") == source_kind("model.tar.gz") == "path"


@pytest.mark.slow
def test_a_continued_run_resumes_after_kill_9_as_any_run(synthetic_coco, tmp_path):
    """The shared kill/resume check (resume_support), on a run continued from a model (ResNet-20 at 28 px)."""
    from resume_support import interrupt_and_resume

    initial = _random_artifact(tmp_path / "initial" / "model.tar.gz")
    losses = interrupt_and_resume(synthetic_coco, tmp_path, signal.SIGKILL, str(initial))
    assert len(losses) == 3


def test_the_initial_model_must_be_readable(tmp_path):
    with pytest.raises(ArtifactError, match="initial model .*: no model.tar.gz there"):
        read_initial_model(tmp_path)


def test_a_run_file_names_the_initial_model_by_path_uri_or_job(tmp_path, monkeypatch):
    """``initial_model`` in a run file: a path is relative to the file (and written back absolute in run-config.json),
    an s3:// URI and a training job's name are kept as they are."""
    from multilabel_ic.run_config import load_run_config, train_defaults

    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "runs" / "a").mkdir(parents=True)
    for value, expected in (("runs/a", str(tmp_path / "conf" / "runs" / "a")), ("s3://b/k/model.tar.gz", None),
                            ("ic-multilabel-2026-11-24-07-41-14-abcd", None)):
        path = tmp_path / "conf" / "run.toml"
        path.write_text(f'initial_model = "{value}"\n')
        assert train_defaults(load_run_config(path), path)[0]["initial_model"] == (expected or value)


def test_train_continues_from_a_run_folder_on_the_command_line(base, splits, tmp_path, capsys):
    import json

    from multilabel_ic.cli import main

    train, val = splits
    args = ["--quiet", "train", "--train-lst", str(train.to_lst(tmp_path / "train.lst")), "--validation-lst",
            str(val.to_lst(tmp_path / "validation.lst")), "--images", str(train.root), "--classes",
            ",".join(train.class_names), "--workers", "0", "--output", str(tmp_path / "run"),
            "--initial-model", str(base.local_artifact.parent),
            *[a for k, v in {**SMALL, "epochs": 1}.items() for a in ("--hp", f"{k}={v}")]]
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "run-config.json").read_text())
    assert config["initial_model"] == str(base.local_artifact.parent.resolve())
    marker = json.loads((tmp_path / "run" / "checkpoints" / "run.json").read_text())
    assert marker["initial model"]["sha256"] == hashlib.sha256(base.local_artifact.read_bytes()).hexdigest()
