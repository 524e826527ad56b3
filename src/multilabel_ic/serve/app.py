"""The server as an ASGI application (Starlette): ``GET /ping``, ``POST /invocations``, ``GET /metadata`` and
``GET /metrics`` (Prometheus, :mod:`.metrics`).

:func:`create_app` loads the model when the server starts (``/ping`` answers 503 until it is loaded, 200 after) and
answers each request like the algorithm's endpoint does (:mod:`.contract`). Every refusal is a 4xx with one line of
JSON, ``{"error": ..., "request_id": ...}``; an unexpected failure is a 500 of the same shape, with the traceback in
the server's log only. Each request gets an access log line (JSON) on the ``multilabel_ic.serve.access`` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..exceptions import MultilabelICError, UsageError, require
from .batcher import Batcher, inference_thread
from .contract import (
    MAX_BODY_BYTES,
    RequestRefused,
    content_type_of,
    error_body,
    format_probabilities,
    negotiate_accept,
)
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics

require("starlette", extra="serve")

from starlette.applications import Starlette  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.requests import ClientDisconnect, Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

__all__ = ["create_app", "check_settings"]

log = logging.getLogger("multilabel_ic.serve")
access_log = logging.getLogger("multilabel_ic.serve.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_LOG_KEY = "multilabel_ic.access"


def check_settings(*, max_batch: int, max_delay_ms: float, max_body_bytes: int, body_timeout_s: float,
                   decode_threads: int | None) -> None:
    """A :class:`UsageError` for a setting of the server that cannot work, naming the option."""
    def bad(name: str, value: Any, want: str) -> UsageError:
        return UsageError(f"{name}={value!r}: {want}.")

    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise bad("max_batch", max_batch, "give a whole number of images >= 1")
    if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)) or not 0 <= max_delay_ms <= 10_000:
        raise bad("max_delay_ms", max_delay_ms, "give milliseconds between 0 and 10000")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise bad("max_body_bytes", max_body_bytes, "give a byte count >= 1")
    if isinstance(body_timeout_s, bool) or not isinstance(body_timeout_s, (int, float)) or not body_timeout_s > 0:
        raise bad("body_timeout_s", body_timeout_s, "give seconds > 0")
    if decode_threads is not None and (isinstance(decode_threads, bool) or not isinstance(decode_threads, int)
                                       or decode_threads < 1):
        raise bad("decode_threads", decode_threads, "give a thread count >= 1, or None for the cores")


class _ModelState:
    """The predictor once loaded, or the error that stopped it."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None


def _load(model: Any, runtime: str, cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Any:
    """A predictor for ``model``: a Predictor is used as it is, a callable is called, a path is loaded (an ``s3://``
    URI is downloaded to the cache first)."""
    from ..backends.base import Predictor

    if isinstance(model, Predictor):
        return model
    if callable(model):
        return model()
    if isinstance(model, (str, os.PathLike)):
        from ..model.predictor import LocalPredictor
        from .model_source import local_model

        model = local_model(model, cache_dir)

        return LocalPredictor(model, runtime=runtime, precision=precision,
                              device="cpu" if runtime != "torch" else None)
    raise UsageError(f"model={model!r}: give the path or s3:// URI of a model.tar.gz, a Predictor, or a function "
                     f"that returns one.")


def _hooks(predictor: Any) -> tuple[Callable[..., Any], Callable[..., list[list[float]]], bool]:
    """(decode one body, run a batch, batches?) for a predictor: a LocalPredictor's own halves, else ``predict``."""
    if callable(getattr(predictor, "preprocess", None)) and callable(getattr(predictor, "run_batch", None)):
        return predictor.preprocess, predictor.run_batch, True
    return (lambda body, source: body), (lambda bodies: [predictor.predict(b) for b in bodies]), False


def _error(status: int, message: str, request_id: str | None, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, request_id), status_code=status, media_type="application/json",
                    headers=headers)


class _AccessLog:
    """ASGI middleware: a request id (the client's ``X-Request-Id`` when it is a plain token) in the scope and the
    answer's headers, one JSON access log line per request, and the request metrics."""

    def __init__(self, app: Any, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        entry: dict[str, Any] = {"request_id": request_id, "method": scope.get("method"), "path": scope.get("path"),
                                 "status": None, "latency_ms": None, "batch_size": None}
        scope[_LOG_KEY] = entry
        started = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            took = time.perf_counter() - started
            entry["latency_ms"] = round(took * 1000, 2)
            status = entry["status"] or 500
            self.metrics.observe_request(scope.get("path"), status, took)
            level = logging.WARNING if status >= 500 and status != 503 else logging.INFO  # 503: still loading
            access_log.log(level, json.dumps(entry))


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 before it is read whole when it is over ``limit`` (its Content-Length, or the bytes
    of a chunked body as they come), and with 408 when it takes longer than ``timeout`` seconds."""
    close = {"Connection": "close"}  # the rest of the body is not read: the connection cannot carry another request
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise RequestRefused(400, f"Content-Length {length!r} is not a byte count.", close)
        if int(length) > limit:
            raise RequestRefused(413, f"the body has {int(length)} bytes, more than the limit of {limit} "
                                      f"(SageMaker's 6 MB); send a smaller image (resize or re-encode it).", close)
    chunks: list[bytes] = []
    size = [0]

    async def collect() -> None:
        async for chunk in request.stream():
            size[0] += len(chunk)
            if size[0] > limit:
                raise RequestRefused(413, f"the body is over the limit of {limit} bytes (SageMaker's 6 MB); send a "
                                          f"smaller image (resize or re-encode it).", close)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise RequestRefused(408, f"the body did not arrive within {timeout:g} s ({size[0]} bytes came); send it "
                                  f"whole, or raise the server's body timeout.", close) from None
    return b"".join(chunks)


def create_app(model: Any, *, runtime: str = "torch", max_batch: int = 32, max_delay_ms: float = 5.0,
               decode_threads: int | None = None, max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = 30.0,
               cache_dir: str | os.PathLike | None = None, precision: str = "fp32",
               on_load_error: Callable[[BaseException], None] | None = None) -> Starlette:
    """The server as an ASGI app: run it with uvicorn (``multilabel_ic.serve.serve`` does), or any ASGI server.

    ``model``: a ``model.tar.gz`` path (loaded with ``LocalPredictor(model, runtime=runtime, precision=precision)``
    when the app starts),
    an ``s3://`` URI of one (downloaded to ``cache_dir`` first, :mod:`.model_source`), a
    :class:`~multilabel_ic.Predictor`, or a function returning one. ``max_batch`` / ``max_delay_ms``: the dynamic
    batching (docs/serve.md). ``decode_threads``: threads decoding request images (default: the cores, at most 8).
    ``max_body_bytes``: larger bodies get 413 (default: SageMaker's 6 MB); ``body_timeout_s``: a body slower than
    this gets 408. ``on_load_error(exc)`` is called when the model cannot be loaded (``serve`` then stops).
    """
    from .._parallel import usable_cores
    from ..model.predictor import RUNTIMES, check_precision

    if runtime not in RUNTIMES:
        raise UsageError(f"runtime={runtime!r} is not one of {', '.join(RUNTIMES)}.")
    check_precision(runtime, precision)
    check_settings(max_batch=max_batch, max_delay_ms=max_delay_ms, max_body_bytes=max_body_bytes,
                   body_timeout_s=body_timeout_s, decode_threads=decode_threads)
    state = _ModelState()
    holder: dict[str, Any] = {}
    metrics = ServeMetrics()

    async def load() -> None:
        started = time.perf_counter()
        infer_pool = inference_thread()  # loads the model and then runs its batches: one OpenMP team (batcher.py)
        try:
            predictor = await asyncio.get_running_loop().run_in_executor(infer_pool, _load, model, runtime, cache_dir,
                                                                          precision)
        except BaseException as exc:  # reported by /ping and to the caller; the server keeps answering 503
            infer_pool.shutdown(wait=False)
            state.error = exc
            log.error("the model could not be loaded: %s", " ".join(str(exc).split()))
            if on_load_error is not None:
                on_load_error(exc)
            return
        decode, run_batch, batches = _hooks(predictor)
        batcher = Batcher(run_batch, max_batch=max_batch if batches else 1, max_delay_ms=max_delay_ms,
                          decode_threads=decode_threads or min(8, usable_cores()), on_batch=metrics.observe_batch,
                          infer_pool=infer_pool)
        batcher.start()
        holder.update(batcher=batcher, decode=decode)
        state.predictor = predictor
        metrics.model_loaded.set(1)
        log.info("model loaded in %.1f s: %d classes, runtime %s; batches of up to %d, waiting at most %g ms",
                 time.perf_counter() - started, len(getattr(predictor, "class_names", []) or []),
                 getattr(predictor, "runtime", "?"), batcher.max_batch, max_delay_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.get_running_loop().create_task(load())
        holder["load_task"] = task
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if "batcher" in holder:
                await holder["batcher"].stop()

    def not_ready(request_id: str | None) -> Response:
        if state.error is not None:
            return _error(503, f"the model could not be loaded: {state.error}", request_id)
        return _error(503, "the model is still loading; retry when GET /ping answers 200.", request_id,
                      {"Retry-After": "1"})

    async def ping(request: Request) -> Response:
        if not state.ready:
            return not_ready(request.scope[_LOG_KEY]["request_id"])
        return Response(b"", status_code=200)

    async def metadata(request: Request) -> Response:
        if not state.ready:
            return not_ready(request.scope[_LOG_KEY]["request_id"])
        p = state.predictor
        body = {"class_names": list(getattr(p, "class_names", []) or []),
                "thresholds": getattr(p, "thresholds", None), "image_shape": getattr(p, "image_shape", None),
                "runtime": getattr(p, "runtime", None), "max_batch": holder["batcher"].max_batch,
                "max_delay_ms": max_delay_ms, "max_body_bytes": max_body_bytes,
                "pid": os.getpid()}  # which worker answered (serve --workers)
        return Response(json.dumps(body).encode(), media_type="application/json")

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def invocations(request: Request) -> Response:
        entry = request.scope[_LOG_KEY]
        request_id = entry["request_id"]
        try:
            if not state.ready:
                return not_ready(request_id)
            content_type_of(request.headers.get("content-type"))
            accept = negotiate_accept(request.headers.get("accept"))
            body = await _read_body(request, max_body_bytes, body_timeout_s)
            batcher: Batcher = holder["batcher"]
            array = await batcher.decode(holder["decode"], body, "the request body")
            result = await batcher.infer(array)
            entry["batch_size"] = result.batch_size
            return Response(format_probabilities(result.probabilities, accept), media_type=accept)
        except RequestRefused as exc:
            return _error(exc.status, exc.message, request_id, exc.headers)
        except ClientDisconnect:
            entry["client_disconnected"] = True
            return Response(b"", status_code=400)  # nobody reads it
        except MultilabelICError as exc:  # the image: empty, not an image, truncated, over the pixel limit
            return _error(400, str(exc), request_id)
        except Exception as exc:
            log.exception("request %s failed", request_id)
            return _error(500, f"the server failed on this request ({type(exc).__name__}: {exc}); the server's log "
                               f"has the details (request id {request_id}).", request_id)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        request_id = request.scope.get(_LOG_KEY, {}).get("request_id")
        hints = {404: f"no such path {request.url.path!r}; the server answers GET /ping and POST /invocations.",
                 405: f"{request.method} is not allowed on {request.url.path}; use GET /ping and POST /invocations."}
        return _error(exc.status_code, hints.get(exc.status_code, str(exc.detail)), request_id,
                      dict(exc.headers or {}))

    app = Starlette(routes=[Route("/ping", ping, methods=["GET"]),
                            Route("/invocations", invocations, methods=["POST"]),
                            Route("/metadata", metadata, methods=["GET"]),
                            Route("/metrics", prometheus, methods=["GET"])],
                    exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.model = state
    app.state.holder = holder
    app.state.metrics = metrics
    app.add_middleware(_AccessLog, metrics=metrics)
    return app
