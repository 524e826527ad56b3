"""The server's behaviour: the same probabilities as the in-process predictor and the SageMaker endpoint predictor,
concurrent requests batched, /ping 503 until the model is loaded, access log lines, SIGTERM draining the requests in
flight and exiting 0, predict/evaluate --endpoint URL, and the serve extra kept out of the core."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from catalog_support import Workspace
from serve_support import AccessLines, ServerThread, exchange, read_answer, request

from multilabel_ic.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def served(ws: Workspace):
    server = ServerThread(ws.model, max_delay_ms=50, max_batch=8)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local(ws: Workspace):
    from multilabel_ic.model.predictor import LocalPredictor

    return LocalPredictor(ws.model, device="cpu")


def _images(ws: Workspace, n: int = 12) -> list[bytes]:
    return [(ws.images / p).read_bytes() for p in ws.data.paths[:n]]


def _post(body: bytes, **headers: str) -> bytes:
    return request("POST", "/invocations", body, {"Content-Type": "image/jpeg", **headers})


def test_server_local_and_endpoint_predictors_agree(served, ws, local, aws):
    """The same images through the server (HttpPredictor), in process (LocalPredictor), and through the SageMaker
    endpoint predictor fed the server's own answer bytes (moto's result queue): the same probabilities."""
    import requests

    from multilabel_ic.backends.sagemaker import SageMakerBackend
    from multilabel_ic.backends.sagemaker.endpoint import SageMakerPredictor
    from multilabel_ic.serve import HttpPredictor

    images = _images(ws)
    want = np.asarray(local.predict_batch(images))
    client = HttpPredictor(served.url)
    assert client.class_names == local.class_names  # from GET /metadata
    got = np.asarray(client.predict_batch(images))
    assert np.abs(got - want).max() <= 1e-6

    bodies = [exchange(served.port, _post(img, Accept="application/json")).body for img in images[:3]]
    results = [{"Body": b.decode(), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic",
                "CustomAttributes": ""} for b in bodies]
    requests.post(f"{aws.url}/moto-api/static/sagemaker/endpoint-results",
                  json={"region": "us-east-1", "results": results}, timeout=10).raise_for_status()
    endpoint = SageMakerPredictor(SageMakerBackend(role="arn:aws:iam::1:role/R", bucket="b", region="us-east-1"),
                                  "ep", class_names=local.class_names)
    via_endpoint = np.asarray([endpoint.predict(img) for img in images[:3]])
    assert np.abs(via_endpoint - want[:3]).max() <= 1e-6


def test_concurrent_requests_run_as_one_batch(served, ws, local):
    images = _images(ws, 8)
    want = local.predict_batch(images)
    barrier = threading.Barrier(len(images))

    def one(img: bytes):
        barrier.wait()
        return exchange(served.port, _post(img))

    with AccessLines() as log, ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(one, images))
        lines = log.wait_for(lambda line: len(log.lines) >= len(images))
    assert all(a.status == 200 for a in answers)
    assert np.abs(np.asarray([a.json() for a in answers]) - np.asarray(want)).max() <= 1e-6
    sizes = [line["batch_size"] for line in lines if line["path"] == "/invocations"]
    assert len(sizes) == len(images) and max(sizes) > 1, sizes
    assert all(set(line) >= {"request_id", "method", "path", "status", "latency_ms", "batch_size"} for line in lines)
    # a lone request does not wait for company (max_delay_ms=50 here): it runs at once, in a batch of 1
    with AccessLines() as log:
        assert exchange(served.port, _post(images[0])).status == 200
        assert log.wait_for(lambda line: True)[0]["batch_size"] == 1


def _server_side_of(client: socket.socket) -> socket.socket:
    """The server's end of ``client``'s connection (the server runs in this process): found among its open files."""
    want = (client.getpeername(), client.getsockname())
    for fd in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:  # not a socket, or closed meanwhile
            continue
        try:
            if sock.type == socket.SOCK_STREAM and (sock.getsockname(), sock.getpeername()) == want:
                return sock
        except OSError:  # a listening or unconnected socket
            pass
        sock.close()
    raise AssertionError("the server's end of the connection is not among this process's sockets")


@pytest.mark.parametrize("listener", ["bind", "plain socket"])
def test_answers_go_out_without_waiting_for_the_clients_ack(ws, listener):
    """Each connection the server accepts has TCP_NODELAY, whatever made its listening socket (``bind``, or a plain
    ``socket.socket(AF_INET, SOCK_STREAM)`` such as one a supervisor passes on): without it an answer's body, written
    after its headers, waits for the client's delayed ACK, about 40 ms a request on Linux."""
    sock = None
    if listener == "plain socket":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    server = ServerThread(ws.model, sock=sock)
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(request("GET", "/ping"))
            assert read_answer(client).status == 200
            with _server_side_of(client) as accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.stop()


def test_request_id_is_echoed_and_logged(served, ws):
    with AccessLines() as log:
        answer = exchange(served.port, _post(_images(ws, 1)[0], **{"X-Request-Id": "abc-123"}))
        assert answer.status == 200 and answer.headers["x-request-id"] == "abc-123"
        log.wait_for(lambda line: line["request_id"] == "abc-123" and line["status"] == 200)
    bad = exchange(served.port, _post(b"nope", **{"X-Request-Id": "x" * 500}))  # not a plain token: one of ours
    assert bad.status == 400 and len(bad.headers["x-request-id"]) == 16
    assert bad.json()["request_id"] == bad.headers["x-request-id"]


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    """``GET /metrics`` parsed: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = exchange(port, request("GET", "/metrics"))
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.body.decode()) for sample in family.samples}


def test_metrics_count_answers_latency_batches_and_in_flight(served, ws):
    images = _images(ws, 6)
    before = _metrics(served.port)

    def count(m, name, **labels):
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    barrier = threading.Barrier(len(images))

    def one(img: bytes):
        barrier.wait()
        return exchange(served.port, _post(img))

    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(one, images))
    assert [a.status for a in answers] == [200] * len(images)
    assert exchange(served.port, _post(b"not an image")).status == 400
    assert exchange(served.port, _post(images[0], Accept="text/csv")).status == 406
    assert exchange(served.port, request("GET", "/no/such/path/1")).status == 404
    assert exchange(served.port, request("GET", "/no/such/path/2")).status == 404
    after = _metrics(served.port)

    name = "multilabel_ic_serve_requests_total"
    for status, n in (("200", len(images)), ("400", 1), ("406", 1)):
        assert count(after, name, path="/invocations", status=status) - \
            count(before, name, path="/invocations", status=status) == n, status
    assert count(after, name, path="other", status="404") - count(before, name, path="other", status="404") == 2
    assert not any("/no/such" in str(labels) for _, labels in after)  # unknown paths share one series
    hist = "multilabel_ic_serve_request_seconds_count"
    assert count(after, hist, path="/invocations") - count(before, hist, path="/invocations") == len(images) + 2
    # the batch histogram saw every image that went through the network, in fewer batches than images
    images_run = count(after, "multilabel_ic_serve_batch_size_sum") - count(before, "multilabel_ic_serve_batch_size_sum")
    batches = count(after, "multilabel_ic_serve_batch_size_count") - count(before, "multilabel_ic_serve_batch_size_count")
    assert images_run == len(images) and 1 <= batches < len(images)
    assert count(after, "multilabel_ic_serve_in_flight_requests") == 1  # the /metrics request itself
    assert count(after, "multilabel_ic_serve_model_loaded") == 1


def test_ping_is_503_until_the_model_is_loaded(ws):
    from multilabel_ic.model.predictor import LocalPredictor

    release = threading.Event()

    def slow_load():
        release.wait(10)
        return LocalPredictor(ws.model, device="cpu")

    server = ServerThread(slow_load)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = exchange(server.port, request("GET", "/ping"))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert answer.status == 503 and "still loading" in answer.json()["error"]
        assert _metrics(server.port)[("multilabel_ic_serve_model_loaded", ())] == 0
        early = exchange(server.port, _post(_images(ws, 1)[0]))
        assert early.status == 503 and early.headers["retry-after"] == "1"
        release.set()
        server.wait_ready()
        assert exchange(server.port, request("GET", "/ping")).body == b""
        assert exchange(server.port, _post(_images(ws, 1)[0])).status == 200
    finally:
        release.set()
        server.stop()


def test_the_model_is_loaded_on_the_thread_that_runs_its_batches(ws):
    """One thread does all the network's work: a second thread that had run torch's parallel operations (loading
    does) would give the process a second OpenMP team, and every forward would then pay ~160 sleeps and wake-ups."""
    from multilabel_ic.model.predictor import LocalPredictor

    threads: dict[str, set[int]] = {"load": set(), "batch": set()}

    def load():
        threads["load"].add(threading.get_ident())
        predictor = LocalPredictor(ws.model, device="cpu")
        run_batch = predictor.run_batch

        def recording_run_batch(arrays):
            threads["batch"].add(threading.get_ident())
            return run_batch(arrays)

        predictor.run_batch = recording_run_batch
        return predictor

    server = ServerThread(load)
    try:
        server.wait_ready()
        for image in _images(ws, 3):
            assert exchange(server.port, _post(image)).status == 200
    finally:
        server.stop()
    assert len(threads["batch"]) == 1 and threads["batch"] == threads["load"], threads
    assert threading.get_ident() not in threads["load"]


@pytest.fixture
def restore_logging():
    """The CLI points the library's log handler at this test's captured stderr: put the handlers back after it."""
    logger = logging.getLogger("multilabel_ic")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_cli_predict_and_evaluate_take_a_server_url(served, ws, tmp_path, capsys, restore_logging):
    image = str(ws.images / ws.data.paths[0])
    assert main(["predict", "--model", str(ws.model), image]) == 0
    here = capsys.readouterr().out
    assert main(["predict", "--endpoint", served.url, image]) == 0
    assert capsys.readouterr().out == here
    assert main(["evaluate", "--model", str(ws.model), "--lst", str(ws.lst), "--images", str(ws.images),
                 "--output", str(tmp_path / "local.json")]) == 0
    assert main(["evaluate", "--endpoint", served.url, "--lst", str(ws.lst), "--images", str(ws.images),
                 "--output", str(tmp_path / "served.json")]) == 0
    capsys.readouterr()
    local_metrics = json.loads((tmp_path / "local.json").read_text())
    served_metrics = json.loads((tmp_path / "served.json").read_text())
    assert served_metrics["mAP"] == pytest.approx(local_metrics["mAP"], abs=1e-6)
    assert served_metrics["per_class_AP"] == pytest.approx(local_metrics["per_class_AP"], abs=1e-6)


def test_http_predictor_names_the_image_the_server_refused(served, ws, tmp_path):
    from multilabel_ic import ImageDecodeError
    from multilabel_ic.serve import HttpPredictor

    client = HttpPredictor(served.url)
    with pytest.raises(ImageDecodeError, match=r"^bad\.jpg: http://127\.0\.0\.1:\d+ refused it: the request body: "
                                               r"not a decodable image"):
        client.predict_batch([_images(ws, 1)[0], b"not an image"], sources=["good.jpg", "bad.jpg"])


@contextlib.contextmanager
def _cli_server(*args: str) -> Iterator[tuple[subprocess.Popen, int, list[str]]]:
    """``multilabel-ic serve ... --port 0`` in a child process: (process, its port, its log lines so far); killed if
    it is still running when the block ends."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "multilabel_ic", "serve", *args, "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        lines: list[str] = []
        while port is None:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "listening on http://" in line:
                port = int(line.split("listening on http://")[1].split()[0].rsplit(":", 1)[1])
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_sigterm_drains_the_request_in_flight_and_exits_0(ws, tmp_path):
    with _cli_server(str(ws.model)) as (proc, port, lines):
        deadline = time.monotonic() + 30
        while exchange(port, request("GET", "/ping")).status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        import socket

        image = _images(ws, 1)[0]
        raw = _post(image)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(raw[:-50])  # in flight: the body is not all there yet
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(raw[-50:])
        answer = read_answer(sock)
        sock.close()
        assert answer.status == 200 and len(answer.json()) == 5
        assert proc.wait(timeout=30) == 0
        err = "".join(lines) + proc.stderr.read()
        assert "Traceback" not in err, err


def test_an_s3_model_is_downloaded_once_per_version_and_served(ws, local, aws, tmp_path, monkeypatch):
    import boto3

    from multilabel_ic.backends.sagemaker import s3 as s3_module
    from multilabel_ic.serve.model_source import fetch_model

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="models")
    client.put_object(Bucket="models", Key="job/output/model.tar.gz", Body=ws.model.read_bytes())
    uri, cache = "s3://models/job/output/model.tar.gz", tmp_path / "cache"

    images = _images(ws, 3)
    server = ServerThread(uri, cache_dir=cache)  # downloaded while /ping answers 503, then served
    try:
        server.wait_ready()
        got = [exchange(server.port, _post(img)).json() for img in images]
    finally:
        server.stop()
    assert np.abs(np.asarray(got) - np.asarray(local.predict_batch(images))).max() <= 1e-6
    [copy] = cache.glob("*/model.tar.gz")
    assert copy.read_bytes() == ws.model.read_bytes()

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again")

    with monkeypatch.context() as m:  # the same version: read from the cache
        m.setattr(s3_module, "download_file", no_download)
        assert fetch_model(uri, cache) == copy
    client.put_object(Bucket="models", Key="job/output/model.tar.gz", Body=b"another version")
    newer = fetch_model(uri, cache)  # a changed object (another ETag): downloaded beside the old one
    assert newer != copy and newer.read_bytes() == b"another version" and copy.exists()
    assert not [p for p in cache.rglob("*") if p.name.startswith(".")]  # no partial download left


def test_workers_each_load_the_model_answer_alike_and_drain_on_sigterm(ws, local):
    """--workers 2: two processes on the one port, each answering /ping for its own model and the same
    probabilities; SIGTERM to the parent stops both and exits 0."""
    images = _images(ws, 4)
    want = np.asarray(local.predict_batch(images))
    with _cli_server(str(ws.model), "--workers", "2") as (proc, port, lines):
        pids: set[int] = set()
        deadline = time.monotonic() + 240  # a worker starting on a loaded machine (a whole suite beside it) is slow

        def metadata(_):
            try:
                return exchange(port, request("GET", "/metadata"))
            except OSError:
                return None

        with ThreadPoolExecutor(4) as pool:
            while len(pids) < 2:  # the kernel hands each new connection to one of the workers: ask a few at once
                assert time.monotonic() < deadline and proc.poll() is None, (pids, "".join(lines))
                for answer in filter(None, pool.map(metadata, range(4))):
                    if answer.status == 200:
                        pids.add(answer.json()["pid"])
                    else:
                        assert answer.status == 503 and "still loading" in answer.json()["error"]
                time.sleep(0.05)
        assert proc.pid not in pids
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda img: exchange(port, _post(img)), images * 4))
        assert all(a.status == 200 for a in got)
        assert np.abs(np.asarray([a.json() for a in got]) - np.tile(want, (4, 1))).max() <= 1e-6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        err = "".join(lines) + proc.stderr.read()
        assert "Traceback" not in err, err


_WITHOUT_SERVE_EXTRA = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = {"starlette", "uvicorn", "prometheus_client"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    import multilabel_ic.serve
    from multilabel_ic.serve import HttpPredictor
    from multilabel_ic import MissingDependencyError
    # the whole extra missing, then each of its packages missing alone; the ASGI app runs under any ASGI server, so it does without uvicorn
    NEEDS = {"create_app": {"starlette", "prometheus_client"}, "serve": {"starlette", "prometheus_client", "uvicorn"}}
    for missing in (set(BLOCKED), {"starlette"}, {"prometheus_client"}, {"uvicorn"}):
        BLOCKED.clear()
        BLOCKED.update(missing)
        for module in [m for m in sys.modules if m.split(".")[0] in NEEDS["serve"]
                       or (m.startswith("multilabel_ic.serve.") and m != "multilabel_ic.serve.client")]:
            del sys.modules[module]  # each case imports afresh
        for name in [name for name, needs in NEEDS.items() if needs & missing]:
            try:
                getattr(multilabel_ic.serve, name)
            except MissingDependencyError as exc:
                assert "pip install 'multilabel-ic[serve]'" in str(exc), exc
            else:
                raise AssertionError(f"{name} without {missing}")
    from multilabel_ic.cli import main
    sys.exit(main(["serve", sys.argv[1], "--port", "0"]))
""")


def test_without_the_serve_extra_the_client_works_and_serve_names_the_pip_line(ws):
    """Without any one of the serve extra's packages, create_app, serve and the CLI name the pip line."""
    result = subprocess.run([sys.executable, "-c", _WITHOUT_SERVE_EXTRA, str(ws.model)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC})
    assert result.returncode == 1, result.stderr
    assert "is needed for this feature but is not installed. Install it with: pip install 'multilabel-ic[serve]'" \
        in result.stderr and "Traceback" not in result.stderr


def test_the_core_and_the_cli_do_not_import_the_server_stack():
    code = ("import sys, multilabel_ic, multilabel_ic.cli, multilabel_ic.serve; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert result.stdout.strip() == "[]", result.stderr
