"""The one home of the training augmentation's paths: what each ``augmentation_type`` does, and where each engine
does it. Framework-free.

- the draws: :func:`multilabel_ic.model.transforms.draw_train` (per sample, seeded per (seed, epoch, sample)), from
  the levels of :data:`~multilabel_ic.model.transforms.AUG_LEVELS` (MXNet ``data.set_data_aug_level``);
- the reference path (``input_pipeline="reference"``, and the predictor's validation transform): OpenCV per image on
  the loader workers, :func:`multilabel_ic.model.transforms.apply_train_draws`;
- the batched path (``input_pipeline="batched"``, the default): the same draws applied to a batch on the device,
  :mod:`multilabel_ic.backends.local.batch_augment` (held to the reference by tests/test_batch_augment.py);
- the Gluon engine: MXNet's ``ImageRecordIter`` draws and applies its own, with :func:`record_iter_params`.

Adding an augmentation: docs/extending.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...exceptions import UsageError
from ...model.transforms import AUG_LEVELS, MAX_ASPECT, MAX_H, MAX_L, MAX_ROTATE, MAX_S, MAX_SHEAR

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters
    from ...model.transforms import AugmentOptions

__all__ = ["PATHS", "record_iter_params", "check_gluon_augment"]

# input_pipeline -> the module and function that apply a batch's draws
PATHS = {"reference": "multilabel_ic.model.transforms.apply_train_draws",
         "batched": "multilabel_ic.backends.local.batch_augment.augment_batch"}


def record_iter_params(hp: Hyperparameters, augment: AugmentOptions) -> dict[str, Any]:
    """ImageRecordIter's augmentation parameters for the run's augmentation_type (MXNet data.set_data_aug_level)."""
    level = AUG_LEVELS[hp.augmentation_type]
    params: dict[str, Any] = {"rand_crop": level >= 1, "rand_mirror": level >= 1}
    if level >= 2:
        params.update(random_h=MAX_H, random_s=MAX_S, random_l=MAX_L)
    if level >= 3:
        params.update(max_rotate_angle=MAX_ROTATE, max_shear_ratio=MAX_SHEAR, max_aspect_ratio=MAX_ASPECT,
                      fill_value=augment.fill_value)
    return params


def check_gluon_augment(augment: AugmentOptions) -> None:
    """What MXNet's ImageRecordIter cannot do of the PyTorch engine's open choices."""
    if augment.hsl_jitter != "approx_gaussian":
        raise UsageError("the Gluon engine draws HLS jitter as MXNet 1.9.1 does (approx_gaussian): "
                         "hsl_jitter='uniform' is a PyTorch-engine option.")
