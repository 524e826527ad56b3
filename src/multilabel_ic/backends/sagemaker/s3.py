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

__all__ = ["parse_s3_uri", "sync_files", "download_file", "md5_of"]

log = logging.getLogger("multilabel_ic.sagemaker")
_SINGLE_PART_LIMIT = 100 * 1024 * 1024


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
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


def sync_files(s3, files: Iterable[tuple[Path, str]], *, bucket: str, prefix: str, progress: bool = True,
               workers: int = 8, desc: str = "upload") -> dict[str, int]:
    """Upload ``(local path, key)`` pairs under ``prefix``; skip keys already there with the same size and MD5.

    Returns counts ``{"uploaded": n, "skipped": m, "bytes": b}``.
    """
    from tqdm.auto import tqdm

    files = list(files)
    existing = _existing(s3, bucket, prefix)
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
                s3.put_object(Bucket=bucket, Key=key, Body=fh, Metadata={"md5": digest})
        else:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"md5": digest}})
        return size

    total = 0
    with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo) as bar:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for size in pool.map(put, todo):
                total += size
                bar.update(1)
    log.info("%s: %d uploaded (%.1f MB), %d already in s3://%s/%s", desc, len(todo), total / 1e6, skipped, bucket,
             prefix)
    return {"uploaded": len(todo), "skipped": skipped, "bytes": total}


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
