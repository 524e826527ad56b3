"""Tuning: the search space's checks (the class of ranges, not examples), the local Optuna study (N trials and the
best, pruning, kill -9 and resume, the report), and the SageMaker tuning request (field by field against the
request the SageMaker SDK's own objects build, and accepted by the API on moto)."""

from __future__ import annotations

import json
import random
import textwrap

import optuna  # the tune extra (`make venv` installs it)
import pytest
from resume_support import kill_study_in_trial

from multilabel_ic import HyperparameterError, Hyperparameters, UsageError
from multilabel_ic.hyperparameters import RULES
from multilabel_ic.testing import FakeLocalBackend, score_by_learning_rate
from multilabel_ic.tune import (
    AWS_RECOMMENDED,
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    SearchSpace,
    Tuner,
)

TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=1,
            multi_label=1, optimizer="adam", learning_rate=0.01)


def _hp(n: int = 24, **kw) -> Hyperparameters:
    return Hyperparameters(**{**TINY, "num_training_samples": n, **kw})


@pytest.fixture(scope="module")
def splits(coco5):
    return coco5.subset(range(24)), coco5.subset(range(24, 48))


# ----------------------------------------------------------------------------------------------- the search space
@pytest.mark.parametrize("name", sorted(AWS_RECOMMENDED))
def test_every_value_of_a_recommended_range_is_a_valid_hyperparameter(name):
    """The class: AWS's recommended range of each parameter is accepted, and every value it can produce (sampled
    across the range, ends included) builds a valid Hyperparameters."""
    rec = AWS_RECOMMENDED[name]
    hp = _hp(n=1024)
    if isinstance(rec[0], str):
        rng = CategoricalRange(rec)
        values = list(rec)
    elif RULES[name].kind == "int":
        rng = IntegerRange(*rec)
        values = [rec[0], rec[1], *random.Random(0).sample(range(rec[0], rec[1] + 1), 20)]
    else:
        rng = ContinuousRange(*rec, scaling="log" if rec[0] > 0 else "linear")
        values = [rec[0], rec[1], *(random.Random(1).uniform(*rec) for _ in range(20))]
    SearchSpace({name: rng}).validate(hp)
    for v in values:
        assert getattr(hp.replace(**{name: v}), name) is not None


@pytest.mark.parametrize("name", sorted(n for n, r in RULES.items() if r.kind in ("int", "float")
                                        and n not in ("num_classes", "num_training_samples")))
def test_a_range_past_the_rules_or_the_recommended_range_is_refused_naming_it(name):
    """The class: for every numeric hyperparameter, a range reaching past its rule's (or AWS's) bound is refused in
    one line that names the parameter and the range, before anything runs."""
    rule, rec = RULES[name], AWS_RECOMMENDED.get(name)
    high = (rec[1] if rec else rule.high if rule.high != float("inf") else None)
    low = (rec[0] if rec else rule.low if rule.low != -float("inf") else None)
    kind = IntegerRange if rule.kind == "int" else ContinuousRange
    bad = []
    if high is not None:
        bad.append(kind(low if low is not None else 1, high + 1) if rule.kind == "int" else kind(low or 0.0, high * 2))
    if low is not None:
        bad.append(kind(low - 1, high or low + 10) if rule.kind == "int" else kind(low - 1.0, high or low + 1.0))
    assert bad
    for rng in bad:
        with pytest.raises(HyperparameterError) as e:
            SearchSpace({name: rng}).validate(_hp(n=1 << 20, epochs=100))
        assert name in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert e.value.parameter == name


def test_values_valid_alone_but_not_with_the_fixed_hyperparameters_are_refused():
    # mini_batch_size 32 > 24 training images; resize 30 < the 32 px crop; a small-image depth at 32 px
    for space, hp, says in (({"mini_batch_size": IntegerRange(8, 32)}, _hp(), "can give 32"),
                            ({"resize": IntegerRange(30, 64)}, _hp(image_shape="3,32,32", num_layers=18, resize=40),
                             "can give 30"),
                            ({"num_layers": CategoricalRange([18, 20])}, _hp(image_shape="3,32,32", resize=40,
                                                                             num_layers=18), "can give 20")):
        with pytest.raises(HyperparameterError, match=says):
            SearchSpace(space).validate(hp)


def test_config_tables_give_the_ranges_the_parameters_types_ask_for():
    space = SearchSpace.from_config({"learning_rate": {"min": 1e-4, "max": 0.1, "scaling": "log"},
                                     "mini_batch_size": {"min": 8, "max": 64}, "optimizer": ["sgd", "adam"],
                                     "num_layers": {"values": [18, 34]}, "momentum": {"min": 0, "max": 0.9}})
    assert space["learning_rate"] == ContinuousRange(1e-4, 0.1, "log")
    assert space["mini_batch_size"] == IntegerRange(8, 64)
    assert space["optimizer"] == CategoricalRange(["sgd", "adam"])
    assert space["num_layers"] == CategoricalRange([18, 34])
    assert space["momentum"] == ContinuousRange(0.0, 0.9)
    assert SearchSpace.from_config(space.to_config()).ranges == space.ranges


# ----------------------------------------------------------------------------------------------- the local study
# The study's logic (trials as run folders, resuming, pruning, the report) is tested with FakeLocalBackend: each
# epoch scored by a function of the hyperparameters, through the same callbacks and run folder files as a local run.
# test_the_tune_command_runs_a_real_study_from_one_file trains real networks end to end.
@pytest.fixture(scope="module")
def study(splits, tmp_path_factory):
    train, val = splits
    out = tmp_path_factory.mktemp("tune") / "study"
    space = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"), "optimizer": CategoricalRange(["sgd", "adam"])}
    backend = FakeLocalBackend()
    tuner = Tuner(_hp(), space, objective="validation:mAP", max_trials=3, backend=backend, output_dir=out)
    result = tuner.fit(train, validation=val)
    assert len(backend.fits) == 3
    return tuner, result, space


def test_a_study_runs_its_trials_as_run_folders_and_reports_the_best(study):
    tuner, result, _ = study
    assert [t["state"] for t in result.trials] == ["COMPLETE"] * 3
    values = [t["value"] for t in result.trials]
    assert result.best_value == max(values)
    best = result.best_trial
    assert result.best_hyperparameters == _hp().replace(**best["params"])
    assert result.best_model.local_artifact == tuner.output_dir / best["run_dir"] / "model.tar.gz"
    assert sorted(t["run_dir"] for t in result.trials) == ["trial-001", "trial-002", "trial-003"]
    assert len({tuple(sorted(t["params"].items())) for t in result.trials}) == 3  # three points of the space
    for t in result.trials:  # each trial a normal run folder with its report; its value the shipped model's mAP
        folder = tuner.output_dir / t["run_dir"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["final"]["mAP"] == t["value"]
        assert t["value"] == score_by_learning_rate(_hp().replace(**t["params"]), 0)  # trained with its own params
        assert t["intermediate"] == {0: t["value"]} and t["epochs_trained"] == 1
        assert (folder / "report.html").is_file() and (folder / "model.tar.gz").is_file()
    summary = json.loads((tuner.output_dir / "tuning.json").read_text())
    assert summary["best"]["number"] == best["number"] and len(summary["trials"]) == 3
    page = result.report.read_text()
    assert result.report.name == "tuning-report.html"
    for t in result.trials:
        assert f'data-trial="{t["number"]}"' in page
    for name in best["params"]:
        assert f'data-param="{name}"' in page
    assert "Objective by trial" in page and "Parameter importances" in page


def test_a_finished_study_run_again_trains_nothing_and_keeps_its_trials(study, splits, monkeypatch):
    tuner, result, space = study
    import multilabel_ic.api as api

    monkeypatch.setattr(api.Trainer, "fit", lambda *a, **k: pytest.fail("a finished trial was trained again"))
    backend = FakeLocalBackend()
    again = Tuner(_hp(), space, objective="validation:mAP", max_trials=3, backend=backend,
                  output_dir=tuner.output_dir).fit(*splits[:1], validation=splits[1])
    assert backend.fits == []
    assert [(t["number"], t["value"], t["params"]) for t in again.trials] == \
        [(t["number"], t["value"], t["params"]) for t in result.trials]


def test_the_median_pruner_stops_a_clearly_worse_trial_after_its_first_epoch(splits, tmp_path):
    """Trial 2 (SGD at learning rate 1e-6: scored far below) is below the median of trial 1 (Adam at 0.05) at
    epoch 0, so its run stops there, cleanly, with its artifact and report."""
    train, val = splits
    space = {"learning_rate": ContinuousRange(1e-6, 0.1, scaling="log"), "optimizer": CategoricalRange(["sgd", "adam"])}
    backend = FakeLocalBackend()
    result = Tuner(_hp(epochs=2), space, objective="validation:accuracy", max_trials=2, backend=backend,
                   output_dir=tmp_path / "pruned", pruner_startup_trials=1,
                   initial_trials=[{"optimizer": "adam", "learning_rate": 0.05},
                                   {"optimizer": "sgd", "learning_rate": 1e-6}]).fit(train, validation=val)
    good, bad = result.trials
    assert good["state"] == "COMPLETE" and good["epochs_trained"] == 2
    assert bad["state"] == "PRUNED" and bad["epochs_trained"] == 1
    assert bad["intermediate"][0] < good["intermediate"][0]
    folder = tmp_path / "pruned" / bad["run_dir"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and len(metrics["epochs"]) == 1
    assert (folder / "model.tar.gz").is_file() and (folder / "report.html").is_file()
    assert result.best_trial["number"] == good["number"]
    assert [f["epochs_trained"] for f in backend.fits] == [[0, 1], [0]]  # the pruned run trained no second epoch


def test_kill_9_during_a_trial_then_a_rerun_finishes_the_study_without_repeating_finished_trials(
        synthetic_coco, splits, tmp_path):
    """A process running the study is killed (SIGKILL) in the middle of trial 2; the same study run again (here in
    this process) finishes it without running trial 1 again, trial 2 resuming in its run folder."""
    out = tmp_path / "study"
    kill_study_in_trial(synthetic_coco, out, 2, dict(num_classes=5, num_training_samples=24, num_layers=20,
                                                     image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=2,
                                                     multi_label=1, optimizer="adam", learning_rate=0.01),
                        objective="validation:mAP", max_trials=2)
    first = optuna.load_study(study_name="multilabel-ic", storage=f"sqlite:///{out / 'study.db'}")
    before = [(t.number, t.state.name, t.value, t.params, t.datetime_complete) for t in first.trials]
    assert [b[1] for b in before] == ["COMPLETE", "RUNNING"]
    assert first.trials[1].intermediate_values.keys() == {0}  # killed mid-trial: its first epoch reported

    backend = FakeLocalBackend()
    space = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"), "optimizer": CategoricalRange(["sgd", "adam"])}
    Tuner(_hp(epochs=2), space, objective="validation:mAP", max_trials=2, output_dir=out, backend=backend).fit(
        *splits[:1], validation=splits[1])
    # only the interrupted trial ran again, resuming in its run folder after its saved epoch
    assert [(f["output_dir"].name, f["epochs_trained"]) for f in backend.fits] == [("trial-002", [1])]
    after = optuna.load_study(study_name="multilabel-ic", storage=f"sqlite:///{out / 'study.db'}").trials
    assert (after[0].number, after[0].state.name, after[0].value, after[0].params, after[0].datetime_complete) \
        == before[0]  # the finished trial: not run again, its result identical
    assert after[1].state.name == "FAIL" and after[1].user_attrs["interrupted"]
    retry = after[2]  # asked again with the same hyperparameters, resuming in the same run folder
    assert retry.state.name == "COMPLETE" and retry.params == before[1][3]
    assert retry.user_attrs["retry_of"] == 1 and retry.user_attrs["run_dir"] == "trial-002"
    assert sorted(retry.intermediate_values) == [0, 1]  # the resumed run reported its saved epoch, then the next
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert not list(out.rglob("*.tmp*")) and not (out / ".lock").exists()


# ----------------------------------------------------------------------------------------------- SageMaker
REGION, BUCKET, ROLE = "us-east-1", "ic-tune-bucket", "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
SM_SPACE = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"), "mini_batch_size": IntegerRange(8, 64),
            "optimizer": CategoricalRange(["sgd", "adam", "nag"]), "momentum": ContinuousRange(0.0, 0.99)}


def _training_request():
    from multilabel_ic.backends.sagemaker import request as rq
    from multilabel_ic.backends.sagemaker.security import ResourceSettings

    hp = Hyperparameters(num_classes=5, num_training_samples=150, num_layers=18, image_shape="3,224,224", resize=256,
                         epochs=5, multi_label=1, use_weighted_loss=1, learning_rate=0.001, mini_batch_size=32)
    req = rq.training_job_request(name="unused", role_arn=ROLE, image=IMAGE, hyperparameters=hp.to_sagemaker(),
                                  channels=rq.lst_channels({c: f"s3://{BUCKET}/ic/{c}" for c in
                                                            ("train", "validation", "train_lst", "validation_lst")}),
                                  output_path=f"s3://{BUCKET}/ic/output",
                                  instance_type="ml.p3.2xlarge", instance_count=1, volume_size=50, max_run=36000)
    resources = ResourceSettings.build(subnets=["subnet-1"], security_group_ids=["sg-1"], tags={"team": "vision"},
                                       volume_kms_key=None, output_kms_key=None, enable_network_isolation=False,
                                       encrypt_inter_container_traffic=False, environment=None)
    return resources.apply_to_training_job(req)


def _sdk_request(training: dict, parents: list[str]) -> dict:
    """What the SageMaker SDK's HyperparameterTuner sends for the same training job and ranges: its
    ``_build_tuning_job_config`` / ``_build_training_job_definition`` steps, with the SDK's own parameter classes
    and shapes, serialized and sent by ``HyperParameterTuningJob.create`` (the call is captured, not made)."""
    from botocore.client import BaseClient
    from sagemaker.core import shapes as sh
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
    from sagemaker.core.resources import HyperParameterTuningJob

    sdk_ranges = {"learning_rate": ContinuousParameter(1e-4, 0.1, scaling_type="Logarithmic"),
                  "mini_batch_size": IntegerParameter(8, 64, scaling_type="Linear"),
                  "optimizer": CategoricalParameter(["sgd", "adam", "nag"]),
                  "momentum": ContinuousParameter(0.0, 0.99, scaling_type="Linear")}

    def snake(d):
        return {"".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_"): v for k, v in d.items()}

    ranges = {}
    for kind in ("Continuous", "Categorical", "Integer"):  # HyperparameterTuner._prepare_parameter_ranges_for_tuning
        ranges[kind + "ParameterRanges"] = [snake(p.as_tuning_range(n)) for n, p in sdk_ranges.items()
                                            if p.__name__ == kind]
    config = sh.HyperParameterTuningJobConfig(
        strategy="Bayesian",
        hyper_parameter_tuning_job_objective=sh.HyperParameterTuningJobObjective(type="Maximize",
                                                                                 metric_name="validation:accuracy"),
        resource_limits=sh.ResourceLimits(max_number_of_training_jobs=12, max_parallel_training_jobs=2),
        parameter_ranges=sh.ParameterRanges(integer_parameter_ranges=ranges["IntegerParameterRanges"],
                                            continuous_parameter_ranges=ranges["ContinuousParameterRanges"],
                                            categorical_parameter_ranges=ranges["CategoricalParameterRanges"]),
        training_job_early_stopping_type="Auto", random_seed=7)
    channels = [sh.Channel(channel_name=c["ChannelName"], content_type=c["ContentType"],
                           data_source=sh.DataSource(s3_data_source=sh.S3DataSource(
                               s3_data_type="S3Prefix", s3_uri=c["DataSource"]["S3DataSource"]["S3Uri"],
                               s3_data_distribution_type="FullyReplicated")))
                for c in training["InputDataConfig"]]
    static = {k: v for k, v in training["HyperParameters"].items() if k not in sdk_ranges}
    definition = sh.HyperParameterTrainingJobDefinition(
        algorithm_specification=sh.HyperParameterAlgorithmSpecification(training_image=IMAGE,
                                                                         training_input_mode="File"),
        role_arn=ROLE, input_data_config=channels,
        output_data_config=sh.OutputDataConfig(s3_output_path=f"s3://{BUCKET}/ic/output"),
        resource_config=sh.ResourceConfig(instance_type="ml.p3.2xlarge", instance_count=1, volume_size_in_gb=50),
        stopping_condition=sh.StoppingCondition(max_runtime_in_seconds=36000), static_hyper_parameters=static,
        vpc_config=sh.VpcConfig(security_group_ids=["sg-1"], subnets=["subnet-1"]))
    warm = sh.HyperParameterTuningJobWarmStartConfig(
        parent_hyper_parameter_tuning_jobs=[sh.ParentHyperParameterTuningJob(hyper_parameter_tuning_job_name=p)
                                            for p in parents], warm_start_type="IdenticalDataAndAlgorithm")
    sent = {}

    class Captured(Exception):
        pass

    def capture(self, operation, params):
        sent.update(operation=operation, params=params)
        raise Captured

    import boto3

    original = BaseClient._make_api_call
    BaseClient._make_api_call = capture
    try:
        HyperParameterTuningJob.create(hyper_parameter_tuning_job_name="ic-tune-x", hyper_parameter_tuning_job_config=config,
                                       training_job_definition=definition, warm_start_config=warm,
                                       tags=[sh.Tag(key="team", value="vision")],
                                       session=boto3.Session(region_name=REGION, aws_access_key_id="x",
                                                             aws_secret_access_key="x"), region=REGION)
    except Captured:
        pass
    finally:
        BaseClient._make_api_call = original
    assert sent["operation"] == "CreateHyperParameterTuningJob"
    return sent["params"]


def _leaves(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def test_the_tuning_request_equals_the_sdks_for_the_same_ranges_field_by_field():
    from multilabel_ic.tune.sagemaker import training_job_definition, tuning_job_request

    training = _training_request()
    definition, tags = training_job_definition(training, SearchSpace(SM_SPACE))
    ours = tuning_job_request(name="ic-tune-x", definition=definition, space=SearchSpace(SM_SPACE), max_trials=12,
                              max_parallel=2, parents=["ic-tune-parent-1"], random_seed=7, tags=tags)
    sdk = _sdk_request(training, ["ic-tune-parent-1"])

    def canonical(req):  # the order of the ranges within a kind is not part of the request's meaning
        req = json.loads(json.dumps(req))
        for items in req["HyperParameterTuningJobConfig"]["ParameterRanges"].values():
            items.sort(key=lambda r: r["Name"])
        return dict(_leaves(req))

    a, b = canonical(ours), canonical(sdk)
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    for field in a:
        assert a[field] == b[field], field
    assert "learning_rate" not in definition["StaticHyperParameters"]


def test_the_tuning_job_is_created_on_the_api_with_the_backends_training_job(aws, coco5_200, monkeypatch, tmp_path):
    """Tuner.fit on the SageMaker backend (moto): the data is uploaded as for a training job, the request passes
    botocore's validation of the API model, and the job SageMaker describes holds exactly what was sent."""
    import boto3
    from moto_support import created_tuning_job

    from multilabel_ic.backends.sagemaker import SageMakerBackend

    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, prefix="ic", region=REGION, session=session,
                               poll_interval=0.01, progress=False, tags={"team": "vision"})
    train, val = coco5_200.split(train_size=150, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), num_layers=18, image_shape="3,224,224",
                         resize=256, epochs=5, multi_label=1, mini_batch_size=32)
    tuner = Tuner(hp, SM_SPACE, backend=backend, max_trials=12, max_parallel=2, seed=7, output_dir=tmp_path / "sm",
                  warm_start_from=["ic-tune-parent-1"])
    req, desc, name = created_tuning_job(tuner, monkeypatch, session.client("sagemaker"), train, val)
    assert desc["HyperParameterTuningJobConfig"] == req["HyperParameterTuningJobConfig"]
    assert desc["TrainingJobDefinition"] == req["TrainingJobDefinition"]
    assert desc["WarmStartConfig"] == req["WarmStartConfig"]
    config = req["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:accuracy"}
    assert req["Tags"] == [{"Key": "team", "Value": "vision"}] and len(name) <= 32
    channels = {c["ChannelName"] for c in req["TrainingJobDefinition"]["InputDataConfig"]}
    assert channels == {"train", "validation", "train_lst", "validation_lst"}
    uri = next(c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["TrainingJobDefinition"]["InputDataConfig"]
               if c["ChannelName"] == "train_lst")  # uploaded as for a training job: the channel holds the .lst
    prefix = uri.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/"
    keys = {o["Key"] for o in session.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert [k.rsplit("/", 1)[-1] for k in keys] == ["train.lst"]


def test_asking_sagemaker_for_map_is_refused_saying_it_emits_only_accuracy():
    from multilabel_ic.backends.sagemaker import SageMakerBackend

    backend = SageMakerBackend(role=ROLE, bucket=BUCKET, region=REGION)
    with pytest.raises(UsageError, match="emits only 'validation:accuracy'"):
        Tuner(_hp(), SM_SPACE, objective="validation:mAP", backend=backend)


def test_the_tuning_report_in_a_real_browser(study, tmp_path):
    """The page renders without a console message, shows each trial's value and the best one as tuning.json holds
    them, embeds its figures, and links each trial's run report (which exists)."""
    from html.parser import HTMLParser

    from test_report import browse

    tuner, result, _ = study
    console, dom = browse(result.report, tmp_path / "tuning.png")
    assert console == []
    assert (tmp_path / "tuning.png").stat().st_size > 20_000

    class Seen(HTMLParser):
        def __init__(self):
            super().__init__()
            self.values, self.cards, self.links, self.images, self._cap, self._row = {}, {}, [], [], None, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "tr" and "data-trial" in a:
                self._row = a["data-trial"]
            if "data-value" in a and self._row:
                self._cap = ("values", self._row)
            if "data-metric" in a:
                self._cap = ("cards", a["data-metric"])
            if tag == "a":
                self.links.append(a["href"])
            if tag == "img":
                self.images.append(a["src"])

        def handle_data(self, data):
            if self._cap:
                getattr(self, self._cap[0])[self._cap[1]] = data.strip()
                self._cap = None

    seen = Seen()
    seen.feed(dom)
    summary = json.loads((tuner.output_dir / "tuning.json").read_text())
    assert seen.values == {str(t["number"]): f"{t['value']:.6f}" for t in summary["trials"]}
    assert seen.cards["best_value"] == f"{summary['best']['value']:.4f}"
    assert seen.cards["best_trial"] == str(summary["best"]["number"])
    assert len(seen.images) == 2 and all(src.startswith("data:image/png;base64,") for src in seen.images)
    assert seen.links and all((tuner.output_dir / link).is_file() for link in seen.links)


@pytest.mark.parametrize("completed", [2, 3, 5, 12])
def test_parameter_importances_for_any_number_of_completed_trials(completed, monkeypatch):
    """From two completed trials on, the report's importances are computed (whatever the count), and an evaluator
    that fails costs the figure only, never the finished study."""
    from multilabel_ic.tune.local import importances

    study = optuna.create_study(direction="maximize")
    dists = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
             "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])}
    rng = random.Random(completed)
    for i in range(completed):
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": 10 ** rng.uniform(-4, -1), "optimizer": ["sgd", "adam"][i % 2]},
            distributions=dists, value=rng.random()))
    values, method = importances(study, seed=0)
    assert set(values) == {"learning_rate", "optimizer"} and method in ("fANOVA", "PED-ANOVA")

    def broken(*a, **k):
        raise AssertionError("an evaluator's own check")

    monkeypatch.setattr(optuna.importance, "get_param_importances", broken)
    assert importances(study, seed=0) is None


def test_the_tune_command_runs_a_real_study_from_one_file(coco5, tmp_path, capsys):
    """End to end with real training (the other study tests use FakeLocalBackend): two trials of a ResNet-20 at
    28 px for one epoch (one step) on 8 images, each a normal local run folder whose shipped model's score is the trial's
    value, and the command prints the best trial and the report."""
    from multilabel_ic.cli import main

    train, val = coco5.subset(range(8)), coco5.subset(range(8, 16))
    train.to_lst(tmp_path / "train.lst")
    val.to_lst(tmp_path / "validation.lst")
    (tmp_path / "tune.toml").write_text(textwrap.dedent(f"""
        output = "study"
        classes = {json.dumps(list(train.class_names))}
        [data]
        train_lst = "train.lst"
        validation_lst = "validation.lst"
        images = "{train.root}"
        [hyperparameters]
        num_layers = 20
        image_shape = "3,28,28"
        resize = 32
        mini_batch_size = 8
        epochs = 1
        multi_label = 1
        [local]
        device = "cpu"
        workers = 0
        [tune]
        objective = "validation:accuracy"
        max_trials = 2
        [search_space]
        optimizer = ["adam", "sgd"]
        learning_rate = {{ min = 0.001, max = 0.05, scaling = "log" }}
        """))
    assert main(["--quiet", "tune", "--config", str(tmp_path / "tune.toml")]) == 0
    out = capsys.readouterr().out
    study = tmp_path / "study"
    summary = json.loads((study / "tuning.json").read_text())
    best = summary["best"]
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "COMPLETE"]
    assert best["value"] == max(t["value"] for t in summary["trials"])
    assert f"best: trial {best['number']} ({best['run_dir']}) validation:accuracy={best['value']:.6f}" in out
    assert f"report: {study / 'tuning-report.html'}" in out and (study / "tuning-report.html").is_file()
    assert set(best["params"]) == {"optimizer", "learning_rate"}
    for t in summary["trials"]:  # real runs: trained with the trial's hyperparameters, scored by the shipped model
        folder = study / t["run_dir"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["backend"] == "local" and len(metrics["epochs"]) == 1 == t["epochs_trained"]
        assert metrics["final"]["validation_accuracy"] == t["value"]
        args = json.loads((folder / "args.json").read_text())["hyperparameters"]
        assert args["optimizer"] == t["params"]["optimizer"]
        assert float(args["learning_rate"]) == pytest.approx(t["params"]["learning_rate"])
        assert (folder / "report.html").is_file() and (folder / "model.tar.gz").stat().st_size > 100_000
    assert f"best model artifact: {study / best['run_dir'] / 'model.tar.gz'}" in out
