"""The server's failure catalog: bad requests get a 4xx with one line of JSON that names the problem (never a
traceback), and the next good request on the same server still gets the right answer; images the algorithm takes in
odd forms (16-bit, CMYK, greyscale, alpha, chunked) get the in-process predictor's answer. Plus the CLI and API
cases of ``serve`` and of predict/evaluate ``--endpoint URL``, in the catalog's usual form.

One server (the catalog workspace's ResNet-20 at 28 px) runs on a free port for the whole module.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from catalog_support import (
    ApiCase,
    CliCase,
    Workspace,
    check_api_case,
    check_cli_case,
    eval_argv,
    png_header_only,
)
from PIL import Image
from serve_support import AccessLines, ServerThread, chunked, exchange, read_answer, request

from multilabel_ic import BackendError, OutputError, UsageError
from multilabel_ic.serve.contract import MAX_BODY_BYTES

BODY_TIMEOUT_S = 0.5
HEADER_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def served(ws: Workspace):
    server = ServerThread(ws.model, body_timeout_s=BODY_TIMEOUT_S, header_timeout_s=HEADER_TIMEOUT_S, max_delay_ms=2)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local(ws: Workspace):
    from multilabel_ic.model.predictor import LocalPredictor

    return LocalPredictor(ws.model, device="cpu")


def _jpeg(ws: Workspace) -> bytes:
    return ws.jpeg.read_bytes()


def _encode(img: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _pil(ws: Workspace, mode: str, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(ws.jpeg).convert(mode).save(out, format=fmt)
    return out.getvalue()


def _post(body: bytes, content_type: str | None = "image/jpeg", accept: str | None = None, **extra: str) -> bytes:
    headers = {**({"Content-Type": content_type} if content_type else {}), **({"Accept": accept} if accept else {}),
               **extra}
    return request("POST", "/invocations", body, headers)


def _over_limit_chunked() -> bytes:
    """A chunked body one byte over the limit, without its last chunk: the server has read all of it when it
    answers, so the answer is never lost to a reset connection."""
    head = request("POST", "/invocations", b"", {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"})
    return head + chunked(b"\0" * (MAX_BODY_BYTES + 1), size=1 << 20)[: -len(b"0\r\n\r\n")]


# --------------------------------------------------------------------------------------- HTTP cases: 4xx + one line


@dataclass
class HttpCase:
    id: str
    request: Callable[[Workspace], bytes]
    status: int
    message: str  # a substring of the JSON error


HTTP_CASES = [
    HttpCase("serve-empty-body", lambda ws: _post(b""), 400, "empty file, not an image"),
    HttpCase("serve-not-an-image", lambda ws: _post(b"hello, world"), 400, "not a decodable image"),
    HttpCase("serve-html-error-page", lambda ws: _post(b"<html><body>503 Service Unavailable</body></html>"), 400,
             "not a decodable image"),
    HttpCase("serve-truncated-jpeg", lambda ws: _post(_jpeg(ws)[: len(_jpeg(ws)) // 2]), 400,
             "the request body: not a decodable image"),
    HttpCase("serve-jpeg-header-only", lambda ws: _post(_jpeg(ws)[:160]), 400, "the request body"),
    HttpCase("serve-gif", lambda ws: _post(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"), 400, "not a decodable image"),
    HttpCase("serve-decompression-bomb-20000px", lambda ws: _post(png_header_only(20000, 20000), "image/png"), 400,
             "400000000 pixels, more than the limit"),
    HttpCase("serve-10000x10000-image", lambda ws: _post(png_header_only(10000, 10000), "image/png"), 400,
             "100000000 pixels, more than the limit"),
    HttpCase("serve-content-type-text", lambda ws: _post(_jpeg(ws), "text/plain"), 415,
             "Content-Type 'text/plain' is not an image type"),
    HttpCase("serve-content-type-json", lambda ws: _post(b"[1, 2]", "application/json"), 415,
             "not an image type the algorithm takes"),
    HttpCase("serve-content-type-missing", lambda ws: _post(_jpeg(ws), None), 415, "no Content-Type"),
    HttpCase("serve-content-type-recordio-protobuf",
             lambda ws: _post(_jpeg(ws), "application/x-recordio-protobuf"), 415, "image/jpeg, image/png"),
    HttpCase("serve-accept-csv", lambda ws: _post(_jpeg(ws), accept="text/csv"), 406,
             "Accept 'text/csv' asks for no type this server answers"),
    HttpCase("serve-accept-json-q0", lambda ws: _post(_jpeg(ws), accept="application/json;q=0"), 406,
             "application/json or application/jsonlines"),
    HttpCase("serve-accept-protobuf", lambda ws: _post(_jpeg(ws), accept="application/x-recordio-protobuf"), 406,
             "asks for no type"),
    HttpCase("serve-content-length-over-limit",
             lambda ws: _post(b"", **{"Content-Length": str(MAX_BODY_BYTES + 1)}), 413,
             f"the body has {MAX_BODY_BYTES + 1} bytes, more than the limit of {MAX_BODY_BYTES}"),
    HttpCase("serve-chunked-over-limit", lambda ws: _over_limit_chunked(), 413,
             f"over the limit of {MAX_BODY_BYTES} bytes"),
    HttpCase("serve-chunked-malformed",
             lambda ws: _post(b"", **{"Transfer-Encoding": "chunked"}) + b"zz\r\nabc\r\n0\r\n\r\n", 400,
             "not a valid HTTP/1.1 request"),
    HttpCase("serve-content-length-not-a-number", lambda ws: _post(b"", **{"Content-Length": "lots"}), 400,
             "not a valid HTTP/1.1 request"),
    HttpCase("serve-malformed-request-line", lambda ws: b"GARBAGE\r\n\r\n", 400, "not a valid HTTP/1.1 request"),
    HttpCase("serve-header-without-colon",
             lambda ws: b"POST /invocations HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", 400,
             "not a valid HTTP/1.1 request"),
    HttpCase("serve-headers-too-large", lambda ws: request("GET", "/ping", headers={"X-Big": "a" * 200_000}), 400,
             "not a valid HTTP/1.1 request"),
    HttpCase("serve-slow-client-body", lambda ws: _post(b"", **{"Content-Length": "1000"}) + b"0123456789", 408,
             f"the body did not arrive within {BODY_TIMEOUT_S:g} s (10 bytes came)"),
    HttpCase("serve-slow-client-headers",
             lambda ws: b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n", 408,
             f"the request's headers did not arrive within {HEADER_TIMEOUT_S:g} s"),
    HttpCase("serve-slow-client-request-line", lambda ws: b"POST /invocati", 408,
             "send the request line and headers at once"),
    HttpCase("serve-get-invocations", lambda ws: request("GET", "/invocations"), 405,
             "GET is not allowed on /invocations"),
    HttpCase("serve-post-ping", lambda ws: request("POST", "/ping", b"x"), 405, "POST is not allowed on /ping"),
    HttpCase("serve-unknown-path", lambda ws: request("GET", "/predict"), 404, "no such path '/predict'"),
]


def _check_good_request(served: ServerThread, ws: Workspace, local) -> None:
    """The next good request gets the in-process predictor's answer."""
    image = ws.images / ws.data.paths[1]
    answer = exchange(served.port, _post(image.read_bytes()))
    assert answer.status == 200, answer.body
    assert np.allclose(answer.json(), local.predict(image.read_bytes()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
def test_http_case(case: HttpCase, served: ServerThread, ws: Workspace, local):
    answer = exchange(served.port, case.request(ws))
    assert answer.status == case.status, answer.body
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    assert answer.body.count(b"\n") <= 1 and b"Traceback" not in answer.body and b'File "' not in answer.body
    error = answer.json()["error"]
    assert case.message in error, error
    _check_good_request(served, ws, local)


# ------------------------------------------------------------- images in odd forms: the in-process predictor's answer


def _grey16_png(ws: Workspace) -> bytes:
    img = cv2.imread(str(ws.jpeg), cv2.IMREAD_COLOR).astype(np.uint16) * 257
    return _encode(img, ".png")


GOOD_CASES = [
    ("serve-ok-16-bit-png", _grey16_png, "image/png"),
    ("serve-ok-cmyk-jpeg", lambda ws: _pil(ws, "CMYK", "JPEG"), "image/jpeg"),
    ("serve-ok-greyscale-jpeg", lambda ws: _pil(ws, "L", "JPEG"), "image/jpeg"),
    ("serve-ok-greyscale-png", lambda ws: _pil(ws, "L", "PNG"), "image/png"),
    ("serve-ok-alpha-png", lambda ws: _pil(ws, "RGBA", "PNG"), "image/png"),
    ("serve-ok-palette-png", lambda ws: _pil(ws, "P", "PNG"), "application/x-image"),
    ("serve-ok-content-type-parameters", lambda ws: _jpeg(ws), "image/jpeg; charset=binary"),
    ("serve-ok-content-type-upper-case", lambda ws: _jpeg(ws), "IMAGE/JPEG"),
]


@pytest.mark.parametrize("case", GOOD_CASES, ids=[c[0] for c in GOOD_CASES])
def test_image_the_algorithm_takes_gets_the_local_answer(case, served: ServerThread, ws: Workspace, local):
    _, make, content_type = case
    body = make(ws)
    answer = exchange(served.port, _post(body, content_type))
    assert answer.status == 200, answer.body
    assert np.allclose(answer.json(), local.predict(body), atol=1e-6, rtol=0)


def test_chunked_body_and_accept_forms(served: ServerThread, ws: Workspace, local):
    body = _jpeg(ws)
    want = local.predict(body)
    answer = exchange(served.port, request("POST", "/invocations", b"", {
        "Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}) + chunked(body, size=1000))
    assert answer.status == 200 and np.allclose(answer.json(), want, atol=1e-6, rtol=0)
    for accept, media in (("*/*", "application/json"), ("application/*", "application/json"),
                          ("text/csv, application/jsonlines;q=0.5", "application/jsonlines"),
                          ("application/jsonlines;q=0.2, application/json;q=0.9", "application/json")):
        answer = exchange(served.port, _post(body, accept=accept))
        assert answer.status == 200 and answer.headers["content-type"].startswith(media), (accept, answer)
        if media == "application/jsonlines":
            assert answer.body.endswith(b"\n") and answer.body.count(b"\n") == 1
            assert np.allclose(json.loads(answer.body)["prediction"], want, atol=1e-6, rtol=0)


def test_client_gone_mid_body_and_slow_client_leave_the_server_serving(served: ServerThread, ws: Workspace, local):
    body = _jpeg(ws)
    with AccessLines() as log:
        # a client that sends half the body and goes away
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(_post(body)[: -len(body) // 2])
        log.wait_for(lambda line: line.get("client_disconnected") is True)
    # a slow client holds its connection; others are answered meanwhile
    slow = socket.create_connection(("127.0.0.1", served.port))
    slow.sendall(_post(body)[:-100])
    started = time.perf_counter()
    _check_good_request(served, ws, local)
    assert time.perf_counter() - started < BODY_TIMEOUT_S
    assert read_answer(slow).status == 408
    slow.close()
    _check_good_request(served, ws, local)


def test_slow_headers_are_bounded_on_new_and_kept_alive_connections(served: ServerThread, ws: Workspace, local):
    """The header timeout holds on a connection's first request and on the next one of a kept-alive connection; a
    connection that sends nothing is closed without an answer; others are served meanwhile."""
    body = _jpeg(ws)
    silent = socket.create_connection(("127.0.0.1", served.port))
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(_post(body))
        assert read_answer(sock).status == 200
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next request's headers stall
        started = time.perf_counter()
        _check_good_request(served, ws, local)
        late = read_answer(sock)
        assert late.status == 408 and "headers did not arrive" in late.json()["error"]
        assert time.perf_counter() - started < HEADER_TIMEOUT_S + 3
        assert late.headers["connection"] == "close" and sock.recv(1) == b""
    silent.settimeout(HEADER_TIMEOUT_S + 3)
    assert silent.recv(1) == b""  # closed, no answer
    silent.close()
    _check_good_request(served, ws, local)


# ------------------------------------------------------------------------------------ CLI and API cases (the catalog)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HELD: list[socket.socket] = []  # sockets that keep a port taken while a case runs; closed with the module


@pytest.fixture(scope="module", autouse=True)
def _release_held_ports():
    yield
    while _HELD:
        _HELD.pop().close()


def _taken_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    _HELD.append(s)
    return s.getsockname()[1]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CLI_CASES = [
    CliCase("serve-cli-no-model", lambda ws, t: ["serve", str(t / "missing.tar.gz"), "--port", "0"], 2,
            "no such model.tar.gz"),
    CliCase("serve-cli-max-batch-zero", lambda ws, t: ["serve", str(ws.model), "--max-batch", "0", "--port", "0"], 2,
            "max_batch=0: give a whole number of images >= 1"),
    CliCase("serve-cli-negative-delay", lambda ws, t: ["serve", str(ws.model), "--max-delay-ms", "-1", "--port", "0"],
            2, "max_delay_ms=-1.0: give milliseconds between 0 and 10000"),
    CliCase("serve-cli-body-timeout-zero", lambda ws, t: ["serve", str(ws.model), "--body-timeout", "0", "--port",
                                                         "0"], 2, "body_timeout_s=0.0: give seconds > 0"),
    CliCase("serve-cli-port-out-of-range", lambda ws, t: ["serve", str(ws.model), "--port", "70000"], 2,
            "port=70000: give a port number between 0 and 65535"),
    CliCase("serve-cli-port-taken", lambda ws, t: ["serve", str(ws.model), "--port", str(_taken_port())], 1,
            "another server may be using the port: choose another with --port"),
    CliCase("serve-cli-model-not-an-artifact",
            lambda ws, t: ["serve", str(_write(t / "m.tar.gz", b"not a tar")), "--port", "0"], 1, "m.tar.gz"),
    CliCase("serve-cli-workers-zero", lambda ws, t: ["serve", str(ws.model), "--workers", "0", "--port", "0"], 2,
            "workers=0: give a whole number of server processes >= 1"),
    CliCase("serve-cli-header-timeout-negative",
            lambda ws, t: ["serve", str(ws.model), "--header-timeout", "-1", "--port", "0"], 2,
            "header_timeout_s=-1.0: give seconds > 0"),
    CliCase("serve-cli-workers-model-not-an-artifact",
            lambda ws, t: ["serve", str(_write(t / "m.tar.gz", b"not a tar")), "--workers", "2", "--port", "0"], 1,
            "m.tar.gz"),
    CliCase("evaluate-endpoint-and-model",
            lambda ws, t: eval_argv(ws, t, None, None, "--endpoint", "http://127.0.0.1:1"), 2,
            "either --model (a model.tar.gz run here) or --endpoint"),
    CliCase("evaluate-endpoint-url-down",
            lambda ws, t: ["evaluate", "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--lst", str(ws.lst),
                           "--images", str(ws.images)], 1, "is the server running"),
    CliCase("evaluate-endpoint-preprocess",
            lambda ws, t: ["evaluate", "--endpoint", "http://127.0.0.1:1", "--lst", str(ws.lst), "--images",
                           str(ws.images), "--preprocess", "centre_crop"], 2, "applies to --model only"),
    CliCase("evaluate-sagemaker-endpoint-no-classes",
            lambda ws, t: ["evaluate", "--endpoint", "my-endpoint", "--lst", str(ws.lst), "--images",
                           str(ws.images)], 2, "needs --classes"),
    CliCase("predict-endpoint-url-down",
            lambda ws, t: ["predict", "--endpoint", f"http://127.0.0.1:{_closed_port()}", str(ws.jpeg)], 1,
            "is the server running"),
    CliCase("predict-endpoint-not-a-url", lambda ws, t: ["predict", "--endpoint", "http://", str(ws.jpeg)], 2,
            "is not a server URL"),
]


def _parse(body: bytes):
    from multilabel_ic.backends.base import parse_probabilities

    return parse_probabilities(body, source="http://127.0.0.1:8080")


def _create_app(ws: Workspace, **kw):
    from multilabel_ic.serve.app import create_app

    return create_app(ws.model, **kw)


def _http_predictor(url: str, **kw):
    from multilabel_ic.serve.client import HttpPredictor

    return HttpPredictor(url, class_names=["a"], **kw)


def _bind(host: str, port: int):
    from multilabel_ic.serve.server import bind

    return bind(host, port)


def _serve(ws: Workspace, model=None, **kw):
    from multilabel_ic.serve.server import serve

    return serve(model if model is not None else ws.model, port=_taken_port(), **kw)


def _predictor(ws: Workspace):
    from multilabel_ic.model.predictor import LocalPredictor

    return LocalPredictor(ws.model, device="cpu")


def _worker_app():
    import os

    from multilabel_ic.serve.workers import SETTINGS_ENV, worker_app

    assert SETTINGS_ENV not in os.environ
    return worker_app()


def _make_server(**kw):
    from multilabel_ic.serve.server import make_server

    return make_server(object(), **kw)


API_CASES = [
    ApiCase("serve-api-runtime", lambda ws, t: _create_app(ws, runtime="tensorrt"), UsageError,
            "runtime='tensorrt' is not one of torch, onnxruntime, openvino"),
    ApiCase("serve-api-max-batch", lambda ws, t: _create_app(ws, max_batch=1.5), UsageError, "max_batch=1.5"),
    ApiCase("serve-api-max-body", lambda ws, t: _create_app(ws, max_body_bytes=0), UsageError,
            "max_body_bytes=0: give a byte count >= 1"),
    ApiCase("serve-api-decode-threads", lambda ws, t: _create_app(ws, decode_threads=0), UsageError,
            "decode_threads=0"),
    ApiCase("serve-api-workers-predictor", lambda ws, t: _serve(ws, model=_predictor(ws), workers=2), UsageError,
            "workers=2: each worker process loads the model itself; give the path or s3:// URI"),
    ApiCase("serve-api-workers-bool", lambda ws, t: _serve(ws, workers=True), UsageError, "workers=True"),
    ApiCase("serve-api-header-timeout", lambda ws, t: _make_server(header_timeout_s=0), UsageError,
            "header_timeout_s=0: give seconds > 0"),
    ApiCase("serve-api-worker-app-outside-serve", lambda ws, t: _worker_app(), UsageError,
            "worker_app is the app factory of 'multilabel-ic serve --workers'"),
    ApiCase("serve-api-log-level", lambda ws, t: _make_server(log_level="verbose"), UsageError,
            "log_level='verbose' is not one of debug, info, warning, error"),
    ApiCase("serve-api-port-taken", lambda ws, t: _bind("127.0.0.1", _taken_port()), OutputError,
            "cannot listen on 127.0.0.1:"),
    ApiCase("serve-api-client-not-a-url", lambda ws, t: _http_predictor("ftp://host/x"), UsageError,
            "is not a server URL; give one such as http://127.0.0.1:8080"),
    ApiCase("serve-api-client-concurrency", lambda ws, t: _http_predictor("http://127.0.0.1:1", concurrency=0),
            UsageError, "concurrency=0"),
    ApiCase("serve-api-client-server-down",
            lambda ws, t: _http_predictor(f"http://127.0.0.1:{_closed_port()}").predict(b"x"), BackendError,
            "is the server running"),
    ApiCase("serve-api-answer-not-json", lambda ws, t: _parse(b"<html>502 Bad Gateway</html>"), BackendError,
            "http://127.0.0.1:8080 answered with a body that is not JSON"),
    ApiCase("serve-api-answer-not-a-list", lambda ws, t: _parse(b'{"prediction": [0.5]}'), BackendError,
            "expected a list of one score per class"),
    ApiCase("serve-api-answer-strings", lambda ws, t: _parse(b'["0.5", "0.2"]'), BackendError,
            "score 0 is '0.5', not a number"),
    ApiCase("serve-api-answer-nan", lambda ws, t: _parse(b'[0.5, NaN]'), BackendError,
            "score 1 is nan, not a finite number"),
]


# an s3:// model that cannot be had: the S3 error names the URI and the fix, before any port is bound
S3_CASES = [
    CliCase("serve-cli-s3-missing-object",
            lambda ws, t: ["serve", "s3://models/job/output/nope.tar.gz", "--cache-dir", str(t / "cache"), "--port",
                           "0"], 1, "s3://models/job/output/nope.tar.gz"),
    CliCase("serve-cli-s3-missing-bucket",
            lambda ws, t: ["serve", "s3://no-such-bucket/model.tar.gz", "--cache-dir", str(t / "cache"), "--port",
                           "0"], 1, "s3://no-such-bucket/model.tar.gz"),
    CliCase("serve-cli-s3-folder",
            lambda ws, t: ["serve", "s3://models/job/output/", "--cache-dir", str(t / "cache"), "--port", "0"], 2,
            "names a folder, not an object"),
    CliCase("serve-cli-s3-no-bucket", lambda ws, t: ["serve", "s3:///model.tar.gz", "--port", "0"], 2,
            "names no bucket"),
]


@pytest.mark.parametrize("case", S3_CASES, ids=[c.id for c in S3_CASES])
def test_s3_case(case, ws, tmp_path, capsys, aws):
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="models")
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path)
