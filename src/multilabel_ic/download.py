"""Resumable HTTP(S) downloads with progress and SHA-256 / MD5 checks, plus safe zip extraction.

Used for COCO (``multilabel-ic prepare coco --download``) and the MXNet model-zoo weights. A partial download is kept
as ``<name>.part`` and continued with an HTTP Range request on the next attempt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .exceptions import DownloadError

__all__ = ["download", "file_digest", "extract_zip"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, sha256: str | None, md5: str | None) -> None:
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected and file_digest(path, algo) != expected.lower():
            got = file_digest(path, algo)
            path.unlink()
            raise DownloadError(
                f"{path.name}: {algo} checksum mismatch (expected {expected}, got {got}); the file was removed, "
                f"run the command again to download it afresh.")


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             progress: bool = True, timeout: float = 60.0, retries: int = 3) -> Path:
    """Download ``url`` to ``dest`` (a file path), resuming a previous partial download, and verify it.

    The SHA-256 of every completed download is recorded in ``<dest>.sha256``; an existing ``dest`` is reused without
    network access only if it still matches that record (and ``sha256`` / ``md5`` when given), otherwise it is
    downloaded again.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        recorded = _sidecar(dest).read_text().strip() if _sidecar(dest).exists() else None
        if recorded and file_digest(dest) != recorded:
            log.warning("%s does not match its recorded SHA-256 (corrupted?); downloading it again", dest)
            dest.unlink()
        else:
            try:
                _check(dest, sha256, md5)
            except DownloadError:
                log.warning("%s fails its checksum; downloading it again", dest)
            if dest.exists():
                log.info("%s already present, skipping download", dest)
                return dest
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, part, progress=progress, timeout=timeout)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            log.warning("download of %s failed (attempt %d/%d): %s", url, attempt, retries, exc)
    else:
        raise DownloadError(
            f"Could not download {url} after {retries} attempts ({last_error}). The partial file {part} is kept; "
            f"run again to resume, or download it yourself and place it at {dest}.") from last_error
    os.replace(part, dest)
    _check(dest, sha256, md5)
    _sidecar(dest).write_text(file_digest(dest) + "\n")
    return dest


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            return
        if exc.code in (403, 404):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}. Check the URL.") from exc
        raise
    with resp:
        resumed = resp.status == 206
        if have and not resumed:
            log.info("server ignored the Range request; restarting %s from the beginning", part.name)
            have = 0
        total = resp.headers.get("Content-Length")
        total_bytes = int(total) + have if total is not None else None
        bar = _progress_bar(total_bytes, have, part.name[:-5], progress)
        with open(part, "ab" if resumed else "wb") as fh:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
        bar.close()
        if total_bytes is not None and part.stat().st_size < total_bytes:
            raise OSError(f"connection closed after {part.stat().st_size} of {total_bytes} bytes")


def _progress_bar(total, initial, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, disable=not enabled)


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a zip file, refusing members that would land outside ``dest``."""
    dest = Path(dest).resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if dest != target and dest not in target.parents:
                raise DownloadError(f"{archive}: member {info.filename!r} would extract outside {dest}; refusing.")
        tmp = dest.with_name(dest.name + ".extracting")
        shutil.rmtree(tmp, ignore_errors=True)
        zf.extractall(tmp)
    dest.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        target = dest / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(item, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest
