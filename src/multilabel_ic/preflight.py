"""Checks of a training request that run before anything is written or uploaded, the same for every backend.

A job that is known to fail (or, worse, to train the wrong thing) is refused here with a message that names the
problem and the fix, so that a local run leaves its output folder untouched and a SageMaker run uploads nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .exceptions import DataError

if TYPE_CHECKING:
    from .data.dataset import Dataset
    from .hyperparameters import Hyperparameters

__all__ = ["check_training_request", "data_fingerprint", "describe_differences"]

log = logging.getLogger("multilabel_ic")


def check_training_request(hp: Hyperparameters, train: Dataset, validation: Dataset | None, *,
                           check_files: bool = True) -> None:
    """Refuse data that does not fit ``hp``: class count, multi-hot labels for a single-label model, fewer images
    than one batch, mismatched validation classes, missing or empty images."""
    if train.num_classes != hp.num_classes:
        raise DataError(f"the training data has {train.num_classes} classes but num_classes={hp.num_classes} "
                        f"(classes: {', '.join(train.class_names)}): set num_classes={train.num_classes} or fix the "
                        f"class list.")
    if len(train) < hp.mini_batch_size:
        raise DataError(f"The number of input images ({len(train)}) must be bigger or equal to the mini_batch_size "
                        f"({hp.mini_batch_size}): lower mini_batch_size or add training images.")
    for name, data in (("training", train), ("validation", validation)):
        if data is None:
            continue
        if name == "validation" and list(data.class_names) != list(train.class_names):
            raise DataError(f"the validation data's classes {data.class_names} differ from the training data's "
                            f"{train.class_names}: both splits need the same class names in the same order.")
        if not hp.is_multi_label and len(data):
            per_row = data.labels.sum(axis=1)
            multi = np.flatnonzero(per_row != 1)
            if len(multi):
                i = int(multi[0])
                raise DataError(
                    f"multi_label=0 trains a single-label (softmax) model, but {len(multi)} of {len(data)} {name} "
                    f"images have {int(per_row[i])} labels instead of exactly one (e.g. {data.paths[i]}): set "
                    f"multi_label=1 (and use_weighted_loss=1 if you like) for multi-label data.")
        if check_files:
            data.check_images(what=f"{name} data")
    if validation is not None and len(validation) and not validation.labels.any():
        log.warning("the validation data has no positive label at all: mAP and per-class AP are undefined (reported "
                    "as null); only the accuracy is meaningful")


def data_fingerprint(data: Dataset | None) -> str | None:
    """SHA-256 over the ordered (path, labels, file size) records of ``data``: what a training run was trained on."""
    if data is None:
        return None
    h = hashlib.sha256()
    h.update(json.dumps(list(data.class_names)).encode())
    for i, rel in enumerate(data.paths):
        try:
            size = data.image_path(i).stat().st_size
        except OSError:
            size = -1
        h.update(f"{rel}\t{size}\t".encode())
        h.update(np.ascontiguousarray(data.labels[i], dtype=np.uint8).tobytes())
    return h.hexdigest()


def describe_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The names of the fingerprint fields that differ (a field missing on one side counts as different)."""
    return [k for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
