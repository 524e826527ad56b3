"""The failure catalog of the lifecycle after the first fit (the cases tests/test_catalog_tune.py and
tests/test_catalog_incr.py do not hold): study files that cannot be a study (a folder, a FIFO, another program's
SQLite database, a study file without this library's study), and attaching to a tuning job that is misnamed or does
not exist. Each is one clear line naming the file or job, exit 2 (usage) or 1, and nothing left on disk."""

from __future__ import annotations

import os
import sqlite3

import optuna
import pytest
from catalog_support import (
    CLASSES,
    ApiCase,
    CliCase,
    check_api_case,
    check_cli_case,
    make_hp,
    sagemaker_backend,
)

from multilabel_ic import BackendError, RunConflictError, UsageError
from multilabel_ic.tune import ContinuousRange, Tuner

SPACE = {"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log")}
SAGEMAKER = ('backend = "sagemaker"\n', '[sagemaker]\nregion = "us-east-1"\nrole = "arn:aws:iam::1:role/R"\n'
             'bucket = "b"\n')


def tune_toml(ws, tmp, *, top: str = "", extra: str = "") -> list[str]:
    """``tune --config`` of a good two-trial study of the workspace's data, its output in ``tmp/study``."""
    classes = ", ".join(f'"{c}"' for c in CLASSES.split(","))
    (tmp / "tune.toml").write_text(
        f'{top}output = "{tmp / "study"}"\nclasses = [{classes}]\n[data]\ntrain_lst = "{ws.lst}"\n'
        f'validation_lst = "{ws.lst}"\nimages = "{ws.images}"\n[hyperparameters]\nimage_shape = "3,32,32"\n'
        f'resize = 36\nmini_batch_size = 8\nepochs = 1\nmulti_label = 1\n[local]\ndevice = "cpu"\nworkers = 0\n'
        f'{extra}[tune]\nmax_trials = 2\n[search_space]\nlearning_rate = {{ min = 1e-4, max = 0.1, '
        f'scaling = "log" }}\n')
    return ["tune", "--config", str(tmp / "tune.toml")]


def _study_path(tmp):
    (tmp / "study").mkdir()
    return tmp / "study" / "study.db"


def folder_study(ws, tmp):
    _study_path(tmp).mkdir()
    return tune_toml(ws, tmp)


def fifo_study(ws, tmp):
    os.mkfifo(_study_path(tmp))
    return tune_toml(ws, tmp)


def foreign_sqlite(ws, tmp):
    with sqlite3.connect(_study_path(tmp)) as db:  # a valid SQLite database of another program
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    return tune_toml(ws, tmp)


def optuna_file_without_our_study(ws, tmp):
    optuna.create_study(study_name="someone-elses", storage=f"sqlite:///{_study_path(tmp)}")
    return tune_toml(ws, tmp)


def _sagemaker_toml(ws, tmp):
    return tune_toml(ws, tmp, top=SAGEMAKER[0], extra=SAGEMAKER[1])


pytestmark = pytest.mark.usefixtures("nothing_trains")  # every case fails before a trial trains

CLI_CASES = [
    CliCase("life-study-file-is-a-folder", folder_study, 1, "study.db: the study file is not a regular file"),
    CliCase("life-study-file-is-a-fifo", fifo_study, 1, "study.db: the study file is not a regular file"),
    CliCase("life-study-file-of-another-program", foreign_sqlite, 1,
            "study.db: not a study this version of multilabel_ic can resume"),
    CliCase("life-study-file-without-the-study", optuna_file_without_our_study, 1,
            "study.db: not a study this version of multilabel_ic can resume"),
    CliCase("life-attach-not-a-tuning-job-name", lambda ws, tmp: [*_sagemaker_toml(ws, tmp), "--attach",
            "my_tuning job"], 2, "tuning job 'my_tuning job': not a tuning job name"),
]

API_CASES = [
    ApiCase("life-api-study-file-is-a-folder", lambda ws, tmp: (
            _study_path(tmp).mkdir(), Tuner(make_hp(), SPACE, output_dir=tmp / "study").fit(ws.data,
                                                                                           validation=ws.data)),
            RunConflictError, "the study file is not a regular file"),
    ApiCase("life-api-attach-on-the-local-backend", lambda ws, tmp: Tuner.attach("ic-tune-1", backend="local",
            output_dir=tmp / "att"), UsageError, "Tuner.attach takes a SageMaker tuning job"),
    ApiCase("life-api-attach-not-a-tuning-job-name", lambda ws, tmp: Tuner.attach(
            "a" * 33, backend=sagemaker_backend(), output_dir=tmp / "att"), UsageError, "not a tuning job name"),
]




@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys, no_hang):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path, inputs={"study", "study/study.db"})


# attaching to a tuning job that does not exist, against the moto server
MISSING = "ic-tune-does-not-exist"
AWS_CLI_CASES = [CliCase("life-attach-unknown-tuning-job", lambda ws, tmp: [*_sagemaker_toml(ws, tmp), "--attach",
                                                                            MISSING], 1,
                         f"tuning job {MISSING}: cannot be described in us-east-1")]
AWS_API_CASES = [ApiCase("life-api-attach-unknown-tuning-job", lambda ws, tmp: Tuner.attach(
    MISSING, backend=sagemaker_backend(), output_dir=tmp / "att"), BackendError, "check its name")]


@pytest.mark.parametrize("case", AWS_CLI_CASES, ids=[c.id for c in AWS_CLI_CASES])
def test_aws_cli_case(case, aws, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", AWS_API_CASES, ids=[c.id for c in AWS_API_CASES])
def test_aws_api_case(case, aws, ws, tmp_path):
    check_api_case(case, ws, tmp_path)
