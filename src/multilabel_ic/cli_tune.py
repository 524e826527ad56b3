"""``multilabel-ic tune --config tune.toml``: a tuning study from one file (docs/lifecycle.md).

The file is a run configuration (``train --config``: backend, output, classes, [data], [hyperparameters], [local],
[sagemaker]) plus a [tune] table of study settings and a [search_space] table of ranges::

    [tune]
    objective = "validation:mAP"      # or "validation:accuracy" (the built-in's only one on SageMaker)
    max_trials = 12
    max_parallel = 1

    [search_space]
    learning_rate = { min = 1e-4, max = 0.1, scaling = "log" }
    mini_batch_size = { min = 16, max = 64 }
    optimizer = ["sgd", "adam"]

Everything in it is checked before a trial runs or a file is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .exceptions import MultilabelICError, UsageError
from .local_options import config_keys

__all__ = ["add_tune_parser", "cmd_tune", "TUNE_KEYS", "load_tune_config"]

# [tune] key -> Tuner keyword
TUNE_KEYS = ("objective", "max_trials", "max_parallel", "seed", "pruning", "pruner_startup_trials",
             "pruner_warmup_epochs", "sampler_startup_trials", "strategy", "early_stopping", "warm_start_from",
             "warm_start_type", "base_job_name")
_LOCAL_OPTIONS = {key: name for key, (_, _, name) in config_keys().items()}


def add_tune_parser(sub) -> None:
    t = sub.add_parser("tune", help="tune hyperparameters over a search space: a local Optuna study (resumable) or a "
                       "SageMaker tuning job, from one --config file; writes tuning-report.html")
    t.add_argument("--config", dest="tune_config", type=Path, required=True, metavar="TUNE.toml",
                   help="the study: a run configuration with [tune] and [search_space] tables (.toml or .json)")
    t.add_argument("--output", type=Path, default=None, help="the study's folder (default: output in the file)")
    t.add_argument("--max-trials", type=int, default=None, help="trials in all (default: [tune] max_trials)")
    t.add_argument("--attach", default=None, metavar="TUNING_JOB",
                   help="SageMaker: wait for a tuning job started earlier and download its best model instead")


def load_tune_config(path: Path) -> dict[str, Any]:
    """The file as a dict, its [tune] and [search_space] tables checked for shape (the rest as ``train --config``)."""
    from .run_config import _check_keys, read_config_table

    config = read_config_table(path)
    tune = config.pop("tune", {})
    space = config.pop("search_space", None)
    if not isinstance(tune, dict):
        raise UsageError(f"--config {path}: [tune] must be a table of settings.")
    unknown = sorted(set(tune) - set(TUNE_KEYS))
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {unknown} in [tune]; known: {', '.join(TUNE_KEYS)}.")
    if space is None:
        raise UsageError(f"--config {path}: no [search_space] table; add one, e.g. "
                         f"learning_rate = {{ min = 1e-4, max = 0.1, scaling = \"log\" }}.")
    _check_keys(config, path)
    return {"run": config, "tune": tune, "search_space": space}


def _datasets(defaults: dict, classes: list[str], output: Path):
    from .data.dataset import Dataset

    if defaults.get("train_rec"):
        records = output / "records"
        train = Dataset.from_recordio(defaults["train_rec"], extract_to=records / "train", class_names=classes)
        if not defaults.get("validation_rec"):
            raise UsageError("tune needs validation data: set validation_rec (or validation_lst) in [data].")
        val = Dataset.from_recordio(defaults["validation_rec"], extract_to=records / "validation",
                                    class_names=classes)
        return train, val
    if not (defaults.get("train_lst") and defaults.get("images")):
        raise UsageError("tune needs [data] train_lst with images (or train_rec), and validation_lst "
                         "(or validation_rec).")
    if not defaults.get("validation_lst"):
        raise UsageError("tune needs validation data: set validation_lst in [data] (every trial is scored on it).")
    train = Dataset.from_lst(defaults["train_lst"], root=defaults["images"], class_names=classes)
    val = Dataset.from_lst(defaults["validation_lst"], root=defaults["images"], class_names=classes)
    return train, val


def _backend(config: dict, defaults: dict, quiet: bool):
    backend = defaults.get("backend", "local")
    if backend == "sagemaker":
        from .backends.sagemaker import SageMakerBackend

        return SageMakerBackend(**{**config.get("sagemaker", {}), "progress": not quiet})
    from .backends.local import LocalBackend, LocalOptions

    local = dict(config.get("local", {}))
    for key in ("tensorboard", "mlflow", "mlflow_experiment"):
        if key in local:
            raise UsageError(f"[local] {key}: experiment trackers are not wired into tune yet; remove it (each "
                             f"trial's metrics.jsonl and report.html are written as for train).")
    options = {_LOCAL_OPTIONS[k]: v for k, v in local.items() if k != "device"}
    if "cache_dir" in options and options["cache_dir"] is not None:
        options["cache_dir"] = str(options["cache_dir"])
    return LocalBackend(device=local.get("device"), options=LocalOptions(progress=not quiet, **options))


def cmd_tune(args: argparse.Namespace) -> int:
    from .run_config import train_defaults
    from .tune import SearchSpace, Tuner

    path: Path = args.tune_config
    loaded = load_tune_config(path)
    config, tune = loaded["run"], dict(loaded["tune"])
    defaults, hp_values = train_defaults(config, path)
    output = args.output or defaults.get("output")
    if output is None:
        raise UsageError(f"--config {path}: set output = \"runs/tune\" in the file, or give --output.")
    output = Path(output)
    if args.max_trials is not None:
        tune["max_trials"] = args.max_trials
    space = SearchSpace.from_config(loaded["search_space"], source=f"--config {path}: [search_space]")
    backend = _backend(config, defaults, args.quiet)
    if args.attach:
        if backend.name != "sagemaker":
            raise UsageError("--attach takes a SageMaker tuning job: set backend = \"sagemaker\" and [sagemaker] "
                             "in the file.")
        classes = defaults["classes"].split(",") if defaults.get("classes") else None
        result = Tuner.attach(args.attach, backend=backend, output_dir=output, class_names=classes)
    else:
        from .cli_args import class_list
        from .hyperparameters import Hyperparameters

        if not defaults.get("classes"):
            raise UsageError(f"--config {path}: set classes = [...] (the class names in label order).")
        classes = class_list(defaults["classes"], "classes")
        # the study's settings and space first, with a stand-in for the training count (RecordIO is extracted
        # under the output folder when the data is read); then again with the data's own count
        stand_in = Hyperparameters(**{"num_classes": len(classes), "num_training_samples": 1 << 30, **hp_values})
        Tuner(stand_in, space, backend=backend, output_dir=output, **tune)
        created = not output.exists()
        try:
            train, val = _datasets(defaults, classes, output)
            hp = Hyperparameters(**{"num_classes": len(classes), "num_training_samples": len(train), **hp_values})
            tuner = Tuner(hp, space, backend=backend, output_dir=output, **tune)
        except MultilabelICError:
            if created and output.is_dir():
                import shutil

                shutil.rmtree(output, ignore_errors=True)  # only the RecordIO this command extracted
            raise
        result = tuner.fit(train, validation=val)
    best = result.best_trial
    done = {s: sum(1 for t in result.trials if t["state"] == s) for s in dict.fromkeys(t["state"] for t in result.trials)}
    print(f"trials: {len(result.trials)} (" + ", ".join(f"{n} {s.lower()}" for s, n in done.items()) + ")")
    if best is not None:
        print(f"best: trial {best['number']} ({best.get('run_dir')}) {result.objective}={best['value']:.6f} "
              + json.dumps(best["params"]))
    if result.best_model is not None:
        print(f"best model artifact: {result.best_model.artifact}")
    print(f"report: {result.report}")
    return 0
