"""A local tuning study with Optuna: a seeded TPE sampler, a median pruner fed by each epoch's validation objective,
and the study in ``<output>/study.db`` (SQLite), so that an interrupted study resumes without rerunning a finished
trial. Each trial is a normal local run in ``<output>/trial-NNN`` (its checkpoints, artifact, metrics and report).

Resuming: a trial that was running when the process stopped (kill -9, Ctrl-C, an error outside training) is marked
failed in the study with the user attribute ``interrupted`` and asked again with the same hyperparameters and the
same run folder, so its run resumes from its last finished epoch. Finished trials are never touched again.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write_text, ensure_dir, json_default
from .._lock import FolderLock
from ..callbacks import Callback, RunInfo, StopTraining
from ..exceptions import RunConflictError, TrainingError, UsageError, require
from ..preflight import data_fingerprint, describe_differences
from .space import CategoricalRange, ContinuousRange, IntegerRange, SearchSpace

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..hyperparameters import Hyperparameters

__all__ = ["STUDY_NAME", "STUDY_FILE", "OBJECTIVES", "run_local_study", "PruningCallback", "open_study",
           "trial_rows", "trial_backend"]

log = logging.getLogger("multilabel_ic.tune")
STUDY_NAME = "multilabel-ic"
STUDY_FILE = "study.db"
# objective -> (the key of an epoch record, the key of metrics["final"]: the shipped model's score)
OBJECTIVES = {"validation:accuracy": ("validation_accuracy", "validation_accuracy"),
              "validation:mAP": ("validation_mAP", "mAP")}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class PruningCallback(Callback):
    """Reports each epoch's validation objective to the trial, and ends the run (:class:`StopTraining`) when the
    pruner says so. A resumed run reports the epochs it had already trained first."""

    def __init__(self, trial: Any, key: str):
        self.trial, self.key = trial, key
        self.pruned_at: int | None = None
        self.reason = ""

    def _report(self, record: dict) -> None:
        value = record.get(self.key)
        if value is not None and math.isfinite(value):
            self.trial.report(float(value), step=int(record["epoch"]))

    def on_train_start(self, run: RunInfo) -> None:
        for record in run.history:
            self._report(record)

    def on_epoch_end(self, record: dict) -> None:
        self._report(record)
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = int(record["epoch"])
            self.reason = (f"pruned by the median pruner after epoch {self.pruned_at}: {self.key}="
                           f"{record.get(self.key)} is below the median of the earlier trials at that epoch")
            raise StopTraining(self.reason)


def _optuna():
    return require("optuna", extra="tune")


def _storage_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _check_study_tables(path: Path, fix: str) -> None:
    """An SQLite file without Optuna's tables is refused read-only: Optuna would add its tables to any SQLite
    database it is given (another program's included)."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise RunConflictError(f"{path}: not a study this version of multilabel_ic can resume (sqlite3: {exc}): "
                               f"{fix}.") from exc
    if not {"studies", "trials", "version_info"} <= tables:
        raise RunConflictError(f"{path}: not a study this version of multilabel_ic can resume (an SQLite database "
                               f"without Optuna's tables: another program's?): {fix}.")


def open_study(path: Path, *, create: bool = False) -> Any:
    """The study in ``path``; a file that is not a readable study of this library is one clear error (nothing is
    changed in it)."""
    optuna = _optuna()
    fix = "move it away (or delete it) to start the study afresh, or choose another output folder"
    if path.exists():
        if not path.is_file():  # a folder gives no study; a FIFO or device would block or never end
            raise RunConflictError(f"{path}: the study file is not a regular file (a folder, FIFO or device): "
                                   f"{fix}.")
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise RunConflictError(f"{path}: the study file cannot be read ({exc.strerror or exc}); fix its "
                                   f"permissions, or {fix}.") from exc
        if head and head != _SQLITE_MAGIC:
            raise RunConflictError(f"{path}: not a study file (not an SQLite database; it may be damaged): {fix}.")
        if head:
            _check_study_tables(path, fix)
        if not create or head:
            try:
                return optuna.load_study(study_name=STUDY_NAME, storage=_storage_url(path))
            except Exception as exc:  # sqlalchemy/sqlite errors, a missing study, another schema version
                raise RunConflictError(f"{path}: not a study this version of multilabel_ic can resume "
                                       f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): {fix}.") from exc
    elif not create:
        raise UsageError(f"{path}: no such study file.")
    try:
        return optuna.create_study(study_name=STUDY_NAME, storage=_storage_url(path), direction="maximize")
    except Exception as exc:
        raise RunConflictError(f"{path}: the study file cannot be created ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}).") from exc


def _suggest(trial: Any, name: str, rng: Any) -> Any:
    if isinstance(rng, IntegerRange):
        return trial.suggest_int(name, rng.low, rng.high, log=rng.scaling == "log")
    if isinstance(rng, ContinuousRange):
        return trial.suggest_float(name, rng.low, rng.high, log=rng.scaling == "log")
    assert isinstance(rng, CategoricalRange)
    return trial.suggest_categorical(name, list(rng.values))


def study_config(hp: Hyperparameters, space: SearchSpace, objective: str, train: Dataset, validation: Dataset,
                 seed: int, pruning: dict | None, options: Any) -> dict:
    """What a study is about: resuming it with anything else would mix trials of two studies."""
    from dataclasses import asdict

    opts = {k: v for k, v in asdict(options).items()
            if k not in ("device", "num_workers", "progress", "log_interval", "cache_dir", "cache_max_gb",
                         "preload", "resume", "restart")}
    return json.loads(json.dumps({
        "objective": objective, "search space": space.to_config(), "hyperparameters": hp.to_dict(),
        "training data": data_fingerprint(train), "validation data": data_fingerprint(validation),
        "class names": list(train.class_names), "seed": seed, "pruning": pruning, "local options": opts},
        default=json_default))


def trial_rows(study: Any) -> list[dict]:
    """Every trial of the study as a plain dict (for the summary, the report and the result)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number + 1, "run_dir": t.user_attrs.get("run_dir"), "state": t.state.name,
                     "value": t.value, "params": dict(t.params), "duration_s": duration,
                     "epochs_trained": t.user_attrs.get("epochs_trained"),
                     "intermediate": {int(k): v for k, v in sorted(t.intermediate_values.items())},
                     "error": t.user_attrs.get("error"), "interrupted": t.user_attrs.get("interrupted"),
                     "retry_of": t.user_attrs.get("retry_of")})
    return rows


def _recover(study: Any) -> int:
    """Mark the trials left running by a stopped process as failed (``interrupted``) and ask them again, once,
    with the same hyperparameters and run folder; returns how many were asked again."""
    from optuna.trial import TrialState

    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "interrupted", "the process stopped during this trial")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            log.info("trial %d (%s) was running when the study stopped: asking it again", t.number + 1,
                     t.user_attrs.get("run_dir"))
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    waiting = {t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING}
    count = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={"run_dir": t.user_attrs.get("run_dir"),
                                                             "retry_of": t.number})
            count += 1
    return count + len(waiting - {None})


def _done(study: Any) -> int:
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get("error")))


def trial_backend(backend: Any, options: Any) -> Any:
    """The backend a trial trains on: the study's own (a ``LocalBackend``, or a stand-in with the same ``options``
    such as :class:`multilabel_ic.testing.FakeLocalBackend`) with the study's options (one decode cache for all)."""
    trial = copy.copy(backend)
    trial.options = options
    return trial


def run_local_study(tuner: Any, train: Dataset, validation: Dataset) -> dict:
    """Run (or resume) the study of ``tuner`` (a :class:`~multilabel_ic.tune.Tuner` on the local backend) and
    return its summary (also written to ``tuning.json``)."""
    optuna = _optuna()
    import dataclasses

    from ..api import Trainer

    out: Path = tuner.output_dir
    path = out / STUDY_FILE
    options = tuner.backend.options
    if options.cache_dir is None:  # one decode cache for every trial
        options = dataclasses.replace(options, cache_dir=str(out / "cache"))
    if options.restart:
        raise UsageError("LocalOptions(restart=True) would restart every trial: a study resumes its trials.")
    record_key, final_key = OBJECTIVES[tuner.objective]
    config = study_config(tuner.hyperparameters, tuner.search_space, tuner.objective, train, validation, tuner.seed,
                          tuner.pruning, tuner.backend.options)
    if path.exists():
        open_study(path)  # a damaged file is refused before anything is written
    created = not out.exists()
    ensure_dir(out)
    lock = FolderLock(out, what="tuning")
    try:
        lock.acquire()
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    try:
        study = open_study(path, create=True)
        recorded = study.user_attrs.get("config")
        if recorded is None:
            study.set_user_attr("config", config)
            for params in tuner.initial_trials:  # a new study tries these first
                study.enqueue_trial(dict(params))
        else:
            differ = describe_differences(recorded, config)
            if differ:
                raise RunConflictError(
                    f"{path} holds a study with other {', '.join(differ)}; resuming would mix two studies. Choose "
                    f"another output folder, or move the study away to start afresh.")
        asked_again = _recover(study)
        done = _done(study)
        remaining = max(0, tuner.max_trials - done)
        log.info("study %s: %d of %d trials finished, %d to run (%d asked again)", path, done, tuner.max_trials,
                 remaining, asked_again)
        study.sampler = optuna.samplers.TPESampler(
            seed=tuner.seed + len(study.trials), n_startup_trials=tuner.sampler_startup_trials)
        study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=tuner.pruning["startup_trials"],
                                                    n_warmup_steps=tuner.pruning["warmup_epochs"])
                        if tuner.pruning else optuna.pruners.NopPruner())
        claimed = [0]
        claim_lock = threading.Lock()

        def claim() -> bool:
            with claim_lock:
                if claimed[0] >= remaining:
                    return False
                claimed[0] += 1
                return True

        def one_trial() -> None:
            from optuna.trial import TrialState

            trial = study.ask()
            params = {name: _suggest(trial, name, rng) for name, rng in tuner.search_space.items()}
            run_dir = trial.user_attrs.get("run_dir") or f"trial-{trial.number + 1:03d}"
            trial.set_user_attr("run_dir", run_dir)
            hp = tuner.hyperparameters.replace(**params)
            log.info("trial %d (%s): %s", trial.number + 1, run_dir,
                     ", ".join(f"{k}={v}" for k, v in params.items()))
            pruner = PruningCallback(trial, record_key)
            try:
                model = Trainer(hp, backend=trial_backend(tuner.backend, options), output_dir=out / run_dir,
                                callbacks=[pruner, *tuner.callbacks]).fit(train, validation=validation)
            except TrainingError as exc:
                if isinstance(exc, RunConflictError):
                    raise
                message = " ".join(str(exc).split())
                trial.set_user_attr("error", message)
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number + 1, message)
                return
            except BaseException as exc:  # stops the study; the rerun asks this trial again
                storage = study._storage
                storage.set_trial_user_attr(trial._trial_id, "interrupted",
                                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                raise
            from ..report import write_report

            write_report(out / run_dir, title=f"Trial {trial.number + 1} ({run_dir})")
            trial.set_user_attr("epochs_trained", len(model.metrics["epochs"]))
            value = model.metrics["final"].get(final_key)
            if pruner.pruned_at is not None:
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d pruned after epoch %d", trial.number + 1, pruner.pruned_at)
            elif value is None or not math.isfinite(value):
                trial.set_user_attr("error", f"the run ended without a {final_key} score")
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, float(value))
                log.info("trial %d: %s=%.6f", trial.number + 1, tuner.objective, value)

        def worker() -> None:
            while claim():
                one_trial()

        if tuner.max_parallel == 1:
            worker()
        else:
            errors: list[BaseException] = []

            def guarded() -> None:
                try:
                    worker()
                except BaseException as exc:  # noqa: BLE001  (re-raised below)
                    errors.append(exc)

            threads = [threading.Thread(target=guarded, name=f"tune-{i}") for i in range(tuner.max_parallel)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            if errors:
                raise errors[0]
        return _summarize(study, tuner, out, final_key)
    finally:
        lock.release()


def importances(study: Any, seed: int) -> tuple[dict[str, float], str] | None:
    """Optuna's parameter importances over the completed trials and the evaluator's name: fANOVA where
    scikit-learn is installed, else PED-ANOVA (Optuna's own); None with too few trials."""
    import importlib.util
    import warnings

    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if importlib.util.find_spec("sklearn") is not None:
        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=seed), "fANOVA"
    else:
        # the top trials it contrasts with the rest: at least two of them, at most half
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(
            target_quantile=min(0.5, max(0.1, 2 / max(len(complete), 1))))
        name = "PED-ANOVA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # a figure of the report: it never costs a finished study
        log.warning("no parameter importances (%s: %s)", type(exc).__name__, exc)
        return None
    return {k: float(v) for k, v in values.items()}, name


def _summarize(study: Any, tuner: Any, out: Path, final_key: str) -> dict:
    from optuna.trial import TrialState

    rows = trial_rows(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        bt = max(complete, key=lambda t: (t.value, -t.number))
        best = next(r for r in rows if r["number"] == bt.number + 1)
    summary = {"backend": "local", "objective": tuner.objective, "max_trials": tuner.max_trials,
               "study": str(out / STUDY_FILE), "trials": rows, "best": best,
               "base_hyperparameters": tuner.hyperparameters.to_sagemaker(),
               "search_space": tuner.search_space.to_config(),
               "importances": None, "importance_method": None,
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    found = importances(study, tuner.seed) if len(complete) >= 2 else None
    if found is not None:
        summary["importances"], summary["importance_method"] = found
    atomic_write_text(out / "tuning.json", json.dumps(summary, indent=2, default=json_default) + "\n")
    return summary


def load_model(out: Path, run_dir: str, hp: Hyperparameters, class_names: Sequence[str], backend: Any):
    """The :class:`Model` of a finished trial's run folder."""
    from ..backends.base import Model

    folder = out / run_dir
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    tar = folder / "model.tar.gz"
    return Model(hyperparameters=hp, class_names=list(class_names), metrics=metrics, artifact=str(tar),
                 local_artifact=tar, backend=backend)
