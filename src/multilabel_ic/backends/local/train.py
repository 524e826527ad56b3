"""The local training loop: the algorithm's epoch structure, log lines, checkpoints and early stopping, in PyTorch.

State after every epoch goes to ``<output>/checkpoints/last.pt`` (atomically), so an interrupted run resumes from its
last finished epoch. Parameters in the algorithm's format go to ``<output>/model/`` and finally ``model.tar.gz``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..._io import atomic_serialize, ensure_dir, json_default, remove_stale_temp_files
from ..._lock import FolderLock
from ..._read import GiB, open_bounded
from ...callbacks import Callback, CallbackList, RunInfo, default_callbacks
from ...data.dataset import Dataset
from ...exceptions import RunConflictError, TrainingError, UsageError
from ...local_options import LocalOptions
from ...model.network import ResNetV2, create_network, mxnet_state_dict
from ...preflight import check_training_request, data_fingerprint, describe_differences
from ..base import final_metrics
from .distributed import Distributed
from .epoch import predict_scores, run_epoch
from .epochlog import validation_record
from .imagesizes import check_headers
from .imagestore import ImageStore
from .loss import class_weights, weighted_bce
from .optim import MultiFactorSchedule, create_optimizer
from .pipeline import DeviceFeeder, EpochSampler, ImageDataset, default_workers, make_loader, preload_images
from .pretrained import load_pretrained, resolve_pretrained
from .runfolder import (
    CurrentParams,
    SavedParams,
    claim_folder,
    clear_previous_run,
    remove_if_only_the_marker,
    run_epochs,
    saved_checkpoints,
    shipped_final,
    write_artifact,
    write_results,
)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters

__all__ = ["LocalOptions", "train", "precision_for", "class_weights", "weighted_bce", "select_device", "run_fingerprint",
           "CHECKPOINT_FORMAT", "check_launch"]

log = logging.getLogger("multilabel_ic.train")
CHECKPOINT_FORMAT = "multilabel-ic/checkpoint-v2"  # tensors and plain types only, loaded with weights_only=True
CHECKPOINT_LIMIT = 16 * GiB  # the largest checkpoints/last.pt resumed from (a ResNet-152 with its optimizer: ~0.7 GB)


def select_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device {name!r} is not a device name: use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use device='cpu'.")
    return dev


def check_launch(hp: Hyperparameters, train_data: Dataset | None, validation: Dataset | None,
                 options: LocalOptions, *, device: str | None, processes: int) -> None:
    """Before torchrun starts ``processes`` processes of a run: what each of them would refuse (the data against the
    hyperparameters, the engine, the device, SyncBatchNorm, the compiler, a batch that does not split), checked
    once here, so a mistake is one error and not one per process."""
    if train_data is not None:
        check_training_request(hp, train_data, validation)
    if options.engine == "gluon":
        raise UsageError("the Gluon engine trains in one process: run it without torchrun (--nproc-per-node).")
    chosen = select_device(device if device is not None else options.device)
    if options.sync_batchnorm and (processes < 2 or chosen.type != "cuda"):
        raise UsageError("sync_batchnorm=True applies to a distributed run on CUDA devices (PyTorch's SyncBatchNorm "
                         "is GPU-only): launch with --nproc-per-node N on a GPU machine, or drop it.")
    if options.compile:
        check_compiler(chosen)
    if hp.mini_batch_size % processes:
        raise UsageError(f"mini_batch_size={hp.mini_batch_size} is split across the {processes} processes of a host: "
                         f"make it a multiple of {processes} (or change --nproc-per-node).")


def _state_path(out: Path) -> Path:
    return out / "checkpoints" / "last.pt"


def check_compiler(device: torch.device) -> None:
    """``compile=True`` needs what inductor generates code with: a C++ compiler for CPU kernels, Triton for CUDA."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise UsageError("compile=True on CUDA needs Triton (pip install triton; PyTorch's Linux CUDA wheels "
                             "bring it), or train without compile.")
    elif not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "clang++", "c++"))):
        raise UsageError("compile=True on the CPU needs a C++ compiler for torch.compile's kernels (install g++, "
                         "or set CXX), or train without compile.")


def precision_for(hp: Hyperparameters, device: torch.device, options: LocalOptions) -> tuple[torch.dtype | None,
                  bool]:
    """(autocast dtype or None, whether to scale the loss) for ``precision_dtype`` on ``device``."""
    if hp.precision_dtype != "float16":
        return None, False
    if device.type == "cuda":
        if options.cuda_half == "bfloat16":
            log.info("precision_dtype=float16: bfloat16 autocast with float32 master weights (cuda_half='bfloat16')")
            return torch.bfloat16, False
        log.info("precision_dtype=float16: mixed precision (float16 autocast, float32 master weights, loss scaling)")
        return torch.float16, True
    if options.cpu_float16 == "bfloat16":
        log.info("precision_dtype=float16 on CPU: using bfloat16 autocast (CPUs lack fast float16)")
        return torch.bfloat16, False
    log.info("precision_dtype=float16 on CPU: training in float32 (cpu_float16='float32')")
    return None, False


def run_fingerprint(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None,
                    options: LocalOptions, dist: Distributed = Distributed(), cache: dict | None = None) -> dict:
    """What a run is trained on and with: a resume must find every field equal, or it would ship another model.

    ``cache``: the decode cache's encoding of each split (:func:`cache_encodings`). It is recorded when a split is
    cached as JPEG, whose pixels differ from the files'; a raw cache and no cache give the same pixels."""
    fingerprint = {
        "training data": data_fingerprint(train_data), "validation data": data_fingerprint(validation),
        "class names": list(train_data.class_names), "seed": options.seed, "hyperparameters": hp.to_dict(),
        "weighted_loss": options.weighted_loss,
        "bce_reduction": options.bce_reduction, "augment": asdict(options.augment),
        "engine": options.engine, "input_pipeline": options.input_pipeline,
        "processes": [dist.hosts, dist.local_world_size],
        "sync_batchnorm": options.sync_batchnorm, "cpu_float16": options.cpu_float16, "cuda_half": options.cuda_half,
        "pretrained": None if not hp.use_pretrained_model else [options.pretrained, options.pretrained_sha256]}
    if cache and "jpeg" in cache.values():
        fingerprint["decode cache"] = cache
    return json.loads(json.dumps(fingerprint))  # the form it has when read back from a checkpoint


def train(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, output_dir: str | os.PathLike,
          options: LocalOptions = LocalOptions(), callbacks: Sequence[Callback] = ()) -> dict:
    """Train as the built-in algorithm does; return the metrics dict (also written to ``metrics.json``).

    Everything that can be checked is checked before the output folder is touched. The folder is locked for the
    run (a second run into it is refused), and a run already in it is resumed only when it was trained on the same
    data, classes, seed, hyperparameters and options (``options.restart`` starts afresh instead).
    """
    dist = Distributed.from_environment()
    try:
        return _train(hp, train_data, validation, Path(output_dir), options, callbacks, dist)
    finally:
        dist.stop()  # a process that leaves with its group still open aborts (and so ends its peers' run)


def _train(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path, options: LocalOptions,
           callbacks: Sequence[Callback], dist: Distributed) -> dict:
    check_training_request(hp, train_data, validation)
    run: Callable[..., dict]
    device: Any
    if options.engine == "gluon":
        if dist.enabled:
            raise UsageError("the Gluon engine trains in one process: run it without torchrun (--nproc-per-node).")
        from . import gluon

        device, run = gluon.select_context(options.device), gluon.train_locked
    else:
        device, run = dist.local_device(select_device(options.device)), _train_locked
    if options.sync_batchnorm and (not dist.enabled or device.type != "cuda"):
        raise UsageError("sync_batchnorm=True applies to a distributed run on CUDA devices (PyTorch's SyncBatchNorm "
                         "is GPU-only): launch with --nproc-per-node N on a GPU machine, or drop it.")
    if options.compile:
        check_compiler(device)
    if dist.enabled:
        dist.batch_per_process(hp), dist.batches_per_epoch(hp)  # refuse a batch that does not split, first
        dist.start(device)
        if not dist.is_main:
            logging.getLogger("multilabel_ic").setLevel(logging.WARNING)  # one process speaks for the run
            options = dataclasses.replace(options, progress=False)
        log.info("distributed: %d processes on %d host(s), %d images per process per step, %d steps per epoch",
                 dist.world_size, dist.hosts, dist.batch_per_process(hp), dist.batches_per_epoch(hp))
    if hp.num_training_samples != len(train_data):
        log.warning("num_training_samples=%d but the training data has %d images: each epoch runs %d batches "
                    "(num_training_samples // mini_batch_size) and the LR schedule counts from it",
                    hp.num_training_samples, len(train_data), hp.batches_per_epoch)
    if hp.kv_store and not dist.enabled:
        log.warning("kv_store=%s has no effect on a single machine", hp.kv_store)
    if not dist.is_main:  # process 0 prepares the folder; the others learn how that went
        status = dist.broadcast(None)
        if not status["ok"]:
            raise TrainingError(f"process 0 stopped before training: {status['error']}")
        pretrained = Path(status["pretrained"]) if status["pretrained"] else None
        if options.engine == "pytorch":
            run = functools.partial(_train_locked,
                                    stores=_open_stores(status["stores"], hp, train_data, validation))
        fingerprint = run_fingerprint(hp, train_data, validation, options, dist, cache=status["cache"])
        return run(hp, train_data, validation, out, options, device, fingerprint, pretrained, CallbackList([]),
                   dist)
    fingerprint = run_fingerprint(hp, train_data, validation, options, dist)
    created = not out.exists()
    ensure_dir(out)
    try:
        with FolderLock(out):
            try:
                pretrained = (resolve_pretrained(hp.num_layers, options.pretrained, sha256=options.pretrained_sha256,
                                                 progress=options.progress) if hp.use_pretrained_model else None)
                for stale in remove_stale_temp_files(out, out / "model", out / "checkpoints"):
                    log.info("removed %s, left by an interrupted run", stale)
                if options.restart:
                    clear_previous_run(out)
                stores: tuple[ImageStore | None, ImageStore | None] = (None, None)
                if options.engine == "pytorch":
                    # the images are decoded (and checked) before the folder is claimed: the cache's encoding is
                    # part of the run's fingerprint, and an image that cannot train stops the run here
                    stores = _prepare_images(hp, train_data, validation, out, options)
                    fingerprint = run_fingerprint(hp, train_data, validation, options, dist,
                                                  cache=cache_encodings(*stores))
                    _check_or_claim(out, options, fingerprint)
                    run = functools.partial(_train_locked, stores=stores)
            except BaseException as exc:
                dist.broadcast({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                raise
            dist.broadcast({"ok": True, "pretrained": str(pretrained) if pretrained else None,
                            "stores": [None if s is None else [str(s.path.parent), s.path.stem, s.encoding]
                                       for s in stores], "cache": cache_encodings(*stores)})
            return run(hp, train_data, validation, out, options, device, fingerprint, pretrained,
                       CallbackList([*default_callbacks(), *callbacks]), dist)
    except Exception:
        if created:
            remove_if_only_the_marker(out)  # a run that failed before its first checkpoint leaves no folder
        raise


def cache_encodings(train_store: ImageStore | None, val_store: ImageStore | None) -> dict:
    """Each split's decode cache encoding ("raw", "jpeg", or None: decoded from the files every epoch)."""
    return {"training images": train_store.encoding if train_store is not None else None,
            "validation images": val_store.encoding if val_store is not None else None}


def _prepare_images(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path,
                    options: LocalOptions) -> tuple[ImageStore | None, ImageStore | None]:
    """Process 0, before the folder is claimed: the decode caches of the batched pipeline (built or opened), and
    every image checked against image_shape (from the caches, or from the files' headers without one)."""
    min_size = (hp.height, hp.width) if options.augment.small_image == "error" else None
    stores: list[ImageStore | None] = [None, None]
    splits = ((train_data, "training images"), (validation, "validation images"))
    if options.input_pipeline == "batched":
        folder = Path(options.cache_dir) if options.cache_dir else out / "cache"
        for k, (data, what) in enumerate(splits):
            if data is not None:
                stores[k] = ImageStore.build(data, folder, resize=hp.resize, channels=hp.channels, what=what,
                                             progress=options.progress, max_bytes=int(options.cache_max_gb * 1e9),
                                             min_size=min_size)
    if min_size is not None:
        for (data, what), store in zip(splits, stores):
            if data is not None and store is None:
                check_headers(data, height=hp.height, width=hp.width, resize=hp.resize, what=what)
    return stores[0], stores[1]


def _open_stores(described: list, hp: Hyperparameters, train_data: Dataset,
                 validation: Dataset | None) -> tuple[ImageStore | None, ImageStore | None]:
    """The other processes: the stores process 0 prepared, opened from their (folder, key, encoding); on another
    host, whose cache folder is its own, built there in the encoding process 0 chose."""
    opened: list[ImageStore | None] = []
    for entry, data, what in zip(described, (train_data, validation), ("training images", "validation images")):
        store = None
        if entry is not None and data is not None:
            folder, key, encoding = entry
            store = ImageStore.open(Path(folder), key, encoding=encoding, count=len(data), resize=hp.resize,
                                    channels=hp.channels, source=(data, hp.resize, hp.channels))
            if store is None:
                store = ImageStore.build(data, Path(folder), resize=hp.resize, channels=hp.channels, what=what,
                                         encoding=encoding)
        opened.append(store)
    return opened[0], opened[1]


def _check_or_claim(out: Path, options: LocalOptions, fingerprint: dict) -> None:
    """Before any process trains: a run in ``out`` must be this one (then it resumes), or the folder is claimed."""
    sp = _state_path(out)
    if sp.exists():
        if not options.resume:
            raise RunConflictError(f"{out} holds a run (checkpoints/last.pt) and resume=False: pass restart=True "
                                   f"(CLI: --restart) to replace it, or choose another output folder.")
        _load_state(sp, torch.device("cpu"), fingerprint)  # refuses a run of other data or settings
    else:
        claim_folder(out, fingerprint)


def _train_locked(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path,
                  options: LocalOptions, device: torch.device, fingerprint: dict, pretrained: Path | None,
                  callbacks: CallbackList, dist: Distributed = Distributed(),
                  stores: tuple[ImageStore | None, ImageStore | None] = (None, None)) -> dict:
    torch.manual_seed(options.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # cuDNN autotuning, as the algorithm's MXNet build does
    amp_dtype, use_scaler = precision_for(hp, device, options)
    channels_last = options.channels_last  # on the CPU too: oneDNN convolutions are ~10% faster in NHWC
    model = create_network(hp).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if pretrained is not None:
        load_pretrained(model, pretrained, progress=options.progress)
    if options.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if options.compile:
        log.info("compile=True: torch.compile compiles the network at the first training step and again at the "
                 "first validation pass (up to minutes on a CPU)")
        model.compile()  # in place: parameter names, checkpoints and DDP see the same module
    optimizer = create_optimizer(model, hp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    # begin_epoch stays 0 on a resume: the schedule is a function of the absolute update count, which the checkpoint
    # restores (state["num_update"]), so a resumed run steps the learning rate at the same updates as an unbroken one
    schedule = MultiFactorSchedule.from_hyperparameters(hp, begin_epoch=0, num_workers=dist.hosts)
    w_pos = w_neg = None
    if hp.use_weighted_loss:
        wp, wn = class_weights(train_data.labels, options.weighted_loss)
        w_pos, w_neg = torch.from_numpy(wp).to(device), torch.from_numpy(wn).to(device)
        log.info("weighted loss (%s): positive weights %s", options.weighted_loss, np.round(wp, 3).tolist())

    state: dict[str, Any] = {"epoch": 0, "num_update": 0, "history": [], "best_acc": None, "best_epoch": None, "es_bad": 0,
             "saved": []}
    sp = _state_path(out)
    if sp.exists():  # checked (and the folder claimed otherwise) by _check_or_claim before training
        ck = _load_state(sp, device, fingerprint)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["torch_rng"])
        state = json.loads(ck["state"])
        log.info("resuming from %s: %d of %d epochs done", sp, state["epoch"], hp.epochs)

    log.info("resize=%s -> %s crop %dx%d, augmentation_type=%s, %d batches of %d per epoch, device=%s",
             hp.resize, "random" if hp.augmentation_type else "centre", hp.width, hp.height, hp.augmentation_type,
             dist.batches_per_epoch(hp), hp.mini_batch_size, device)
    train_loader, val_loader, val_rows, workers = _loaders(hp, train_data, validation, stores, options, device,
                                                           dist)
    feeder = DeviceFeeder(train_loader, device, height=hp.height, width=hp.width,
                          fill_value=options.augment.fill_value, channels_last=channels_last)
    # per-process BatchNorm statistics during an epoch, as MXNet's devices keep them (averaged at its end)
    train_model = (torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)
        if dist.enabled else model)
    model.train()
    kept: SavedParams = {}
    settings = {k: v for k, v in fingerprint.items() if k not in ("training data", "validation data", "hyperparameters")}
    callbacks.on_train_start(RunInfo(output_dir=out, backend="local", hyperparameters=hp.to_sagemaker(
        include_defaults=True), class_names=list(train_data.class_names), history=list(state["history"]),
        settings={**settings, "device": str(device), "num_workers": workers}))
    def train_epoch(epoch: int) -> dict:
        record = run_epoch(hp, train_model, optimizer, scaler, schedule, feeder, device=device, amp_dtype=amp_dtype,
                           w_pos=w_pos, w_neg=w_neg, epoch=epoch, state=state, options=options, dist=dist)
        dist.average_buffers(model)  # MXNet's fit syncs the devices' aux params after every epoch
        return record

    def validate(epoch: int) -> dict:
        assert validation is not None and val_loader is not None and val_rows is not None
        labels, scores = _validation_scores(model, val_loader, val_rows, dist, device, amp_dtype, channels_last)
        return validation_record(hp, labels, scores, validation.class_names, epoch)

    stopped_early = run_epochs(hp, out, state, kept, state_path=sp, train_epoch=train_epoch,
                               validate=validate if val_loader is not None else None, current=torch_params(model),
                               save_state=lambda: _save_state(sp, model, optimizer, scaler, state, fingerprint),
                               callbacks=callbacks, write=dist.is_main, barrier=dist.barrier)
    metrics = _finish(hp, model, out, state, validation, val_loader, val_rows, device, amp_dtype, channels_last,
                      stopped_early, train_data.class_names, kept, dist)
    callbacks.on_train_end(metrics)
    return metrics


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


def _validation_scores(model: ResNetV2, loader: DataLoader, rows: np.ndarray, dist: Distributed,
                       device: torch.device, amp_dtype: torch.dtype | None,
                       channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the whole validation set in its order: this process's share, gathered from all."""
    scores, labels = predict_scores(model, loader, device, amp_dtype, channels_last)
    return dist.gather_rows(rows, labels), dist.gather_rows(rows, scores)


def torch_params(model: ResNetV2) -> CurrentParams:
    def current():
        args, aux = mxnet_state_dict(model)
        return ({k: v.numpy().copy() for k, v in args.items()}, {k: v.numpy().copy() for k, v in aux.items()})
    return current


def _save_state(path: Path, model: ResNetV2, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                state: dict, fingerprint: dict) -> None:
    """Tensors and plain types only, so that :func:`_load_state` can refuse anything else (``weights_only``)."""
    payload = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
               "state": json.dumps(state, default=json_default), "fingerprint": json.dumps(fingerprint)}
    # a full disk inside torch's serializer surfaces as its RuntimeError ("unexpected pos"): atomic_serialize names
    # the disk, the checkpoint's size and the fix instead, and leaves no half-written file
    atomic_serialize(path, lambda fh: torch.save(payload, fh), size=_payload_bytes(payload))


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


def _load_state(path: Path, device: torch.device, fingerprint: dict) -> dict:
    """Load ``checkpoints/last.pt`` without unpickling code, and refuse a run of other data or settings."""
    import pickle

    restart = ("start afresh with --restart (LocalOptions(restart=True)), or choose another output folder")
    try:
        # a regular file of bounded size: a FIFO or a device in its place is refused, not waited on or read forever
        with open_bounded(path, limit=CHECKPOINT_LIMIT, what="checkpoint", error=RunConflictError) as fh:
            ck = torch.load(fh, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise RunConflictError(f"{path}: not a checkpoint this version of multilabel_ic can resume from (it holds "
                               f"objects other than tensors and plain values, or it is damaged): {restart}.") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise RunConflictError(f"{path}: not a checkpoint of this version of multilabel_ic: {restart}.")
    try:
        recorded = json.loads(ck["fingerprint"])
        state = json.loads(ck["state"])
        if not isinstance(recorded, dict) or not isinstance(state, dict) or \
                not all(isinstance(state.get(k), list) for k in ("history", "saved")) or \
                not isinstance(state.get("epoch"), int):
            raise ValueError("fingerprint or state of the wrong type")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunConflictError(f"{path}: a damaged checkpoint (its run state cannot be read: {exc}); {restart}.") \
            from None
    differ = describe_differences(recorded, fingerprint)
    if differ:
        raise RunConflictError(
            f"{path.parent.parent} holds a run trained with other {', '.join(differ)}; resuming would ship that "
            f"run's model under this run's settings. To train this configuration, {restart}.")
    return ck


def _finish(hp: Hyperparameters, model: ResNetV2, out: Path, state: dict[str, Any], validation: Dataset | None,
            val_loader: DataLoader | None, val_rows: np.ndarray | None, device: torch.device,
            amp_dtype: torch.dtype | None, channels_last: bool, stopped_early: bool, class_names: Sequence[str],
            kept: SavedParams, dist: Distributed) -> dict:
    checkpoints = saved_checkpoints(out, state, kept)
    final = final_metrics()
    if val_loader is not None and val_rows is not None and state["saved"]:
        # evaluate the model that ships (the best / last saved epoch), not the last one trained
        from ...model.network import load_mxnet_state_dict

        shipped = max(checkpoints)
        args, aux = checkpoints[shipped]
        load_mxnet_state_dict(model, {k: torch.from_numpy(v) for k, v in {**args, **aux}.items()})
        labels, scores = _validation_scores(model, val_loader, val_rows, dist, device, amp_dtype, channels_last)
        assert validation is not None
        final = shipped_final(state, shipped, labels, scores, validation.class_names)
    metrics = None
    if dist.is_main:
        tar = write_artifact(hp, out, checkpoints)
        metrics = write_results(hp, out, tar, state, final, engine="pytorch", device=str(device),
                                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                                stopped_early=stopped_early, class_names=class_names,
                                processes=dist.world_size)
    return dist.broadcast(metrics)  # every process returns the run's metrics (and the artifact exists by then)
