"""The Gluon engine's side of a run (engine.Engine): MXNet's network, optimizer, ImageRecordIter and epochs
(gluon.py) driven by the run skeleton (run.py), one process on one context."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...exceptions import ArtifactError, UsageError
from .augment import check_gluon_augment
from .gluon import (
    MXNET_ENGINE,
    current_params,
    device_name,
    load_pretrained,
    mx,
    mxnet_version,
    network,
    optimizer,
    record_iter,
    scores,
    select_context,
    set_params,
    train_epoch,
    write_recordio,
)
from .gluon_state import load_state, read_state, save_state
from .pipeline import default_workers
from .runfolder import STATE_FILES

if TYPE_CHECKING:
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions

__all__ = ["GluonEngine"]

log = logging.getLogger("multilabel_ic.train")


class GluonEngine:
    """A run's MXNet side (engine.Engine), in one process on ``ctx``: the RecordIO copies of the data feed
    ``ImageRecordIter``; the resume state is ``checkpoints/last-gluon.params`` (gluon_state)."""

    name = "gluon"
    state_file = STATE_FILES[1]
    prepares_images = False  # ImageRecordIter decodes the RecordIO copy itself

    @classmethod
    def open(cls, hp: Hyperparameters, options: LocalOptions, dist: Any):
        if dist.enabled:
            raise UsageError("the Gluon engine trains in one process: run it without torchrun (--nproc-per-node).")
        check_gluon_augment(options.augment)
        return select_context(options.device)

    def __init__(self, hp: Hyperparameters, options: LocalOptions, ctx, dist: Any, stores: Any = None):
        self.hp, self.options, self.ctx = hp, options, ctx
        self.out = Path()
        self.recs: list[Path] = []

    def check_state(self, path: Path, fingerprint: dict) -> None:
        read_state(path, fingerprint)

    def build_network(self, pretrained: Path | None) -> None:
        hp, options = self.hp, self.options
        mx.random.seed(options.seed)
        np.random.seed(options.seed)
        self.dtype = "float32"
        if hp.precision_dtype == "float16":
            if self.ctx.device_type == "gpu":
                self.dtype = "float16"
                log.info("precision_dtype=float16: float16 network with float32 master weights (multi_precision)")
            else:
                log.info("precision_dtype=float16 on CPU: training in float32 (MXNet's CPU float16 is unsupported)")
        self.net = network(hp, self.ctx, seed=options.seed)
        if pretrained is not None:
            load_pretrained(self.net, pretrained, hp.num_layers)

    def build_optimizer(self, weights: tuple[np.ndarray, np.ndarray] | None) -> None:
        if self.dtype == "float16":
            self.net.cast("float16")
        size = self.hp.steps_per_epoch(schedule=True)
        steps = [size * e for e in self.hp.lr_steps if e > 0]
        self.trainer = mx.gluon.Trainer(self.net.collect_params(), optimizer(self.hp, steps), kvstore=None)
        self.w_pos = self.w_neg = None
        if weights is not None:
            self.w_pos, self.w_neg = (mx.nd.array(w, ctx=self.ctx).reshape((1, -1)) for w in weights)

    def load_state(self, path: Path, fingerprint: dict) -> dict:
        return load_state(path, self.net, self.trainer, fingerprint, mx.nd, self.ctx)

    def save_state(self, path: Path, state: dict, fingerprint: dict) -> None:
        save_state(path, self.net, self.trainer, state, fingerprint)

    def prepare_data(self, train: Dataset, validation: Dataset | None, out: Path) -> int:
        hp, options = self.hp, self.options
        self.out = out
        self.threads = default_workers() if options.num_workers is None else options.num_workers
        self.train_rec = write_recordio(train, out / "recordio" / "train.rec")
        self.val_rec = write_recordio(validation, out / "recordio" / "validation.rec") if validation else None
        self.recs = [r for r in (self.train_rec, self.val_rec) if r is not None]
        log.info("Gluon engine (MXNet %s, %s): ImageRecordIter %s, resize=%s -> %s crop %dx%d, augmentation_type=%s, "
                 "%d batches of %d per epoch, context=%s, threads=%d", mxnet_version(), MXNET_ENGINE, self.train_rec,
                 hp.resize, "random" if hp.augmentation_type else "centre", hp.width, hp.height,
                 hp.augmentation_type, hp.batches_per_epoch, hp.mini_batch_size, self.ctx, self.threads)
        return self.threads

    def train_epoch(self, epoch: int, state: dict) -> dict:
        it = record_iter(self.hp, self.train_rec, train=True, options=self.options,
                         seed=self.options.seed * 10007 + epoch, threads=self.threads)
        return train_epoch(self.hp, self.net, self.trainer, it, self.ctx, self.dtype, self.w_pos, self.w_neg, epoch,
                      state, self.options)

    def score(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.val_rec is not None
        it = record_iter(self.hp, self.val_rec, train=False, options=self.options, seed=self.options.seed,
                         threads=self.threads)
        probabilities, labels = scores(self.net, it, self.ctx, self.dtype)
        return labels, probabilities

    def current_params(self):
        return current_params(self.net)()

    def set_params(self, params, *, source: str) -> None:
        args, aux = params
        missing = set_params(self.net, {**args, **aux}, source=source)
        if missing:
            raise ArtifactError(f"{source}: no value for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.ctx), "device_name": device_name(self.ctx)}

    def close(self) -> None:
        for rec in self.recs:  # the RecordIO copy served this run only; the artifact and checkpoints stay
            rec.unlink(missing_ok=True)
            rec.with_suffix(".idx").unlink(missing_ok=True)
        folder = self.out / "recordio"
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
