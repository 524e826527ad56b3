"""Training variants beyond the multi-label RGB default: single-label softmax with top_k, greyscale input, and the
small-image depths."""

import re

import numpy as np
import pytest

from multilabel_ic import Dataset, Hyperparameters, Trainer
from multilabel_ic.backends.local import LocalOptions


def _opts():
    return LocalOptions(num_workers=0, progress=False, log_interval=2)


def test_single_label_softmax_with_top_k(coco5, tmp_path, caplog):
    # single-label data: the first positive class of each image
    first = coco5.labels.argmax(axis=1)
    labels = np.eye(5, dtype=np.uint8)[first]
    data = Dataset(coco5.paths, labels, coco5.class_names, root=coco5.root)
    train, val = data.split(0.75, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), num_layers=20, image_shape="3,28,28",
                         resize=36, mini_batch_size=8, epochs=1, optimizer="adam", learning_rate=0.001, top_k=2)
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    assert re.search(r"Batch \[2\]\tSpeed: [\d.]+ samples/sec\taccuracy=[\d.]+\ttop_k_accuracy_2=[\d.]+", caplog.text)
    assert re.search(r"Epoch\[0\] Train-top_k_accuracy_2=\d\.\d{6}", caplog.text)
    rec = model.metrics["epochs"][0]
    assert rec["train_top_k_accuracy_2"] >= rec["train_accuracy"]
    probs = model.predictor().predict(val.image_path(0).read_bytes())
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)  # the artifact's SoftmaxOutput head -> softmax
    from multilabel_ic.model.artifact import read_model_tar

    assert read_model_tar(model.local_artifact).output == "softmax"


def test_greyscale_images(coco5, tmp_path):
    train, val = coco5.split(0.75, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), num_layers=20, image_shape="1,28,28",
                         resize=36, mini_batch_size=8, epochs=1, multi_label=1, optimizer="adam",
                         learning_rate=0.001, augmentation_type="crop_color_transform")
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    pred = model.predictor()
    assert pred.image_shape == (1, 28, 28) and len(pred.predict(val.image_path(0).read_bytes())) == 5


@pytest.mark.parametrize("depth", [20, 32])
def test_small_image_depths_train(coco5, tmp_path, depth):
    train, val = coco5.split(0.75, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), num_layers=depth, image_shape="3,28,28",
                         resize=28, mini_batch_size=16, epochs=1, multi_label=1, optimizer="adam",
                         learning_rate=0.001, augmentation_type="crop")
    model = Trainer(hp, output_dir=tmp_path, options=_opts()).fit(train, validation=val)
    from multilabel_ic.model.artifact import read_model_tar

    art = read_model_tar(model.local_artifact)
    assert art.num_layers == depth and art.image_shape == (3, 28, 28)
    assert len(model.predictor().predict(val.image_path(1).read_bytes())) == 5
