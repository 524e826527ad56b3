"""The Gluon engine: the algorithm trained by MXNet itself (``LocalBackend(engine="gluon")``, ``--engine gluon``).

What the algorithm did, done with MXNet's own parts: ``mx.io.ImageRecordIter`` over im2rec-style RecordIO of the
data with the augmentation parameters of each ``augmentation_type``; the network built from the very symbol the
artifact carries (a Gluon ``SymbolBlock`` over its ``fc1`` output); the real ``mx.optimizer`` rules with
``MultiFactorScheduler``, ``multi_precision`` and the weight-decay mask; the same pretrained ``.params``. The run
folder, log lines, metrics, checkpoint policy, resume and ``model.tar.gz`` are the PyTorch engine's, so either
engine's artifact loads into the other's predictor.

Needs the ``gluon`` extra (mxnet 1.9.1 with numpy < 1.24); see docs/gluon.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._io import atomic_write_bytes, ensure_dir, json_default
from ...exceptions import ArtifactError, MissingDependencyError, RunConflictError, UsageError
from ...model.artifact import read_model_tar, symbol_json
from ...model.params import dumps_params, load_params, loads_params
from ...model.transforms import AUG_LEVELS, MAX_ASPECT, MAX_H, MAX_L, MAX_ROTATE, MAX_S, MAX_SHEAR
from ...preflight import describe_differences
from .epochlog import EpochLog, validation_record
from .loss import class_weights
from .runfolder import (
    STATE_FILES,
    claim_folder,
    run_epochs,
    saved_checkpoints,
    shipped_final,
    write_artifact,
    write_results,
)

if TYPE_CHECKING:
    from ...callbacks import CallbackList
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions

GLUON_INSTALL = ("python -m venv .venv-gluon && .venv-gluon/bin/pip install 'multilabel-ic[local,gluon]' (MXNet 1.9.1 "
                 "needs numpy < 1.24, hence a virtualenv of its own; docs/gluon.md)")
# MXNet's default threaded engine runs independent ops (the CPU random draws, gradient sums) in its workers' order,
# so two runs of one seed differ; the synchronous NaiveEngine makes a run bit-reproducible and costs nothing
# measurable on the CPU (docs/gluon.md). It applies only if MXNet is not imported yet and the user has not chosen.
MXNET_ENGINE = (os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine") if "mxnet" not in sys.modules
                else os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice (MXNet was imported first)"))
try:
    import mxnet as mx
except ImportError as exc:
    raise MissingDependencyError(f"the Gluon engine needs MXNet 1.9.1, which is not installed here. Install it with: "
                                 f"{GLUON_INSTALL}") from exc

__all__ = ["select_context", "train_locked", "GLUON_STATE", "network", "record_iter", "predict_artifact",
           "mxnet_version"]

log = logging.getLogger("multilabel_ic.train")

GLUON_STATE = STATE_FILES[1]  # parameters, optimizer states and loop state, in NDArray format
STATE_FORMAT = "multilabel-ic/gluon-checkpoint-v1"
INSTALL_GPU = ("pip install mxnet-cu112==1.9.1 'numpy<1.24' (needs a driver that supports CUDA 11.2; MXNet has "
               "no build for newer CUDA)")


def mxnet_version() -> str:
    return str(mx.__version__)


def select_context(name: str | None):
    """``mx.gpu(N)`` for "cuda"/"cuda:N" (or None when MXNet sees a GPU), else ``mx.cpu()``."""
    gpus = mx.context.num_gpus()
    if name is None:
        return mx.gpu(0) if gpus else mx.cpu()
    kind, _, index = str(name).partition(":")
    if kind == "cpu":
        return mx.cpu()
    if kind != "cuda" or (index and not index.isdigit()):
        raise UsageError(f"device {name!r} is not a device name: use 'cpu', 'cuda' or 'cuda:N'.")
    if not gpus:
        raise UsageError(f"device {name!r} requested but this MXNet build sees no GPU (the 'mxnet' wheel is the CPU "
                         f"build). Use device='cpu', or install a CUDA build: {INSTALL_GPU}.")
    return mx.gpu(int(index or 0))


def _device_name(ctx) -> str:
    return "cpu" if ctx.device_type == "cpu" else f"mxnet gpu({ctx.device_id})"


def network(hp: Hyperparameters, ctx, *, seed: int = 0, symbol: dict | None = None):
    """A Gluon ``SymbolBlock`` of the artifact's symbol up to ``fc1`` (the head's loss is applied outside), with
    MXNet's initialisation: ``Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)`` weights, i.e.
    N(0, sqrt(2 / fan_in)); zero biases, betas and means; unit gammas and variances.

    The draws come from a NumPy generator seeded with ``seed``: MXNet's threaded engine runs the per-parameter
    random ops in whatever order its workers take them, so ``mx.random.seed`` alone does not fix which parameter gets
    which draw."""
    sym_json = symbol or symbol_json(num_classes=hp.num_classes, num_layers=hp.num_layers,
                                     image_shape=(hp.channels, hp.height, hp.width), multi_label=hp.multi_label == 1)
    sym_json = {**sym_json, "attrs": {**sym_json.get("attrs", {}), "mxnet_version": ["int", 10901]}}
    sym = mx.sym.load_json(json.dumps(sym_json))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SymbolBlock's "data: None" type-inference notice
        net = mx.gluon.SymbolBlock(sym.get_internals()["fc1_output"], mx.sym.var("data"))
    params = net.collect_params()
    for name, param in params.items():
        param.initialize(init=mx.init.Zero(), ctx=ctx)
        if not name.endswith(("_weight", "_gamma")):
            param.wd_mult = 0.0  # Module's set_wd_mult: weight decay on *_weight and *_gamma only
    net(mx.nd.zeros((1, hp.channels, hp.height, hp.width), ctx=ctx))  # finish the deferred initialisation (shapes)
    rng = np.random.default_rng(seed)
    for name, param in params.items():
        shape = tuple(param.shape)
        if name.endswith("_weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        elif name.endswith(("_gamma", "_moving_var")):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        param.set_data(mx.nd.array(value, ctx=ctx, dtype="float32"))
    return net


def _set_params(net, params: dict[str, np.ndarray], *, source: str, skip_fc: bool = False) -> list[str]:
    """Copy MXNet-named arrays into the block; returns the block's parameters that got no value."""
    own = net.collect_params()
    missing = []
    for name, param in own.items():
        if skip_fc and name.startswith("fc"):
            continue
        if name not in params:
            missing.append(name)
            continue
        value = params[name]
        if tuple(value.shape) != tuple(param.shape):
            raise ArtifactError(f"{source}: {name} has shape {tuple(value.shape)}, the network needs "
                                f"{tuple(param.shape)}")
        if name == "bn_data_gamma":
            value = np.ones_like(value)  # fix_gamma=True: MXNet uses 1 whatever the file stores
        param.set_data(mx.nd.array(value, dtype=param.dtype))
    return missing


def _load_pretrained(net, path: Path, num_layers: int) -> None:
    raw = {k.split(":", 1)[-1]: v for k, v in load_params(path).items()}
    missing = [m for m in _set_params(net, raw, source=str(path), skip_fc=True)]
    if missing:
        raise ArtifactError(f"{path}: missing {len(missing)} parameters of ResNet-{num_layers} (e.g. {missing[:3]}); "
                            f"is it a resnet-{num_layers} file?")
    log.info("Using pretrained model for initializing weights and transfer learning (%s).", path)


def _current_params(net):
    def current():
        args, aux = {}, {}
        for name, param in net.collect_params().items():
            value = param.data().astype("float32").asnumpy()
            (aux if name.endswith(("_moving_mean", "_moving_var")) else args)[name] = value
        return args, aux
    return current


def _aug_params(hp: Hyperparameters, options: LocalOptions) -> dict[str, Any]:
    """ImageRecordIter's augmentation parameters for the run's augmentation_type (MXNet data.set_data_aug_level)."""
    level = AUG_LEVELS[hp.augmentation_type]
    params: dict[str, Any] = {"rand_crop": level >= 1, "rand_mirror": level >= 1}
    if level >= 2:
        params.update(random_h=MAX_H, random_s=MAX_S, random_l=MAX_L)
    if level >= 3:
        params.update(max_rotate_angle=MAX_ROTATE, max_shear_ratio=MAX_SHEAR, max_aspect_ratio=MAX_ASPECT,
                      fill_value=options.augment.fill_value)
    return params


def record_iter(hp: Hyperparameters, rec: Path, *, train: bool, options: LocalOptions, seed: int, threads: int):
    """``mx.io.ImageRecordIter`` as the algorithm configures it (RGB float 0-255, no mean/std: bn_data normalises;
    multi-hot labels of width num_classes; the last batch wraps around, its ``batch.pad`` counting the repeats).

    Make a new iterator per pass: after a wrapped batch, MXNet's next pass starts past the repeated records (and
    ``round_batch=False`` reports no padding in 1.9.1), so a reused validation iterator would score a shifted set."""
    params: dict[str, Any] = dict(
        path_imgrec=str(rec), path_imgidx=str(rec.with_suffix(".idx")), data_shape=(hp.channels, hp.height, hp.width),
        batch_size=hp.mini_batch_size, label_width=hp.num_classes, resize=hp.resize or -1, round_batch=True,
        preprocess_threads=max(1, threads), shuffle=train, seed=seed, verbose=False)
    if train:
        params.update(_aug_params(hp, options))
    return mx.io.ImageRecordIter(**params)


def _write_recordio(data: Dataset, path: Path) -> Path:
    ensure_dir(path.parent)
    rec, _ = data.to_recordio(path, renumber=True)
    return rec


def _loss(z, y, multi_label: bool, w_pos, w_neg, reduction: str):
    """Per-sample loss of the head: sigmoid BCE (mean over classes = LogisticRegressionOutput's gradient, or summed)
    with optional class weights, or softmax cross-entropy."""
    nd = mx.nd
    if not multi_label:
        return -nd.pick(nd.log_softmax(z, axis=1), nd.argmax(y, axis=1), axis=1)
    softplus_neg_abs = nd.log1p(nd.exp(-nd.abs(z)))
    log_p = -(nd.relu(-z) + softplus_neg_abs)  # log sigmoid(z)
    log_not_p = -(nd.relu(z) + softplus_neg_abs)  # log sigmoid(-z)
    if w_pos is None:
        per = -(y * log_p + (1 - y) * log_not_p)
    else:
        per = -(nd.broadcast_mul(y * log_p, w_pos) + nd.broadcast_mul((1 - y) * log_not_p, w_neg))
    return per.sum(axis=1) if reduction == "sum" else per.mean(axis=1)


def _optimizer(hp: Hyperparameters, steps: list[int]):
    """``mx.optimizer.create`` with the algorithm's parameters and ``MultiFactorScheduler`` (steps in updates)."""
    kwargs: dict[str, Any] = dict(learning_rate=hp.learning_rate, wd=hp.weight_decay, multi_precision=True)
    if steps:
        kwargs["lr_scheduler"] = mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=hp.lr_scheduler_factor,
                                                                      base_lr=hp.learning_rate)
    if hp.optimizer in ("sgd", "nag"):
        kwargs["momentum"] = hp.momentum
    elif hp.optimizer == "adam":
        kwargs.update(beta1=hp.beta_1, beta2=hp.beta_2, epsilon=hp.eps)
    elif hp.optimizer == "rmsprop":
        kwargs.update(gamma1=hp.gamma, epsilon=hp.eps)
    return mx.optimizer.create(hp.optimizer, **kwargs)


# ---- checkpoint: NDArray format (read by this project's own parser, never unpickled) ----

def _flatten_state(state, key: str, arrays: dict[str, np.ndarray]):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return [_flatten_state(s, f"{key}.{i}", arrays) for i, s in enumerate(state)]
    arrays[key] = state.asnumpy()
    return key


def _unflatten_state(spec, arrays: dict[str, np.ndarray], ctx):
    if spec is None:
        return None
    if isinstance(spec, list):
        return tuple(_unflatten_state(s, arrays, ctx) for s in spec)
    value = arrays[spec]
    return mx.nd.array(value, ctx=ctx, dtype=value.dtype)


def _save_state(path: Path, net, trainer, state: dict, fingerprint: dict) -> None:
    arrays: dict[str, np.ndarray] = {f"param:{k}": p.data().asnumpy() for k, p in net.collect_params().items()}
    updater = trainer._updaters[0]
    structure = {str(i): _flatten_state(s, f"opt:{i}", arrays) for i, s in updater.states.items()}
    optimizer = trainer._optimizer
    meta = {"format": STATE_FORMAT, "state": state, "fingerprint": fingerprint, "optimizer_states": structure,
            "index_update_count": {str(k): v for k, v in optimizer._index_update_count.items()},
            "num_update": optimizer.num_update}
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=json_default).encode(), dtype=np.uint8)
    atomic_write_bytes(path, dumps_params(arrays))


def _load_state(path: Path, net, trainer, fingerprint: dict, ctx) -> dict:
    restart = "start afresh with --restart (LocalOptions(restart=True)), or choose another output folder"
    try:
        from ..._read import GiB, read_bounded

        data = read_bounded(path, limit=16 * GiB, what="checkpoint", error=ArtifactError)  # never blocks on a FIFO
        arrays = loads_params(data, source=str(path))
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (ArtifactError, KeyError, ValueError, OSError) as exc:
        raise RunConflictError(f"{path}: not a Gluon checkpoint this version of multilabel_ic can resume from "
                               f"({exc}): {restart}.") from exc
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise RunConflictError(f"{path}: not a Gluon checkpoint of this version of multilabel_ic: {restart}.")
    differ = describe_differences(meta["fingerprint"], fingerprint)
    if differ:
        raise RunConflictError(
            f"{path.parent.parent} holds a run trained with other {', '.join(differ)}; resuming would ship that "
            f"run's model under this run's settings. To train this configuration, {restart}.")
    for name, param in net.collect_params().items():
        param.set_data(mx.nd.array(arrays[f"param:{name}"], ctx=ctx, dtype=param.dtype))
    updater = trainer._updaters[0]
    for index, spec in meta["optimizer_states"].items():
        updater.states[int(index)] = _unflatten_state(spec, arrays, ctx)
        updater.states_synced[int(index)] = True
    optimizer = trainer._optimizer
    optimizer._index_update_count.update({int(k): v for k, v in meta["index_update_count"].items()})
    optimizer.num_update = meta["num_update"]
    return dict(meta["state"])


# ---- training ----

def _scores(net, it, ctx, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and labels over a fresh record iterator, in order, without the wrapped-around padding."""
    scores, labels = [], []
    for batch in it:
        x = batch.data[0].as_in_context(ctx).astype(dtype)
        keep = batch.data[0].shape[0] - batch.pad
        z = net(x).astype("float32")
        scores.append(mx.nd.sigmoid(z).asnumpy()[:keep])
        labels.append(batch.label[0].asnumpy()[:keep])
    return np.concatenate(scores), np.concatenate(labels)


def _batches(it, count: int):
    """``count`` batches of a fresh iterator, starting it over when it runs out (num_training_samples > the data).

    A fresh iterator is not reset first: its prefetch thread has already started the first pass, and a reset
    reshuffles, so whether the first pass is the construction's shuffle or the reset's would depend on that thread's
    timing (one run in four differed)."""
    produced = 0
    while produced < count:
        for batch in it:
            if batch.pad:
                continue  # the wrapped-around last batch is not one of the epoch's floor(N/B) batches
            yield batch
            produced += 1
            if produced == count:
                return
        it.reset()


def train_locked(hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path,
                 options: LocalOptions, ctx, fingerprint: dict, pretrained: Path | None,
                 callbacks: CallbackList, dist: Any = None) -> dict:
    """The run inside its locked output folder (see :func:`multilabel_ic.backends.local.train.train`); one process
    (``dist`` is the one-process :class:`~.distributed.Distributed`)."""
    from ...callbacks import RunInfo
    from ..base import final_metrics
    from .optim import epoch_size
    from .pipeline import default_workers

    if options.augment.hsl_jitter != "approx_gaussian":
        raise UsageError("the Gluon engine draws HLS jitter as MXNet 1.9.1 does (approx_gaussian): "
                         "hsl_jitter='uniform' is a PyTorch-engine option.")
    mx.random.seed(options.seed)
    np.random.seed(options.seed)
    threads = default_workers() if options.num_workers is None else options.num_workers
    dtype = "float32"
    if hp.precision_dtype == "float16":
        if ctx.device_type == "gpu":
            dtype = "float16"
            log.info("precision_dtype=float16: float16 network with float32 master weights (multi_precision)")
        else:
            log.info("precision_dtype=float16 on CPU: training in float32 (MXNet's CPU float16 is unsupported)")
    net = network(hp, ctx, seed=options.seed)
    if pretrained is not None:
        _load_pretrained(net, pretrained, hp.num_layers)
    if dtype == "float16":
        net.cast("float16")
    size = epoch_size(hp.num_training_samples, hp.mini_batch_size)
    steps = [size * e for e in hp.lr_steps if e > 0]
    trainer = mx.gluon.Trainer(net.collect_params(), _optimizer(hp, steps), kvstore=None)
    w_pos = w_neg = None
    if hp.use_weighted_loss:
        wp, wn = class_weights(train_data.labels, options.weighted_loss)
        w_pos, w_neg = mx.nd.array(wp, ctx=ctx).reshape((1, -1)), mx.nd.array(wn, ctx=ctx).reshape((1, -1))
        log.info("weighted loss (%s): positive weights %s", options.weighted_loss, np.round(wp, 3).tolist())

    state: dict[str, Any] = {"epoch": 0, "num_update": 0, "history": [], "best_acc": None, "best_epoch": None,
                             "es_bad": 0, "saved": []}
    sp = out / GLUON_STATE
    if sp.exists():
        if not options.resume:
            raise RunConflictError(f"{out} holds a run ({GLUON_STATE}) and resume=False: pass restart=True "
                                   f"(CLI: --restart) to replace it, or choose another output folder.")
        state = _load_state(sp, net, trainer, fingerprint, ctx)
        log.info("resuming from %s: %d of %d epochs done", sp, state["epoch"], hp.epochs)
    else:
        claim_folder(out, fingerprint)

    train_rec = _write_recordio(train_data, out / "recordio" / "train.rec")
    val_rec = _write_recordio(validation, out / "recordio" / "validation.rec") if validation is not None else None
    log.info("Gluon engine (MXNet %s, %s): ImageRecordIter %s, resize=%s -> %s crop %dx%d, augmentation_type=%s, "
             "%d batches of %d per epoch, context=%s, threads=%d", mxnet_version(), MXNET_ENGINE, train_rec, hp.resize,
             "random" if hp.augmentation_type else "centre", hp.width, hp.height, hp.augmentation_type,
             hp.batches_per_epoch, hp.mini_batch_size, ctx, threads)

    def val_it():
        assert val_rec is not None
        return record_iter(hp, val_rec, train=False, options=options, seed=options.seed, threads=threads)

    kept: dict = {}
    settings = {k: v for k, v in fingerprint.items() if k not in ("training data", "validation data", "hyperparameters")}
    callbacks.on_train_start(RunInfo(output_dir=out, backend="local", hyperparameters=hp.to_sagemaker(
        include_defaults=True), class_names=list(train_data.class_names), history=list(state["history"]),
        settings={**settings, "device": str(ctx), "num_workers": threads}))
    multi = hp.multi_label == 1

    def train_epoch(epoch: int) -> dict:
        it = record_iter(hp, train_rec, train=True, options=options, seed=options.seed * 10007 + epoch,
                         threads=threads)
        return _epoch(hp, net, trainer, it, ctx, dtype, multi, w_pos, w_neg, epoch, state, options)

    def validate(epoch: int) -> dict:
        assert validation is not None
        scores, labels = _scores(net, val_it(), ctx, dtype)
        return validation_record(hp, labels, scores, validation.class_names, epoch)

    stopped_early = run_epochs(hp, out, state, kept, state_path=sp, train_epoch=train_epoch,
                               validate=validate if validation is not None else None, current=_current_params(net),
                               save_state=lambda: _save_state(sp, net, trainer, state, fingerprint),
                               callbacks=callbacks)
    checkpoints = saved_checkpoints(out, state, kept)
    tar = write_artifact(hp, out, checkpoints)
    final = final_metrics()
    if validation is not None and state["saved"]:
        shipped = max(checkpoints)
        args, aux = checkpoints[shipped]
        _set_params(net, {**args, **aux}, source=str(tar))
        scores, labels = _scores(net, val_it(), ctx, dtype)
        final = shipped_final(state, shipped, labels, scores, validation.class_names)
    metrics = write_results(hp, out, tar, state, final, engine="gluon", device=str(ctx), device_name=_device_name(ctx),
                            stopped_early=stopped_early, class_names=train_data.class_names)
    for rec in (train_rec, val_rec):
        if rec is not None:  # the RecordIO copy served this run only; the artifact and checkpoints stay
            rec.unlink(missing_ok=True)
            rec.with_suffix(".idx").unlink(missing_ok=True)
    if (out / "recordio").is_dir() and not any((out / "recordio").iterdir()):
        (out / "recordio").rmdir()
    callbacks.on_train_end(metrics)
    return metrics


def _epoch(hp: Hyperparameters, net, trainer, it, ctx, dtype: str, multi: bool, w_pos, w_neg, epoch: int,
           state: dict, options: LocalOptions) -> dict:
    autograd = mx.autograd
    epoch_log = EpochLog(hp, epoch, log_interval=options.log_interval, progress=options.progress)
    window, whole = np.zeros(4), np.zeros(4)

    def read_window() -> list[float]:
        values = window.tolist()
        window[:] = 0
        return values

    nbatch, lr = -1, trainer.learning_rate
    for nbatch, batch in enumerate(_batches(it, hp.batches_per_epoch)):
        epoch_log.batch_start()
        x = batch.data[0].as_in_context(ctx).astype(dtype)
        y = batch.label[0].as_in_context(ctx)
        with autograd.record():
            z = net(x).astype("float32")
            loss = _loss(z, y, multi, w_pos, w_neg, options.bce_reduction)
        loss.backward()
        trainer.step(hp.mini_batch_size)  # rescale_grad = 1 / batch: the batch mean
        state["num_update"] += 1
        lr = trainer.learning_rate
        if multi:
            correct, total = float(((z >= 0) == (y >= 0.5)).sum().asscalar()), y.size
            topk = 0.0
        else:
            target = mx.nd.argmax(y, axis=1)
            correct, total = float((mx.nd.argmax(z, axis=1) == target).sum().asscalar()), y.shape[0]
            topk = 0.0
            if hp.top_k:
                top = mx.nd.topk(z, axis=1, k=hp.top_k)
                topk = float((top == target.reshape((-1, 1))).sum().asscalar())
        values = np.array([float(loss.mean().asscalar()), correct, total, topk])
        window += values
        whole += values
        epoch_log.batch_done(nbatch, lr, read_window)
    return epoch_log.finish(whole.tolist(), window.tolist(), nbatch, lr)


def predict_artifact(tar: str | Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of an artifact's model for a batch of network inputs (N, C, H, W, RGB float 0-255), computed
    by MXNet from the artifact's own symbol and parameters, as the inference container binds it (Module API)."""
    contents = read_model_tar(tar)
    if contents.symbol is None:
        raise ArtifactError(f"{tar}: no symbol json to bind")
    sym = mx.sym.load_json(json.dumps(contents.symbol))
    mod = mx.mod.Module(sym, label_names=None, context=mx.cpu())
    mod.bind(for_training=False, data_shapes=[("data", tuple(images.shape))])
    args = {k: mx.nd.array(v) for k, v in contents.params.items() if not k.endswith(("_moving_mean", "_moving_var"))}
    aux = {k: mx.nd.array(v) for k, v in contents.params.items() if k.endswith(("_moving_mean", "_moving_var"))}
    mod.set_params(args, aux, allow_missing=True)
    mod.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    return mod.get_outputs()[0].asnumpy()
