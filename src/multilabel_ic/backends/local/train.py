"""A local training run from the outside in: the checks made before the output folder is touched, the processes
of a distributed run, the folder's lock, the pretrained weights, the decode caches and the run's fingerprint; then
the run itself (run.run_training) with the engine LocalBackend chose (torch_engine, gluon).

State after every epoch goes to ``<output>/checkpoints/`` (atomically), so an interrupted run resumes from its
last finished epoch. Parameters in the algorithm's format go to ``<output>/model/`` and finally ``model.tar.gz``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..._io import ensure_dir, remove_stale_temp_files
from ..._lock import FolderLock
from ...callbacks import Callback, CallbackList, default_callbacks
from ...exceptions import TrainingError, UsageError
from ...preflight import check_training_request, data_fingerprint
from .device import check_compiler, select_device
from .distributed import Distributed
from .imagesizes import check_headers
from .imagestore import ImageStore
from .loss import check_loss, loss_fingerprint
from .pretrained import resolve_pretrained
from .run import check_or_claim, run_training
from .runfolder import clear_previous_run, remove_if_only_the_marker

if TYPE_CHECKING:
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions
    from ...model.initial import InitialModel
    from .engine import Engine

__all__ = ["train", "run_fingerprint", "check_launch", "EngineKind", "cache_encodings"]

log = logging.getLogger("multilabel_ic.train")


class EngineKind(Protocol):
    """An engine class (torch_engine.TorchEngine, gluon.GluonEngine): what the run checks of it before the folder
    is touched (its ``open`` classmethod), and how one is made for the run."""

    prepares_images: bool  # the decode caches are built (and the images checked) before the folder is claimed

    def open(self, hp: Hyperparameters, options: LocalOptions, dist: Distributed) -> Any:
        """Refuse what this engine cannot train; return the device (context) it trains on."""

    def __call__(self, hp: Hyperparameters, options: LocalOptions, device: Any, dist: Distributed,
                 stores: tuple[ImageStore | None, ImageStore | None]) -> Engine: ...


def check_launch(hp: Hyperparameters, train_data: Dataset | None, validation: Dataset | None,
                 options: LocalOptions, *, device: str | None, processes: int) -> None:
    """Before torchrun starts ``processes`` processes of a run: what each of them would refuse (the data against the
    hyperparameters, the engine, the device, SyncBatchNorm, the compiler, a batch that does not split), checked
    once here, so a mistake is one error and not one per process."""
    check_loss(hp, options)
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


def run_fingerprint(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None,
                    options: LocalOptions, dist: Distributed = Distributed(), cache: dict | None = None,
                    initial: InitialModel | None = None) -> dict:
    """What a run is trained on and with: a resume must find every field equal, or it would ship another model.

    ``cache``: the decode cache's encoding of each split (:func:`cache_encodings`). It is recorded when a split is
    cached as JPEG, whose pixels differ from the files'; a raw cache and no cache give the same pixels. ``initial``:
    the model a continued run starts from."""
    fingerprint = {
        "training data": data_fingerprint(train_data), "validation data": data_fingerprint(validation),
        "class names": list(train_data.class_names), "seed": options.seed, "hyperparameters": hp.to_dict(),
        "weighted_loss": options.weighted_loss,
        "bce_reduction": options.bce_reduction, "augment": asdict(options.augment),
        "engine": options.engine, "input_pipeline": options.input_pipeline,
        "processes": [dist.hosts, dist.local_world_size],
        "sync_batchnorm": options.sync_batchnorm, "cpu_float16": options.cpu_float16, "cuda_half": options.cuda_half,
        "pretrained": None if not hp.use_pretrained_model else [options.pretrained, options.pretrained_sha256],
        **loss_fingerprint(options)}
    if cache and "jpeg" in cache.values():
        fingerprint["decode cache"] = cache
    if initial is not None:  # recorded only then, so the folders of earlier runs still resume
        fingerprint["initial model"] = initial.fingerprint()
    return json.loads(json.dumps(fingerprint))  # the form it has when read back from a checkpoint


def train(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, output_dir: str | os.PathLike,
          options: LocalOptions, callbacks: Sequence[Callback] = (), *, engine: EngineKind,
          initial: InitialModel | None = None) -> dict:
    """Train as the built-in algorithm does; return the metrics dict (also written to ``metrics.json``).

    Everything that can be checked is checked before the output folder is touched. The folder is locked for the
    run (a second run into it is refused), and a run already in it is resumed only when it was trained on the same
    data, classes, seed, hyperparameters and options (``options.restart`` starts afresh instead). ``engine``: the
    engine class that trains (LocalBackend.fit picks it from its table, by ``options.engine``). ``initial``: the
    checked model a continued run starts from (:mod:`multilabel_ic.backends.local.initial`).
    """
    dist = Distributed.from_environment()
    try:
        return _train(hp, train_data, validation, Path(output_dir), options, callbacks, dist, engine, initial)
    finally:
        dist.stop()  # a process that leaves with its group still open aborts (and so ends its peers' run)


def _train(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path, options: LocalOptions,
           callbacks: Sequence[Callback], dist: Distributed, engine: EngineKind,
           initial: InitialModel | None = None) -> dict:
    check_loss(hp, options)
    check_training_request(hp, train_data, validation)
    device = engine.open(hp, options, dist)
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
        opened = _open_stores(status["stores"], hp, train_data, validation)
        fingerprint = run_fingerprint(hp, train_data, validation, options, dist, cache=status["cache"],
                                      initial=initial)
        return run_training(engine(hp, options, device, dist, opened), hp, train_data, validation, out, options,
                            fingerprint, pretrained, CallbackList([]), dist, initial=initial)
    fingerprint = run_fingerprint(hp, train_data, validation, options, dist, initial=initial)
    created = not out.exists()
    ensure_dir(out)
    try:
        with FolderLock(out):
            try:
                # with an initial model, use_pretrained_model is ignored, as the built-in algorithm ignores it
                pretrained = (resolve_pretrained(hp.num_layers, options.pretrained, sha256=options.pretrained_sha256,
                                                 progress=options.progress)
                              if hp.use_pretrained_model and initial is None else None)
                for stale in remove_stale_temp_files(out, out / "model", out / "checkpoints"):
                    log.info("removed %s, left by an interrupted run", stale)
                if options.restart:
                    clear_previous_run(out)
                stores: tuple[ImageStore | None, ImageStore | None] = (None, None)
                if engine.prepares_images:
                    # the images are decoded (and checked) before the folder is claimed: the cache's encoding is
                    # part of the run's fingerprint, and an image that cannot train stops the run here
                    stores = _prepare_images(hp, train_data, validation, out, options)
                    fingerprint = run_fingerprint(hp, train_data, validation, options, dist,
                                                  cache=cache_encodings(*stores), initial=initial)
                run_engine = engine(hp, options, device, dist, stores)
                check_or_claim(out, options, run_engine, fingerprint)
            except BaseException as exc:
                dist.broadcast({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                raise
            dist.broadcast({"ok": True, "pretrained": str(pretrained) if pretrained else None,
                            "stores": [None if s is None else [str(s.path.parent), s.path.stem, s.encoding]
                                       for s in stores], "cache": cache_encodings(*stores)})
            return run_training(run_engine, hp, train_data, validation, out, options, fingerprint, pretrained,
                                CallbackList([*default_callbacks(), *callbacks]), dist, initial=initial)
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


