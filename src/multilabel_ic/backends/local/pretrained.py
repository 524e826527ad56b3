"""ImageNet-pretrained weights for ``use_pretrained_model=1``: the MXNet model-zoo ``resnet-N-0000.params`` files.

Read without MXNet (see :mod:`multilabel_ic.model.params`); only ``fc1`` is re-initialised. Sources, in order: the
``pretrained`` file or URL the user gives, then the cache (``$MULTILABEL_IC_CACHE`` or ``~/.cache/multilabel_ic``),
then a download from the zoo (``$MULTILABEL_IC_MODEL_ZOO_URL`` overrides the base address).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...download import download
from ...exceptions import ArtifactError, DownloadError
from ...model.network import ResNetV2, load_mxnet_state_dict
from ...model.params import load_params

__all__ = ["zoo_url", "cache_dir", "resolve_pretrained", "load_pretrained", "ZOO_DEPTHS"]

log = logging.getLogger("multilabel_ic.train")
ZOO_BASE_URL = "http://data.mxnet.io/models/imagenet/resnet"
ZOO_DEPTHS = (18, 34, 50, 101, 152)  # imagenet1k resnets in the MXNet zoo; 200 is not published there


def zoo_url(num_layers: int) -> str:
    base = os.environ.get("MULTILABEL_IC_MODEL_ZOO_URL", ZOO_BASE_URL).rstrip("/")
    return f"{base}/{num_layers}-layers/resnet-{num_layers}-0000.params"


def cache_dir() -> Path:
    return Path(os.environ.get("MULTILABEL_IC_CACHE", Path.home() / ".cache" / "multilabel_ic")) / "models"


def resolve_pretrained(num_layers: int, source: str | os.PathLike | None = None, *, sha256: str | None = None,
                       progress: bool = True) -> Path:
    """Return a local path to the weights, downloading into the cache when needed."""
    if source is not None and "://" not in str(source):
        path = Path(source)
        if not path.exists():
            raise ArtifactError(f"pretrained weights file {path} not found.")
        return path
    url = str(source) if source is not None else zoo_url(num_layers)
    if source is None and num_layers not in ZOO_DEPTHS:
        raise ArtifactError(
            f"no ImageNet-pretrained ResNet-{num_layers} is published in the MXNet model zoo; pass "
            f"pretrained=<file or URL of a resnet-{num_layers} .params file> or use one of {list(ZOO_DEPTHS)}.")
    target = cache_dir() / url.rsplit("/", 1)[-1]
    try:  # a cached file that still matches its recorded SHA-256 is reused without network access
        return download(url, target, sha256=sha256, progress=progress)
    except DownloadError as exc:
        raise DownloadError(
            f"Could not get the pretrained weights for ResNet-{num_layers} from {url} ({exc}). Without network "
            f"access, download that file elsewhere and put it at {target}, or pass pretrained=<path to the .params "
            f"file> (CLI: --pretrained PATH).") from exc


def load_pretrained(model: ResNetV2, source: str | os.PathLike | None = None, *, sha256: str | None = None,
                    progress: bool = True) -> Path:
    """Load ImageNet weights into every layer but ``fc1`` (which keeps its fresh initialisation)."""
    path = resolve_pretrained(model.num_layers, source, sha256=sha256, progress=progress)
    params = load_params(path)
    import torch

    tensors = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    try:
        missing = load_mxnet_state_dict(model, tensors, skip_fc=True, strict=False)
    except ValueError as exc:
        hint = ""
        if model.small and "conv0_weight" in str(exc):
            hint = (" The ImageNet weights have the 7x7 stem of images over 32 px; at "
                    f"{model.image_shape[1]} px the network has MXNet's 3x3 small-image stem. Use an image_shape "
                    "over 32 px high with use_pretrained_model=1, or use_pretrained_model=0.")
        raise ArtifactError(f"{path}: does not fit ResNet-{model.num_layers} with image_shape "
                            f"{model.image_shape}: {exc}.{hint}") from exc
    missing = [m for m in missing if not m.startswith("fc1_")]
    from ...model.network import mxnet_state_dict

    args, aux = mxnet_state_dict(model)
    extra = sorted({k.split(":", 1)[-1] for k in params} - set(args) - set(aux) - {"fc_weight", "fc_bias"})
    if extra:
        raise ArtifactError(f"{path}: has {len(extra)} parameters that ResNet-{model.num_layers} does not "
                            f"(e.g. {extra[:3]}); is it a resnet-{model.num_layers} file?")
    if missing:
        raise ArtifactError(f"{path}: missing {len(missing)} parameters of ResNet-{model.num_layers} "
                            f"(e.g. {missing[:3]}); is it a resnet-{model.num_layers} file?")
    log.info("Using pretrained model for initializing weights and transfer learning (%s).", path)
    return path
