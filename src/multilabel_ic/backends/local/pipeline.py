"""Input pipeline: the run's one DataLoader (persistent workers, one sampler for every epoch) and its device feeder.

Two pipelines give the same samples from the same draws (:func:`~multilabel_ic.model.transforms.draw_train`):

- ``batched`` (the default): images come resized from the decode cache
  (:class:`~multilabel_ic.backends.local.imagestore.ImageStore`); the loader workers draw each sample's parameters and
  cut its source pixels into a uint8 canvas (:func:`~multilabel_ic.backends.local.batch_augment.assemble_batch`);
  :class:`DeviceFeeder` copies the canvas to the device and warps, crops, jitters and mirrors the whole batch there. On
  CUDA it prepares the next batch on a side stream while the current step runs.
- ``reference``: each worker decodes (OpenCV), resizes and augments one image at a time (``train_transform``), as
  ImageRecordIter does; the tests hold ``batched`` to it. It is the fallback where no cache can be written.

Batches stay uint8 on the host (4x less to copy than float32); the network input is float NCHW in 0..255, which is
what the network's ``bn_data`` layer expects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..._parallel import ordered_map, usable_cores
from ...data.dataset import Dataset
from ...images import read_image, resize_shorter
from ...model.network import to_network_input
from ...model.transforms import AugmentOptions, draw_train, eval_transform, train_transform
from .batch_augment import AugmentedBatch, assemble_batch, augment_batch
from .imagestore import decode_resized

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["ImageDataset", "EpochSampler", "BatchAssembler", "DeviceFeeder", "make_loader", "default_workers",
           "epoch_order", "preload_images"]

log = logging.getLogger("multilabel_ic.train")


def default_workers(device: torch.device | None = None, batched: bool = False) -> int:
    """Loader workers when the user sets none: min(8, cores - 1); none for the batched pipeline on a CPU device,
    where the host work is a memory copy (~0.1 ms per image) and a worker process would only take cycles from the
    model's threads (measured in docs/benchmarks.md)."""
    if batched and device is not None and device.type == "cpu":
        return 0
    return max(0, min(8, usable_cores() - 1))


def preload_images(data: Dataset, *, channels: int, resize: int | None, progress: bool = False) -> list[np.ndarray]:
    """The reference pipeline's ``preload``: every image decoded and resized, in memory (decoded on all cores)."""
    from tqdm.auto import tqdm

    images = ordered_map(lambda i: decode_resized(data, i, resize, channels), len(data))
    return list(tqdm(images, total=len(data), desc="decoding", unit="img", disable=not progress, leave=False))


class ImageDataset(torch.utils.data.Dataset):
    """Index -> (uint8 HWC image, float32 labels). ``train=True`` applies the augmentation for the current epoch.

    ``cache`` holds the images already resized (an :class:`ImageStore` or a list). With ``batched=True`` a training
    sample is (resized image, its draws, labels) instead, for :class:`BatchAssembler` to cut into a batch canvas.
    """

    def __init__(self, data: Dataset, hp: Hyperparameters, *, train: bool, seed: int = 0,
                 options: AugmentOptions = AugmentOptions(), cache: Sequence[np.ndarray] | None = None,
                 batched: bool = False):
        self.data, self.hp, self.train, self.seed, self.options, self.cache = data, hp, train, seed, options, cache
        self.batched = batched and train
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
            if self.batched:
                if not resized and hp.resize:
                    img = resize_shorter(img, hp.resize)
                draws = draw_train(rng, img.shape[0], img.shape[1], height=hp.height, width=hp.width,
                                   augmentation_type=hp.augmentation_type, options=self.options, source=src)
                return img, draws, self.data.labels[i]
            img = train_transform(img, height=hp.height, width=hp.width, resize=hp.resize,
                                  augmentation_type=hp.augmentation_type, rng=rng, options=self.options,
                                  source=src, resized=resized)
        else:
            img = eval_transform(img, height=hp.height, width=hp.width, resize=hp.resize, options=self.options,
                                 source=src, resized=resized)
        if not img.flags.writeable:  # a whole image straight from the read-only cache
            img = img.copy()
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


class BatchAssembler:
    """The loader's collate for ``batched`` samples: an :class:`AugmentedBatch` (uint8 canvas and maps)."""

    def __init__(self, height: int, width: int, fill_value: int):
        self.height, self.width, self.fill_value = height, width, fill_value

    def __call__(self, batch) -> AugmentedBatch:
        images, draws, labels = zip(*batch)
        return assemble_batch(images, draws, labels, height=self.height, width=self.width,
                              fill_value=self.fill_value)


class DeviceFeeder:
    """Iterates a loader and yields ``(x, y)`` on the device: float32 NCHW network input (0..255) and labels.

    An :class:`AugmentedBatch` is augmented on the device; a uint8 NHWC batch (the reference pipeline, validation)
    is only converted. On CUDA the next batch is copied and augmented on a side stream while the caller's step runs
    (pinned memory, non-blocking copies); nothing here waits for the device.
    """

    def __init__(self, loader: DataLoader, device: torch.device, *, height: int, width: int, fill_value: int,
                 channels_last: bool = False):
        self.loader, self.device = loader, device
        self.height, self.width, self.fill_value, self.channels_last = height, width, fill_value, channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def prepare(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, AugmentedBatch):
            x = augment_batch(batch, self.device, height=self.height, width=self.width,
                              fill_value=self.fill_value, channels_last=self.channels_last)
            return x, batch.labels.to(self.device, non_blocking=True)
        images, labels = batch
        return (to_network_input(images, self.device, channels_last=self.channels_last),
                labels.to(self.device, non_blocking=True))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self.prepare(batch)
            return
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)

        def launch(batch):
            with torch.cuda.stream(side):
                return self.prepare(batch)

        batches = iter(self.loader)
        try:
            ready = launch(next(batches))
        except StopIteration:
            return
        def hand_over(tensors):
            main.wait_stream(side)
            for t in tensors:
                t.record_stream(main)  # the caching allocator must not reuse it before the step is done
            return tensors

        for batch in batches:
            current = hand_over(ready)
            ready = launch(batch)  # queued on the side stream before the caller queues its step
            yield current
        yield hand_over(ready)


def make_loader(ds: ImageDataset, *, batch_sampler=None, batch_size: int | None = None, num_workers: int,
                pin_memory: bool = False, persistent: bool = False) -> DataLoader:
    """A DataLoader of uint8 batches; ``persistent`` keeps its workers between epochs (one loader per run)."""
    collate = (BatchAssembler(ds.hp.height, ds.hp.width, ds.options.fill_value) if ds.batched else _collate)
    kwargs: dict[str, Any] = dict(num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory)
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent, prefetch_factor=4)
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=False, **kwargs)

