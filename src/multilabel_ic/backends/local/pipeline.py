"""Input pipeline: decode (OpenCV) -> resize -> augment on loader workers, uint8 batches, float conversion on device.

Images stay uint8 HWC on the host (4x less to copy than float32); :func:`~multilabel_ic.model.network.to_network_input` turns a batch into float NCHW in
0..255 on the accelerator, which is what the network's ``bn_data`` layer expects. With ``preload`` the decoded and
resized images are kept in memory: the resize is deterministic and comes first in the pipeline, so this changes no
result and saves the decode of every epoch after the first.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ...data.dataset import Dataset
from ...images import read_image, resize_shorter
from ...model.transforms import AugmentOptions, eval_transform, train_transform

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["ImageDataset", "EpochSampler", "make_loader", "default_workers", "epoch_order",
           "preload_images"]

log = logging.getLogger("multilabel_ic.train")


def default_workers() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, n - 1))


def preload_images(data: Dataset, *, channels: int, resize: int | None, progress: bool = False) -> list[np.ndarray]:
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(len(data)), desc="decoding", unit="img", disable=not progress, leave=False):
        img = read_image(data.image_path(i), channels=channels)
        out.append(resize_shorter(img, resize) if resize else img)
    return out


class ImageDataset(torch.utils.data.Dataset):
    """Index -> (uint8 HWC image, float32 labels). ``train=True`` applies the augmentation for the current epoch."""

    def __init__(self, data: Dataset, hp: Hyperparameters, *, train: bool, seed: int = 0,
                 options: AugmentOptions = AugmentOptions(), cache: list[np.ndarray] | None = None):
        self.data, self.hp, self.train, self.seed, self.options, self.cache = data, hp, train, seed, options, cache
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key):
        # the sampler sends (epoch, position, index) so augmentation draws depend on them alone
        epoch, position, i = key if isinstance(key, tuple) else (self.epoch, key, key)
        hp = self.hp
        if self.cache is not None:
            img, resized = self.cache[i], True
        else:
            img, resized = read_image(self.data.image_path(i), channels=hp.channels), False
        src = str(self.data.image_path(i))
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, position])
            img = train_transform(img, height=hp.height, width=hp.width, resize=hp.resize,
                                  augmentation_type=hp.augmentation_type, rng=rng, options=self.options,
                                  source=src, resized=resized)
        else:
            img = eval_transform(img, height=hp.height, width=hp.width, resize=hp.resize, options=self.options,
                                 source=src, resized=resized)
        return torch.from_numpy(img), torch.from_numpy(self.data.labels[i].astype(np.float32))


def epoch_order(n: int, batches: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Sample indices of one training epoch: reshuffled passes over the data, cut at batches*batch_size.

    This is ``ResizeIter(train, num_training_samples // batch_size)`` over a shuffling iterator that restarts at each
    epoch: a num_training_samples smaller than the data leaves some images out of an epoch, a larger one repeats some.
    """
    need = batches * batch_size
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    parts, have = [], 0
    while have < need:
        parts.append(rng.permutation(n))
        have += n
    return np.concatenate(parts)[:need]


class EpochSampler(Sampler):
    """Yields batches of (epoch, position, index) keys for one epoch, starting at a given batch (for resume).

    One sampler serves a whole run: :meth:`set_epoch` gives it the next epoch's order, so the DataLoader (and its
    persistent workers) is made once. With ``shard=(rank, world)`` each global batch of ``batch_size x world``
    positions is split: this process takes slice ``rank`` (positions stay global, so the augmentation draws are
    those of a one-process run)."""

    def __init__(self, order: np.ndarray, batch_size: int, epoch: int, start_batch: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.order, self.batch_size, self.epoch, self.start_batch = order, batch_size, epoch, start_batch
        self.rank, self.world = shard

    def set_epoch(self, order: np.ndarray, epoch: int, start_batch: int = 0) -> None:
        self.order, self.epoch, self.start_batch = order, epoch, start_batch

    def __len__(self) -> int:
        return len(self.order) // (self.batch_size * self.world) - self.start_batch

    def __iter__(self):
        bs = self.batch_size
        step = bs * self.world
        for b in range(self.start_batch, len(self.order) // step):
            first = b * step + self.rank * bs
            yield [(self.epoch, first + k, int(self.order[first + k])) for k in range(bs)]


def _collate(batch):
    imgs, labels = zip(*batch)
    return torch.stack(imgs), torch.stack(labels)


def make_loader(ds: ImageDataset, *, batch_sampler=None, batch_size: int | None = None, num_workers: int,
                pin_memory: bool = False, persistent: bool = False) -> DataLoader:
    """A DataLoader of uint8 batches; ``persistent`` keeps its workers between epochs (one loader per run)."""
    kwargs: dict[str, Any] = dict(num_workers=num_workers, collate_fn=_collate, pin_memory=pin_memory)
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent, prefetch_factor=4)
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=False, **kwargs)

