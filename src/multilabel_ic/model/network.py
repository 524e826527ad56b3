"""The algorithm's network: MXNet ``symbols/resnet.py`` pre-activation (v2) ResNet, in PyTorch.

Input is raw 0..255 RGB (the ``bn_data`` BatchNorm with gamma fixed at 1 normalises it). Every parameter maps one to
one onto the MXNet name (``stage1_unit1_conv1_weight``, ``bn_data_gamma``, ``fc1_weight``...) through
:func:`mxnet_state_dict` / :func:`load_mxnet_state_dict`, so artifacts move between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import require

require("torch", extra="local")  # a missing PyTorch names the pip line that installs it

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from .architecture import small_stem, units_for  # noqa: E402

if TYPE_CHECKING:
    from ..hyperparameters import Hyperparameters

__all__ = ["ResNetV2", "create_network", "units_for", "mxnet_state_dict", "load_mxnet_state_dict", "mxnet_name",
           "to_network_input"]

BN_EPS = 2e-5
BN_MOMENTUM = 0.1  # MXNet momentum 0.9 = PyTorch momentum 0.1

def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class _Unit(nn.Module):
    """``residual_unit``: BN-ReLU-conv (x2, or x3 for bottlenecks); the projection shortcut reads act1."""

    def __init__(self, cin: int, cout: int, stride: int, dim_match: bool, bottle_neck: bool):
        super().__init__()
        self.bottle_neck = bottle_neck
        self.bn1 = _bn(cin)
        if bottle_neck:
            mid = cout // 4
            self.conv1 = nn.Conv2d(cin, mid, 1, 1, 0, bias=False)
            self.bn2 = _bn(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn3 = _bn(mid)
            self.conv3 = nn.Conv2d(mid, cout, 1, 1, 0, bias=False)
        else:
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = _bn(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.sc = None if dim_match else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place ReLU and add: BatchNorm's and conv's backward need their inputs, not their outputs, so this
        # changes no value and saves two fresh activations per unit (allocation is a large part of a CPU step)
        act1 = F.relu(self.bn1(x), inplace=True)
        out = self.conv1(act1)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        if self.bottle_neck:
            out = self.conv3(F.relu(self.bn3(out), inplace=True))
        shortcut = x if self.sc is None else self.sc(act1)
        out += shortcut
        return out


class ResNetV2(nn.Module):
    """MXNet resnet.py for ``num_layers`` and ``image_shape`` (C, H, W); the logits come from ``fc1``."""

    def __init__(self, num_classes: int, num_layers: int = 18, image_shape: tuple[int, int, int] = (3, 224, 224)):
        super().__init__()
        channels, height, _ = image_shape
        units, filters, bottle = units_for(num_layers, height)
        self.num_layers, self.image_shape, self.num_classes = num_layers, tuple(image_shape), num_classes
        self.small = small_stem(height)  # the stem; the stages follow units_for (28 px)
        self.num_stages = len(units)
        self.bn_data = _bn(channels)
        self.bn_data.weight.requires_grad_(False)  # fix_gamma=True
        if self.small:
            self.conv0 = nn.Conv2d(channels, filters[0], 3, 1, 1, bias=False)
        else:
            self.conv0 = nn.Conv2d(channels, filters[0], 7, 2, 3, bias=False)
            self.bn0 = _bn(filters[0])
            self.pool0 = nn.MaxPool2d(3, 2, 1)
        self.stage_names: list[str] = []
        for i, n in enumerate(units):
            stride = 1 if i == 0 else 2
            for j in range(n):
                name = f"stage{i + 1}_unit{j + 1}"
                cin = filters[i] if j == 0 else filters[i + 1]
                unit = _Unit(cin, filters[i + 1], stride if j == 0 else 1, dim_match=j > 0, bottle_neck=bottle)
                self.add_module(name, unit)
                self.stage_names.append(name)
        self.bn1 = _bn(filters[-1])
        self.fc1 = nn.Linear(filters[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MXNet fit.py's ``Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)``: N(0, sqrt(2/fan_in)) for
        conv and FC weights; biases and betas 0, gammas 1, moving mean 0, moving var 1."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def reset_classifier(self, num_classes: int | None = None) -> None:
        n = num_classes or self.num_classes
        self.fc1 = nn.Linear(self.fc1.in_features, n).to(self.fc1.weight.device)
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.fc1.bias)
        self.num_classes = n

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if _stem_shortcut_applies(self, x):
            x = _DataStem.apply(x, self.bn_data.weight, self.bn_data.bias, self.conv0.weight,
                                _StemSpec(self.bn_data, self.conv0))
        else:
            x = self.conv0(self.bn_data(x))
        if not self.small:
            x = self.pool0(F.relu(self.bn0(x), inplace=True))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = F.relu(self.bn1(x), inplace=True)
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        return self.fc1(feats.to(self.fc1.weight.dtype))  # float16: fc1 runs in float32 as in MXNet


class _StemSpec:
    """What :class:`_DataStem` needs of ``bn_data`` and ``conv0`` besides their parameters."""

    def __init__(self, bn: nn.BatchNorm2d, conv: nn.Conv2d):
        self.bn, self.stride, self.padding = bn, conv.stride, conv.padding


def _stem_shortcut_applies(model: ResNetV2, x: torch.Tensor) -> bool:
    """The stem's shortcut serves an eager training step on data (no gradient wanted for the images themselves);
    tracing, export and compilation see the two plain modules."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() \
            or torch.onnx.is_in_onnx_export():
        return False
    return (torch.is_grad_enabled() and not x.requires_grad and type(model.bn_data) is nn.BatchNorm2d
            and model.bn_data.bias.requires_grad and not model.bn_data.weight.requires_grad
            and model.conv0.bias is None)


class _DataStem(torch.autograd.Function):
    """``conv0(bn_data(x))`` for a batch of images, with the gradients a training step needs and no more.

    ``bn_data`` normalises the raw images; only its beta learns (gamma is fixed). dL/dbeta is the sum of conv0's
    input gradient over the batch and the pixels, and that gradient is linear in conv0's output gradient, so it is
    taken for the batch-summed output gradient (one image, not N): the full-resolution input gradient that autograd
    would compute for N images is never formed. The forward normalises with one ``var_mean`` pass and updates the
    moving statistics as BatchNorm does. Values equal the two-module path to float rounding (tests/test_local_network.py).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, weight, spec: _StemSpec):
        bn = spec.bn
        assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
        if bn.training:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                n = x.numel() // x.shape[1]
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = gamma * torch.rsqrt(var + bn.eps)
        shape = (1, -1, 1, 1)
        z = torch.addcmul((beta - mean * scale).view(shape), x, scale.view(shape))
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else z.dtype
        zc, wc = z.to(dtype), weight.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = F.conv2d(zc, wc, None, spec.stride, spec.padding)
        ctx.save_for_backward(zc, wc)
        ctx.spec, ctx.weight_dtype = spec, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        zc, wc = ctx.saved_tensors
        spec = ctx.spec
        grad_out = grad_out.to(wc.dtype)
        conv = dict(bias_sizes=None, stride=list(spec.stride), padding=list(spec.padding), dilation=[1, 1],
                    transposed=False, output_padding=[0, 0], groups=1)
        _, grad_w, _ = torch.ops.aten.convolution_backward(grad_out, zc, wc, output_mask=[False, True, False],
                                                           **conv)
        summed = grad_out.sum(0, keepdim=True)
        grad_z, _, _ = torch.ops.aten.convolution_backward(summed, zc[:1], wc, output_mask=[True, False, False],
                                                           **conv)
        grad_beta = grad_z.float().sum(dim=(0, 2, 3))
        return None, None, grad_beta, grad_w.to(ctx.weight_dtype), None


def create_network(hp: Hyperparameters) -> ResNetV2:
    """Factory from :class:`~multilabel_ic.Hyperparameters`."""
    return ResNetV2(hp.num_classes, hp.num_layers, hp.input_shape)


_BN_SUFFIX = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}


def mxnet_name(torch_key: str, model: nn.Module) -> str | None:
    """``stage1_unit1.bn1.weight`` -> ``stage1_unit1_bn1_gamma``; None for keys MXNet does not have."""
    module_path, _, attr = torch_key.rpartition(".")
    if attr == "num_batches_tracked":
        return None
    module = model.get_submodule(module_path)
    base = module_path.replace(".", "_")
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # BatchNorm2d, or SyncBatchNorm after conversion
        return f"{base}_{_BN_SUFFIX[attr]}"
    return f"{base}_{attr}"


def mxnet_state_dict(model: ResNetV2) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(arg_params, aux_params) with MXNet names; moving statistics are aux, everything else arg."""
    args: dict[str, torch.Tensor] = {}
    aux: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = mxnet_name(key, model)
        if name is None:
            continue
        (aux if name.endswith(("moving_mean", "moving_var")) else args)[name] = value.detach().float().cpu()
    return args, aux


def load_mxnet_state_dict(model: ResNetV2, params: dict[str, torch.Tensor], *, skip_fc: bool = False,
                          strict: bool = True) -> list[str]:
    """Load MXNet-named parameters (``arg:``/``aux:`` prefixes allowed); return the names that were not loaded.

    ``skip_fc`` leaves ``fc1`` (and MX-FT's ``fc``) alone, for transfer learning. Shape mismatches raise.
    """
    clean = {k.split(":", 1)[-1]: v for k, v in params.items()}
    state = model.state_dict()
    missing = []
    new_state = {}
    for key in state:
        name = mxnet_name(key, model)
        if name is None:
            continue
        if skip_fc and name.startswith("fc1_"):
            missing.append(name)
            continue
        if name not in clean:
            missing.append(name)
            continue
        value = torch.as_tensor(clean[name])
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(f"parameter {name}: shape {tuple(value.shape)} in the file, "
                             f"{tuple(state[key].shape)} in the network")
        if name == "bn_data_gamma":
            # MXNet builds bn_data with fix_gamma=True: the stored gamma (which weight decay lets drift from 1 in a
            # SageMaker-trained model) is ignored and 1 is used, so an artifact predicts as the endpoint does
            value = torch.ones_like(value)
        new_state[key] = value.to(state[key].dtype)
    if strict and missing and not skip_fc:
        raise ValueError(f"parameters missing from the file: {', '.join(missing[:8])}"
                         f"{' ...' if len(missing) > 8 else ''}")
    model.load_state_dict(new_state, strict=False)
    return missing


def to_network_input(images: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 NHWC (host) -> float32 NCHW in 0..255 (device): what ``bn_data`` expects."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
