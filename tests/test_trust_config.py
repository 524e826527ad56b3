"""What the run file, the files the CLI reads, the report and the checkpoint write promise: every run-file key is
type-checked and every path key is relative to the file; no file read whole can block or read without end; a
usage error under --nproc-per-node is one line before any process starts; a finished training never fails because
its report could not be drawn; a full disk while checkpointing names the disk and the space needed."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import shutil
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multilabel_ic import (
    Dataset,
    Hyperparameters,
    MultilabelICError,
    OutputError,
    RunConflictError,
    Trainer,
    UsageError,
)
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.cli import main
from multilabel_ic.run_config import KINDS, PATH_KEYS, SECTIONS, load_run_config, train_defaults

from catalog_support import FUZZ, json_values  # isort: skip

FUZZ_FAST = settings(FUZZ, max_examples=60)  # each example writes files and reads them back through the CLI's readers

SECTION_OF = {key: section for section, keys in SECTIONS.items() for key in keys}
DEST_OF = {key: dest for keys in SECTIONS.values() for key, dest in keys.items()}
TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=1,
            learning_rate=0.01, optimizer="adam", multi_label=1)




def _toml_value(value) -> str:
    """A TOML inline value (no TOML writer is a dependency): strings as JSON escapes them (valid TOML basic strings),
    tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(value)


def _toml(config: dict) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in config.items())


def _config_with(tmp_path, key: str, value, name: str = "run.toml"):
    section = SECTION_OF[key]
    config = {key: value} if section is None else {section: {key: value}}
    path = tmp_path / "conf" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(_toml(config) if name.endswith(".toml") else json.dumps(config))
    return path


# ------------------------------------------------------------------ item 7: every key typed, every path relative
GOOD = {"choice": None, "str": "x", "int": 3, "number": 1.5, "bool": True, "path": "rel/x",
        "path_or_url": "rel/x", "tensorboard": "rel/x", "mlflow": "rel/x", "names": ["a", "b"], "ids": ["i-1"],
        "table": {"K": "v"}, "model": "rel/x"}
CHOICE = {"backend": "sagemaker", "engine": "gluon", "input_pipeline": "reference", "input_format": "manifest",
          "loss": "asl", "weighted_loss": "balanced"}
# values of a wrong type for each kind (a table and a list of tables are wrong for every key)
WRONG = {"choice": [["local"], 1], "str": [1, ["a"]], "int": ["3", 2.5, True], "number": ["1", False],
         "bool": [1, "true"], "path": [3, ["a", "b"], ""], "path_or_url": [3, [""]], "tensorboard": [3, ["a"]],
         "mlflow": [3, ""], "names": [5, [["person"]], [1], ["a,b"]], "ids": [5, [1]], "table": [["a=b"], {"a": [1]}],
         "model": [3, ["a"], ""]}


@pytest.mark.parametrize("key", sorted(KINDS))
def test_every_key_of_the_run_file_is_type_checked(key, tmp_path):
    """The class: every key, each with values of wrong types, is refused naming the file, the section, the key, the
    expected type and the value (never an argparse flag the user did not type, never a bug-path error)."""
    kind = KINDS[key]
    section = SECTION_OF[key]
    for value in [*WRONG[kind], {"nested": {"x": 1}}, [{"x": 1}]]:
        path = _config_with(tmp_path, key, value)
        with pytest.raises(UsageError) as e:
            train_defaults(load_run_config(path), path)
        message = str(e.value)
        where = key if section is None else f"[{section}] {key}"
        assert message.startswith(f"--config {path}: {where} = ") and "must be" in message or "is not one of" in \
            message, message
        assert repr(value)[:20] in message and "\n" not in message


@pytest.mark.parametrize("key", sorted(KINDS))
def test_every_key_takes_its_type_to_the_command(key, tmp_path, monkeypatch):
    """A value of the right type reaches the train command's option (as its parser would have made it)."""
    monkeypatch.chdir(tmp_path)
    kind = KINDS[key]
    value = CHOICE[key] if kind == "choice" else GOOD[kind]
    path = _config_with(tmp_path, key, value)
    defaults, _ = train_defaults(load_run_config(path), path)
    option = defaults[DEST_OF[key]]
    expected = {"names": "a,b", "ids": "i-1", "table": ["K=v"]}.get(kind, value)
    if key in PATH_KEYS:
        expected = str(tmp_path / "conf" / "rel" / "x")
        option = str(option)
    assert option == expected


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
@pytest.mark.parametrize("fmt", ["run.toml", "run.json"])
def test_every_path_key_is_relative_to_the_run_file(key, fmt, tmp_path, monkeypatch):
    """The class: every key that names a file or folder is taken relative to the run file's folder, not the working
    directory; an absolute path stays as it is."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _config_with(tmp_path, key, "data/thing", fmt)
    defaults, _ = train_defaults(load_run_config(path), path)
    assert str(defaults[DEST_OF[key]]) == str(tmp_path / "conf" / "data" / "thing")
    absolute = _config_with(tmp_path, key, "/srv/thing", fmt)
    assert str(train_defaults(load_run_config(absolute), absolute)[0][DEST_OF[key]]) == "/srv/thing"


def test_urls_and_uris_in_path_keys_are_kept(tmp_path):
    path = _config_with(tmp_path, "pretrained", "https://example.com/resnet-18.params")
    assert train_defaults(load_run_config(path), path)[0]["pretrained"] == "https://example.com/resnet-18.params"
    path = _config_with(tmp_path, "mlflow", "http://localhost:5000")
    assert train_defaults(load_run_config(path), path)[0]["mlflow"] == "http://localhost:5000"
    path = _config_with(tmp_path, "tensorboard", True)
    assert train_defaults(load_run_config(path), path)[0]["tensorboard"] == ""  # the default folder


def test_a_cache_dir_in_the_run_file_is_used_relative_to_it(coco5, tmp_path, monkeypatch, capsys):
    """End to end through the train command: cache_dir = "shared-cache" in a run file in conf/ is the decode
    cache's folder conf/shared-cache whatever the working directory (seen where the cache is built)."""
    from multilabel_ic.backends.local import train as local_train

    def build(data, folder, **kw):
        raise UsageError(f"the cache would be built in {folder}")

    monkeypatch.setattr(local_train.ImageStore, "build", build)
    conf = tmp_path / "conf"
    conf.mkdir()
    data = coco5.subset(range(16))
    data.to_lst(conf / "train.lst")
    (conf / "run.toml").write_text(_toml({
        "output": "out", "classes": list(data.class_names),
        "data": {"train_lst": "train.lst", "images": str(coco5.root)},
        "local": {"device": "cpu", "workers": 0, "cache_dir": "shared-cache"},
        "hyperparameters": {k: v for k, v in TINY.items() if k != "num_classes"}}))
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "train", "--config", "conf/run.toml"]) == 2
    assert f"the cache would be built in {conf / 'shared-cache'}" in capsys.readouterr().err


def test_wrong_types_are_named_as_the_file_s_keys_not_as_flags(tmp_path, capsys):
    path = _config_with(tmp_path, "workers", "four")
    assert main(["--quiet", "train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[local] workers = 'four' must be an integer" in err and "argument --workers" not in err


# ------------------------------------------------------------------ the run file reader, fuzzed
_KEYS = st.sampled_from([*SECTIONS[None], *(k for s in SECTIONS if s for k in SECTIONS[s]), "hyperparameters",
                         "epochs", "num_layers", "image_shape", *[s for s in SECTIONS if s]])
_values = st.recursive(json_values, lambda inner: st.dictionaries(_KEYS, inner, max_size=4), max_leaves=16)
_configs = st.dictionaries(_KEYS, _values | st.dictionaries(_KEYS, _values, max_size=5), max_size=6)


@FUZZ_FAST
@given(config=_configs, fmt=st.sampled_from(["json", "toml", "yaml"]))
def test_fuzzed_run_files_are_read_or_refused_clearly(config, fmt, tmp_path):
    """Structures of the wrong types and sizes in any key or section: read, or one UsageError; never another
    exception."""
    import yaml

    path = tmp_path / f"run.{fmt}"
    if fmt == "toml":
        def drop_none(v):
            if isinstance(v, dict):
                return {k: drop_none(x) for k, x in v.items() if x is not None}
            if isinstance(v, list):
                return [drop_none(x) for x in v if x is not None]
            return v
        path.write_text(_toml(drop_none(config)))
    elif fmt == "yaml":
        path.write_text(yaml.safe_dump(config))
    else:
        path.write_text(json.dumps(config))
    try:
        defaults, hp = train_defaults(load_run_config(path), path)
    except UsageError as exc:
        assert str(exc).startswith(f"--config {path}") and "\n" not in str(exc)
        return
    for dest, value in defaults.items():
        assert isinstance(value, (str, int, float, bool, list, os.PathLike)), (dest, value)
        assert not isinstance(value, dict)


# ------------------------------------------------------------------ item 14: no read blocks or runs without end
def _fifo(path):
    os.mkfifo(path)
    return path


def _zero(path):
    path.symlink_to("/dev/zero")
    return path


@pytest.fixture(scope="module")
def tiny_lst(coco5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lists")
    return coco5.subset(range(16)).to_lst(folder / "train.lst"), coco5.root


# each CLI entry that takes a file path: (name of the bad file, argv given its path), the message's file kind
ENTRIES = {
    "config": ("run.toml", lambda bad, lst, root, t: ["train", "--config", str(bad)]),
    "hp-file": ("hp.json", lambda bad, lst, root, t: ["train", "--train-lst", str(lst), "--images", str(root),
                                                      "--classes", "a", "--hp-file", str(bad)]),
    "train-lst": ("train.lst", lambda bad, lst, root, t: ["train", "--train-lst", str(bad), "--images", str(root),
                                                          "--classes", "a", "--output", str(t / "out")]),
    "validation-lst": ("val.lst", lambda bad, lst, root, t: [
        "train", "--train-lst", str(lst), "--images", str(root), "--validation-lst", str(bad), "--classes",
        "person,bicycle,car,motorcycle,airplane", "--output", str(t / "out")]),
    "evaluate-lst": ("eval.lst", lambda bad, lst, root, t: [
        "report", str(_good_run(t)), "--validation-lst", str(bad), "--images", str(root), "--classes", "a"]),
    "coco-annotations": ("instances.json", lambda bad, lst, root, t: [
        "prepare", "coco", "--annotations", str(bad), "--images", str(root), "--output", str(t / "out")]),
    "report-metrics": ("metrics.json", lambda bad, lst, root, t: ["report", str(bad.parent)]),
    "report-metrics-log": ("metrics.jsonl", lambda bad, lst, root, t: ["report", str(bad.parent)]),
    "bench-prices": ("prices.json", lambda bad, lst, root, t: ["bench", "--prices", str(bad), "--output",
                                                               str(t / "b")]),
    "bench-sagemaker-log": ("job.log", lambda bad, lst, root, t: ["bench", "--sagemaker-log", str(bad), "--output",
                                                                  str(t / "b")]),
}


def _good_run(t):
    run = t / "goodrun"
    run.mkdir(exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"epochs": [], "final": None}))
    return run


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_no_file_the_cli_reads_can_block_or_read_without_end(entry, kind, tiny_lst, tmp_path, capsys, no_hang):
    """The class: a FIFO (which would block the open) or /dev/zero (endless bytes) given to any CLI entry that takes
    a file is one error line naming the file, at once."""
    name, argv = ENTRIES[entry]
    folder = tmp_path / "in"
    folder.mkdir()
    bad = (_fifo if kind == "fifo" else _zero)(folder / name)
    lst, root = tiny_lst
    rc = main(argv(bad, lst, root, tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc in (1, 2) and len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0] and ("named pipe (FIFO)" if kind == "fifo" else "character device") in lines[0], lines[0]


def test_a_fifo_or_device_in_place_of_run_folder_files_is_refused(tmp_path, no_hang):
    """checkpoints/run.json and checkpoints/last.pt of an output folder: a FIFO is refused, not waited on."""
    from multilabel_ic.backends.local.runfolder import claim_folder
    from multilabel_ic.backends.local.torch_engine import load_checkpoint

    (tmp_path / "checkpoints").mkdir()
    _fifo(tmp_path / "checkpoints" / "run.json")
    with pytest.raises(RunConflictError, match="run.json: the run marker is a named pipe"):
        claim_folder(tmp_path, {"a": 1})
    _zero(tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(RunConflictError, match="last.pt: the checkpoint is a character device"):
        load_checkpoint(tmp_path / "checkpoints" / "last.pt", torch.device("cpu"), {})


@pytest.mark.parametrize("state", ['"x"', "[1]", '{"epoch": "1", "history": [], "saved": []}', "{bad"])
def test_a_checkpoint_with_a_damaged_run_state_is_refused_clearly(state, tmp_path):
    from multilabel_ic.backends.local.torch_engine import CHECKPOINT_FORMAT, load_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": "{}", "state": state}, path)
    with pytest.raises(RunConflictError, match="a damaged checkpoint"):
        load_checkpoint(path, torch.device("cpu"), {})


@pytest.mark.parametrize("side", ["fifo", "dev-zero", "binary", "folder"])
def test_download_side_files_that_cannot_be_read_mean_download_again(side, tmp_path, no_hang):
    """<file>.sha256 and <file>.part.json: one that is a FIFO, a device, binary or a folder never blocks and never
    vouches for a file (it matches no digest; the resume starts from the beginning)."""
    from multilabel_ic.download import _recorded_digest, _sidecar, _validator_path

    dest = tmp_path / "a.zip"
    dest.write_bytes(b"data")
    for target in (_sidecar(dest), _validator_path(tmp_path / "a.zip.part")):
        if side == "fifo":
            _fifo(target)
        elif side == "dev-zero":
            _zero(target)
        elif side == "binary":
            target.write_bytes(b"\xff\xfe\0")
        else:
            target.mkdir()
    assert _recorded_digest(dest) == "unreadable"


# ------------------------------------------------------------------ item 16: --nproc-per-node checks first
@pytest.fixture()
def no_launch(monkeypatch):
    launched = []

    def run(cmd, **kw):
        launched.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", run)
    return launched


@pytest.mark.parametrize("extra, code, message", [
    (["--hp", "epochs=zero"], 2, "'epochs' parameter must be an int"),
    (["--hp", "mini_batch_size=9"], 2, "mini_batch_size=9 is split across the 2 processes"),
    (["--hp", "mini_batch_size=64"], 2, "must not exceed num_training_samples (16)"),
    (["--hp", "bogus=1"], 2, "Unknown hyperparameter(s) 'bogus'"),
    (["--hp", "multi_label=0"], 1, "multi_label=0 trains a single-label (softmax) model"),
    (["--classes", "a,a"], 2, "appear more than once"),
    (["--classes", "a,b"], 1, "expected 4 columns (index, 2 labels, path) for num_classes=2"),
    (["--device", "tpu9"], 2, "'tpu9' is not a device name"),
    (["--workers", "-1"], 2, "'num_workers' option of LocalOptions"),
    (["--cache-max-gb", "-1"], 2, "cache_max_gb"),
    (["--engine", "gluon"], 2, "the Gluon engine trains in one process"),
    (["--sync-batchnorm"], 2, "sync_batchnorm=True applies to a distributed run on CUDA devices"),
    (["--backend", "sagemaker"], 2, "--nproc-per-node applies to --backend local"),
    (["--nproc-per-node", "0"], 2, "give at least 1 process"),
    (["--images", "/nonexistent-images"], 1, "/nonexistent-images"),
    (["--hp-file", "/nonexistent-hp.json"], 2, "--hp-file /nonexistent-hp.json: file not found"),
])
def test_a_usage_error_under_nproc_per_node_is_one_line_before_any_process(extra, code, message, tiny_lst, tmp_path,
                                                                           capsys, no_launch):
    """The class: whatever one process would refuse, refused once by the launcher (one line, its exit code), before
    torchrun starts anything and before the output folder is made."""
    lst, root = tiny_lst
    argv = ["train", "--train-lst", str(lst), "--images", str(root), "--classes",
            "person,bicycle,car,motorcycle,airplane", "--output", str(tmp_path / "out"), "--nproc-per-node", "2",
            "--device", "cpu", "--hp", "num_layers=20", "--hp", "image_shape=3,28,28", "--hp", "mini_batch_size=8",
            "--hp", "multi_label=1", *extra]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert not no_launch, "torchrun was started"
    assert rc == code and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_a_good_nproc_per_node_run_is_launched(tiny_lst, tmp_path, capsys, no_launch):
    lst, root = tiny_lst
    argv = ["train", "--train-lst", str(lst), "--images", str(root), "--classes",
            "person,bicycle,car,motorcycle,airplane", "--output", str(tmp_path / "out"), "--nproc-per-node=2",
            "--device", "cpu", "--hp", "num_layers=20", "--hp", "image_shape=3,28,28", "--hp", "mini_batch_size=8",
            "--hp", "multi_label=1"]
    assert main(argv) == 0
    (cmd,) = no_launch
    assert "--nproc-per-node=2" in cmd and "--nproc-per-node=2" not in cmd[cmd.index("multilabel_ic"):]
    assert cmd[cmd.index("multilabel_ic") + 1:] == [a for a in argv if a != "--nproc-per-node=2"]
    assert not (tmp_path / "out").exists()  # the processes make the folder, not the launcher


# ------------------------------------------------------------------ item 17: special class names, report failures
SPECIAL_NAMES = [  # "$...$" pairs that are not valid mathtext were what failed: a name of its own, or in a legend
    ["$x$", "a$b", "$\\alpha_$", "snake_case_name", "x^2"],
    ["{brace}", "100%", "<b>&amp;", "\"quoted'", "ünïcödé 日本 $a_$"],
    ["$\\frac{$", "_leading", "n" * 300, "\\", "$"],
]


@pytest.fixture(scope="module")
def finished_run(coco5, tmp_path_factory):
    train, val = coco5.subset(range(40)).split(24, seed=0)
    out = tmp_path_factory.mktemp("finished")
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    Trainer(hp, output_dir=out, options=LocalOptions(num_workers=0, progress=False)).fit(train, validation=val)
    return out, val


@pytest.mark.parametrize("names", SPECIAL_NAMES, ids=["mathtext", "markup-and-unicode", "broken-and-long"])
def test_class_names_with_special_characters_are_drawn_and_escaped(names, finished_run, tmp_path):
    """The class: $, \\, _, ^, {, }, %, <, >, &, quotes, very long names and non-ASCII in class names; every figure
    (per-class AP, precision-recall with its legend) is drawn and the page shows each name escaped."""
    import html

    from multilabel_ic.report import write_report

    src, val = finished_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    meta = json.loads((run / "model-metadata.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    old = meta["class_names"]
    meta["class_names"] = names
    metrics["final"]["per_class_AP"] = {new: metrics["final"]["per_class_AP"][o] for o, new in zip(old, names)}
    (run / "model-metadata.json").write_text(json.dumps(meta))
    (run / "metrics.json").write_text(json.dumps(metrics))
    renamed = Dataset(val.paths, val.labels, names, root=val.root)
    page = write_report(run, validation=renamed).read_text()
    for name in names:
        assert f"<td>{html.escape(name)}</td>" in page
    assert page.count("data:image/png;base64,") >= 3  # curves, AP per class, precision-recall


def test_a_finished_training_with_mathtext_class_names_exits_0_with_its_report(coco5, tmp_path, capsys):
    """End to end: the run that used to end with exit 1 and no report."""
    data = coco5.subset(range(16))
    data.to_lst(tmp_path / "train.lst")
    rc = main(["--quiet", "train", "--train-lst", str(tmp_path / "train.lst"), "--validation-lst",
               str(tmp_path / "train.lst"), "--images", str(coco5.root), "--classes", "$a_$,b_c,d^e,\\f,{g}",
               "--output", str(tmp_path / "run"), "--workers", "0", "--device", "cpu",
               *[x for k, v in TINY.items() if k != "num_classes" for x in ("--hp", f"{k}={v}")]])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "model.tar.gz").is_file()


@pytest.mark.parametrize("failure", [RuntimeError("mathtext: Expected end of text"), MemoryError(),
                                     OutputError("report.html: cannot write (No space left on device)")])
def test_a_report_that_cannot_be_drawn_is_a_warning_not_a_failed_training(failure, finished_run, tmp_path,
                                                                          monkeypatch, caplog):
    """Any failure while the report is drawn or written, after training: a warning naming the model, no report,
    the artifact intact (train and demo both go through report_after_training)."""
    from multilabel_ic import report

    def broken(*a, **k):
        raise failure

    src, val = finished_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "report.html").unlink(missing_ok=True)
    before = (run / "model.tar.gz").read_bytes()
    monkeypatch.setattr(report, "_write_report", broken)
    assert report.report_after_training(run, artifact=run / "model.tar.gz", validation=val) is None
    warning = [r.getMessage() for r in caplog.records if "the report could not be written" in r.getMessage()]
    assert warning and f"the model is at {run / 'model.tar.gz'}" in warning[0]
    assert (run / "model.tar.gz").read_bytes() == before and not (run / "report.html").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_train_exits_0_when_its_report_fails(coco5, tmp_path, monkeypatch, capsys):
    from multilabel_ic import report

    def broken(*a, **k):
        raise ValueError("Unknown symbol: \\frac")

    monkeypatch.setattr(report, "_write_report", broken)
    data = coco5.subset(range(16))
    data.to_lst(tmp_path / "train.lst")
    rc = main(["train", "--train-lst", str(tmp_path / "train.lst"), "--images", str(coco5.root), "--classes",
               ",".join(data.class_names), "--output", str(tmp_path / "run"), "--workers", "0", "--device", "cpu",
               *[x for k, v in TINY.items() if k != "num_classes" for x in ("--hp", f"{k}={v}")]])
    captured = capsys.readouterr()
    assert rc == 0 and "error:" not in captured.err
    assert "the report could not be written: ValueError: Unknown symbol" in captured.err
    assert "model artifact:" in captured.out and (tmp_path / "run" / "model.tar.gz").is_file()


# ------------------------------------------------------------------ item 18: the report's inputs, fuzzed
_epoch = st.fixed_dictionaries({"epoch": st.integers(0, 3)}, optional={
    k: json_values for k in ("train_loss", "train_accuracy", "validation_accuracy", "validation_mAP", "time_cost",
                             "images_per_sec", "speed")})
_metrics = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "epochs": st.one_of(json_values, st.lists(st.one_of(_epoch, json_values), max_size=3)),
    "final": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        k: json_values for k in ("mAP", "micro_mAP", "f1_macro", "epoch", "per_class_AP", "tuned_thresholds")})),
    "hyperparameters": json_values, "artifact": json_values, "images_per_sec_median": json_values}))
_metadata = st.one_of(st.none(), json_values, st.fixed_dictionaries({}, optional={
    "class_names": json_values, "tuned_thresholds": json_values}))


@pytest.fixture()
def no_png(monkeypatch):
    """Figures are made (their data code runs) but not rasterised, so that the fuzz stays fast."""
    import matplotlib.pyplot as plt

    from multilabel_ic import report

    def png(fig):
        fig.canvas.draw()  # text layout (where mathtext would be parsed) without the PNG encoder
        plt.close(fig)
        return "data:,"

    monkeypatch.setattr(report, "_png", png)


@settings(FUZZ_FAST, max_examples=40)
@given(metrics=_metrics, metadata=_metadata, as_lines=st.booleans())
def test_fuzzed_report_inputs_give_a_report_or_one_clear_error(metrics, metadata, as_lines, tmp_path, no_png):
    """metrics.json (or metrics.jsonl lines, a truncated last one included) and model-metadata.json of any structure:
    a report, or one MultilabelICError naming the file; never another exception."""
    from multilabel_ic.report import write_report

    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    if as_lines:
        lines = metrics.get("epochs") if isinstance(metrics, dict) else [metrics]
        lines = lines if isinstance(lines, list) else [lines]
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (run / "metrics.jsonl").write_text(text[:-3] if len(text) > 3 and len(lines) % 2 else text)
    else:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if metadata is not None:
        (run / "model-metadata.json").write_text(json.dumps(metadata))
    try:
        out = write_report(run)
    except MultilabelICError as exc:
        assert str(run) in str(exc) and "\n" not in str(exc)
        return
    assert out.is_file()


# ------------------------------------------------------------------ item 22: a full disk inside the serializer
class _FillingFile(io.RawIOBase):
    """A file on a disk that fills after ``room`` bytes (each later write fails with ENOSPC)."""

    def __init__(self, fh, room: int):
        self._fh, self.room = fh, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self._fh.write(data)

    def flush(self):
        self._fh.flush()

    def fileno(self):
        return self._fh.fileno()

    def close(self):
        if not self.closed:
            super().close()  # flushes through to the real file first
            self._fh.close()


def _disk_with_room(monkeypatch, room: int, name: str = "last.pt"):
    from multilabel_ic import _io

    real = _io._open_temp

    def open_temp(fd, tmp, mode, **kw):
        fh = real(fd, tmp, mode, **kw)
        return _FillingFile(fh, room) if name in os.path.basename(tmp) else fh

    monkeypatch.setattr(_io, "_open_temp", open_temp)


@pytest.mark.parametrize("room", [0, 100, 600, 5000, 200_000])
def test_a_disk_that_fills_inside_torch_save_is_named_with_the_space_needed(room, tmp_path, monkeypatch):
    """The class: wherever the disk fills during torch.save (before its header, inside it, inside a tensor, at the
    end), the serializer's own error ('unexpected pos') or the OSError becomes one OutputError naming the file, the
    size needed, the free space and the fix; no file and no temporary file is left."""
    from multilabel_ic._io import atomic_serialize

    _disk_with_room(monkeypatch, room)
    payload = {"w": torch.zeros(100_000), "state": "{}"}
    path = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(OutputError) as e:
        atomic_serialize(path, lambda fh: torch.save(payload, fh), size=400_100)
    message = str(e.value)
    assert message.startswith(f"{path}: cannot write (No space left on device)")
    assert "the disk is full: free some space (the file needs about 0.4 MB; " in message and "are free in" in message
    assert not list(path.parent.iterdir())


def test_a_full_disk_while_checkpointing_a_run_is_one_clear_error(coco5, tmp_path, monkeypatch, capsys):
    """End to end, with torch's real serializer hitting the full disk: exit 1, one line that names last.pt, the
    space it needs and the fix; nothing half-written (test_trust.py shows the same command resuming afterwards)."""
    data = coco5.subset(range(16))
    data.to_lst(tmp_path / "train.lst")
    argv = ["--quiet", "train", "--train-lst", str(tmp_path / "train.lst"), "--images", str(coco5.root),
            "--classes", ",".join(data.class_names), "--output", str(tmp_path / "run"), "--workers", "0",
            "--device", "cpu", *[x for k, v in TINY.items() if k != "num_classes" for x in ("--hp", f"{k}={v}")]]
    _disk_with_room(monkeypatch, 4096)
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "unexpected" not in err, err
    assert "last.pt: cannot write (No space left on device)" in lines[0] and "the file needs about" in lines[0]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp") or p.name == "last.pt"]
