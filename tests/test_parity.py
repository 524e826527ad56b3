"""Parity between the backends: the same configuration means the same thing to both, the local engine logs what the
algorithm logs (so one parser reads both), and an artifact moves from one to the other."""

from __future__ import annotations

import io
import logging

import boto3
import pytest

from multilabel_ic import Hyperparameters, Trainer
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.backends.sagemaker.cloudwatch import parse_log_lines
from multilabel_ic.logs import AlgorithmFormatter

TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=2,
            learning_rate=0.001, optimizer="adam", multi_label=1, augmentation_type="crop")


@pytest.fixture(scope="module")
def local_run(coco5, tmp_path_factory):
    train, val = coco5.split(0.75, seed=0)
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AlgorithmFormatter())
    logger = logging.getLogger("multilabel_ic")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        model = Trainer(hp, output_dir=tmp_path_factory.mktemp("parity"),
                        options=LocalOptions(num_workers=0, progress=False, log_interval=2)).fit(train, validation=val)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return model, stream.getvalue(), hp


def test_local_log_lines_parse_like_a_sagemaker_jobs(local_run):
    model, text, _ = local_run
    # as CloudWatch would render them: TAB -> #011
    parsed = parse_log_lines([line.replace("\t", "#011") for line in text.splitlines()]).epochs()
    local = model.metrics["epochs"]
    assert [e["epoch"] for e in parsed] == [e["epoch"] for e in local] == [0, 1]
    for p, m in zip(parsed, local):
        assert p["speed"] == pytest.approx([round(s, 3) for s in m["speed"]], abs=1e-3) and p["speed"]
        assert p["train_accuracy"] == pytest.approx(m["train_accuracy"], abs=1e-6)
        assert p["time_cost"] == pytest.approx(m["time_cost"], abs=1e-3)
        assert p["validation_accuracy"] == pytest.approx(m["validation_accuracy"], abs=1e-6)
        assert p["validation_mAP"] == pytest.approx(m["validation_mAP"], abs=1e-6)


def test_one_configuration_for_both_backends(local_run):
    model, _, hp = local_run
    # the local run records the full wire format; SageMaker receives the explicit subset of the same values
    wire = model.metrics["hyperparameters"]
    assert Hyperparameters.from_sagemaker(wire) == hp
    assert hp.to_sagemaker().items() <= wire.items()


def test_a_local_artifact_deploys_unchanged(local_run, aws):
    """The local model.tar.gz is what SageMaker's ModelDataUrl points at; the endpoint gets the same file."""
    from multilabel_ic.backends.sagemaker import SageMakerBackend

    model, _, _ = local_run
    session = boto3.Session(region_name="us-east-1")
    s3 = session.client("s3")
    s3.create_bucket(Bucket="parity")
    s3.put_object(Bucket="parity", Key="local/model.tar.gz", Body=model.local_artifact.read_bytes())
    backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/R", bucket="parity", region="us-east-1",
                               session=session, progress=False, poll_interval=0.01)
    with backend.deploy("s3://parity/local/model.tar.gz") as endpoint:
        desc = session.client("sagemaker").describe_model(ModelName=endpoint.endpoint_name)
        assert desc["PrimaryContainer"]["ModelDataUrl"] == "s3://parity/local/model.tar.gz"
        assert desc["PrimaryContainer"]["Image"].endswith("/image-classification:1")
    body = s3.get_object(Bucket="parity", Key="local/model.tar.gz")["Body"].read()
    assert body == model.local_artifact.read_bytes()
