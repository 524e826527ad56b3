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
(raw: the images' HWC bytes back to back) or ``<key>.jpegs`` (the JPEGs back to back), and ``<key>.json``, the index:
each image's shape, offset, length (JPEG) and xxh3-64 digest, and the raw size estimate the encoding was chosen by.

What a store is reused for. The key hashes the image root (resolved), each file's relative path and its ``stat``:
size, modification and status-change times in nanoseconds and inode; with ``resize``, ``channels`` and the
encoding. Any change of a file's pixels a user can make without renaming it changes its status-change time (a
write, a ``touch``, ``os.utime`` restoring the old mtime, a file renamed over it, a copy) or its inode, so it builds
another store. Labels are not part of the key: a store holds pixels only.

Which encoding. It follows the options, not the folder's history: ``auto`` takes the raw store whenever the raw
size estimate (kept in each index) fits ``max_bytes`` and the disk, and the JPEG store only when it does not.

Integrity. The index is checked whole when the store is opened (types, counts, shapes against ``resize`` and
``channels``, offsets against lengths, the total against the file's size); a damaged one is rebuilt with a warning.
Each read checks the image's bytes against its digest (0.008 ms for a 256-px image): a mismatch logs a
warning, drops the index (the next run rebuilds the store) and decodes that image from its file instead.

Writing. The blob and the index are written through temporary names (``.<name>.<random>.tmp``) held under an OS
lock while they are written; the index goes last, so a store without it is unfinished and is rebuilt. A build
removes the temporary files that no live process holds (those of a killed build), never those of a concurrent one.
The build decodes on all cores (OpenCV releases the GIL).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import xxhash

from ..._io import TEMP_SUFFIX, _file_mode, ensure_dir, output_error
from ..._lock import _try_lock
from ..._parallel import ordered_map, usable_cores
from ...exceptions import DataError, OutputError
from ...images import encode_jpeg, imdecode, read_image, resize_shorter
from .imagesizes import check_shapes, too_small_error

if TYPE_CHECKING:
    from ...data.dataset import Dataset

__all__ = ["ImageStore", "store_key", "decode_resized", "remove_stale_temp_files", "ENCODINGS", "JPEG_QUALITY"]

log = logging.getLogger("multilabel_ic.train")
FORMAT = "multilabel-ic/image-store-v2"
ENCODINGS = ("raw", "jpeg")
JPEG_QUALITY = 95  # im2rec's --quality in the algorithm's RecordIO examples
_SUFFIX = {"raw": ".u8", "jpeg": ".jpegs"}
_HEADROOM = 1 << 30  # disk space a cache leaves free
_INDEX_BYTES_PER_IMAGE = 256  # an index entry takes about 60 bytes; a larger index is not read
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{24}\.(u8|jpegs|json)\..*" + re.escape(TEMP_SUFFIX) + "$")


def _digest(payload, rows: int, cols: int, channels: int) -> int:
    """xxh3-64 of an image's stored bytes, seeded with its shape (an index with swapped sides does not match). About
    0.008 ms for a 256-px image, 10x faster than zlib.crc32 (docs/data.md)."""
    return xxhash.xxh3_64_intdigest(payload, seed=(int(rows) << 40) | (int(cols) << 16) | int(channels))

Source = tuple["Dataset", "int | None", int]  # (data, resize, channels): where a damaged image is decoded again


def _files_digest(data: Dataset) -> str:
    """SHA-256 over the resolved image root and each file's path and stat (size, mtime and ctime in ns, inode)."""
    h = hashlib.sha256(json.dumps(str(Path(data.root).resolve())).encode())
    for i, rel in enumerate(data.paths):
        try:
            st = data.image_path(i).stat()
            record = [rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        except OSError:
            record = [rel, -1, -1, -1, -1]
        h.update(json.dumps(record).encode() + b"\n")
    return h.hexdigest()


def _key(files: str, resize: int | None, channels: int, encoding: str) -> str:
    spec = {"format": FORMAT, "files": files, "resize": resize, "channels": channels, "encoding": encoding}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def store_key(data: Dataset, *, resize: int | None, channels: int, encoding: str = "raw") -> str:
    """The name of the store of ``data``'s images: any change of a file (path, content, replacement) changes it."""
    return _key(_files_digest(data), resize, channels, encoding)


def _encode(img: np.ndarray) -> bytes:
    """A cached image as JPEG bytes (quality 95, 4:4:4)."""
    return encode_jpeg(img, quality=JPEG_QUALITY, full_colour=True)


def decode_resized(data: Dataset, i: int, resize: int | None, channels: int) -> np.ndarray:
    """Image ``i`` of ``data`` decoded and resized to the shorter side ``resize``: the pipeline's deterministic start."""
    img = read_image(data.image_path(i), channels=channels)
    return np.ascontiguousarray(resize_shorter(img, resize) if resize else img)


@contextlib.contextmanager
def _locked_temp(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temporary file beside it that this process holds an OS lock on while writing, so
    that :func:`remove_stale_temp_files` of another run never takes it; renamed into place when the block ends."""
    for _ in range(10):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        except OSError as exc:
            raise output_error(path, exc) from exc
        fh = os.fdopen(fd, "wb")
        # a cleaner that locked it first removes it: then its link count is 0 and another name is taken
        if _try_lock(fh) and os.fstat(fd).st_nlink > 0:
            break
        fh.close()
    else:
        raise OutputError(f"{path.parent}: could not hold a temporary file there (each one was taken away); run again.")
    try:
        with fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _file_mode())
            try:
                yield fh
                fh.flush()
                os.fsync(fd)
                os.replace(tmp, path)  # while still locked: a cleaner never sees a finished file under a temp name
            except OSError as exc:
                raise (exc if isinstance(exc, OutputError) else output_error(path, exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the decode cache's temporary files in ``folder`` that no live process holds (a killed build's).

    A cache folder can be shared by runs (``cache_dir``): a build in progress holds its temporary file locked, so
    it is never taken. Only this module's names (``.<key>.u8|jpegs|json.<random>.tmp``) are looked at."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for tmp in folder.iterdir():
        if not _TEMP_NAME.match(tmp.name):
            continue
        try:
            with open(tmp, "rb") as fh:
                if not _try_lock(fh):
                    continue  # a live build is writing it
                os.unlink(tmp)  # while locked: the writer, if it locks next, sees the file gone and takes another
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _ints(value: Any, count: int, low: int, high: int) -> list[int] | None:
    """``value`` when it is a list of ``count`` ints in [low, high] (bools are not ints here), else None."""
    if not isinstance(value, list) or len(value) != count:
        return None
    for v in value:
        if type(v) is not int or not low <= v <= high:
            return None
    return value


class ImageStore(Sequence):
    """Read side: ``store[i]`` is image ``i`` as uint8 (rows, cols, channels): a read-only view of the memory map for
    a raw store, a freshly decoded array for a JPEG one. Each read checks the image's bytes against its digest.

    The map is opened lazily in each process (a DataLoader worker opens its own; pickling sends the path only).
    ``source`` (data, resize, channels) is where an image whose bytes are damaged is decoded again.
    """

    def __init__(self, path: Path, shapes: np.ndarray, offsets: np.ndarray, lengths: np.ndarray | None = None,
                 digests: np.ndarray | None = None, *, raw_estimate: float = 0.0, source: Source | None = None):
        self.path, self.shapes, self.offsets, self.lengths = Path(path), shapes, offsets, lengths
        self.digests, self.raw_estimate, self.source = digests, raw_estimate, source
        self._map: np.memmap | None = None
        self._warned = False

    @property
    def encoding(self) -> str:
        return "raw" if self.lengths is None else "jpeg"

    @property
    def index_path(self) -> Path:
        return self.path.with_suffix(".json")

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i):  # an int index; slices are not served
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        rows, cols, channels = self.shapes[i]
        start = int(self.offsets[i])
        size = int(self.lengths[i]) if self.lengths is not None else int(rows * cols * channels)
        buf = self._map[start:start + size]
        if self.digests is not None and _digest(buf, rows, cols, channels) != int(self.digests[i]):
            return self._damaged(i, "its bytes do not match their digest")
        if self.lengths is None:
            return buf.reshape(rows, cols, channels)
        img = imdecode(buf, int(channels))
        if img is None or img.shape != (rows, cols, channels):
            return self._damaged(i, "it does not decode to its recorded shape")
        return img

    def _damaged(self, i: int, why: str) -> np.ndarray:
        """A damaged image: decoded again from its file (with a warning), and the index dropped for a rebuild."""
        with contextlib.suppress(OSError):
            self.index_path.unlink()
        if self.source is None:
            raise DataError(f"{self.path}: image {i} of this decode cache is damaged ({why}). Delete the file and "
                            f"run again: the cache is rebuilt.")
        if not self._warned:
            self._warned = True
            log.warning("%s: image %d of this decode cache is damaged (%s): decoding it from its file instead; its "
                        "index is removed, so the next run builds the cache again", self.path, i, why)
        data, resize, channels = self.source
        return decode_resized(data, i, resize, channels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}

    @property
    def nbytes(self) -> int:
        if not len(self):
            return 0
        last = self.lengths[-1] if self.lengths is not None else np.prod(self.shapes[-1])
        return int(self.offsets[-1] + last)

    def subset(self, rows: Sequence[int] | np.ndarray, data: Dataset | None = None) -> ImageStore:
        """The images ``rows`` (a process's share of the validation set); ``data`` is their dataset (the subset)."""
        rows = np.asarray(rows, dtype=np.int64)
        source = (data, self.source[1], self.source[2]) if data is not None and self.source is not None else None
        return ImageStore(self.path, self.shapes[rows], self.offsets[rows],
                          None if self.lengths is None else self.lengths[rows],
                          None if self.digests is None else self.digests[rows], raw_estimate=self.raw_estimate,
                          source=source)

    @classmethod
    def open(cls, folder: Path, key: str, *, encoding: str, count: int, resize: int | None, channels: int,
             source: Source | None = None) -> ImageStore | None:
        """The finished store ``key`` in ``folder`` whose index checks out, or None."""
        store, _ = _read_index(Path(folder), key, encoding=encoding, count=count, resize=resize, channels=channels)
        if store is not None:
            store.source = source
        return store

    @classmethod
    def build(cls, data: Dataset, folder: Path, *, resize: int | None, channels: int, what: str = "images",
              threads: int | None = None, progress: bool = False, max_bytes: int | None = None,
              encoding: str = "auto", min_size: tuple[int, int] | None = None) -> ImageStore | None:
        """Open the store of ``data`` in ``folder``, or decode it there; None when it would not fit.

        ``max_bytes`` bounds its size (estimated from the first images before anything is written); the free disk
        space bounds it too. ``encoding="auto"``: raw, or JPEG when raw would not fit; ``"raw"`` or ``"jpeg"``: only
        that. None tells the caller to keep the per-image pipeline. ``min_size=(height, width)``: refuse images
        smaller than that (a :class:`DataError` naming them; nothing is written).
        """
        if encoding not in ("auto", *ENCODINGS):
            raise ValueError(f"encoding must be 'auto', 'raw' or 'jpeg', got {encoding!r}")
        if not len(data):
            return None
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            ensure_dir(folder, what="cache folder")  # its error: a file is in the way
        for stale in remove_stale_temp_files(folder):
            log.info("removed %s, left by an interrupted cache build", stale)
        files, source = _files_digest(data), (data, resize, channels)
        keys = {kind: _key(files, resize, channels, kind) for kind in ENCODINGS if encoding in ("auto", kind)}
        found: dict[str, ImageStore] = {}
        for kind, key in keys.items():
            store, problem = _read_index(folder, key, encoding=kind, count=len(data), resize=resize,
                                         channels=channels)
            if problem:
                log.warning("%s: the decode cache's index %s is damaged (%s); building the cache again", what,
                            folder / f"{key}.json", problem)
            if store is not None:
                found[kind] = store
        free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.is_dir())).free

        def fits(estimate: float, *, disk: bool = True) -> bool:
            return (max_bytes is None or estimate <= max_bytes) and (not disk or estimate <= free - _HEADROOM)

        # the encoding follows the options: the raw store whenever the raw size fits them, the JPEG one otherwise
        raw, jpeg = found.get("raw"), found.get("jpeg")
        chosen = (raw if raw is not None and (encoding == "raw" or fits(raw.raw_estimate, disk=False)) else
                  jpeg if jpeg is not None and (encoding == "jpeg" or not fits(jpeg.raw_estimate)) else None)
        if chosen is not None:
            if min_size is not None:
                check_shapes(data, chosen.shapes, height=min_size[0], width=min_size[1], resize=resize, what=what)
            chosen.source = source
            log.info("%s: decoded-image cache %s (%d images, %.0f MB, %s)", what, chosen.path, len(chosen),
                     chosen.nbytes / 1e6, chosen.encoding)
            return chosen
        if jpeg is not None:
            log.info("%s: not using the JPEG decode cache %s: the exact (raw) images fit the options now", what,
                     jpeg.path)
        threads = threads or usable_cores()
        sample = [decode_resized(data, i, resize, channels) for i in range(min(len(data), 16))]
        raw_estimate = float(np.mean([s.nbytes for s in sample]) * len(data) * 1.1)
        chosen_by, encoding = encoding, ("raw" if fits(raw_estimate) else "jpeg") if encoding == "auto" else encoding
        estimate = raw_estimate if encoding == "raw" else np.mean([len(_encode(s)) for s in sample]) * len(data) * 1.1
        limit = "none" if max_bytes is None else f"{max_bytes / 1e9:.1f} GB"
        if not fits(estimate):
            log.warning("%s: not caching decoded images (about %.1f GB raw%s; limit %s, %.1f GB free in %s): every "
                        "epoch decodes the files", what, raw_estimate / 1e9,
                        "" if encoding == "raw" else f", {estimate / 1e9:.1f} GB as JPEG", limit, free / 1e9, folder)
            return None
        if encoding == "jpeg" and chosen_by == "auto":
            log.warning("%s: the decoded images would take about %.1f GB (limit %s, %.1f GB free in %s); caching "
                        "them as JPEG (quality %d, about %.1f GB) instead: their pixels differ from the reference "
                        "pipeline's by about 1.6 grey levels on average (im2rec --quality %d loses more)", what,
                        raw_estimate / 1e9, limit, free / 1e9, folder, JPEG_QUALITY, estimate / 1e9, JPEG_QUALITY)
        created = not folder.exists()
        ensure_dir(folder, what="cache folder")
        try:
            return cls._write(data, folder, keys[encoding], encoding, sample, source=source,
                              raw_estimate=raw_estimate, threads=threads, progress=progress, min_size=min_size,
                              what=what)
        except BaseException:
            if created:  # a refused or interrupted first build leaves no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    @classmethod
    def _write(cls, data: Dataset, folder: Path, key: str, encoding: str, sample: list[np.ndarray], *,
               source: Source, raw_estimate: float, threads: int, progress: bool,
               min_size: tuple[int, int] | None, what: str) -> ImageStore:
        resize, channels = source[1], source[2]
        shapes, offsets, lengths, digests, small, position = [], [], [], [], [], 0
        blob = folder / f"{key}{_SUFFIX[encoding]}"
        log.info("%s: decoding %d images once into %s (%d threads)", what, len(data), blob, threads)
        from tqdm.auto import tqdm

        def item(i: int) -> tuple[tuple[int, ...], bytes]:
            img = sample[i] if i < len(sample) else decode_resized(data, i, resize, channels)
            return img.shape, img.tobytes() if encoding == "raw" else _encode(img)  # encoded on the threads too

        with _locked_temp(blob) as fh, tqdm(total=len(data), desc=f"caching {what}", unit="img",
                                            disable=not progress, leave=False) as bar:
            for i, (shape, payload) in enumerate(ordered_map(item, len(data), threads=threads)):
                if min_size is not None and (shape[0] < min_size[0] or shape[1] < min_size[1]):
                    small.append((i, shape[0], shape[1]))  # all of them are named; nothing more is written
                if not small:
                    fh.write(payload)  # the size estimate's images are not decoded twice
                shapes.append(list(shape))
                offsets.append(position)
                lengths.append(len(payload))
                digests.append(_digest(payload, *shape))
                position += len(payload)
                bar.update(1)
            if small:
                assert min_size is not None
                raise too_small_error(data, small, height=min_size[0], width=min_size[1], resize=resize, what=what)
        meta: dict[str, Any] = {"format": FORMAT, "key": key, "resize": resize, "channels": channels,
                                "encoding": encoding, "raw_estimate": raw_estimate, "shapes": shapes,
                                "offsets": offsets, "digests": digests}
        if encoding == "jpeg":
            meta["lengths"] = lengths
        with _locked_temp(folder / f"{key}.json") as fh:
            fh.write((json.dumps(meta) + "\n").encode())
        return cls(blob, np.asarray(shapes, np.int64).reshape(-1, 3), np.asarray(offsets, np.int64),
                   np.asarray(lengths, np.int64) if encoding == "jpeg" else None, np.asarray(digests, np.uint64),
                   raw_estimate=raw_estimate, source=source)


def _read_index(folder: Path, key: str, *, encoding: str, count: int, resize: int | None,
                channels: int) -> tuple[ImageStore | None, str | None]:
    """(the store, None) when ``<key>.json`` describes exactly its blob; (None, None) when there is none (or it is
    unfinished); (None, what is wrong) when the index is damaged. Nothing in it is trusted before it is checked."""
    index, blob = folder / f"{key}.json", folder / f"{key}{_SUFFIX[encoding]}"
    try:
        with open(index, "rb") as fh:
            text = fh.read(count * _INDEX_BYTES_PER_IMAGE + 4096 + 1)
        size = blob.stat().st_size
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    if len(text) > count * _INDEX_BYTES_PER_IMAGE + 4096:
        return None, "larger than an index of its images can be"
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and a number of too many digits are ValueErrors
        return None, "not JSON"
    if not isinstance(meta, dict):
        return None, "not a JSON object"
    for field, want in (("format", FORMAT), ("key", key), ("encoding", encoding), ("resize", resize),
                        ("channels", channels)):
        got = meta.get(field)
        if got != want or type(got) is not type(want):
            return None, f"its {field} is {str(got)[:40]!r}, not {want!r}"
    estimate = meta.get("raw_estimate")
    if not isinstance(estimate, (int, float)) or isinstance(estimate, bool) or not 0 <= estimate <= 1e18:
        return None, "its raw_estimate is not a size"
    flat = meta.get("shapes")
    if not isinstance(flat, list) or len(flat) != count or not all(isinstance(s, list) and len(s) == 3 for s in flat):
        return None, f"its shapes are not {count} (rows, cols, channels) lists"
    dims = _ints([v for s in flat for v in s], 3 * count, 1, 1 << 24)
    if dims is None:
        return None, "its shapes hold values that are not image sizes"
    shapes = np.asarray(dims, dtype=np.int64).reshape(count, 3)
    if (shapes[:, 2] != channels).any() or (resize and (shapes[:, :2].min(axis=1) != resize).any()):
        return None, f"its shapes do not have {channels} channels" + (f" and a shorter side of {resize}" if resize
                                                                      else "")
    digests = _ints(meta.get("digests"), count, 0, (1 << 64) - 1)
    if digests is None:
        return None, "its digests are not 64-bit numbers, one per image"
    if encoding == "jpeg":
        lengths = _ints(meta.get("lengths"), count, 1, size)
        if lengths is None:
            return None, "its lengths are not byte counts, one per image"
    else:
        lengths = [r * c * ch for r, c, ch in zip(dims[0::3], dims[1::3], dims[2::3])]
    # in Python ints: numbers of any size cannot overflow into a plausible offset
    offsets = _ints(meta.get("offsets"), count, 0, size)
    if offsets is None or offsets != list(itertools.accumulate(lengths[:-1], initial=0)):
        return None, "its offsets do not follow the images' lengths"
    if sum(lengths) != size:
        return None, f"it describes {sum(lengths)} bytes but {blob.name} holds {size}"
    return ImageStore(blob, shapes, np.asarray(offsets, dtype=np.int64),
                      np.asarray(lengths, dtype=np.int64) if encoding == "jpeg" else None,
                      np.asarray(digests, dtype=np.uint64), raw_estimate=float(estimate)), None
