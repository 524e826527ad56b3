"""Run the app under uvicorn (:mod:`.protocol` has the HTTP set-up): bind the port, serve, and on SIGTERM stop taking
connections, finish the requests in flight and return (the CLI then exits 0). ``workers`` > 1 runs :mod:`.workers`."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..exceptions import UsageError
from .contract import DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES
from .protocol import (
    DEFAULT_HEADER_TIMEOUT_S,
    LOG_LEVELS,
    Server,
    bind,
    check_header_timeout,
    make_config,
    make_server,
    server_logging,
)

__all__ = ["serve", "bind", "Server", "LOG_LEVELS", "make_config", "make_server", "DEFAULT_HEADER_TIMEOUT_S"]

log = logging.getLogger("multilabel_ic.serve")


@contextlib.contextmanager
def _sigterm_returns() -> Iterator[None]:
    """uvicorn drains on SIGTERM, then raises the signal again for the handler before it: make that one do nothing,
    so the process returns normally (exit status 0) instead of dying by the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(model: Any, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, runtime: str = "torch",
          max_batch: int = 32, max_delay_ms: float = 5.0, decode_threads: int | None = None,
          max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = 30.0, log_level: str = "info",
          graceful_timeout_s: float | None = 30.0, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
          workers: int = 1, cache_dir: str | os.PathLike | None = None, precision: str = "fp32",
          on_listening: Callable[[str, int], None] | None = None) -> None:
    """Serve ``model`` (a ``model.tar.gz`` path or ``s3://`` URI, a Predictor, or a function returning one) on
    ``host:port`` until SIGTERM or Ctrl-C; see :func:`multilabel_ic.serve.create_app` for the other settings.

    The port is bound first (an error names it when it is taken); ``/ping`` answers 503 while the model loads and 200
    after. If the model cannot be loaded, the server stops and the loading error is raised here. On SIGTERM the
    server stops taking connections, finishes the requests in flight (at most ``graceful_timeout_s``) and returns.
    ``header_timeout_s``: a client whose request headers take longer gets 408. ``workers`` > 1: that many server
    processes on the one port, each with its own model and batcher (:mod:`.workers`). An ``s3://`` URI is
    downloaded once to ``cache_dir`` (:mod:`.model_source`). A path or a function is loaded on the thread that runs
    the batches; a Predictor object was loaded by the caller, which on the CPU costs the network some speed
    (:func:`.batcher.inference_thread`).
    """
    from .app import check_settings, create_app

    if log_level not in LOG_LEVELS:
        raise UsageError(f"log_level={log_level!r} is not one of {', '.join(LOG_LEVELS)}.")
    check_header_timeout(header_timeout_s)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers={workers!r}: give a whole number of server processes >= 1.")
    check_settings(max_batch=max_batch, max_delay_ms=max_delay_ms, max_body_bytes=max_body_bytes,
                   body_timeout_s=body_timeout_s, decode_threads=decode_threads)
    if workers > 1:
        from .workers import serve_workers

        serve_workers(model, workers=workers, host=host, port=port, log_level=log_level,
                      graceful_timeout_s=graceful_timeout_s, header_timeout_s=header_timeout_s, cache_dir=cache_dir,
                      on_listening=on_listening,
                      app_settings=dict(runtime=runtime, max_batch=max_batch, max_delay_ms=max_delay_ms,
                                        decode_threads=decode_threads, max_body_bytes=max_body_bytes,
                                        body_timeout_s=body_timeout_s, precision=precision))
        return
    failure: list[BaseException] = []
    server_ref: list[Server] = []

    def load_failed(exc: BaseException) -> None:
        failure.append(exc)
        if server_ref:
            server_ref[0].stop()

    app = create_app(model, runtime=runtime, max_batch=max_batch, max_delay_ms=max_delay_ms,
                     decode_threads=decode_threads, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s,
                     cache_dir=cache_dir, precision=precision, on_load_error=load_failed)
    server = make_server(app, log_level=log_level, graceful_timeout_s=graceful_timeout_s,
                         header_timeout_s=header_timeout_s)
    server_ref.append(server)
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    try:
        with server_logging(log_level), _sigterm_returns():
            log.info("listening on http://%s:%d (GET /ping, POST /invocations); SIGTERM or Ctrl-C stops it",
                     bound_host, bound_port)
            if on_listening is not None:
                on_listening(bound_host, bound_port)
            server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        raise failure[0]
