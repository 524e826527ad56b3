"""The failure catalog of the project's engine on SageMaker: every request the job would fail on (an
instance type the PyTorch image does not run on, a torch version with no image in the region, several instances that
SageMaker's torch_distributed cannot run, a batch the hosts or GPUs cannot split, a channel or setting only the
built-in reads, an initial model that does not fit the hyperparameters) is refused with one line before anything is
uploaded or billed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from catalog_support import CLASSES, ApiCase, CliCase, check_api_case, check_cli_case, make_hp

from multilabel_ic import ArtifactError, Trainer, UsageError

REGION = "us-east-1"
BUCKET = "ic-smengine-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
_AWS: dict = {}


@pytest.fixture(scope="module")
def boto_session(moto_server):
    return boto3.Session(region_name=REGION)


@pytest.fixture()
def moto(aws, boto_session, monkeypatch):
    """A fresh emulated account with one bucket; what is uploaded or started is recorded."""
    boto_session.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setattr(boto3, "Session", lambda **kw: boto_session)
    puts: list[str] = []
    record = lambda params, **kw: puts.append(params["Key"])  # noqa: E731
    boto_session.events.register("provide-client-params.s3.PutObject", record)
    boto_session.events.register("provide-client-params.s3.CreateMultipartUpload", record)
    _AWS.update(session=boto_session, puts=puts)
    yield
    boto_session.events.unregister("provide-client-params.s3.PutObject", record)
    boto_session.events.unregister("provide-client-params.s3.CreateMultipartUpload", record)
    assert puts == [], "something was uploaded"
    assert boto_session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    _AWS.clear()


FIT_28 = dict(num_layers=20, image_shape="3,28,28", resize=32)  # the workspace model's network


def _fit(hp=None, *, initial_model: Callable[[Any, Path], Any] | None = None, **settings):
    """Train on the workspace's 24 images with the project's engine on SageMaker, ``settings`` changed
    (``initial_model``: continuing from the model it makes of the workspace)."""
    def call(ws, tmp):
        from multilabel_ic.backends.sagemaker import SageMakerBackend

        backend = SageMakerBackend(**{"role": ROLE, "bucket": BUCKET, "region": REGION, "session": _AWS["session"],
                                      "progress": False, "engine": "pytorch", **settings})
        return Trainer(hp or make_hp(), backend=backend, output_dir=tmp / "out").fit(
            ws.data, validation=ws.data, initial_model=initial_model(ws, tmp) if initial_model else None)
    return call


def _tuner(**settings):
    """A SageMaker tuning job of the project's engine over the learning rate, ``settings`` changed."""
    from multilabel_ic.backends.sagemaker import SageMakerBackend
    from multilabel_ic.tune import ContinuousRange, Tuner

    backend = SageMakerBackend(**{"role": ROLE, "bucket": BUCKET, "region": REGION, "session": _AWS["session"],
                                  "progress": False, "engine": "pytorch", **settings})
    return Tuner(make_hp(), {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log")}, objective="validation:mAP",
                 backend=backend)


def _model(ws, tmp: Path, *, num_classes: int = 5, multi_label: bool = True) -> Path:
    """The workspace's ResNet-20 at 28 px with another head."""
    from multilabel_ic.model.artifact import write_model_tar

    args = {k: v.copy() for k, v in ws.args.items()}
    args["fc1_weight"], args["fc1_bias"] = args["fc1_weight"][:num_classes], args["fc1_bias"][:num_classes]
    return write_model_tar(tmp / "m.tar.gz", {2: (args, ws.aux)}, num_classes=num_classes, num_layers=20,
                           image_shape=(3, 28, 28), multi_label=multi_label)


def _truncated(ws, tmp: Path) -> Path:
    data = ws.model.read_bytes()
    (tmp / "m.tar.gz").write_bytes(data[: len(data) // 2])
    return tmp / "m.tar.gz"


_NO_IMAGE = "no SageMaker PyTorch training image runs there"
_NO_DIST = "SageMaker's torch_distributed cannot run it"

API_CASES = [
    # instance types the framework image does not run on
    ApiCase("smengine-api-instance-inferentia", _fit(instance_type="ml.inf1.xlarge"), UsageError, _NO_IMAGE),
    ApiCase("smengine-api-instance-p2-retired", _fit(instance_type="ml.p2.xlarge"), UsageError, _NO_IMAGE),
    ApiCase("smengine-api-instance-not-a-sagemaker-type", _fit(instance_type="p3.2xlarge"), UsageError, _NO_IMAGE),
    # torch versions with no image (anywhere, in the region, or older than the project supports)
    ApiCase("smengine-api-torch-version-unknown", _fit(framework_version="2.99"), UsageError,
            "framework_version='2.99': SageMaker has no PyTorch training image of that version"),
    ApiCase("smengine-api-torch-version-not-in-region", _fit(framework_version="2.2", region="me-west-1"),
            UsageError, f"region='me-west-1': {_NO_IMAGE}"),
    ApiCase("smengine-api-torch-version-too-old", _fit(framework_version="1.13"), UsageError,
            "the project's engine needs torch >= 2.2"),
    # several instances: SageMaker's torch_distributed runs on GPU instances, with the versions it lists
    ApiCase("smengine-api-hosts-on-cpu-instances", _fit(instance_type="ml.m5.xlarge", instance_count=2), UsageError,
            _NO_DIST),
    ApiCase("smengine-api-hosts-with-unlisted-version", _fit(instance_type="ml.p3.2xlarge", instance_count=2,
                                                             framework_version="2.10"), UsageError, _NO_DIST),
    # batches the hosts or their GPUs cannot split
    ApiCase("smengine-api-batch-not-split-by-gpus", _fit(make_hp(mini_batch_size=12),
                                                         instance_type="ml.p3.16xlarge", instance_count=2),
            UsageError, "mini_batch_size=12 is split across the 8 GPUs of each ml.p3.16xlarge: make it a multiple of 8"),
    ApiCase("smengine-api-batch-more-than-the-data", _fit(make_hp(mini_batch_size=8), instance_type="ml.p3.2xlarge",
                                                          instance_count=4),
            UsageError, "instance_count=4 x mini_batch_size=8 is more than the num_training_samples=24"),
    # what only the built-in algorithm reads
    # an initial model (the job's model channel) that does not fit the hyperparameters, or cannot be read: refused
    # before the model or the data is uploaded, each differing field named with both values
    ApiCase("smengine-api-initial-model-other-network", _fit(initial_model=lambda ws, tmp: ws.model), UsageError,
            "image_shape is 3,28,28 in the model and 3,32,32 here"),
    ApiCase("smengine-api-initial-model-other-depth", _fit(make_hp(**{**FIT_28, "num_layers": 32}),
                                                          initial_model=lambda ws, tmp: ws.model), UsageError,
            "num_layers is 20 in the model and 32 here"),
    ApiCase("smengine-api-initial-model-other-classes", _fit(make_hp(**FIT_28),
                                                            initial_model=lambda ws, tmp: _model(ws, tmp, num_classes=4)),
            UsageError, "num_classes is 4 in the model and 5 here"),
    ApiCase("smengine-api-initial-model-single-label", _fit(make_hp(**FIT_28), initial_model=lambda ws, tmp: _model(
        ws, tmp, multi_label=False)), UsageError, "multi_label is 0 in the model and 1 here"),
    ApiCase("smengine-api-initial-model-damaged", _fit(make_hp(**FIT_28), initial_model=_truncated), ArtifactError,
            "m.tar.gz: cannot read the model artifact"),
    ApiCase("smengine-api-initial-model-and-model-uri", _fit(make_hp(**FIT_28), initial_model=lambda ws, tmp: ws.model,
                                                             model_uri=f"s3://{BUCKET}/old/model.tar.gz"), UsageError,
            "give the initial model once"),
    ApiCase("smengine-api-network-isolation", _fit(enable_network_isolation=True), UsageError,
            "the PyTorch container installs multilabel-ic and its dependencies"),
    # a tuning job of this engine on spot instances: its trials would share one checkpoint location
    ApiCase("smengine-api-tuning-on-spot", lambda ws, tmp: _tuner(use_spot=True), UsageError,
            "use_spot=True with engine='pytorch' in a tuning job: its training jobs would share one checkpoint"),
    ApiCase("smengine-api-version-with-the-builtin", _fit(engine="builtin", framework_version="2.8"), UsageError,
            "framework_version='2.8' picks the torch of engine='pytorch'"),
    ApiCase("smengine-api-unknown-engine", _fit(engine="mxnet"), UsageError,
            "The 'engine' option of SageMakerBackend must be one of 'builtin', 'pytorch'"),
]


def _train(*extra: str):
    def argv(ws, tmp):
        return ["--quiet", "train", "--backend", "sagemaker", "--train-lst", str(ws.lst), "--validation-lst",
                str(ws.lst), "--images", str(ws.images), "--classes", CLASSES, "--output", str(tmp / "out"),
                "--region", REGION, "--role", ROLE, "--bucket", BUCKET, "--hp", "mini_batch_size=8", "--hp", "multi_label=1", *extra]
    return argv


CLI_CASES = [
    CliCase("smengine-cli-initial-model-other-network", lambda ws, tmp: _train(
        "--engine", "pytorch", "--initial-model", str(ws.model))(ws, tmp), 2,
        "num_layers is 20 in the model and 152 here; image_shape is 3,28,28 in the model and 3,224,224 here"),
    CliCase("smengine-cli-gluon-on-sagemaker", _train("--engine", "gluon"), 2, "--engine gluon trains on this machine"),
    CliCase("smengine-cli-version-without-engine", _train("--framework-version", "2.8"), 2,
            "--framework-version picks the torch version of --engine pytorch"),
    CliCase("smengine-cli-version-unknown", _train("--engine", "pytorch", "--framework-version", "3.0"), 2,
            "SageMaker has no PyTorch training image of that version"),
    CliCase("smengine-cli-hosts-on-cpu", _train("--engine", "pytorch", "--instance-type", "ml.c5.xlarge",
                                               "--instance-count", "2"), 2, _NO_DIST),
    CliCase("smengine-cli-instance-unsupported", _train("--engine", "pytorch", "--instance-type", "ml.inf1.xlarge"),
            2, _NO_IMAGE),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path, moto):
    check_api_case(case, ws, tmp_path)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys, moto):
    check_cli_case(case, ws, tmp_path, capsys)


def test_the_case_ids_are_this_areas():
    ids = [c.id for c in CLI_CASES + API_CASES]
    assert len(set(ids)) == len(ids) and all(i.startswith("smengine-") for i in ids)
