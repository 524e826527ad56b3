"""The failure catalog's cases of reading artifacts and images: a header bomb of every image format OpenCV decodes,
each wrong field of model-metadata.json, non-finite weights, ambiguous or padded archives and unknown output heads,
and evaluate's --resize."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from catalog_support import CLASSES, CliCase, check_cli_case, eval_argv, predict_argv, write_file
from image_bombs import BOMB_SIZE, BOMBS, bomb

HP = {"num_classes": "5", "num_training_samples": "24", "image_shape": "3,28,28", "num_layers": "20",
      "mini_batch_size": "8", "resize": "32"}
GOOD_META = {"class_names": CLASSES.split(","), "tuned_thresholds": [0.5] * 5, "hyperparameters": HP,
             "backend": "local", "engine": "torch"}


def _meta(ws, tmp: Path, **fields) -> Path:
    folder = tmp / "m"
    folder.mkdir(exist_ok=True)
    shutil.copy(ws.model, folder / "model.tar.gz")
    doc = {k: v for k, v in {**GOOD_META, **fields}.items() if v is not _ABSENT}
    (folder / "model-metadata.json").write_text(json.dumps(doc))
    return folder / "model.tar.gz"


_ABSENT = object()


def _nan_model(ws, tmp: Path) -> Path:
    from multilabel_ic.model.artifact import write_model_tar

    args = {k: v.copy() for k, v in ws.args.items()}
    args["stage3_unit1_conv2_weight"].flat[0] = np.nan
    return write_model_tar(tmp / "nan" / "model.tar.gz", {1: (args, ws.aux)}, num_classes=5, num_layers=20,
                           image_shape=(3, 28, 28), multi_label=True)


def _duplicate_params(ws, tmp: Path) -> Path:
    files = ws.members()
    params = files.pop("image-classification-0001.params")
    return ws.tar_with(tmp, {**files, "a/image-classification-0001.params": params,
                             "b/image-classification-0001.params": params})


def _head(ws, tmp: Path, op: str) -> Path:
    files = ws.members()
    sym = json.loads(files["image-classification-symbol.json"])
    sym["nodes"][sym["heads"][0][0]]["op"] = op
    return ws.tar_with(tmp, {**files, "image-classification-symbol.json": json.dumps(sym).encode()})


def _padded(ws, tmp: Path) -> Path:
    import gzip
    import tarfile

    info = tarfile.TarInfo("padding.bin")
    info.size = 4 << 30
    return write_file(tmp / "padded.tar.gz", gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096))


def _bomb_case(name: str) -> CliCase:
    w, h = BOMB_SIZE[name]
    return CliCase(f"artifact-trust-bomb-{name}",
                   lambda ws, t: predict_argv(ws, t, str(write_file(t / f"bomb.{name}", bomb(name)))), 1,
                   f"bomb.{name}: the image has {w * h} pixels, more than the limit")


def _meta_case(id: str, message: str, **fields) -> CliCase:
    return CliCase(f"artifact-trust-metadata-{id}", lambda ws, t: eval_argv(ws, t, model=_meta(ws, t, **fields)), 1,
                   message)


CLI_CASES = [
    *[_bomb_case(name) for name in sorted(BOMBS)],
    CliCase("artifact-trust-image-unsizable-header", lambda ws, t: predict_argv(
        ws, t, str(write_file(t / "odd.pam", b"P7\nDEPTH 3\nENDHDR\n" + b"\0" * 64))), 1,
            "odd.pam: a PAM file, but no WIDTH and HEIGHT lines in the header, so its size cannot be checked"),
    _meta_case("class-names-string", "class_names must be a list of 5 unique non-empty strings", class_names="ac"),
    _meta_case("class-names-short", "class_names must be a list of 5 unique non-empty strings (one per class of "
                                    "the model, in label order); got a list of 2", class_names=["a", "b"]),
    _meta_case("class-names-duplicate", "person appear more than once",
               class_names=["person", "person", "car", "a", "b"]),
    _meta_case("class-names-empty-name", "class_names[2] must be a non-empty string",
               class_names=["a", "b", " ", "c", "d"]),
    _meta_case("class-names-number", "class_names[0] must be a non-empty string", class_names=[1, "b", "c", "d", "e"]),
    _meta_case("class-names-missing", "class_names must be present", class_names=_ABSENT),
    _meta_case("class-names-null", "class_names must be a list of 5", class_names=None),
    _meta_case("thresholds-string", "tuned_thresholds must be null, or a list of 5 numbers in [0, 1]",
               tuned_thresholds="0.5"),
    _meta_case("thresholds-nulls", "tuned_thresholds[0] must be a finite number in [0, 1]; got null",
               tuned_thresholds=[None] * 5),
    _meta_case("thresholds-short", "tuned_thresholds must be null, or a list of 5 numbers", tuned_thresholds=[0.5]),
    _meta_case("thresholds-above-one", "tuned_thresholds[4] must be a finite number in [0, 1]; got 1.5",
               tuned_thresholds=[0.5, 0.5, 0.5, 0.5, 1.5]),
    _meta_case("thresholds-bool", "tuned_thresholds[1] must be a finite number in [0, 1]; got true",
               tuned_thresholds=[0.5, True, 0.5, 0.5, 0.5]),
    CliCase("artifact-trust-metadata-thresholds-nan", lambda ws, t: eval_argv(ws, t, model=_meta_text(
        ws, t, json.dumps({**GOOD_META, "tuned_thresholds": [0.5, float("nan"), 0.5, 0.5, 0.5]}))), 1,
            "model-metadata.json: not valid JSON (NaN is not JSON)"),
    _meta_case("hyperparameters-list", "hyperparameters must be null, or the training's hyperparameters as a map",
               hyperparameters=[1, 2]),
    _meta_case("hyperparameters-resize", "hyperparameters must be a valid hyperparameter map (The 'resize' parameter",
               hyperparameters={**HP, "resize": "big"}),
    _meta_case("hyperparameters-num-classes", "hyperparameters.num_classes must be 5, the number of class names",
               hyperparameters={**HP, "num_classes": "7"}),
    _meta_case("hyperparameters-nested", "hyperparameters.resize must be a string",
               hyperparameters={**HP, "resize": [36]}),
    _meta_case("backend", 'backend must be "local" or "sagemaker"; got "cloud"', backend="cloud"),
    _meta_case("engine", "engine must be a non-empty string of at most 64 characters; got 3", engine=3),
    _meta_case("job-name", "job_name must be a non-empty string", job_name=""),
    _meta_case("artifact", "artifact must be a non-empty string", artifact=["s3://b/k"]),
    _meta_case("unknown-field", "class_name must be absent (the fields are class_names, tuned_thresholds",
               class_name=["a"]),
    CliCase("artifact-trust-metadata-folder", lambda ws, t: eval_argv(ws, t, model=_meta_folder(ws, t)), 1,
            "model-metadata.json: is a folder, not a model metadata"),
    CliCase("artifact-trust-nan-weights-predict", lambda ws, t: predict_argv(ws, t, str(ws.jpeg),
                                                                              model=_nan_model(ws, t)), 1,
            "parameter 'arg:stage3_unit1_conv2_weight' holds 1 NaN values (of"),
    CliCase("artifact-trust-nan-weights-evaluate", lambda ws, t: eval_argv(ws, t, model=_nan_model(ws, t)), 1,
            "parameter 'arg:stage3_unit1_conv2_weight' holds 1 NaN values"),
    CliCase("artifact-trust-duplicate-params", lambda ws, t: predict_argv(ws, t, str(ws.jpeg),
                                                                           model=_duplicate_params(ws, t)), 1,
            "members 'a/image-classification-0001.params' and 'b/image-classification-0001.params' are both"),
    CliCase("artifact-trust-unknown-head", lambda ws, t: predict_argv(ws, t, str(ws.jpeg),
                                                                       model=_head(ws, t, "MakeLoss")), 1,
            "the output head of image-classification-symbol.json is the op 'MakeLoss', which is not one of"),
    CliCase("artifact-trust-padded-archive", lambda ws, t: predict_argv(ws, t, str(ws.jpeg), model=_padded(ws, t)),
            1, "member 'padding.bin' (4294967296 bytes) is not part of the algorithm's layout"),
    CliCase("artifact-trust-evaluate-resize-zero", lambda ws, t: eval_argv(ws, t, None, None, "--preprocess",
                                                                            "centre_crop", "--resize", "0"), 2,
            "--resize 0: give a positive number of pixels"),
    CliCase("artifact-trust-evaluate-resize-without-crop", lambda ws, t: eval_argv(ws, t, None, None, "--resize",
                                                                                    "40"), 2,
            "with --preprocess centre_crop (the endpoint's plain resize has no resize step)"),
]


def _meta_text(ws, tmp: Path, text: str) -> Path:
    path = _meta(ws, tmp)
    (path.parent / "model-metadata.json").write_text(text)
    return path


def _meta_folder(ws, tmp: Path) -> Path:
    path = _meta(ws, tmp)
    (path.parent / "model-metadata.json").unlink()
    (path.parent / "model-metadata.json").mkdir()
    return path


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)
