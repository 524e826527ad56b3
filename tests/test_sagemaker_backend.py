"""The SageMaker backend end to end against a moto server on 127.0.0.1 (real boto3, real SDK image URIs)."""

from __future__ import annotations

import io
import json
import re
import time

import boto3
import numpy as np
import pytest
import torch
from botocore.awsrequest import AWSResponse

from multilabel_ic import BackendError, DataError, Hyperparameters, Trainer, TrainingError, UsageError
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.backends.sagemaker.cloudwatch import LOG_GROUP
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

REGION = "us-east-1"
BUCKET = "ic-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
LOG_LINES = [
    "[11/24/2026 07:41:14 INFO 140000000000] Reading default configuration from /opt/amazon/lib/python2.7/site-packages/image_classification/default-input.json",
    "[11/24/2026 07:41:20 INFO 140000000000] Epoch[0] Batch [20]#011Speed: 111.811 samples/sec#011accuracy=0.452381",
    "[11/24/2026 07:41:42 INFO 140000000000] Epoch[0] Train-accuracy=0.677083",
    "[11/24/2026 07:41:42 INFO 140000000000] Epoch[0] Time cost=102.745",
    "[11/24/2026 07:41:45 INFO 140000000000] Epoch[0] Validation-accuracy=0.729492",
    "[11/24/2026 07:41:45 INFO 140000000000] Storing the best model with validation accuracy: 0.729492",
    "[11/24/2026 07:41:50 INFO 140000000000] Epoch[1] Batch [20]#011Speed: 131.393 samples/sec#011accuracy=0.770503",
    "[11/24/2026 07:42:42 INFO 140000000000] Epoch[1] Train-accuracy=0.80",
    "[11/24/2026 07:42:42 INFO 140000000000] Epoch[1] Time cost=98.5",
    "[11/24/2026 07:42:45 INFO 140000000000] Epoch[1] Validation-accuracy=0.81",
]

# What the AWS MS-COCO example sends (its notebook, with the SDK's v2 TrainingInput channels).
COCO_HP = dict(num_layers=18, use_pretrained_model=1, image_shape="3,224,224", num_classes=5, mini_batch_size=128,
               resize=256, epochs=5, learning_rate=0.001, use_weighted_loss=1,
               augmentation_type="crop_color_transform", precision_dtype="float32", multi_label=1)


def _model_tar(num_classes=5, layers=18, shape=(3, 224, 224)) -> bytes:
    torch.manual_seed(0)
    args, aux = mxnet_state_dict(ResNetV2(num_classes, layers, shape))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = write_model_tar(Path(d) / "model.tar.gz", {3: ({k: v.numpy() for k, v in args.items()},
                                                           {k: v.numpy() for k, v in aux.items()})},
                            num_classes=num_classes, num_layers=layers, image_shape=shape, multi_label=True)
        return p.read_bytes()


@pytest.fixture(scope="module")
def model_tar_bytes():
    return _model_tar()


class JobSimulator:
    """Plays the part of the training container: after CreateTrainingJob it writes the job's CloudWatch log lines and
    its model.tar.gz where SageMaker would, or marks the job failed / still running."""

    def __init__(self, session, server, artifact: bytes, *, outcome="Completed", reason=None, lines=LOG_LINES):
        self.session, self.server, self.artifact = session, server, artifact
        self.outcome, self.reason, self.lines = outcome, reason, lines
        self.requests: list[dict] = []
        session.events.register("provide-client-params.sagemaker.CreateTrainingJob", self._record)
        session.events.register("after-call.sagemaker.CreateTrainingJob", self._after_create)

    def _record(self, params, **kwargs):
        self.requests.append(dict(params))

    def _after_create(self, **kwargs):
        params = self.requests[-1]
        name = params["TrainingJobName"]
        out = params["OutputDataConfig"]["S3OutputPath"]
        bucket, _, prefix = out[5:].partition("/")
        s3 = boto3.client("s3", region_name=REGION)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/output/model.tar.gz", Body=self.artifact)
        logs = boto3.client("logs", region_name=REGION)
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        stream = f"{name}/algo-1-1700000000"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(self.lines)])
        if self.outcome != "Completed":
            self.server.set_training_status(name, self.outcome, self.reason)


@pytest.fixture()
def setup(aws):
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    return session


def _backend(session, **kw):
    settings = dict(role=ROLE, bucket=BUCKET, prefix="ic-multilabel", region=REGION, session=session,
                    instance_type="ml.p3.2xlarge", instance_count=1, volume_size=50, max_run=360000,
                    poll_interval=0.01, progress=False)
    return SageMakerBackend(**{**settings, **kw})


def _coco5_splits(coco5_200):
    # the example: all selected images, shuffled, 2500 train / the rest validation (scaled to the test data)
    return coco5_200.split(train_size=150, seed=0)


def test_coco5_workflow_sends_exactly_the_examples_request(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    train, val = _coco5_splits(coco5_200)
    JobSimulator(setup, aws, model_tar_bytes)
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    model = Trainer(hp, backend=_backend(setup), output_dir=tmp_path).fit(train, validation=val)

    sm = setup.client("sagemaker")
    desc = sm.describe_training_job(TrainingJobName=model.info["job_name"])
    assert desc["HyperParameters"] == {
        "num_layers": "18", "use_pretrained_model": "1", "image_shape": "3,224,224", "num_classes": "5",
        "mini_batch_size": "128", "resize": "256", "epochs": "5", "learning_rate": "0.001",
        "num_training_samples": "2500", "use_weighted_loss": "1",
        "augmentation_type": "crop_color_transform", "precision_dtype": "float32", "multi_label": "1"}
    assert desc["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert desc["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert desc["RoleArn"] == ROLE
    assert desc["ResourceConfig"] == {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    assert desc["StoppingCondition"]["MaxRuntimeInSeconds"] == 360000
    assert desc["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/ic-multilabel/output"
    channels = {c["ChannelName"]: c for c in desc["InputDataConfig"]}
    assert list(channels) == ["train", "validation", "train_lst", "validation_lst"]
    prefixes = {}
    for name, ch in channels.items():
        assert ch["ContentType"] == "application/x-image"
        uri = ch["DataSource"]["S3DataSource"]["S3Uri"]
        assert re.fullmatch(rf"s3://{BUCKET}/ic-multilabel/data/{name}/[0-9a-f]{{16}}/", uri), uri
        assert ch["DataSource"]["S3DataSource"] == {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                    "S3DataDistributionType": "FullyReplicated"}
        prefixes[name] = uri[len(f"s3://{BUCKET}/"):]
    # each channel holds exactly what the algorithm reads: the images, or one .lst
    s3 = setup.client("s3")

    def keys(name):
        return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefixes[name])["Contents"]}

    assert keys("train") == {f"{prefixes['train']}{p}" for p in train.paths}
    assert keys("validation") == {f"{prefixes['validation']}{p}" for p in val.paths}
    assert keys("train_lst") == {f"{prefixes['train_lst']}train.lst"}
    lst = s3.get_object(Bucket=BUCKET, Key=f"{prefixes['train_lst']}train.lst")["Body"].read().decode()
    first = lst.splitlines()[0].split("\t")
    assert len(first) == 7 and first[-1] == train.paths[0]

    # metrics parsed from the job's log lines, in the local backend's structure
    epochs = model.metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[0]["speed"] == [111.811] and epochs[0]["train_accuracy"] == pytest.approx(0.677083)
    assert epochs[0]["time_cost"] == pytest.approx(102.745) and epochs[1]["validation_accuracy"] == 0.81
    assert model.metrics["final"]["validation_accuracy"] == 0.81
    assert model.local_artifact.read_bytes() == model_tar_bytes
    meta = json.loads((tmp_path / "model-metadata.json").read_text())
    assert meta["class_names"] == train.class_names and meta["job_name"] == model.info["job_name"]
    assert model.artifact == f"s3://{BUCKET}/ic-multilabel/output/{model.info['job_name']}/output/model.tar.gz"

    # the downloaded artifact also serves locally
    local = model.predictor()
    assert len(local.predict(val.image_path(0).read_bytes())) == 5

    # deploy -> predict with JPEG bytes -> delete
    aws.queue_invoke_results([[0.9, 0.1, 0.2, 0.05, 0.7]])
    with model.deploy(instance_type="ml.m5.xlarge", initial_instance_count=1) as endpoint:
        assert sm.describe_endpoint(EndpointName=endpoint.endpoint_name)["EndpointStatus"] == "InService"
        probs = endpoint.predict(val.image_path(0).read_bytes(), content_type="image/jpeg")
        assert probs == [0.9, 0.1, 0.2, 0.05, 0.7]
        assert endpoint.predict_labels(val.image_path(0).read_bytes(), threshold=0.5) == ["person", "airplane"]
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_rerunning_a_fit_does_not_upload_again(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    train, val = _coco5_splits(coco5_200)
    JobSimulator(setup, aws, model_tar_bytes)
    puts = []
    setup.events.register("provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"]))
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    backend = _backend(setup)
    Trainer(hp, backend=backend, output_dir=tmp_path / "a").fit(train, validation=val)
    first = len(puts)
    assert first == len(train) + len(val) + 2
    Trainer(hp, backend=backend, output_dir=tmp_path / "b").fit(train, validation=val)
    assert len(puts) == first  # same sizes and MD5s: nothing re-sent


def test_recordio_and_manifest_channels(setup, coco5_200):
    train, val = _coco5_splits(coco5_200)
    rec = _backend(setup, input_format="recordio").upload(train, val)
    assert [(c["ChannelName"], c["ContentType"]) for c in rec] == [("train", "application/x-recordio"),
                                                                   ("validation", "application/x-recordio")]
    s3 = setup.client("s3")
    bucket, key = rec[0]["DataSource"]["S3DataSource"]["S3Uri"][5:].split("/", 1)
    assert key.startswith("ic-multilabel/data/train/")
    head = s3.get_object(Bucket=bucket, Key=f"{key}train.rec")["Body"].read(4)
    assert head == b"\x0a\x23\xd7\xce"  # RecordIO magic
    man = _backend(setup, input_format="manifest", manifest_label_format="class-id").upload(train, val)
    ch = man[0]
    assert ch["InputMode"] == "Pipe" and ch["RecordWrapperType"] == "RecordIO"
    assert ch["ContentType"] == "application/x-recordio; label-format=class-id"
    src = ch["DataSource"]["S3DataSource"]
    assert src["S3DataType"] == "AugmentedManifestFile" and src["AttributeNames"] == ["source-ref", "class"]
    bucket, key = src["S3Uri"][5:].split("/", 1)
    assert re.fullmatch(r"ic-multilabel/data/train_manifest/[0-9a-f]{16}/train.manifest", key), key
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    line = json.loads(body.splitlines()[0])
    assert re.fullmatch(rf"s3://{BUCKET}/ic-multilabel/data/train_images/[0-9a-f]{{16}}/{re.escape(train.paths[0])}",
                        line["source-ref"]), line["source-ref"]
    s3.head_object(Bucket=BUCKET, Key=line["source-ref"][len(f"s3://{BUCKET}/"):])  # the image is there
    assert json.loads(line["class"]) == [int(i) for i in np.flatnonzero(train.labels[0])]


def test_distributed_spot_incremental_request(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    train, val = _coco5_splits(coco5_200)
    sim = JobSimulator(setup, aws, model_tar_bytes)
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500, kv_store="dist_sync")
    backend = _backend(setup, use_spot=True, max_wait=400000, checkpoint_s3_uri=f"s3://{BUCKET}/ckpt",
                       tags={"team": "vision"}, model_uri=f"s3://{BUCKET}/old/model.tar.gz")
    backend.instance_count = 2
    Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    req = sim.requests[0]
    assert req["ResourceConfig"]["InstanceCount"] == 2 and req["HyperParameters"]["kv_store"] == "dist_sync"
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 360000, "MaxWaitTimeInSeconds": 400000}
    assert req["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/ckpt"}
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}]
    model_ch = req["InputDataConfig"][-1]
    assert model_ch["ChannelName"] == "model" and model_ch["ContentType"] == "application/x-sagemaker-model"
    import re

    assert re.match(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", req["TrainingJobName"])


def test_failed_job_raises_with_the_failure_reason(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    train, val = _coco5_splits(coco5_200)
    JobSimulator(setup, aws, model_tar_bytes, outcome="Failed",
                 reason="ClientError: The number of input images must be bigger or equal to the mini_batch_size.")
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    with pytest.raises(TrainingError, match="ended with status Failed: ClientError: The number of input") as e:
        Trainer(hp, backend=_backend(setup), output_dir=tmp_path).fit(train, validation=val)
    assert e.value.job_name.startswith("ic-multilabel-") and e.value.status == "Failed"


def test_ctrl_c_asks_sagemaker_to_stop_the_job(setup, aws, coco5_200, model_tar_bytes, tmp_path, monkeypatch, caplog):
    train, val = _coco5_splits(coco5_200)
    JobSimulator(setup, aws, model_tar_bytes, outcome="InProgress")
    stops = []
    setup.events.register("provide-client-params.sagemaker.StopTrainingJob", lambda params, **kw: stops.append(params))
    def interrupt(_):
        raise KeyboardInterrupt

    backend = _backend(setup, max_attempts=2)
    backend.sleep = interrupt  # Ctrl-C while waiting for the job
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    with pytest.raises(KeyboardInterrupt):
        Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    assert len(stops) == 1 and stops[0]["TrainingJobName"].startswith("ic-multilabel-")
    assert "asking SageMaker to stop training job" in caplog.text
    assert "stop requested" in caplog.text or "stop-training-job --training-job-name" in caplog.text


def test_missing_bucket_and_role(setup, coco5_200, tmp_path):
    train, val = _coco5_splits(coco5_200)
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    backend = SageMakerBackend(role=ROLE, bucket="no-such-bucket", region=REGION, session=setup, progress=False)
    with pytest.raises(BackendError, match="S3 bucket 'no-such-bucket' does not exist"):
        Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    backend = SageMakerBackend(role="NoSuchRole", bucket=BUCKET, region=REGION, session=setup, progress=False)
    with pytest.raises(BackendError, match="iam.get_role failed: NoSuchEntity") as e:
        Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    assert e.value.__cause__ is not None
    iam = setup.client("iam")
    iam.create_role(RoleName="SageMakerRole", AssumeRolePolicyDocument="{}")
    assert SageMakerBackend(role="SageMakerRole", bucket=BUCKET, region=REGION, session=setup).role_arn().endswith(
        ":role/SageMakerRole")
    with pytest.raises(BackendError, match="validation channel"):
        _backend(setup).upload(train, None)
    # neither is needed to build a backend (endpoints, attach), but training says which option is missing
    with pytest.raises(UsageError, match=r"pass bucket= \(CLI: --bucket\)"):
        Trainer(hp, backend=SageMakerBackend(role=ROLE, region=REGION, session=setup), output_dir=tmp_path).fit(
            train, validation=val)
    with pytest.raises(UsageError, match=r"pass role= .*CLI: --role"):
        Trainer(hp, backend=SageMakerBackend(bucket=BUCKET, region=REGION, session=setup), output_dir=tmp_path).fit(
            train, validation=val)


def test_throttling_is_answered_with_retries(setup):
    backend = _backend(setup)
    sm = backend.client("sagemaker")
    calls = []

    def throttle(request, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))
        return None

    sm.meta.events.register("before-send.sagemaker.ListTrainingJobs", throttle)
    assert backend._call("sagemaker", "list_training_jobs")["TrainingJobSummaries"] == []
    assert len(calls) == 3


class _Raw(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


def test_batch_transform(setup, aws, coco5_200, model_tar_bytes):
    _, val = _coco5_splits(coco5_200)
    small = val.subset(range(3))
    s3 = setup.client("s3")
    s3.put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=model_tar_bytes)
    expected = [[0.1 * (i + 1)] * 5 for i in range(3)]

    seen = []
    setup.events.register("provide-client-params.sagemaker.CreateTransformJob", lambda params, **kw: seen.append(params))

    def write_outputs(**kwargs):  # what the transform container would write
        params = seen[-1]
        out = params["TransformOutput"]["S3OutputPath"]
        assert params["TransformOutput"]["Accept"] == "application/jsonlines"
        assert params["TransformInput"]["ContentType"] == "application/x-image"
        bucket, _, prefix = out[5:].partition("/")
        for p, probs in zip(small.paths, expected):
            boto3.client("s3", region_name=REGION).put_object(
                Bucket=bucket, Key=f"{prefix}/{p}.out", Body=json.dumps({"prediction": probs}) + "\n")

    setup.events.register("after-call.sagemaker.CreateTransformJob", write_outputs)
    preds = _backend(setup).batch_transform(f"s3://{BUCKET}/models/model.tar.gz", small)
    assert preds == expected
    # over an S3 prefix of images already in the bucket: predictions keyed by input URI
    for p in small.paths:
        s3.put_object(Bucket=BUCKET, Key=f"incoming/{p}", Body=small.root.joinpath(p).read_bytes())
    by_uri = _backend(setup).batch_transform(f"s3://{BUCKET}/models/model.tar.gz", f"s3://{BUCKET}/incoming/")
    assert by_uri == {f"s3://{BUCKET}/incoming/{p}": e for p, e in zip(small.paths, expected)}
    with pytest.raises(BackendError, match="no objects under"):
        _backend(setup).batch_transform(f"s3://{BUCKET}/models/model.tar.gz", f"s3://{BUCKET}/empty/")


def test_profile_or_session_not_both(setup):
    with pytest.raises(ValueError, match="either session= or profile="):
        SageMakerBackend(role=ROLE, bucket=BUCKET, region=REGION, session=setup, profile="dev")


# ------------------------------------------------------------------ nothing left behind, nothing launched in vain
def _fail(client, operation: str, code: str = "ValidationException", message: str = "refused by the test"):
    """Make ``operation`` answer with an AWS error (a botocore before-call hook)."""
    def handler(**kwargs):
        body = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://sagemaker", 400, {}, _Raw(b"")), body

    client.meta.events.register(f"before-call.sagemaker.{operation}", handler)


def _answer(client, operation: str, body: dict):
    def handler(**kwargs):
        return AWSResponse("https://sagemaker", 200, {}, _Raw(b"")), {**body, "ResponseMetadata": {
            "HTTPStatusCode": 200}}

    client.meta.events.register(f"before-call.sagemaker.{operation}", handler)


def _ctrl_c_on_poll(client, operation: str, body: dict, poll: int = 2):
    """``operation`` answers ``body`` until the user presses Ctrl-C during the ``poll``-th call."""
    calls = []

    def handler(**kwargs):
        calls.append(1)
        if len(calls) == poll:
            raise KeyboardInterrupt
        return AWSResponse("https://sagemaker", 200, {}, _Raw(b"")), {**body, "ResponseMetadata": {
            "HTTPStatusCode": 200}}

    client.meta.events.register(f"before-call.sagemaker.{operation}", handler)


def _leftovers(sm) -> tuple[list, list, list]:
    return (sm.list_models()["Models"], sm.list_endpoint_configs()["EndpointConfigs"],
            sm.list_endpoints()["Endpoints"])


@pytest.mark.parametrize("fault", ["CreateEndpointConfig fails", "CreateEndpoint fails", "endpoint goes Failed",
                                   "Ctrl-C while waiting for InService"])
def test_deploy_deletes_what_it_created_on_every_failure(fault, setup, aws, model_tar_bytes):
    setup.client("s3").put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=model_tar_bytes)
    backend = _backend(setup)
    sm = backend.client("sagemaker")
    expected: type[BaseException] = BackendError
    if fault == "CreateEndpointConfig fails":
        _fail(sm, "CreateEndpointConfig")
    elif fault == "CreateEndpoint fails":
        _fail(sm, "CreateEndpoint", "ResourceLimitExceeded", "account-level service limit")
    elif fault == "endpoint goes Failed":
        _answer(sm, "DescribeEndpoint", {"EndpointName": "x", "EndpointStatus": "Failed",
                                         "FailureReason": "the primary container did not pass the ping check"})
    else:
        _ctrl_c_on_poll(sm, "DescribeEndpoint", {"EndpointName": "x", "EndpointStatus": "Creating"})
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        backend.deploy(f"s3://{BUCKET}/models/model.tar.gz")
    assert _leftovers(sm) == ([], [], [])


def test_batch_transform_deletes_its_model_and_stops_the_job_on_ctrl_c(setup, aws, coco5_200, model_tar_bytes):
    _, val = _coco5_splits(coco5_200)
    setup.client("s3").put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=model_tar_bytes)
    backend = _backend(setup)
    sm = backend.client("sagemaker")
    stops = []
    sm.meta.events.register("provide-client-params.sagemaker.StopTransformJob", lambda params, **kw: stops.append(params))
    _answer(sm, "StopTransformJob", {})  # the emulator does not implement it
    _ctrl_c_on_poll(sm, "DescribeTransformJob", {"TransformJobName": "x", "TransformJobStatus": "InProgress"})
    with pytest.raises(KeyboardInterrupt):
        backend.batch_transform(f"s3://{BUCKET}/models/model.tar.gz", val.subset(range(2)))
    assert len(stops) == 1 and stops[0]["TransformJobName"].startswith("ic-multilabel-bt")
    assert sm.list_models()["Models"] == []


def test_a_finished_batch_transform_leaves_no_model(setup, aws, coco5_200, model_tar_bytes):
    _, val = _coco5_splits(coco5_200)
    small = val.subset(range(2))
    setup.client("s3").put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=model_tar_bytes)
    seen = []
    setup.events.register("provide-client-params.sagemaker.CreateTransformJob", lambda params, **kw: seen.append(params))

    def write_outputs(**kwargs):
        out = seen[-1]["TransformOutput"]["S3OutputPath"]
        bucket, _, prefix = out[5:].partition("/")
        for p in small.paths:
            boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=f"{prefix}/{p}.out",
                                                              Body=json.dumps({"prediction": [0.5] * 5}))

    setup.events.register("after-call.sagemaker.CreateTransformJob", write_outputs)
    backend = _backend(setup)
    assert backend.batch_transform(f"s3://{BUCKET}/models/model.tar.gz", small) == [[0.5] * 5] * 2
    assert backend.client("sagemaker").list_models()["Models"] == []


def test_switching_the_input_format_keeps_each_channel_exact_and_deletes_nothing(setup, coco5_200):
    train, val = _coco5_splits(coco5_200)
    s3 = setup.client("s3")
    deletes = []
    setup.events.register("provide-client-params.s3.DeleteObjects", lambda params, **kw: deletes.append(params))

    def train_channel(input_format):
        ch = _backend(setup, input_format=input_format).upload(train, val)[0]
        prefix = ch["DataSource"]["S3DataSource"]["S3Uri"][len(f"s3://{BUCKET}/"):]
        return prefix, [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]

    lst_prefix, lst_keys = train_channel("lst")
    assert len(lst_keys) == len(train)
    rec_prefix, rec_keys = train_channel("recordio")
    assert rec_keys == [f"{rec_prefix}train.rec"] and rec_prefix != lst_prefix
    assert train_channel("lst") == (lst_prefix, lst_keys)  # the first upload is still whole
    assert deletes == []


@pytest.mark.parametrize("problem", ["fewer images than a batch", "Pipe mode on two instances", "unsupported region",
                                     "single-label model on multi-hot labels"])
def test_jobs_known_to_fail_are_refused_before_any_upload(problem, setup, aws, coco5_200, tmp_path):
    train, val = _coco5_splits(coco5_200)
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    backend = _backend(setup)
    error: type[Exception] = UsageError
    if problem == "fewer images than a batch":
        train, error = train.subset(range(100)), DataError
    elif problem == "Pipe mode on two instances":
        backend = _backend(setup, input_format="manifest", instance_count=2)
    elif problem == "unsupported region":
        backend = SageMakerBackend(role=ROLE, bucket=BUCKET, region="mars-west-1", session=setup, progress=False)
    else:
        hp, error = hp.replace(multi_label=0, use_weighted_loss=0), DataError
    puts = []
    setup.events.register("provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"]))
    with pytest.raises(error):
        Trainer(hp, backend=backend, output_dir=tmp_path / "out").fit(train, validation=val)
    assert puts == [] and not (tmp_path / "out").exists()
    assert setup.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_a_lost_poll_says_the_job_still_runs_and_attach_picks_it_up(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    train, val = _coco5_splits(coco5_200)
    sim = JobSimulator(setup, aws, model_tar_bytes, outcome="InProgress")
    backend = _backend(setup)
    calls = []

    def expire_on_second_poll(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            body = {"Error": {"Code": "ExpiredTokenException", "Message": "The security token has expired"},
                    "ResponseMetadata": {"HTTPStatusCode": 400}}
            return AWSResponse("https://sagemaker", 400, {}, _Raw(b"")), body
        return None

    backend.client("sagemaker").meta.events.register("before-call.sagemaker.DescribeTrainingJob",
                                                     expire_on_second_poll)
    hp = Hyperparameters(**COCO_HP, num_training_samples=2500)
    with pytest.raises(BackendError, match="the job itself still runs on SageMaker") as e:
        Trainer(hp, backend=backend, output_dir=tmp_path / "a").fit(train, validation=val)
    name = sim.requests[0]["TrainingJobName"]
    assert f".attach('{name}')" in str(e.value) and f"--training-job-name {name}" in str(e.value)
    aws.set_training_status(name, "Completed")
    model = _backend(setup).attach(name, output_dir=tmp_path / "b", class_names=train.class_names)
    assert model.local_artifact.exists() and model.class_names == train.class_names
    assert model.hyperparameters.num_layers == 18 and model.metrics["job_name"] == name
    assert json.loads((tmp_path / "b" / "model-metadata.json").read_text())["job_name"] == name


def test_both_backends_report_the_same_metric_keys(setup, aws, coco5_200, model_tar_bytes, tmp_path):
    from multilabel_ic import Hyperparameters as HP
    from multilabel_ic.backends.base import FINAL_KEYS, METRIC_KEYS
    from multilabel_ic.backends.local import LocalOptions

    train, val = _coco5_splits(coco5_200)
    JobSimulator(setup, aws, model_tar_bytes)
    remote = Trainer(HP(**COCO_HP, num_training_samples=2500), backend=_backend(setup),
                     output_dir=tmp_path / "sm").fit(train, validation=val)
    small = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=1,
                 multi_label=1, num_training_samples=len(train))
    local = Trainer(HP(**small), output_dir=tmp_path / "local",
                    options=LocalOptions(num_workers=0, progress=False)).fit(train, validation=val)
    for model in (remote, local):
        assert set(METRIC_KEYS) <= set(model.metrics) and tuple(model.metrics["final"]) == FINAL_KEYS
        final = model.metrics["final"]
        assert 0 <= final["mAP"] <= 1 and set(final["per_class_AP"]) == set(train.class_names)
        assert len(final["tuned_thresholds"]) == 5 and final["epoch"] >= 1 and final["num_samples"] == len(val)
    assert remote.metrics["final"]["validation_accuracy"] == 0.81  # the best Validation-accuracy of the job's log
    assert remote.metrics["best_epoch"] == 1 and remote.metrics["saved_epochs"] == [3]
    assert remote.predictor().thresholds == remote.metrics["final"]["tuned_thresholds"]
    for folder, model in ((tmp_path / "sm", remote), (tmp_path / "local", local)):  # the same hooks ran for both
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [r["epoch"] for r in model.metrics["epochs"]]
        assert (folder / "args.json").exists() and (folder / "metrics.png").exists()
        assert json.loads((folder / "metrics.json").read_text())["final"]["mAP"] == model.metrics["final"]["mAP"]


COMPANY = dict(subnets=["subnet-0a1b2c3d", "subnet-4e5f6a7b"], security_group_ids=["sg-0123abcd"],
               volume_kms_key="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
               output_kms_key="alias/ml-output", enable_network_isolation=True,
               encrypt_inter_container_traffic=True, environment={"TEAM": "vision", "COST_CENTRE": "42"},
               tags={"team": "vision", "project": "coco5"})


def test_company_settings_reach_every_resource_as_the_api_documents_them(setup, aws, coco5_200, model_tar_bytes,
                                                                         tmp_path):
    """VPC, KMS keys, network isolation, traffic encryption, tags and environment on the training job, the models,
    the endpoint config, the endpoint and the transform job: each request as botocore sends it (its own shape
    validation passed), recorded on the moto server's way in."""
    train, val = _coco5_splits(coco5_200)
    sim = JobSimulator(setup, aws, model_tar_bytes)
    seen: dict[str, list[dict]] = {}
    for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint", "CreateTransformJob"):
        setup.events.register(f"provide-client-params.sagemaker.{op}",
                              lambda params, _op=op, **kw: seen.setdefault(_op, []).append(dict(params)))
    backend = _backend(setup, instance_count=2, **COMPANY)
    model = Trainer(Hyperparameters(**COCO_HP, num_training_samples=2500), backend=backend,
                    output_dir=tmp_path).fit(train, validation=val)
    tags = [{"Key": "team", "Value": "vision"}, {"Key": "project", "Value": "coco5"}]
    vpc = {"SecurityGroupIds": ["sg-0123abcd"], "Subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]}
    job = sim.requests[0]
    assert job["VpcConfig"] == vpc and job["Tags"] == tags
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == COMPANY["volume_kms_key"]
    assert job["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/ic-multilabel/output",
                                       "KmsKeyId": "alias/ml-output"}
    assert job["EnableNetworkIsolation"] is True and job["EnableInterContainerTrafficEncryption"] is True
    assert job["Environment"] == {"TEAM": "vision", "COST_CENTRE": "42"}

    with model.deploy(instance_type="ml.m5.xlarge", initial_instance_count=1):
        pass
    backend.batch_transform(model, val.subset(range(2)), wait=False)
    assert len(seen["CreateModel"]) == 2  # the endpoint's and the transform job's
    for req in seen["CreateModel"]:
        assert req["VpcConfig"] == vpc and req["Tags"] == tags and req["EnableNetworkIsolation"] is True
        assert req["PrimaryContainer"]["Environment"] == {"TEAM": "vision", "COST_CENTRE": "42"}
    (config,) = seen["CreateEndpointConfig"]
    assert config["KmsKeyId"] == COMPANY["volume_kms_key"] and config["Tags"] == tags
    (endpoint,) = seen["CreateEndpoint"]
    assert endpoint["Tags"] == tags
    (transform,) = seen["CreateTransformJob"]
    assert transform["Tags"] == tags and transform["Environment"] == {"TEAM": "vision", "COST_CENTRE": "42"}
    assert transform["TransformOutput"]["KmsKeyId"] == "alias/ml-output"
    assert transform["TransformResources"]["VolumeKmsKeyId"] == COMPANY["volume_kms_key"]


@pytest.mark.parametrize("change,message", [
    (dict(security_group_ids=None), "needs both 'subnets' and 'security_group_ids'"),
    (dict(subnets=["vpc-123"]), "ids like 'subnet-0123abcd'"),
    (dict(volume_kms_key="my key"), "'volume_kms_key' option of SageMakerBackend takes a KMS key"),
    (dict(tags={"aws:owner": "x"}), "must not start with 'aws:'"),
    (dict(environment={"1BAD": "x"}), "is not a variable name"),
    (dict(enable_network_isolation="yes"), "must be True or False"),
])
def test_invalid_company_settings_fail_before_any_upload(change, message, setup):
    with pytest.raises(UsageError, match=message):
        _backend(setup, **{**COMPANY, **change})
    assert "Contents" not in setup.client("s3").list_objects_v2(Bucket=BUCKET)
