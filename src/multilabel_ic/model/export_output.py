"""Where an export may write: never over its source artifact or that artifact's ``model-metadata.json``, never over
a folder, and never over a file that an earlier export did not write.

An export writes ``<file>`` and ``<file>.json`` (and, for an ONNX model past protobuf's 2 GB, ``<file>.data``). A
path that already exists may be replaced only when it is an earlier export's: the ``<file>.json`` beside it is an
export's metadata (a JSON object with ``format``, ``model``, ``source_artifact`` and ``preprocessing``). So an
export replaces its own earlier output and nothing else, whatever the name: not a run's ``metrics.json`` (through
``--output RUN/metrics``), not a checkpoint, not the artifact by a symlink, a hard link, a relative path or ``..``.
Every check runs before anything is converted or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .._read import MiB, read_bounded
from ..exceptions import MultilabelICError, OutputError, UsageError
from .artifact import METADATA_NAME

__all__ = ["check_export_output", "is_export_metadata", "metadata_path", "SIDECAR_KEYS"]

SIDECAR_KEYS = frozenset({"format", "model", "source_artifact", "preprocessing"})


def metadata_path(out: Path) -> Path:
    """The ``<file>.json`` an export writes beside ``<file>``."""
    return out.with_name(out.name + ".json")


def is_export_metadata(path: Path) -> bool:
    """Whether ``path`` is the ``<file>.json`` of an export (of this or an earlier version)."""
    try:
        doc = json.loads(read_bounded(path, limit=16 * MiB, what="export metadata"))
    except (MultilabelICError, ValueError):
        return False
    return isinstance(doc, dict) and SIDECAR_KEYS <= doc.keys() and isinstance(doc.get("format"), str)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # follows symlinks; a hard link has the same inode
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)  # absent: the same place after `..` and links


def check_export_output(artifact: str | os.PathLike, output: str | os.PathLike, *, default_name: str,
                        written: Iterable[Path] = ()) -> Path:
    """``output`` as a path, or a :class:`UsageError` (one line: the path, what it would destroy, the fix) when the
    export must not write there. ``written``: the other files it will write (default: ``<file>.json``)."""
    raw = os.fspath(output)
    if raw.endswith(("/", os.sep)):
        raise UsageError(f"export output {raw!r} ends in a path separator, so it names a folder; name the file to "
                         f"write, e.g. {raw}{default_name}.")
    out = Path(raw)
    if out.is_dir():
        raise UsageError(f"export output {out} is an existing folder; name the file to write, e.g. "
                         f"{out / default_name}.")
    for parent in out.parents:  # nothing is created before the export succeeds: check the folder can be made
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"export output {out}: {parent} is a file, not a folder; choose another output "
                                  "path or move that file.")
            break
    artifact = Path(artifact)
    protected = {artifact: "the artifact being exported",
                 (artifact.parent / METADATA_NAME): f"the {METADATA_NAME} of the artifact being exported"}
    sidecar = metadata_path(out)
    ours: bool | None = None  # whether sidecar is an export's metadata, read once when needed
    for path in (out, sidecar, *written):
        for kept, what in protected.items():
            if _same_file(path, kept):
                raise UsageError(f"export output {out}: {path} is {what} ({kept}); an export never replaces it: "
                                 f"choose another path, e.g. {artifact.with_name(default_name)}.")
        if path.is_dir():
            raise UsageError(f"export output {out}: {path} is a folder, which the export would replace; choose "
                             "another output path.")
        if path.exists() or path.is_symlink():
            if ours is None:
                ours = is_export_metadata(sidecar)
            if not ours:
                raise UsageError(f"export output {out}: {path} exists and was not written by an export (no export "
                                 f"metadata in {sidecar}), so it is not replaced; move it or choose another path.")
    return out
