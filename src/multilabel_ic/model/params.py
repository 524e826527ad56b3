"""MXNet's NDArray file format (``.params``), read and written without MXNet.

File: ``uint64 0x112``, ``uint64 0``, ``uint64 count``, the arrays, ``uint64 count``, the names (``uint64 length`` +
bytes each). Array (``NDArray::Save``, V2): ``uint32 0xF993FAC9``, ``int32 stype`` (0 = dense), shape
(``uint32 ndim`` + ``int64`` dims), context (``int32 dev_type``, ``int32 dev_id``), ``int32 type_flag``, raw
little-endian data. The reader also takes V1 (magic 0xF993FAC8, no stype) and the legacy v0.8 layout (no magic,
``uint32`` dims) that the model-zoo ResNets were saved in.
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ..exceptions import ArtifactError

__all__ = ["load_params", "save_params", "dumps_params", "loads_params", "require_finite"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
_FLAGS = {np.dtype(v): k for k, v in _DTYPES.items()}


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.buf = io.BytesIO(data)
        self.source = source

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        raw = self.buf.read(size)
        if len(raw) != size:
            raise ArtifactError(f"{self.source}: truncated NDArray file at byte {self.buf.tell()}")
        return struct.unpack("<" + fmt, raw)

    def remaining(self) -> int:
        return len(self.buf.getbuffer()) - self.buf.tell()

    def raw(self, n: int) -> bytes:
        out = self.buf.read(n)
        if len(out) != n:
            raise ArtifactError(f"{self.source}: truncated NDArray data at byte {self.buf.tell()}")
        return out


_MAX_NDIM = 32


def _read_ndim(r: _Reader) -> int:
    (ndim,) = r.read("I")
    if ndim > _MAX_NDIM:
        raise ArtifactError(f"{r.source}: array header claims {ndim} dimensions (at most {_MAX_NDIM}); the file is "
                            f"damaged or not an MXNet .params file")
    return ndim


def _read_array(r: _Reader) -> np.ndarray:
    (magic,) = r.read("I")
    if magic == V2_MAGIC:
        (stype,) = r.read("i")
        if stype != 0:
            raise ArtifactError(f"{r.source}: sparse NDArrays (storage type {stype}) are not supported")
        ndim = _read_ndim(r)
        shape = r.read(f"{ndim}q") if ndim else ()
    elif magic == V1_MAGIC:
        ndim = _read_ndim(r)
        shape = r.read(f"{ndim}q") if ndim else ()
    else:  # legacy: the magic word is ndim, dims are uint32
        ndim = magic
        if ndim > 32:
            raise ArtifactError(f"{r.source}: not an MXNet NDArray file (bad array header 0x{magic:08x})")
        shape = r.read(f"{ndim}I") if ndim else ()
    if ndim == 0:
        return np.zeros((0,), np.float32)
    r.read("ii")  # context: dev_type, dev_id
    (flag,) = r.read("i")
    if flag not in _DTYPES:
        raise ArtifactError(f"{r.source}: unsupported NDArray type flag {flag}")
    dtype = np.dtype(_DTYPES[flag])
    if any(d < 0 for d in shape):
        raise ArtifactError(f"{r.source}: array shape {tuple(shape)} has a negative dimension; the file is damaged")
    count = math.prod(int(d) for d in shape)  # Python ints: no overflow
    if count * dtype.itemsize > r.remaining():
        raise ArtifactError(f"{r.source}: array of shape {tuple(shape)} needs {count * dtype.itemsize} bytes but "
                            f"the file has {r.remaining()} left; the file is truncated or damaged")
    return np.frombuffer(r.raw(count * dtype.itemsize), dtype=dtype.newbyteorder("<")).reshape(shape).copy()


def loads_params(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    r = _Reader(data, source)
    header, _reserved = r.read("QQ")
    if header != LIST_MAGIC:
        raise ArtifactError(f"{source}: not an MXNet .params file (header 0x{header:x}, expected 0x112)")
    (count,) = r.read("Q")
    arrays = [_read_array(r) for _ in range(count)]
    (n_names,) = r.read("Q")
    if n_names not in (0, count):
        raise ArtifactError(f"{source}: {count} arrays but {n_names} names")
    names = []
    for _ in range(n_names):
        (length,) = r.read("Q")
        try:
            names.append(r.raw(length).decode("utf-8"))
        except UnicodeDecodeError:
            raise ArtifactError(f"{source}: a parameter name is not UTF-8; the file is damaged") from None
    if n_names == 0:
        names = [str(i) for i in range(count)]
    if len(names) != count:
        raise ArtifactError(f"{source}: {count} arrays but {len(names)} names")
    return dict(zip(names, arrays))


def require_finite(params: dict[str, np.ndarray], *, source: str) -> None:
    """An :class:`ArtifactError` naming the first parameter that holds NaN or infinity (a diverged training or a
    damaged file would otherwise give NaN scores with no error)."""
    for name, arr in params.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = arr.size - int(np.isfinite(arr).sum())
            kinds = "/".join(k for k, test in (("NaN", np.isnan), ("inf", np.isinf)) if test(arr).any())
            raise ArtifactError(f"{source}: parameter {name!r} holds {bad} {kinds} values (of {arr.size}); the training "
                                f"diverged or the file is damaged. Use another saved epoch or train again.")


def load_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an MXNet ``.params`` file into ``{name: array}`` (names keep their ``arg:``/``aux:`` prefixes)."""
    from .._read import GiB, read_bounded

    p = Path(path)
    # bounded and never blocking: a FIFO or a device given as --pretrained is refused, not waited on
    data = read_bounded(p, limit=8 * GiB, what=".params file", error=ArtifactError)
    return loads_params(data, source=str(p))


def dumps_params(params: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack("<QQQ", LIST_MAGIC, 0, len(params)))
    for value in params.values():
        arr = np.ascontiguousarray(np.asarray(value))
        if arr.dtype not in _FLAGS:
            arr = arr.astype(np.float32)
        out.write(struct.pack("<Ii", V2_MAGIC, 0))
        out.write(struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape))
        out.write(struct.pack("<iii", 1, 0, _FLAGS[arr.dtype]))  # cpu(0)
        out.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    out.write(struct.pack("<Q", len(params)))
    for name in params:
        b = name.encode("utf-8")
        out.write(struct.pack("<Q", len(b)) + b)
    return out.getvalue()


def save_params(path: str | os.PathLike, params: dict[str, np.ndarray]) -> Path:
    """Write ``{name: array}`` as an MXNet ``.params`` file (atomically)."""
    atomic_write_bytes(path, dumps_params(params))
    return Path(path)
