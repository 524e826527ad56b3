import logging
import math

import numpy as np
import pytest
import torch

from multilabel_ic import Hyperparameters
from multilabel_ic.backends.local.loss import class_weights, weighted_bce
from multilabel_ic.backends.local.optim import (
    MultiFactorSchedule,
    MXNetOptimizer,
    param_groups_for,
)
from multilabel_ic.model.network import ResNetV2, mxnet_name


def _step(kind, w0, grads, **kw):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    opt = MXNetOptimizer([{"params": [w], "wd": kw.pop("wd", 0.0)}], kind=kind, **kw)
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    return w.detach().numpy()


def test_sgd_momentum_matches_mxnet_rule():
    # g' = g + wd*w; mom = 0.9*mom - lr*g'; w += mom
    w, lr, wd, m = 1.0, 0.1, 0.01, 0.9
    mom = 0.0
    for g in (0.5, -0.2):
        gp = g + wd * w
        mom = m * mom - lr * gp
        w = w + mom
    got = _step("sgd", [1.0], [[0.5], [-0.2]], lr=lr, wd=wd, momentum=m)
    assert got[0] == pytest.approx(w, rel=1e-6)


def test_nag_matches_mxnet_rule():
    w, lr, m = 2.0, 0.05, 0.9
    state = 0.0
    for g in (1.0, 0.3):
        state = m * state + g
        w = w - lr * (g + m * state)
    assert _step("nag", [2.0], [[1.0], [0.3]], lr=lr, momentum=m)[0] == pytest.approx(w, rel=1e-6)


def test_adam_eps_is_not_bias_corrected():
    w, lr, b1, b2, eps = 0.5, 0.01, 0.9, 0.999, 1e-3
    mm = v = 0.0
    for t, g in enumerate((0.2, -0.1), 1):
        mm = b1 * mm + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * mm / (math.sqrt(v) + eps)
    got = _step("adam", [0.5], [[0.2], [-0.1]], lr=lr, beta1=b1, beta2=b2, epsilon=eps)
    assert got[0] == pytest.approx(w, rel=1e-6)
    # PyTorch's Adam corrects eps too, so it lands elsewhere with a large eps
    p = torch.nn.Parameter(torch.tensor([0.5]))
    torch_adam = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    for g in (0.2, -0.1):
        p.grad = torch.tensor([g])
        torch_adam.step()
    assert abs(float(p.detach()[0]) - w) > 1e-5


def test_rmsprop_eps_inside_the_sqrt():
    w, lr, gm, eps = 1.0, 0.01, 0.9, 1e-2
    n = 0.0
    for g in (0.4, 0.1):
        n = gm * n + (1 - gm) * g * g
        w = w - lr * g / math.sqrt(n + eps)
    assert _step("rmsprop", [1.0], [[0.4], [0.1]], lr=lr, gamma1=gm, epsilon=eps)[0] == pytest.approx(w, rel=1e-6)


def test_weight_decay_only_on_weights_and_gammas():
    model = ResNetV2(3, 18, (3, 64, 64))
    decay, no_decay = param_groups_for(model, 1e-4)
    names = {id(p): mxnet_name(k, model) for k, p in model.named_parameters()}
    assert decay["wd"] == 1e-4 and no_decay["wd"] == 0.0
    assert all(names[id(p)].endswith(("_weight", "_gamma")) for p in decay["params"])
    assert all(names[id(p)].endswith(("_beta", "_bias")) for p in no_decay["params"])
    assert "bn_data_gamma" not in {names[id(p)] for p in decay["params"]}  # fixed gamma, not trained
    assert "fc1_bias" in {names[id(p)] for p in no_decay["params"]}


def test_multifactor_schedule_changes_after_the_epoch(caplog):
    hp = Hyperparameters(num_classes=2, num_training_samples=100, mini_batch_size=10, learning_rate=0.1,
                         lr_scheduler_step="2,4", lr_scheduler_factor=0.5)
    s = MultiFactorSchedule.from_hyperparameters(hp)
    assert hp.steps_per_epoch(schedule=True) == 10 and s.steps == [20, 40]
    caplog.set_level(logging.INFO, logger="multilabel_ic")
    # num_update counts from 1; the LR changes once num_update > step, i.e. from the first batch of epoch index 2
    assert [s(u) for u in (1, 20, 21, 40, 41, 100)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert "Update[21]: Change learning rate to 5.00000e-02" in caplog.text
    assert MultiFactorSchedule.from_hyperparameters(hp, begin_epoch=3).steps == [10]
    constant = MultiFactorSchedule.from_hyperparameters(hp.replace(lr_scheduler_step=None))
    assert constant(10_000) == 0.1


def test_class_weights_formulas():
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    w_pos, w_neg = class_weights(y, "neg_pos_ratio")
    np.testing.assert_allclose(w_pos, [1 / 3, 3.0, 1.0])  # class 2 has no positives -> 1
    np.testing.assert_allclose(w_neg, [1, 1, 1])
    w_pos, w_neg = class_weights(y, "balanced")
    np.testing.assert_allclose(w_pos, [4 / 6, 2.0, 1.0])
    np.testing.assert_allclose(w_neg, [2.0, 4 / 6, 1.0])


def test_weighted_bce_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = torch.sigmoid(logits)
    w_pos, w_neg = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.5])
    weighted = -(w_pos * y * torch.log(sig) + w_neg * (1 - y) * torch.log(1 - sig))
    plain = -(y * torch.log(sig) + (1 - y) * torch.log(1 - sig))
    # default: the mean over classes and batch (MXNet's head); "sum": summed over classes, mean over the batch
    assert weighted_bce(logits, y, w_pos, w_neg).item() == pytest.approx(weighted.mean().item(), rel=1e-5)
    assert weighted_bce(logits, y).item() == pytest.approx(plain.mean().item(), rel=1e-5)
    assert weighted_bce(logits, y, w_pos, w_neg, reduction="sum").item() == pytest.approx(
        weighted.sum(1).mean().item(), rel=1e-5)
    assert weighted_bce(logits, y, reduction="sum").item() == pytest.approx(plain.sum(1).mean().item(), rel=1e-5)


def test_default_bce_gradient_is_the_logistic_regression_outputs():
    """MXNet's LogisticRegressionOutput backward is (sigmoid(z) - y) / C per sample, and Module's rescale_grad divides
    by the batch: the default loss must give exactly that gradient (the summed form gives C times more)."""
    torch.manual_seed(0)
    batch, classes = 4, 5
    z = torch.randn(batch, classes, requires_grad=True)
    y = (torch.rand(batch, classes) > 0.5).float()
    weighted_bce(z, y).backward()
    head = (torch.sigmoid(z.detach()) - y) / classes / batch
    torch.testing.assert_close(z.grad, head, rtol=1e-6, atol=1e-7)
    z.grad = None
    weighted_bce(z, y, reduction="sum").backward()
    torch.testing.assert_close(z.grad, head * classes, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["sgd", "nag", "adam", "rmsprop"])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_foreach_path_equals_the_per_tensor_rule(kind, wd):
    torch.manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    out = {}
    for foreach in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = MXNetOptimizer([{"params": params, "wd": wd}], kind=kind, lr=0.05, momentum=0.9, epsilon=1e-3,
                             foreach=foreach)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        out[foreach] = [p.detach() for p in params]
        assert all(torch.equal(p.grad, g) for p, g in zip(params, grads[-1]))  # gradients are left untouched
    for a, b in zip(out[True], out[False]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_sgd_without_momentum_matches_plain_gradient_descent():
    got = _step("sgd", [1.0], [[0.5]], lr=0.1, wd=0.0, momentum=0.0)
    assert got[0] == pytest.approx(1.0 - 0.1 * 0.5)


def test_padded_accuracy_counts_the_wrapped_samples():
    from multilabel_ic.backends.local.epochlog import padded_accuracy

    labels = np.array([[1, 0], [0, 1], [1, 1]])
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.7]])  # row 1 gets one of two decisions wrong
    # batch 4: the last batch is filled with row 0 again -> 7 of 8 decisions right (not 5 of 6)
    assert padded_accuracy(labels, scores, 4, True) == pytest.approx(7 / 8)
    assert padded_accuracy(labels, scores, 3, True) == pytest.approx(5 / 6)
    single = np.eye(2)[[0, 1, 1]]
    assert padded_accuracy(single, np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), 2, False) == pytest.approx(3 / 4)
