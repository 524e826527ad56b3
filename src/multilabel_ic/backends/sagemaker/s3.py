"""S3 transfers for the SageMaker backend: an incremental upload that skips objects already there with the same size
and MD5, and downloads written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..._io import atomic_write
from ...exceptions import UsageError

__all__ = ["parse_s3_uri", "sync_files", "download_file", "md5_of"]

log = logging.getLogger("multilabel_ic.sagemaker")
_SINGLE_PART_LIMIT = 100 * 1024 * 1024
WRITER_KEY, WRITER = "written-by", "multilabel-ic"  # object metadata that marks what this library uploaded


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise UsageError(f"not an s3:// URI: {uri!r}; give s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _existing(s3, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["Size"], obj["ETag"].strip('"'))
    return out


def _written_by_us(s3, bucket: str, key: str) -> bool:
    meta = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
    return meta.get(WRITER_KEY) == WRITER or "md5" in meta  # "md5" alone: uploads of earlier versions


def sync_files(s3, files: Iterable[tuple[Path, str]], *, bucket: str, prefix: str, progress: bool = True,
               workers: int = 8, desc: str = "upload", remove_stale: bool = False) -> dict[str, int]:
    """Upload ``(local path, key)`` pairs under ``prefix``; skip keys already there with the same size and MD5.

    With ``remove_stale`` the prefix is a channel that must hold exactly these files (the algorithm reads everything
    under it): objects this library wrote there earlier (another input format, another split) are deleted after the
    upload, and objects it did not write stop the sync before anything is uploaded.
    Returns counts ``{"uploaded": n, "skipped": m, "bytes": b, "removed": r}``.
    """
    from tqdm.auto import tqdm

    from ...exceptions import BackendError

    files = list(files)
    existing = _existing(s3, bucket, prefix)
    stale = sorted(set(existing) - {key for _, key in files}) if remove_stale else []
    foreign = [k for k in stale if not _written_by_us(s3, bucket, k)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise BackendError(
            f"s3://{bucket}/{prefix} holds {len(foreign)} objects that multilabel_ic did not write (e.g. "
            f"{', '.join(foreign[:3])}{more}); the channel would feed them to the algorithm. Remove them, or use "
            f"another prefix= for this run.")
    todo = []
    skipped = 0
    for path, key in files:
        size = path.stat().st_size
        have = existing.get(key)
        if have and have[0] == size:
            etag = have[1]
            digest = md5_of(path)
            if etag == digest or (("-" in etag) and _metadata_md5(s3, bucket, key) == digest):
                skipped += 1
                continue
        todo.append((path, key, size))

    def put(item):
        path, key, size = item
        digest = md5_of(path)
        if size < _SINGLE_PART_LIMIT:
            with open(path, "rb") as fh:
                s3.put_object(Bucket=bucket, Key=key, Body=fh, Metadata={"md5": digest, WRITER_KEY: WRITER})
        else:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"md5": digest, WRITER_KEY: WRITER}})
        return size

    total = 0
    with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo) as bar:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for size in pool.map(put, todo):
                total += size
                bar.update(1)
    for start in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[start:start + 1000]],
                                                 "Quiet": True})
    if stale:
        log.info("%s: removed %d objects of an earlier upload from s3://%s/%s", desc, len(stale), bucket, prefix)
    log.info("%s: %d uploaded (%.1f MB), %d already in s3://%s/%s", desc, len(todo), total / 1e6, skipped, bucket,
             prefix)
    return {"uploaded": len(todo), "skipped": skipped, "bytes": total, "removed": len(stale)}


def _metadata_md5(s3, bucket: str, key: str) -> str | None:
    return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("md5")


def download_file(s3, uri: str, dest: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download an S3 object to ``dest`` atomically, with a progress bar."""
    from tqdm.auto import tqdm

    bucket, key = parse_s3_uri(uri)
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    dest = Path(dest)
    with atomic_write(dest, "wb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=dest.name,
                                              disable=not progress) as bar:
        s3.download_fileobj(bucket, key, fh, Callback=bar.update)
    return dest
