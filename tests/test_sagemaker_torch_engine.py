"""SageMakerBackend(engine="pytorch") against the moto server: the CreateTrainingJob request for the
project's engine in SageMaker's PyTorch container, the job's source, and the requests refused before any upload."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
import zipfile

import boto3
import pytest
from test_sagemaker_backend import BUCKET, COCO_HP, REGION, ROLE, JobSimulator, _model_tar

from multilabel_ic import Hyperparameters, Trainer, UsageError
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.backends.sagemaker.framework import METRIC_DEFINITIONS

# the lines the project's engine prints (the algorithm's format), as CloudWatch stores them
ENGINE_LINES = [
    "[12/07/2026 10:00:01 INFO 140000000000] Epoch[0] Batch [20]#011Speed: 830.512 samples/sec#011accuracy=0.61",
    "[12/07/2026 10:00:09 INFO 140000000000] Epoch[0] Train-accuracy=0.700000",
    "[12/07/2026 10:00:09 INFO 140000000000] Epoch[0] Time cost=8.100",
    "[12/07/2026 10:00:10 INFO 140000000000] Epoch[0] Validation-accuracy=0.750000",
    "[12/07/2026 10:00:10 INFO 140000000000] Epoch[0] Validation-mAP=0.640000",
]


HP = {**COCO_HP, "mini_batch_size": 16, "num_training_samples": 80}  # the example's, with a batch for small data


@pytest.fixture(scope="module")
def artifact_bytes():
    return _model_tar(layers=20, shape=(3, 28, 28))  # small: only its bytes travel


@pytest.fixture(scope="module")
def splits(coco5):
    return coco5.subset(range(80)), coco5.subset(range(80, min(len(coco5), 100)))


@pytest.fixture()
def setup(aws):
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    return session


def _backend(session, **kw):
    settings = dict(role=ROLE, bucket=BUCKET, prefix="ic-multilabel", region=REGION, session=session,
                    instance_type="ml.p3.16xlarge", instance_count=2, poll_interval=0.01, progress=False,
                    engine="pytorch", seed=7, score_validation=False)
    return SageMakerBackend(**{**settings, **kw})


def test_the_request_runs_the_engine_in_the_pytorch_container_across_hosts(setup, aws, splits, artifact_bytes,
                                                                             tmp_path):
    train, val = splits
    sim = JobSimulator(setup, aws, artifact_bytes, lines=ENGINE_LINES)
    hp = Hyperparameters(**HP)
    backend = _backend(setup, use_spot=True, max_wait=400000, tags={"team": "vision"})
    model = Trainer(hp, backend=backend, output_dir=tmp_path).fit(train, validation=val)
    req = sim.requests[0]
    desc = setup.client("sagemaker").describe_training_job(TrainingJobName=req["TrainingJobName"])
    spec = req["AlgorithmSpecification"]
    # the SDK's image for the region, torch version and a GPU instance
    assert spec["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    assert desc["AlgorithmSpecification"]["TrainingImage"] == spec["TrainingImage"]
    assert spec["TrainingInputMode"] == "File" and spec["MetricDefinitions"] == METRIC_DEFINITIONS
    assert req["ResourceConfig"] == {"InstanceType": "ml.p3.16xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50}
    hps = {k: json.loads(v) for k, v in req["HyperParameters"].items()}  # JSON-encoded, as the SDK sends them
    assert {k: str(v) for k, v in hps.items() if not k.startswith(("sagemaker_", "mlic_"))} == hp.to_sagemaker()
    assert hps["mlic_class_names"] == train.class_names and hps["mlic_seed"] == 7
    assert hps["sagemaker_program"] == "train_entry.py" and hps["sagemaker_torch_distributed_enabled"] is True
    assert hps["sagemaker_region"] == REGION and hps["sagemaker_job_name"] == req["TrainingJobName"]
    # the same channels as the built-in's
    assert [c["ChannelName"] for c in req["InputDataConfig"]] == ["train", "validation", "train_lst", "validation_lst"]
    # spot: a checkpoint location SageMaker syncs with /opt/ml/checkpoints, where the entry point resumes
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 360000, "MaxWaitTimeInSeconds": 400000}
    assert req["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/ic-multilabel/checkpoints/{req['TrainingJobName']}",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}]
    # the job's source: the entry script, requirements.txt naming the wheel, a wheel of the installed package
    m = re.fullmatch(r"s3://([^/]+)/(.+)", hps["sagemaker_submit_directory"])
    body = setup.client("s3").get_object(Bucket=m[1], Key=m[2])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {t.name: tar.extractfile(t).read() for t in tar.getmembers()}
    wheel_name = members["requirements.txt"].decode().strip().removeprefix("./")
    assert sorted(members) == sorted(["train_entry.py", "requirements.txt", wheel_name])
    assert b"from multilabel_ic.container.entry import main" in members["train_entry.py"]
    with zipfile.ZipFile(io.BytesIO(members[wheel_name])) as whl:
        names = whl.namelist()
        metadata = whl.read("multilabel_ic-0.1.0.dist-info/METADATA").decode()
    assert wheel_name == "multilabel_ic-0.1.0-py3-none-any.whl" and "Version: 0.1.0" in metadata
    assert "multilabel_ic/container/entry.py" in names and "multilabel_ic/bench/prices.json" in names
    assert not any(n.startswith(("tests/", "docs/")) or "__pycache__" in n for n in names)
    # the metrics come from the job's log lines, as for the built-in
    assert model.metrics["epochs"][0]["train_accuracy"] == pytest.approx(0.7)
    assert model.metrics["epochs"][0]["validation_accuracy"] == pytest.approx(0.75)
    # a later process attaches to the job: its hyperparameters and class names come back from the request
    attached = backend.attach(req["TrainingJobName"], output_dir=tmp_path / "attached")
    assert attached.hyperparameters.to_sagemaker() == hp.to_sagemaker() and attached.class_names == train.class_names


def test_the_source_is_reproducible_and_uploaded_once(setup, aws, splits, artifact_bytes, tmp_path):
    train, val = splits
    sim = JobSimulator(setup, aws, artifact_bytes, lines=ENGINE_LINES)
    hp = Hyperparameters(**HP)
    for run in ("a", "b"):
        Trainer(hp, backend=_backend(setup, instance_count=1, instance_type="ml.g4dn.xlarge"),
                output_dir=tmp_path / run).fit(train, validation=val)
    first, second = (json.loads(r["HyperParameters"]["sagemaker_submit_directory"]) for r in sim.requests)
    assert first == second  # the same installed files give the same bytes, so the same key
    assert "sagemaker_torch_distributed_enabled" not in sim.requests[0]["HyperParameters"]  # one instance
    assert "CheckpointConfig" not in sim.requests[0]  # on demand: nothing to resume


def test_a_continued_run_gets_the_model_channel_the_builtin_gets(setup, aws, splits, artifact_bytes, tmp_path):
    """initial_model= (a local artifact): checked, uploaded content-addressed and given as the job's ``model``
    channel, as for the built-in; model_uri= names the channel directly, unchecked, as for the built-in."""
    import hashlib

    train, val = splits[0].subset(range(16)), splits[1].subset(range(8))  # few files: each is uploaded to the server
    sim = JobSimulator(setup, aws, artifact_bytes, lines=ENGINE_LINES)
    initial = tmp_path / "initial" / "model.tar.gz"
    initial.parent.mkdir()
    initial.write_bytes(artifact_bytes)
    hp = Hyperparameters(**{**HP, "num_layers": 20, "image_shape": "3,28,28", "resize": 32, "mini_batch_size": 8,
                            "num_training_samples": 16, "use_pretrained_model": 0})  # the network of the artifact
    one = dict(instance_type="ml.g4dn.xlarge", instance_count=1)
    model = Trainer(hp, backend=_backend(setup, **one), output_dir=tmp_path / "a").fit(train, validation=val,
                                                                                        initial_model=initial)
    channels = {c["ChannelName"]: c for c in sim.requests[0]["InputDataConfig"]}
    uri = channels["model"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert re.fullmatch(rf"s3://{BUCKET}/ic-multilabel/data/model/[0-9a-f]{{16}}/model\.tar\.gz", uri), uri
    assert channels["model"] == {"ChannelName": "model", "ContentType": "application/x-sagemaker-model",
                                 "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                                 "S3DataDistributionType": "FullyReplicated"}}}
    assert set(channels) == {"train", "validation", "train_lst", "validation_lst", "model"}
    assert setup.client("s3").get_object(Bucket=BUCKET, Key=uri[len(f"s3://{BUCKET}/"):])["Body"].read() == \
        artifact_bytes
    assert model.info["initial_model"] == {"source": str(initial), "s3_uri": uri, "epoch": 3,
                                           "sha256": hashlib.sha256(artifact_bytes).hexdigest()}
    assert sim.requests[0]["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS  # still this engine's
    given = f"s3://{BUCKET}/earlier/model.tar.gz"
    Trainer(hp, backend=_backend(setup, model_uri=given, **one), output_dir=tmp_path / "b").fit(train, validation=val)
    second = {c["ChannelName"]: c for c in sim.requests[1]["InputDataConfig"]}
    assert second["model"]["DataSource"]["S3DataSource"]["S3Uri"] == given


def test_train_from_the_shell_continues_a_finished_jobs_model_where_it_is_in_s3(setup, aws, splits, artifact_bytes,
                                                                                tmp_path, monkeypatch, capsys):
    """train --backend sagemaker --engine pytorch --initial-model JOB_NAME: the job's artifact, checked (downloaded
    for the check only), is the new job's model channel where it is in S3; nothing is uploaded for it."""
    from multilabel_ic.backends.sagemaker import request as rq
    from multilabel_ic.cli import main

    monkeypatch.setattr(boto3, "Session", lambda **kw: setup)  # the CLI's backend uses the watched session
    sim = JobSimulator(setup, aws, artifact_bytes, lines=ENGINE_LINES)
    earlier = rq.job_name("earlier")
    setup.client("sagemaker").create_training_job(**rq.training_job_request(
        name=earlier, role_arn=ROLE, image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312",
        channels=rq.recordio_channels({"train": f"s3://{BUCKET}/d/t/", "validation": f"s3://{BUCKET}/d/v/"}),
        hyperparameters={"num_classes": "5"}, output_path=f"s3://{BUCKET}/out", instance_type="ml.g4dn.xlarge",
        instance_count=1, volume_size=50, max_run=3600))
    train, val = splits[0].subset(range(16)), splits[1].subset(range(8))
    train.to_lst(tmp_path / "train.lst")
    val.to_lst(tmp_path / "validation.lst")
    puts: list[str] = []
    setup.events.register("provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"]))
    hp = {"num_layers": 20, "image_shape": "3,28,28", "resize": 32, "mini_batch_size": 8, "epochs": 1,
          "multi_label": 1, "num_classes": 5}
    code = main(["--quiet", "train", "--backend", "sagemaker", "--engine", "pytorch", "--initial-model", earlier,
                 "--region", REGION, "--role", ROLE, "--bucket", BUCKET, "--instance-type", "ml.g4dn.xlarge",
                 "--train-lst", str(tmp_path / "train.lst"), "--validation-lst", str(tmp_path / "validation.lst"),
                 "--images", str(train.root), "--classes", ",".join(train.class_names), "--output",
                 str(tmp_path / "run"), *[f"--hp={k}={v}" for k, v in hp.items()]])
    assert code == 0, capsys.readouterr().err
    req = sim.requests[-1]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
    assert channels["model"] == f"s3://{BUCKET}/out/{earlier}/output/model.tar.gz"
    assert "sagemaker_program" in req["HyperParameters"]  # this engine's job
    assert not any("/data/model/" in key for key in puts)


def test_augmented_manifests_go_as_file_mode_channels_of_images_and_manifests(setup, aws, splits, artifact_bytes,
                                                                             tmp_path):
    """SageMaker takes AugmentedManifestFile in Pipe mode only: this engine's job gets the same uploaded objects as
    S3Prefix channels in File mode (images, manifests), and where the source-refs start, so the container maps them
    to its files; several instances are fine in File mode."""
    train, val = splits[0].subset(range(16)), splits[1].subset(range(8))
    sim = JobSimulator(setup, aws, artifact_bytes, lines=ENGINE_LINES)
    hp = Hyperparameters(**{**HP, "mini_batch_size": 8, "num_training_samples": 16})
    Trainer(hp, backend=_backend(setup, input_format="manifest", manifest_label_format="class-id"),
            output_dir=tmp_path).fit(train, validation=val)
    req = sim.requests[0]
    channels = {c["ChannelName"]: c for c in req["InputDataConfig"]}
    assert list(channels) == ["train", "validation", "train_manifest", "validation_manifest"]
    assert req["AlgorithmSpecification"]["TrainingInputMode"] == "File" and req["ResourceConfig"]["InstanceCount"] == 2
    for c in channels.values():
        assert c["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
        assert not {"InputMode", "RecordWrapperType"} & set(c) and "AttributeNames" not in c["DataSource"]["S3DataSource"]
    hps = {k: json.loads(v) for k, v in req["HyperParameters"].items()}
    uris = {name: c["DataSource"]["S3DataSource"]["S3Uri"] for name, c in channels.items()}
    assert hps["mlic_image_prefixes"] == {"train": uris["train"], "validation": uris["validation"]}
    assert hps["mlic_manifest_label_format"] == "class-id"
    s3 = setup.client("s3")
    for name, ds in (("train", train), ("validation", val)):
        bucket, _, prefix = uris[f"{name}_manifest"][5:].partition("/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
        assert [k.rsplit("/", 1)[-1] for k in keys] == [f"{name}.manifest"]  # the channel holds the manifest alone
        lines = [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read().splitlines()]
        assert [entry["source-ref"] for entry in lines] == [uris[name] + rel for rel in ds.paths]
        image_bucket, _, image_prefix = uris[name][5:].partition("/")
        stored = {o["Key"] for o in s3.list_objects_v2(Bucket=image_bucket, Prefix=image_prefix)["Contents"]}
        assert stored == {image_prefix + rel for rel in ds.paths}  # what File mode puts under input/data/<name>


def test_a_tuning_job_of_the_engine_maximises_validation_map_read_by_its_metric_definitions(setup, aws, splits,
                                                                                           tmp_path, monkeypatch):
    """Tuner(objective="validation:mAP") on this engine (moto): the tuning job's training jobs are the engine's jobs
    (its image, source, JSON-encoded static hyperparameters, and the metric definitions that give validation:mAP),
    categorical values JSON-encoded as the SDK encodes them for framework jobs; the job SageMaker describes holds
    exactly what was sent."""
    from moto_support import created_tuning_job
    from sagemaker.core.parameter import CategoricalParameter

    from multilabel_ic.tune import CategoricalRange, ContinuousRange, Tuner

    train, val = splits[0].subset(range(16)), splits[1].subset(range(8))
    space = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"), "optimizer": CategoricalRange(["sgd", "adam"])}
    hp = Hyperparameters(**{**HP, "mini_batch_size": 8, "num_training_samples": 16})
    tuner = Tuner(hp, space, objective="validation:mAP", max_trials=4, max_parallel=2, output_dir=tmp_path / "tune",
                  backend=_backend(setup, instance_type="ml.g4dn.xlarge", instance_count=1, tags={"team": "vision"}))
    req, desc, name = created_tuning_job(tuner, monkeypatch, setup.client("sagemaker"), train, val)
    assert desc["HyperParameterTuningJobConfig"] == req["HyperParameterTuningJobConfig"]
    assert desc["TrainingJobDefinition"] == req["TrainingJobDefinition"]
    config, definition = req["HyperParameterTuningJobConfig"], req["TrainingJobDefinition"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:mAP"}
    assert definition["AlgorithmSpecification"] == {
        "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312",
        "TrainingInputMode": "File", "MetricDefinitions": METRIC_DEFINITIONS}
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        CategoricalParameter(["sgd", "adam"]).as_json_range("optimizer")]
    static = {k: json.loads(v) for k, v in definition["StaticHyperParameters"].items()}
    assert not {"learning_rate", "optimizer"} & set(static)  # the ranged ones leave the static ones
    assert {k: str(v) for k, v in static.items() if not k.startswith(("sagemaker_", "mlic_"))} == {
        k: v for k, v in hp.to_sagemaker().items() if k not in space}
    assert static["sagemaker_program"] == "train_entry.py" and static["sagemaker_job_name"] == name
    assert static["mlic_class_names"] == train.class_names
    m = re.fullmatch(r"s3://([^/]+)/(.+)", static["sagemaker_submit_directory"])
    assert setup.client("s3").head_object(Bucket=m[1], Key=m[2])["ContentLength"] > 0  # the job's source is there
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}]


@pytest.mark.parametrize("engine", ["builtin", "pytorch"])
@pytest.mark.parametrize("objective", ["validation:accuracy", "validation:mAP", "validation:f1"])
def test_a_tuning_objective_is_taken_exactly_when_the_engines_jobs_emit_it(engine, objective):
    """Each objective against each engine's training job definition: the built-in emits validation:accuracy only,
    this engine what its metric definitions read; any other is refused in one line naming what is emitted."""
    from multilabel_ic.tune import ContinuousRange, SearchSpace
    from multilabel_ic.tune.sagemaker import tuning_job_request

    spec = {"TrainingImage": "image", "TrainingInputMode": "File"}
    if engine == "pytorch":
        spec["MetricDefinitions"] = METRIC_DEFINITIONS
    emitted = ["validation:accuracy"] if engine == "builtin" else [m["Name"] for m in METRIC_DEFINITIONS]

    def request():
        return tuning_job_request(name="t", definition={"AlgorithmSpecification": spec}, max_trials=2,
                                  space=SearchSpace({"learning_rate": ContinuousRange(1e-4, 0.1)}), max_parallel=1,
                                  objective=objective)

    if objective in emitted:
        assert request()["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] == objective
    else:
        with pytest.raises(UsageError) as e:
            request()
        assert str(e.value).startswith(f"objective={objective!r}") and "validation:accuracy" in str(e.value)
        assert ("emits only" in str(e.value)) == (engine == "builtin") and "\n" not in str(e.value)


def test_the_metric_definitions_read_each_metric_once_per_epoch():
    lines = "\n".join(ENGINE_LINES)
    found = {m["Name"]: re.findall(m["Regex"], lines) for m in METRIC_DEFINITIONS}
    assert found == {"train:accuracy": ["0.700000"], "validation:accuracy": ["0.750000"],
                     "validation:mAP": ["0.640000"]}


def test_the_engine_name_torch_is_the_same_engine(setup):
    assert _backend(setup, engine="torch").engine == "pytorch"
    with pytest.raises(UsageError, match="engine"):
        _backend(setup, engine="mxnet")


def test_bench_sagemaker_cost_prices_both_engines_per_epoch_labelled_by_source(setup, aws, tmp_path, capsys):
    """A real job of the engine (its logs, on moto) next to the published figures of both engines, each priced per
    epoch of the MS-COCO configuration from the packaged price table."""
    from multilabel_ic.backends.sagemaker import request as rq
    from multilabel_ic.backends.sagemaker.cloudwatch import LOG_GROUP
    from multilabel_ic.bench.run import COCO5_BENCH_HP
    from multilabel_ic.bench.sagemaker import load_prices
    from multilabel_ic.cli import main

    name = rq.job_name("engine-bench")
    image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    setup.client("sagemaker").create_training_job(**rq.training_job_request(
        name=name, role_arn=ROLE, image=image, channels=rq.recordio_channels(
            {"train": f"s3://{BUCKET}/d/t/", "validation": f"s3://{BUCKET}/d/v/"}),
        hyperparameters={"num_classes": "5"}, output_path=f"s3://{BUCKET}/out", instance_type="ml.p3.2xlarge",
        instance_count=1, volume_size=50, max_run=3600))
    logs, now = setup.client("logs"), int(time.time() * 1000)
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1700000000")
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1700000000",
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(ENGINE_LINES)])
    assert main(["bench", "--sagemaker-cost", "--sagemaker-job", name, "--region", REGION,
                 "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "sagemaker-cost.json").read_text())
    rows, prices = report["rows"], load_prices()
    samples = COCO5_BENCH_HP["num_training_samples"]
    assert report["samples_per_epoch"] == samples
    job = rows[0]
    assert job["engine"] == "pytorch" and job["source"] == f"training job {name}"
    assert job["images_per_sec"] == pytest.approx(830.512)
    assert {r["engine"] for r in rows[1:]} == {"built-in", "pytorch"}
    assert all(r["source"].startswith(("public logs:", "public benchmark:")) for r in rows[1:])
    for r in rows:
        expected = prices["per_hour"][r["instance_type"]] * r["instance_count"] * samples / r["images_per_sec"] / 3600
        assert r["cost_per_epoch"] == pytest.approx(expected)
        assert r["source"] in out


def test_the_bench_table_has_both_engines_labelled_by_where_their_figures_come_from():
    from multilabel_ic.bench.engines import side_by_side_rows
    from multilabel_ic.bench.run import format_table
    from multilabel_ic.bench.sagemaker import load_prices

    rows = side_by_side_rows(2500, load_prices())
    assert {r["where"].rsplit("(", 1)[1] for r in rows} == {"built-in)", "pytorch)"}
    assert all(r["measured_on"].startswith(("public logs:", "public benchmark:")) for r in rows)
    assert all(r["seconds_per_epoch"] == pytest.approx(2500 / r["images_per_sec"]) for r in rows)
    assert "(pytorch)" in format_table(rows) and "(built-in)" in format_table(rows)


@pytest.mark.aws
@pytest.mark.skipif(not os.environ.get("MULTILABEL_IC_AWS_ROLE") or not os.environ.get("MULTILABEL_IC_AWS_BUCKET"),
                    reason="real AWS: set MULTILABEL_IC_AWS_ROLE and MULTILABEL_IC_AWS_BUCKET (and credentials)")
def test_the_engines_request_is_built_against_real_aws(monkeypatch):
    """The same code path on your account, short of CreateTrainingJob (no job, nothing billed but the source's
    few hundred kB in S3): the role resolved by IAM, the bucket checked, the source uploaded, the request built.
    docs/sagemaker.md lists the IAM permissions it needs."""
    from multilabel_ic.backends.sagemaker import request as rq

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    backend = SageMakerBackend(role=os.environ["MULTILABEL_IC_AWS_ROLE"], bucket=os.environ["MULTILABEL_IC_AWS_BUCKET"],
                               region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), engine="pytorch",
                               instance_type="ml.g5.xlarge", instance_count=2, progress=False)
    hp = Hyperparameters(**HP)
    image = backend._check_framework_request(hp)
    role = backend.role_arn()
    backend._check_bucket()
    req = backend._framework_request(rq.job_name("mlic-check"), role, image, hp, rq.recordio_channels(
        {"train": f"{backend.base_uri}/data/train/", "validation": f"{backend.base_uri}/data/validation/"}),
        ["person", "bicycle", "car", "motorcycle", "airplane"])
    source = json.loads(req["HyperParameters"]["sagemaker_submit_directory"])
    m = re.fullmatch(r"s3://([^/]+)/(.+)", source)
    assert backend.client("s3").head_object(Bucket=m[1], Key=m[2])["ContentLength"] > 0
    assert req["AlgorithmSpecification"]["TrainingImage"] == image and req["RoleArn"] == role


def test_the_jobs_wheel_installs_with_pip_and_runs_the_entry_point_from_there(tmp_path):
    """What the container's toolkit does with requirements.txt (pip install -r, in the source folder), here into a
    folder of its own, offline: the installed package is the wheel's, at the installed version."""
    import subprocess
    import sys

    from multilabel_ic._version import __version__
    from multilabel_ic.backends.sagemaker.framework import source_bundle

    bundle = source_bundle(tmp_path)
    src = tmp_path / "src"
    with tarfile.open(bundle) as tar:
        tar.extractall(src, filter="data")
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                          str(target), "-r", "requirements.txt"], cwd=src, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    code = ("import multilabel_ic, multilabel_ic.container.entry as e, importlib.metadata as m; "
            "print(multilabel_ic.__file__, m.version('multilabel-ic'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shown = subprocess.run([sys.executable, "-c", code], cwd=src, env={**env, "PYTHONPATH": str(target)},
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    path, version = shown.stdout.split()
    assert path.startswith(str(target)) and version == __version__
    again = tmp_path / "again"
    again.mkdir()
    assert source_bundle(again).read_bytes() == bundle.read_bytes()  # the same installed files, the same bytes


def test_a_runs_configuration_keeps_the_engine_of_a_sagemaker_run(tmp_path):
    """run-config.json of a SageMaker run of the engine, read back with --config, runs the same engine."""
    from multilabel_ic.cli import build_parser
    from multilabel_ic.run_config import resolved_config, train_defaults

    argv = ["train", "--backend", "sagemaker", "--engine", "pytorch", "--framework-version", "2.7", "--seed", "3",
            "--classes", "a,b"]
    written = resolved_config(build_parser().parse_args(argv), {"num_classes": "2"})
    assert {k: written["sagemaker"][k] for k in ("engine", "framework_version", "seed")} == {
        "engine": "pytorch", "framework_version": "2.7", "seed": 3}
    (tmp_path / "run.json").write_text(json.dumps(written))
    defaults, _ = train_defaults(written, tmp_path / "run.json")
    assert (defaults["engine"], defaults["framework_version"], defaults["seed"]) == ("pytorch", "2.7", 3)
