"""Images too small for ``image_shape``, found before a run starts instead of in the middle of an epoch.

With ``small_image="error"`` (the algorithm's behaviour) an image smaller than the crop after the shorter-side
``resize`` fails training. The decode cache knows every image's size once it is built or opened
(:meth:`ImageStore.build <multilabel_ic.backends.local.imagestore.ImageStore.build>` checks them); without a cache
the sizes come from the files' headers (:func:`check_headers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..._parallel import ordered_map
from ...exceptions import DataError

if TYPE_CHECKING:
    from ...data.dataset import Dataset

__all__ = ["resized_size", "too_small_error", "check_shapes", "check_headers"]


def resized_size(rows: int, cols: int, resize: int | None) -> tuple[int, int]:
    """(rows, cols) after :func:`~multilabel_ic.images.resize_shorter` (MXNet's ``int(size * long / short)``)."""
    if not resize:
        return rows, cols
    if rows < cols:
        return resize, int(resize * cols / rows)
    return int(resize * rows / cols), resize


def too_small_error(data: Dataset, bad: Sequence[tuple[int, int, int]], *, height: int, width: int,
                    resize: int | None, what: str) -> DataError:
    """The refusal for images ``bad`` = (index, rows, cols after resizing) of ``data``."""
    listed = ", ".join(f"{data.image_path(i)} ({cols}x{rows})" for i, rows, cols in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    after = f" after resize={resize}" if resize else " (resize is not set)"
    return DataError(
        f"{what}: {len(bad)} of {len(data)} images are smaller than image_shape's {width}x{height}{after}: "
        f"{listed}{more}. Set resize to at least {max(height, width)} (--hp resize={max(height, width)}), remove "
        f"these images, or pass AugmentOptions(small_image='upscale').")


def check_shapes(data: Dataset, shapes: np.ndarray, *, height: int, width: int, resize: int | None,
                 what: str) -> None:
    """Refuse when any of ``shapes`` (rows, cols, ... of each image, already resized) is under height x width."""
    shapes = np.asarray(shapes, dtype=np.int64).reshape(len(shapes), -1)
    small = np.flatnonzero((shapes[:, 0] < height) | (shapes[:, 1] < width))
    if len(small):
        raise too_small_error(data, [(int(i), int(shapes[i, 0]), int(shapes[i, 1])) for i in small],
                              height=height, width=width, resize=resize, what=what)


def _header_size(path) -> tuple[int, int] | None:
    """(rows, cols) from the file's header, or None when Pillow cannot tell (the decoder reports such files)."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as im:
                cols, rows = im.size
                return rows, cols
        except Exception:  # noqa: BLE001 - unreadable here means "unknown": decoding names the file's problem
            return None


def check_headers(data: Dataset, *, height: int, width: int, resize: int | None, what: str,
                  threads: int | None = None) -> None:
    """:func:`check_shapes` for the pipeline without a cache, from each file's header (nothing is decoded).

    EXIF orientation can swap an image's sides when it is decoded, so an image is refused only when it is too small
    either way round (for a square ``image_shape``, the usual one, that is exact)."""
    bad = []
    sizes = ordered_map(lambda i: _header_size(data.image_path(i)), len(data), threads=threads)
    for i, size in enumerate(sizes):
        if size is None:
            continue
        rows, cols = size
        fits = [r >= height and c >= width for r, c in (resized_size(rows, cols, resize),
                                                        resized_size(cols, rows, resize))]
        if not any(fits):
            bad.append((i, *resized_size(rows, cols, resize)))
    if bad:
        raise too_small_error(data, bad, height=height, width=width, resize=resize, what=what)
