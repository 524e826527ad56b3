"""Training augmentation as batched tensor work: the host cuts each sample's source region, the device resamples.

The reference (:func:`~multilabel_ic.model.transforms.apply_train_draws`) warps, crops, jitters and mirrors one image
at a time with OpenCV on the loader workers. Here the same :class:`~multilabel_ic.model.transforms.SampleDraws` are
split in two:

- host (:func:`assemble_batch`, on the loader workers): each sample's crop, mirror and inverse affine warp become one
  2x3 map from output pixels to source pixels, and only the source pixels that map can reach are copied (uint8) into
  a batch canvas filled with the border colour. Without a warp (``crop``, ``crop_color``) the crop and mirror are
  plain slices and the canvas is the output.
- device (:func:`augment_batch`): one ``grid_sample`` pass per batch resamples all warps bilinearly (at exact
  coordinates, as OpenCV >= 4.11's ``warpAffine`` does; older OpenCV, MXNet's, snaps them to 1/32 pixel) and rounds
  to 8 bits; the HLS jitter is OpenCV's 8-bit
  RGB<->HLS conversion written in tensor ops. uint8 goes in, float32 0..255 NCHW comes out.

The same code runs on the CPU, which is how the tests hold it to the reference (tests/test_batch_augment.py). When the
device *is* the CPU, ``method="auto"`` takes the OpenCV path instead: the same maps and offsets through ``warpAffine``
and 8-bit ``cvtColor`` per sample, on a thread pool. Elementwise tensor chains (the HLS round trip is about 60 of
them) are bound by memory bandwidth on a CPU, and OpenCV's uint8 SIMD code does the same work several times faster;
its pixels are the reference's own operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..._parallel import ordered_map, usable_cores
from ...model.network import to_network_input
from ...model.transforms import AugmentOptions, SampleDraws, affine_matrix, apply_hls_offsets, warp_and_fit

__all__ = ["AugmentedBatch", "assemble_batch", "augment_batch", "rgb_to_hls8", "hls8_to_rgb", "sample_map",
           "AUGMENT_METHODS"]

AUGMENT_METHODS = ("auto", "tensor", "opencv")


class AugmentedBatch(NamedTuple):
    """A batch as the loader hands it over (tensors, so the DataLoader can pin them).

    canvas: uint8 (B, rows, cols, C); maps: float32 (B, 2, 3) from output (col, row, 1) to canvas (col, row), or an
    empty tensor when no sample is warped (the canvas is then the output); hls: int16 (B, 3) offsets (dh, dl, ds),
    or empty; labels: float32 (B, classes).
    """

    canvas: torch.Tensor
    maps: torch.Tensor
    hls: torch.Tensor
    labels: torch.Tensor


def sample_map(draws: SampleDraws, rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """float64 2x3: output pixel (col, row, 1) -> source pixel (col, row) of the resized image.

    Composes the mirror, the crop offset and (for a warped sample) the inverse of MXNet's forward affine matrix, in
    the order the reference applies them, inverted.
    """
    out = np.array([[1.0, 0, draws.x], [0, 1, draws.y]])
    if draws.mirror:  # output col j reads crop col (width - 1 - j)
        out = np.array([[-1.0, 0, width - 1 + draws.x], [0, 1, draws.y]])
    if draws.affine is None:
        return out
    shear, angle, scale, ratio = draws.affine
    forward = np.vstack([affine_matrix(shear, angle, scale, ratio, cols, rows).astype(np.float64), [0, 0, 1]])
    return (np.linalg.inv(forward) @ np.vstack([out, [0, 0, 1]]))[:2]


def _source_box(m: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1): the source pixels bilinear sampling of the map can touch (one pixel margin)."""
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    pts = corners @ m.T
    col0, row0 = np.floor(pts.min(axis=0)) - 1
    col1, row1 = np.ceil(pts.max(axis=0)) + 2
    return int(row0), int(col0), int(row1), int(col1)


def assemble_batch(images: Sequence[np.ndarray], draws: Sequence[SampleDraws], labels: Sequence[np.ndarray], *,
                   height: int, width: int, fill_value: int) -> AugmentedBatch:
    """Host side: the uint8 canvas (only the pixels each sample can reach) and the per-sample maps."""
    n, channels = len(images), images[0].shape[2]
    warped = any(d.affine is not None for d in draws)
    hls = (torch.tensor([d.hls for d in draws], dtype=torch.int16) if draws[0].hls is not None
           else torch.zeros(0, dtype=torch.int16))
    label_tensor = torch.from_numpy(np.stack(labels).astype(np.float32))
    if not warped:
        canvas = np.empty((n, height, width, channels), np.uint8)
        for k, (img, d) in enumerate(zip(images, draws)):
            if img.shape[:2] != d.size:  # the small-image policy upscales it
                img = warp_and_fit(img, d, height=height, width=width, options=AugmentOptions(small_image="upscale"))
            part = img[d.y:d.y + height, d.x:d.x + width]
            canvas[k] = part[:, ::-1] if d.mirror else part
        return AugmentedBatch(torch.from_numpy(canvas), torch.zeros(0), hls, label_tensor)
    maps, boxes, sources = [], [], []
    for img, d in zip(images, draws):
        if d.affine is not None and d.size != (int(d.affine[2] * img.shape[0]), int(d.affine[2] * img.shape[1])):
            # rare: smaller than the crop after the warp, upscaled (small_image="upscale"): the reference's two
            # resamples, warp then resize, are done here on the host, and the device only crops
            img = warp_and_fit(img, d, height=height, width=width, options=AugmentOptions(
                fill_value=fill_value, small_image="upscale"))
            d = dataclasses.replace(d, affine=None)
        m = sample_map(d, img.shape[0], img.shape[1], height, width)
        sources.append(img)
        box = _source_box(m, height, width)
        maps.append(m)
        boxes.append(box)
    rows = max(b[2] - b[0] for b in boxes)
    cols = max(b[3] - b[1] for b in boxes)
    canvas = np.full((n, rows, cols, channels), fill_value, np.uint8)
    shifted = np.empty((n, 2, 3), np.float32)
    for k, (img, m, (r0, c0, r1, c1)) in enumerate(zip(sources, maps, boxes)):
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r1, img.shape[0]), min(c1, img.shape[1])
        if rr1 > rr0 and cc1 > cc0:
            canvas[k, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = img[rr0:rr1, cc0:cc1]
        shifted[k] = m - np.array([[0, 0, c0], [0, 0, r0]])
    return AugmentedBatch(torch.from_numpy(canvas), torch.from_numpy(shifted), hls, label_tensor)


def augment_batch(batch: AugmentedBatch, device: torch.device, *, height: int, width: int, fill_value: int,
                  channels_last: bool = False, method: str = "auto") -> torch.Tensor:
    """Device side: float32 NCHW in 0..255 (what the network's ``bn_data`` reads) from an :class:`AugmentedBatch`.

    ``method``: "tensor" (``grid_sample`` and tensor ops, on ``device``), "opencv" (per sample on the host's cores,
    then copied to ``device``) or "auto": OpenCV when ``device`` is the CPU, tensors elsewhere.
    """
    if method not in AUGMENT_METHODS:
        raise ValueError(f"method must be one of {', '.join(AUGMENT_METHODS)}, got {method!r}")
    if method == "opencv" or (method == "auto" and device.type == "cpu"):
        return to_network_input(torch.from_numpy(_augment_with_opencv(batch, height, width, fill_value)), device,
                                channels_last=channels_last)
    canvas = batch.canvas.to(device, non_blocking=True)
    x = canvas.permute(0, 3, 1, 2).float()
    if batch.maps.numel():
        maps = batch.maps.to(device, non_blocking=True)
        x = _resample(x, maps, height, width, fill_value)
    if batch.hls.numel():
        offsets = batch.hls.to(device, non_blocking=True).float()
        x = _jitter(x, offsets)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _augment_with_opencv(batch: AugmentedBatch, height: int, width: int, fill_value: int) -> np.ndarray:
    """uint8 (B, height, width, C): each sample's map through bilinear ``warpAffine`` (constant border) and its HLS
    offsets through 8-bit ``cvtColor``, as the reference applies them; samples in parallel (OpenCV drops the GIL)."""
    canvas = batch.canvas.numpy()
    maps = batch.maps.numpy().astype(np.float64) if batch.maps.numel() else None
    offsets = batch.hls.numpy() if batch.hls.numel() else None
    n, channels = canvas.shape[0], canvas.shape[3]

    def one(k: int) -> np.ndarray:
        img = canvas[k]
        if maps is not None:
            img = cv2.warpAffine(img, maps[k], (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(fill_value,) * channels)
            img = img.reshape(height, width, channels)  # OpenCV drops a single channel's axis
        if offsets is not None:
            img = apply_hls_offsets(img, *(int(v) for v in offsets[k]))
        return img

    return np.stack(list(ordered_map(one, n, threads=min(n, usable_cores()))))


def _resample(x: torch.Tensor, maps: torch.Tensor, height: int, width: int, fill_value: int) -> torch.Tensor:
    """Bilinear ``warpAffine`` with a constant border, for each sample's map, rounded to 8 bits."""
    n, _, rows, cols = x.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=x.device, dtype=torch.float32),
                            torch.arange(width, device=x.device, dtype=torch.float32), indexing="ij")
    out_pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, height * width, 3)
    src = torch.bmm(out_pixels.expand(n, -1, -1), maps.transpose(1, 2))  # (n, H*W, 2) source (col, row)
    scale = torch.tensor([2.0 / max(cols - 1, 1), 2.0 / max(rows - 1, 1)], device=x.device)
    grid = (src * scale - 1).reshape(n, height, width, 2)
    # the border is the fill colour: sample (x - fill) with zero padding, add the fill back
    out = F.grid_sample(x - fill_value, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + fill_value
    return out.round_().clamp_(0, 255)


def rgb_to_hls8(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV ``COLOR_RGB2HLS`` for 8-bit images, on float (N, 3, H, W) 0..255: H 0..180, L and S 0..255, rounded."""
    r, g, b = (rgb * (1 / 255)).unbind(1)
    vmax = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = vmax - vmin
    light = (vmax + vmin) * 0.5
    chromatic = diff > torch.finfo(torch.float32).eps
    safe = torch.where(chromatic, diff, torch.ones_like(diff))
    sat = torch.where(light < 0.5, safe / (vmax + vmin).clamp_min(1e-12), safe / (2 - vmax - vmin).clamp_min(1e-12))
    step = 60 / safe
    hue = torch.where(vmax == r, (g - b) * step, torch.where(vmax == g, (b - r) * step + 120, (r - g) * step + 240))
    hue = torch.where(hue < 0, hue + 360, hue)
    hue = torch.where(chromatic, hue, torch.zeros_like(hue))
    sat = torch.where(chromatic, sat, torch.zeros_like(sat))
    return torch.stack([hue * 0.5, light * 255, sat * 255], dim=1).round_().clamp_(0, 255)


def hls8_to_rgb(hls: torch.Tensor) -> torch.Tensor:
    """OpenCV ``COLOR_HLS2RGB`` for 8-bit images, on float (N, 3, H, W) integer-valued HLS: RGB 0..255, rounded.

    OpenCV picks each channel from (p2, p1, falling, rising) by the hue's 60-degree sector; red reads the sector
    two ahead, blue two behind, green its own. The same sector and fraction give the same float values.
    """
    hue, light, sat = hls.unbind(1)
    light, sat = light * (1 / 255), sat * (1 / 255)
    p2 = torch.where(light <= 0.5, light * (1 + sat), light + sat - light * sat)
    p1 = 2 * light - p2
    h = hue * (6 / 180)
    h = torch.where(h >= 6, h - 6, h)
    sector = torch.floor(h)
    frac = h - sector
    rising = p1 + (p2 - p1) * frac
    falling = p1 + (p2 - p1) * (1 - frac)

    def channel(shift: int) -> torch.Tensor:
        t = torch.remainder(sector + shift, 6)
        return torch.where(t == 0, rising, torch.where(t < 3, p2, torch.where(t == 3, falling, p1)))

    rgb = torch.stack([channel(2), channel(0), channel(4)], dim=1)
    rgb = torch.where((sat == 0).unsqueeze(1), light.unsqueeze(1), rgb)
    return (rgb * 255).round_().clamp_(0, 255)


def _jitter(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The HLS jitter on a batch: per-sample (dh, dl, ds) added in 8-bit HLS, clamped (H to 0..180), back to RGB."""
    if x.shape[1] == 1:
        return (x + offsets[:, 1].view(-1, 1, 1, 1)).clamp_(0, 255)
    hls = rgb_to_hls8(x) + offsets.view(-1, 3, 1, 1)
    hls = torch.stack([hls[:, 0].clamp(0, 180), hls[:, 1].clamp(0, 255), hls[:, 2].clamp(0, 255)], dim=1)
    return hls8_to_rgb(hls)
