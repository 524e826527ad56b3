import math

import cv2
import numpy as np
import pytest

from multilabel_ic import DataError
from multilabel_ic.model import transforms as A


def _img(h=120, w=160):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_resize_shorter_side_truncates_like_mxnet():
    assert A.resize_shorter(_img(480, 640), 256).shape == (256, 341, 3)  # int(256*640/480) = 341
    assert A.resize_shorter(_img(640, 427), 256).shape == (383, 256, 3)  # int(256*640/427) = 383


def test_affine_draws_are_in_the_documented_ranges():
    rng = np.random.default_rng(0)
    draws = [A.affine_params(rng) for _ in range(2000)]
    shear = [d[0] for d in draws]
    angles = [d[1] for d in draws]
    ratios = [d[3] for d in draws]
    assert -0.1 <= min(shear) and max(shear) <= 0.1 and max(shear) > 0.09
    assert set(angles) == set(range(-10, 11))  # integer degrees, +-10 inclusive
    assert 0.75 <= min(ratios) and max(ratios) <= 1.25 and min(ratios) < 0.76
    assert all(d[2] == 1.0 for d in draws)


def test_affine_matrix_identity_and_rotation():
    m = A.affine_matrix(0.0, 0, 1.0, 1.0, 100, 50)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    m = A.affine_matrix(0.0, 10, 1.0, 1.0, 100, 100)
    a, b = math.cos(math.radians(10)), math.sin(math.radians(10))
    np.testing.assert_allclose(m[:, :2], [[a, b], [-b, a]], atol=1e-6)
    # the image centre stays the centre
    centre = m @ np.array([50, 50, 1.0])
    np.testing.assert_allclose(centre, [50, 50], atol=1e-4)


def test_hls_jitter_default_is_mxnet_1_3s_approximate_gaussian():
    assert A.AugmentOptions().hsl_jitter == "approx_gaussian"
    rng = np.random.default_rng(1)
    # u = (U1 + 4 U2) / 5: variance (1 + 16) / (12 * 25), so the offset's std is 2 * 50 * sqrt(17 / 300) ~ 23.8
    draws = np.array([A._offset(rng, 50, "approx_gaussian") for _ in range(20000)])
    assert abs(draws.std() - 100 * np.sqrt(17 / 300)) < 0.6
    uniform = np.array([A._offset(rng, 50, "uniform") for _ in range(20000)])
    assert abs(uniform.std() - 100 / np.sqrt(12)) < 0.6  # 28.9: clearly the other distribution


def test_hls_offsets_are_bounded_and_uniform():
    rng = np.random.default_rng(0)
    hs = [A._offset(rng, 36, "uniform") for _ in range(5000)]
    assert -36 <= min(hs) and max(hs) <= 36 and min(hs) <= -34 and max(hs) >= 34
    gauss = [A._offset(rng, 50, "approx_gaussian") for _ in range(5000)]
    assert -50 <= min(gauss) and max(gauss) <= 50


def test_hls_jitter_shifts_the_whole_image_by_one_offset():
    img = np.full((10, 10, 3), (120, 80, 40), np.uint8)
    out = A.hls_jitter(img, np.random.default_rng(3))
    assert (out == out[0, 0]).all()  # one offset for every pixel
    before = cv2.cvtColor(img, cv2.COLOR_RGB2HLS)[0, 0].astype(int)
    after = cv2.cvtColor(out, cv2.COLOR_RGB2HLS)[0, 0].astype(int)
    assert abs(after[0] - before[0]) <= 36 + 2 and abs(after[1] - before[1]) <= 50 + 2


def test_random_crop_positions_cover_the_range():
    img = np.arange(20 * 30).reshape(20, 30, 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    corners = {tuple(A.crop(img, 16, 24, rng)[0, 0]) for _ in range(500)}
    assert len(corners) == 5 * 7  # UniformInt[0, rows-H] x UniformInt[0, cols-W]
    centre = A.crop(img, 16, 24, None)
    assert centre[0, 0, 0] == img[2, 3, 0]


def test_train_transform_levels():
    img = _img()
    rng = np.random.default_rng(0)
    out = A.train_transform(img, height=64, width=64, resize=72, augmentation_type=None, rng=rng)
    expected = A.crop(A.resize_shorter(img, 72), 64, 64, None)
    np.testing.assert_array_equal(out, expected)  # no augmentation: deterministic centre crop
    for aug in ("crop", "crop_color", "crop_color_transform"):
        o = A.train_transform(img, height=64, width=64, resize=80, augmentation_type=aug, rng=np.random.default_rng(1))
        assert o.shape == (64, 64, 3) and o.dtype == np.uint8 and o.flags.c_contiguous


def test_mirror_probability_is_one_half():
    img = _img(64, 64)
    flipped = 0
    for seed in range(400):
        o = A.train_transform(img, height=64, width=64, resize=None, augmentation_type="crop",
                              rng=np.random.default_rng(seed))
        flipped += int(np.array_equal(o, img[:, ::-1]))
    assert 160 < flipped < 240


def test_affine_fill_value_appears_in_corners():
    img = np.zeros((100, 100, 3), np.uint8)
    out = A.random_affine(img, np.random.default_rng(5), fill_value=127)
    assert out.shape == (100, 100, 3)
    # whenever the draw rotates or shears, the corners are filled with the fill value
    outs = [A.random_affine(img, np.random.default_rng(s), 127) for s in range(20)]
    assert any((o[0, 0] == 127).all() for o in outs)


def test_small_image_fails_with_the_algorithms_error_or_is_upscaled():
    img = _img(50, 60)
    with pytest.raises(DataError, match="x.jpg: input image size smaller than input shape.*60x50.*64x64"):
        A.eval_transform(img, height=64, width=64, resize=None, source="x.jpg")
    out = A.eval_transform(img, height=64, width=64, resize=None, options=A.AugmentOptions(small_image="upscale"))
    assert out.shape == (64, 64, 3)


def test_inference_is_a_plain_resize_or_the_centre_crop():
    img = _img(120, 240)
    out = A.inference_transform(img, height=64, width=64, resize=None)
    np.testing.assert_array_equal(out, cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR))
    cc = A.inference_transform(img, height=64, width=64, resize=72,
                               options=A.AugmentOptions(inference="centre_crop"))
    np.testing.assert_array_equal(cc, A.crop(A.resize_shorter(img, 72), 64, 64, None))


def test_options_are_validated():
    with pytest.raises(ValueError, match="hsl_jitter"):
        A.AugmentOptions(hsl_jitter="gauss")
    with pytest.raises(ValueError, match="fill_value"):
        A.AugmentOptions(fill_value=300)
