"""A small HTTP file server for the download tests: Range requests, ETag / If-Range, and a connection cut."""

from __future__ import annotations

import hashlib
import http.server


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; ``/cut/<name>`` drops the connection half-way once."""

    cut_once: set = set()
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        cut = self.path.startswith("/cut/")
        name = self.path.split("/")[-1]
        try:
            data = (self.server.root / name).read_bytes()
        except FileNotFoundError:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if rng and self.headers.get("If-Range") not in (None, etag):
            rng = None  # the file changed since the partial download: send it whole (RFC 9110 If-Range)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut and name not in type(self).cut_once:
            type(self).cut_once.add(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)
