"""A server that speaks the algorithm's endpoint contract (``multilabel-ic serve``, or any container of it) as a
:class:`~multilabel_ic.Predictor`: the same ``predict`` / ``predict_batch`` / ``predict_labels`` / ``evaluate`` as the
local and the SageMaker predictor, over HTTP. Standard library only (no server extra needed)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..backends.base import Predictor, parse_probabilities
from ..exceptions import BackendError, ImageDecodeError, UsageError
from .contract import CONTENT_TYPES

__all__ = ["HttpPredictor", "is_url"]


def is_url(endpoint: str) -> bool:
    """Whether ``endpoint`` is a server's URL (http:// or https://) rather than a SageMaker endpoint name."""
    return endpoint.lower().startswith(("http://", "https://"))


class HttpPredictor(Predictor):
    """``POST {url}/invocations`` with the image bytes, ``Accept: application/json``; the body is parsed exactly as
    the SageMaker endpoint predictor parses it (:func:`~multilabel_ic.backends.base.parse_probabilities`).

    ``class_names`` default to what the server's ``GET /metadata`` says (``multilabel-ic serve`` answers it), else
    ``class_0 ...``. ``predict_batch`` keeps ``concurrency`` requests in flight, so the server batches them.
    """

    def __init__(self, url: str, *, class_names: Sequence[str] | None = None,
                 thresholds: Sequence[float] | None = None, timeout: float = 70.0, concurrency: int = 8):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"endpoint {url!r} is not a server URL; give one such as http://127.0.0.1:8080.")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency={concurrency!r}: give a number of requests >= 1.")
        self.url = url.rstrip("/")
        self._parsed = parsed
        self.timeout = timeout
        self.concurrency = concurrency
        self.thresholds = list(thresholds) if thresholds else None
        self.class_names = list(class_names) if class_names else []
        if not self.class_names:
            meta = self._metadata()
            self.class_names = list(meta.get("class_names") or [])
            if self.thresholds is None and meta.get("thresholds"):
                self.thresholds = list(meta["thresholds"])
        self._names_given = bool(self.class_names)  # given, or the server's own: every answer must match them

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        return cls(self._parsed.hostname or "", self._parsed.port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        base = self._parsed.path.rstrip("/")
        conn = self._connection()
        try:
            conn.request(method, base + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            if isinstance(exc, socket.timeout):
                reason = f"no answer within {self.timeout:g} s"
            raise BackendError(f"{self.url}: {method} {path} failed ({reason}); is the server running "
                               f"(multilabel-ic serve MODEL --port {self._parsed.port or 80})?") from exc
        finally:
            conn.close()

    def _metadata(self) -> dict:
        status, body = self._request("GET", "/metadata")
        if status != 200:
            return {}
        try:
            meta = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return meta if isinstance(meta, dict) else {}

    @staticmethod
    def _server_error(body: bytes) -> str:
        try:
            return str(json.loads(body)["error"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return " ".join(body[:200].decode("utf-8", "replace").split()) or "(no message)"

    def predict(self, image: bytes, content_type: str = "application/x-image", *,
                source: str = "the image") -> list[float]:
        if content_type not in CONTENT_TYPES:
            raise UsageError(f"content type {content_type!r} is not accepted; use one of {', '.join(CONTENT_TYPES)}")
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise UsageError(f"predict takes the encoded image as bytes, got {type(image).__name__}; read a file with "
                             f"Path(path).read_bytes().")
        status, body = self._request("POST", "/invocations", bytes(image),
                                     {"Content-Type": content_type, "Accept": "application/json"})
        if status == 400:  # the server could not use the image
            raise ImageDecodeError(f"{source}: {self.url} refused it: {self._server_error(body)}")
        if status != 200:
            raise BackendError(f"{self.url} answered {status} for {source}: {self._server_error(body)}")
        probs = parse_probabilities(body, source=self.url)
        self._check_width(probs, where=f"{self.url} answered", names_given=self._names_given)
        return probs

    def predict_batch(self, images: Sequence[bytes], *, output: str = "list",
                      sources: Sequence[str] | None = None) -> list[list[float]] | str:
        self._check_output(output)
        images = self._check_images(images, sources)
        names = list(sources) if sources is not None else [f"image {i}" for i in range(len(images))]
        if len(images) <= 1 or self.concurrency == 1:
            preds = [self.predict(img, source=name) for img, name in zip(images, names)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(images))) as pool:
                preds = list(pool.map(lambda pair: self.predict(pair[0], source=pair[1]), zip(images, names)))
        return self._format(output, preds)
