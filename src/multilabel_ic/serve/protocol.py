"""uvicorn set up for the server: the HTTP/1.1 protocol (malformed requests and slow headers answered with one line of
JSON), the listening socket (a clear error when the port is taken), the server's settings and its logging.
:mod:`.server` (one process) and :mod:`.workers` (several) both run on these."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from ..exceptions import OutputError, UsageError, require
from .contract import DEFAULT_HOST, DEFAULT_PORT, error_body

require("uvicorn", extra="serve")
require("starlette", extra="serve")  # the app and its /metrics: all of the extra is checked on import
require("prometheus_client", extra="serve")

import uvicorn  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

__all__ = ["JsonErrorH11Protocol", "bind", "Server", "LOG_LEVELS", "make_config", "make_server",
           "check_header_timeout", "DEFAULT_HEADER_TIMEOUT_S", "server_logging"]

DEFAULT_HEADER_TIMEOUT_S = 10.0
LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with its answer to a request that is not valid HTTP as one line of JSON, and a
    bound on the time a request's headers may take: a client that has not sent whole headers within
    ``header_timeout_s`` of its connection (or of its first byte after an answer) gets 408 and the connection is
    closed; one that sent nothing is closed without an answer. uvicorn bounds only idle kept-alive connections."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout_s: float = getattr(config, "header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
        self._header_timer: Any = None
        self._header_bytes = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        no_delay(transport.get_extra_info("socket"))
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        import h11

        waiting = self.conn.their_state is h11.IDLE
        if waiting:
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own timeout
            self._cancel_header_timer()
            self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._header_bytes = 0
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        import h11

        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is under way (a pipelined request waits its turn)
        if not self._header_bytes:  # a connection that never sent anything: nobody to answer
            self.transport.close()
            return
        self._send_json_error(408, b"Request Timeout",
                              f"the request's headers did not arrive within {self.header_timeout_s:g} s; send the "
                              f"request line and headers at once (the server's header timeout).")

    def send_400_response(self, msg: str) -> None:
        self._send_json_error(400, b"Bad Request",
                              f"not a valid HTTP/1.1 request ({msg.rstrip('.')}); send a request line such as "
                              f"'POST /invocations HTTP/1.1', headers, and the body.")

    def _send_json_error(self, status: int, reason: bytes, message: str) -> None:
        import h11

        body = error_body(message)
        try:
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response was already under way: nothing more can be sent
            pass
        self.transport.close()


def no_delay(sock: Any) -> None:
    """Send each write at once (TCP_NODELAY). Without it an answer's body, written after its headers, waits for the
    client's delayed ACK of the headers: about 40 ms per request on Linux. asyncio sets it only on sockets made with
    ``proto=IPPROTO_TCP``, which an inherited or ``socket.socket(family, SOCK_STREAM)`` socket is not."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        with contextlib.suppress(OSError):  # the client has gone already
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a clear error when it cannot be had."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"port={port!r}: give a port number between 0 and 65535 (0: any free port).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"host={host!r} is not an address of this machine ({exc.strerror}); give an address such "
                         f"as 127.0.0.1, or 0.0.0.0 for every interface.") from None
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)  # proto TCP: asyncio then sets TCP_NODELAY itself
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OutputError(f"cannot listen on {host}:{port} ({exc.strerror}); another server may be using the port: "
                          f"choose another with --port, or stop that server.") from None
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server; ``stop()`` asks it to finish (from another thread), ``started`` says it is serving."""

    def stop(self) -> None:
        self.should_exit = True


@contextlib.contextmanager
def server_logging(level: str) -> Iterator[None]:
    """While serving: the library's lines at ``level``, and uvicorn's own lines through the library's handler (stderr,
    the algorithm's line format); as they were afterwards."""
    ours = logging.getLogger("multilabel_ic")
    theirs = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (ours, *theirs)]
    try:
        ours.setLevel(level.upper())
        if ours.handlers:
            for logger in theirs:
                logger.handlers[:] = list(ours.handlers)
                logger.setLevel(level.upper())
                logger.propagate = False
        yield
    finally:
        for logger, handlers, lvl, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(lvl)
            logger.propagate = propagate


def check_header_timeout(header_timeout_s: Any) -> None:
    if isinstance(header_timeout_s, bool) or not isinstance(header_timeout_s, (int, float)) \
            or not header_timeout_s > 0:
        raise UsageError(f"header_timeout_s={header_timeout_s!r}: give seconds > 0.")


def make_config(app: Any, *, log_level: str = "info", graceful_timeout_s: float | None = None,
                header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app`` (an app, or with ``factory=True`` the import string of an app factory): the
    JSON-error HTTP/1.1 protocol with its header timeout, no access log of uvicorn's own (the app writes one)."""
    if log_level not in LOG_LEVELS:
        raise UsageError(f"log_level={log_level!r} is not one of {', '.join(LOG_LEVELS)}.")
    check_header_timeout(header_timeout_s)
    config = uvicorn.Config(app, http=JsonErrorH11Protocol, lifespan="on", access_log=False, log_config=None,
                            log_level=log_level, timeout_graceful_shutdown=(None if graceful_timeout_s is None
                                                                            else int(graceful_timeout_s)), **kwargs)
    config.header_timeout_s = float(header_timeout_s)  # type: ignore[attr-defined]  # read by the protocol
    return config


def make_server(app: Any, *, log_level: str = "info", graceful_timeout_s: float | None = None,
                header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> Server:
    """A uvicorn server for ``app`` (no access log of its own: the app writes one)."""
    return Server(make_config(app, log_level=log_level, graceful_timeout_s=graceful_timeout_s,
                              header_timeout_s=header_timeout_s))
