"""The project's re-implementation held to MXNet 1.9.1 itself, one behaviour per test: each failed before its fix."""

from __future__ import annotations

import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
import torch

from multilabel_ic.backends.local.loss import weighted_bce
from multilabel_ic.data import recordio
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.model.transforms import _offset


def test_default_loss_gradient_is_logistic_regression_outputs():
    """LogisticRegressionOutput backward is (sigmoid(z) - y) / C; Module's rescale_grad = 1/B makes the step's
    gradient that over B. The default local loss gives exactly that; the summed form C times more."""
    rng = np.random.default_rng(0)
    batch, classes = 6, 5
    z = rng.normal(size=(batch, classes)).astype(np.float32)
    y = (rng.random((batch, classes)) > 0.5).astype(np.float32)
    head = mx.sym.LogisticRegressionOutput(mx.sym.var("z"), label=mx.sym.var("y"))
    exe = head.simple_bind(mx.cpu(), z=z.shape, y=y.shape, grad_req={"z": "write", "y": "null"})
    exe.forward(is_train=True, z=mx.nd.array(z), y=mx.nd.array(y))
    exe.backward()
    mxnet_step_grad = exe.grad_dict["z"].asnumpy() / batch  # rescale_grad = 1 / batch
    zt = torch.tensor(z, requires_grad=True)
    weighted_bce(zt, torch.tensor(y)).backward()
    np.testing.assert_allclose(zt.grad.numpy(), mxnet_step_grad, rtol=1e-5, atol=1e-7)
    zt.grad = None
    weighted_bce(zt, torch.tensor(y), reduction="sum").backward()
    np.testing.assert_allclose(zt.grad.numpy(), mxnet_step_grad * classes, rtol=1e-5, atol=1e-7)


def test_hls_jitter_default_draws_like_imagerecorditer(tmp_path):
    """On a flat grey image a lightness offset shifts every pixel by exactly that offset, so ImageRecordIter's
    output shows MXNet's draw directly; the default draw must have its distribution (not the uniform one)."""
    ok, png = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))
    n = 3000
    recordio.write_recordio(tmp_path / "grey.rec",
                            ((i, recordio.pack(recordio.IRHeader(0, 0.0, i, 0), png.tobytes())) for i in range(n)))
    it = mx.io.ImageRecordIter(path_imgrec=str(tmp_path / "grey.rec"), path_imgidx=str(tmp_path / "grey.idx"),
                               data_shape=(3, 8, 8), batch_size=100, random_l=50, seed=1, preprocess_threads=1,
                               verbose=False)
    mxnet_offsets = np.concatenate([b.data[0].asnumpy()[:, 0, 0, 0] for b in it]) - 128
    rng = np.random.default_rng(0)
    ours = np.array([_offset(rng, 50, "approx_gaussian") for _ in range(n)])
    uniform = np.array([_offset(rng, 50, "uniform") for _ in range(n)])
    assert abs(mxnet_offsets.std() - ours.std()) < 1.2, (mxnet_offsets.std(), ours.std())
    assert abs(mxnet_offsets.std() - uniform.std()) > 3  # the older uniform draw is distinguishable
    np.testing.assert_allclose(np.percentile(mxnet_offsets, [10, 25, 50, 75, 90]),
                               np.percentile(ours, [10, 25, 50, 75, 90]), atol=2.5)


def test_recordio_is_byte_identical_to_im2rec(coco5, tmp_path):
    """A .rec made from a shuffled .lst: record ids and .idx keys are the .lst indices, as im2rec writes them."""
    lst = tmp_path / "train.lst"
    order = np.random.default_rng(0).permutation(len(coco5))[:40]
    subset = coco5.subset(order)
    lines = [f"{int(i) * 7 + 3}\t" + "\t".join(f"{v:.1f}" for v in subset.labels[k]) + f"\t{subset.paths[k]}\n"
             for k, i in enumerate(order)]  # non-consecutive indices, in shuffled order
    lst.write_text("".join(lines))
    from multilabel_ic import Dataset

    ours, ours_idx = Dataset.from_lst(lst, root=coco5.root, class_names=coco5.class_names).to_recordio(
        tmp_path / "ours.rec")
    subprocess.run([sys.executable, "-m", "mxnet.tools.im2rec", "--pack-label", "--pass-through", "--num-thread", "1",
                    str(tmp_path / "train"), str(coco5.root)], check=True, capture_output=True)
    assert ours.read_bytes() == (tmp_path / "train.rec").read_bytes()
    assert ours_idx.read_text() == (tmp_path / "train.idx").read_text()
    reader = mx.recordio.MXIndexedRecordIO(str(ours_idx), str(ours), "r")
    header, _ = mx.recordio.unpack(reader.read_idx(int(order[5]) * 7 + 3))
    assert header.id == int(order[5]) * 7 + 3
    np.testing.assert_array_equal(header.label, subset.labels[5])


@pytest.mark.parametrize("num_layers,size", [(18, 32), (18, 33), (18, 64), (20, 28)])
def test_mxnet_binds_our_artifact_and_agrees(num_layers, size, tmp_path):
    """The symbol json and .params we write bind in MXNet and give our network's probabilities: the 3x3 small stem
    up to 32 px (MXNet's height <= 32), and bn_data's gamma ignored (fix_gamma) even when the file stores 0.5."""
    from multilabel_ic.backends.local.gluon import predict_artifact

    torch.manual_seed(0)
    net = ResNetV2(5, num_layers, (3, size, size))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    args, aux = mxnet_state_dict(net)
    args = {k: v.numpy() for k, v in args.items()}
    aux = {k: v.numpy() for k, v in aux.items()}
    args["bn_data_gamma"] = np.full_like(args["bn_data_gamma"], 0.5)
    tar = write_model_tar(tmp_path / "model.tar.gz", {1: (args, aux)}, num_classes=5, num_layers=num_layers,
                          image_shape=(3, size, size), multi_label=True)
    x = np.random.default_rng(1).uniform(0, 255, (4, 3, size, size)).astype(np.float32)
    from multilabel_ic.model.predictor import LocalPredictor

    ours = torch.sigmoid(LocalPredictor(tar, device="cpu").model(torch.from_numpy(x))).detach().numpy()
    theirs = predict_artifact(tar, x)
    # two float32 libraries summing in their own orders: 1.1e-4 at most on an AVX2 CPU (Zen 3), under 1e-4 on AVX-512
    assert np.abs(ours - theirs).max() <= 2e-4


@pytest.mark.parametrize("kind,extra", [("sgd", dict(momentum=0.9)), ("nag", dict(momentum=0.9)),
                                        ("adam", dict(beta1=0.9, beta2=0.999, epsilon=1e-8)),
                                        ("rmsprop", dict(gamma1=0.9, epsilon=1e-8))])
def test_optimizer_rules_step_like_mx_optimizer(kind, extra):
    """Five steps of each rule with weight decay and MultiFactorScheduler (a step after update 3), against
    mx.optimizer itself. NAG is compared where MXNet <= 1.4 (the algorithm's era, our rule) and 1.9.1 agree: a
    constant learning rate and no weight decay (1.9.1's kernel, run in place, recomputes the stored momentum's
    decay term from the updated weight; docs/parity.md)."""
    from multilabel_ic.backends.local.optim import MultiFactorSchedule, MXNetOptimizer

    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(5)]
    steps = [] if kind == "nag" else [3]
    wd = 0.0 if kind == "nag" else 1e-2
    sched_mx = mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=0.1, base_lr=0.05) if steps else None
    opt = mx.optimizer.create(kind, learning_rate=0.05, wd=wd, lr_scheduler=sched_mx, **extra)
    w_mx = mx.nd.array(w0)
    state = opt.create_state(0, w_mx)
    p = torch.nn.Parameter(torch.tensor(w0))
    ours = MXNetOptimizer([{"params": [p], "wd": wd}], kind=kind, lr=0.05, **extra)
    schedule = MultiFactorSchedule(0.05, steps, 0.1)
    for update, g in enumerate(grads, start=1):
        opt.update(0, w_mx, mx.nd.array(g), state)
        for group in ours.param_groups:
            group["lr"] = schedule(update)
        p.grad = torch.tensor(g)
        ours.step()
        np.testing.assert_allclose(p.detach().numpy(), w_mx.asnumpy(), rtol=2e-5, atol=2e-6)


def test_nag_differences_from_mxnet_1_9_are_the_documented_ones():
    """What docs/parity.md says of NAG, measured: with weight decay, 1.9.1's in-place kernel stores the momentum's
    decay term from the updated weight (one step: mom = -lr * wd * w_new, not -lr * wd * w)."""
    w, g, mom = mx.nd.array([1.0]), mx.nd.array([0.0]), mx.nd.array([0.0])
    mx.nd.nag_mom_update(w, g, mom, out=w, lr=0.1, momentum=0.9, wd=0.5)
    assert w.asscalar() == pytest.approx(1 - 0.1 * 0.5 * 1.9)  # the weight step is the <= 1.4 rule's
    assert mom.asscalar() == pytest.approx(-0.1 * 0.5 * w.asscalar())  # the stored momentum is not


@pytest.mark.parametrize("loss,settings", [("bce", {}), ("asl", {}), ("asl", {"asl_gamma_pos": 1, "asl_clip": 0}),
                                           ("asl", {"asl_gamma_neg": 2, "asl_clip": 0.2})])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_gluon_engine_computes_each_loss_as_the_pytorch_engine_does(loss, settings, weighted):
    """The class: every multi-label loss, its value and its gradient from MXNet's NDArrays (gluon._loss) equal the
    PyTorch engine's criterion (loss.create_loss), weighted or not."""
    from multilabel_ic import Hyperparameters
    from multilabel_ic.backends.local.gluon import _loss
    from multilabel_ic.backends.local.loss import TERMS, create_loss
    from multilabel_ic.local_options import LocalOptions

    assert loss in TERMS
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, size=(6, 5)).astype(np.float32)
    y = (rng.random((6, 5)) < 0.4).astype(np.float32)
    w = (rng.random(5) + 0.5).astype(np.float32), (rng.random(5) + 0.5).astype(np.float32)
    options = LocalOptions(loss=loss, **settings)
    hp = Hyperparameters(num_classes=5, num_training_samples=64, mini_batch_size=8, multi_label=1)
    zt = torch.tensor(z, requires_grad=True)
    create_loss(hp, options, tuple(map(torch.tensor, w)) if weighted else None)(zt, torch.tensor(y)).backward()
    zm = mx.nd.array(z)
    zm.attach_grad()
    with mx.autograd.record():
        per = _loss(zm, mx.nd.array(y), True, *(mx.nd.array(v).reshape((1, -1)) for v in w) if weighted
                    else (None, None), options)
    per.backward()
    assert float(per.mean().asscalar()) == pytest.approx(float(create_loss(
        hp, options, tuple(map(torch.tensor, w)) if weighted else None)(torch.tensor(z), torch.tensor(y))), rel=1e-5)
    np.testing.assert_allclose(zm.grad.asnumpy() / z.shape[0], zt.grad.numpy(), rtol=1e-4, atol=1e-7)
