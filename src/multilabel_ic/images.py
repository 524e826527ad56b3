"""One image-decoding function for the whole library (training, prediction, benchmarks), built on OpenCV.

It returns RGB uint8 HxWx3 (or HxWx1 for greyscale models), applies EXIF orientation, and turns every failure into
an :class:`ImageDecodeError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .exceptions import ImageDecodeError

__all__ = ["decode_image", "read_image", "encode_jpeg", "resize_shorter"]

cv2.setNumThreads(1)  # decoding runs in loader workers; OpenCV's own pool would oversubscribe the cores

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def decode_image(data: bytes, *, channels: int = 3, source: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG/... bytes to RGB uint8 (H, W, channels).

    Greyscale inputs are expanded to three channels (and RGB reduced to one for ``channels=1``), alpha is dropped,
    CMYK JPEGs are converted by OpenCV, EXIF orientation is applied. A truncated JPEG is an error, not a grey image.
    """
    if not data:
        raise ImageDecodeError(f"{source}: empty file, not an image.")
    buf = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    # IMREAD_COLOR applies EXIF orientation; IMREAD_UNCHANGED would not, so alpha images are handled below.
    img = cv2.imdecode(buf, flags)
    if img is None:
        raise ImageDecodeError(
            f"{source}: not a decodable image (supported: JPEG, PNG, BMP, TIFF, WebP). Check that the file is an "
            f"image and not truncated or an HTML error page.")
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-64:]:
        raise ImageDecodeError(
            f"{source}: truncated JPEG (no end-of-image marker); re-download or re-encode the file.")
    if channels == 1:
        return img[:, :, None]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, *, channels: int = 3) -> np.ndarray:
    """Read and decode an image file; see :func:`decode_image`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(f"{p}: image file not found.") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{p}: is a directory, not an image file.") from None
    except OSError as exc:
        raise ImageDecodeError(f"{p}: cannot read image file ({exc.strerror}).") from exc
    return decode_image(data, channels=channels, source=str(p))


def encode_jpeg(rgb: np.ndarray, *, quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    img = rgb if rgb.ndim == 2 or rgb.shape[2] == 1 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
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
