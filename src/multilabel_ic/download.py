"""Resumable HTTP(S) downloads with progress and SHA-256 / MD5 checks, plus safe zip extraction.

Used for COCO (``multilabel-ic prepare coco --download``) and the MXNet model-zoo weights.

- An ``http://`` URL is tried over ``https://`` first; only a host that does not serve TLS is fetched over plain
  HTTP, with a warning (``require_https=True`` refuses that instead). Integrity then rests on the checksum.
- A partial download is kept as ``<name>.part`` with the server's validator (ETag or Last-Modified) in
  ``<name>.part.json``, and continued with ``Range`` + ``If-Range``: a file that changed on the server is fetched
  whole, never spliced. A partial file without a validator is fetched again from the start.
- Checksums: the caller's ``sha256`` / ``md5`` (pinned), checked after every download. The SHA-256 of every completed
  download is also recorded beside it (``<name>.sha256``) so that a corrupted cache is detected and fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import ssl
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from ._read import read_bounded
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


def _https_first(url: str, require_https: bool, timeout: float) -> str:
    """``url`` over https when the host serves it; otherwise the http URL (or an error with ``require_https``)."""
    if not url.startswith("http://"):
        return url
    secure = "https://" + url[len("http://"):]
    try:
        req = urllib.request.Request(secure, method="HEAD")
        with urllib.request.urlopen(req, timeout=min(timeout, 15.0)):
            return secure
    except urllib.error.HTTPError:
        return secure  # the host speaks TLS; the GET reports the HTTP error itself
    except (urllib.error.URLError, ssl.SSLError, OSError, TimeoutError) as exc:
        if require_https:
            raise DownloadError(f"{secure}: the host does not serve https ({exc}); download the file yourself, or "
                                f"allow plain http (require_https=False) with a pinned checksum.") from exc
        log.warning("%s does not serve https (%s); downloading over plain http, integrity rests on the checksum",
                    secure.split("/")[2], getattr(exc, "reason", exc))
        return url


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             progress: bool = True, timeout: float = 60.0, retries: int = 3, require_https: bool = False) -> Path:
    """Download ``url`` to ``dest`` (a file path), resuming a previous partial download, and verify it.

    The SHA-256 of every completed download is recorded in ``<dest>.sha256``; an existing ``dest`` is reused without
    network access only if it still matches that record (and ``sha256`` / ``md5`` when given), otherwise it is
    downloaded again.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        recorded = _recorded_digest(dest)
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
    url = _https_first(url, require_https, timeout)
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
    _validator_path(part).unlink(missing_ok=True)
    _check(dest, sha256, md5)
    _sidecar(dest).write_text(file_digest(dest) + "\n")
    return dest


def _recorded_digest(dest: Path) -> str | None:
    """The SHA-256 recorded beside ``dest`` (None without a record; one that cannot be read, a FIFO or a device in
    its place, or a damaged one, matches no file, so the download is made again)."""
    side = _sidecar(dest)
    if not (side.exists() or side.is_symlink()):
        return None
    try:
        return read_bounded(side, limit=4096, what="checksum record", error=DownloadError).decode("ascii").strip() \
            or "unreadable"
    except (DownloadError, UnicodeDecodeError):
        return "unreadable"


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    validator = None
    if have:
        try:
            doc = json.loads(read_bounded(_validator_path(part), limit=64 * 1024, what="resume record",
                                          error=DownloadError))
            validator = doc.get("validator") if isinstance(doc, dict) else None
        except (DownloadError, ValueError):
            validator = None
        if not isinstance(validator, str):
            validator = None
        if not validator:
            log.info("%s has no ETag or Last-Modified to resume against; downloading it from the start", part.name)
            have = 0
    headers = {"Range": f"bytes={have}-", "If-Range": str(validator)} if have else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}. Check the URL.") from exc
        if exc.code == 416 and have:  # the range starts at the end: ask for the whole file again
            part.unlink()
            _validator_path(part).unlink(missing_ok=True)
        raise
    with resp:
        resumed = resp.status == 206 and have > 0
        if have and not resumed:
            log.info("the file changed on the server, or the server ignored the Range request; downloading %s "
                     "from the beginning", part.name)
            have = 0
        new_validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if not resumed:
            _validator_path(part).write_text(json.dumps({"url": url, "validator": new_validator}) + "\n")
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


MAX_ZIP_BYTES = 64 * 1024 ** 3  # uncompressed; COCO val2017 + annotations are under 1.5 GB
MAX_ZIP_MEMBERS = 200_000


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, *, max_bytes: int = MAX_ZIP_BYTES,
                max_members: int = MAX_ZIP_MEMBERS) -> Path:
    """Extract a zip file into ``dest``, merging with what is there.

    Refused before anything is written: members that would land outside ``dest`` (or are links), more than
    ``max_members`` members, more than ``max_bytes`` uncompressed. Each file is extracted to a temporary name and
    renamed into place, so an interruption leaves complete files only; a file the archive holds replaces the file of
    the same path, and nothing else in ``dest`` is touched.
    """
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip file ({exc}); delete it and download it again.") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise DownloadError(f"{archive}: {len(infos)} members, more than the limit of {max_members}; refusing "
                                f"(pass max_members= if you trust the archive).")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DownloadError(f"{archive}: {total} bytes uncompressed, more than the limit of {max_bytes}; "
                                f"refusing (pass max_bytes= if you trust the archive).")
        for info in infos:
            target = (dest / info.filename).resolve()
            if dest != target and dest not in target.parents:
                raise DownloadError(f"{archive}: member {info.filename!r} would extract outside {dest}; refusing.")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link; refusing.")
        dest.mkdir(parents=True, exist_ok=True)
        for info in infos:
            target = (dest / info.filename).resolve()
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.extracting")
            try:
                with zf.open(info) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(tmp, target)
            except (zipfile.BadZipFile, zlib.error) as exc:
                tmp.unlink(missing_ok=True)
                raise DownloadError(f"{archive}: member {info.filename!r} is damaged ({exc}); delete the archive "
                                    f"and download it again.") from exc
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    return dest
