"""Where the server's model comes from: a local ``model.tar.gz``, or an ``s3://`` URI downloaded once to a cache.

An ``s3://`` artifact (a SageMaker training job's ``model.tar.gz``) is downloaded through the SageMaker backend's S3
code (errors that name the URI and the fix; the file written atomically) to
``<cache>/<digest>/model.tar.gz``, where the digest covers the URI, the object's ETag and its size: a changed object
is downloaded again, an unchanged one is read from the cache. The cache is ``cache_dir``, else
``$XDG_CACHE_HOME/multilabel-ic/models``, else ``~/.cache/multilabel-ic/models``. Credentials and region come from
the usual places (``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, the instance's role).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["is_s3_uri", "default_cache_dir", "fetch_model", "local_model"]

log = logging.getLogger("multilabel_ic.serve")


def is_s3_uri(model: Any) -> bool:
    return isinstance(model, str) and model.startswith("s3://")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "multilabel-ic" / "models"


def fetch_model(uri: str, cache_dir: str | os.PathLike | None = None, *, progress: bool = False) -> Path:
    """The local copy of the ``s3://`` model ``uri``, downloaded unless the cache holds this version of it."""
    from ..exceptions import require

    boto3 = require("boto3", extra="sagemaker")
    from ..backends.sagemaker.s3 import download_file, head_object, parse_s3_uri

    parse_s3_uri(uri, need_key=True, what="model")
    s3 = boto3.Session().client("s3")
    missing = ("give the s3:// URI of an existing model.tar.gz (a training job prints it as 'model artifact: "
               "s3://...'; list them with: aws s3 ls --recursive s3://<bucket>/<prefix>/output/)")
    head = head_object(s3, uri, what="the model", if_missing=missing, action="download")
    size = int(head.get("ContentLength") or 0)
    etag = str(head.get("ETag", "")).strip('"')
    digest = hashlib.sha256(f"{uri}\n{etag}\n{size}".encode()).hexdigest()[:16]
    dest = Path(cache_dir if cache_dir is not None else default_cache_dir()) / digest / "model.tar.gz"
    if dest.is_file() and dest.stat().st_size == size:
        log.info("%s: the cached copy %s (same ETag and size)", uri, dest)
        return dest
    log.info("downloading %s (%d bytes) to %s", uri, size, dest)
    return download_file(s3, uri, dest, progress=progress, what="the model", if_missing=missing)


def local_model(model: Any, cache_dir: str | os.PathLike | None = None) -> Any:
    """``model`` itself, or for an ``s3://`` URI the path of its local copy."""
    return fetch_model(model, cache_dir) if is_s3_uri(model) else model
