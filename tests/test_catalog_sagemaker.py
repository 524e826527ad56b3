"""The failure catalog of the SageMaker verbs and backend (issue 22), against the moto server: an endpoint's answer
that does not fit the class names, an artifact that is not there, an endpoint that does not exist, S3 objects that
went missing. Each case: one clear error line (CLI) or one MultilabelICError (API), and nothing left on disk."""

from __future__ import annotations

import json

import boto3
import pytest
import requests
from catalog_support import CLASSES, ApiCase, CliCase, check_api_case, check_cli_case

from multilabel_ic import BackendError, UsageError

REGION = "us-east-1"
BUCKET = "ic-catalog-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
CONNECT = ["--region", REGION, "--role", ROLE, "--bucket", BUCKET]
ARTIFACT = f"s3://{BUCKET}/runs/job-1/output/model.tar.gz"

_AWS: dict = {}  # the moto server and boto3 session of the running case


@pytest.fixture(scope="module")
def boto_session(moto_server):
    return boto3.Session(region_name=REGION)  # one per module: botocore loads each service's model once


@pytest.fixture()
def moto(aws, boto_session, monkeypatch):
    """A fresh emulated account with one bucket; every backend the CLI builds uses the module's session."""
    boto_session.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setattr(boto3, "Session", lambda **kw: boto_session)
    _AWS.update(server=aws, session=boto_session)
    yield
    _AWS.clear()


def _s3():
    return _AWS["session"].client("s3")


def _backend():
    from multilabel_ic.backends.sagemaker import SageMakerBackend

    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, prefix="team/ic", region=REGION, session=_AWS["session"],
                               poll_interval=0.01, progress=False, logs=False)
    backend.image = lambda: IMAGE
    return backend


def _answers(body) -> None:
    """The endpoint's next answer: ``body`` as JSON, or raw text when it is a str."""
    raw = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(f"{_AWS['server'].url}/moto-api/static/sagemaker/endpoint-results", timeout=10, json={
        "region": REGION, "results": [{"Body": raw, "ContentType": "application/json",
                                       "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}]})
    r.raise_for_status()


def _predict(body):
    def argv(ws, tmp):
        _answers(body)
        return ["--quiet", "predict", "--endpoint", "ep", str(ws.jpeg), "--region", REGION, "--classes", CLASSES]
    return argv


def _with_artifact(data: bytes | None, *argv: str):
    """``argv`` once the artifact holds ``data`` (None: nothing there)."""
    def make(ws, tmp):
        if data is not None:
            _s3().put_object(Bucket=BUCKET, Key=ARTIFACT[len(f"s3://{BUCKET}/"):], Body=data)
        return [a.replace("{tmp}", str(tmp)) for a in argv]
    return make


def _finished_job_without_artifact() -> str:
    from multilabel_ic.backends.sagemaker import request as rq

    name = rq.job_name("done")
    _AWS["session"].client("sagemaker").create_training_job(**rq.training_job_request(
        name=name, role_arn=ROLE, image=IMAGE, channels=rq.recordio_channels(
            {"train": f"s3://{BUCKET}/d/t/", "validation": f"s3://{BUCKET}/d/v/"}),
        hyperparameters={"num_classes": "5", "num_training_samples": "10", "mini_batch_size": "2"},
        output_path=f"s3://{BUCKET}/out", instance_type="ml.p3.2xlarge", instance_count=1, volume_size=50,
        max_run=3600))
    return name


def _attach_argv(ws, tmp):
    return ["--quiet", "attach", _finished_job_without_artifact(), "--region", REGION, "--output", str(tmp / "att"),
            "--classes", CLASSES]


NAN_ANSWER = '[0.1, 0.2, NaN, 0.4, 0.5]'

CLI_CASES = [
    # predict --endpoint: the answer must be one finite number per class name
    CliCase("sagemaker-trust-endpoint-fewer-scores", _predict([0.9, 0.1, 0.2]), 1,
            "answered 3 scores but 5 class names were given"),
    CliCase("sagemaker-trust-endpoint-more-scores", _predict([0.1] * 7), 1,
            "answered 7 scores but 5 class names were given"),
    CliCase("sagemaker-trust-endpoint-nan", _predict(NAN_ANSWER), 1, "score 2 is nan, not a finite number"),
    CliCase("sagemaker-trust-endpoint-infinity", _predict("[0.1, Infinity, 0.3, 0.4, 0.5]"), 1,
            "score 1 is inf, not a finite number"),
    CliCase("sagemaker-trust-endpoint-not-a-list", _predict({"prediction": [0.1] * 5}), 1,
            "expected a list of one score per class"),
    CliCase("sagemaker-trust-endpoint-empty-list", _predict([]), 1, "expected a list of one score per class"),
    CliCase("sagemaker-trust-endpoint-strings", _predict(["0.1", "0.2", "0.3", "0.4", "0.5"]), 1,
            "score 0 is '0.1', not a number"),
    CliCase("sagemaker-trust-endpoint-booleans", _predict([True, False, False, False, True]), 1,
            "score 0 is True, not a number"),
    CliCase("sagemaker-trust-endpoint-not-json", _predict("<html>502 Bad Gateway</html>"), 1,
            "with a body that is not JSON"),
    # deploy / transform: the s3:// artifact is checked before anything is created
    CliCase("sagemaker-trust-deploy-missing-artifact", _with_artifact(None, "--quiet", "deploy", ARTIFACT, *CONNECT), 1,
            f"cannot check the model artifact ({ARTIFACT}): no such object"),
    CliCase("sagemaker-trust-deploy-empty-artifact", _with_artifact(b"", "--quiet", "deploy", ARTIFACT, *CONNECT), 1,
            f"model artifact {ARTIFACT} is empty (0 bytes)"),
    CliCase("sagemaker-trust-deploy-artifact-folder", _with_artifact(
        b"x", "--quiet", "deploy", f"s3://{BUCKET}/runs/job-1/output/", *CONNECT), 2, "names a folder, not an object"),
    CliCase("sagemaker-trust-deploy-no-bucket", _with_artifact(None, "--quiet", "deploy", "s3:///model.tar.gz",
                                                               *CONNECT), 2, "names no bucket"),
    CliCase("sagemaker-trust-transform-missing-artifact", _with_artifact(
        None, "--quiet", "transform", ARTIFACT, f"s3://{BUCKET}/incoming/", *CONNECT), 1,
        f"cannot check the model artifact ({ARTIFACT}): no such object"),
    CliCase("sagemaker-trust-transform-input-bucket-missing", _with_artifact(
        b"artifact", "--quiet", "transform", ARTIFACT, "s3://no-such-bucket-here/incoming/", *CONNECT), 1,
        "the bucket 'no-such-bucket-here' does not exist"),
    # delete-endpoint / attach
    CliCase("sagemaker-trust-delete-missing-endpoint", lambda ws, t: ["--quiet", "delete-endpoint", "nope", "--region",
                                                                      REGION], 1,
            "endpoint 'nope' does not exist in us-east-1; nothing was deleted"),
    CliCase("sagemaker-trust-attach-artifact-deleted", _attach_argv, 1, "cannot download the artifact of training job"),
]


def _deploy(uri):
    return lambda ws, t: _backend().deploy(uri)


def _upload_into_a_channel_with_a_stranger(ws, tmp):
    from multilabel_ic.backends.sagemaker.s3 import content_digest, hash_files

    data = ws.data
    digest = content_digest(hash_files((data.image_path(i), p) for i, p in enumerate(data.paths)))
    _s3().put_object(Bucket=BUCKET, Key=f"team/ic/data/train/{digest}/README", Body=b"mine")
    return _backend().upload(data, data)


def _predictor_answering(body):
    def call(ws, tmp):
        from multilabel_ic.backends.sagemaker.endpoint import SageMakerPredictor

        _answers(body)
        return SageMakerPredictor(_backend(), "ep", class_names=CLASSES.split(",")).predict(ws.jpeg.read_bytes())
    return call


def _delete_missing_endpoint(ws, tmp):
    from multilabel_ic.backends.sagemaker.teardown import delete_endpoint

    return delete_endpoint(_backend(), "ep")


API_CASES = [
    ApiCase("sagemaker-trust-api-deploy-missing-artifact", _deploy(ARTIFACT), BackendError,
            "nothing was created"),
    ApiCase("sagemaker-trust-api-deploy-local-path", _deploy("runs/model.tar.gz"), UsageError,
            "model artifact 'runs/model.tar.gz' is not an s3:// URI"),
    ApiCase("sagemaker-trust-api-transform-missing-artifact",
            lambda ws, t: _backend().batch_transform(ARTIFACT, f"s3://{BUCKET}/in/"), BackendError,
            f"cannot check the model artifact ({ARTIFACT}): no such object"),
    ApiCase("sagemaker-trust-api-predict-class-count", _predictor_answering([0.5, 0.5]), BackendError,
            "endpoint ep answered 2 scores but 5 class names were given"),
    ApiCase("sagemaker-trust-api-predict-nan", _predictor_answering(NAN_ANSWER), BackendError,
            "score 2 is nan, not a finite number"),
    ApiCase("sagemaker-trust-api-delete-missing-endpoint", _delete_missing_endpoint, BackendError,
            "endpoint 'ep' does not exist"),
    ApiCase("sagemaker-trust-api-channel-with-a-stranger", _upload_into_a_channel_with_a_stranger, BackendError,
            "holds 1 objects that are not part of this upload"),
    ApiCase("sagemaker-trust-api-attach-artifact-deleted",
            lambda ws, t: _backend().attach(_finished_job_without_artifact(), output_dir=t / "att",
                                            class_names=CLASSES.split(",")), BackendError,
            "was moved or deleted since"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys, moto):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path, moto):
    check_api_case(case, ws, tmp_path)


def test_the_case_ids_are_this_areas():
    ids = [c.id for c in CLI_CASES + API_CASES]
    assert len(set(ids)) == len(ids) and all(i.startswith("sagemaker-trust-") for i in ids)
