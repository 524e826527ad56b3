"""The failure catalog, run files and the files the CLI reads whole: a wrongly typed key of ``--config`` (named with
its file, section, expected type and value), a FIFO or a device given for a file, and a damaged run folder given to
``report``. Each case: one ``error:`` line, the exit code, no traceback and nothing left on disk; none may hang
(every case runs under an alarm)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from catalog_support import (
    CLASSES,
    ApiCase,
    CliCase,
    check_api_case,
    check_cli_case,
    predict_argv,
    train_argv,
    write_file,
)

from multilabel_ic import DataError, UsageError


@pytest.fixture(autouse=True)
def _no_hang(no_hang):
    """Every case here fails instead of hanging if a read blocks (conftest's ``no_hang``)."""
    yield


def fifo(path):
    os.mkfifo(path)
    return path


def dev_zero(path):
    """``path`` (with the suffix a reader expects) standing for /dev/zero: endless bytes."""
    path.symlink_to("/dev/zero")
    return path


def config(t, text: str, name: str = "run.toml"):
    return ["train", "--config", str(write_file(t / name, text))]


def run_folder(t, *, metrics_json: bytes | str | None = None, model_metadata_json: str | None = None):
    """A run folder for ``report`` holding the given metrics.json and model-metadata.json."""
    run = t / "run"
    run.mkdir()
    for name, data in (("metrics.json", metrics_json), ("model-metadata.json", model_metadata_json)):
        if data is not None:
            write_file(run / name, data)
    return run


def jsonl_run(t, text: str):
    run = t / "run"
    run.mkdir()
    write_file(run / "metrics.jsonl", text)
    return run


GOOD_METRICS = {"epochs": [{"epoch": 0, "train_loss": 0.5, "validation_mAP": 0.4, "speed": [10.0]}],
                "final": {"mAP": 0.4, "epoch": 1, "per_class_AP": {"a": 0.4}, "tuned_thresholds": [0.5]},
                "hyperparameters": {"epochs": "1"}}


def metrics_with(**replace) -> str:
    doc = json.loads(json.dumps(GOOD_METRICS))
    for key, value in replace.items():
        if key.startswith("final_"):
            doc["final"][key[6:]] = value
        else:
            doc[key] = value
    return json.dumps(doc)


CLI_CASES = [
    # --- a wrongly typed key names the file, the section, the key, what it must be and what it got
    CliCase("config-output-list", lambda ws, t: config(t, 'output = ["a", "b"]\n'), 2,
            "run.toml: output = ['a', 'b'] must be a path (a string), not a list"),
    CliCase("config-classes-nested", lambda ws, t: config(t, 'classes = [["person"], "car"]\n'), 2,
            "classes = [['person'], 'car'] must be a list of class names"),
    CliCase("config-classes-int", lambda ws, t: config(t, "classes = 5\n"), 2,
            "classes = 5 must be a list of class names (strings without commas), e.g. [\"person\", \"car\"], not an "
            "integer"),
    CliCase("config-classes-name-with-comma", lambda ws, t: config(t, 'classes = ["person,car", "bus"]\n'), 2,
            "'person,car' holds a comma"),
    CliCase("config-classes-empty-list", lambda ws, t: config(t, "classes = []\n"), 2,
            "classes = [] must be a list of class names"),
    CliCase("config-workers-string", lambda ws, t: config(t, '[local]\nworkers = "four"\n'), 2,
            "run.toml: [local] workers = 'four' must be an integer, not a string"),
    CliCase("config-workers-bool", lambda ws, t: config(t, "[local]\nworkers = true\n"), 2,
            "[local] workers = True must be an integer, not a boolean"),
    CliCase("config-seed-float", lambda ws, t: config(t, "[local]\nseed = 1.5\n"), 2,
            "[local] seed = 1.5 must be an integer, not a number"),
    CliCase("config-cache-max-gb-string", lambda ws, t: config(t, '[local]\ncache_max_gb = "64"\n'), 2,
            "[local] cache_max_gb = '64' must be a number, not a string"),
    CliCase("config-cache-max-gb-infinite", lambda ws, t: config(t, "[local]\ncache_max_gb = inf\n"), 2,
            "[local] cache_max_gb = inf must be a number"),
    CliCase("config-compile-string", lambda ws, t: config(t, '[local]\ncompile = "yes"\n'), 2,
            "[local] compile = 'yes' must be true or false, not a string"),
    CliCase("config-device-int", lambda ws, t: config(t, "[local]\ndevice = 0\n"), 2,
            "[local] device = 0 must be a string, not an integer"),
    CliCase("config-cache-dir-table", lambda ws, t: config(t, "[local]\ncache_dir = { path = \"c\" }\n"), 2,
            "[local] cache_dir = {'path': 'c'} must be a path (a string), not a table"),
    CliCase("config-engine-not-a-choice", lambda ws, t: config(t, '[local]\nengine = "mxnet"\n'), 2,
            "[local] engine = 'mxnet' is not one of pytorch, gluon"),
    CliCase("config-input-pipeline-list", lambda ws, t: config(t, '[local]\ninput_pipeline = ["batched"]\n'), 2,
            "[local] input_pipeline = ['batched'] is not one of batched, reference"),
    CliCase("config-train-lst-int", lambda ws, t: config(t, "[data]\ntrain_lst = 3\n"), 2,
            "[data] train_lst = 3 must be a path (a string), not an integer"),
    CliCase("config-instance-count-string", lambda ws, t: config(t, '[sagemaker]\ninstance_count = "2"\n'), 2,
            "[sagemaker] instance_count = '2' must be an integer, not a string"),
    CliCase("config-use-spot-int", lambda ws, t: config(t, "[sagemaker]\nuse_spot = 1\n"), 2,
            "[sagemaker] use_spot = 1 must be true or false, not an integer"),
    CliCase("config-subnets-int-list", lambda ws, t: config(t, "[sagemaker]\nsubnets = [1, 2]\n"), 2,
            "[sagemaker] subnets = [1, 2] must be a list of ids"),
    CliCase("config-tags-list", lambda ws, t: config(t, '[sagemaker]\ntags = ["team=vision"]\n'), 2,
            "[sagemaker] tags = ['team=vision'] must be a table of KEY = \"value\""),
    CliCase("config-environment-nested", lambda ws, t: config(t, "[sagemaker]\nenvironment = { A = { B = 1 } }\n"),
            2, "[sagemaker] environment = {'A': {'B': 1}} must be a table of KEY = \"value\""),
    CliCase("config-hyperparameter-list", lambda ws, t: config(t, "[hyperparameters]\nepochs = [1]\n"), 2,
            "[hyperparameters] epochs = [1] must be a string, number or boolean, not a list"),
    CliCase("config-hyperparameter-out-of-range", lambda ws, t: config(t, "[hyperparameters]\nepochs = 0\n"), 2,
            "[hyperparameters] epochs = 0: The 'epochs' parameter must be an int in the range [1, inf)"),
    CliCase("config-hyperparameter-unknown", lambda ws, t: config(t, "[hyperparameters]\nepoch = 3\n"), 2,
            "unknown hyperparameter 'epoch' in [hyperparameters]"),
    CliCase("config-section-not-a-table", lambda ws, t: config(t, "local = 3\n"), 2,
            "[local] must be a table of settings, got an integer"),
    CliCase("config-json-null", lambda ws, t: config(t, '{"output": null}', "run.json"), 2,
            "output = None must be a path (a string), not null"),
    CliCase("config-yaml-backend-list", lambda ws, t: config(t, "backend: [local]\n", "run.yaml"), 2,
            "run.yaml: backend = ['local'] is not one of local, sagemaker"),
    CliCase("config-json-nested-too-deeply", lambda ws, t: config(t, "[" * 100000, "run.json"), 2,
            "not valid JSON (nested too deeply)"),
    CliCase("config-not-utf8", lambda ws, t: config(t, b"output = \"\xff\"\n"), 2,
            "cannot read it as text (not UTF-8 at byte 10)"),
    CliCase("config-too-large", lambda ws, t: config(t, "# " + "x" * (1 << 20) + "\n"), 2,
            "more than the 1048576 bytes"),
    # --- a FIFO or a device where a file is expected: refused at once, never waited on or read without end
    CliCase("config-config-fifo", lambda ws, t: ["train", "--config", str(fifo(t / "run.toml"))], 2,
            "run.toml: the file is a named pipe (FIFO), not a regular file; give the path of a file"),
    CliCase("config-config-dev-zero", lambda ws, t: ["train", "--config", str(dev_zero(t / "run.toml"))], 2,
            "the file is a character device, not a regular file"),
    CliCase("config-hp-file-fifo", lambda ws, t: train_argv(ws, t, "--hp-file", str(fifo(t / "hp.json"))), 2,
            "hp.json: the file is a named pipe (FIFO), not a regular file"),
    CliCase("config-hp-file-dev-zero", lambda ws, t: train_argv(ws, t, "--hp-file", str(dev_zero(t / "hp.json"))), 2,
            "hp.json: the file is a character device"),
    CliCase("config-train-lst-fifo", lambda ws, t: train_argv(ws, t, lst=fifo(t / "train.lst")), 1,
            "train.lst: the .lst file is a named pipe (FIFO), not a regular file"),
    CliCase("config-validation-lst-dev-zero",
            lambda ws, t: train_argv(ws, t, "--validation-lst", str(dev_zero(t / "val.lst"))), 1,
            "val.lst: the .lst file is a character device"),
    CliCase("config-train-rec-fifo", lambda ws, t: ["train", "--train-rec", str(fifo(t / "t.rec")), "--classes",
                                                    CLASSES, "--output", str(t / "out")], 2,
            "t.rec: not a regular file (a folder, FIFO or device)"),
    CliCase("config-coco-annotations-fifo",
            lambda ws, t: ["prepare", "coco", "--annotations", str(fifo(t / "instances.json")), "--images",
                           str(ws.images), "--output", str(t / "out")], 1,
            "instances.json: the COCO annotation file is a named pipe (FIFO)"),
    CliCase("config-coco-annotations-dev-zero",
            lambda ws, t: ["prepare", "coco", "--annotations", str(dev_zero(t / "instances.json")), "--images",
                           str(ws.images), "--output", str(t / "out")], 1,
            "instances.json: the COCO annotation file is a character device"),
    CliCase("config-report-metrics-fifo", lambda ws, t: ["report", str(_fifo_run(t, "metrics.json"))], 2,
            "metrics.json: the metrics file is a named pipe (FIFO)"),
    CliCase("config-report-metrics-dev-zero", lambda ws, t: ["report", str(_zero_run(t, "metrics.json"))], 2,
            "metrics.json: the metrics file is a character device"),
    CliCase("config-report-jsonl-fifo", lambda ws, t: ["report", str(_fifo_run(t, "metrics.jsonl"))], 2,
            "metrics.jsonl: the metrics log is a named pipe (FIFO)"),
    CliCase("config-report-validation-lst-fifo",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=json.dumps(GOOD_METRICS))), "--validation-lst",
                           str(fifo(t / "val.lst")), "--images", str(ws.images), "--classes", "a"], 1,
            "val.lst: the .lst file is a named pipe (FIFO)"),
    CliCase("config-predict-image-fifo", lambda ws, t: predict_argv(ws, t, str(fifo(t / "a.jpg"))), 1,
            "a.jpg: the image file is a named pipe (FIFO), not a regular file"),
    CliCase("config-predict-image-dev-zero", lambda ws, t: predict_argv(ws, t, str(dev_zero(t / "a.jpg"))), 1,
            "a.jpg: the image file is a character device"),
    CliCase("config-pretrained-fifo",
            lambda ws, t: train_argv(ws, t, "--pretrained", str(fifo(t / "resnet-18.params")), "--hp",
                                     "use_pretrained_model=1", "--hp", "num_layers=18"), 1,
            "resnet-18.params: the .params file is a named pipe (FIFO)"),
    # --- report on a damaged run folder: one line naming the file and the field
    CliCase("config-report-metrics-not-json", lambda ws, t: ["report", str(run_folder(t, metrics_json="{epochs"))], 2,
            "metrics.json: not valid JSON"),
    CliCase("config-report-metrics-a-list", lambda ws, t: ["report", str(run_folder(t, metrics_json="[1, 2]"))], 2,
            "metrics.json: expected a JSON object of the run's metrics, got a list"),
    CliCase("config-report-metrics-not-utf8", lambda ws, t: ["report", str(run_folder(t, metrics_json=b"{\"a\xff"))],
            2, "metrics.json: the metrics file is not UTF-8 text"),
    CliCase("config-report-epochs-an-object",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(epochs={"0": {}})))], 2,
            "metrics.json: epochs must be a list of per-epoch objects, not an object"),
    CliCase("config-report-epoch-without-number",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(epochs=[{"train_loss": 1}])))], 2,
            "metrics.json: epochs[0].epoch must be an epoch number"),
    CliCase("config-report-loss-a-string",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(
                epochs=[{"epoch": 0, "train_loss": "0.5"}])))], 2,
            "epochs[0].train_loss must be a number or null, not a string"),
    CliCase("config-report-final-a-string",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(final="done")))], 2,
            "final must be an object of the shipped model's metrics, not a string"),
    CliCase("config-report-per-class-ap-strings",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(final_per_class_AP={"a": "high"})))],
            2, "final.per_class_AP['a'] must be a number or null, not a string"),
    CliCase("config-report-thresholds-an-object",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(final_tuned_thresholds={"a": 1})))],
            2, "final.tuned_thresholds must be a list of numbers"),
    CliCase("config-report-hyperparameters-a-list",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=metrics_with(hyperparameters=[1])))], 2,
            "hyperparameters must be an object of name -> value, not a list"),
    CliCase("config-report-metadata-class-names-a-string",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=json.dumps(GOOD_METRICS),
                                                   model_metadata_json='{"class_names": "ac"}'))], 1,
            "model-metadata.json: class_names must be a list of unique non-empty strings"),
    CliCase("config-report-metadata-thresholds-null-items",
            lambda ws, t: ["report", str(run_folder(t, metrics_json=json.dumps(GOOD_METRICS),
                                                   model_metadata_json='{"tuned_thresholds": [null]}'))], 1,
            "model-metadata.json: class_names must be present"),
    CliCase("config-report-jsonl-bad-line",
            lambda ws, t: ["report", str(jsonl_run(t, '{"epoch": 0}\n{"epoch": 1\n{"epoch": 2}\n'))], 2,
            "metrics.jsonl:2: not valid JSON"),
    CliCase("config-report-jsonl-line-a-list",
            lambda ws, t: ["report", str(jsonl_run(t, '{"epoch": 0}\n[1]\n'))], 2,
            "metrics.jsonl:2: the line must be an object (one epoch's metrics), not a list"),
    CliCase("config-report-no-metrics", lambda ws, t: ["report", str(run_folder(t))], 2,
            "no metrics.json; give the folder of a finished training run"),
]


def _fifo_run(t, name: str):
    run = t / "run"
    run.mkdir()
    fifo(run / name)
    return run


def _zero_run(t, name: str):
    run = t / "run"
    run.mkdir()
    dev_zero(run / name)
    return run


def _manifest_fifo(ws, t):
    from multilabel_ic import Dataset

    return Dataset.from_manifest(fifo(t / "m.manifest"), root=ws.images, class_names=CLASSES.split(","))


def _coco_dev_zero(ws, t):
    from multilabel_ic import Dataset

    return Dataset.from_coco(dev_zero(t / "instances.json"), images=ws.images, categories=CLASSES.split(","))


def _run_config_fifo(ws, t):
    from multilabel_ic.run_config import load_run_config

    return load_run_config(fifo(t / "run.yaml"))


def _recordio_index_fifo(ws, t):
    from multilabel_ic.data.recordio import RecordIOReader

    rec = t / "r.rec"
    shutil.copy(ws.rec, rec)
    fifo(t / "r.idx")
    return RecordIOReader(rec)


def _report_on_a_truncated_jsonl_middle(ws, t):
    from multilabel_ic.report import write_report

    return write_report(jsonl_run(t, '{"epoch": 0, "train_loss": 0.5}\n{"epo\n{"epoch": 2}'))


API_CASES = [
    ApiCase("config-api-manifest-fifo", _manifest_fifo, DataError,
            "m.manifest: the manifest is a named pipe (FIFO)"),
    ApiCase("config-api-coco-dev-zero", _coco_dev_zero, DataError,
            "instances.json: the COCO annotation file is a character device"),
    ApiCase("config-api-run-config-fifo", _run_config_fifo, UsageError,
            "run.yaml: the file is a named pipe (FIFO)"),
    ApiCase("config-api-recordio-index-fifo", _recordio_index_fifo, DataError,
            "r.idx: the RecordIO index is a named pipe (FIFO)"),
    ApiCase("config-api-report-jsonl-truncated-mid-file", _report_on_a_truncated_jsonl_middle,
            UsageError, "metrics.jsonl:2: not valid JSON"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path, inputs={"m.manifest", "r.rec", "r.idx", "instances.json", "run.yaml", "run",
                                               "run/metrics.jsonl"})
