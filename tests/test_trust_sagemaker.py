"""The SageMaker backend never answers wrong in silence and never destroys what is not its own (issue 22), against
the moto server: content-addressed channels, delete-endpoint by description, S3 errors that name the URI and the
fix, checked artifacts and endpoint answers."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from multilabel_ic import BackendError
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.backends.sagemaker import request as rq
from multilabel_ic.backends.sagemaker.endpoint import SageMakerPredictor
from multilabel_ic.cli import main

REGION = "us-east-1"
BUCKET = "ic-trust-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"


@pytest.fixture(scope="module")
def boto_session(moto_server):
    """One boto3 session for the module: botocore loads each service's model once (hooks go on clients only)."""
    return boto3.Session(region_name=REGION)


@pytest.fixture()
def session(aws, boto_session):
    boto_session.client("s3").create_bucket(Bucket=BUCKET)
    return boto_session


def _backend(session, **kw):
    backend = SageMakerBackend(**{"role": ROLE, "bucket": BUCKET, "prefix": "team/ic", "region": REGION,
                                  "session": session, "poll_interval": 0.01, "progress": False, "logs": False, **kw})
    backend.image = lambda: IMAGE  # (the SDK's table lookup takes seconds; test_sagemaker_backend.py checks it)
    return backend


def _record(client, op: str) -> list[dict]:
    seen: list[dict] = []
    client.meta.events.register(f"provide-client-params.s3.{op}", lambda params, **kw: seen.append(dict(params)))
    return seen


# ------------------------------------------------------------------ item 4: every run's channels are its own
def _objects_of(s3, channels: list[dict]) -> dict[str, bytes]:
    """Every object a job with these channels reads: all objects under each S3Prefix channel, and each augmented
    manifest with the images it references."""
    out: dict[str, bytes] = {}

    def get(bucket, key):
        out[f"s3://{bucket}/{key}"] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    for ch in channels:
        src = ch["DataSource"]["S3DataSource"]
        bucket, _, key = src["S3Uri"][5:].partition("/")
        if src["S3DataType"] == "S3Prefix":
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
            assert listed, f"channel {ch['ChannelName']} is empty"
            for obj in listed:
                get(bucket, obj["Key"])
        else:
            get(bucket, key)
            for line in out[src["S3Uri"]].decode().splitlines():
                ref = json.loads(line)["source-ref"]
                get(*ref[5:].split("/", 1))
    return out


@pytest.mark.parametrize("input_format", ["lst", "recordio", "manifest"])
def test_a_second_run_with_other_data_leaves_the_first_jobs_data_as_it_was(input_format, session, coco5):
    backend = _backend(session, input_format=input_format)
    s3 = session.client("s3")
    deletes = _record(backend.client("s3"), "DeleteObjects")
    backend.client("s3").meta.events.register("provide-client-params.s3.DeleteObject",
                                              lambda params, **kw: deletes.append(dict(params)))
    first = backend.upload(coco5.subset(range(0, 4)), coco5.subset(range(4, 6)))
    job = rq.job_name("first")
    backend.client("sagemaker").create_training_job(**rq.training_job_request(
        name=job, role_arn=ROLE, image=IMAGE, hyperparameters={}, channels=first, output_path=f"s3://{BUCKET}/out",
        instance_type="ml.p3.2xlarge", instance_count=1, volume_size=50, max_run=3600,
        input_mode="Pipe" if input_format == "manifest" else "File"))
    described = backend.client("sagemaker").describe_training_job(TrainingJobName=job)["InputDataConfig"]
    before = _objects_of(s3, described)

    # another run: the same file names with other content, other images, other labels
    other = coco5.subset(range(6, 12))
    second = backend.upload(other.subset(range(4)), other.subset(range(4, 6)))
    assert _objects_of(s3, described) == before  # every object the first job reads: still there, unchanged
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in first]
    assert not set(uris) & {c["DataSource"]["S3DataSource"]["S3Uri"] for c in second}
    assert all(u.startswith(f"s3://{BUCKET}/team/ic/data/") for u in uris)
    assert deletes == []

    # the first data again: the same channels, nothing sent again
    puts = _record(backend.client("s3"), "PutObject")
    assert backend.upload(coco5.subset(range(0, 4)), coco5.subset(range(4, 6))) == first
    assert puts == [] and _objects_of(s3, described) == before


def test_objects_whose_etag_is_not_their_md5_are_not_sent_again(session, coco5):
    """SSE-KMS and multipart objects have ETags that are not MD5s: the MD5 kept in their metadata decides."""
    train, val = coco5.subset(range(3)), coco5.subset(range(3, 4))
    _backend(session).upload(train, val)
    backend = _backend(session)

    def kms_etags(parsed, **kwargs):
        for obj in parsed.get("Contents", []):
            obj["ETag"] = '"0123456789abcdef0123456789abcdef"'

    backend.client("s3").meta.events.register("after-call.s3.ListObjectsV2", kms_etags)
    puts = _record(backend.client("s3"), "PutObject")
    backend.upload(train, val)
    assert puts == []


def test_a_channel_changes_with_any_change_of_its_content(session, coco5, tmp_path):
    """The prefix is the content's address: another byte in one image, another name, another label all move it."""
    from multilabel_ic import Dataset

    backend = _backend(session)
    root = tmp_path / "images"
    root.mkdir()
    data = coco5.subset(range(3))
    for p in data.paths:
        (root / p).write_bytes((coco5.root / p).read_bytes())
    local = Dataset(data.paths, data.labels, data.class_names, root=root)

    def train_uris(ds) -> tuple[str, str]:
        ch = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in backend.upload(ds, ds)}
        return ch["train"], ch["train_lst"]

    images, lst = train_uris(local)
    blob = bytearray((root / data.paths[0]).read_bytes())
    blob[-3] ^= 0xFF  # same name, same size, other pixels
    (root / data.paths[0]).write_bytes(bytes(blob))
    changed_images, same_lst = train_uris(local)
    assert changed_images != images and same_lst == lst
    relabelled = Dataset(local.paths, 1 - local.labels, local.class_names, root=root)
    assert train_uris(relabelled)[1] != lst


def test_an_object_of_someone_else_in_a_channel_stops_the_upload(session, coco5):
    from multilabel_ic.backends.sagemaker.s3 import content_digest, hash_files

    train, val = coco5.subset(range(4)), coco5.subset(range(4, 6))
    digest = content_digest(hash_files((train.image_path(i), p) for i, p in enumerate(train.paths)))
    s3 = session.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"team/ic/data/train/{digest}/notes.txt", Body=b"keep me")
    backend = _backend(session)
    puts = _record(backend.client("s3"), "PutObject")
    with pytest.raises(BackendError, match=rf"s3://{BUCKET}/team/ic/data/train/{digest}/ holds 1 objects that are "
                                           rf"not part of this upload .*notes.txt.*aws s3 rm s3://{BUCKET}/team/ic/data/train/"
                                           rf"{digest}/notes.txt\) and run again"):
        backend.upload(train, val)
    assert puts == []
    assert s3.get_object(Bucket=BUCKET, Key=f"team/ic/data/train/{digest}/notes.txt")["Body"].read() == b"keep me"


# ------------------------------------------------------------------ item 8: delete-endpoint by description
def _model(sm, name):
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"})


def _config(sm, name, *models):
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": f"v{i}", "ModelName": m, "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}
        for i, m in enumerate(models)])


def delete_endpoint(backend, name):
    from multilabel_ic.backends.sagemaker.teardown import delete_endpoint

    return delete_endpoint(backend, name)


def _state(sm) -> tuple[set, set, set]:
    return ({m["ModelName"] for m in sm.list_models()["Models"]},
            {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]},
            {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]})


@pytest.fixture()
def sm(session):
    """An account with: endpoint "web" (config "web-config", models "resnet-a" and "resnet-b"), endpoint "batch"
    (config "batch-config", model "resnet-a", shared with web), endpoint "mirror" on "batch-config" too, and a model
    named "web" that belongs to none of them but is used by endpoint "legacy"."""
    client = session.client("sagemaker")
    for m in ("resnet-a", "resnet-b", "web"):
        _model(client, m)
    _config(client, "web-config", "resnet-a", "resnet-b")
    _config(client, "batch-config", "resnet-a")
    _config(client, "legacy-config", "web")
    for endpoint, config in (("web", "web-config"), ("batch", "batch-config"), ("mirror", "batch-config"),
                             ("legacy", "legacy-config")):
        client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    return client


def test_delete_endpoint_deletes_what_the_endpoint_uses_and_keeps_what_others_use(session, sm, caplog):
    report = delete_endpoint(_backend(session), "web")
    models, configs, endpoints = _state(sm)
    assert endpoints == {"batch", "mirror", "legacy"}
    assert configs == {"batch-config", "legacy-config"}  # web-config: deleted
    assert models == {"resnet-a", "web"}  # resnet-b deleted; resnet-a used by batch and mirror; "web" by legacy
    assert report.deleted == [("endpoint", "web"), ("endpoint config", "web-config"), ("model", "resnet-b")]
    assert report.kept == {("model", "resnet-a"): "used by endpoint batch, mirror"}
    assert report.failed == [] and "by hand" not in caplog.text


def test_a_config_shared_by_two_endpoints_outlives_the_first(session, sm):
    backend = _backend(session)
    report = delete_endpoint(backend, "batch")
    assert report.kept == {("endpoint config", "batch-config"): "used by endpoint mirror",
                           ("model", "resnet-a"): "used by endpoint web, mirror"}
    assert _state(sm) == ({"resnet-a", "resnet-b", "web"}, {"web-config", "batch-config", "legacy-config"},
                          {"web", "mirror", "legacy"})
    delete_endpoint(backend, "web")
    report = delete_endpoint(backend, "mirror")  # the last user: now the shared config and model go
    assert report.deleted == [("endpoint", "mirror"), ("endpoint config", "batch-config"), ("model", "resnet-a")]
    assert _state(sm) == ({"web"}, {"legacy-config"}, {"legacy"})


def test_an_endpoint_whose_config_is_gone_loses_only_itself(session, sm, caplog):
    sm.delete_endpoint_config(EndpointConfigName="legacy-config")
    report = delete_endpoint(_backend(session), "legacy")
    assert report.deleted == [("endpoint", "legacy")]
    assert any("legacy-config of legacy no longer exists" in n for n in report.notes)
    assert "web" in _state(sm)[0]  # its model is not known from the config, so it is not guessed from the name
    assert "by hand" not in caplog.text


def test_a_missing_endpoint_deletes_nothing(session, sm):
    before = _state(sm)
    with pytest.raises(BackendError, match="endpoint 'nope' does not exist in us-east-1; nothing was deleted"):
        delete_endpoint(_backend(session), "nope")
    assert _state(sm) == before


def test_a_model_already_gone_is_not_a_failure(session, sm):
    sm.delete_model(ModelName="resnet-b")
    report = delete_endpoint(_backend(session), "web")
    assert report.failed == [] and "model resnet-b was already gone" in report.notes


def test_delete_endpoint_from_the_shell_prints_what_it_did(session, sm, capsys):
    assert main(["delete-endpoint", "batch", "--region", REGION]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["deleted endpoint batch", "kept endpoint config batch-config: used by endpoint mirror",
                   "kept model resnet-a: used by endpoint web, mirror"]
    assert main(["delete-endpoint", "batch", "--region", REGION]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: endpoint 'batch' does not exist") and "list-endpoints" in err


def test_a_failed_delete_keeps_the_rest_and_gives_the_command(session, sm, caplog):
    backend = _backend(session)
    _fail(backend.client("sagemaker"), "sagemaker", "DeleteEndpoint", "AccessDeniedException", "not allowed")
    report = delete_endpoint(backend, "web")
    assert report.failed == [("endpoint", "web")] and report.deleted == []
    assert "aws sagemaker delete-endpoint --endpoint-name web" in caplog.text
    assert _state(sm)[1] >= {"web-config"} and _state(sm)[0] >= {"resnet-a", "resnet-b"}


def test_the_endpoint_of_a_with_block_is_deleted_with_its_config_and_model(session, aws, coco5):
    backend = _backend(session)
    session.client("s3").put_object(Bucket=BUCKET, Key="m/model.tar.gz", Body=b"artifact")
    with backend.deploy(f"s3://{BUCKET}/m/model.tar.gz") as endpoint:
        name = endpoint.endpoint_name
    sm = session.client("sagemaker")
    assert _state(sm) == (set(), set(), set())
    with backend.deploy(f"s3://{BUCKET}/m/model.tar.gz") as endpoint:  # the endpoint deleted behind its back
        sm.delete_endpoint(EndpointName=endpoint.endpoint_name)
    assert _state(sm) == (set(), set(), set()) and name != endpoint.endpoint_name


# ------------------------------------------------------------------ item 19: S3 errors name the URI and the fix
class _Raw(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


def _fail(client, service: str, op: str, code: str, message: str = "refused by the test", status: int = 400):
    """Make ``op`` answer with an AWS error; returns the function that undoes it."""
    def handler(**kwargs):
        body = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return AWSResponse(f"https://{service}", status, {}, _Raw(b"")), body

    client.meta.events.register(f"before-call.{service}.{op}", handler)
    return lambda: client.meta.events.unregister(f"before-call.{service}.{op}", handler)


# the errors S3 answers: HEAD has no body, so only the status; the other calls name the error
CODES = {"NoSuchKey": (404, "no such object"), "AccessDenied": (403, "access denied"),
         "NoSuchBucket": (404, "does not exist")}
HEAD_CODES = {"404": (404, "no such object"), "403": (403, "access denied")}


def _job_with_artifact(session, backend, artifact: bytes | None) -> str:
    """A finished training job; its model.tar.gz is where its ModelArtifacts say (unless ``artifact`` is None)."""
    name = rq.job_name("done")
    sm = backend.client("sagemaker")
    sm.create_training_job(**rq.training_job_request(
        name=name, role_arn=ROLE, image=IMAGE, hyperparameters={"num_classes": "2", "num_training_samples": "10", "mini_batch_size": "2"},
        channels=rq.recordio_channels({"train": f"s3://{BUCKET}/d/t/", "validation": f"s3://{BUCKET}/d/v/"}),
        output_path=f"s3://{BUCKET}/out", instance_type="ml.p3.2xlarge", instance_count=1,
        volume_size=50, max_run=3600))
    uri = sm.describe_training_job(TrainingJobName=name)["ModelArtifacts"]["S3ModelArtifacts"]
    if artifact is not None:
        session.client("s3").put_object(Bucket=BUCKET, Key=uri[5 + len(BUCKET) + 1:], Body=artifact)
    return name


def _transform_outputs(backend, body: bytes):
    """After CreateTransformJob, write what the container would: one .out per input object."""
    seen: list[dict] = []
    sm, s3 = backend.client("sagemaker"), backend.session.client("s3")
    sm.meta.events.register("provide-client-params.sagemaker.CreateTransformJob",
                            lambda params, **kw: seen.append(params))

    def write(**kwargs):
        out = seen[-1]["TransformOutput"]["S3OutputPath"]
        bucket, _, prefix = out[5:].partition("/")
        for key in ("in/a.jpg", "in/b.jpg"):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{key[3:]}.out", Body=body)

    sm.meta.events.register("after-call.sagemaker.CreateTransformJob", write)


def _action(name: str, session, coco5, tmp_path):
    """One S3-using action of the backend: ``(backend, call)``; ``call(i)`` runs it afresh (try ``i``)."""
    backend = _backend(session)
    s3 = session.client("s3")
    if name == "upload":
        def upload(i):
            backend.prefix = f"team/ic/{i}"  # a fresh prefix: nothing is there yet, every object is sent
            return backend.upload(coco5.subset(range(2)), coco5.subset(range(2, 3)))

        return backend, upload
    if name == "download":
        job = _job_with_artifact(session, backend, b"not a real artifact")

        def stop(_artifact):  # the download is the last S3 call; the rest (metrics, plots) is not this test's
            raise _Downloaded

        backend._saved_epochs = stop
        return backend, lambda i: backend.attach(job, output_dir=tmp_path / "attached", class_names=["a", "b"])
    s3.put_object(Bucket=BUCKET, Key="m/model.tar.gz", Body=b"artifact")
    if name == "deploy":
        return backend, lambda i: backend.deploy(f"s3://{BUCKET}/m/model.tar.gz", wait=False)
    for key in ("in/a.jpg", "in/b.jpg"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"jpeg")
    _transform_outputs(backend, b'{"prediction": [0.5, 0.5]}\n')
    return backend, lambda i: backend.batch_transform(f"s3://{BUCKET}/m/model.tar.gz", f"s3://{BUCKET}/in/")


ACTIONS = ("upload", "download", "deploy", "transform")


class _Downloaded(Exception):
    pass


@pytest.mark.parametrize("action", ACTIONS)
def test_every_s3_call_of_the_backend_names_the_uri_and_the_fix(action, session, aws, coco5, tmp_path):
    """Each S3 operation an action makes, failing with each error S3 gives (a missing key or bucket, a refused
    access): a BackendError that names the s3:// URI, what is wrong and the fix; never botocore's bare error."""
    backend, call = _action(action, session, coco5, tmp_path)
    ops: list[str] = []
    record = lambda model, **kw: ops.append(model.name)  # noqa: E731
    backend.client("s3").meta.events.register("before-call.s3", record)
    try:
        call(0)
    except _Downloaded:
        assert (tmp_path / "attached" / "model.tar.gz").read_bytes() == b"not a real artifact"
    backend.client("s3").meta.events.unregister("before-call.s3", record)
    ops = list(dict.fromkeys(ops))
    assert ops, action
    tried = 0
    for op in ops:
        for code, (status, words) in (HEAD_CODES if op == "HeadObject" else CODES).items():
            undo = _fail(backend.client("s3"), "s3", op, code, status=status)
            with pytest.raises(BackendError) as e:
                call(tried + 1)
            undo()
            message = str(e.value)
            assert f"s3://{BUCKET}/" in message and words in message, (op, code, message)
            assert ("s3:" in message if status == 403 else True), (op, code, message)  # the permission to grant
            assert "\n" not in message
            tried += 1
    assert tried >= 2 * len(ops)


def test_a_finished_jobs_missing_artifact_names_the_job_the_uri_and_the_fix(session, tmp_path, capsys):
    backend = _backend(session)
    job = _job_with_artifact(session, backend, None)
    uri = backend.client("sagemaker").describe_training_job(TrainingJobName=job)["ModelArtifacts"]["S3ModelArtifacts"]
    assert main(["--quiet", "attach", job, "--region", REGION, "--output", str(tmp_path / "att"),
                 "--classes", "a,b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download the artifact of training job {job} ({uri}): no such object")
    assert "moved or deleted" in err and "unexpected" not in err
    assert not (tmp_path / "att").exists()  # the folder attach made for it is gone again


# ------------------------------------------------------------------ item 20: artifacts and answers are checked
@pytest.mark.parametrize("call", ["deploy", "transform", "transform of an empty prefix"])
def test_a_missing_artifact_or_input_is_refused_before_anything_is_created(call, session):
    backend = _backend(session)
    sm = backend.client("sagemaker")
    creates: list[str] = []
    sm.meta.events.register("before-call.sagemaker", lambda model, **kw: creates.append(model.name)
                            if model.name.startswith("Create") else None)
    uri = f"s3://{BUCKET}/runs/typo/model.tar.gz"
    message = rf"the model artifact \({uri}\): no such object .*nothing was created"
    if call == "transform of an empty prefix":
        session.client("s3").put_object(Bucket=BUCKET, Key="runs/typo/model.tar.gz", Body=b"artifact")
        message = rf"no objects under s3://{BUCKET}/in/; nothing to transform"
    with pytest.raises(BackendError, match=message):
        backend.deploy(uri) if call == "deploy" else backend.batch_transform(uri, f"s3://{BUCKET}/in/")
    assert creates == [] and _state(sm) == (set(), set(), set())


@pytest.mark.parametrize("answer,message", [
    ([0.1, 0.2, 0.3], "answered 3 scores but 5 class names were given"),
    ([0.1] * 6, "answered 6 scores but 5 class names were given"),
    ({"prediction": [0.1] * 5}, "expected a list of one score per class"),
    ([], "expected a list of one score per class"),
    (["0.1", 0.2, 0.3, 0.4, 0.5], "score 0 is '0.1', not a number"),
    ([0.1, True, 0.3, 0.4, 0.5], "score 1 is True, not a number"),
    ([0.1, 0.2, float("nan"), 0.4, 0.5], "score 2 is nan, not a finite number"),
    ([0.1, 0.2, 0.3, float("inf"), 0.5], "score 3 is inf, not a finite number"),
    ([[0.1] * 5], "score 0 is [0.1, 0.1, 0.1, 0.1, 0.1], not a number"),
])
def test_an_endpoints_answer_is_checked(answer, message, session, aws):
    aws.queue_invoke_results([answer])
    pred = SageMakerPredictor(_backend(session), "ep", class_names=["a", "b", "c", "d", "e"])
    with pytest.raises(BackendError, match="endpoint ep answered") as e:
        pred.predict(b"\xff\xd8jpeg")
    assert message in str(e.value)


def test_without_class_names_every_answer_must_have_the_first_ones_length(session, aws):
    pred = SageMakerPredictor(_backend(session), "ep")
    aws.queue_invoke_results([[0.1, 0.2, 0.3], [0.1, 0.2]])
    assert pred.predict(b"one") == [0.1, 0.2, 0.3] and pred.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(BackendError, match="answered 2 scores, but 3 to an earlier image"):
        pred.predict(b"two")


@pytest.mark.parametrize("body,message", [
    (b'{"prediction": [0.5, 0.5, 0.5]}\n', "3 scores for 2 class names"),  # a Model with 2 classes
    (b'{"prediction": [0.5, NaN]}\n', "score 1 is nan"),
    (b'{"scores": [0.5, 0.5]}\n', 'expected {"prediction": [...]}'),
    (b"\x89PNG", "not a JSON line"),
])
def test_transform_outputs_are_checked(body, message, session):
    from multilabel_ic.backends.base import Model
    from multilabel_ic.hyperparameters import Hyperparameters

    backend = _backend(session)
    s3 = session.client("s3")
    s3.put_object(Bucket=BUCKET, Key="m/model.tar.gz", Body=b"artifact")
    for key in ("in/a.jpg", "in/b.jpg"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"jpeg")
    _transform_outputs(backend, body)
    model = Model(hyperparameters=Hyperparameters(num_classes=2, num_training_samples=10, mini_batch_size=2),
                  class_names=["a", "b"],
                  metrics={}, artifact=f"s3://{BUCKET}/m/model.tar.gz", local_artifact=None, backend=backend)
    with pytest.raises(BackendError, match="transform job .*a.jpg.out") as e:
        backend.batch_transform(model, f"s3://{BUCKET}/in/")
    assert message in str(e.value)
    assert backend.client("sagemaker").list_models()["Models"] == []
