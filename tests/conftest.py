"""Shared fixtures: a small synthetic COCO-format dataset generated once per session."""

from __future__ import annotations

import http.server
import logging
import os
import signal
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from multilabel_ic.data import COCO5, Dataset, generate_coco

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core) each worker computes on one thread, and so do the
    processes a test starts (they inherit the variable): a thread per core in every worker would oversubscribe the
    cores and make the suite slower, not faster."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    ann, images = generate_coco(root, num_images=120, seed=3)
    return ann, images


@pytest.fixture(scope="session")
def coco5(synthetic_coco) -> Dataset:
    ann, images = synthetic_coco
    return Dataset.from_coco(ann, images=images, categories=COCO5)


@pytest.fixture(scope="session")
def synthetic_coco_200(tmp_path_factory):
    """Enough images for the MS-COCO example's mini_batch_size=128 (SageMaker requests; nothing trains on it)."""
    root = tmp_path_factory.mktemp("synthetic200")
    return generate_coco(root, num_images=200, seed=5)


@pytest.fixture(scope="session")
def coco5_200(synthetic_coco_200) -> Dataset:
    ann, images = synthetic_coco_200
    return Dataset.from_coco(ann, images=images, categories=COCO5)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    """The library's INFO lines in caplog, and its logger's handlers as they were after each test: a test that runs
    the CLI (``setup_logging``) binds one to that test's captured stderr, which is closed once the test ends, and a
    server thread that outlives the test would log into it."""
    logger = logging.getLogger("multilabel_ic")
    saved = logger.handlers[:], logger.propagate
    caplog.set_level(logging.INFO, logger="multilabel_ic")
    yield
    logger.handlers[:], logger.propagate = saved


@pytest.fixture(scope="session")
def moto_server():
    from moto_support import MotoServer

    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture()
def aws(moto_server, monkeypatch):
    """Environment pointing every boto3 client at the moto server, with fresh state."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


@pytest.fixture()
def server(tmp_path):
    """An HTTP server on 127.0.0.1 with Range, ETag and If-Range support: (server, base URL, folder it serves)."""
    from http_support import RangeHandler

    root = tmp_path / "srv"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    httpd.root = root
    RangeHandler.requests = []
    RangeHandler.cut_once = set()
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


@pytest.fixture(scope="module")
def ws(tmp_path_factory, coco5):
    """The failure catalog's workspace of good inputs (``catalog_support.Workspace``), one per test module."""
    from catalog_support import Workspace

    return Workspace(tmp_path_factory.mktemp("catalog"), coco5)


HANG_LIMIT_S = 60


@pytest.fixture()
def no_hang():
    """A read that blocks (a FIFO opened for reading waits for a writer) fails the test instead of hanging it."""

    def hung(signum, frame):
        raise TimeoutError(f"still running after {HANG_LIMIT_S} s: a read blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def nothing_trains(monkeypatch):
    """Fails the test if the local backend trains anything: for cases that must fail before a trial or run trains."""
    from multilabel_ic.backends.local import LocalBackend

    runs: list = []
    monkeypatch.setattr(LocalBackend, "fit", lambda self, hp, *a, **k: runs.append(hp) or pytest.fail("a trial trained"))
    yield
    assert runs == [], "a case trained a trial before failing"
