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

from ..._io import ensure_dir
from ...exceptions import ArtifactError, MissingDependencyError, UsageError
from ...model.artifact import read_model_tar, symbol_json
from ...model.params import load_params
from .augment import record_iter_params
from .epochlog import EpochLog
from .loss import Ops, loss_terms
from .runfolder import STATE_FILES

if TYPE_CHECKING:
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

__all__ = ["select_context", "GLUON_STATE", "network", "record_iter", "predict_artifact",
           "mxnet_version", "MX_OPS"]

log = logging.getLogger("multilabel_ic.train")

GLUON_STATE = STATE_FILES[1]  # parameters, optimizer states and loop state, in NDArray format (gluon_state)
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


def device_name(ctx) -> str:
    return "cpu" if ctx.device_type == "cpu" else f"mxnet gpu({ctx.device_id})"


def network(hp: Hyperparameters, ctx, *, seed: int = 0, symbol: dict | None = None):
    """A Gluon ``SymbolBlock`` of the artifact's symbol up to ``fc1`` (the head's loss is applied outside), with
    MXNet's initialisation: ``Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)`` weights, i.e.
    N(0, sqrt(2 / fan_in)); zero biases, betas and means; unit gammas and variances.

    The draws come from a NumPy generator seeded with ``seed``: MXNet's threaded engine runs the per-parameter
    random ops in whatever order its workers take them, so ``mx.random.seed`` alone does not fix which parameter gets
    which draw."""
    sym_json = symbol or symbol_json(num_classes=hp.num_classes, num_layers=hp.num_layers,
                                     image_shape=hp.input_shape, multi_label=hp.is_multi_label)
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
    net(mx.nd.zeros((1, *hp.input_shape), ctx=ctx))  # finish the deferred initialisation (shapes)
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


def set_params(net, params: dict[str, np.ndarray], *, source: str, skip_fc: bool = False) -> list[str]:
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


def load_pretrained(net, path: Path, num_layers: int) -> None:
    raw = {k.split(":", 1)[-1]: v for k, v in load_params(path).items()}
    missing = [m for m in set_params(net, raw, source=str(path), skip_fc=True)]
    if missing:
        raise ArtifactError(f"{path}: missing {len(missing)} parameters of ResNet-{num_layers} (e.g. {missing[:3]}); "
                            f"is it a resnet-{num_layers} file?")
    log.info("Using pretrained model for initializing weights and transfer learning (%s).", path)


def current_params(net):
    def current():
        args, aux = {}, {}
        for name, param in net.collect_params().items():
            value = param.data().astype("float32").asnumpy()
            (aux if name.endswith(("_moving_mean", "_moving_var")) else args)[name] = value
        return args, aux
    return current


def record_iter(hp: Hyperparameters, rec: Path, *, train: bool, options: LocalOptions, seed: int, threads: int):
    """``mx.io.ImageRecordIter`` as the algorithm configures it (RGB float 0-255, no mean/std: bn_data normalises;
    multi-hot labels of width num_classes; the last batch wraps around, its ``batch.pad`` counting the repeats).

    Make a new iterator per pass: after a wrapped batch, MXNet's next pass starts past the repeated records (and
    ``round_batch=False`` reports no padding in 1.9.1), so a reused validation iterator would score a shifted set."""
    params: dict[str, Any] = dict(
        path_imgrec=str(rec), path_imgidx=str(rec.with_suffix(".idx")), data_shape=hp.input_shape,
        batch_size=hp.mini_batch_size, label_width=hp.num_classes, resize=hp.resize or -1, round_batch=True,
        preprocess_threads=max(1, threads), shuffle=train, seed=seed, verbose=False)
    if train:
        params.update(record_iter_params(hp, options.augment))
    return mx.io.ImageRecordIter(**params)


def write_recordio(data: Dataset, path: Path) -> Path:
    ensure_dir(path.parent)
    rec, _ = data.to_recordio(path, renumber=True)
    return rec


def _log_sigmoid(z):
    return -(mx.nd.relu(-z) + mx.nd.log1p(mx.nd.exp(-mx.nd.abs(z))))


# loss.py's element-wise ops for NDArrays: its loss formulas, computed by MXNet
MX_OPS = Ops(sigmoid=lambda z: mx.nd.sigmoid(z), log_sigmoid=_log_sigmoid, log=lambda x: mx.nd.log(x),
             clip_max=lambda x, value: mx.nd.minimum(x, value))


def _loss(z, y, multi_label: bool, w_pos, w_neg, options: LocalOptions):
    """Per-sample loss of the head: softmax cross-entropy, or the multi-label loss of ``options.loss``
    (loss.loss_terms: the BCE is LogisticRegressionOutput's gradient when averaged over classes) with optional
    class weights, averaged (or summed) over the classes."""
    nd = mx.nd
    if not multi_label:
        return -nd.pick(nd.log_softmax(z, axis=1), nd.argmax(y, axis=1), axis=1)
    pos, neg = loss_terms(z, MX_OPS, options)
    if w_pos is None:
        per = -(y * pos + (1 - y) * neg)
    else:
        per = -(nd.broadcast_mul(y * pos, w_pos) + nd.broadcast_mul((1 - y) * neg, w_neg))
    return per.sum(axis=1) if options.bce_reduction == "sum" else per.mean(axis=1)


def optimizer(hp: Hyperparameters, steps: list[int]):
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


# ---- training ----

def scores(net, it, ctx, dtype: str) -> tuple[np.ndarray, np.ndarray]:
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


def train_epoch(hp: Hyperparameters, net, trainer, it, ctx, dtype: str, w_pos, w_neg, epoch: int, state: dict,
           options: LocalOptions) -> dict:
    autograd = mx.autograd
    epoch_log = EpochLog(hp, epoch, log_interval=options.log_interval, progress=options.progress)
    window, whole = np.zeros(4), np.zeros(4)

    def read_window() -> list[float]:
        values = window.tolist()
        window[:] = 0
        return values

    nbatch, lr, multi = -1, trainer.learning_rate, hp.is_multi_label
    for nbatch, batch in enumerate(_batches(it, hp.batches_per_epoch)):
        epoch_log.batch_start()
        x = batch.data[0].as_in_context(ctx).astype(dtype)
        y = batch.label[0].as_in_context(ctx)
        with autograd.record():
            z = net(x).astype("float32")
            loss = _loss(z, y, multi, w_pos, w_neg, options)
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
