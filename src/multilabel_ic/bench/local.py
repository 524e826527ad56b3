"""Local throughput: end-to-end training steps through the real input pipeline, the model-only ceiling on device
tensors, a plain PyTorch loop as a user would write it, the host's CPU cost per image, the device-side augmentation,
the input pipeline alone against a plain PIL + torchvision loader, and predictor throughput.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..backends.local.batch_augment import augment_batch
from ..backends.local.device import check_compiler, precision_for, select_device
from ..backends.local.epoch import train_step
from ..backends.local.imagestore import ImageStore
from ..backends.local.loss import create_loss
from ..backends.local.optim import create_optimizer
from ..backends.local.pipeline import (
    BatchAssembler,
    DeviceFeeder,
    EpochSampler,
    ImageDataset,
    epoch_order,
    make_loader,
)
from ..local_options import LocalOptions
from ..model.network import ResNetV2, create_network, to_network_input
from ..model.transforms import AUG_LEVELS, AugmentOptions
from .common import peak_host_mb, stats

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..hyperparameters import Hyperparameters

__all__ = ["bench_training", "bench_ceiling", "bench_interleaved", "bench_plain_loop", "bench_host",
           "bench_device_augment", "bench_pipeline", "bench_inference", "image_store"]

log = logging.getLogger("multilabel_ic.bench")


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(hp: Hyperparameters, device: torch.device, compile: bool = False):
    """(model, optimizer, scaler, precision, criterion, channels_last) as a run of the default options builds them."""
    options = LocalOptions()
    precision = precision_for(hp, device, options)
    model = precision.place(create_network(hp))
    if compile:  # as LocalOptions(compile=True) does; it compiles in the first (warm-up) step
        check_compiler(device)
        model.compile()
    model.train()
    criterion = create_loss(hp.replace(multi_label=1), options)
    return model, create_optimizer(model, hp), precision.scaler(), precision, criterion, precision.channels_last


def _windows(step_times: list[float], batch: int, window: int) -> list[float]:
    """images/s of consecutive windows of ``window`` steps."""
    out = []
    for i in range(0, len(step_times) - window + 1, window):
        out.append(window * batch / sum(step_times[i:i + window]))
    return out


def image_store(hp: Hyperparameters, data: Dataset, folder, encoding: str = "auto") -> tuple[ImageStore, float]:
    """The decode cache of ``data`` for ``hp`` (built once, reused by later calls) and the seconds it took here."""
    t0 = time.perf_counter()
    store = ImageStore.build(data, folder, resize=hp.resize, channels=hp.channels, what="benchmark images",
                             encoding=encoding)
    if store is None:
        raise RuntimeError(f"no room for the benchmark's decode cache in {folder}")
    return store, time.perf_counter() - t0


def _timed_steps(batches, step, device: torch.device, warmup: int, started: float):
    """Run ``step(x, y)`` over ``batches``; (step seconds, seconds waiting for the batch, compute seconds, first)."""
    step_times, data_times, compute_times = [], [], []
    first_step = None
    t_prev = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        step(x, y)
        _sync(device)
        t1 = time.perf_counter()
        if first_step is None:
            first_step = t1 - started
        if i >= warmup:
            data_times.append(t0 - t_prev)
            compute_times.append(t1 - t0)
            step_times.append(t1 - t_prev)
        t_prev = t1
    return step_times, data_times, compute_times, first_step


def _training_feeder(hp: Hyperparameters, data: Dataset, dev: torch.device, *, store: ImageStore | None,
                     batches: int, seed: int, workers: int, channels_last: bool) -> DeviceFeeder:
    """The training batches as the engine feeds them: the batched pipeline over ``store``, or with ``store=None``
    the reference one; enough epochs of ``data`` in order for ``batches`` batches."""
    options = AugmentOptions(small_image="upscale")
    ds = ImageDataset(data, hp, train=True, seed=seed, options=options, cache=store, batched=store is not None)
    order = epoch_order(len(data), batches, hp.mini_batch_size, seed, 0)
    loader = make_loader(ds, batch_sampler=EpochSampler(order, hp.mini_batch_size, 0), num_workers=workers,
                         pin_memory=dev.type == "cuda")
    return DeviceFeeder(loader, dev, height=hp.height, width=hp.width, fill_value=options.fill_value,
                        channels_last=channels_last)


def _fixed_batch(hp: Hyperparameters, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model-only ceiling's batch: uint8 NHWC images and labels, already on the device."""
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (hp.mini_batch_size, hp.height, hp.width, hp.channels), dtype=torch.uint8,
                           generator=g).to(dev)
    return images, (torch.rand(hp.mini_batch_size, hp.num_classes, generator=g) < 0.3).float().to(dev)


def bench_training(hp: Hyperparameters, data: Dataset, *, device: str | None = None, steps: int = 30,
                   warmup: int = 5, workers: int = 4, window: int = 5, seed: int = 0, pipeline: str = "batched",
                   store: ImageStore | None = None, compile: bool = False) -> dict:
    """Steady-state training images/s through the engine's input pipeline and fwd/bwd/step, with the time the step
    loop waited for its next batch (on a CPU that includes the augmentation, which runs there). ``compile``: the
    network through torch.compile (its compile time is in the time to the first step)."""
    started = time.perf_counter()  # for the time to first step: model build, loader start-up, first batch
    dev = select_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, optimizer, scaler, precision, criterion, channels_last = _setup(hp, dev, compile)
    bs = hp.mini_batch_size
    batched = pipeline == "batched"
    if batched and store is None:
        raise ValueError("the batched pipeline reads the decode cache: pass store=image_store(hp, data, folder)[0]")
    feeder = _training_feeder(hp, data, dev, store=store if batched else None, batches=warmup + steps, seed=seed,
                              workers=workers, channels_last=channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step(x, y):
        train_step(model, optimizer, scaler, x, y, criterion=criterion, precision=precision,
                   multi_label=True)

    step_times, data_times, compute_times, first_step = _timed_steps(feeder, step, dev, warmup, started)
    per_window = _windows(step_times, bs, window)
    median_step = float(np.median(step_times)) if step_times else None
    return {
        "what": ("end-to-end training step: decode cache -> host draws + canvas on loader workers -> augmentation "
                 f"on {dev.type} -> fwd/bwd/step" if batched else
                 "end-to-end training step: OpenCV decode + augmentation per image on loader workers -> fwd/bwd/step"),
        "pipeline": pipeline, "compiled": compile,
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
        "gpu_utilization_percent": _gpu_utilization(dev),
        "peak_host_mb": peak_host_mb(),
    }


def bench_interleaved(hp: Hyperparameters, data: Dataset, store: ImageStore, *, device: str | None = None,
                      steps: int = 30, warmup: int = 5, window: int = 5, seed: int = 0) -> dict:
    """End-to-end and model-only steps alternating in one loop, on one model: each end-to-end step (next batch
    through the batched pipeline, then fwd/bwd/step) is followed by a ceiling step (a fixed batch). Drift on the
    machine hits both alike, so their ratio per window is the most side-by-side one there is. For synchronous
    pipelines only (no loader workers, not CUDA): a prefetching one would get the ceiling steps' time for free."""
    dev = select_device(device)
    if dev.type == "cuda":
        raise ValueError("bench_interleaved times a synchronous pipeline; on CUDA the feeder prefetches")
    model, optimizer, scaler, precision, criterion, channels_last = _setup(hp, dev)
    bs = hp.mini_batch_size
    feeder = _training_feeder(hp, data, dev, store=store, batches=warmup + steps, seed=seed, workers=0,
                              channels_last=channels_last)
    fixed, fixed_labels = _fixed_batch(hp, dev)
    e2e_times, ceiling_times = [], []
    batches = iter(feeder)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches, None)  # the batch's host work and augmentation count toward the end-to-end step
        if batch is None:
            break
        train_step(model, optimizer, scaler, *batch, criterion=criterion, precision=precision,
                   multi_label=True)
        t1 = time.perf_counter()
        x = to_network_input(fixed, dev, channels_last=channels_last)
        train_step(model, optimizer, scaler, x, fixed_labels, criterion=criterion, precision=precision,
                   multi_label=True)
        t2 = time.perf_counter()
        if i >= warmup:
            e2e_times.append(t1 - t0)
            ceiling_times.append(t2 - t1)
    e2e, ceiling = _windows(e2e_times, bs, window), _windows(ceiling_times, bs, window)
    ratios = [a / b for a, b in zip(e2e, ceiling)]
    return {"what": "end-to-end and model-only steps alternating in one loop on one model", "device": str(dev),
            "batch_size": bs, "steps": len(e2e_times), "end_to_end_images_per_sec": stats(e2e),
            "ceiling_images_per_sec": stats(ceiling), "end_to_end_images_per_sec_windows": e2e,
            "ceiling_images_per_sec_windows": ceiling, "ratio_per_window": ratios,
            "end_to_end_over_ceiling": stats(ratios)["median"]}


def _gpu_utilization(dev: torch.device) -> float | None:
    """The GPU's utilisation now (NVML through torch), or None off CUDA or without NVML."""
    if dev.type != "cuda":
        return None
    try:
        return float(torch.cuda.utilization(dev))
    except Exception:  # pynvml missing or NVML unavailable: report nothing rather than a guess
        return None


class _PlainDataset(torch.utils.data.Dataset):
    """What a user would write: PIL decoding and torchvision's v2 transforms doing the algorithm's operations.

    ``normalise`` ends with float conversion and ImageNet normalisation (the plain training loop's input); without
    it the samples stay uint8 (the input-pipeline comparison)."""

    def __init__(self, data: Dataset, hp: Hyperparameters, *, normalise: bool = True):
        from torchvision.transforms import v2

        self.data = data
        ops: list = [v2.ToImage()]
        if hp.resize:
            ops.append(v2.Resize(hp.resize, antialias=True))
        level = AUG_LEVELS[hp.augmentation_type]
        if level >= 3:
            ops.append(v2.RandomAffine(degrees=10, shear=(-5.71, 5.71), scale=(0.875, 1.125), fill=127))
        ops.append(v2.RandomCrop((hp.height, hp.width), pad_if_needed=True) if level >= 1
                   else v2.CenterCrop((hp.height, hp.width)))
        if level >= 2:
            ops.append(v2.ColorJitter(brightness=0.2, saturation=0.2, hue=0.2))
        if level >= 1:
            ops.append(v2.RandomHorizontalFlip())
        if normalise:
            ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
        self.transform = v2.Compose(ops)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.data.image_path(i)) as im:
            img = im.convert("RGB")
        return self.transform(img), torch.from_numpy(self.data.labels[i].astype(np.float32))


def bench_plain_loop(hp: Hyperparameters, data: Dataset, *, device: str | None = None, steps: int = 30,
                     warmup: int = 5, workers: int = 4, window: int = 5, seed: int = 0) -> dict:
    """The peer: torchvision's resnet, a DataLoader over PIL decoding and v2 transforms, BCEWithLogitsLoss,
    torch.optim.SGD, float32 NCHW, as a user would write it without this library."""
    import torchvision

    started = time.perf_counter()
    dev = select_device(device)
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{hp.num_layers}")(num_classes=hp.num_classes).to(dev).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=hp.learning_rate, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bs = hp.mini_batch_size
    ds = _PlainDataset(data, hp)
    idx = [i % len(ds) for i in range((warmup + steps) * bs)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=bs, shuffle=True,
                                         num_workers=workers, pin_memory=dev.type == "cuda", drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))

    def batches():
        for x, y in loader:
            yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    step_times, data_times, _, first_step = _timed_steps(batches(), step, dev, warmup, started)
    per_window = _windows(step_times, bs, window)
    return {"what": f"plain PyTorch loop: torchvision resnet{hp.num_layers}, PIL + torchvision v2 transforms on "
                    f"loader workers, BCEWithLogitsLoss, SGD", "device": str(dev), "batch_size": bs,
            "workers": workers, "steps": len(step_times), "images_per_sec": stats(per_window),
            "images_per_sec_windows": per_window, "time_to_first_step_s": first_step,
            "data_wait_fraction": float(sum(data_times) / max(sum(step_times), 1e-12))}


def bench_host(hp: Hyperparameters, data: Dataset, store: ImageStore, *, n_images: int = 256,
               batch: int | None = None, jpeg_store: ImageStore | None = None) -> dict:
    """CPU milliseconds per training image on the host, one thread (``time.thread_time``), in the steady state (a
    second pass): reading an image from the decode cache; the whole host side of the batched pipeline (read + draws +
    canvas); and the reference pipeline's per-image decode + resize + augmentation, on the same images. With
    ``jpeg_store`` (the cache's JPEG encoding, for data over the raw cache's limit) the first two again from it, and
    how far its pixels are from the raw cache's (grey levels)."""
    batch = batch or min(hp.mini_batch_size, 32)
    options = AugmentOptions(small_image="upscale")
    n_images = max(batch, n_images // batch * batch)
    keys = [(0, k, k % len(data)) for k in range(n_images)]

    def per_image_ms(fn) -> float:
        fn()  # the steady state: this process has the cache's pages mapped, as a worker has after its first epoch
        t0 = time.thread_time()
        fn()
        return (time.thread_time() - t0) * 1000 / n_images

    assemble = BatchAssembler(hp.height, hp.width, options.fill_value)

    def read_and_host_ms(cache: ImageStore) -> tuple[float, float]:
        batched = ImageDataset(data, hp, train=True, cache=cache, options=options, batched=True)
        return (per_image_ms(lambda: [np.array(cache[i]) for _, _, i in keys]),
                per_image_ms(lambda: [assemble([batched[k] for k in keys[s:s + batch]])
                                      for s in range(0, n_images, batch)]))

    reference = ImageDataset(data, hp, train=True, options=options)
    read_ms, host_ms = read_and_host_ms(store)
    reference_ms = per_image_ms(lambda: [reference[k] for k in keys])
    out = {"what": "CPU ms per training image on the host (one thread)", "images": n_images, "batch_size": batch,
           "cache_read_ms": read_ms, "batched_host_ms": host_ms, "reference_host_ms": reference_ms,
           "reference_over_batched": reference_ms / host_ms if host_ms else None,
           "cache_bytes_per_image": store.nbytes / max(len(store), 1)}
    if jpeg_store is not None:
        out["jpeg_cache_read_ms"], out["jpeg_batched_host_ms"] = read_and_host_ms(jpeg_store)
        out["jpeg_cache_bytes_per_image"] = jpeg_store.nbytes / max(len(jpeg_store), 1)
        diff = np.concatenate([np.abs(jpeg_store[i].astype(np.int16) - store[i]).ravel()
                               for i in sorted({i for _, _, i in keys})])
        out["jpeg_abs_diff_levels"] = {"mean": float(diff.mean()), "p99": float(np.percentile(diff, 99)),
                                       "max": int(diff.max())}
    return out


def bench_device_augment(hp: Hyperparameters, data: Dataset, store: ImageStore, *, device: str | None = None,
                         batches: int = 8, warmup: int = 2) -> dict:
    """Images/s of the batched augmentation alone on the device (copy of the canvas included), from canvases the
    host assembled beforehand. On a CPU device the tensor method (what a GPU runs) is timed too, beside the OpenCV
    one that training uses there."""
    dev = select_device(device)
    bs = hp.mini_batch_size
    options = AugmentOptions(small_image="upscale")
    ds = ImageDataset(data, hp, train=True, cache=store, options=options, batched=True)
    assemble = BatchAssembler(hp.height, hp.width, options.fill_value)
    prepared = [assemble([ds[(0, b * bs + k, (b * bs + k) % len(data))] for k in range(bs)])
                for b in range(min(batches, 4))]

    def rates(method: str) -> list[float]:
        times = []
        for i in range(warmup + batches):
            t0 = time.perf_counter()
            augment_batch(prepared[i % len(prepared)], dev, height=hp.height, width=hp.width,
                          fill_value=options.fill_value, channels_last=True, method=method)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return [bs / t for t in times]

    method = "opencv" if dev.type == "cpu" else "tensor"  # what method="auto" picks, and training uses
    out = {"what": f"batched augmentation on {dev.type} (canvas copy, warp, HLS jitter, mirror)",
           "device": str(dev), "batch_size": bs, "method": method, "images_per_sec": stats(rates(method))}
    if dev.type == "cpu":
        out["tensor_method_images_per_sec"] = stats(rates("tensor"))
    return out


def bench_ceiling(hp: Hyperparameters, *, device: str | None = None, steps: int = 30, warmup: int = 5,
                  window: int = 5, compile: bool = False) -> dict:
    """The model-only ceiling: fwd + bwd + optimizer step on uint8 batches already on the device."""
    dev = select_device(device)
    model, optimizer, scaler, precision, criterion, channels_last = _setup(hp, dev, compile)
    bs = hp.mini_batch_size
    xs, ys = _fixed_batch(hp, dev)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = to_network_input(xs, dev, channels_last=channels_last)
        train_step(model, optimizer, scaler, x, ys, criterion=criterion, precision=precision,
                   multi_label=True)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    per_window = _windows(times, bs, window)
    return {"what": "model only: fwd + bwd + optimizer step on tensors already on the device", "device": str(dev),
            "compiled": compile, "batch_size": bs, "steps": len(times), "images_per_sec": stats(per_window),
            "images_per_sec_windows": per_window}


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
        base = _loader_rate(_PlainDataset(data, h, normalise=False), n_images, batch, workers)
        ratio = ours["images_per_sec"] / base["images_per_sec"] if base["images_per_sec"] else None
        out["results"][aug] = {"multilabel_ic": ours, "pil_torchvision": base, "ratio": ratio}
        log.info("pipeline %-22s ours %.1f img/s, PIL+torchvision %.1f img/s, ratio %.2f", aug,
                 ours["images_per_sec"], base["images_per_sec"], ratio or 0)
    return out


def trained_like_network(hp: Hyperparameters, seed: int = 0) -> ResNetV2:
    """The benchmark's network, with BatchNorm statistics where a trained one has them: ``bn_data`` those of photos'
    pixels, the others drawn away from the identity. A freshly initialised network's probabilities sit at 0 or 1,
    where any two runtimes agree; these spread over (0, 1), so a probability difference means something."""
    torch.manual_seed(seed)
    net = create_network(hp)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None  # track_running_stats
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.3, 0.3)
                if m is net.bn_data:  # photos' pixels: mean about 115, standard deviation about 60
                    m.running_mean.fill_(115.0), m.running_var.fill_(3600.0), m.weight.fill_(1.0)
        net.eval()
        # logits of a few random images scaled to a standard deviation of 2, as a trained head's roughly are
        images = torch.randint(0, 256, (4, *hp.input_shape),
                               generator=torch.Generator().manual_seed(seed)).float()
        logits = net(images)
        net.fc1.weight.mul_(2.0 / float(logits.std()))
        net.fc1.bias.zero_()
    return net


def bench_inference(hp: Hyperparameters, data: Dataset, *, artifact, device: str | None = None, n_single: int = 30,
                    batch: int = 32, rounds: int = 5) -> dict:
    """Single-image latency (p50/p95) and batch throughput of the local predictor: the first version's way
    (serial decode, NCHW, float32 eager) against this version's default (threaded decode, channels-last,
    inference mode) and, on a CPU, the onnxruntime and OpenVINO runtimes; with the largest probability difference to
    the first. The predictors are timed in alternating rounds (median of ``rounds``)."""
    from ..model.predictor import LocalPredictor

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    blobs = [data.image_path(i % len(data)).read_bytes() for i in range(max(n_single, batch))]
    variants: dict[str, dict[str, Any]] = {"serial decode, NCHW eager (first version)":
                                           dict(decode_threads=1, channels_last=False),
                                           "default (threaded decode, channels-last)": {}}
    if dev == "cpu":
        variants["runtime='onnxruntime'"] = dict(runtime="onnxruntime")
        variants["runtime='openvino'"] = dict(runtime="openvino")
    out: dict[str, Any] = {"device": dev, "batch_size": batch, "rounds": rounds, "variants": {}}
    predictors: dict[str, Any] = {}
    first: dict[str, np.ndarray] = {}
    for name, kwargs in variants.items():
        try:
            predictors[name] = LocalPredictor(artifact, device=dev, **kwargs)
        except Exception as exc:  # a runtime that is not installed: say so in the report
            out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        first[name] = np.asarray(predictors[name].predict_batch(blobs[:batch]))  # also the warm-up
    # every round runs each predictor once, so drift on the machine hits all of them alike
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, pred in predictors.items():
            t0 = time.perf_counter()
            pred.predict_batch(blobs[:batch])
            timings[name].append(batch / (time.perf_counter() - t0))
    latency: dict[str, list[float]] = {name: [] for name in predictors}
    for b in blobs[:n_single]:
        for name, pred in predictors.items():
            t0 = time.perf_counter()
            pred.predict(b)
            latency[name].append((time.perf_counter() - t0) * 1000)
    baseline = next(iter(first.values()), None)
    for name, pred in predictors.items():
        pred.close()
        lat = latency[name]
        out["variants"][name] = {"batch_images_per_sec": stats(timings[name])["median"],
                                 "single_image_ms": {"p50": float(np.percentile(lat, 50)),
                                                     "p95": float(np.percentile(lat, 95)), "n": len(lat)},
                                 "max_abs_diff_vs_first": float(np.abs(first[name] - baseline).max())}
    rates = {k: v["batch_images_per_sec"] for k, v in out["variants"].items() if "batch_images_per_sec" in v}
    first_rate = next(iter(rates.values()), None)
    out["speedup_over_first"] = {k: v / first_rate for k, v in rates.items()} if first_rate else {}
    default = out["variants"].get("default (threaded decode, channels-last)", {})
    out["single_image_ms"] = default.get("single_image_ms")
    out["batch_images_per_sec"] = max(rates.values()) if rates else None
    return out
