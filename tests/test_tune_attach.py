"""``Tuner.attach`` on a SageMaker tuning job, against botocore's Stubber for the SageMaker calls moto does not
emulate (the tuning job's end state, ListTrainingJobsForHyperParameterTuningJob, the best training job): each call's
exact request, the trial list paged through NextToken, and the best job's artifact (in S3 on the moto server) coming
back as the best Model."""

from __future__ import annotations

import datetime as dt
import json
import time

import boto3
import pytest
import torch
from botocore.stub import Stubber

from multilabel_ic import Hyperparameters
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.backends.sagemaker.cloudwatch import LOG_GROUP
from multilabel_ic.model.artifact import read_model_tar, write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.tune import Tuner

REGION, BUCKET = "us-east-1", "ic-attach-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
TUNING = "ic-tune-261207-101500-ab12"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:"
HP = Hyperparameters(num_classes=5, num_training_samples=90, num_layers=20, image_shape="3,28,28", resize=32,
                     mini_batch_size=16, epochs=2, multi_label=1, optimizer="adam", learning_rate=0.01)
RANGES = {"IntegerParameterRanges": [],
          "ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.1",
                                         "ScalingType": "Logarithmic"}],
          "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}]}
T0 = dt.datetime(2026, 12, 7, 10, 15, tzinfo=dt.timezone.utc)
# trials listed out of creation order and across pages: (name, created minute, state, objective, tuned values)
TRIALS = [("ic-tune-261207-101500-ab12-003-c3d4e5f6", 9, "Completed", 0.61, ("0.02", "sgd")),
          ("ic-tune-261207-101500-ab12-001-a1b2c3d4", 1, "Completed", 0.74, ("0.003", "adam")),
          ("ic-tune-261207-101500-ab12-002-b2c3d4e5", 5, "Stopped", None, ("0.09", "sgd"))]
BEST = TRIALS[1][0]
LOG_LINES = ["[12/07/2026 10:16:00 INFO 140000000000] Epoch[0] Train-accuracy=0.60",
             "[12/07/2026 10:16:01 INFO 140000000000] Epoch[0] Validation-accuracy=0.70",
             "[12/07/2026 10:16:10 INFO 140000000000] Epoch[1] Train-accuracy=0.70",
             "[12/07/2026 10:16:11 INFO 140000000000] Epoch[1] Validation-accuracy=0.74"]


def _summary(name, minute, state, value, tuned):
    row = {"TrainingJobName": name, "TrainingJobArn": f"{ARN}training-job/{name}",
           "CreationTime": T0 + dt.timedelta(minutes=minute), "TrainingJobStatus": state,
           "TunedHyperParameters": {"learning_rate": tuned[0], "optimizer": tuned[1]},
           "TrainingStartTime": T0 + dt.timedelta(minutes=minute, seconds=30),
           "TrainingEndTime": T0 + dt.timedelta(minutes=minute + 3, seconds=30)}
    if value is not None:
        row["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": "validation:accuracy", "Value": value}
    else:
        row["FailureReason"] = "stopped early by the tuning job"
    return row


def _tuning_description(status: str) -> dict:
    desc = {"HyperParameterTuningJobName": TUNING, "HyperParameterTuningJobArn": f"{ARN}hyper-parameter-tuning-job/"
            f"{TUNING}", "HyperParameterTuningJobStatus": status, "CreationTime": T0,
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian", "HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                                             "MetricName": "validation:accuracy"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 1},
                "ParameterRanges": RANGES, "TrainingJobEarlyStoppingType": "Auto"},
            "TrainingJobDefinition": {
                "StaticHyperParameters": {k: v for k, v in HP.to_sagemaker().items()
                                          if k not in ("learning_rate", "optimizer")},
                "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
                "RoleArn": ROLE, "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/ic/output"},
                "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600}},
            "TrainingJobStatusCounters": {"Completed": 2 if status == "Completed" else 1, "InProgress": int(
                status != "Completed"), "RetryableError": 0, "NonRetryableError": 0, "Stopped": 1},
            "ObjectiveStatusCounters": {"Succeeded": 2, "Pending": 0, "Failed": 0}}
    if status == "Completed":
        desc["BestTrainingJob"] = _summary(*TRIALS[1])
    return desc


def _training_description(artifact_uri: str) -> dict:
    best_values = {**HP.to_sagemaker(), "learning_rate": "0.003", "optimizer": "adam"}
    return {"TrainingJobName": BEST, "TrainingJobArn": f"{ARN}training-job/{BEST}",
            "TuningJobArn": f"{ARN}hyper-parameter-tuning-job/{TUNING}",
            "ModelArtifacts": {"S3ModelArtifacts": artifact_uri}, "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed", "HyperParameters": best_values,
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE, "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1,
                                                 "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": T0 + dt.timedelta(minutes=1),
            "TrainingTimeInSeconds": 180, "BillableTimeInSeconds": 180}


@pytest.fixture()
def best_artifact(aws, tmp_path):
    """The best training job's model.tar.gz in S3 (moto) and its CloudWatch log lines."""
    torch.manual_seed(0)
    args, aux = mxnet_state_dict(ResNetV2(5, 20, (3, 28, 28)))
    tar = write_model_tar(tmp_path / "src" / "model.tar.gz", {2: ({k: v.numpy() for k, v in args.items()},
                                                                  {k: v.numpy() for k, v in aux.items()})},
                          num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)
    session = boto3.Session(region_name=REGION)
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    key = f"ic/output/{BEST}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=tar.read_bytes())
    logs = session.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{BEST}/algo-1-1700000000")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{BEST}/algo-1-1700000000",
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(LOG_LINES)])
    return session, f"s3://{BUCKET}/{key}", tar


@pytest.mark.parametrize("page_size", [2, 3])  # three trials: two pages, or one
def test_attach_waits_pages_through_every_trial_and_returns_the_best_jobs_model(page_size, best_artifact, tmp_path):
    session, uri, tar = best_artifact
    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, prefix="ic", region=REGION, session=session,
                               poll_interval=0.01, progress=False)
    sleeps: list[float] = []
    backend.sleep = sleeps.append
    stub = Stubber(backend.client("sagemaker"))
    name = {"HyperParameterTuningJobName": TUNING}
    stub.add_response("describe_hyper_parameter_tuning_job", _tuning_description("InProgress"), name)
    stub.add_response("describe_hyper_parameter_tuning_job", _tuning_description("Completed"), name)
    pages = [TRIALS[i:i + page_size] for i in range(0, len(TRIALS), page_size)]
    for i, rows in enumerate(pages):  # each page asks for the next with the token the previous one gave
        answer: dict = {"TrainingJobSummaries": [_summary(*r) for r in rows]}
        if i + 1 < len(pages):
            answer["NextToken"] = f"token-{i + 1}"
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", answer,
                          {**name, "MaxResults": 100, **({"NextToken": f"token-{i}"} if i else {})})
    for _ in range(2):  # attach reads the job's hyperparameters, then waits for it (already Completed)
        stub.add_response("describe_training_job", _training_description(uri), {"TrainingJobName": BEST})
    with stub:
        result = Tuner.attach(TUNING, backend=backend, output_dir=tmp_path / "att", class_names=list("abcde"))
        stub.assert_no_pending_responses()
    assert sleeps == [0.01]  # one poll while the tuning job ran

    # every trial, from all pages, numbered in creation order, with its state, value and tuned hyperparameters
    assert [(t["number"], t["run_dir"], t["state"], t["value"], t["params"]) for t in result.trials] == [
        (1, TRIALS[1][0], "Completed", 0.74, {"learning_rate": "0.003", "optimizer": "adam"}),
        (2, TRIALS[2][0], "Stopped", None, {"learning_rate": "0.09", "optimizer": "sgd"}),
        (3, TRIALS[0][0], "Completed", 0.61, {"learning_rate": "0.02", "optimizer": "sgd"})]
    assert all(t["duration_s"] == 180.0 for t in result.trials)
    assert result.trials[1]["error"] == "stopped early by the tuning job"
    assert result.best_trial is result.trials[0] and result.best_value == 0.74
    assert result.objective == "validation:accuracy" and result.backend == "sagemaker"

    # the best job's artifact, downloaded, is the best model; its hyperparameters are the job's own
    model = result.best_model
    assert model.artifact == uri and model.local_artifact == tmp_path / "att" / "best" / "model.tar.gz"
    assert model.class_names == list("abcde") and model.info["job_name"] == BEST
    assert result.best_hyperparameters == HP.replace(learning_rate=0.003, optimizer="adam")
    ours, theirs = read_model_tar(model.local_artifact).params, read_model_tar(tar).params
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert [e["validation_accuracy"] for e in model.metrics["epochs"]] == [0.70, 0.74]  # from the job's log

    # tuning.json and the report hold the same trials; nothing half-written is left
    summary = json.loads((tmp_path / "att" / "tuning.json").read_text())
    assert summary["tuning_job"] == TUNING and summary["best_training_job"] == BEST
    assert [t["run_dir"] for t in summary["trials"]] == [t["run_dir"] for t in result.trials]
    assert summary["search_space"] == RANGES and summary["max_trials"] == 3
    assert result.report is not None and result.report.is_file() and BEST in result.report.read_text()
    assert not list((tmp_path / "att").rglob("*.tmp*"))


def test_a_tuning_job_without_a_best_training_job_is_one_clear_error(best_artifact, tmp_path):
    """Every trial failed: attach says so (the job's FailureReason) and lists or downloads nothing."""
    from multilabel_ic import TrainingError

    session, _, _ = best_artifact
    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, region=REGION, session=session, progress=False)
    desc = _tuning_description("Failed")
    desc["FailureReason"] = "All training jobs failed"
    stub = Stubber(backend.client("sagemaker"))
    stub.add_response("describe_hyper_parameter_tuning_job", desc, {"HyperParameterTuningJobName": TUNING})
    with stub, pytest.raises(TrainingError) as e:
        Tuner.attach(TUNING, backend=backend, output_dir=tmp_path / "att")
    stub.assert_no_pending_responses()
    assert str(e.value).count("\n") == 0 and TUNING in str(e.value) and "All training jobs failed" in str(e.value)
    assert not (tmp_path / "att").exists()  # no folder made for a model that never came


def test_a_best_job_whose_artifact_is_gone_leaves_no_folder(best_artifact, tmp_path):
    """The best job's model.tar.gz was deleted since: a BackendError naming it, and no output folder left behind."""
    from multilabel_ic import BackendError

    session, uri, _ = best_artifact
    session.client("s3").delete_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))
    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, region=REGION, session=session, progress=False)
    stub = Stubber(backend.client("sagemaker"))
    stub.add_response("describe_hyper_parameter_tuning_job", _tuning_description("Completed"),
                      {"HyperParameterTuningJobName": TUNING})
    stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                      {"TrainingJobSummaries": [_summary(*r) for r in TRIALS]},
                      {"HyperParameterTuningJobName": TUNING, "MaxResults": 100})
    for _ in range(2):
        stub.add_response("describe_training_job", _training_description(uri), {"TrainingJobName": BEST})
    with stub, pytest.raises(BackendError) as e:
        Tuner.attach(TUNING, backend=backend, output_dir=tmp_path / "att")
    stub.assert_no_pending_responses()
    assert "\n" not in str(e.value) and uri in str(e.value)
    assert not (tmp_path / "att").exists()


def test_a_tuning_job_lost_while_waiting_is_one_line_saying_it_still_runs(best_artifact, tmp_path):
    from multilabel_ic import BackendError

    session, _, _ = best_artifact
    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, region=REGION, session=session, progress=False)
    backend.sleep = lambda s: None
    stub = Stubber(backend.client("sagemaker"))
    name = {"HyperParameterTuningJobName": TUNING}
    stub.add_response("describe_hyper_parameter_tuning_job", _tuning_description("InProgress"), name)
    stub.add_client_error("describe_hyper_parameter_tuning_job", "ThrottlingException", "Rate exceeded",
                          expected_params=name)
    with stub, pytest.raises(BackendError) as e:
        Tuner.attach(TUNING, backend=backend, output_dir=tmp_path / "att")
    message = str(e.value)
    assert "\n" not in message and f"lost track of tuning job {TUNING}" in message and "Rate exceeded" in message
    assert f"--attach {TUNING}" in message and not (tmp_path / "att").exists()
