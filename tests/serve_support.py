"""The server tests' machinery: a server on a free port in a thread, and raw HTTP/1.1 exchanges over a socket (so a
test controls every byte: bad request lines, chunked bodies, slow or vanishing clients)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass


class ServerThread:
    """``create_app(model, **settings)`` under uvicorn on 127.0.0.1:<free port>, in a daemon thread
    (``header_timeout_s`` goes to the server; ``sock``: a listening socket to serve on instead of ``bind``'s)."""

    def __init__(self, model, *, header_timeout_s: float = 10.0, sock=None, **settings):
        from multilabel_ic.serve.app import create_app
        from multilabel_ic.serve.server import bind, make_server

        self.app = create_app(model, **settings)
        self.server = make_server(self.app, log_level="warning", header_timeout_s=header_timeout_s)
        self.sock = sock if sock is not None else bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if exchange(self.port, request("GET", "/ping")).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError("the server did not answer /ping with 200")

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, *,
            length: bool = True) -> bytes:
    """The bytes of an HTTP/1.1 request (with Content-Length unless ``length=False`` or given in ``headers``)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    given = {k.lower() for k in (headers or {})}
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if length and "content-length" not in given and "transfer-encoding" not in given and method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 65536) -> bytes:
    out = b"".join(f"{len(body[i:i + size]):x}\r\n".encode() + body[i:i + size] + b"\r\n"
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer:
    """One HTTP response from ``sock`` (Content-Length framed, or up to the connection's close)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the connection closed before a response came: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(rest) < length:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, rest[:length] if length >= 0 else rest)


def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> Answer:
    """Send ``data`` on a new connection and read the answer. A server that answers before it has read everything
    (413) may close while the rest is sent: that is fine, the answer is read all the same."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(sock, timeout)


class AccessLines(logging.Handler):
    """The access log lines (parsed) the server writes, collected whatever the library's logging set-up is."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[dict] = []
        self.logger = logging.getLogger("multilabel_ic.serve.access")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))

    def __enter__(self) -> AccessLines:
        self._level, self._propagate = self.logger.level, self.logger.propagate
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # not to handlers an earlier test left on a stream that is closed now
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
        self.logger.propagate = self._propagate

    def wait_for(self, predicate, timeout: float = 5.0) -> list[dict]:
        """The lines once one of them satisfies ``predicate`` (a line is written just after its answer is sent)."""
        deadline = time.monotonic() + timeout
        while not any(predicate(line) for line in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log line as expected among {self.lines}")
            time.sleep(0.01)
        return self.lines
