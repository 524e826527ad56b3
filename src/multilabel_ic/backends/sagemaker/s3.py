"""S3 transfers for the SageMaker backend: content-addressed channel uploads, downloads written atomically, and one
translation of S3's errors.

A training channel lives under ``<prefix>/data/<channel>/<digest>/``, where the digest covers the channel's file
names, sizes and SHA-256s: the same data always lands under the same prefix (a re-run uploads nothing), other data
under another one, so no upload deletes or replaces the data of another run or of a job that is still starting.
Nothing is ever deleted implicitly; old uploads are removed by the user (``aws s3 rm --recursive``).

Every S3 call goes through :func:`s3_call`, which turns botocore's errors (a missing object or bucket, a refused
access, no network) into a :class:`BackendError` that names the ``s3://`` URI, what was being done and the fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._io import atomic_write
from ...exceptions import BackendError, UsageError

__all__ = ["parse_s3_uri", "s3_call", "s3_error", "head_object", "list_objects", "read_object", "upload_channel",
           "sync_files", "download_file", "hash_files", "content_digest", "LocalFile"]

log = logging.getLogger("multilabel_ic.sagemaker")
_SINGLE_PART_LIMIT = 100 * 1024 * 1024
WRITER_KEY, WRITER = "written-by", "multilabel-ic"  # object metadata that marks what this library uploaded
DIGEST_CHARS = 16  # 64 bits of SHA-256 name a channel's content

_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "KMS.AccessDeniedException"}
_NO_BUCKET = {"NoSuchBucket"}
_PERMISSION = {"read": "s3:GetObject", "download": "s3:GetObject", "check": "s3:GetObject", "list": "s3:ListBucket",
               "upload": "s3:PutObject"}


def parse_s3_uri(uri: str, *, need_key: bool = False, what: str = "URI") -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; a :class:`UsageError` for anything else (and, with ``need_key``,
    for a URI without a key or one that ends in ``/``)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise UsageError(f"{what} {uri!r} is not an s3:// URI; give s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise UsageError(f"{what} {uri!r} names no bucket; give s3://bucket/key")
    if need_key and (not key or key.endswith("/")):
        raise UsageError(f"{what} {uri!r} names a folder, not an object; give the object's full key, e.g. "
                         f"s3://{bucket}/path/model.tar.gz")
    return bucket, key


def s3_error(exc: BaseException, uri: str, action: str, *, what: str | None = None,
             if_missing: str | None = None) -> BackendError:
    """The :class:`BackendError` for a failed S3 call on ``uri``: what was done, to which URI, and the fix.

    ``action`` is one of read / download / check / list / upload (it picks the IAM permission the fix names);
    ``what`` says whose object it is (e.g. "the artifact of training job X"); ``if_missing`` replaces the fix of a
    404 (e.g. "the job's output was moved or deleted")."""
    subject = f"{what} ({uri})" if what else uri
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):  # BotoCoreError (no network, no credentials), S3UploadFailedError
        return BackendError(f"cannot {action} {subject}: {exc}; check the network, the credentials (--profile, "
                            f"AWS_PROFILE) and the region, then run the same command again.")
    err = response.get("Error", {}) or {}
    code = str(err.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
    bucket = uri[5:].partition("/")[0]
    if code in _NO_BUCKET:
        return BackendError(f"cannot {action} {subject}: the bucket {bucket!r} does not exist ({code}); check its "
                            f"name and region, or create it: aws s3 mb s3://{bucket}")
    if code in _DENIED:
        perm = _PERMISSION.get(action, "access")
        return BackendError(f"cannot {action} {subject}: access denied ({code}); the credentials in use need {perm} "
                            f"on it (and kms:Decrypt/kms:GenerateDataKey if the bucket uses a KMS key): grant it, or "
                            f"use a profile (--profile) that has it.")
    if code in _MISSING:
        fix = if_missing or f"check the URI (aws s3 ls {uri})"
        return BackendError(f"cannot {action} {subject}: no such object ({code}; or no bucket {bucket!r}); {fix}.")
    return BackendError(f"cannot {action} {subject}: {code}: {err.get('Message') or exc}")


def _s3_failures() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    except ImportError:  # pragma: no cover - boto3 comes with the extra
        return ClientError, BotoCoreError
    return ClientError, BotoCoreError, S3UploadFailedError, S3TransferFailedError


def s3_call(fn: Callable[..., Any], uri: str, action: str, *, what: str | None = None, if_missing: str | None = None,
            **kwargs: Any) -> Any:
    """``fn(**kwargs)`` with S3's errors turned into :func:`s3_error`'s :class:`BackendError`."""
    try:
        return fn(**kwargs)
    except _s3_failures() as exc:
        raise s3_error(exc, uri, action, what=what, if_missing=if_missing) from exc


def head_object(s3, uri: str, *, what: str | None = None, if_missing: str | None = None,
                action: str = "check") -> dict:
    bucket, key = parse_s3_uri(uri, need_key=True)
    return s3_call(s3.head_object, uri, action, what=what, if_missing=if_missing, Bucket=bucket, Key=key)


def list_objects(s3, uri: str, *, what: str | None = None) -> dict[str, tuple[int, str]]:
    """``{key: (size, etag)}`` of every object under the ``s3://bucket/prefix``."""
    bucket, prefix = parse_s3_uri(uri)

    def listing() -> dict[str, tuple[int, str]]:
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["Size"], obj["ETag"].strip('"'))
        return out

    return s3_call(listing, uri, "list", what=what)


def read_object(s3, uri: str, *, what: str | None = None, if_missing: str | None = None) -> bytes:
    bucket, key = parse_s3_uri(uri, need_key=True)
    return s3_call(lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read(), uri, "read", what=what,
                   if_missing=if_missing)


@dataclass(frozen=True)
class LocalFile:
    """A file to upload: where it is, its key relative to the channel prefix, and its size and digests."""

    path: Path
    rel: str
    size: int
    md5: str
    sha256: str


def _hash(path: Path, rel: str) -> LocalFile:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return LocalFile(path, rel, path.stat().st_size, md5.hexdigest(), sha.hexdigest())


def hash_files(files: Iterable[tuple[Path, str]], *, workers: int = 8) -> list[LocalFile]:
    """Size, MD5 (to compare with S3's ETag) and SHA-256 (the content address) of each ``(path, relative key)``."""
    files = list(files)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda item: _hash(Path(item[0]), item[1]), files))


def content_digest(files: Sequence[LocalFile]) -> str:
    """A digest of the channel's content: every relative key with its size and SHA-256, in key order."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        h.update(f"{f.rel}\t{f.size}\t{f.sha256}\n".encode())
    return h.hexdigest()[:DIGEST_CHARS]


def upload_channel(s3, files: Iterable[tuple[Path, str]], *, bucket: str, prefix: str, channel: str,
                   progress: bool = True, desc: str | None = None) -> str:
    """Upload one channel's ``(local path, relative key)`` pairs under ``<prefix>/data/<channel>/<digest>/`` and
    return that ``s3://`` prefix (with its trailing ``/``).

    The prefix depends only on the content, so objects already there are skipped and nothing of another upload is
    touched. An object under it that is not part of this content (written by someone else) stops the upload before
    anything is sent: the algorithm reads everything under a channel prefix.
    """
    hashed = hash_files(files)
    if len({f.rel for f in hashed}) != len(hashed):
        raise UsageError(f"channel {channel}: two files map to the same key; each image path must be unique.")
    key_prefix = f"{prefix.strip('/')}/data/{channel}/{content_digest(hashed)}/".lstrip("/")
    sync_files(s3, [(f, f"{key_prefix}{f.rel}") for f in hashed], bucket=bucket, prefix=key_prefix,
               progress=progress, desc=desc or channel, exact=True)
    return f"s3://{bucket}/{key_prefix}"


def sync_files(s3, files: Iterable[tuple[Path | LocalFile, str]], *, bucket: str, prefix: str, progress: bool = True,
               workers: int = 8, desc: str = "upload", exact: bool = False) -> dict[str, int]:
    """Upload ``(local path, key)`` pairs under ``prefix``; skip keys already there with the same size and MD5.

    Never deletes anything. With ``exact`` the prefix is a channel that must hold exactly these files: any other
    object under it stops the sync before anything is uploaded, with a :class:`BackendError` that lists them.
    Returns counts ``{"uploaded": n, "skipped": m, "bytes": b}``.
    """
    from tqdm.auto import tqdm

    items = [(f if isinstance(f, LocalFile) else None, Path(f.path if isinstance(f, LocalFile) else f), key)
             for f, key in files]
    where = f"s3://{bucket}/{prefix}"
    existing = list_objects(s3, where)
    if exact:
        extra = sorted(set(existing) - {key for _, _, key in items})
        if extra:
            more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
            raise BackendError(
                f"{where} holds {len(extra)} objects that are not part of this upload (e.g. {', '.join(extra[:3])}"
                f"{more}); the channel would feed them to the algorithm. Move or remove them (e.g. aws s3 rm "
                f"s3://{bucket}/{extra[0]}) and run again.")
    pending: list[tuple[LocalFile, str]] = []
    skipped = 0
    for known, path, key in items:
        info = known or _hash(path, key)
        have = existing.get(key)
        # the ETag is the MD5 of a plain single-part upload; for multipart or KMS-encrypted objects it is not, and
        # the MD5 this library stored in the object's metadata decides
        if have and have[0] == info.size and (have[1] == info.md5 or head_object(s3, f"s3://{bucket}/{key}").get(
                "Metadata", {}).get("md5") == info.md5):
            skipped += 1
            continue
        pending.append((info, key))

    def put(item: tuple[LocalFile, str]) -> int:
        info, key = item
        meta = {"md5": info.md5, WRITER_KEY: WRITER}
        uri = f"s3://{bucket}/{key}"
        if info.size < _SINGLE_PART_LIMIT:
            with open(info.path, "rb") as fh:
                s3_call(s3.put_object, uri, "upload", Bucket=bucket, Key=key, Body=fh, Metadata=meta)
        else:
            s3_call(s3.upload_file, uri, "upload", Filename=str(info.path), Bucket=bucket, Key=key,
                    ExtraArgs={"Metadata": meta})
        return info.size

    total = 0
    with tqdm(total=len(pending), desc=desc, unit="file", disable=not progress or not pending) as bar:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for size in pool.map(put, pending):
                total += size
                bar.update(1)
    log.info("%s: %d uploaded (%.1f MB), %d already in %s", desc, len(pending), total / 1e6, skipped, where)
    return {"uploaded": len(pending), "skipped": skipped, "bytes": total}


def download_file(s3, uri: str, dest: str | os.PathLike, *, progress: bool = True, what: str | None = None,
                  if_missing: str | None = None) -> Path:
    """Download an S3 object to ``dest`` atomically, with a progress bar."""
    from tqdm.auto import tqdm

    bucket, key = parse_s3_uri(uri, need_key=True)
    size = head_object(s3, uri, what=what, if_missing=if_missing, action="download")["ContentLength"]
    dest = Path(dest)
    with atomic_write(dest, "wb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=dest.name,
                                              disable=not progress) as bar:
        s3_call(s3.download_fileobj, uri, "download", what=what, if_missing=if_missing, Bucket=bucket, Key=key,
                Fileobj=fh, Callback=bar.update)
    return dest
