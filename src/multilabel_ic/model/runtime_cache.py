"""The predictor's converted networks, cached beside the artifact, so that only the first predictor of a
``runtime="openvino"`` or ``"onnxruntime"`` pays for the conversion (5-10 s for ResNet-18).

The cache of ``runs/x/model.tar.gz`` for OpenVINO is ``runs/x/model.tar.gz.openvino.cache`` (onnxruntime:
``.onnxruntime.cache``): one file, written atomically, that holds the converted model's files and the key they were
made from: a SHA-256 of the network's weights (the epoch read from the artifact), the graph's options (input shape,
activation, input layout), the runtime and its version, torch's and this library's versions. A later predictor uses
it when the key matches and every part's SHA-256 is intact; a cache made from other weights or versions (stale), or
one that cannot be read (damaged), is rebuilt with a warning, and so is one whose model does not give the PyTorch
network's probabilities. In a folder that cannot be written, the conversion is done in memory each time (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._io import atomic_write
from .._read import read_bounded
from .._version import __version__
from ..exceptions import MultilabelICError, OutputError

__all__ = ["cache_path", "network_key", "load_or_build", "MAGIC"]

log = logging.getLogger("multilabel_ic")

MAGIC = b"multilabel-ic runtime cache 1\n"
_LIMIT = 16 << 30  # far above any network of the algorithm (ResNet-200: about 260 MB)
T = TypeVar("T")
Parts = dict[str, bytes]


def cache_path(artifact: str | os.PathLike, runtime: str) -> Path:
    """Where the converted model of ``artifact`` for ``runtime`` is cached: beside it."""
    artifact = Path(artifact)
    return artifact.with_name(f"{artifact.name}.{runtime}.cache")


def network_key(net, **graph: Any) -> dict[str, Any]:
    """The cache key of ``net`` converted with the options ``graph`` (JSON values): its weights' SHA-256 and the
    versions of the tools that convert it."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name} {array.dtype} {array.shape}\n".encode())
        digest.update(array.tobytes())
    key = {"weights_sha256": digest.hexdigest(), "torch": torch.__version__, "multilabel_ic": __version__, **graph}
    return json.loads(json.dumps(key, sort_keys=True))  # tuples as lists: comparable with what is read back


def _encode(key: dict[str, Any], parts: Parts) -> bytes:
    header = {"key": key, "parts": [[name, len(data), hashlib.sha256(data).hexdigest()]
                                    for name, data in parts.items()]}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + b"".join(parts.values())


def _decode(blob: bytes, key: dict[str, Any]) -> Parts | str:
    """The parts of a cache file, or why it cannot be used ("damaged: ...", "stale: ...")."""
    if not blob.startswith(MAGIC):
        return "damaged: not a runtime cache of this version"
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC):end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        return "damaged: its header cannot be read"
    listed = header.get("parts")
    if not isinstance(listed, list) or not all(
            isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and type(p[1]) is int and p[1] >= 0
            and isinstance(p[2], str) for p in listed):
        return "damaged: its header cannot be read"
    made_for = header.get("key")
    if made_for != key:
        made_for = made_for if isinstance(made_for, dict) else {}
        changed = sorted(k for k in set(key) | set(made_for) if made_for.get(k) != key.get(k))
        return f"stale: made for other {', '.join(changed)}"
    parts, offset = {}, end + 1
    if offset + sum(p[1] for p in listed) != len(blob):
        return "damaged: truncated or of the wrong size"
    for name, size, sha in listed:
        data = blob[offset:offset + size]
        if hashlib.sha256(data).hexdigest() != sha:
            return f"damaged: its {name} part does not match its checksum"
        parts[name] = data
        offset += size
    return parts


def _read(path: Path, key: dict[str, Any]) -> Parts | str | None:
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        blob = read_bounded(path, limit=_LIMIT, what="runtime cache")
    except MultilabelICError as exc:
        return f"damaged: {exc}"
    return _decode(blob, key)


def _write(path: Path, key: dict[str, Any], parts: Parts) -> None:
    try:
        with atomic_write(path) as fh:
            fh.write(_encode(key, parts))
    except OutputError as exc:
        log.info("the converted model is not cached (%s); each predictor of this artifact converts it again", exc)


def load_or_build(path: Path | None, key: dict[str, Any], build: Callable[[], Parts], use: Callable[[Parts], T],
                  *, what: str) -> T:
    """``use(parts)`` of the cache at ``path`` when it is intact and made for ``key``; otherwise ``use(build())``,
    cached at ``path`` (None: no cache) once ``use`` accepted it. ``what`` names the model in the log."""
    found = _read(path, key) if path is not None else None
    if isinstance(found, dict):
        try:
            return use(found)
        except Exception as exc:  # noqa: BLE001 - any failure of a cached model: convert again
            found = f"damaged: its model does not load or agree ({' '.join(str(exc).split()) or type(exc).__name__})"
    if isinstance(found, str):
        log.warning("%s: the cached %s is %s; converting it again and replacing the cache", path, what, found)
    parts = build()
    result = use(parts)
    if path is not None:
        _write(path, key, parts)
    return result
