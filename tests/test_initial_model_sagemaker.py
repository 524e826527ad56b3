"""Continue from a model across the backends, against the moto server: a locally trained artifact continued on
SageMaker (the model channel of the request), a SageMaker job's artifact continued locally (by job name, s3:// URI or
attached Model), and a mismatch refused before anything is uploaded."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import boto3
import pytest
from test_sagemaker_backend import BUCKET, REGION, JobSimulator, _backend

from multilabel_ic import BackendError, Hyperparameters, Trainer, TrainingError, UsageError
from multilabel_ic.backends.local import LocalOptions

SMALL = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, optimizer="adam",
             learning_rate=0.01, multi_label=1, epochs=1)


@pytest.fixture(scope="module")
def splits(coco5):
    train, val = coco5.split(0.75, seed=0)
    return train.subset(range(32)), val.subset(range(16))  # few files: every fit uploads them to the server


def _hp(train, **kw):
    return Hyperparameters(**{**SMALL, "num_training_samples": len(train), **kw})


@pytest.fixture(scope="module")
def local_model(splits, tmp_path_factory):
    """A model trained by the local backend (one epoch on 32 images)."""
    train, _ = splits
    return Trainer(_hp(train), output_dir=tmp_path_factory.mktemp("local"),
                   options=LocalOptions(num_workers=0, progress=False)).fit(train)


@pytest.fixture()
def setup(aws):
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    return session


def _puts(session) -> list[str]:
    keys: list[str] = []
    session.events.register("provide-client-params.s3.PutObject", lambda params, **kw: keys.append(params["Key"]))
    return keys


def _sagemaker_job(setup, aws, splits, artifact: bytes, tmp_path, **sim):
    """A finished SageMaker training job whose model.tar.gz is ``artifact``; its Model (attached)."""
    train, val = splits
    JobSimulator(setup, aws, artifact, **sim)
    return Trainer(_hp(train), backend=_backend(setup, score_validation=False), output_dir=tmp_path / "sm").fit(
        train, validation=val)


def test_a_local_artifact_continues_on_sagemaker_through_the_model_channel(setup, aws, splits, local_model,
                                                                          tmp_path):
    train, val = splits
    sim = JobSimulator(setup, aws, local_model.local_artifact.read_bytes())
    backend = _backend(setup, score_validation=False)
    continued = Trainer(_hp(train), backend=backend, output_dir=tmp_path / "a").fit(
        train, validation=val, initial_model=local_model.local_artifact)
    channels = {c["ChannelName"]: c for c in sim.requests[0]["InputDataConfig"]}
    model = channels.pop("model")
    uri = model["DataSource"]["S3DataSource"]["S3Uri"]
    assert continued.info["initial_model"] == {
        "source": str(local_model.local_artifact), "s3_uri": uri, "epoch": 1,
        "sha256": hashlib.sha256(local_model.local_artifact.read_bytes()).hexdigest()}
    assert re.fullmatch(rf"s3://{BUCKET}/ic-multilabel/data/model/[0-9a-f]{{16}}/model\.tar\.gz", uri), uri
    assert model == {"ChannelName": "model", "ContentType": "application/x-sagemaker-model",
                     "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                     "S3DataDistributionType": "FullyReplicated"}}}
    assert set(channels) == {"train", "validation", "train_lst", "validation_lst"}
    key = uri[len(f"s3://{BUCKET}/"):]
    body = setup.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body == local_model.local_artifact.read_bytes()
    puts = _puts(setup)  # the same initial model again: content-addressed, nothing is uploaded twice
    Trainer(_hp(train), backend=_backend(setup, score_validation=False), output_dir=tmp_path / "b").fit(
        train, validation=val, initial_model=local_model)
    assert puts == [] and sim.requests[1]["InputDataConfig"][-1] == model


@pytest.mark.parametrize("given", ["job name", "s3 URI", "attached Model", "Model without a local copy"])
def test_a_sagemaker_artifact_continues_locally(given, setup, aws, splits, local_model, tmp_path, monkeypatch):
    from multilabel_ic.backends.local.torch_engine import TorchEngine

    artifact = local_model.local_artifact.read_bytes()
    job = _sagemaker_job(setup, aws, splits, artifact, tmp_path)
    source = {"job name": job.info["job_name"], "s3 URI": job.artifact, "attached Model": job,
              "Model without a local copy": dataclasses.replace(job, local_artifact=None)}[given]
    train, val = splits
    template = {"train_loss": 0.0, "train_accuracy": 0.0, "speed": [], "images_per_sec": 1.0, "learning_rate": 0.01,
                "time_cost": 0.0, "data_time": 0.0, "compute_time": 0.0}
    monkeypatch.setattr(TorchEngine, "train_epoch", lambda self, epoch, state: {**template, "epoch": epoch})
    continued = Trainer(_hp(train), output_dir=tmp_path / "local", options=LocalOptions(num_workers=0, progress=False)
                        ).fit(train, validation=val, initial_model=source)
    assert continued.info["initial_model"]["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert continued.info["initial_model"]["source"] == (source if isinstance(source, str) else job.artifact
                                                         if source.local_artifact is None else
                                                         str(job.local_artifact))
    shipped = continued.local_artifact.read_bytes()
    assert shipped != artifact and len(shipped) > 0  # the continued run ships its own artifact


@pytest.mark.parametrize("given", ["local path", "s3 URI", "job name"])
def test_a_mismatch_is_refused_before_anything_is_uploaded(given, setup, aws, splits, local_model, tmp_path):
    train, val = splits
    artifact = local_model.local_artifact
    if given == "s3 URI":
        setup.client("s3").put_object(Bucket=BUCKET, Key="old/model.tar.gz", Body=artifact.read_bytes())
        source = f"s3://{BUCKET}/old/model.tar.gz"
    elif given == "job name":
        source = _sagemaker_job(setup, aws, splits, artifact.read_bytes(), tmp_path).info["job_name"]
    else:
        source = str(artifact)
    sm = setup.client("sagemaker")
    jobs = len(sm.list_training_jobs()["TrainingJobSummaries"])
    puts = _puts(setup)
    hp = _hp(train, num_layers=32, image_shape="3,26,26")
    with pytest.raises(UsageError) as e:
        Trainer(hp, backend=_backend(setup), output_dir=tmp_path / "out").fit(train, validation=val,
                                                                               initial_model=source)
    assert "num_layers is 20 in the model and 32 here; image_shape is 3,28,28 in the model and 3,26,26 here" \
        in str(e.value) and source in str(e.value)
    assert puts == [] and not (tmp_path / "out").exists()
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) == jobs


def test_jobs_without_a_model_and_two_initial_models_are_refused(setup, aws, splits, local_model, tmp_path):
    train, val = splits
    with pytest.raises(TrainingError):
        _sagemaker_job(setup, aws, splits, b"", tmp_path, outcome="Failed", reason="refused by the test")
    failed = setup.client("sagemaker").list_training_jobs()["TrainingJobSummaries"][0]["TrainingJobName"]
    backend = _backend(setup, score_validation=False)
    trainer = Trainer(_hp(train), backend=backend, output_dir=tmp_path / "out")
    with pytest.raises(UsageError, match=f"training job {failed} is Failed, not Completed"):
        trainer.fit(train, validation=val, initial_model=failed)
    with pytest.raises(BackendError, match="initial model no-such-job: no training job of that name"):
        trainer.fit(train, validation=val, initial_model="no-such-job")
    both = Trainer(_hp(train), backend=_backend(setup, model_uri=f"s3://{BUCKET}/m/model.tar.gz"),
                   output_dir=tmp_path / "out")
    with pytest.raises(UsageError, match="give the initial model once"):
        both.fit(train, validation=val, initial_model=local_model.local_artifact)
