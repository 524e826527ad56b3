import copy

import numpy as np
import pytest
import torch

from multilabel_ic.hyperparameters import LARGE_DEPTHS, SMALL_DEPTHS
from multilabel_ic.model import network
from multilabel_ic.model.network import ResNetV2, load_mxnet_state_dict, mxnet_state_dict, units_for


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("depth", LARGE_DEPTHS)
def test_large_depths_shapes_and_layer_counts(depth):
    torch.manual_seed(0)
    model = ResNetV2(5, depth, (3, 32, 32)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32) * 255)
    assert out.shape == (2, 5)
    units, filters, bottle = units_for(depth, 224)
    convs_per_unit = 3 if bottle else 2
    # conv0 + the units' convs (+4 projection shortcuts) = depth - 1 (+4); fc1 is the last layer
    assert _count(model, torch.nn.Conv2d) == 1 + sum(units) * convs_per_unit + 4
    assert 1 + sum(units) * convs_per_unit + 1 == depth
    assert model.fc1.in_features == filters[-1]


@pytest.mark.parametrize("depth", SMALL_DEPTHS)
def test_small_image_depths(depth):
    model = ResNetV2(10, depth, (1, 28, 28)).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 28, 28) * 255).shape == (3, 10)
    assert not hasattr(model, "bn0") and model.conv0.kernel_size == (3, 3)
    assert model.num_stages == 3 and model.fc1.in_features == 64
    assert len(model.stage_names) == 3 * (depth - 2) // 6


def test_mxnet_parameter_names_for_resnet18():
    args, aux = mxnet_state_dict(ResNetV2(5, 18, (3, 224, 224)))
    expected = {"bn_data_gamma", "bn_data_beta", "conv0_weight", "bn0_gamma", "bn0_beta", "bn1_gamma", "bn1_beta",
                "fc1_weight", "fc1_bias"}
    for s in range(1, 5):
        expected |= {f"stage{s}_unit1_sc_weight"}
        for u in (1, 2):
            expected |= {f"stage{s}_unit{u}_{p}" for p in ("bn1_gamma", "bn1_beta", "conv1_weight", "bn2_gamma",
                                                           "bn2_beta", "conv2_weight")}
    assert set(args) == expected
    assert set(aux) == {n.replace("gamma", "moving_mean") for n in expected if n.endswith("gamma")} | \
        {n.replace("gamma", "moving_var") for n in expected if n.endswith("gamma")}
    assert args["stage1_unit1_sc_weight"].shape == (64, 64, 1, 1)  # stage1 projection exists (MXNet, not torchvision)
    assert args["conv0_weight"].shape == (64, 3, 7, 7) and args["fc1_bias"].shape == (5,)


def test_structure_matches_mxnet_semantics():
    m = ResNetV2(5, 18, (3, 224, 224))
    assert m.bn_data.eps == 2e-5 and m.bn_data.momentum == 0.1 and not m.bn_data.weight.requires_grad
    assert all(c.bias is None for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    assert m.fc1.bias is not None
    # He-normal fan-in init: std of conv0 weights close to sqrt(2 / (3*7*7))
    assert float(m.conv0.weight.detach().std()) == pytest.approx(np.sqrt(2 / 147), rel=0.15)


def test_pre_activation_unit_order():
    """The projection shortcut reads the pre-activated input (act1), and there is no ReLU after the add."""
    torch.manual_seed(0)
    unit = ResNetV2(2, 18, (3, 64, 64)).stage2_unit1.eval()
    x = torch.randn(1, 64, 8, 8)
    act1 = torch.relu(unit.bn1(x))
    expected = unit.conv2(torch.relu(unit.bn2(unit.conv1(act1)))) + unit.sc(act1)
    assert torch.allclose(unit(x), expected, atol=1e-6)
    assert (unit(x) < 0).any()


def test_mxnet_state_dict_round_trip():
    torch.manual_seed(1)
    a = ResNetV2(3, 34, (3, 64, 64)).eval()
    for m in a.modules():  # non-trivial running stats
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    args, aux = mxnet_state_dict(a)
    b = ResNetV2(3, 34, (3, 64, 64)).eval()
    load_mxnet_state_dict(b, {**{f"arg:{k}": v for k, v in args.items()}, **{f"aux:{k}": v for k, v in aux.items()}})
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


def test_load_rejects_wrong_shapes_and_missing():
    m = ResNetV2(3, 18, (3, 64, 64))
    args, aux = mxnet_state_dict(m)
    args["fc1_weight"] = torch.zeros(7, 512)
    with pytest.raises(ValueError, match="fc1_weight: shape"):
        load_mxnet_state_dict(m, {**args, **aux})
    del args["fc1_weight"]
    with pytest.raises(ValueError, match="missing"):
        load_mxnet_state_dict(m, {**args, **aux})
    assert load_mxnet_state_dict(m, {**args, **aux}, skip_fc=True) == ["fc1_weight", "fc1_bias"]


@pytest.mark.parametrize("height, stem_3x3, stages", [(28, True, 3), (29, True, 4), (32, True, 4), (33, False, 4),
                                                       (224, False, 4)])
def test_stem_and_stages_switch_at_mxnets_heights(height, stem_3x3, stages):
    """MXNet resnet.py: ``resnet()`` uses the 3x3 stride-1 conv0 without bn0 and max-pool for height <= 32, while
    ``get_symbol()`` chooses the 3-stage layout only for height <= 28; a 3,32,32 SageMaker model has both."""
    from multilabel_ic.model.artifact import symbol_json

    layers = 20 if stages == 3 else 18
    model = ResNetV2(5, layers, (3, height, height)).eval()
    assert model.num_stages == stages
    assert model.conv0.kernel_size == ((3, 3) if stem_3x3 else (7, 7)) and hasattr(model, "bn0") is not stem_3x3
    with torch.no_grad():
        assert model(torch.rand(1, 3, height, height) * 255).shape == (1, 5)
    sym = symbol_json(num_classes=5, num_layers=layers, image_shape=(3, height, height), multi_label=True)
    names = {n["name"] for n in sym["nodes"]}
    conv0 = next(n for n in sym["nodes"] if n["name"] == "conv0")
    assert conv0["attrs"]["kernel"] == ("(3, 3)" if stem_3x3 else "(7, 7)")
    assert ("bn0" in names) is not stem_3x3 and ("pooling0" in names) is not stem_3x3
    args, _ = mxnet_state_dict(model)  # an artifact of the algorithm at this size loads into the network
    assert args["conv0_weight"].shape[2:] == ((3, 3) if stem_3x3 else (7, 7))


def test_bn_data_gamma_is_fixed_at_one_whatever_the_file_holds():
    """MXNet's bn_data has fix_gamma=True: the stored gamma is ignored (a SageMaker-trained model's drifts from 1
    under weight decay), so loading it must not change the predictions."""
    torch.manual_seed(0)
    model = ResNetV2(5, 18, (3, 64, 64)).eval()
    args, aux = mxnet_state_dict(model)
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        reference = model(x)
    drifted = {**args, "bn_data_gamma": torch.full_like(args["bn_data_gamma"], 0.5), **aux}
    other = ResNetV2(5, 18, (3, 64, 64)).eval()
    load_mxnet_state_dict(other, drifted)
    assert torch.equal(other.bn_data.weight, torch.ones(3))
    with torch.no_grad():
        assert torch.allclose(other(x), reference, atol=1e-6)


def _stem_pair(height: int):
    torch.manual_seed(0)
    fast = ResNetV2(5, 18, (3, height, height))
    with torch.no_grad():
        fast.bn_data.bias.normal_()
        fast.bn_data.running_mean.fill_(3.0)
    slow = copy.deepcopy(fast)
    return fast, slow


@pytest.mark.parametrize("height", [224, 32])
@pytest.mark.parametrize("training", [True, False])
def test_data_stem_shortcut_equals_bn_data_then_conv0(height, training):
    """The training step's stem (one var_mean pass, dL/dbeta from the batch-summed gradient) gives the values,
    gradients and moving statistics of bn_data followed by conv0."""
    fast, slow = _stem_pair(height)
    fast.train(training), slow.train(training)
    x = torch.rand(6, 3, height, height) * 255
    assert network._stem_shortcut_applies(fast, x)
    out = network._DataStem.apply(x, fast.bn_data.weight, fast.bn_data.bias, fast.conv0.weight,
                                  network._StemSpec(fast.bn_data, fast.conv0))
    ref = slow.conv0(slow.bn_data(x))
    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name in ("bn_data.bias", "conv0.weight"):
        got, want = dict(fast.named_parameters())[name].grad, dict(slow.named_parameters())[name].grad
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert fast.bn_data.weight.grad is None
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fast.bn_data, name), getattr(slow.bn_data, name), rtol=1e-6, atol=0)


def test_data_stem_shortcut_under_bfloat16_autocast_and_where_it_does_not_apply():
    fast, slow = _stem_pair(64)
    x = torch.rand(4, 3, 64, 64) * 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = fast(x), slow.conv0(slow.bn_data(x))
        assert fast.features(x).dtype == ref.dtype == torch.bfloat16
    out.float().sum().backward()
    assert fast.conv0.weight.grad.dtype == torch.float32 and torch.isfinite(fast.conv0.weight.grad).all()
    # an input that wants its own gradient (saliency) or inference take the two-module path
    assert not network._stem_shortcut_applies(fast, x.requires_grad_())
    with torch.no_grad():
        assert not network._stem_shortcut_applies(fast, x)
