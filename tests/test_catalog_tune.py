"""The failure catalog of tuning: bad search spaces, study settings and study files, from the command line and the
API. Each gets one clear line naming the parameter, range or file, exit 2 (usage) or 1, and nothing on disk."""

from __future__ import annotations

import json

import optuna
import pytest
from catalog_support import CLASSES, ApiCase, CliCase, check_api_case, check_cli_case, make_hp

from multilabel_ic import HyperparameterError, RunConflictError, UsageError
from multilabel_ic.tune import CategoricalRange, ContinuousRange, IntegerRange, SearchSpace, Tuner

GOOD_SPACE = 'learning_rate = { min = 1e-4, max = 0.1, scaling = "log" }\n'


def tune_toml(ws, tmp, *, space: str = GOOD_SPACE, tune: str = "max_trials = 2\n", top: str = "",
              data: str | None = None, extra: str = "") -> list[str]:
    data = data if data is not None else (f'train_lst = "{ws.lst}"\nvalidation_lst = "{ws.lst}"\n'
                                          f'images = "{ws.images}"\n')
    text = (f'{top}output = "{tmp / "study"}"\nclasses = {json.dumps(CLASSES.split(","))}\n'
            f"[data]\n{data}\n[hyperparameters]\nimage_shape = \"3,32,32\"\nresize = 36\nmini_batch_size = 8\n"
            f"epochs = 1\nmulti_label = 1\n[local]\ndevice = \"cpu\"\nworkers = 0\n{extra}[tune]\n{tune}\n")
    if space is not None:
        text += f"[search_space]\n{space}"
    path = tmp / "tune.toml"
    path.write_text(text)
    return ["tune", "--config", str(path)]


SAGEMAKER_TOP = 'backend = "sagemaker"\n'
SAGEMAKER_TABLE = '[sagemaker]\nregion = "us-east-1"\nrole = "arn:aws:iam::1:role/R"\nbucket = "b"\n'


def damaged_study(ws, tmp):
    (tmp / "study").mkdir()
    (tmp / "study" / "study.db").write_bytes(b"this is not a database at all\n" * 10)
    return tune_toml(ws, tmp)


def truncated_study(ws, tmp):
    (tmp / "study").mkdir()
    (tmp / "study" / "study.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    return tune_toml(ws, tmp)


def other_study(ws, tmp):
    (tmp / "study").mkdir()
    study = optuna.create_study(study_name="multilabel-ic", storage=f"sqlite:///{tmp / 'study' / 'study.db'}",
                                direction="maximize")
    study.set_user_attr("config", {"objective": "validation:mAP", "seed": 3})
    return tune_toml(ws, tmp)


pytestmark = pytest.mark.usefixtures("nothing_trains")  # every case fails before a trial trains

CLI_CASES = [
    CliCase("tune-unknown-hyperparameter", lambda ws, tmp: tune_toml(ws, tmp, space="learning_rat = { min = 0.001, "
            "max = 0.1 }\n"), 2, "'learning_rat' is not a hyperparameter of the algorithm"),
    CliCase("tune-range-outside-rules", lambda ws, tmp: tune_toml(ws, tmp, space="epochs = { min = 0, max = 5 }\n"),
            2, "epochs integers [0, 5]: 0 is not allowed"),
    CliCase("tune-range-outside-aws", lambda ws, tmp: tune_toml(ws, tmp, space="learning_rate = { min = 0.01, "
            "max = 0.9 }\n"), 2, "learning_rate [0.01, 0.9]: outside AWS's recommended tuning range [1e-06, 0.5]"),
    CliCase("tune-categorical-outside-aws", lambda ws, tmp: tune_toml(ws, tmp, space='momentum = [0.5, 1.0]\n'), 2,
            "momentum {0.5, 1}: 1 is outside AWS's recommended tuning range [0, 0.999]"),
    CliCase("tune-categorical-bad-value", lambda ws, tmp: tune_toml(ws, tmp, space='optimizer = ["sgd", "adamw"]\n'),
            2, "optimizer {'sgd', 'adamw'}: 'adamw' is not allowed"),
    CliCase("tune-integer-range-of-a-choice", lambda ws, tmp: tune_toml(ws, tmp, space="num_layers = { min = 18, "
            "max = 50 }\n"), 2, "num_layers [18, 50]: num_layers is one of 18, 34, 50, 101, 152, 200, 20, 32, 44, 56, 110: give a categorical range"),
    CliCase("tune-log-from-zero", lambda ws, tmp: tune_toml(ws, tmp, space='weight_decay = { min = 0, max = 0.1, '
            'scaling = "log" }\n'), 2, "weight_decay [0, 0.1] (log): a log-scaled range needs min > 0"),
    CliCase("tune-min-above-max", lambda ws, tmp: tune_toml(ws, tmp, space="learning_rate = { min = 0.1, "
            "max = 0.01 }\n"), 2, "learning_rate [0.1, 0.01]: min must be below max"),
    CliCase("tune-batch-above-the-data", lambda ws, tmp: tune_toml(ws, tmp, space="mini_batch_size = { min = 8, "
            "max = 64 }\n"), 2, "mini_batch_size integers [8, 64] can give 64"),
    CliCase("tune-not-tunable", lambda ws, tmp: tune_toml(ws, tmp, space="num_classes = [5, 6]\n"), 2,
            "num_classes cannot be tuned"),
    CliCase("tune-range-bad-key", lambda ws, tmp: tune_toml(ws, tmp, space="learning_rate = { low = 0.001, "
            "high = 0.1 }\n"), 2, "learning_rate: unknown key(s) ['high', 'low']"),
    CliCase("tune-bad-scaling", lambda ws, tmp: tune_toml(ws, tmp, space='learning_rate = { min = 0.001, '
            'max = 0.1, scaling = "ln" }\n'), 2, "scaling = 'ln' is not one of 'linear', 'log'"),
    CliCase("tune-no-search-space", lambda ws, tmp: tune_toml(ws, tmp, space=None), 2, "no [search_space] table"),
    CliCase("tune-unknown-tune-key", lambda ws, tmp: tune_toml(ws, tmp, tune="max_trails = 3\n"), 2,
            "unknown key(s) ['max_trails'] in [tune]"),
    CliCase("tune-unknown-objective", lambda ws, tmp: tune_toml(ws, tmp, tune='objective = "validation:f1"\n'), 2,
            "The 'objective' option of Tuner must be one of 'validation:accuracy', 'validation:mAP'"),
    CliCase("tune-parallel-above-trials", lambda ws, tmp: tune_toml(ws, tmp, tune="max_trials = 2\n"
            "max_parallel = 3\n"), 2, "max_parallel=3 exceeds max_trials=2"),
    CliCase("tune-map-on-sagemaker", lambda ws, tmp: tune_toml(ws, tmp, top=SAGEMAKER_TOP, extra=SAGEMAKER_TABLE,
            tune='objective = "validation:mAP"\n'), 2, "the built-in algorithm emits only 'validation:accuracy'"),
    CliCase("tune-no-validation", lambda ws, tmp: tune_toml(ws, tmp, data=f'train_lst = "{ws.lst}"\n'
            f'images = "{ws.images}"\n'), 2, "tune needs validation data"),
    CliCase("tune-damaged-study-file", damaged_study, 1, "study.db: not a study file (not an SQLite database"),
    CliCase("tune-truncated-study-file", truncated_study, 1, "study.db: not a study this version of multilabel_ic "
            "can resume"),
    CliCase("tune-study-of-another-configuration", other_study, 1, "holds a study with other"),
    CliCase("tune-attach-without-sagemaker", lambda ws, tmp: [*tune_toml(ws, tmp), "--attach", "ic-tune-1"], 2,
            "--attach takes a SageMaker tuning job"),
]

SPACE = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log")}


def _sm():
    from catalog_support import sagemaker_backend

    return sagemaker_backend()


API_CASES = [
    ApiCase("tune-api-unknown-hyperparameter", lambda ws, tmp: Tuner(make_hp(), {"lr": ContinuousRange(0.01, 0.1)}),
            HyperparameterError, "'lr' is not a hyperparameter"),
    ApiCase("tune-api-not-a-range", lambda ws, tmp: Tuner(make_hp(), {"learning_rate": (0.01, 0.1)}), UsageError,
            "must be an IntegerRange, ContinuousRange or CategoricalRange"),
    ApiCase("tune-api-empty-space", lambda ws, tmp: SearchSpace({}), UsageError, "non-empty mapping"),
    ApiCase("tune-api-continuous-range-of-an-int", lambda ws, tmp: Tuner(make_hp(), {"epochs": ContinuousRange(1, 5)}),
            HyperparameterError, "epochs [1, 5]: epochs is an int in the range [1, inf): give an integer range"),
    ApiCase("tune-api-empty-categorical", lambda ws, tmp: Tuner(make_hp(), {"optimizer": CategoricalRange([])}),
            HyperparameterError, "a categorical range needs at least one value"),
    ApiCase("tune-api-duplicate-categorical", lambda ws, tmp: Tuner(make_hp(), {"num_layers": CategoricalRange(
            [18, "18"])}), HyperparameterError, "a value is listed twice"),
    ApiCase("tune-api-map-on-sagemaker", lambda ws, tmp: Tuner(make_hp(), SPACE, objective="validation:mAP",
            backend=_sm()), UsageError, "emits only 'validation:accuracy'"),
    ApiCase("tune-api-too-many-parents", lambda ws, tmp: Tuner(make_hp(), SPACE, backend=_sm(),
            warm_start_from=[f"p{i}" for i in range(6)]), UsageError, "6 parent tuning jobs; SageMaker takes at most 5"),
    ApiCase("tune-api-bad-parent-name", lambda ws, tmp: Tuner(make_hp(), SPACE, backend=_sm(),
            warm_start_from=["not a name"]), UsageError, "'not a name' is not a tuning job name"),
    ApiCase("tune-api-bad-warm-start-type", lambda ws, tmp: Tuner(make_hp(), SPACE, backend=_sm(),
            warm_start_from=["p1"], warm_start_type="Identical"), UsageError, "warm_start_type='Identical'"),
    ApiCase("tune-api-warm-start-locally", lambda ws, tmp: Tuner(make_hp(), SPACE, warm_start_from=["p1"]),
            UsageError, "a local study resumes from its own study file"),
    ApiCase("tune-api-initial-trial-outside", lambda ws, tmp: Tuner(make_hp(), SPACE, initial_trials=[
            {"learning_rate": 0.5}]), UsageError, "initial_trials[0]: learning_rate=0.5 is outside its range"),
    ApiCase("tune-api-zero-trials", lambda ws, tmp: Tuner(make_hp(), SPACE, max_trials=0), UsageError,
            "The 'max_trials' option of Tuner must be an int in the range [1, 10000]"),
    ApiCase("tune-api-no-validation", lambda ws, tmp: Tuner(make_hp(), SPACE, output_dir=tmp / "study").fit(ws.data),
            UsageError, "tuning needs validation data"),
    ApiCase("tune-api-damaged-study", lambda ws, tmp: (
            (tmp / "study").mkdir(), (tmp / "study" / "study.db").write_bytes(b"\x00" * 64),
            Tuner(make_hp(), SPACE, output_dir=tmp / "study").fit(ws.data, validation=ws.data)),
            RunConflictError, "not a study file"),
]




@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path, inputs={"study", "study/study.db"})


def test_search_space_with_int_range_accepts_ints_only():
    with pytest.raises(UsageError, match="whole numbers"):
        SearchSpace.from_config({"epochs": {"min": 1.5, "max": 4}})
    assert SearchSpace.from_config({"epochs": {"min": 1, "max": 4}})["epochs"] == IntegerRange(1, 4)
