"""The ResNet layouts of MXNet ``symbols/resnet.py`` (units per stage, filters, bottleneck), without torch, so that the
artifact's symbol graph can be written by code that never imports a deep-learning framework.
"""

from __future__ import annotations

from ..exceptions import ArtifactError

__all__ = ["units_for", "small_stem"]


def small_stem(height: int) -> bool:
    """MXNet resnet.py's ``resnet()``: images up to 32 px (CIFAR-like) get a 3x3 stride-1 ``conv0`` with no ``bn0``
    and no max-pool. The stage layout switches at another height (``units_for``: 28 px), so 29-32 px images have the
    small stem *and* the ImageNet stages."""
    return height <= 32

_UNITS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3],
          200: [3, 24, 36, 3], 269: [3, 30, 48, 8]}


def units_for(num_layers: int, height: int) -> tuple[list[int], list[int], bool]:
    """(units per stage, filter list, bottleneck) exactly as MXNet resnet.py ``get_symbol`` chooses them."""
    if height <= 28:
        if (num_layers - 2) % 9 == 0 and num_layers >= 164:
            per, filters, bottle = (num_layers - 2) // 9, [16, 64, 128, 256], True
        elif (num_layers - 2) % 6 == 0 and num_layers < 164:
            per, filters, bottle = (num_layers - 2) // 6, [16, 16, 32, 64], False
        else:
            raise ArtifactError(f"no small-image ResNet with {num_layers} layers (need (n-2) % 6 == 0, n < 164)")
        return [per] * 3, filters, bottle
    if num_layers not in _UNITS:
        raise ArtifactError(f"no ResNet with {num_layers} layers; use one of {sorted(_UNITS)}")
    bottle = num_layers >= 50
    filters = [64, 256, 512, 1024, 2048] if bottle else [64, 64, 128, 256, 512]
    return _UNITS[num_layers], filters, bottle
