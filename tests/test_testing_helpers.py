import pytest

from multilabel_ic import Hyperparameters, Trainer
from multilabel_ic.testing import FakeBackend, FakePredictor


def test_fake_backend_records_fits_and_answers(coco5, tmp_path):
    train, val = coco5.split(0.8, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), multi_label=1)
    backend = FakeBackend(probabilities=[0.9, 0.1, 0.6, 0.0, 0.2])
    model = Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    assert backend.fits[0]["hyperparameters"] is hp and backend.fits[0]["validation"] is val
    pred = model.predictor()
    img = val.image_path(0).read_bytes()
    assert pred.predict_labels(img, threshold=0.5) == ["person", "car"]
    assert pred.requests == [img]


def test_fake_predictor_with_a_function_and_wrong_length():
    pred = FakePredictor(["a", "b"], lambda image: [len(image) / 10, 0.0])
    assert pred.predict(b"12345") == [0.5, 0.0]
    with pytest.raises(ValueError, match="2 classes"):
        FakePredictor(["a", "b"], [0.1]).predict(b"x")
