"""Local throughput: end-to-end training steps through the real input pipeline, the model-only ceiling on device
tensors, the input pipeline alone against a plain PIL + torchvision loader, and predictor latency.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..backends.local.epoch import train_step
from ..backends.local.optim import create_optimizer
from ..backends.local.pipeline import EpochSampler, ImageDataset, epoch_order, make_loader
from ..backends.local.train import LocalOptions, precision_for, select_device
from ..model.network import create_network, to_network_input
from ..model.transforms import AugmentOptions
from .common import peak_host_mb, stats

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..hyperparameters import Hyperparameters

__all__ = ["bench_training", "bench_ceiling", "bench_pipeline", "bench_inference"]

log = logging.getLogger("multilabel_ic.bench")


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(hp: Hyperparameters, device: torch.device):
    amp_dtype, use_scaler = precision_for(hp, device, LocalOptions())
    channels_last = device.type == "cuda"
    model = create_network(hp).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model, create_optimizer(model, hp), torch.amp.GradScaler(device.type, enabled=use_scaler), amp_dtype, \
        channels_last


def _windows(step_times: list[float], batch: int, window: int) -> list[float]:
    """images/s of consecutive windows of ``window`` steps."""
    out = []
    for i in range(0, len(step_times) - window + 1, window):
        out.append(window * batch / sum(step_times[i:i + window]))
    return out


def bench_training(hp: Hyperparameters, data: Dataset, *, device: str | None = None, steps: int = 30,
                   warmup: int = 5, workers: int = 4, window: int = 5, seed: int = 0) -> dict:
    """Steady-state training images/s through decode -> augment -> device -> fwd/bwd/step, with data/compute split."""
    started = time.perf_counter()  # for the time to first step: model build, loader start-up, first batch
    dev = select_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, optimizer, scaler, amp_dtype, channels_last = _setup(hp, dev)
    bs = hp.mini_batch_size
    ds = ImageDataset(data, hp, train=True, seed=seed, options=AugmentOptions(small_image="upscale"))
    order = epoch_order(len(data), warmup + steps, bs, seed, 0)
    loader = make_loader(ds, batch_sampler=EpochSampler(order, bs, 0), num_workers=workers,
                         pin_memory=dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step_times, data_times, compute_times = [], [], []
    first_step = None
    t_prev = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        t0 = time.perf_counter()
        x = to_network_input(x, dev, channels_last=channels_last)
        y = y.to(dev, non_blocking=True)
        train_step(model, optimizer, scaler, x, y, amp_dtype=amp_dtype, multi_label=True)
        _sync(dev)
        t1 = time.perf_counter()
        if first_step is None:
            first_step = t1 - started
        if i >= warmup:
            data_times.append(t0 - t_prev)
            compute_times.append(t1 - t0)
            step_times.append(t1 - t_prev)
        t_prev = t1
    per_window = _windows(step_times, bs, window)
    median_step = float(np.median(step_times)) if step_times else None
    return {
        "what": "end-to-end training step (OpenCV decode + augmentation on loader workers + fwd/bwd/step)",
        "precision": hp.precision_dtype if dev.type == "cuda" or hp.precision_dtype == "float32"
        else "bfloat16 (float16 requested on CPU)",
        "device": str(dev), "batch_size": bs, "steps": len(step_times), "warmup_steps": warmup, "workers": workers,
        "images_per_sec": stats(per_window), "images_per_sec_windows": per_window,
        "data_wait_seconds_total": float(sum(data_times)), "compute_seconds_total": float(sum(compute_times)),
        "data_wait_fraction": float(sum(data_times) / max(sum(step_times), 1e-12)),
        "median_step_seconds": median_step,
        "time_to_first_step_s": first_step,
        "batches_per_epoch": hp.batches_per_epoch,
        "epoch_seconds_from_median_step": median_step * hp.batches_per_epoch if median_step else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else None,
        "peak_host_mb": peak_host_mb(),
    }


def bench_ceiling(hp: Hyperparameters, *, device: str | None = None, steps: int = 30, warmup: int = 5,
                  window: int = 5) -> dict:
    """The model-only ceiling: fwd + bwd + optimizer step on uint8 batches already on the device."""
    dev = select_device(device)
    model, optimizer, scaler, amp_dtype, channels_last = _setup(hp, dev)
    bs = hp.mini_batch_size
    g = torch.Generator(device="cpu").manual_seed(0)
    xs = torch.randint(0, 256, (bs, hp.height, hp.width, hp.channels), dtype=torch.uint8, generator=g).to(dev)
    ys = (torch.rand(bs, hp.num_classes, generator=g) < 0.3).float().to(dev)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = xs.permute(0, 3, 1, 2).float()
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        train_step(model, optimizer, scaler, x, ys, amp_dtype=amp_dtype, multi_label=True)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    per_window = _windows(times, bs, window)
    return {"what": "model only: fwd + bwd + optimizer step on tensors already on the device", "device": str(dev),
            "batch_size": bs, "steps": len(times), "images_per_sec": stats(per_window),
            "images_per_sec_windows": per_window}


class _PILDataset(torch.utils.data.Dataset):
    """What a user would otherwise write: PIL decoding and torchvision transforms doing the same operations."""

    def __init__(self, data: Dataset, hp: Hyperparameters):
        from torchvision import transforms as T

        self.data = data
        ops = []
        if hp.resize:
            ops.append(T.Resize(hp.resize))
        level = {None: 0, "crop": 1, "crop_color": 2, "crop_color_transform": 3}[hp.augmentation_type]
        if level >= 3:
            ops.append(T.RandomAffine(degrees=10, shear=(-5.71, 5.71), scale=(0.875, 1.125), fill=127))
        ops.append(T.RandomCrop((hp.height, hp.width), pad_if_needed=True) if level >= 1
                   else T.CenterCrop((hp.height, hp.width)))
        if level >= 2:
            ops.append(T.ColorJitter(brightness=0.2, saturation=0.2, hue=0.2))
        if level >= 1:
            ops.append(T.RandomHorizontalFlip())
        ops.append(T.PILToTensor())
        self.transform = T.Compose(ops)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.data.image_path(i)) as im:
            img = im.convert("RGB")
        return self.transform(img), torch.from_numpy(self.data.labels[i].astype(np.float32))


def _loader_rate(ds, n_images: int, batch: int, workers: int, sampler=None) -> dict:
    if sampler is None:
        idx = [i % len(ds) for i in range(n_images)]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch,
                                             num_workers=workers)
    else:
        loader = make_loader(ds, batch_sampler=sampler, num_workers=workers)
    it = iter(loader)
    first = next(it)  # worker start-up and the first batch are not steady state
    count, t0 = 0, time.perf_counter()
    for x, _ in it:
        count += x.shape[0]
    seconds = time.perf_counter() - t0
    return {"images": count, "seconds": seconds, "images_per_sec": count / seconds if seconds else None,
            "first_batch_images": int(first[0].shape[0])}


def bench_pipeline(hp: Hyperparameters, data: Dataset, *, n_images: int = 256, workers: int = 2,
                   batch: int | None = None) -> dict:
    """Decode + resize + augment images/s for each augmentation type: ours and the PIL/torchvision baseline."""
    batch = batch or min(hp.mini_batch_size, 32)
    out: dict[str, Any] = {"workers": workers, "batch_size": batch, "images": n_images, "results": {}}
    for aug in ("crop", "crop_color", "crop_color_transform"):
        h = hp.replace(augmentation_type=aug)
        ours_ds = ImageDataset(data, h, train=True, options=AugmentOptions(small_image="upscale"))
        order = epoch_order(len(data), n_images // batch, batch, 0, 0)
        ours = _loader_rate(ours_ds, n_images, batch, workers, sampler=EpochSampler(order, batch, 0))
        base = _loader_rate(_PILDataset(data, h), n_images, batch, workers)
        ratio = ours["images_per_sec"] / base["images_per_sec"] if base["images_per_sec"] else None
        out["results"][aug] = {"multilabel_ic": ours, "pil_torchvision": base, "ratio": ratio}
        log.info("pipeline %-22s ours %.1f img/s, PIL+torchvision %.1f img/s, ratio %.2f", aug,
                 ours["images_per_sec"], base["images_per_sec"], ratio or 0)
    return out


def bench_inference(hp: Hyperparameters, data: Dataset, *, artifact, device: str | None = None, n_single: int = 30,
                    batch: int = 32) -> dict:
    """Single-image latency (p50/p95) and batch throughput of the local predictor."""
    from ..model.predictor import LocalPredictor

    pred = LocalPredictor(artifact, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    blobs = [data.image_path(i % len(data)).read_bytes() for i in range(max(n_single, batch))]
    for b in blobs[:3]:
        pred.predict(b)
    lat = []
    for b in blobs[:n_single]:
        t0 = time.perf_counter()
        pred.predict(b)
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    pred.predict_batch(blobs[:batch])
    seconds = time.perf_counter() - t0
    return {"device": str(pred.device), "single_image_ms": {"p50": float(np.percentile(lat, 50)),
                                                            "p95": float(np.percentile(lat, 95)), "n": len(lat)},
            "batch_size": batch, "batch_images_per_sec": batch / seconds}
