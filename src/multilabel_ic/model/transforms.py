"""The algorithm's image pipeline with MXNet ``ImageRecordIter`` semantics (MXNet image_aug_default.cc, data.py), on RGB uint8.

Train: shorter-side ``resize`` -> affine (crop_color_transform) -> random crop at native scale -> HLS jitter
(crop_color and up) -> random mirror (any augmentation). Validation: resize -> centre crop. Inference: plain resize to
(H, W), or the validation transform as the named option ``"centre_crop"``. Each draw comes from a NumPy generator the
caller seeds per (seed, epoch, sample), so results do not depend on the number of loader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..exceptions import DataError
from ..hyperparameters import Rule, check_options
from ..images import resize_shorter

__all__ = ["AugmentOptions", "SampleDraws", "resize_shorter", "affine_params", "affine_matrix", "random_affine", "crop",
           "hls_jitter", "apply_hls_offsets", "draw_train", "warp_and_fit", "apply_train_draws", "train_transform", "eval_transform", "inference_transform", "AUG_LEVELS"]

# MXNet data.set_data_aug_level: level 1 crop+mirror, 2 adds HSL, 3 adds rotate/shear/aspect.
AUG_LEVELS = {None: 0, "crop": 1, "crop_color": 2, "crop_color_transform": 3}
MAX_H, MAX_S, MAX_L = 36, 50, 50
MAX_ROTATE, MAX_SHEAR, MAX_ASPECT = 10, 0.1, 0.25


AUGMENT_RULES = {"fill_value": Rule("int", low=0, high=255),
                 "hsl_jitter": Rule("choice", choices=("uniform", "approx_gaussian")),
                 "small_image": Rule("choice", choices=("error", "upscale")),
                 "inference": Rule("choice", choices=("resize", "centre_crop"))}


@dataclass(frozen=True)
class AugmentOptions:
    """Choices the spec leaves open, as named options with the most likely value as default.

    fill_value: border colour of the affine warp (MXNet data.py passes 127; ImageRecordIter's default is 255).
    hsl_jitter: "approx_gaussian" (MXNet >= 1.3, the algorithm's era: U=(U1+4*U2)/5) or "uniform" (MXNet <= 1.2:
    int(U*2*max - max)).
    small_image: "error" (the algorithm's documented failure) or "upscale" (MXNet >= 1.3 behaviour).
    inference: "resize" (the endpoint: plain resize to H x W) or "centre_crop" (the validation transform).
    """

    fill_value: int = 127
    hsl_jitter: str = "approx_gaussian"
    small_image: str = "error"
    inference: str = "resize"

    def __post_init__(self):
        checked = check_options({name: getattr(self, name) for name in AUGMENT_RULES}, AUGMENT_RULES,
                                owner="AugmentOptions")
        for name, value in checked.items():
            object.__setattr__(self, name, value)


def affine_params(rng: np.random.Generator) -> tuple[float, int, float, float]:
    """(shear, angle in integer degrees, scale, aspect ratio), drawn as ImageRecordIter does at level 3."""
    s = rng.random() * MAX_SHEAR * 2 - MAX_SHEAR
    angle = int(rng.integers(-MAX_ROTATE, MAX_ROTATE + 1))
    scale = 1.0
    ratio = rng.random() * MAX_ASPECT * 2 - MAX_ASPECT + 1
    return s, angle, scale, ratio


def affine_matrix(shear: float, angle: int, scale: float, ratio: float, cols: int, rows: int) -> np.ndarray:
    """MXNet's forward 2x3 matrix, translated so the result is centred in a (scale*W, scale*H) canvas."""
    a, b = math.cos(angle / 180.0 * math.pi), math.sin(angle / 180.0 * math.pi)
    hs = 2 * scale / (1 + ratio)
    ws = ratio * hs
    m = np.zeros((2, 3), np.float32)
    m[0, 0] = hs * a - shear * b * ws
    m[1, 0] = -b * ws
    m[0, 1] = hs * b + shear * a * ws
    m[1, 1] = a * ws
    new_w, new_h = scale * cols, scale * rows
    m[0, 2] = (new_w - (m[0, 0] * cols + m[0, 1] * rows)) / 2
    m[1, 2] = (new_h - (m[1, 0] * cols + m[1, 1] * rows)) / 2
    return m


def random_affine(img: np.ndarray, rng: np.random.Generator, fill_value: int) -> np.ndarray:
    h, w = img.shape[:2]
    s, angle, scale, ratio = affine_params(rng)
    m = affine_matrix(s, angle, scale, ratio, w, h)
    out = cv2.warpAffine(img, m, (int(scale * w), int(scale * h)), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(fill_value,) * 3)
    return out[:, :, None] if out.ndim == 2 else out


def _ensure_size(img: np.ndarray, height: int, width: int, policy: str, source: str) -> np.ndarray:
    h, w = img.shape[:2]
    if h >= height and w >= width:
        return img
    if policy == "error":
        raise DataError(
            f"{source}: input image size smaller than input shape: the image is {w}x{h} after resizing but "
            f"image_shape needs {width}x{height}. Set 'resize' to at least {max(height, width)}, remove the image, "
            f"or pass AugmentOptions(small_image='upscale').")
    scale = max(height / h, width / w)
    out = cv2.resize(img, (max(width, math.ceil(w * scale)), max(height, math.ceil(h * scale))),
                     interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out


def crop(img: np.ndarray, height: int, width: int, rng: np.random.Generator | None) -> np.ndarray:
    """Random crop (offsets UniformInt[0, rows-H] x UniformInt[0, cols-W]) or, without ``rng``, the centre crop."""
    h, w = img.shape[:2]
    if rng is None:
        y, x = (h - height) // 2, (w - width) // 2
    else:
        y = int(rng.integers(0, h - height + 1))
        x = int(rng.integers(0, w - width + 1))
    return img[y:y + height, x:x + width]


def _offset(rng: np.random.Generator, maximum: int, mode: str) -> int:
    u = rng.random() if mode == "uniform" else (rng.random() + 4 * rng.random()) / 5
    return int(u * maximum * 2 - maximum)  # int() truncates toward zero, as the C++ cast does


def hls_jitter(img: np.ndarray, rng: np.random.Generator, mode: str = "approx_gaussian") -> np.ndarray:
    """Add one random (H, L, S) offset to the whole image in OpenCV's 8-bit HLS space, clamped, and convert back."""
    dh, ds, dl = _offset(rng, MAX_H, mode), _offset(rng, MAX_S, mode), _offset(rng, MAX_L, mode)
    return apply_hls_offsets(img, dh, dl, ds)


@dataclass(frozen=True)
class SampleDraws:
    """One training sample's random draws, taken in ImageRecordIter's order: affine, crop, colour, mirror.

    ``size`` is the (rows, cols) of the image the crop is cut from (after the affine warp and the small-image
    policy); ``y``/``x`` its top-left corner. Both pipelines apply the same draws: :func:`apply_train_draws` with
    OpenCV (the reference), and the batched device augmentation.
    """

    size: tuple[int, int]
    affine: tuple[float, int, float, float] | None = None  # (shear, angle, scale, ratio) at level 3
    y: int = 0
    x: int = 0
    hls: tuple[int, int, int] | None = None  # (dh, dl, ds) offsets at level 2 and up
    mirror: bool = False


def _size_after(rows: int, cols: int, height: int, width: int, policy: str, source: str) -> tuple[int, int]:
    """The size :func:`_ensure_size` gives an image of (rows, cols)."""
    if rows >= height and cols >= width:
        return rows, cols
    if policy == "error":
        _ensure_size(np.zeros((rows, cols, 1), np.uint8), height, width, policy, source)  # raises its message
    scale = max(height / rows, width / cols)
    return max(height, math.ceil(rows * scale)), max(width, math.ceil(cols * scale))


def draw_train(rng: np.random.Generator, rows: int, cols: int, *, height: int, width: int,
               augmentation_type: str | None, options: AugmentOptions = AugmentOptions(),
               source: str = "<image>") -> SampleDraws:
    """The draws for one (already resized) image of ``rows`` x ``cols``, from ``rng``, in the reference's order."""
    level = AUG_LEVELS[augmentation_type]
    affine = None
    if level >= 3:
        affine = affine_params(rng)
        scale = affine[2]
        rows, cols = int(scale * rows), int(scale * cols)
    rows, cols = _size_after(rows, cols, height, width, options.small_image, source)
    if level >= 1:
        y = int(rng.integers(0, rows - height + 1))
        x = int(rng.integers(0, cols - width + 1))
    else:
        y, x = (rows - height) // 2, (cols - width) // 2
    hls = None
    if level >= 2:
        dh, ds, dl = (_offset(rng, MAX_H, options.hsl_jitter), _offset(rng, MAX_S, options.hsl_jitter),
                      _offset(rng, MAX_L, options.hsl_jitter))
        hls = (dh, dl, ds)
    mirror = bool(level >= 1 and rng.random() < 0.5)
    return SampleDraws(size=(rows, cols), affine=affine, y=y, x=x, hls=hls, mirror=mirror)


def apply_hls_offsets(img: np.ndarray, dh: int, dl: int, ds: int) -> np.ndarray:
    """Add (dh, dl, ds) to every pixel in OpenCV's 8-bit HLS space, clamped, and convert back to RGB."""
    if img.shape[2] == 1:
        return np.clip(img.astype(np.int16) + dl, 0, 255).astype(np.uint8)
    hls = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HLS).astype(np.int16)
    hls[..., 0] = np.clip(hls[..., 0] + dh, 0, 180)
    hls[..., 1] = np.clip(hls[..., 1] + dl, 0, 255)
    hls[..., 2] = np.clip(hls[..., 2] + ds, 0, 255)
    return cv2.cvtColor(hls.astype(np.uint8), cv2.COLOR_HLS2RGB)


def warp_and_fit(img: np.ndarray, draws: SampleDraws, *, height: int, width: int,
                 options: AugmentOptions = AugmentOptions(), source: str = "<image>") -> np.ndarray:
    """The reference's first steps: the affine warp (if drawn), then the small-image policy."""
    if draws.affine is not None:
        h, w = img.shape[:2]
        shear, angle, scale, ratio = draws.affine
        m = affine_matrix(shear, angle, scale, ratio, w, h)
        img = cv2.warpAffine(img, m, (int(scale * w), int(scale * h)), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(options.fill_value,) * 3)
        img = img[:, :, None] if img.ndim == 2 else img
    return _ensure_size(img, height, width, options.small_image, source)


def apply_train_draws(img: np.ndarray, draws: SampleDraws, *, height: int, width: int,
                      options: AugmentOptions = AugmentOptions(), source: str = "<image>") -> np.ndarray:
    """The reference augmentation of one resized image with OpenCV: warp, size policy, crop, colour, mirror."""
    img = warp_and_fit(img, draws, height=height, width=width, options=options, source=source)
    img = img[draws.y:draws.y + height, draws.x:draws.x + width]
    if draws.hls is not None:
        img = apply_hls_offsets(img, *draws.hls)
    if draws.mirror:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def train_transform(img: np.ndarray, *, height: int, width: int, resize: int | None, augmentation_type: str | None,
                    rng: np.random.Generator, options: AugmentOptions = AugmentOptions(), source: str = "<image>",
                    resized: bool = False) -> np.ndarray:
    """One training sample. ``resized=True`` means ``img`` already went through :func:`resize_shorter`."""
    if resize and not resized:
        img = resize_shorter(img, resize)
    draws = draw_train(rng, img.shape[0], img.shape[1], height=height, width=width,
                       augmentation_type=augmentation_type, options=options, source=source)
    return apply_train_draws(img, draws, height=height, width=width, options=options, source=source)


def eval_transform(img: np.ndarray, *, height: int, width: int, resize: int | None,
                   options: AugmentOptions = AugmentOptions(), source: str = "<image>",
                   resized: bool = False) -> np.ndarray:
    """Validation: resize (if set) then centre crop."""
    if resize and not resized:
        img = resize_shorter(img, resize)
    img = _ensure_size(img, height, width, options.small_image, source)
    return np.ascontiguousarray(crop(img, height, width, None))


def inference_transform(img: np.ndarray, *, height: int, width: int, resize: int | None,
                        options: AugmentOptions = AugmentOptions()) -> np.ndarray:
    """The endpoint's preprocessing: plain resize to (H, W) without keeping the aspect ratio, or the centre crop."""
    if options.inference == "centre_crop":
        return eval_transform(img, height=height, width=width, resize=resize or max(height, width),
                              options=AugmentOptions(small_image="upscale"))
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out
