"""Catalog cases of the decode cache and of the images it reads: an image too small for image_shape (training or
validation, with or without a cache) and a cache folder that cannot be one are refused before the run starts, with
nothing left in the output folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from catalog_support import CLASSES, ApiCase, CliCase, Workspace, check_api_case, check_cli_case, make_hp

from multilabel_ic import DataError, Dataset, OutputError, Trainer
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.backends.local.imagestore import ImageStore

NO_RESIZE = ["--hp", "image_shape=3,32,32", "--hp", "mini_batch_size=8", "--hp", "epochs=1", "--hp", "multi_label=1",
             "--workers", "0"]


def _images_with_a_small_one(ws: Workspace, tmp: Path) -> tuple[Path, Path, Path]:
    """A copy of 16 workspace images where the third is 20x30 px; the .lst of the first 8 (with the small one) and
    that of the other 8."""
    images = tmp / "images"
    images.mkdir(exist_ok=True)
    for rel in ws.data.paths[:16]:
        shutil.copy(ws.images / rel, images / rel)
    cv2.imwrite(str(images / ws.data.paths[2]), np.full((30, 20, 3), 128, np.uint8))
    return (images, ws.lst_with(tmp, ws.good_lines(8), name="small.lst"),
            ws.lst_with(tmp, ws.good_lines(16)[8:], name="good8.lst"))


def _train_small(ws: Workspace, tmp: Path, *extra: str, where: str = "train") -> list[str]:
    images, lst, good = _images_with_a_small_one(ws, tmp)
    train, val = (lst, good) if where == "train" else (good, lst)
    return ["train", "--train-lst", str(train), "--validation-lst", str(val), "--images", str(images), "--classes",
            CLASSES, "--output", str(tmp / "out"), *NO_RESIZE, *extra]


def _cache_dir_is_a_file(ws: Workspace, tmp: Path) -> list[str]:
    (tmp / "cache-file").write_text("not a folder\n")
    return ["train", "--train-lst", str(ws.lst), "--images", str(ws.images), "--classes", CLASSES, "--output",
            str(tmp / "out"), *NO_RESIZE, "--hp", "resize=36", "--cache-dir", str(tmp / "cache-file")]


SMALL = "smaller than image_shape's 32x32 (resize is not set)"
CLI_CASES = [
    CliCase("cache-train-image-too-small", lambda ws, tmp: _train_small(ws, tmp), 1,
            f"training images: 1 of 8 images are {SMALL}"),
    CliCase("cache-validation-image-too-small", lambda ws, tmp: _train_small(ws, tmp, where="val"), 1,
            f"validation images: 1 of 8 images are {SMALL}"),
    CliCase("cache-train-image-too-small-names-file-size-and-fix", lambda ws, tmp: _train_small(ws, tmp), 1,
            "(20x30). Set resize to at least 32 (--hp resize=32), remove these images"),
    CliCase("cache-train-image-too-small-reference-pipeline",
            lambda ws, tmp: _train_small(ws, tmp, "--input-pipeline", "reference"), 1,
            f"training images: 1 of 8 images are {SMALL}"),
    CliCase("cache-validation-image-too-small-reference-pipeline",
            lambda ws, tmp: _train_small(ws, tmp, "--input-pipeline", "reference", where="val"), 1,
            f"validation images: 1 of 8 images are {SMALL}"),
    CliCase("cache-train-image-too-small-when-no-cache-fits",
            lambda ws, tmp: _train_small(ws, tmp, "--cache-max-gb", "0.000001"), 1,
            f"training images: 1 of 8 images are {SMALL}"),
    CliCase("cache-train-image-too-small-in-a-shared-cache-dir",
            lambda ws, tmp: _train_small(ws, tmp, "--cache-dir", str(tmp / "shared-cache")), 1,
            f"training images: 1 of 8 images are {SMALL}"),
    CliCase("cache-dir-is-a-file", _cache_dir_is_a_file, 1, "cache-file is a file, not a folder"),
]


def _fit_small(ws: Workspace, tmp: Path, where: str, **options) -> None:
    images, lst, good_lst = _images_with_a_small_one(ws, tmp)
    data = Dataset.from_lst(lst, root=images, class_names=CLASSES.split(","))
    good = Dataset.from_lst(good_lst, root=images, class_names=CLASSES.split(","))
    train, val = (data, good) if where == "train" else (good, data)
    hp = make_hp(resize=None, num_training_samples=8)
    Trainer(hp, output_dir=tmp / "out", options=LocalOptions(num_workers=0, progress=False, **options)).fit(
        train, validation=val)


def _build_small(ws: Workspace, tmp: Path) -> None:
    images, lst, _ = _images_with_a_small_one(ws, tmp)
    data = Dataset.from_lst(lst, root=images, class_names=CLASSES.split(","))
    ImageStore.build(data, tmp / "cache", resize=None, channels=3, min_size=(32, 32), what="training images")


API_CASES = [
    ApiCase("cache-api-train-image-too-small", lambda ws, tmp: _fit_small(ws, tmp, "train"), DataError,
            f"training images: 1 of 8 images are {SMALL}"),
    ApiCase("cache-api-validation-image-too-small", lambda ws, tmp: _fit_small(ws, tmp, "val"), DataError,
            f"validation images: 1 of 8 images are {SMALL}"),
    ApiCase("cache-api-validation-image-too-small-reference",
            lambda ws, tmp: _fit_small(ws, tmp, "val", input_pipeline="reference"), DataError,
            f"validation images: 1 of 8 images are {SMALL}"),
    ApiCase("cache-api-build-refuses-small-images-and-writes-nothing", _build_small, DataError,
            f"training images: 1 of 8 images are {SMALL}"),
    ApiCase("cache-api-cache-dir-is-a-file",
            lambda ws, tmp: (tmp / "f").write_text("x") and _fit_small(ws, tmp, "train", cache_dir=str(tmp / "f")),
            OutputError, "f is a file, not a folder"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path, inputs={"images", "small.lst", "good8.lst", "f"} | {
        f"images/{rel}" for rel in ws.data.paths[:16]})

