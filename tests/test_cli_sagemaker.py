"""The SageMaker workflow from a shell, against the moto server: train --backend sagemaker, attach, deploy,
predict --endpoint, transform, delete-endpoint."""

from __future__ import annotations

import json

import boto3
import pytest
from test_sagemaker_backend import BUCKET, COCO_HP, REGION, ROLE, JobSimulator, _model_tar

from multilabel_ic.cli import main

CONNECT = ["--region", REGION, "--role", ROLE, "--bucket", BUCKET]


@pytest.fixture(scope="module")
def model_tar_bytes():
    return _model_tar()


@pytest.fixture()
def session(aws, monkeypatch):
    """The boto3 session every backend the CLI builds uses (so that the test can watch its requests)."""
    s = boto3.Session(region_name=REGION)
    s.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setattr(boto3, "Session", lambda **kw: s)
    return s


@pytest.fixture()
def lst_files(coco5_200, tmp_path):
    train, val = coco5_200.split(train_size=150, seed=0)
    train.to_lst(tmp_path / "train.lst")
    val.to_lst(tmp_path / "validation.lst")
    return train, val, tmp_path


def _train_args(train, folder, *extra):
    hp = [f"--hp={k}={v}" for k, v in {**COCO_HP, "num_training_samples": 2500}.items()]
    return ["--quiet", "train", "--backend", "sagemaker", *CONNECT, "--train-lst", str(folder / "train.lst"),
            "--validation-lst", str(folder / "validation.lst"), "--images", str(train.root), "--classes",
            ",".join(train.class_names), "--output", str(folder / "run"), *hp, *extra]


def test_the_sagemaker_workflow_from_the_shell(session, aws, lst_files, model_tar_bytes, capsys):
    train, val, folder = lst_files
    sim = JobSimulator(session, aws, model_tar_bytes)
    code = main(_train_args(train, folder, "--instance-type", "ml.g5.xlarge", "--tag", "team=vision",
                            "--subnets", "subnet-0a1b2c3d", "--security-group-ids", "sg-0123abcd",
                            "--network-isolation", "--env", "TEAM=vision"))
    out = capsys.readouterr().out
    assert code == 0, out
    req = sim.requests[0]
    job = req["TrainingJobName"]
    assert req["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}] and req["EnableNetworkIsolation"] is True
    assert req["VpcConfig"] == {"SecurityGroupIds": ["sg-0123abcd"], "Subnets": ["subnet-0a1b2c3d"]}
    assert req["Environment"] == {"TEAM": "vision"}
    artifact = f"s3://{BUCKET}/multilabel-ic/output/{job}/output/model.tar.gz"
    assert f"model artifact: {artifact}" in out
    report = (folder / "run" / "report.html").read_text()  # from the job's logs and a scoring pass of its artifact
    assert "Precision-recall" in report and "0.8100" in report  # the job's last Validation-accuracy, from its logs

    # attach to the (finished) job from another process: its metrics and artifact
    assert main(["--quiet", "attach", job, "--region", REGION, "--output", str(folder / "attached"),
                 "--classes", ",".join(train.class_names)]) == 0
    attached = json.loads(capsys.readouterr().out)
    assert attached["job"] == job and attached["artifact"] == artifact
    assert (folder / "attached" / "model.tar.gz").read_bytes() == model_tar_bytes

    # deploy -> predict --endpoint -> delete-endpoint
    assert main(["--quiet", "deploy", artifact, *CONNECT, "--wait", "--tag", "team=vision"]) == 0
    endpoint = capsys.readouterr().out.strip()
    sm = session.client("sagemaker")
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
    aws.queue_invoke_results([[0.9, 0.1, 0.2, 0.05, 0.7]])
    image = val.image_path(0)
    assert main(["--quiet", "predict", "--endpoint", endpoint, str(image), "--region", REGION,
                 "--classes", ",".join(train.class_names), "--threshold", "0.5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{image}: [0.9, 0.1, 0.2, 0.05, 0.7]", "  labels: ['person', 'airplane']"]
    assert main(["--quiet", "delete-endpoint", endpoint, "--region", REGION]) == 0
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    # a name that does not exist: one line, exit 1
    assert main(["--quiet", "delete-endpoint", endpoint, "--region", REGION]) == 1
    assert capsys.readouterr().err.startswith(f"error: endpoint '{endpoint}' does not exist in {REGION}")


def test_transform_a_local_folder(session, aws, coco5_200, model_tar_bytes, tmp_path, capsys):
    session.client("s3").put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=model_tar_bytes)
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "sub/b.jpg"]):
        (folder / name).write_bytes(coco5_200.image_path(i).read_bytes())
    seen = []
    session.events.register("provide-client-params.sagemaker.CreateTransformJob",
                            lambda params, **kw: seen.append(params))

    def write_outputs(**kwargs):  # what the transform container writes: one .out per input object
        out = seen[-1]["TransformOutput"]["S3OutputPath"]
        bucket, _, prefix = out[5:].partition("/")
        for i, name in enumerate(["a.jpg", "sub/b.jpg"]):
            boto3.client("s3", region_name=REGION).put_object(
                Bucket=bucket, Key=f"{prefix}/{name}.out", Body=json.dumps({"prediction": [0.1 * (i + 1)] * 5}))

    session.events.register("after-call.sagemaker.CreateTransformJob", write_outputs)
    assert main(["--quiet", "transform", f"s3://{BUCKET}/models/model.tar.gz", str(folder), *CONNECT,
                 "--tag", "team=vision"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines == [{"source": "a.jpg", "prediction": [0.1] * 5}, {"source": "sub/b.jpg", "prediction": [0.2] * 5}]
    assert seen[0]["Tags"] == [{"Key": "team", "Value": "vision"}]
    assert main(["--quiet", "transform", f"s3://{BUCKET}/models/model.tar.gz", str(folder), *CONNECT,
                 "--no-wait"]) == 0
    assert capsys.readouterr().out.strip() == seen[-1]["TransformJobName"]


@pytest.mark.parametrize("argv,message", [
    (["predict", "--model", "m.tar.gz", "--endpoint", "e", "x.jpg"], "either --model"),
    (["deploy", "runs/model.tar.gz", "--role", ROLE], "give the s3:// URI"),
    (["transform", "s3://b/m.tar.gz", "no/such/folder", "--role", ROLE], "not a folder of images"),
    (["deploy", "s3://b/m.tar.gz", "--subnets", "subnet-0a1b2c3d"], "needs both 'subnets'"),
    (["deploy", "s3://b/m.tar.gz", "--tag", "novalue"], "expected KEY=VALUE"),
])
def test_sagemaker_verbs_refuse_bad_usage(argv, message, session, capsys):
    assert main(["--quiet", *argv, "--region", REGION]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_local_only_flags_with_the_sagemaker_backend(session, lst_files, capsys):
    train, _, folder = lst_files
    assert main(_train_args(train, folder, "--device", "cpu", "--engine", "gluon")) == 2
    err = capsys.readouterr().err
    assert "--device apply to --backend local only" in err  # (--engine gluon is refused too: the catalog's case)
    assert not (folder / "run").exists()
    assert "Contents" not in session.client("s3").list_objects_v2(Bucket=BUCKET)


def test_train_on_sagemaker_from_a_config_file(session, aws, lst_files, model_tar_bytes, capsys):
    train, _, folder = lst_files
    sim = JobSimulator(session, aws, model_tar_bytes)
    hp = "\n".join(f"{k} = {json.dumps(v)}" for k, v in {**COCO_HP, "num_training_samples": 2500}.items())
    (folder / "run.toml").write_text(f"""
backend = "sagemaker"
output = "run"
classes = {json.dumps(train.class_names)}
[data]
train_lst = "train.lst"
validation_lst = "validation.lst"
images = "{train.root}"
[hyperparameters]
{hp}
[sagemaker]
region = "{REGION}"
role = "{ROLE}"
bucket = "{BUCKET}"
instance_type = "ml.g5.2xlarge"
subnets = ["subnet-0a1b2c3d"]
security_group_ids = ["sg-0123abcd"]
tags = {{ team = "vision" }}
""")
    assert main(["--quiet", "train", "--config", str(folder / "run.toml"), "--instance-count", "2"]) == 0
    req = sim.requests[0]
    assert req["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge" and req["ResourceConfig"]["InstanceCount"] == 2
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}] and req["VpcConfig"]["Subnets"] == ["subnet-0a1b2c3d"]
    assert req["HyperParameters"]["use_weighted_loss"] == "1"
    resolved = json.loads((folder / "run" / "run-config.json").read_text())
    assert resolved["sagemaker"]["instance_count"] == 2 and resolved["sagemaker"]["tags"] == {"team": "vision"}
    assert "local" not in resolved
    capsys.readouterr()
