"""MXNet RecordIO (.rec + .idx) in the im2rec layout, byte-compatible with ``mxnet.recordio`` and dmlc-core.

Record framing (dmlc-core ``RecordIOWriter``): ``uint32 magic 0xced7230a``, ``uint32 lrec`` (cflag << 29 | length),
the payload, zero padding to 4 bytes. A payload that contains the magic word at a 4-byte-aligned offset is split into
parts (cflag 1 = first, 2 = middle, 3 = last) with the magic word dropped; readers put it back.
Payload (``mxnet.recordio.pack``): IRHeader ``struct 'IfQQ'`` (flag, label, id, id2); when flag > 0 a float32 label
array of length flag follows (``im2rec --pack-label``, multi-label); then the encoded image.
The .idx file has one ``key \\t byte offset`` line per record.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, NamedTuple

import numpy as np

from .._io import atomic_write
from .._read import GiB, open_bounded, read_bounded
from ..exceptions import DataError

__all__ = ["IRHeader", "pack", "unpack", "write_recordio", "read_recordio", "read_idx", "RecordIOReader",
           "MAGIC"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
_LEN_MASK = (1 << 29) - 1


class IRHeader(NamedTuple):
    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``mxnet.recordio.pack``: a scalar label goes in the header, an array label after it (flag = its length)."""
    label = header.label
    if isinstance(label, (int, float, np.floating, np.integer)):
        return struct.pack(_IR_FORMAT, 0, float(label), header.id, header.id2) + payload
    arr = np.asarray(label, dtype=np.float32)
    return struct.pack(_IR_FORMAT, arr.size, 0.0, header.id, header.id2) + arr.tobytes() + payload


def unpack(record: bytes, *, source: str = "record") -> tuple[IRHeader, bytes]:
    if len(record) < _IR_SIZE:
        raise DataError(f"{source}: {len(record)} bytes is shorter than an IRHeader ({_IR_SIZE} bytes)")
    flag, label, id_, id2 = struct.unpack_from(_IR_FORMAT, record)
    payload = record[_IR_SIZE:]
    if flag > 0:
        n = flag * 4
        if n > len(payload):
            raise DataError(f"{source}: the header announces {flag} labels but the record holds "
                            f"{len(payload)} bytes after it; the record is damaged.")
        label = np.frombuffer(payload[:n], dtype=np.float32).copy()
        payload = payload[n:]
    return IRHeader(flag, label, id_, id2), payload


def _write_record(fh: IO[bytes], data: bytes) -> None:
    n = len(data)
    if n >= 1 << 29:
        raise DataError(f"record of {n} bytes exceeds RecordIO's 512 MiB limit")
    lower = (n >> 2) << 2
    dptr = 0
    for i in range(0, lower, 4):
        if data[i:i + 4] == _MAGIC_BYTES:
            fh.write(_MAGIC_BYTES + struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)))
            fh.write(data[dptr:i])
            dptr = i + 4
    fh.write(_MAGIC_BYTES + struct.pack("<I", ((3 if dptr else 0) << 29) | (n - dptr)))
    fh.write(data[dptr:])
    pad = (-n) % 4
    if pad:
        fh.write(b"\0" * pad)


def write_recordio(rec_path: str | os.PathLike, records: Iterable[tuple[int, bytes]], *,
                   idx_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``(key, packed record)`` pairs to ``.rec`` and its ``.idx``, both atomically."""
    rec_path = Path(rec_path)
    idx_path = Path(idx_path) if idx_path else rec_path.with_suffix(".idx")
    lines = []
    with atomic_write(rec_path, "wb") as fh:
        for key, data in records:
            lines.append(f"{int(key)}\t{fh.tell()}\n")
            _write_record(fh, data)
    with atomic_write(idx_path, "w") as fh:
        fh.writelines(lines)
    return rec_path, idx_path


def _read_one(fh: BinaryIO, path: Path) -> bytes | None:
    parts: list[bytes] = []
    while True:
        offset = fh.tell()
        head = fh.read(8)
        if not head:
            if parts:
                raise DataError(f"{path}: file ends inside a multi-part record at byte {offset}")
            return None
        if len(head) < 8:
            raise DataError(f"{path}: truncated record header at byte {offset}")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataError(f"{path}: bad RecordIO magic 0x{magic:08x} at byte {offset} (expected 0x{MAGIC:08x}); "
                            f"not a RecordIO file, or it is corrupt.")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        body = fh.read(length)
        if len(body) < length:
            raise DataError(f"{path}: truncated record at byte {offset} (needs {length} bytes, has {len(body)})")
        fh.read((-length) % 4)
        parts.append(body)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def read_recordio(rec_path: str | os.PathLike) -> Iterator[bytes]:
    """Yield every record (packed bytes) of a .rec file in order."""
    rec_path = Path(rec_path)
    # a regular file: a FIFO in its place is refused, not waited on (the records are streamed, not held)
    with open_bounded(rec_path, limit=1 << 50, what="RecordIO file", error=DataError) as fh:
        while (rec := _read_one(fh, rec_path)) is not None:
            yield rec


def read_idx(idx_path: str | os.PathLike) -> dict[int, int]:
    idx_path = Path(idx_path)
    out: dict[int, int] = {}
    text = read_bounded(idx_path, limit=GiB, what="RecordIO index", error=DataError).decode("utf-8", "replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, offset = line.split("\t")
            out[int(key)] = int(offset)
        except ValueError:
            raise DataError(f"{idx_path}:{lineno}: expected 'key<TAB>offset', got {line!r}") from None
    return out


class RecordIOReader:
    """Random access to an indexed .rec file (``mxnet.recordio.MXIndexedRecordIO`` for reading)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.path = Path(rec_path)
        self.index = read_idx(idx_path or self.path.with_suffix(".idx"))
        self.keys = list(self.index)
        self._fh: BinaryIO | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, key: int) -> bytes:
        if self._fh is None:  # opened lazily so that the reader can be sent to DataLoader workers
            self._fh = open_bounded(self.path, limit=1 << 50, what="RecordIO file", error=DataError)
        self._fh.seek(self.index[key])
        rec = _read_one(self._fh, self.path)
        if rec is None:
            raise DataError(f"{self.path}: index points past the end of the file for key {key}")
        return rec

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fh"] = None
        return state

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
