"""SageMaker automatic model tuning over the built-in algorithm or the project's engine (``engine="pytorch"``, whose
jobs also emit ``validation:mAP``): the CreateHyperParameterTuningJob request (pure
functions, checked without AWS) and the job's run: create, wait, the trials, and the best training job as a
:class:`~multilabel_ic.backends.base.Model`.

The training jobs a tuning job starts are defined by the same CreateTrainingJob request the SageMaker backend sends
for one training run (:func:`multilabel_ic.backends.sagemaker.request.training_job_request` with the backend's
resource settings), turned into a ``TrainingJobDefinition``: the ranged hyperparameters leave the static ones, the
job name and tags move to the tuning job. The parameter ranges are those the SageMaker SDK writes
(``ParameterRange.as_tuning_range``: every value a string).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write_text, ensure_dir, json_default
from ..exceptions import BackendError, TrainingError, UsageError
from .space import CategoricalRange, ContinuousRange, IntegerRange, SearchSpace

if TYPE_CHECKING:
    from ..data.dataset import Dataset

__all__ = ["SAGEMAKER_OBJECTIVE", "ENGINE_OBJECTIVES", "WARM_START_TYPES", "STRATEGIES", "parameter_ranges",
           "training_job_definition", "tuning_job_request", "tuning_job_name", "run_sagemaker_tuning",
           "attach_tuning_job", "check_objective"]

log = logging.getLogger("multilabel_ic.tune")
SAGEMAKER_OBJECTIVE = "validation:accuracy"  # the only metric the built-in algorithm emits
# the objectives each engine's training jobs emit (engine="pytorch": its metric definitions read them from the log)
ENGINE_OBJECTIVES = {"builtin": (SAGEMAKER_OBJECTIVE,), "pytorch": (SAGEMAKER_OBJECTIVE, "validation:mAP")}
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
MAX_PARENTS = 5  # SageMaker's limit on the parent jobs of a warm start
_SCALING = {"linear": "Linear", "log": "Logarithmic"}
_TERMINAL = ("Completed", "Failed", "Stopped")
# CreateTrainingJob fields that a TrainingJobDefinition takes under the same name
_DEFINITION_FIELDS = ("RoleArn", "InputDataConfig", "VpcConfig", "OutputDataConfig", "ResourceConfig",
                      "StoppingCondition", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                      "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy", "Environment")
_TUNING_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")


def tuning_job_name(base: str = "ic-tune") -> str:
    """A unique, valid tuning job name: ``base-YYmmdd-HHMMSS-xxxx``, at most 32 characters (SageMaker's limit)."""
    clean = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9-]", "-", base)).strip("-") or "ic-tune"
    suffix = f"{time.strftime('%y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    name = f"{clean[: 32 - len(suffix) - 1].rstrip('-')}-{suffix}"
    assert _TUNING_NAME_RE.match(name), name
    return name


def parameter_ranges(space: SearchSpace, *, framework: bool = False) -> dict[str, list[dict]]:
    """``ParameterRanges`` of the request, as the SageMaker SDK writes them (every value a string); ``framework``:
    for a framework container's jobs, whose categorical values the SDK JSON-encodes (``as_json_range``), as it
    encodes their static hyperparameters."""
    out: dict[str, list[dict]] = {"IntegerParameterRanges": [], "ContinuousParameterRanges": [],
                                  "CategoricalParameterRanges": []}
    for name, rng in space.items():
        if isinstance(rng, CategoricalRange):
            values = [json.dumps(v) for v in rng.values] if framework else [str(v) for v in rng.values]
            out["CategoricalParameterRanges"].append({"Name": name, "Values": values})
        else:
            key = "IntegerParameterRanges" if isinstance(rng, IntegerRange) else "ContinuousParameterRanges"
            assert isinstance(rng, (IntegerRange, ContinuousRange))
            out[key].append({"Name": name, "MinValue": str(rng.low), "MaxValue": str(rng.high),
                             "ScalingType": _SCALING[rng.scaling]})
    return out


def training_job_definition(training_request: dict, space: SearchSpace) -> tuple[dict, list[dict]]:
    """(the ``TrainingJobDefinition``, the tags) from a CreateTrainingJob request: the ranged hyperparameters leave
    the static ones; the job's name goes (the tuning job names its jobs) and its tags go to the tuning job."""
    spec = training_request["AlgorithmSpecification"]
    definition: dict[str, Any] = {
        "StaticHyperParameters": {k: v for k, v in training_request["HyperParameters"].items() if k not in space},
        "AlgorithmSpecification": {"TrainingImage": spec["TrainingImage"],
                                   "TrainingInputMode": spec["TrainingInputMode"]},
    }
    if spec.get("MetricDefinitions"):  # a framework container's jobs: the metrics its log lines give
        definition["AlgorithmSpecification"]["MetricDefinitions"] = [dict(m) for m in spec["MetricDefinitions"]]
    for key in _DEFINITION_FIELDS:
        if key in training_request:
            definition[key] = training_request[key]
    return definition, list(training_request.get("Tags") or [])


def tuning_job_request(*, name: str, definition: dict, space: SearchSpace, max_trials: int, max_parallel: int,
                       objective: str = SAGEMAKER_OBJECTIVE, strategy: str = "Bayesian",
                       early_stopping: str = "Auto", parents: Sequence[str] = (),
                       warm_start_type: str = "IdenticalDataAndAlgorithm", random_seed: int | None = None,
                       max_runtime: int | None = None, tags: Sequence[dict] = ()) -> dict:
    """The keyword arguments of ``sagemaker.create_hyper_parameter_tuning_job``. The objective must be a metric the
    training jobs emit: the built-in algorithm's, or the definition's ``MetricDefinitions`` (this engine's jobs)."""
    metrics = [m["Name"] for m in (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []]
    if not metrics:
        check_objective(objective, "builtin")
    elif objective not in metrics:
        raise UsageError(f"objective={objective!r}: the training jobs' metric definitions give "
                         f"{', '.join(repr(m) for m in metrics)}; use one of them.")
    limits: dict[str, Any] = {"MaxNumberOfTrainingJobs": int(max_trials), "MaxParallelTrainingJobs": int(max_parallel)}
    if max_runtime:
        limits["MaxRuntimeInSeconds"] = int(max_runtime)
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": objective},
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(space, framework=bool(metrics)),
        "TrainingJobEarlyStoppingType": early_stopping,
    }
    if random_seed is not None:
        config["RandomSeed"] = int(random_seed)
    req: dict[str, Any] = {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config,
                           "TrainingJobDefinition": definition}
    if parents:
        req["WarmStartConfig"] = {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p}
                                                                      for p in parents],
                                  "WarmStartType": warm_start_type}
    if tags:
        req["Tags"] = list(tags)
    return req


def check_objective(objective: str, engine: str) -> None:
    """The objective must be one of the metrics the engine's training jobs emit (one line otherwise)."""
    if objective in ENGINE_OBJECTIVES[engine]:
        return
    if engine == "builtin":
        raise UsageError(f"objective={objective!r}: on SageMaker the built-in algorithm emits only "
                         f"{SAGEMAKER_OBJECTIVE!r} (its validation mAP is computed by the local backend alone); use "
                         f"objective={SAGEMAKER_OBJECTIVE!r}, tune locally, or tune the project's engine on "
                         f"SageMaker (SageMakerBackend(engine='pytorch')) for 'validation:mAP'.")
    raise UsageError(f"objective={objective!r}: the project's engine on SageMaker emits "
                     f"{' and '.join(repr(o) for o in ENGINE_OBJECTIVES[engine])}; use one of them.")


def check_sagemaker_settings(*, objective: str, strategy: str, early_stopping: str, parents: Sequence[str],
                             warm_start_type: str, engine: str = "builtin", use_spot: bool = False) -> None:
    """What the tuning job would refuse, or would fail on, refused first (one line each)."""
    check_objective(objective, engine)
    if engine == "pytorch" and use_spot:
        raise UsageError("use_spot=True with engine='pytorch' in a tuning job: its training jobs would share one "
                         "checkpoint location, and a trial would resume another trial's run; tune this engine with "
                         "on-demand instances (use_spot=False), or tune the built-in algorithm on spot.")
    if strategy not in STRATEGIES:
        raise UsageError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}.")
    if early_stopping not in ("Auto", "Off"):
        raise UsageError(f"early_stopping={early_stopping!r} is not 'Auto' or 'Off'.")
    if warm_start_type not in WARM_START_TYPES:
        raise UsageError(f"warm_start_type={warm_start_type!r} is not one of {', '.join(WARM_START_TYPES)}.")
    if len(parents) > MAX_PARENTS:
        raise UsageError(f"warm_start_from: {len(parents)} parent tuning jobs; SageMaker takes at most {MAX_PARENTS}.")
    for p in parents:
        if not isinstance(p, str) or not _TUNING_NAME_RE.match(p):
            raise UsageError(f"warm_start_from: {p!r} is not a tuning job name (1-32 letters, digits and hyphens).")


def run_sagemaker_tuning(tuner: Any, train: Dataset, validation: Dataset) -> tuple[dict, Any]:
    """Upload the data, create the tuning job, wait for it, and return (the summary, the best job's Model)."""

    backend = tuner.backend
    hp = tuner.hyperparameters
    image = backend.check_request(hp, train, validation)
    role = backend.role_arn()
    backend._check_bucket()
    out = ensure_dir(tuner.output_dir)
    channels = backend.upload(train, validation)
    name = tuning_job_name(tuner.base_job_name)
    # the training jobs: the request the backend sends for one run of its engine (SageMakerBackend.fit), job name
    # aside (this engine's: its source, hyperparameters and metric definitions)
    training = backend.training_request(name, role, image, hp, channels, list(train.class_names),
                                        model_uri=backend.model_uri)
    definition, tags = training_job_definition(backend.resources.apply_to_training_job(training), tuner.search_space)
    req = tuning_job_request(name=name, definition=definition, space=tuner.search_space, max_trials=tuner.max_trials,
                             max_parallel=tuner.max_parallel, objective=tuner.objective, strategy=tuner.strategy,
                             early_stopping=tuner.early_stopping, parents=tuner.warm_start_from,
                             warm_start_type=tuner.warm_start_type, random_seed=tuner.seed, tags=tags)
    tuner.last_request = req
    backend._call("sagemaker", "create_hyper_parameter_tuning_job", **req)
    log.info("started tuning job %s: %d trials, %d at a time, objective %s", name, tuner.max_trials,
             tuner.max_parallel, tuner.objective)
    return attach_tuning_job(backend, name, output_dir=out, class_names=train.class_names, validation=validation)


def _wait(backend: Any, name: str) -> dict:
    last = None
    while True:
        try:
            desc = backend._call("sagemaker", "describe_hyper_parameter_tuning_job",
                                 HyperParameterTuningJobName=name)
        except BackendError as exc:
            if last is not None:  # it was there: the job runs on, only this process lost it
                raise BackendError(f"lost track of tuning job {name} ({exc}); it still runs on SageMaker: attach to "
                                   f"it again when the problem is fixed (Tuner.attach({name!r}, ...) or tune "
                                   f"--attach {name}).") from exc
            raise BackendError(f"tuning job {name}: cannot be described in {backend.region} ({exc}); check its "
                               f"name (aws sagemaker list-hyper-parameter-tuning-jobs) and the region.") from exc
        status = desc["HyperParameterTuningJobStatus"]
        counts = desc.get("TrainingJobStatusCounters") or {}
        line = (f"tuning job {name}: {status}; training jobs: " + ", ".join(f"{v} {k}" for k, v in counts.items()
                                                                             if v))
        if line != last:
            log.info("%s", line)
            last = line
        if status in _TERMINAL:
            return desc
        backend.sleep(backend.poll_interval)


def _unquoted(value: str) -> str:
    """A tuned value as the algorithm reads it: a framework job's JSON-encoded string (``'"adam"'``) unwrapped."""
    try:
        decoded = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value
    return decoded if isinstance(decoded, str) else value


def _trials(backend: Any, name: str) -> list[dict]:
    rows, token = [], None
    while True:
        page = backend._call("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
                             HyperParameterTuningJobName=name, MaxResults=100, **({"NextToken": token} if token else {}))
        for job in page.get("TrainingJobSummaries", []):
            metric = job.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            start, end = job.get("TrainingStartTime"), job.get("TrainingEndTime")
            rows.append({"run_dir": job["TrainingJobName"], "state": job.get("TrainingJobStatus"),
                         "value": metric.get("Value"),
                         "params": {k: _unquoted(v) for k, v in (job.get("TunedHyperParameters") or {}).items()},
                         "duration_s": (end - start).total_seconds() if start and end else None,
                         "error": job.get("FailureReason"), "created": job.get("CreationTime")})
        token = page.get("NextToken")
        if not token:
            break
    rows.sort(key=lambda r: str(r.pop("created") or ""))
    for i, row in enumerate(rows):
        row["number"] = i + 1
    return rows


def attach_tuning_job(backend: Any, name: str, *, output_dir: str | Path, class_names: Sequence[str] | None = None,
                      validation: Dataset | None = None) -> tuple[dict, Any]:
    """Wait for the tuning job ``name`` (started here or elsewhere), then return (its summary, written to
    ``tuning.json``, and the best training job's :class:`Model`, its artifact in ``output_dir/best``)."""
    if not isinstance(name, str) or not _TUNING_NAME_RE.match(name):
        raise UsageError(f"tuning job {name!r}: not a tuning job name (1-32 letters, digits and hyphens).")
    out = Path(output_dir)
    made = not out.exists()
    desc = _wait(backend, name)
    best_job = desc.get("BestTrainingJob") or {}
    if not best_job.get("TrainingJobName"):
        raise TrainingError(f"tuning job {name} ended {desc['HyperParameterTuningJobStatus']} without a best "
                            f"training job: {desc.get('FailureReason') or 'no training job finished'}.",
                            job_name=name, status=desc["HyperParameterTuningJobStatus"],
                            failure_reason=desc.get("FailureReason"))
    trials = _trials(backend, name)
    best_name = best_job["TrainingJobName"]
    try:
        model = backend.attach(best_name, output_dir=ensure_dir(out) / "best", class_names=class_names)
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):  # nothing of the job arrived: no empty folder left
            out.rmdir()
        raise
    config = desc.get("HyperParameterTuningJobConfig") or {}
    best = next((t for t in trials if t["run_dir"] == best_name), None)
    summary = {"backend": "sagemaker", "tuning_job": name, "status": desc["HyperParameterTuningJobStatus"],
               "objective": (config.get("HyperParameterTuningJobObjective") or {}).get("MetricName"),
               "max_trials": (config.get("ResourceLimits") or {}).get("MaxNumberOfTrainingJobs"),
               "trials": trials, "best": best, "best_training_job": best_name,
               "base_hyperparameters": (desc.get("TrainingJobDefinition") or {}).get("StaticHyperParameters"),
               "search_space": config.get("ParameterRanges"), "importances": None,
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(out / "tuning.json", json.dumps(summary, indent=2, default=json_default) + "\n")
    return summary, model
