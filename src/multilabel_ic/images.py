"""One image-decoding function for the whole library (training, prediction, benchmarks), built on OpenCV.

It returns RGB uint8 HxWx3 (or HxWx1 for greyscale models), applies EXIF orientation, and turns every failure into
an :class:`ImageDecodeError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from . import _pixel_limit as _limits
from .exceptions import ImageDecodeError, UsageError
from .image_header import FORMATS, HeaderError, header_size

__all__ = ["decode_image", "imdecode", "read_image", "read_bytes", "encode_jpeg", "resize_shorter", "image_pixels", "DEFAULT_MAX_PIXELS",
           "max_pixels", "set_max_pixels"]

# Decoded pixels allowed per image, checked from the file's header before decoding (image_header.header_size reads
# it as the decoder OpenCV picks reads it, for every format this OpenCV decodes): a 1 MB PNG can claim 20000 x 20000
# pixels (1.2 GB decoded, more in the pipeline). The default is Pillow's decompression-bomb limit; set another with
# set_max_pixels() or the MULTILABEL_IC_MAX_PIXELS environment variable (0 = no limit). The second line of defence,
# OpenCV's own OPENCV_IO_MAX_IMAGE_PIXELS, is set from the same setting when the package is first imported
# (multilabel_ic/__init__.py: OpenCV reads it once, when cv2 is loaded).
DEFAULT_MAX_PIXELS = _limits.DEFAULT_MAX_PIXELS
_max_pixels: int | None = None

cv2.setNumThreads(1)  # decoding runs in loader workers; OpenCV's own pool would oversubscribe the cores

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def max_pixels() -> int:
    """The current limit on decoded pixels per image (0 = none)."""
    if _max_pixels is not None:
        return _max_pixels
    env = os.environ.get("MULTILABEL_IC_MAX_PIXELS")
    if env is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(env)
    except ValueError:
        raise UsageError(f"MULTILABEL_IC_MAX_PIXELS={env!r} is not an integer; set a pixel count, or 0 for no "
                         f"limit.") from None
    if value < 0:
        raise UsageError(f"MULTILABEL_IC_MAX_PIXELS={env!r} must be >= 0 (0 = no limit).")
    return value


def set_max_pixels(limit: int | None) -> None:
    """Set the limit on decoded pixels per image for this process (``0``: none; ``None``: back to the default)."""
    global _max_pixels
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise UsageError(f"max_pixels must be a non-negative int (0 = no limit) or None, got {limit!r}")
    _max_pixels = limit


def image_pixels(data: bytes) -> int | None:
    """Width x height from the encoded image's header, read as the decoder OpenCV picks for it reads it (see
    :mod:`multilabel_ic.image_header`), without decoding; None when OpenCV has no decoder for these bytes or the
    header cannot be read."""
    try:
        found = header_size(data)
    except HeaderError:
        return None
    return None if found is None else found[1] * found[2]


def _check_pixels(data: bytes, source: str, limit: int) -> None:
    """Refuse, before decoding, an image over ``limit`` pixels, bytes no decoder of OpenCV takes, and a known format
    whose header cannot be read (its size could not be checked)."""
    try:
        found = header_size(data)
    except HeaderError as exc:
        raise ImageDecodeError(f"{source}: {exc}, so its size cannot be checked before decoding and it is not decoded. "
                               f"Re-encode it as JPEG or PNG.") from None
    if found is None:
        raise ImageDecodeError(_NOT_AN_IMAGE.format(source=source))
    fmt, width, height = found
    if width * height > limit:
        raise ImageDecodeError(
            f"{source}: the image has {width * height} pixels, more than the limit of {limit} decoded pixels "
            f"({fmt} header). Resize it, or raise the limit with multilabel_ic.images.set_max_pixels(n) or "
            f"MULTILABEL_IC_MAX_PIXELS=n if you trust the file.")


_NOT_AN_IMAGE = ("{source}: not a decodable image (supported: " + ", ".join(FORMATS) + "). Check that the file is an "
                 "image and not truncated or an HTML error page.")


def decode_image(data: bytes, *, channels: int = 3, source: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG/... bytes to RGB uint8 (H, W, channels).

    Greyscale inputs are expanded to three channels (and RGB reduced to one for ``channels=1``), alpha is dropped,
    CMYK JPEGs are converted by OpenCV, EXIF orientation is applied. A truncated JPEG is an error, not a grey image.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UsageError(f"{source}: expected the encoded image as bytes, got {type(data).__name__}; read a file "
                         f"with Path(path).read_bytes().")
    if not data:
        raise ImageDecodeError(f"{source}: empty file, not an image.")
    limit = max_pixels()
    if limit:
        _check_pixels(bytes(data), source, limit)
    try:
        img = imdecode(np.frombuffer(data, dtype=np.uint8), channels)
    except cv2.error as exc:  # OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS), or a decoder's failure
        pixels = image_pixels(bytes(data))
        cap = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS")
        if pixels is not None and cap and cap.isdigit() and pixels > int(cap):
            raise ImageDecodeError(
                f"{source}: the image has {pixels} pixels, more than OpenCV's limit OPENCV_IO_MAX_IMAGE_PIXELS={cap}, "
                f"which is set when multilabel_ic is first imported; set MULTILABEL_IC_MAX_PIXELS=n (or "
                f"OPENCV_IO_MAX_IMAGE_PIXELS=n) before starting Python to decode it.") from None
        raise ImageDecodeError(f"{source}: OpenCV cannot decode it ({str(exc).strip().splitlines()[-1][-120:]}); "
                               f"re-encode it as JPEG or PNG.") from None
    if img is None:
        raise ImageDecodeError(_NOT_AN_IMAGE.format(source=source))
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-64:]:
        raise ImageDecodeError(
            f"{source}: truncated JPEG (no end-of-image marker); re-download or re-encode the file.")
    return img


def imdecode(buf: np.ndarray, channels: int) -> np.ndarray | None:
    """OpenCV's decode of encoded bytes (a uint8 array) to RGB uint8 (H, W, channels); None when they do not decode.
    No checks: :func:`decode_image` is the one for files from users."""
    # IMREAD_COLOR applies EXIF orientation; IMREAD_UNCHANGED would not, so alpha images are handled by it too.
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    return img[:, :, None] if channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, or an :class:`ImageDecodeError` that names it (missing, a folder, unreadable)."""
    from ._read import GiB, read_bounded

    p = Path(path)
    if p.is_dir():
        raise ImageDecodeError(f"{p}: is a directory, not an image file.")
    # bounded and never blocking: a FIFO or a device in place of an image is refused, not waited on or read forever
    return read_bounded(p, limit=2 * GiB, what="image file", error=ImageDecodeError)


def read_image(path: str | os.PathLike, *, channels: int = 3) -> np.ndarray:
    """Read and decode an image file; see :func:`decode_image`."""
    return decode_image(read_bytes(path), channels=channels, source=str(path))


def encode_jpeg(rgb: np.ndarray, *, quality: int = 90, full_colour: bool = False) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes; ``full_colour`` keeps the colour at full resolution (4:4:4) instead
    of libjpeg's default 4:2:0."""
    img = rgb if rgb.ndim == 2 or rgb.shape[2] == 1 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if full_colour:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, out = cv2.imencode(".jpg", img, params)
    if not ok:
        raise ImageDecodeError("could not encode image as JPEG")
    return out.tobytes()


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Scale so the shorter side is ``size``; the longer one is ``int(size * long / short)`` as in MXNet (and
    im2rec ``--resize``)."""
    h, w = img.shape[:2]
    if h < w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    if (nh, nw) == (h, w):
        return img
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out
