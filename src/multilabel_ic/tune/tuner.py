"""``Tuner``: one search space, tuned on either backend.

    result = Tuner(hp, {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log")}, objective="validation:mAP",
                   max_trials=12, backend="local", output_dir="runs/tune").fit(train, validation=val)
    result.best_hyperparameters, result.best_model.predictor()

Everything is checked before a trial runs or a file is written: the search space against the algorithm's rules and
AWS's recommended ranges, the objective against the backend, and the settings of the study.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Model
from ..callbacks import Callback
from ..data.dataset import Dataset
from ..exceptions import UsageError
from ..hyperparameters import Hyperparameters, Rule, check_options
from .local import OBJECTIVES
from .space import SearchSpace

__all__ = ["Tuner", "TuningResult"]

TUNER_RULES = {"max_trials": Rule("int", low=1, high=10000), "max_parallel": Rule("int", low=1, high=100),
               "seed": Rule("int", low=0), "pruning": Rule("bool"), "pruner_startup_trials": Rule("int", low=0),
               "pruner_warmup_epochs": Rule("int", low=0), "sampler_startup_trials": Rule("int", low=1, nullable=True),
               "objective": Rule("choice", choices=tuple(OBJECTIVES)), "base_job_name": Rule("str")}


@dataclass
class TuningResult:
    """A finished (or resumed and finished) study: every trial, the best one and its model."""

    backend: str
    objective: str
    trials: list[dict]
    best_trial: dict | None
    best_hyperparameters: Hyperparameters | None
    best_model: Model | None
    output_dir: Path
    importances: dict[str, float] | None = None
    report: Path | None = None
    summary: dict = field(default_factory=dict, repr=False)

    @property
    def best_value(self) -> float | None:
        return None if self.best_trial is None else self.best_trial.get("value")


class Tuner:
    """Tune the built-in algorithm's hyperparameters over ``search_space`` on a backend.

    - ``hyperparameters``: the study's fixed hyperparameters (a :class:`Hyperparameters`; a range replaces its value).
    - ``search_space``: a :class:`SearchSpace` or a mapping of names to ranges.
    - ``objective``: ``"validation:accuracy"`` (both backends) or ``"validation:mAP"`` (locally, or on SageMaker with
      ``SageMakerBackend(engine="pytorch")``: the built-in algorithm does not emit it). A trial's value is the shipped
      model's score.
    - ``max_trials``, ``max_parallel``: trials in all, and at once (locally, in threads of this process).
    - ``backend``: ``"local"``, a ``LocalBackend``, ``"sagemaker"`` or a ``SageMakerBackend``.
    - Local: ``seed`` (the TPE sampler's), ``pruning`` (the median pruner; ``pruner_startup_trials`` trials run
      unpruned and no trial is pruned before epoch ``pruner_warmup_epochs``), ``sampler_startup_trials`` (random
      trials before TPE; default half the trials, at most 10), ``initial_trials`` (hyperparameters to try first,
      e.g. a known good configuration: a mapping of some or all of the space's names to values in their ranges),
      ``callbacks`` (every trial's run gets them).
    - SageMaker: ``strategy`` (Bayesian), ``early_stopping`` (Auto), ``warm_start_from`` (earlier tuning jobs) with
      ``warm_start_type``, ``base_job_name``; ``seed`` is the tuning job's RandomSeed.
    """

    def __init__(self, hyperparameters: Hyperparameters, search_space: SearchSpace | Mapping[str, Any], *,
                 objective: str = "validation:accuracy", max_trials: int = 10, max_parallel: int = 1,
                 backend: Any = "local", output_dir: str | os.PathLike = "runs/tune", seed: int = 0,
                 pruning: bool = True, pruner_startup_trials: int = 3, pruner_warmup_epochs: int = 0,
                 sampler_startup_trials: int | None = None, initial_trials: Sequence[Mapping[str, Any]] = (),
                 callbacks: Sequence[Callback] = (),
                 strategy: str = "Bayesian", early_stopping: str = "Auto", warm_start_from: Sequence[str] = (),
                 warm_start_type: str = "IdenticalDataAndAlgorithm", base_job_name: str = "ic-tune"):
        from ..api import get_backend

        if not isinstance(hyperparameters, Hyperparameters):
            raise UsageError(f"hyperparameters must be a multilabel_ic.Hyperparameters, got "
                             f"{type(hyperparameters).__name__}.")
        checked = check_options(dict(max_trials=max_trials, max_parallel=max_parallel, seed=seed, pruning=pruning,
                                     pruner_startup_trials=pruner_startup_trials,
                                     pruner_warmup_epochs=pruner_warmup_epochs,
                                     sampler_startup_trials=sampler_startup_trials, objective=objective,
                                     base_job_name=base_job_name), TUNER_RULES, owner="Tuner")
        self.hyperparameters = hyperparameters
        self.search_space = search_space if isinstance(search_space, SearchSpace) else SearchSpace(search_space)
        self.objective = checked["objective"]
        self.max_trials, self.max_parallel, self.seed = checked["max_trials"], checked["max_parallel"], checked["seed"]
        if self.max_parallel > self.max_trials:
            raise UsageError(f"max_parallel={self.max_parallel} exceeds max_trials={self.max_trials}.")
        self.pruning = ({"startup_trials": checked["pruner_startup_trials"],
                         "warmup_epochs": checked["pruner_warmup_epochs"]} if checked["pruning"] else None)
        self.sampler_startup_trials = checked["sampler_startup_trials"] or max(1, min(10, self.max_trials // 2))
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise UsageError(f"callbacks must be multilabel_ic.callbacks.Callback objects, got {type(cb).__name__}")
        self.strategy, self.early_stopping = strategy, early_stopping
        self.warm_start_from, self.warm_start_type = list(warm_start_from), warm_start_type
        self.base_job_name = checked["base_job_name"]
        self.output_dir = Path(output_dir)
        self.backend = get_backend(backend)
        self.last_request: dict | None = None
        if self.backend.name == "sagemaker":
            from .sagemaker import check_sagemaker_settings

            check_sagemaker_settings(objective=self.objective, strategy=strategy, early_stopping=early_stopping,
                                     parents=self.warm_start_from, warm_start_type=warm_start_type,
                                     engine=getattr(self.backend, "engine", "builtin"),
                                     use_spot=bool(getattr(self.backend, "use_spot", False)))
        elif self.backend.name == "local":
            if self.warm_start_from:
                raise UsageError("warm_start_from names SageMaker tuning jobs; a local study resumes from its own "
                                 "study file in output_dir instead.")
        else:
            raise UsageError(f"backend {self.backend.name!r}: a Tuner runs on 'local' or 'sagemaker'.")
        self.search_space.validate(hyperparameters)
        self.initial_trials = [self.search_space.check_point(p, what=f"initial_trials[{i}]")
                               for i, p in enumerate(initial_trials)]
        if self.initial_trials and self.backend.name != "local":
            raise UsageError("initial_trials applies to a local study; a SageMaker tuning job starts from earlier "
                             "tuning jobs instead (warm_start_from).")

    def fit(self, train: Dataset, validation: Dataset | None = None) -> TuningResult:
        """Run the study (a local one resumes from ``output_dir/study.db``) and return its result; the tuning report
        is written to ``output_dir/tuning-report.html``."""
        from ..preflight import check_training_request

        for name, data in (("train", train), ("validation", validation)):
            if data is not None and not isinstance(data, Dataset):
                raise UsageError(f"{name} must be a multilabel_ic.Dataset, got {type(data).__name__}.")
        if validation is None:
            raise UsageError("tuning needs validation data: every trial is scored on it (fit(train, validation=...)).")
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise UsageError(f"output_dir {self.output_dir} is a file; choose a folder for the study.")
        check_training_request(self.hyperparameters, train, validation)
        from .report import write_tuning_report

        if self.backend.name == "local":
            from .local import load_model, run_local_study

            summary = run_local_study(self, train, validation)
            best = summary["best"]
            best_hp = self.hyperparameters.replace(**best["params"]) if best else None
            model = (load_model(self.output_dir, best["run_dir"], best_hp, train.class_names, self.backend)
                     if best and best_hp is not None else None)
        else:
            from .sagemaker import run_sagemaker_tuning

            summary, model = run_sagemaker_tuning(self, train, validation)
            best = summary["best"]
            best_hp = model.hyperparameters
        report = write_tuning_report(self.output_dir, summary)
        return TuningResult(backend=self.backend.name, objective=self.objective, trials=summary["trials"],
                            best_trial=best, best_hyperparameters=best_hp, best_model=model,
                            output_dir=self.output_dir, importances=summary.get("importances"), report=report,
                            summary=summary)

    @staticmethod
    def attach(tuning_job: str, *, backend: Any, output_dir: str | os.PathLike = "runs/tune-attached",
               class_names: Sequence[str] | None = None) -> TuningResult:
        """The result of a SageMaker tuning job started elsewhere (or by an earlier process): waits for it, lists
        its trials and downloads the best training job's artifact as the best model."""
        from ..api import get_backend
        from .report import write_tuning_report
        from .sagemaker import attach_tuning_job

        backend = get_backend(backend)
        if backend.name != "sagemaker":
            raise UsageError("Tuner.attach takes a SageMaker tuning job: pass backend=SageMakerBackend(...).")
        summary, model = attach_tuning_job(backend, tuning_job, output_dir=Path(output_dir), class_names=class_names)
        report = write_tuning_report(Path(output_dir), summary)
        return TuningResult(backend="sagemaker", objective=summary.get("objective") or "validation:accuracy",
                            trials=summary["trials"], best_trial=summary["best"],
                            best_hyperparameters=model.hyperparameters, best_model=model, output_dir=Path(output_dir),
                            report=report, summary=summary)
