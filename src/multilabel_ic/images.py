"""One image-decoding function for the whole library (training, prediction, benchmarks), built on OpenCV.

It returns RGB uint8 HxWx3 (or HxWx1 for greyscale models), applies EXIF orientation, and turns every failure into
an :class:`ImageDecodeError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .exceptions import ImageDecodeError, UsageError

__all__ = ["decode_image", "imdecode", "read_image", "read_bytes", "encode_jpeg", "resize_shorter", "image_pixels", "DEFAULT_MAX_PIXELS",
           "max_pixels", "set_max_pixels"]

# Decoded pixels allowed per image, checked from the file's header before decoding: a 1 MB PNG can claim
# 20000 x 20000 pixels (1.2 GB decoded, more in the pipeline). The default is Pillow's decompression-bomb limit;
# set another with set_max_pixels() or the MULTILABEL_IC_MAX_PIXELS environment variable (0 = no limit).
DEFAULT_MAX_PIXELS = 89_478_485
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
    """Width x height from the encoded image's header, without decoding; None when the format is not recognised."""
    import io
    import re
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0] * im.size[1]
        except Image.DecompressionBombError as exc:  # Pillow's own, larger limit: its message has the size
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return int(found.group(1)) if found else 1 << 62
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def _check_pixels(data: bytes, source: str, limit: int) -> None:
    pixels = image_pixels(data)
    if pixels is not None and pixels > limit:
        raise ImageDecodeError(
            f"{source}: the image has {pixels} pixels, more than the limit of {limit} decoded pixels. Resize it, or "
            f"raise the limit with multilabel_ic.images.set_max_pixels(n) or MULTILABEL_IC_MAX_PIXELS=n if you trust "
            f"the file.")


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
    img = imdecode(np.frombuffer(data, dtype=np.uint8), channels)
    if img is None:
        raise ImageDecodeError(
            f"{source}: not a decodable image (supported: JPEG, PNG, BMP, TIFF, WebP). Check that the file is an "
            f"image and not truncated or an HTML error page.")
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
