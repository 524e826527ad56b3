"""The PyTorch engine (engine.Engine): the network, optimizer, loss and input pipeline of a run on a CUDA GPU or
the CPU, its epochs and validation passes (epoch.py), and its resume state in ``checkpoints/last.pt``."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..._io import atomic_serialize, json_default
from ..._read import GiB, open_bounded
from ...exceptions import RunConflictError
from ...model.network import ResNetV2, create_network, load_mxnet_state_dict, mxnet_state_dict
from .device import Precision, check_compiler, precision_for, select_device
from .distributed import Distributed
from .epoch import predict_scores, run_epoch
from .imagestore import ImageStore
from .loss import create_loss
from .optim import MultiFactorSchedule, create_optimizer
from .pipeline import DeviceFeeder, EpochSampler, ImageDataset, default_workers, make_loader, preload_images
from .pretrained import load_pretrained
from .run import RESTART_HINT, refuse_other_run
from .runfolder import STATE_FILES, CurrentParams

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions
    from .engine import Params

__all__ = ["TorchEngine", "CHECKPOINT_FORMAT", "load_checkpoint", "torch_params", "check_compiler"]

log = logging.getLogger("multilabel_ic.train")
CHECKPOINT_FORMAT = "multilabel-ic/checkpoint-v2"  # tensors and plain types only, loaded with weights_only=True
CHECKPOINT_LIMIT = 16 * GiB  # the largest checkpoints/last.pt resumed from (a ResNet-152 with its optimizer: ~0.7 GB)


class TorchEngine:
    """A run's PyTorch side on ``device`` (this process's, under torchrun); ``stores``: the decode caches of the
    batched input pipeline, prepared before the folder was claimed (None: the reference pipeline)."""

    name = "pytorch"
    state_file = STATE_FILES[0]
    prepares_images = True  # the decode caches of the batched pipeline (train.py builds them before the claim)

    @classmethod
    def open(cls, hp: Hyperparameters, options: LocalOptions, dist: Distributed) -> torch.device:
        """This process's device (CUDA device local_rank under torchrun)."""
        return dist.local_device(select_device(options.device))

    def __init__(self, hp: Hyperparameters, options: LocalOptions, device: torch.device, dist: Distributed,
                 stores: tuple[ImageStore | None, ImageStore | None] = (None, None)):
        self.hp, self.options, self.device, self.dist, self.stores = hp, options, device, dist, stores
        self.model: ResNetV2
        self.val_loader: DataLoader | None = None

    def check_state(self, path: Path, fingerprint: dict) -> None:
        load_checkpoint(path, torch.device("cpu"), fingerprint)

    def build_network(self, pretrained: Path | None) -> None:
        hp, options = self.hp, self.options
        torch.manual_seed(options.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # cuDNN autotuning, as the algorithm's MXNet build does
        self.precision: Precision = precision_for(hp, self.device, options)
        model: Any = self.precision.place(create_network(hp))
        if pretrained is not None:
            load_pretrained(model, pretrained, progress=options.progress)
        if options.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if options.compile:
            log.info("compile=True: torch.compile compiles the network at the first training step and again at the "
                     "first validation pass (up to minutes on a CPU)")
            model.compile()  # in place: parameter names, checkpoints and DDP see the same module
        self.model = model

    def build_optimizer(self, weights: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.optimizer = create_optimizer(self.model, self.hp)
        self.scaler = self.precision.scaler()
        # begin_epoch stays 0 on a resume: the schedule is a function of the absolute update count, which the
        # checkpoint restores (state["num_update"]), so a resumed run steps the learning rate at the same updates as
        # an unbroken one
        self.schedule = MultiFactorSchedule.from_hyperparameters(self.hp, begin_epoch=0, num_workers=self.dist.hosts)
        on_device = None if weights is None else (torch.from_numpy(weights[0]).to(self.device),
                                                  torch.from_numpy(weights[1]).to(self.device))
        self.criterion = create_loss(self.hp, self.options, on_device)

    def load_state(self, path: Path, fingerprint: dict) -> dict:
        ck = load_checkpoint(path, self.device, fingerprint)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["torch_rng"])
        return json.loads(ck["state"])

    def save_state(self, path: Path, state: dict, fingerprint: dict) -> None:
        """Tensors and plain types only, so that :func:`load_checkpoint` can refuse anything else."""
        payload = {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                   "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                   "torch_rng": torch.get_rng_state(), "state": json.dumps(state, default=json_default),
                   "fingerprint": json.dumps(fingerprint)}
        # a full disk inside torch's serializer surfaces as its RuntimeError ("unexpected pos"): atomic_serialize
        # names the disk, the checkpoint's size and the fix instead, and leaves no half-written file
        atomic_serialize(path, lambda fh: torch.save(payload, fh), size=_payload_bytes(payload))

    def prepare_data(self, train: Dataset, validation: Dataset | None, out: Path) -> int:
        hp, dist, device = self.hp, self.dist, self.device
        log.info("resize=%s -> %s crop %dx%d, augmentation_type=%s, %d batches of %d per epoch, device=%s",
                 hp.resize, "random" if hp.augmentation_type else "centre", hp.width, hp.height,
                 hp.augmentation_type, dist.batches_per_epoch(hp), hp.mini_batch_size, device)
        train_loader, self.val_loader, self.val_rows, workers = _loaders(hp, train, validation, self.stores,
                                                                         self.options, device, dist)
        self.feeder = DeviceFeeder(train_loader, device, height=hp.height, width=hp.width,
                                   fill_value=self.options.augment.fill_value,
                                   channels_last=self.precision.channels_last)
        # per-process BatchNorm statistics during an epoch, as MXNet's devices keep them (averaged at its end)
        self.train_model = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)
            if dist.enabled else self.model)
        self.model.train()
        return workers

    def train_epoch(self, epoch: int, state: dict) -> dict:
        record = run_epoch(self.hp, self.train_model, self.optimizer, self.scaler, self.schedule, self.feeder,
                           criterion=self.criterion, precision=self.precision, epoch=epoch, state=state,
                           options=self.options, dist=self.dist)
        self.dist.average_buffers(self.model)  # MXNet's fit syncs the devices' aux params after every epoch
        return record

    def score(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.val_loader is not None
        return _validation_scores(self.model, self.val_loader, self.val_rows, self.dist, self.precision)

    def current_params(self) -> Params:
        return torch_params(self.model)()

    def set_params(self, params: Params, *, source: str) -> None:
        args, aux = params
        load_mxnet_state_dict(self.model, {k: torch.from_numpy(v) for k, v in {**args, **aux}.items()})

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "device_name": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda" else "cpu"}

    def close(self) -> None:
        pass


def _loaders(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None,
             stores: tuple[ImageStore | None, ImageStore | None], options: LocalOptions, device: torch.device,
             dist: Distributed) -> tuple[DataLoader, DataLoader | None, np.ndarray | None, int]:
    """The run's training loader (batched pipeline over the decode cache ``stores``, or the reference pipeline), its
    validation loader, this process's share of the validation rows (rank, rank + world, ...; the scores are
    gathered) and the number of loader workers."""
    val_rows = np.arange(dist.rank, len(validation), dist.world_size) if validation is not None else None
    val_part = validation.subset(val_rows) if validation is not None and val_rows is not None and dist.enabled \
        else validation
    train_images: Sequence[np.ndarray] | None = None
    val_images: Sequence[np.ndarray] | None = None
    batched = options.input_pipeline == "batched"
    if batched:
        train_images, val_store = stores
        val_images = (val_store.subset(val_rows, val_part) if val_store is not None and val_rows is not None
                      and dist.enabled else val_store)
        batched = train_images is not None
        if not batched:
            log.warning("input pipeline: the reference (OpenCV per image on the loader workers) without a cache")
    else:
        est = len(train_data) * (hp.resize or 480) ** 2 * 1.5 * hp.channels
        preload = options.preload if options.preload is not None else est < 2 * 1024 ** 3
        if preload:
            train_images = preload_images(train_data, channels=hp.channels, resize=hp.resize,
                                          progress=options.progress)
            val_images = (preload_images(val_part, channels=hp.channels, resize=hp.resize, progress=options.progress)
                          if val_part is not None else None)
    workers = default_workers(device, batched) if options.num_workers is None else options.num_workers
    log.info("input pipeline: %s, %d loader workers", "decode cache -> batched augmentation on " + device.type
             if batched else "reference (OpenCV decode + augmentation per image on the loader workers)", workers)
    train_ds = ImageDataset(train_data, hp, train=True, seed=options.seed, options=options.augment,
                            cache=train_images, batched=batched)
    pin = device.type == "cuda"
    sampler = EpochSampler(np.zeros(0, np.int64), dist.batch_per_process(hp), 0, shard=(dist.rank, dist.world_size))
    train_loader = make_loader(train_ds, batch_sampler=sampler, num_workers=workers, pin_memory=pin, persistent=True)
    val_loader = None
    if val_part is not None:
        val_ds = ImageDataset(val_part, hp, train=False, options=options.augment, cache=val_images)
        val_loader = make_loader(val_ds, batch_size=hp.mini_batch_size, num_workers=workers, pin_memory=pin,
                                 persistent=True)
    return train_loader, val_loader, val_rows, workers


def _validation_scores(model: ResNetV2, loader: DataLoader, rows: np.ndarray | None, dist: Distributed,
                       precision: Precision) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the whole validation set in its order: this process's share, gathered from all."""
    assert rows is not None
    scores, labels = predict_scores(model, loader, precision)
    return dist.gather_rows(rows, labels), dist.gather_rows(rows, scores)


def torch_params(model: ResNetV2) -> CurrentParams:
    def current():
        args, aux = mxnet_state_dict(model)
        return ({k: v.numpy().copy() for k, v in args.items()}, {k: v.numpy().copy() for k, v in aux.items()})
    return current


def _payload_bytes(obj: Any) -> int:
    """The bytes a checkpoint payload takes when saved (its tensors, strings and a little for the container)."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return 64 + sum(_payload_bytes(k) + _payload_bytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return 64 + sum(_payload_bytes(v) for v in obj)
    if isinstance(obj, (str, bytes)):
        return len(obj)
    return 16


def load_checkpoint(path: Path, device: torch.device, fingerprint: dict) -> dict:
    """Load ``checkpoints/last.pt`` without unpickling code, and refuse a run of other data or settings."""
    try:
        # a regular file of bounded size: a FIFO or a device in its place is refused, not waited on or read forever
        with open_bounded(path, limit=CHECKPOINT_LIMIT, what="checkpoint", error=RunConflictError) as fh:
            ck = torch.load(fh, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise RunConflictError(f"{path}: not a checkpoint this version of multilabel_ic can resume from (it holds "
                               f"objects other than tensors and plain values, or it is damaged): {RESTART_HINT}.") \
            from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise RunConflictError(f"{path}: not a checkpoint of this version of multilabel_ic: {RESTART_HINT}.")
    try:
        recorded = json.loads(ck["fingerprint"])
        state = json.loads(ck["state"])
        if not isinstance(recorded, dict) or not isinstance(state, dict) or \
                not all(isinstance(state.get(k), list) for k in ("history", "saved")) or \
                not isinstance(state.get("epoch"), int):
            raise ValueError("fingerprint or state of the wrong type")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunConflictError(f"{path}: a damaged checkpoint (its run state cannot be read: {exc}); "
                               f"{RESTART_HINT}.") from None
    refuse_other_run(path, recorded, fingerprint)
    return ck
