"""The batched pipeline against the reference: decode cache, device-side augmentation, feeder.

Tolerances (for the same draws, against the OpenCV reference ``apply_train_draws``; docs/local-backend.md):
- crop, mirror, centre crop: identical pixels;
- the affine warp: at most 1 grey level, on at most 0.1% of the values (bilinear rounding);
- the HLS jitter: at most 8 grey levels, on at most 0.1% of the values (a hue rounded the other way on a saturated
  pixel; OpenCV's own RGB->HLS differs from exact arithmetic by one step on 0.01% of colours).
Each holds for both device-side methods: "tensor" (grid_sample and tensor ops, what a GPU runs) and "opencv" (what a
CPU device runs); the OpenCV method's jitter is the reference's own operation, so only the warp's rounding is left.
"""

import dataclasses
import pickle

import cv2
import numpy as np
import pytest
import torch

from multilabel_ic import Hyperparameters
from multilabel_ic.backends.local import batch_augment as B
from multilabel_ic.backends.local.imagestore import ImageStore, store_key
from multilabel_ic.backends.local.pipeline import (
    DeviceFeeder,
    EpochSampler,
    ImageDataset,
    epoch_order,
    make_loader,
)
from multilabel_ic.data.dataset import Dataset
from multilabel_ic.exceptions import DataError
from multilabel_ic.images import encode_jpeg, read_image, resize_shorter
from multilabel_ic.model import transforms as T

CPU = torch.device("cpu")


@pytest.fixture(params=["tensor", "opencv"])
def method(request):
    """The device-side augmentation method under test."""
    return request.param


def _photo(rows: int, cols: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with hard-edged shapes: both regimes of interpolation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    img = np.stack([127 + 120 * np.sin(xx / (17 + 5 * c) + yy / (23 + 3 * c) + c) for c in range(3)], -1)
    for _ in range(6):
        y, x, r = rng.integers(0, rows), rng.integers(0, cols), rng.integers(8, 40)
        cv2.circle(img, (int(x), int(y)), int(r), rng.integers(0, 256, 3).tolist(), -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[:, :, :1] if channels == 1 else img


def _reference_and_batched(images, augmentation_type, *, height=64, width=64, options=T.AugmentOptions(), seed=0,
                           method="tensor"):
    draws = [T.draw_train(np.random.default_rng([seed, 0, k]), im.shape[0], im.shape[1], height=height, width=width,
                          augmentation_type=augmentation_type, options=options) for k, im in enumerate(images)]
    ref = np.stack([T.apply_train_draws(im, d, height=height, width=width, options=options)
                    for im, d in zip(images, draws)]).astype(np.float32)
    batch = B.assemble_batch(images, draws, [np.zeros(2)] * len(images), height=height, width=width,
                             fill_value=options.fill_value)
    out = B.augment_batch(batch, CPU, height=height, width=width, fill_value=options.fill_value, method=method)
    assert out.dtype == torch.float32 and out.shape == (len(images), images[0].shape[2], height, width)
    return ref, out.permute(0, 2, 3, 1).numpy(), draws


IMAGES = [_photo(72, 96, seed=1), _photo(96, 72, seed=2), _photo(80, 80, seed=3), _photo(70, 130, seed=4)]


def test_rgb_hls_conversions_match_opencv_8bit():
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (1, 100_000, 3)).astype(np.uint8)
    want = cv2.cvtColor(colours, cv2.COLOR_RGB2HLS).astype(np.int32)
    got = B.rgb_to_hls8(torch.from_numpy(colours).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    diff = np.abs(got.astype(np.int32) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    hls = np.stack([rng.integers(0, 181, 100_000), rng.integers(0, 256, 100_000), rng.integers(0, 256, 100_000)],
                   -1)[None].astype(np.uint8)
    want_rgb = cv2.cvtColor(hls, cv2.COLOR_HLS2RGB)
    got_rgb = B.hls8_to_rgb(torch.from_numpy(hls).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got_rgb, want_rgb)


@pytest.mark.parametrize("augmentation_type", [None, "crop"])
def test_crop_and_mirror_are_identical_to_the_reference(augmentation_type, method):
    ref, out, draws = _reference_and_batched(IMAGES * 3, augmentation_type, method=method)
    np.testing.assert_array_equal(out, ref)
    if augmentation_type:
        assert {d.mirror for d in draws} == {True, False}  # both branches are exercised


def test_the_warp_is_within_one_grey_level_of_opencv(method):
    images = IMAGES * 4
    ref, out, draws = _reference_and_batched(images, "crop_color_transform", seed=3, method=method)
    # without the colour step: the warp, crop and mirror alone
    plain = [dataclasses.replace(d, hls=None) for d in draws]
    ref = np.stack([T.apply_train_draws(im, d, height=64, width=64) for im, d in zip(images, plain)])
    batch = B.assemble_batch(images, plain, [np.zeros(2)] * len(images), height=64, width=64, fill_value=127)
    out = B.augment_batch(batch, CPU, height=64, width=64, fill_value=127, method=method).permute(0, 2, 3, 1).numpy()
    diff = np.abs(out - ref)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3
    assert any(d.affine[1] != 0 for d in draws) and any(d.mirror for d in draws)


def test_the_full_crop_color_transform_is_within_the_stated_tolerance(method):
    ref, out, _ = _reference_and_batched(IMAGES * 4, "crop_color_transform", seed=5, method=method)
    diff = np.abs(out - ref)
    assert diff.max() <= 8 and (diff > 1).mean() <= 1e-3 and diff.mean() < 0.05


def test_crop_color_on_the_same_pixels_is_within_the_stated_tolerance(method):
    ref, out, _ = _reference_and_batched(IMAGES * 4, "crop_color", seed=6, method=method)
    diff = np.abs(out - ref)
    assert diff.max() <= 8 and (diff > 0).mean() <= 1e-3


def test_greyscale_and_the_border_fill_colour(method):
    grey = [_photo(72, 90, channels=1, seed=s) for s in range(4)]
    ref, out, _ = _reference_and_batched(grey, "crop_color_transform", seed=2, options=T.AugmentOptions(fill_value=3),
                                         method=method)
    assert np.abs(out - ref).max() <= 1
    # a warp that reaches past the image shows the fill colour in both
    draws = T.SampleDraws(size=(72, 90), affine=(0.1, 10, 1.0, 1.25), y=0, x=0)
    want = T.apply_train_draws(grey[0], draws, height=64, width=64, options=T.AugmentOptions(fill_value=3))
    batch = B.assemble_batch([grey[0]], [draws], [np.zeros(1)], height=64, width=64, fill_value=3)
    got = B.augment_batch(batch, CPU, height=64, width=64, fill_value=3, method=method)[0, 0].numpy()
    assert (want[..., 0] == 3).sum() > 50 and np.abs(got - want[..., 0]).max() <= 1


def test_small_images_upscaled_after_the_warp_are_warped_on_the_host(method):
    small = [_photo(50, 60, seed=s) for s in range(4)]
    opts = T.AugmentOptions(small_image="upscale")
    ref, out, draws = _reference_and_batched(small, "crop_color_transform", options=opts, seed=1, method=method)
    assert all(d.size[0] >= 64 and d.size[1] >= 64 for d in draws)
    diff = np.abs(out - ref)
    assert diff.max() <= 8 and (diff > 1).mean() <= 1e-3  # the host does the warp and the upscale: only HLS differs
    ref, out, _ = _reference_and_batched(small, "crop", options=opts, seed=1, method=method)
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(DataError, match="smaller than input shape"):
        T.draw_train(np.random.default_rng(0), 50, 60, height=64, width=64, augmentation_type="crop")


def _dataset(tmp_path, shapes, channels=3):
    paths = []
    for k, (rows, cols) in enumerate(shapes):
        p = tmp_path / "img" / f"{k}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(encode_jpeg(_photo(rows, cols, seed=k), quality=92))
        paths.append(p.name)
    labels = np.eye(2, dtype=np.uint8)[np.arange(len(shapes)) % 2]
    return Dataset(paths, labels, ["a", "b"], root=tmp_path / "img")


def test_image_store_holds_exactly_the_resized_images_and_is_reused(tmp_path, caplog):
    data = _dataset(tmp_path, [(90, 120), (120, 90), (100, 100), (95, 140)])
    store = ImageStore.build(data, tmp_path / "cache", resize=80, channels=3, threads=2)
    assert store is not None and len(store) == 4
    for i in range(4):
        np.testing.assert_array_equal(store[i], resize_shorter(read_image(data.image_path(i)), 80))
    blob = store.path
    mtime = blob.stat().st_mtime_ns
    again = ImageStore.build(data, tmp_path / "cache", resize=80, channels=3)
    assert again.path == blob and blob.stat().st_mtime_ns == mtime  # opened, not rebuilt
    # a pickled store (a DataLoader worker under spawn) carries the path, not the pixels
    assert len(pickle.dumps(store)) < 2000
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(store))[3], store[3])
    # other settings are another store; an unfinished one (no index) is rebuilt
    assert store_key(data, resize=64, channels=3) != store_key(data, resize=80, channels=3)
    (tmp_path / "cache" / f"{store_key(data, resize=80, channels=3)}.json").unlink()
    rebuilt = ImageStore.build(data, tmp_path / "cache", resize=80, channels=3)
    np.testing.assert_array_equal(rebuilt[0], store[0])
    assert ImageStore.build(data, tmp_path / "other", resize=80, channels=3, max_bytes=1000) is None
    assert not list((tmp_path / "other").glob("*.u8"))


def test_a_store_over_its_limit_is_kept_as_jpeg_close_to_the_resized_images(tmp_path, caplog):
    data = _dataset(tmp_path, [(90, 120), (120, 90), (100, 100), (95, 140)] * 3)
    exact = [resize_shorter(read_image(data.image_path(i)), 80) for i in range(len(data))]
    raw_bytes = sum(img.nbytes for img in exact)
    store = ImageStore.build(data, tmp_path / "cache", resize=80, channels=3, threads=2, max_bytes=raw_bytes // 2)
    assert store is not None and store.encoding == "jpeg" and len(store) == len(data)
    assert store.path.suffix == ".jpegs" and store.nbytes < raw_bytes / 2
    assert "caching them as JPEG (quality 95" in caplog.text
    diffs = []
    for i, img in enumerate(exact):
        got = store[i]
        assert got.shape == img.shape and got.dtype == np.uint8
        diffs.append(np.abs(got.astype(int) - img).ravel())
    diff = np.concatenate(diffs)
    assert 0 < diff.mean() <= 2.0 and np.percentile(diff, 99) <= 12  # re-encoding loses a little, not more
    # reopened from the folder (a rerun), and pickled to a loader worker: the same pixels
    again = ImageStore.build(data, tmp_path / "cache", resize=80, channels=3, max_bytes=raw_bytes // 2)
    assert again.path == store.path and again.encoding == "jpeg"
    np.testing.assert_array_equal(again[5], store[5])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(store))[7], store[7])
    # a raw store of the same data is another key; a JPEG store that does not fit either is not written
    assert store_key(data, resize=80, channels=3) != store_key(data, resize=80, channels=3, encoding="jpeg")
    assert ImageStore.build(data, tmp_path / "tiny", resize=80, channels=3, max_bytes=1000) is None
    assert not list((tmp_path / "tiny").glob("*.jpegs"))
    # a damaged cache file (here without a source to decode it from again) is an error that names it and the way out
    damaged = ImageStore(store.path, store.shapes, store.offsets, np.full_like(store.lengths, 10))
    with pytest.raises(DataError, match=r"\.jpegs: image 1 of this decode cache is damaged .*run again"):
        damaged[1]
    # asked for by name (the benchmark does): JPEG although raw would fit
    assert ImageStore.build(data, tmp_path / "named", resize=80, channels=3, encoding="jpeg").encoding == "jpeg"
    with pytest.raises(ValueError, match="encoding must be 'auto', 'raw' or 'jpeg', got 'png'"):
        ImageStore.build(data, tmp_path / "named", resize=80, channels=3, encoding="png")


def test_a_jpeg_store_feeds_the_batched_pipeline(tmp_path):
    data = _dataset(tmp_path, [(90, 120), (120, 90), (100, 100), (95, 140)] * 2, channels=1)
    hp = Hyperparameters(num_classes=2, num_training_samples=8, mini_batch_size=4, image_shape="1,64,64", resize=72,
                         augmentation_type="crop", multi_label=1, epochs=1)
    store = ImageStore.build(data, tmp_path / "cache", resize=72, channels=1, max_bytes=20_000)
    assert store is not None and store.encoding == "jpeg" and store[0].shape[2] == 1
    batched = ImageDataset(data, hp, train=True, seed=3, cache=store, batched=True)
    loader = make_loader(batched, batch_sampler=EpochSampler(epoch_order(len(data), 2, 4, 3, 0), 4, 0), num_workers=0)
    feeder = DeviceFeeder(loader, CPU, height=64, width=64, fill_value=127)
    shapes = [tuple(x.shape) for x, _ in feeder]
    assert shapes == [(4, 1, 64, 64), (4, 1, 64, 64)]


def test_batched_dataset_draws_what_the_reference_draws_and_the_feeder_matches(tmp_path):
    data = _dataset(tmp_path, [(90, 120), (120, 90), (100, 100), (95, 140)] * 2)
    hp = Hyperparameters(num_classes=2, num_training_samples=8, mini_batch_size=4, image_shape="3,64,64", resize=72,
                         augmentation_type="crop_color_transform", multi_label=1, epochs=1)
    store = ImageStore.build(data, tmp_path / "cache", resize=72, channels=3)
    batched = ImageDataset(data, hp, train=True, seed=7, cache=store, batched=True)
    reference = ImageDataset(data, hp, train=True, seed=7)
    key = (2, 5, 3)  # (epoch, position, index)
    img, draws, labels = batched[key]
    ref_img, _ = reference[key]
    assert draws == T.draw_train(np.random.default_rng([7, 2, 5]), *img.shape[:2], height=64, width=64,
                                 augmentation_type="crop_color_transform")
    np.testing.assert_array_equal(T.apply_train_draws(img, draws, height=64, width=64), ref_img.numpy())
    np.testing.assert_array_equal(labels, data.labels[3])
    order = epoch_order(len(data), 2, 4, 7, 0)
    loader = make_loader(batched, batch_sampler=EpochSampler(order, 4, 0), num_workers=0)
    ref_loader = make_loader(reference, batch_sampler=EpochSampler(order, 4, 0), num_workers=0)
    feeder = DeviceFeeder(loader, CPU, height=64, width=64, fill_value=127, channels_last=True)
    assert len(feeder) == 2
    for (x, y), (ref_x, ref_y) in zip(feeder, ref_loader):
        assert x.is_contiguous(memory_format=torch.channels_last)
        diff = (x.permute(0, 2, 3, 1) - ref_x.float()).abs()
        assert diff.max() <= 8 and (diff > 1).float().mean() <= 1e-3
        torch.testing.assert_close(y, ref_y)


def test_auto_takes_opencv_on_a_cpu_and_an_unknown_method_is_refused():
    draws = [T.draw_train(np.random.default_rng([4, 0, k]), im.shape[0], im.shape[1], height=64, width=64,
                          augmentation_type="crop_color_transform") for k, im in enumerate(IMAGES)]
    batch = B.assemble_batch(IMAGES, draws, [np.zeros(2)] * len(IMAGES), height=64, width=64, fill_value=127)
    run = {m: B.augment_batch(batch, CPU, height=64, width=64, fill_value=127, method=m, channels_last=True)
           for m in ("auto", "opencv", "tensor")}
    torch.testing.assert_close(run["auto"], run["opencv"], rtol=0, atol=0)
    assert run["auto"].is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(run["opencv"], run["tensor"])  # two methods, so the check above can tell them apart
    with pytest.raises(ValueError, match="method must be one of auto, tensor, opencv"):
        B.augment_batch(batch, CPU, height=64, width=64, fill_value=127, method="pil")
