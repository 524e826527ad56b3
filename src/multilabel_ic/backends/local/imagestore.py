"""The decode cache: every image of a split decoded once, resized to the shorter side ``resize``, in one file.

The algorithm's pipeline resizes first, deterministically, so a stored image is exactly what the reference pipeline
computes before its first random step. Two encodings:

- ``raw`` (the default): the uint8 pixels. Reading an image back is one slice of a memory map (no per-file open, no
  JPEG decode) and changes no pixel; the page cache keeps the hot ones in memory.
- ``jpeg``, when the raw store would not fit (``max_bytes``, the free disk): each resized image re-encoded as a JPEG
  of quality 95 with full-resolution colour (4:4:4), about 6x smaller. Reading decodes one small JPEG (about 0.7 ms
  of CPU at ``resize=256``, against about 2 ms for the original photo's decode, resize and augmentation). Its pixels
  differ from the reference's by about 1.6 grey levels on average. ``im2rec --resize 256 --quality 95`` does the
  same to the images the algorithm reads from RecordIO, with 4:2:0 colour and more loss.

Layout in the cache folder (``<output>/cache`` unless ``LocalOptions(cache_dir=...)`` says otherwise): ``<key>.u8``
(raw: the images' HWC bytes back to back) or ``<key>.jpegs`` (the JPEGs back to back), and ``<key>.json`` (shapes,
offsets and, for JPEG, lengths). The key hashes the data (paths, sizes, labels), ``resize``, ``channels`` and the
encoding, so a store is reused across runs and restarts of the same data and rebuilt for other data. The index is
written last, through a temporary name: a store without it is unfinished and is rebuilt. The build decodes on all
cores (OpenCV releases the GIL).
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
from ...exceptions import DataError
from ...images import encode_jpeg, imdecode, read_image, resize_shorter
from ...preflight import data_fingerprint

if TYPE_CHECKING:
    from ...data.dataset import Dataset

__all__ = ["ImageStore", "store_key", "decode_resized", "ENCODINGS", "JPEG_QUALITY"]

log = logging.getLogger("multilabel_ic.train")
FORMAT = "multilabel-ic/image-store-v1"
ENCODINGS = ("raw", "jpeg")
JPEG_QUALITY = 95  # im2rec's --quality in the algorithm's RecordIO examples
_SUFFIX = {"raw": ".u8", "jpeg": ".jpegs"}


def store_key(data: Dataset, *, resize: int | None, channels: int, encoding: str = "raw") -> str:
    spec: dict = {"format": FORMAT, "data": data_fingerprint(data), "resize": resize, "channels": channels}
    if encoding != "raw":  # raw stores keep the keys they had before JPEG stores existed
        spec["encoding"] = encoding
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:24]


def _encode(img: np.ndarray) -> bytes:
    """A cached image as JPEG bytes (quality 95, 4:4:4)."""
    return encode_jpeg(img, quality=JPEG_QUALITY, full_colour=True)


def _decode(buf: np.ndarray, channels: int, source: Path) -> np.ndarray:
    img = imdecode(buf, channels)
    if img is None:
        raise DataError(f"{source}: an image in this decode cache does not decode (the file is damaged). Delete it "
                        f"and its .json index, and run again: the cache is rebuilt.")
    return img


def decode_resized(data: Dataset, i: int, resize: int | None, channels: int) -> np.ndarray:
    """Image ``i`` of ``data`` decoded and resized to the shorter side ``resize``: the pipeline's deterministic start."""
    img = read_image(data.image_path(i), channels=channels)
    return np.ascontiguousarray(resize_shorter(img, resize) if resize else img)


class ImageStore(Sequence):
    """Read side: ``store[i]`` is image ``i`` as uint8 (rows, cols, channels): a read-only view of the memory map for
    a raw store, a freshly decoded array for a JPEG one.

    The map is opened lazily in each process (a DataLoader worker opens its own; pickling sends the path only).
    """

    def __init__(self, path: Path, shapes: np.ndarray, offsets: np.ndarray, lengths: np.ndarray | None = None):
        self.path, self.shapes, self.offsets, self.lengths = Path(path), shapes, offsets, lengths
        self._map: np.memmap | None = None

    @property
    def encoding(self) -> str:
        return "raw" if self.lengths is None else "jpeg"

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i):  # an int index; slices are not served
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        rows, cols, channels = self.shapes[i]
        start = int(self.offsets[i])
        if self.lengths is not None:
            return _decode(self._map[start:start + int(self.lengths[i])], int(channels), self.path)
        return self._map[start:start + rows * cols * channels].reshape(rows, cols, channels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}

    @property
    def nbytes(self) -> int:
        if not len(self):
            return 0
        last = self.lengths[-1] if self.lengths is not None else np.prod(self.shapes[-1])
        return int(self.offsets[-1] + last)

    @classmethod
    def open(cls, folder: Path, key: str) -> ImageStore | None:
        """The finished store ``key`` in ``folder``, or None (missing, unfinished or of another format)."""
        index = folder / f"{key}.json"
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            encoding = meta.get("encoding", "raw")
            blob = folder / f"{key}{_SUFFIX[encoding]}"
            size = blob.stat().st_size
        except (OSError, ValueError, KeyError):
            return None
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        shapes = np.asarray(meta["shapes"], dtype=np.int64).reshape(-1, 3)
        offsets = np.asarray(meta["offsets"], dtype=np.int64)
        lengths = np.asarray(meta["lengths"], dtype=np.int64) if encoding == "jpeg" else None
        store = cls(blob, shapes, offsets, lengths)
        return store if store.nbytes == size else None

    @classmethod
    def build(cls, data: Dataset, folder: Path, *, resize: int | None, channels: int, what: str = "images",
              threads: int | None = None, progress: bool = False, max_bytes: int | None = None,
              encoding: str = "auto") -> ImageStore | None:
        """Open the store of ``data`` in ``folder``, or decode it there; None when it would not fit.

        ``max_bytes`` bounds its size (estimated from the first images before anything is written); the free disk
        space bounds it too. ``encoding="auto"``: raw, or JPEG when raw would not fit; ``"raw"`` or ``"jpeg"``: only
        that. None tells the caller to keep the per-image pipeline.
        """
        if encoding not in ("auto", *ENCODINGS):
            raise ValueError(f"encoding must be 'auto', 'raw' or 'jpeg', got {encoding!r}")
        keys = {kind: store_key(data, resize=resize, channels=channels, encoding=kind)
                for kind in ENCODINGS if encoding in ("auto", kind)}
        for key in keys.values():
            found = cls.open(folder, key)
            if found is not None:
                log.info("%s: decoded-image cache %s (%d images, %.0f MB, %s)", what, found.path, len(found),
                         found.nbytes / 1e6, found.encoding)
                return found
        if not len(data):
            return None
        threads = threads or usable_cores()
        sample = [decode_resized(data, i, resize, channels) for i in range(min(len(data), 16))]
        ensure_dir(folder, what="cache folder")
        free = shutil.disk_usage(folder).free

        def fits(estimate: float) -> bool:
            return (max_bytes is None or estimate <= max_bytes) and estimate <= free - (1 << 30)

        raw_estimate = np.mean([s.nbytes for s in sample]) * len(data) * 1.1
        chosen, encoding = encoding, ("raw" if fits(raw_estimate) else "jpeg") if encoding == "auto" else encoding
        estimate = raw_estimate if encoding == "raw" else np.mean([len(_encode(s)) for s in sample]) * len(data) * 1.1
        limit = "none" if max_bytes is None else f"{max_bytes / 1e9:.1f} GB"
        if not fits(estimate):
            log.warning("%s: not caching decoded images (about %.1f GB raw%s; limit %s, %.1f GB free in %s): every "
                        "epoch decodes the files", what, raw_estimate / 1e9,
                        "" if encoding == "raw" else f", {estimate / 1e9:.1f} GB as JPEG", limit, free / 1e9, folder)
            return None
        if encoding == "jpeg" and chosen == "auto":
            log.warning("%s: the decoded images would take about %.1f GB (limit %s, %.1f GB free in %s); caching "
                        "them as JPEG (quality %d, about %.1f GB) instead: their pixels differ from the reference "
                        "pipeline's by about 1.6 grey levels on average (im2rec --quality %d loses more)", what,
                        raw_estimate / 1e9, limit, free / 1e9, folder, JPEG_QUALITY, estimate / 1e9, JPEG_QUALITY)
        key = keys[encoding]
        shapes, offsets, lengths, position = [], [], [], 0
        blob = folder / f"{key}{_SUFFIX[encoding]}"
        log.info("%s: decoding %d images once into %s (%d threads)", what, len(data), blob, threads)
        from tqdm.auto import tqdm

        def item(i: int) -> tuple[tuple[int, ...], bytes]:
            img = sample[i] if i < len(sample) else decode_resized(data, i, resize, channels)
            return img.shape, img.tobytes() if encoding == "raw" else _encode(img)  # encoded on the threads too

        with atomic_write(blob, "wb") as fh, tqdm(total=len(data), desc=f"caching {what}", unit="img",
                                                   disable=not progress, leave=False) as bar:
            for shape, payload in ordered_map(item, len(data), threads=threads):
                try:  # the size estimate's images are not decoded twice
                    fh.write(payload)
                except OSError as exc:
                    raise output_error(blob, exc) from exc
                shapes.append(shape)
                offsets.append(position)
                lengths.append(len(payload))
                position += len(payload)
                bar.update(1)
        meta = {"format": FORMAT, "key": key, "resize": resize, "channels": channels, "encoding": encoding,
                "shapes": shapes, "offsets": offsets}
        if encoding == "jpeg":
            meta["lengths"] = lengths
        atomic_write_text(folder / f"{key}.json", json.dumps(meta) + "\n")
        return cls(blob, np.asarray(shapes, np.int64).reshape(-1, 3), np.asarray(offsets, np.int64),
                   np.asarray(lengths, np.int64) if encoding == "jpeg" else None)
