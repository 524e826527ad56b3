"""The Gluon engine continues from a model as the PyTorch engine does: every parameter of the initial artifact, the
classifier included, is what its network starts from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multilabel_ic import Hyperparameters, Trainer
from multilabel_ic.backends.local import LocalBackend, LocalOptions
from multilabel_ic.model.artifact import read_model_tar, write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

OPTIONS = LocalOptions(num_workers=1, progress=False, engine="gluon")
SMALL = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=1,
             multi_label=1)
RECORD = {"train_loss": 0.0, "train_accuracy": 0.0, "train_accuracy_epoch": 0.0, "speed": [], "images_per_sec": 1.0,
          "learning_rate": 0.1, "time_cost": 0.0, "data_time": 0.0, "compute_time": 0.0}


def test_a_gluon_run_starts_from_every_parameter_of_the_initial_model(coco5, tmp_path, monkeypatch):
    from multilabel_ic.backends.local.gluon_engine import GluonEngine

    torch.manual_seed(3)
    args, aux = mxnet_state_dict(ResNetV2(5, 20, (3, 28, 28)))
    args = {k: v.numpy() for k, v in args.items()}
    args["fc1_bias"] = np.linspace(-1, 1, 5).astype(np.float32)  # a classifier no initialisation would give
    initial = write_model_tar(tmp_path / "in" / "model.tar.gz", {4: (args, {k: v.numpy() for k, v in aux.items()})},
                              num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)
    train, val = coco5.subset(range(48)).split(32, seed=0)
    monkeypatch.setattr(GluonEngine, "train_epoch", lambda self, epoch, state: {**RECORD, "epoch": epoch})  # no update
    model = Trainer(Hyperparameters(**SMALL, num_training_samples=len(train)), backend=LocalBackend(options=OPTIONS),
                    output_dir=tmp_path / "run").fit(train, validation=val, initial_model=initial)
    ours, theirs = read_model_tar(model.local_artifact).params, read_model_tar(initial).params
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], np.ones_like(theirs[name]) if name == "bn_data_gamma"
                                      else theirs[name], err_msg=name)
    assert model.info["initial_model"]["epoch"] == 4
    assert model.metrics["epochs"][0]["validation_mAP"] == pytest.approx(model.metrics["final"]["mAP"], abs=0)


@pytest.fixture(scope="module")
def first_epochs(coco5, tmp_path_factory):
    """A base model (3 Gluon epochs), then one epoch from scratch and one continued from the base, on the same data
    and seed: the Gluon engine's mirror of the PyTorch engine's test (tests/test_initial_model.py)."""
    train, val = coco5.split(0.75, seed=0)
    root = tmp_path_factory.mktemp("first")
    hp = dict(SMALL, optimizer="adam", learning_rate=0.01, use_weighted_loss=1, num_training_samples=len(train))

    def fit(folder, initial=None, **kw):
        return Trainer(Hyperparameters(**{**hp, **kw}), backend=LocalBackend(options=OPTIONS),
                       output_dir=root / folder).fit(train, validation=val, initial_model=initial)

    base = fit("base", epochs=3)
    return fit("scratch"), fit("continued", base.local_artifact)


def test_a_continued_gluon_first_epoch_beats_one_from_scratch(first_epochs):
    scratch, continued = first_epochs
    s, c = scratch.metrics["epochs"][0], continued.metrics["epochs"][0]
    assert c["train_loss"] < s["train_loss"]
    assert c["validation_mAP"] > s["validation_mAP"]
    # the schedule starts afresh: the first epoch runs at the job's own learning rate
    assert c["learning_rate"] == s["learning_rate"] == pytest.approx(0.01)
