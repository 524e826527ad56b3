"""The losses of a local run: create_loss, and the asymmetric loss (ASL, Ridnik et al., ICCV 2021) against the
paper's formula written out here on its own, in float64 NumPy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from multilabel_ic import Hyperparameters
from multilabel_ic.backends.local.loss import TERMS, create_loss, weighted_bce
from multilabel_ic.data.dataset import Dataset
from multilabel_ic.exceptions import UsageError
from multilabel_ic.local_options import LocalOptions
from multilabel_ic.model.transforms import AugmentOptions

RNG = np.random.default_rng(7)
Z = RNG.normal(0, 3, size=(6, 5)).astype(np.float32)
Z[0, :2] = [30.0, -30.0]  # saturated logits: the log terms must stay finite
Y = (RNG.random((6, 5)) < 0.4).astype(np.float32)
HP = Hyperparameters(num_classes=5, num_training_samples=64, mini_batch_size=8, multi_label=1)


def paper_asl(z, y, gamma_pos, gamma_neg, m, w_pos=None, w_neg=None):
    """ASL per element: L+ = (1 - p)^gamma+ log(p), L- = p_m^gamma- log(1 - p_m), p_m = max(p - m, 0);
    loss = -(y L+ + (1 - y) L-), optionally weighted per class."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    p_m = np.maximum(p - m, 0)
    l_pos = (1 - p) ** gamma_pos * np.log(np.clip(p, 1e-300, None))
    l_neg = p_m ** gamma_neg * np.log(np.clip(1 - p_m, 1e-300, None))
    w_pos = np.ones(z.shape[1]) if w_pos is None else w_pos
    w_neg = np.ones(z.shape[1]) if w_neg is None else w_neg
    return -(w_pos * y * l_pos + w_neg * (1 - y) * l_neg)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip", [(0, 4, 0.05), (1, 4, 0.05), (0, 2, 0.2), (0, 4, 0.0),
                                                      (2, 0, 0.1), (0, 0, 0.0)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_asl_is_the_paper_s_formula(gamma_pos, gamma_neg, clip, reduction):
    options = LocalOptions(loss="asl", asl_gamma_pos=gamma_pos, asl_gamma_neg=gamma_neg, asl_clip=clip,
                           bce_reduction=reduction)
    got = create_loss(HP, options)(torch.from_numpy(Z), torch.from_numpy(Y)).item()
    per = paper_asl(Z, Y, gamma_pos, gamma_neg, clip)
    want = per.sum(axis=1).mean() if reduction == "sum" else per.mean()
    assert np.isfinite(got) and got == pytest.approx(want, rel=2e-5, abs=1e-6)


def test_asl_with_class_weights_weighs_each_side():
    w_pos, w_neg = RNG.random(5).astype(np.float32) + 0.5, RNG.random(5).astype(np.float32) + 0.5
    options = LocalOptions(loss="asl", asl_gamma_pos=1, asl_gamma_neg=3, asl_clip=0.1)
    got = create_loss(HP, options, (torch.from_numpy(w_pos), torch.from_numpy(w_neg)))(
        torch.from_numpy(Z), torch.from_numpy(Y)).item()
    assert got == pytest.approx(paper_asl(Z, Y, 1, 3, 0.1, w_pos, w_neg).mean(), rel=2e-5)


def test_asl_without_focusing_or_margin_is_the_bce_and_its_gradient_too():
    z = torch.from_numpy(Z).requires_grad_()
    asl = create_loss(HP, LocalOptions(loss="asl", asl_gamma_neg=0, asl_gamma_pos=0, asl_clip=0))(z, torch.from_numpy(Y))
    (g_asl,) = torch.autograd.grad(asl, z)
    z2 = torch.from_numpy(Z).requires_grad_()
    bce = weighted_bce(z2, torch.from_numpy(Y))
    (g_bce,) = torch.autograd.grad(bce, z2)
    assert asl.item() == pytest.approx(bce.item(), rel=1e-6)
    assert torch.allclose(g_asl, g_bce, atol=1e-7)


def test_asl_down_weights_easy_negatives_and_discards_very_easy_ones():
    """The paper's point: an easy negative (p below the margin) contributes nothing, and a negative's loss is
    smaller than under the BCE."""
    options = LocalOptions(loss="asl")
    y = torch.zeros(1, 3)
    z = torch.tensor([[-5.0, 0.0, 2.0]])  # p = 0.0067 (< m = 0.05), 0.5, 0.88
    per_asl = [create_loss(HP.replace(num_classes=1), options)(z[:, i:i + 1], y[:, i:i + 1]).item() for i in range(3)]
    per_bce = [weighted_bce(z[:, i:i + 1], y[:, i:i + 1]).item() for i in range(3)]
    assert per_asl[0] == 0.0 and all(a < b for a, b in zip(per_asl, per_bce))


def test_every_loss_gives_finite_gradients_at_saturated_logits():
    """The class: each multi-label loss of the table, at logits far past float32's sigmoid range."""
    z = torch.tensor([[60.0, -60.0, 0.0, 17.0, -17.0]] * 2, requires_grad=True)
    y = torch.tensor([[1.0, 0, 1, 0, 1], [0, 1, 0, 1, 0]])
    for name in TERMS:
        loss = create_loss(HP, LocalOptions(loss=name))(z, y)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), name


def test_a_multi_label_loss_is_refused_for_a_single_label_run():
    with pytest.raises(UsageError, match="loss='asl' is a multi-label loss, but multi_label=0"):
        create_loss(HP.replace(multi_label=0), LocalOptions(loss="asl"))
    single = create_loss(HP.replace(multi_label=0), LocalOptions())
    target = torch.eye(5)[[1, 3]]
    logits = torch.tensor([[0.0, 5, 0, 0, 0], [0.0, 0, 0, 5, 0]])
    assert single(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target.argmax(1)).item())


# ---- the run fingerprint: a run folder made before this version resumes after it

_DATA = Dataset(["a/1.jpg", "b/2.jpg", "c/3.jpg"], np.array([[1, 0], [0, 1], [1, 1]], np.uint8), ["cat", "dog"],
                root="/nonexistent-root")
_VAL = Dataset(["d/4.jpg"], np.array([[0, 1]], np.uint8), ["cat", "dog"], root="/nonexistent-root")
# sha256 of the fingerprint's sorted JSON, as 0.x recorded it before losses were selectable (pinned)
PINNED = {
    "default": "fdb8cd8d6b8d02e92d0b3a4faaa45a919b305b7df6d87729e42ccbe3bf6e7c89",
    "weighted": "2edca1f5b3438840a1309683c688aa380460ef2872e4b334745bbdd3f8ad1877",
    "gluon": "b6f963a3259f34a377bbdae75f5d45c81694e0c759038225c6eca3bef7c7ecc8",
}
_BASE = dict(num_classes=2, num_training_samples=3, mini_batch_size=2)
CONFIGS = {
    "default": (dict(_BASE, multi_label=1), {}, _VAL, None),
    "weighted": (dict(_BASE, multi_label=1, use_weighted_loss=1, image_shape="3,32,32", epochs=3),
                 dict(seed=5, weighted_loss="balanced", input_pipeline="reference",
                      augment=AugmentOptions(fill_value=255)), _VAL, {"training images": "jpeg",
                                                                       "validation images": None}),
    "gluon": (dict(_BASE, use_pretrained_model=1), dict(engine="gluon", pretrained="/x.params",
                                                        pretrained_sha256="ab", cuda_half="bfloat16"), None, None),
}


def _digest(name: str, **more) -> str:
    from multilabel_ic.backends.local.train import run_fingerprint

    hp, options, val, cache = CONFIGS[name]
    fp = run_fingerprint(Hyperparameters(**hp), _DATA, val, LocalOptions(**{**options, **more}), cache=cache)
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_fingerprint_of_an_unchanged_configuration_is_unchanged(name):
    assert _digest(name) == PINNED[name]


def test_the_loss_and_its_settings_are_in_the_fingerprint():
    asl = {_digest("default", loss="asl"), _digest("default", loss="asl", asl_gamma_neg=2),
           _digest("default", loss="asl", asl_clip=0)}
    assert len(asl) == 3 and PINNED["default"] not in asl
    # the ASL settings of a BCE run change nothing it trains with
    assert _digest("default", asl_gamma_neg=2) == PINNED["default"]


def test_a_run_trains_with_asl_and_does_not_resume_as_a_bce_run(coco5, tmp_path):
    """End to end on the PyTorch engine (ResNet-20 at 28 px, one epoch): --loss asl trains, is recorded in the run,
    and the same folder refuses to resume under the BCE."""
    from multilabel_ic import Trainer
    from multilabel_ic.exceptions import RunConflictError

    data = coco5.subset(range(16))
    hp = Hyperparameters(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=1,
                         multi_label=1, num_training_samples=len(data), optimizer="adam", learning_rate=0.01)
    options = LocalOptions(num_workers=0, progress=False, loss="asl")
    model = Trainer(hp, output_dir=tmp_path, options=options).fit(data)
    assert np.isfinite(model.metrics["epochs"][0]["train_loss"])
    assert json.loads((tmp_path / "checkpoints" / "run.json").read_text())["loss"]["name"] == "asl"
    with pytest.raises(RunConflictError, match="trained with other loss"):
        Trainer(hp, output_dir=tmp_path, options=LocalOptions(num_workers=0, progress=False)).fit(data)
