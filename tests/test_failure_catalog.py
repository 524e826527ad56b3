"""The catalog of bad inputs and faults: each one ends in the library's own error, with a message that names the bad
thing, the documented exit code on the command line, and nothing new on disk.

Every CLI case runs ``multilabel-ic`` in-process and checks: the exit code (1 runtime, 2 usage), one ``error:`` line
on stderr without a traceback, the message, and that neither the shared workspace nor the case's output folder holds
anything new. Every API case checks the exception type and message. ``test_parsers_never_raise_foreign_errors`` fuzzes
every parser with hypothesis: a project error or a correct result, never another exception.
"""

from __future__ import annotations

import json
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from catalog_support import (
    CLASSES,
    FUZZ,
    ApiCase,
    CliCase,
    Workspace,
    check_api_case,
    check_cli_case,
    clear_or_correct,
    eval_argv,
    json_values,
    local_options,
    make_hp,
    make_predictor,
    members_with,
    params_with_shape,
    png_header_only,
    predict_argv,
    sagemaker_backend,
    tar_member_header_only,
    train_argv,
    train_to_argv,
    with_metadata,
    write_file,
)
from hypothesis import given
from hypothesis import strategies as st

from multilabel_ic import (
    ArtifactError,
    BackendError,
    DataError,
    Dataset,
    DownloadError,
    HyperparameterError,
    ImageDecodeError,
    MultilabelICError,
    RunConflictError,
    Trainer,
    UsageError,
)
from multilabel_ic.cli import main
from multilabel_ic.model.artifact import read_model_tar
from multilabel_ic.model.params import dumps_params, loads_params

# --------------------------------------------------------------------------------------------- the workspace




# --------------------------------------------------------------------------------------------- CLI cases


def _coco(tmp: Path, doc) -> Path:
    return write_file(tmp / "instances.json", json.dumps(doc))


_IMG = {"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}
_CAT = {"id": 1, "name": "person"}

CLI_CASES = [
    # --- train: the .lst file
    CliCase("train-lst-missing", lambda ws, t: train_argv(ws, t, lst=t / "nope.lst"), 1, "nope.lst: .lst file not found"),
    CliCase("train-lst-is-a-folder", lambda ws, t: train_argv(ws, t, lst=t), 1, "is a folder, not a .lst file"),
    CliCase("train-lst-binary", lambda ws, t: train_argv(ws, t, lst=write_file(t / "b.lst", b"\x00\x01\xff" * 50)), 1,
            "is a binary file, not a .lst file"),
    CliCase("train-lst-not-utf8", lambda ws, t: train_argv(ws, t, lst=write_file(t / "b.lst", b"0\t1\t\xff\xfe.jpg\n")), 1,
            "b.lst:1: not UTF-8 text"),
    CliCase("train-lst-two-columns", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\ta.jpg"])), 1,
            "bad.lst:1: expected tab-separated"),
    CliCase("train-lst-spaces", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0 1 0 0 0 0 a.jpg"])), 1,
            "separators are tabs, not spaces"),
    CliCase("train-lst-label-2", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\t2\t0\t0\t0\t0\ta.jpg"])), 1,
            "bad.lst:1: label '2' is not 0 or 1"),
    CliCase("train-lst-label-text", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\tx\t0\t0\t0\t0\ta.jpg"])), 1,
            "label 'x' is not a number"),
    CliCase("train-lst-duplicate-index",
            lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["3\t1\t0\t0\t0\t0\ta.jpg", "3\t0\t1\t0\t0\t0\tb.jpg"])), 1,
            "bad.lst:2: duplicate index 3"),
    CliCase("train-lst-index-not-int", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["a\t1\t0\t0\t0\t0\tx.jpg"])),
            1, "index 'a' is not an integer"),
    CliCase("train-lst-absolute-path",
            lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\t1\t0\t0\t0\t0\t/etc/passwd"])), 1, "is absolute"),
    CliCase("train-lst-escaping-path",
            lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\t1\t0\t0\t0\t0\t../../x.jpg"])), 1,
            "escapes the image root"),
    CliCase("train-lst-wrong-label-count", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\t1\t0\t0\ta.jpg"])), 1,
            "expected 7 columns"),
    CliCase("train-lst-ragged",
            lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, ["0\t1\t0\t0\t0\t0\ta.jpg", "1\t1\t0\ta.jpg"])), 1,
            "bad.lst:2: expected 7 columns like the first line"),
    CliCase("train-lst-empty", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(t, [])), 1, "bad.lst: no entries"),
    CliCase("train-image-missing", lambda ws, t: train_argv(ws, t, lst=ws.lst_with(
        t, ws.good_lines(15) + ["99\t1\t0\t0\t0\t0\tgone.jpg"])), 1, "gone.jpg (missing)"),
    CliCase("train-image-empty", lambda ws, t: train_argv(ws, t, "--images", str(_empty_image_root(ws, t)),
                                                      "--hp", "mini_batch_size=1",
                                                      lst=ws.lst_with(t, ["0\t1\t0\t0\t0\t0\tempty.jpg"])), 1,
            "empty.jpg (empty)"),
    # --- train: options and hyperparameters (usage errors, exit 2)
    CliCase("train-duplicate-classes",
            lambda ws, t: ["train", "--train-lst", str(ws.lst), "--images", str(ws.images), "--classes",
                           "person,car,car,a,b", "--output", str(t / "out")], 2, "car appear more than once"),
    CliCase("train-empty-class-name",
            lambda ws, t: ["train", "--train-lst", str(ws.lst), "--images", str(ws.images), "--classes", "a,,b",
                           "--output", str(t / "out")], 2, "empty class name"),
    CliCase("train-hp-without-value", lambda ws, t: train_argv(ws, t, "--hp", "epochs"), 2,
            "--hp 'epochs': expected NAME=VALUE"),
    CliCase("train-hp-unknown", lambda ws, t: train_argv(ws, t, "--hp", "epoch=3"), 2, "Unknown hyperparameter(s) 'epoch'"),
    CliCase("train-hp-out-of-range", lambda ws, t: train_argv(ws, t, "--hp", "learning_rate=2"), 2,
            "'learning_rate' parameter must be a float in the range (0, 1]"),
    CliCase("train-hp-bad-image-shape", lambda ws, t: train_argv(ws, t, "--hp", "image_shape=3,32"), 2, "image_shape"),
    CliCase("train-hp-cross-field", lambda ws, t: train_argv(ws, t, "--hp", "use_weighted_loss=1", "--hp", "multi_label=0"),
            2, "'use_weighted_loss' parameter is only valid for multi-label"),
    CliCase("train-hp-file-missing", lambda ws, t: train_argv(ws, t, "--hp-file", str(t / "hp.json")), 2,
            "hp.json: file not found"),
    CliCase("train-hp-file-invalid-json", lambda ws, t: train_argv(ws, t, "--hp-file", str(write_file(t / "hp.json", "{epochs"))),
            2, "hp.json:1: not valid JSON"),
    CliCase("train-hp-file-list", lambda ws, t: train_argv(ws, t, "--hp-file", str(write_file(t / "hp.json", "[1, 2]"))), 2,
            "expected a JSON object of hyperparameters"),
    CliCase("train-hp-file-binary", lambda ws, t: train_argv(ws, t, "--hp-file", str(write_file(t / "hp.json", b"\xff\xfe"))),
            2, "cannot read it as text"),
    CliCase("train-device-bogus", lambda ws, t: train_argv(ws, t, "--device", "tpu9"), 2, "'tpu9' is not a device name"),
    CliCase("train-workers-negative", lambda ws, t: train_argv(ws, t, "--workers", "-1"), 2, "The 'num_workers' option of LocalOptions must be an int in the range [0, inf). Got -1"),
    CliCase("train-no-data", lambda ws, t: ["train", "--classes", CLASSES, "--output", str(t / "out")], 2,
            "train needs --train-lst with --images, or --train-rec"),
    CliCase("train-rec-and-lst", lambda ws, t: train_argv(ws, t, "--train-rec", str(ws.rec)), 2,
            "either --train-rec"),
    CliCase("train-output-is-a-file", lambda ws, t: train_to_argv(ws, write_file(t / "afile", "x")), 2,
            "is a file; choose a folder"),
    CliCase("train-output-under-a-file", lambda ws, t: train_to_argv(ws, write_file(t / "afile", "x") / "run"), 1,
            "a file is in the way"),
    # --- train: data that does not fit the hyperparameters (runtime errors, exit 1)
    CliCase("train-single-label-on-multi-hot", lambda ws, t: train_argv(ws, t, "--hp", "multi_label=0"), 1,
            "multi_label=0 trains a single-label (softmax) model"),
    CliCase("train-too-few-images", lambda ws, t: train_argv(ws, t, "--hp", "mini_batch_size=32",
                                                         "--hp", "num_training_samples=100"), 1,
            "The number of input images (24) must be bigger or equal to the mini_batch_size (32)"),
    CliCase("train-num-classes-mismatch", lambda ws, t: train_argv(ws, t, "--hp", "num_classes=4"), 1,
            "the training data has 5 classes but num_classes=4"),
    CliCase("train-validation-lst-wrong-width", lambda ws, t: train_argv(
        ws, t, "--validation-lst", str(ws.lst_with(t, ["0\t1\t0\t0\t0\ta.jpg"], "val.lst"))), 1, "val.lst:1: expected 7"),
    CliCase("train-pretrained-missing", lambda ws, t: train_argv(ws, t, "--hp", "use_pretrained_model=1", "--pretrained",
                                                             str(t / "resnet-18-0000.params")), 1,
            "pretrained weights file"),
    # --- train: RecordIO input
    CliCase("train-rec-missing", lambda ws, t: ["train", "--train-rec", str(t / "no.rec"), "--classes", CLASSES,
                                                "--output", str(t / "out")], 2, "no.rec: file not found"),
    CliCase("train-rec-not-recordio", lambda ws, t: ["train", "--train-rec", str(write_file(t / "x.rec", b"JUNK" * 99)),
                                                     "--classes", CLASSES, "--output", str(t / "out")], 1,
            "bad RecordIO magic"),
    CliCase("train-rec-truncated", lambda ws, t: ["train", "--train-rec", str(write_file(
        t / "x.rec", ws.rec.read_bytes()[:-100])), "--classes", CLASSES, "--output", str(t / "out")], 1, "truncated"),
    CliCase("train-rec-label-2", lambda ws, t: ["train", "--train-rec", str(ws.rec_with(
        t, [(0, [1, 0, 0, 0, 0]), (1, [2, 0, 0, 0, 0])])), "--classes", CLASSES, "--output", str(t / "out")], 1,
            "(record 1, id 1): label [2.0, 0.0, 0.0, 0.0, 0.0] is not a multi-hot"),
    CliCase("train-rec-duplicate-ids", lambda ws, t: ["train", "--train-rec", str(ws.rec_with(
        t, [(7, [1, 0, 0, 0, 0]), (7, [0, 1, 0, 0, 0])])), "--classes", CLASSES, "--output", str(t / "out")], 1,
            "records 0 and 1 both have id 7"),
    CliCase("train-rec-ragged-labels", lambda ws, t: ["train", "--train-rec", str(ws.rec_with(
        t, [(0, [1, 0, 0, 0, 0]), (1, [0, 1])])), "--classes", CLASSES, "--output", str(t / "out")], 1,
            "label arrays of different lengths"),
    # --- evaluate
    CliCase("evaluate-model-missing", lambda ws, t: eval_argv(ws, t, model=t / "none.tar.gz"), 1,
            "none.tar.gz: model artifact not found"),
    CliCase("evaluate-model-truncated", lambda ws, t: eval_argv(ws, t, model=write_file(
        t / "m.tar.gz", ws.model.read_bytes()[:200_000])), 1, "truncated or not a model.tar.gz"),
    CliCase("evaluate-model-not-a-tar", lambda ws, t: eval_argv(ws, t, model=write_file(t / "m.tar.gz", b"hello" * 100)), 1,
            "cannot read the model artifact"),
    CliCase("evaluate-model-oversized-member", lambda ws, t: eval_argv(ws, t, model=write_file(
        t / "m.tar.gz", tar_member_header_only("image-classification-0001.params", 3 << 30))), 1,
            "is 3221225472 bytes, more than"),
    CliCase("evaluate-model-no-params", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(
        t, {"model-shapes.json": b"[]"})), 1, "no 'image-classification-NNNN.params' file inside"),
    CliCase("evaluate-model-empty-heads", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, members_with(
        ws, image__classification__symbol_json=b'{"nodes": [], "heads": []}'))), 1, "has no output head"),
    CliCase("evaluate-model-shapes-invalid-json", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, members_with(
        ws, model__shapes_json=b"[{"))), 1, "model-shapes.json is not valid JSON"),
    CliCase("evaluate-model-shapes-wrong-schema", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, members_with(
        ws, model__shapes_json=b'[{"name": "data", "shape": "3,32,32"}]'))), 1, "model-shapes.json must be a list"),
    CliCase("evaluate-params-shape-overflow", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, {
        "image-classification-0001.params": params_with_shape((1 << 40, 1 << 40))})), 1, "needs 4835703278458516698824704"),
    CliCase("evaluate-params-negative-dim", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, {
        "image-classification-0001.params": params_with_shape((-4, 2))})), 1, "has a negative dimension"),
    CliCase("evaluate-params-too-many-dims", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, {
        "image-classification-0001.params": struct.pack("<QQQIiI", 0x112, 0, 1, 0xF993FAC9, 0, 1 << 30)})), 1,
            "claims 1073741824 dimensions"),
    CliCase("evaluate-params-not-params", lambda ws, t: eval_argv(ws, t, model=ws.tar_with(t, {
        "image-classification-0001.params": b"PK\x03\x04 not params at all"})), 1, "not an MXNet .params file"),
    CliCase("evaluate-model-symlink-member", lambda ws, t: eval_argv(ws, t, model=_symlink_tar(t)), 1,
            "is a link or a device file"),
    CliCase("evaluate-lst-image-missing", lambda ws, t: eval_argv(ws, t, None, ws.lst_with(
        t, ws.good_lines(2) + ["50\t1\t0\t0\t0\t0\tmissing.jpg"])), 1, "missing.jpg (missing)"),
    CliCase("evaluate-lst-binary", lambda ws, t: eval_argv(ws, t, None, write_file(t / "b.lst", bytes(range(256)))), 1,
            "is a binary file"),
    CliCase("evaluate-classes-count", lambda ws, t: eval_argv(ws, t, None, None, "--classes", "a,b,c"), 1,
            "the model has 5 classes but 3 class names"),
    CliCase("evaluate-metadata-invalid", lambda ws, t: eval_argv(ws, t, model=with_metadata(ws, t, b"{not json")), 1,
            "model-metadata.json: not valid JSON"),
    CliCase("evaluate-metadata-list", lambda ws, t: eval_argv(ws, t, model=with_metadata(ws, t, b"[1]")), 1,
            "expected a JSON object"),
    # --- predict
    CliCase("predict-image-missing", lambda ws, t: predict_argv(ws, t, str(t / "nope.jpg")), 1, "nope.jpg: image file not found"),
    CliCase("predict-image-is-a-folder", lambda ws, t: predict_argv(ws, t, str(t)), 1, "is a directory, not an image"),
    CliCase("predict-not-an-image", lambda ws, t: predict_argv(ws, t, str(write_file(t / "notes.jpg", "hello"))), 1,
            "notes.jpg: not a decodable image"),
    CliCase("predict-empty-file", lambda ws, t: predict_argv(ws, t, str(write_file(t / "e.jpg", b""))), 1,
            "e.jpg: empty file"),
    CliCase("predict-truncated-jpeg", lambda ws, t: predict_argv(ws, t, str(write_file(
        t / "half.jpg", ws.jpeg.read_bytes()[:len(ws.jpeg.read_bytes()) // 2]))), 1, "half.jpg: "),
    CliCase("predict-pixel-bomb", lambda ws, t: predict_argv(ws, t, str(write_file(t / "bomb.png", png_header_only(20000, 20000)))),
            1, "bomb.png: the image has 400000000 pixels, more than the limit"),
    CliCase("predict-second-image-bad", lambda ws, t: predict_argv(ws, t, str(ws.jpeg), str(write_file(t / "b.png", "x"))), 1,
            "b.png: not a decodable image"),
    CliCase("predict-model-missing", lambda ws, t: predict_argv(ws, t, str(ws.jpeg), model=t / "m.tar.gz"), 1,
            "model artifact not found"),
    CliCase("predict-bad-classes", lambda ws, t: predict_argv(ws, t, str(ws.jpeg)) + ["--classes", "a,a,b,c,d"], 2,
            "a appear more than once"),
    # --- prepare
    CliCase("prepare-coco-without-inputs", lambda ws, t: ["prepare", "coco", "--output", str(t / "out")], 2,
            "prepare coco needs --download, or --annotations and --images"),
    CliCase("prepare-coco-json-invalid", lambda ws, t: ["prepare", "coco", "--annotations", str(write_file(
        t / "i.json", "{")), "--images", str(ws.images), "--output", str(t / "out")], 1, "i.json:1: not valid JSON"),
    CliCase("prepare-coco-json-empty-object", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(t, {})),
                                                             "--images", str(ws.images), "--output", str(t / "out")], 1,
            "no 'images' list"),
    CliCase("prepare-coco-json-list", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(t, [])),
                                                     "--images", str(ws.images), "--output", str(t / "out")], 1,
            "a JSON list, not an object"),
    CliCase("prepare-coco-no-categories", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(
        t, {"images": [], "annotations": []})), "--images", str(ws.images), "--output", str(t / "out")], 1,
            "no 'categories' list"),
    CliCase("prepare-coco-unknown-category", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(
        t, {"images": [_IMG], "annotations": [], "categories": [_CAT]})), "--images", str(ws.images),
        "--output", str(t / "out")], 1, "no category named 'bicycle'"),
    CliCase("prepare-coco-dangling-annotation", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(
        t, {"images": [_IMG], "annotations": [{"id": 1, "image_id": 9, "category_id": 1}], "categories": [_CAT]})),
        "--images", str(ws.images), "--output", str(t / "out")], 1, "refers to image_id 9"),
    CliCase("prepare-coco-image-without-file-name", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(
        t, {"images": [{"id": 1}], "annotations": [], "categories": [_CAT]})), "--images", str(ws.images),
        "--output", str(t / "out")], 1, "images[0] needs the fields id, file_name"),
    CliCase("prepare-bad-train-size", lambda ws, t: ["prepare", "coco", "--annotations", str(_coco(
        t, {"images": [_IMG, {**_IMG, "id": 2, "file_name": "b.jpg"}], "categories": [_CAT],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 2, "category_id": 1}]})),
        "--images", str(ws.images), "--categories", "person", "--train-size", "9", "--output", str(t / "out")], 2,
            "leaves an empty side"),
]


def _empty_image_root(ws: Workspace, tmp: Path) -> Path:
    root = tmp / "imgs"
    root.mkdir(exist_ok=True)
    (root / "empty.jpg").write_bytes(b"")
    return root


def _symlink_tar(tmp: Path) -> Path:
    p = tmp / "link.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        info = tarfile.TarInfo("image-classification-0001.params")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    return p


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case: CliCase, ws: Workspace, tmp_path: Path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


def test_cli_debug_prints_the_traceback_and_global_flags_go_anywhere(ws, tmp_path, capsys):
    argv = predict_argv(ws, tmp_path, str(tmp_path / "nope.jpg"))
    assert main(argv + ["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "nope.jpg: image file not found" in err
    assert main(argv + ["--quiet"]) == 1 and "Traceback" not in capsys.readouterr().err


def test_cli_unexpected_errors_are_one_line_too(ws, tmp_path, capsys, monkeypatch):
    import multilabel_ic.cli as cli

    monkeypatch.setattr(cli, "cmd_predict", lambda args: {}["boom"])
    assert main(predict_argv(ws, tmp_path, str(ws.jpeg))) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyError" in err and "--debug" in err


def test_cli_usage_errors_of_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


# --------------------------------------------------------------------------------------------- API cases


def _aug(**kw):
    from multilabel_ic.backends.local import AugmentOptions

    return AugmentOptions(**kw)


def _zip(tmp: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    p = tmp / "a.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return p


def _extract(tmp: Path, archive: Path, **kw):
    from multilabel_ic.download import extract_zip

    return extract_zip(archive, tmp / "dest", **kw)


API_CASES = [
    ApiCase("trainer-hp-dict", lambda ws, t: Trainer({"epochs": 1}), UsageError,
            "hyperparameters must be a multilabel_ic.Hyperparameters, got dict"),
    ApiCase("trainer-backend-object", lambda ws, t: Trainer(make_hp(), backend=object()), UsageError, "is not a backend"),
    ApiCase("trainer-backend-name", lambda ws, t: Trainer(make_hp(), backend="gpu-cloud"), UsageError,
            "unknown backend 'gpu-cloud'"),
    ApiCase("fit-train-not-a-dataset", lambda ws, t: Trainer(make_hp(), output_dir=t / "o").fit([("a.jpg", [1])]),
            UsageError, "train must be a multilabel_ic.Dataset, got list"),
    ApiCase("dataset-duplicate-class-names", lambda ws, t: Dataset(["a.jpg"], [[1, 0]], ["cat", "cat"]), DataError,
            "'cat' appear more than once"),
    ApiCase("dataset-label-2", lambda ws, t: Dataset(["a.jpg"], [[2, 0]], ["a", "b"]), DataError, "multi-hot"),
    ApiCase("dataset-label-width", lambda ws, t: Dataset(["a.jpg"], [[1, 0, 0]], ["a", "b"]), DataError,
            "3 columns but 2 class names"),
    ApiCase("fit-single-label-on-multi-hot", lambda ws, t: Trainer(make_hp(multi_label=0), output_dir=t / "o").fit(ws.data),
            DataError, "multi_label=0 trains a single-label"),
    ApiCase("fit-validation-classes-differ", lambda ws, t: Trainer(make_hp(), output_dir=t / "o").fit(
        ws.data, Dataset(ws.data.paths, ws.data.labels, list("abcde"), root=ws.images)), DataError,
            "the validation data's classes"),
    ApiCase("predict-a-string", lambda ws, t: make_predictor(ws).predict("photo.jpg"), UsageError,
            "expected the encoded image as bytes, got str"),
    ApiCase("predict-a-path", lambda ws, t: make_predictor(ws).predict(ws.jpeg), UsageError, "got PosixPath"
            if os.name != "nt" else "got WindowsPath"),
    ApiCase("predict-batch-single-bytes", lambda ws, t: make_predictor(ws).predict_batch(ws.jpeg.read_bytes()), UsageError,
            "predict_batch takes a list of encoded images"),
    ApiCase("predict-batch-sources-length", lambda ws, t: make_predictor(ws).predict_batch([b"x"], sources=["a", "b"]),
            UsageError, "sources has 2 names for 1 images"),
    ApiCase("predict-batch-item-not-bytes", lambda ws, t: make_predictor(ws).predict_batch([ws.jpeg.read_bytes(), 3]),
            UsageError, "image 1: expected the encoded image as bytes, got int"),
    ApiCase("predict-labels-a-string", lambda ws, t: make_predictor(ws).predict_labels("x.jpg"), UsageError,
            "predict_labels takes encoded image bytes"),
    ApiCase("predict-labels-threshold-length", lambda ws, t: make_predictor(ws).predict_labels(
        ws.jpeg.read_bytes(), threshold=[0.5, 0.5, 0.5]), UsageError, "threshold has 3 values but the model has 5"),
    ApiCase("predict-labels-threshold-name", lambda ws, t: make_predictor(ws).predict_labels(
        ws.jpeg.read_bytes(), threshold="best"), UsageError, "or 'tuned'; got 'best'"),
    ApiCase("predict-labels-threshold-nan", lambda ws, t: make_predictor(ws).predict_labels(
        ws.jpeg.read_bytes(), threshold=float("nan")), UsageError, "must be finite"),
    ApiCase("predict-labels-tuned-missing", lambda ws, t: make_predictor(ws).predict_labels(
        ws.jpeg.read_bytes(), threshold="tuned"), UsageError, "this model has none"),
    ApiCase("predict-content-type", lambda ws, t: make_predictor(ws).predict(b"x", content_type="text/csv"), UsageError,
            "content type 'text/csv' is not accepted"),
    ApiCase("predict-output-format", lambda ws, t: make_predictor(ws).predict_batch([], output="csv"), UsageError,
            "output must be 'list' or 'jsonlines'"),
    ApiCase("predictor-output-name", lambda ws, t: make_predictor(ws, output="relu"), UsageError,
            "output must be 'sigmoid' or 'softmax'"),
    ApiCase("evaluate-classes-differ", lambda ws, t: make_predictor(ws).evaluate(
        Dataset(ws.data.paths, ws.data.labels, list("abcde"), root=ws.images)), DataError, "differ from the model's"),
    ApiCase("deploy-local-model", lambda ws, t: _fake_model().deploy(), UsageError, "deploy() needs a model trained"),
    ApiCase("local-options-weighted-loss", lambda ws, t: local_options(weighted_loss="focal"), UsageError,
            "The 'weighted_loss' option of LocalOptions must be one of 'neg_pos_ratio', 'balanced'. Got 'focal'"),
    ApiCase("local-options-cpu-float16", lambda ws, t: local_options(cpu_float16="half"), UsageError,
            "The 'cpu_float16' option of LocalOptions must be one of"),
    ApiCase("augment-options-jitter", lambda ws, t: _aug(hsl_jitter="normal"), UsageError,
            "The 'hsl_jitter' option of AugmentOptions must be one of"),
    ApiCase("augment-options-fill", lambda ws, t: _aug(fill_value=300), UsageError, "The 'fill_value' option of AugmentOptions must be an int in the range [0, 255]. Got 300"),
    ApiCase("sagemaker-input-format", lambda ws, t: sagemaker_backend(input_format="csv"), UsageError, "The 'input_format' option of SageMakerBackend must be one of 'lst', 'recordio', 'manifest'"),
    ApiCase("sagemaker-instance-count", lambda ws, t: sagemaker_backend(instance_count=0), UsageError, "The 'instance_count' option of SageMakerBackend must be an int in the range [1, inf). Got 0"),
    ApiCase("sagemaker-max-wait-below-max-run", lambda ws, t: sagemaker_backend(use_spot=True, max_run=7200, max_wait=3600),
            UsageError, "max_wait (3600 s) must be at least max_run (7200 s)"),
    ApiCase("sagemaker-max-wait-without-spot", lambda ws, t: sagemaker_backend(max_wait=7200), UsageError,
            "max_wait applies to managed spot training only"),
    ApiCase("sagemaker-checkpoint-without-spot", lambda ws, t: sagemaker_backend(checkpoint_s3_uri="s3://b/ck"), UsageError,
            "checkpoint_s3_uri is used with managed spot training"),
    ApiCase("sagemaker-volume-size", lambda ws, t: sagemaker_backend(volume_size="big"), UsageError,
            "The 'volume_size' option of SageMakerBackend must be an int in the range [1, 16384]. Got 'big'"),
    ApiCase("local-options-log-interval", lambda ws, t: local_options(log_interval=0), UsageError,
            "The 'log_interval' option of LocalOptions must be an int in the range [1, inf). Got 0"),
    ApiCase("local-options-augment-type", lambda ws, t: local_options(augment="crop"), UsageError,
            "The 'augment' option of LocalOptions must be an AugmentOptions. Got str"),
    ApiCase("sagemaker-checkpoint-not-s3", lambda ws, t: sagemaker_backend(use_spot=True, checkpoint_s3_uri="/tmp/ck"), UsageError,
            "checkpoint_s3_uri must be an s3:// URI"),
    ApiCase("sagemaker-unsupported-region", lambda ws, t: sagemaker_backend(region="mars-west-1").image(), UsageError,
            "region='mars-west-1'"),
    ApiCase("artifact-oversized-member", lambda ws, t: read_model_tar(write_file(
        t / "m.tar.gz", tar_member_header_only("model-shapes.json", 1 << 20))), ArtifactError,
            "member 'model-shapes.json' is 1048576 bytes"),
    ApiCase("artifact-too-many-members", lambda ws, t: read_model_tar(ws.tar_with(
        t, {f"junk/{i}.txt": b"" for i in range(1001)})), ArtifactError, "more than 1000 members"),
    ApiCase("artifact-folder-oversized", lambda ws, t: read_model_tar(_oversized_folder(t)), ArtifactError,
            "more than a model-shapes.json of the algorithm can be"),
    ApiCase("params-count-names-mismatch", lambda ws, t: loads_params(
        dumps_params({"a": np.zeros(2, np.float32)})[:-17] + struct.pack("<Q", 5)), ArtifactError,
            "1 arrays but 5 names"),
    ApiCase("pixel-limit-setting", lambda ws, t: _set_pixels(-1), UsageError, "max_pixels must be a non-negative int"),
    ApiCase("pixel-limit-env", lambda ws, t: _decode_with_env(ws, "lots"), UsageError,
            "MULTILABEL_IC_MAX_PIXELS='lots' is not an integer"),
    ApiCase("pixel-limit-lowered", lambda ws, t: _decode_with_limit(ws, 100), ImageDecodeError,
            "more than the limit of 100 decoded pixels"),
    ApiCase("zip-too-many-members", lambda ws, t: _extract(t, _zip(t, {f"{i}.txt": b"x" for i in range(5)}),
                                                           max_members=4), DownloadError, "5 members, more than"),
    ApiCase("zip-too-many-bytes", lambda ws, t: _extract(t, _zip(t, {"big.bin": b"\0" * 10_000}), max_bytes=1000),
            DownloadError, "10000 bytes uncompressed"),
    ApiCase("zip-symlink", lambda ws, t: _extract(t, _zip(t, {"a.txt": b"x"}, symlink="link")), DownloadError,
            "is a symbolic link"),
    ApiCase("zip-traversal", lambda ws, t: _extract(t, _zip(t, {"../../evil.txt": b"x"})), DownloadError,
            "would extract outside"),
    ApiCase("zip-not-a-zip", lambda ws, t: _extract(t, write_file(t / "a.zip", b"not a zip")), DownloadError,
            "not a readable zip file"),
    ApiCase("recordio-duplicate-ids", lambda ws, t: Dataset.from_recordio(ws.rec_with(
        t, [(1, [1, 0, 0, 0, 0]), (1, [0, 0, 1, 0, 0])]), extract_to=t / "x"), DataError, "both have id 1"),
    ApiCase("recordio-class-id-out-of-range", lambda ws, t: Dataset.from_recordio(ws.rec_with(
        t, [(0, 7.0)]), extract_to=t / "x", num_classes=5), DataError, "class 7.0 is not an integer in [0, 5)"),
    ApiCase("recordio-missing", lambda ws, t: Dataset.from_recordio(t / "no.rec", extract_to=t / "x"), DataError,
            "no.rec: RecordIO file not found"),
    ApiCase("manifest-line-not-object", lambda ws, t: Dataset.from_manifest(write_file(t / "m.manifest", "[1, 2]\n"),
                                                                            root=t, class_names=["a"]),
            DataError, "m.manifest:1: expected a JSON object per line"),
    ApiCase("hyperparameter-unknown", lambda ws, t: make_hp(bogus=1), HyperparameterError,
            "Unknown hyperparameter(s) 'bogus'"),
    ApiCase("split-bad-size", lambda ws, t: ws.data.split(1.5), UsageError, "train_size must be a count"),
]


def _fake_model():
    from multilabel_ic.api import Model

    return Model(hyperparameters=make_hp(), class_names=["a"], metrics={}, artifact="x", local_artifact=None)


def _oversized_folder(tmp: Path) -> Path:
    folder = tmp / "art"
    folder.mkdir()
    (folder / "model-shapes.json").write_bytes(b" " * (1 << 20))
    return folder


def _set_pixels(value):
    from multilabel_ic.images import set_max_pixels

    set_max_pixels(value)


def _decode_with_env(ws: Workspace, value: str):
    from multilabel_ic.images import read_image

    old = os.environ.get("MULTILABEL_IC_MAX_PIXELS")
    os.environ["MULTILABEL_IC_MAX_PIXELS"] = value
    try:
        return read_image(ws.jpeg)
    finally:
        if old is None:
            del os.environ["MULTILABEL_IC_MAX_PIXELS"]
        else:
            os.environ["MULTILABEL_IC_MAX_PIXELS"] = old


def _decode_with_limit(ws: Workspace, limit: int):
    from multilabel_ic.images import read_image, set_max_pixels

    set_max_pixels(limit)
    try:
        return read_image(ws.jpeg)
    finally:
        set_max_pixels(None)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case: ApiCase, ws: Workspace, tmp_path: Path):
    check_api_case(case, ws, tmp_path)


def all_catalog_cases() -> list:
    """This module's cases and those of every ``test_catalog_*.py`` module (one per area)."""
    import importlib

    cases = [*CLI_CASES, *API_CASES]
    for path in sorted(Path(__file__).parent.glob("test_catalog_*.py")):
        module = importlib.import_module(path.stem)
        cases += [*getattr(module, "CLI_CASES", []), *getattr(module, "API_CASES", [])]
    return cases


def test_the_catalog_is_big_enough():
    cases = all_catalog_cases()
    assert len(cases) >= 375  # 137 before the trust pass of the cache, artifacts, run files, export and S3
    assert len({c.id for c in cases}) == len(cases), "two cases share an id"


# --------------------------------------------------------------------------------------------- fuzzing the parsers


_lst_line = st.lists(st.sampled_from(["0", "1", "2", "-1", "x", "1.0", "", " ", "a.jpg", "../b.jpg", "/c.jpg",
                                      "1e9", "nan", "inf", "\t", "\u00e9.jpg"]), min_size=0, max_size=8)


@FUZZ
@given(lines=st.lists(_lst_line.map("\t".join), max_size=6), classes=st.sampled_from([None, 1, 2, 5]),
       layout=st.sampled_from(["auto", "multi-hot", "class-id"]))
def test_fuzz_lst(tmp_path_factory, lines, classes, layout):
    from multilabel_ic.data.lst import read_lst

    p = tmp_path_factory.mktemp("lst") / "f.lst"
    p.write_text("\n".join(lines))
    entries = clear_or_correct(read_lst, p, num_classes=classes, layout=layout)
    for e in entries or []:
        assert set(np.unique(e.labels)) <= {0, 1} and not e.path.startswith("/") and ".." not in e.path.split("/")


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_lst_bytes(tmp_path_factory, data):
    from multilabel_ic.data.lst import read_lst

    p = tmp_path_factory.mktemp("lstb") / "f.lst"
    p.write_bytes(data)
    entries = clear_or_correct(read_lst, p)
    for e in entries or []:
        assert set(np.unique(e.labels)) <= {0, 1} and not e.path.startswith("/") and ".." not in e.path.split("/")
    if entries:
        assert len({e.index for e in entries}) == len(entries) and len({len(e.labels) for e in entries}) == 1


@FUZZ
@given(objs=st.lists(json_values, max_size=4), fmt=st.sampled_from(["multi-hot", "class-id"]))
def test_fuzz_manifest(tmp_path_factory, objs, fmt):
    p = tmp_path_factory.mktemp("man") / "f.manifest"
    p.write_text("\n".join(json.dumps(o) for o in objs))
    data = clear_or_correct(Dataset.from_manifest, p, root=p.parent, class_names=["a", "b", "c"], label_format=fmt)
    if data is not None:
        assert data.labels.shape == (len(data), 3) and set(np.unique(data.labels)) <= {0, 1}
        assert all(not q.startswith("/") and ".." not in q.split("/") for q in data.paths)


@FUZZ
@given(data=st.binary(max_size=400), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_fuzz_recordio(ws, tmp_path_factory, data, cut, flip):
    good = bytearray(ws.rec.read_bytes()[:2000])
    if flip < len(good):
        good[flip] ^= 0xFF
    for blob in (data, bytes(good[:cut * 5])):
        folder = tmp_path_factory.mktemp("rec")
        p = folder / "f.rec"
        p.write_bytes(blob)
        result = clear_or_correct(Dataset.from_recordio, p, extract_to=folder / "x", num_classes=5)
        if result is None:
            assert not (folder / "x").exists() and [q.name for q in folder.iterdir()] == ["f.rec"]


@FUZZ
@given(data=st.binary(max_size=300), cut=st.integers(0, 2000), flip=st.integers(0, 2000))
def test_fuzz_params(data, cut, flip):
    good = bytearray(dumps_params({"arg:w": np.arange(6, dtype=np.float32).reshape(2, 3),
                                   "aux:v": np.ones(3, np.float16)}))
    if flip < len(good):
        good[flip] = (good[flip] + 97) % 256
    for blob in (data, bytes(good[:cut]), bytes(good)):
        out = clear_or_correct(loads_params, blob)
        for value in (out or {}).values():
            assert isinstance(value, np.ndarray)


_TINY_PARAMS = dumps_params({"arg:stage1_unit1_conv1_weight": np.zeros((2, 2, 3, 3), np.float32),
                             "arg:fc1_weight": np.zeros((5, 2), np.float32), "arg:fc1_bias": np.zeros(5, np.float32)})


@FUZZ
@given(shapes=json_values, symbol=json_values)
def test_fuzz_model_shapes_and_symbol(ws, tmp_path_factory, shapes, symbol):
    files = {"image-classification-0001.params": _TINY_PARAMS}
    files["model-shapes.json"] = json.dumps(shapes).encode()
    files["image-classification-symbol.json"] = json.dumps(symbol).encode()
    p = ws.tar_with(tmp_path_factory.mktemp("art"), files)
    art = clear_or_correct(read_model_tar, p)
    if art is not None:
        assert art.num_classes == 5 and art.output in ("sigmoid", "softmax")


@FUZZ
@given(doc=json_values | st.fixed_dictionaries({"images": json_values, "annotations": json_values, "categories": json_values}))
def test_fuzz_coco_json(tmp_path_factory, doc):
    p = tmp_path_factory.mktemp("coco") / "i.json"
    p.write_text(json.dumps(doc))
    data = clear_or_correct(Dataset.from_coco, p, images=p.parent, categories=["person"])
    if data is not None:  # only images annotated with the category, each once, labelled 1
        assert data.class_names == ["person"] and data.labels.shape == (len(data), 1) and data.labels.all()
        assert len(data) <= len(doc["images"])


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_image_bytes(data):
    from multilabel_ic.images import decode_image

    img = clear_or_correct(decode_image, data)
    assert img is None or img.ndim == 3


def test_fuzz_found_nothing_foreign_in_the_coco_corner_cases(tmp_path):
    """The shapes pycocotools itself chokes on, checked explicitly (hypothesis may not draw them)."""
    cases = [{"images": [{"id": [], "file_name": "a"}], "annotations": [], "categories": [_CAT]},
             {"images": [_IMG], "annotations": [{"image_id": 1, "category_id": 1}], "categories": [{"id": 1}]},
             {"images": [_IMG], "annotations": [{"image_id": 1, "category_id": {}}], "categories": [_CAT]}]
    for doc in cases:
        p = _coco(tmp_path, doc)
        clear_or_correct(Dataset.from_coco, p, images=tmp_path, categories=["person"])


def test_backend_error_and_conflict_are_project_errors():
    assert issubclass(BackendError, MultilabelICError) and issubclass(RunConflictError, MultilabelICError)
