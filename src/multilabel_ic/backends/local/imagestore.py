"""The decode cache: every image of a split decoded once, resized to the shorter side ``resize``, in one uint8 file.

The algorithm's pipeline resizes first, deterministically, so a stored image is exactly what the reference pipeline
computes before its first random step: reading it back changes no pixel. Training then reads images with one slice of
a memory map (no per-file open, no JPEG decode), and the page cache keeps the hot ones in memory.

Layout in the cache folder (``<output>/cache`` unless ``LocalOptions(cache_dir=...)`` says otherwise):
``<key>.u8`` (the images' HWC bytes back to back) and ``<key>.json`` (shapes and offsets). The key hashes the data
(paths, sizes, labels), ``resize`` and ``channels``, so a store is reused across runs and restarts of the same data and
rebuilt for other data. The index is written last, through a temporary name: a store without it is unfinished and is
rebuilt. The build decodes on all cores (OpenCV releases the GIL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..._io import atomic_write, atomic_write_text, ensure_dir, output_error
from ..._parallel import ordered_map, usable_cores
from ...images import read_image, resize_shorter
from ...preflight import data_fingerprint

if TYPE_CHECKING:
    from ...data.dataset import Dataset

__all__ = ["ImageStore", "store_key", "decode_resized"]

log = logging.getLogger("multilabel_ic.train")
FORMAT = "multilabel-ic/image-store-v1"


def store_key(data: Dataset, *, resize: int | None, channels: int) -> str:
    spec = json.dumps({"format": FORMAT, "data": data_fingerprint(data), "resize": resize, "channels": channels})
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def decode_resized(data: Dataset, i: int, resize: int | None, channels: int) -> np.ndarray:
    """Image ``i`` of ``data`` decoded and resized to the shorter side ``resize``: the pipeline's deterministic start."""
    img = read_image(data.image_path(i), channels=channels)
    return np.ascontiguousarray(resize_shorter(img, resize) if resize else img)


class ImageStore(Sequence):
    """Read side: ``store[i]`` is image ``i`` as a read-only uint8 (rows, cols, channels) view of the memory map.

    The map is opened lazily in each process (a DataLoader worker opens its own; pickling sends the path only).
    """

    def __init__(self, path: Path, shapes: np.ndarray, offsets: np.ndarray):
        self.path, self.shapes, self.offsets = Path(path), shapes, offsets
        self._map: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i):  # an int index; slices are not served
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        rows, cols, channels = self.shapes[i]
        start = int(self.offsets[i])
        return self._map[start:start + rows * cols * channels].reshape(rows, cols, channels)

    def __getstate__(self) -> dict:
        return {"path": self.path, "shapes": self.shapes, "offsets": self.offsets, "_map": None}

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1] + np.prod(self.shapes[-1])) if len(self) else 0

    @classmethod
    def open(cls, folder: Path, key: str) -> ImageStore | None:
        """The finished store ``key`` in ``folder``, or None (missing, unfinished or of another format)."""
        index, blob = folder / f"{key}.json", folder / f"{key}.u8"
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            size = blob.stat().st_size
        except (OSError, ValueError):
            return None
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        shapes = np.asarray(meta["shapes"], dtype=np.int64).reshape(-1, 3)
        offsets = np.asarray(meta["offsets"], dtype=np.int64)
        if len(shapes) and offsets[-1] + np.prod(shapes[-1]) != size:
            return None
        return cls(blob, shapes, offsets)

    @classmethod
    def build(cls, data: Dataset, folder: Path, *, resize: int | None, channels: int, what: str = "images",
              threads: int | None = None, progress: bool = False, max_bytes: int | None = None) -> ImageStore | None:
        """Open the store of ``data`` in ``folder``, or decode it there; None when it would not fit.

        ``max_bytes`` bounds its size (estimated from the first images before anything is written); the free disk
        space bounds it too. None tells the caller to keep the per-image pipeline.
        """
        key = store_key(data, resize=resize, channels=channels)
        found = cls.open(folder, key)
        if found is not None:
            log.info("%s: decoded-image cache %s (%d images, %.0f MB)", what, found.path, len(found),
                     found.nbytes / 1e6)
            return found
        if not len(data):
            return None
        threads = threads or usable_cores()
        sample = [decode_resized(data, i, resize, channels) for i in range(min(len(data), 16))]
        estimate = int(np.mean([s.nbytes for s in sample]) * len(data) * 1.1)
        ensure_dir(folder, what="cache folder")
        free = shutil.disk_usage(folder).free
        if (max_bytes is not None and estimate > max_bytes) or estimate > free - (1 << 30):
            log.warning("%s: not caching decoded images (about %.1f GB; limit %s, %.1f GB free in %s): every "
                        "epoch decodes the files", what, estimate / 1e9,
                        "none" if max_bytes is None else f"{max_bytes / 1e9:.1f} GB", free / 1e9, folder)
            return None
        shapes, offsets, position = [], [], 0
        blob = folder / f"{key}.u8"
        log.info("%s: decoding %d images once into %s (%d threads)", what, len(data), blob, threads)
        from tqdm.auto import tqdm

        with atomic_write(blob, "wb") as fh, tqdm(total=len(data), desc=f"caching {what}", unit="img",
                                                   disable=not progress, leave=False) as bar:
            decoded = ordered_map(lambda i: sample[i] if i < len(sample) else decode_resized(data, i, resize, channels),
                                  len(data), threads=threads)  # the size estimate's images are not decoded twice
            for img in decoded:
                try:
                    fh.write(img.tobytes())
                except OSError as exc:
                    raise output_error(blob, exc) from exc
                shapes.append(img.shape)
                offsets.append(position)
                position += img.nbytes
                bar.update(1)
        atomic_write_text(folder / f"{key}.json", json.dumps({"format": FORMAT, "key": key, "resize": resize,
                                                              "channels": channels, "shapes": shapes,
                                                              "offsets": offsets}) + "\n")
        return cls(blob, np.asarray(shapes, np.int64).reshape(-1, 3), np.asarray(offsets, np.int64))

