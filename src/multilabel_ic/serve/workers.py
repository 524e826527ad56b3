"""Several server processes on one port (``serve --workers W``): uvicorn's supervisor starts W worker processes on the
socket the parent bound; each builds the app from the import string ``multilabel_ic.serve.workers:worker_app`` (an
app factory) and so loads its own model and runs its own batcher. ``GET /ping`` holds per worker: a worker answers
200 once its own model is loaded, 503 before (the kernel hands each connection to one worker).

The settings reach the workers in one environment variable (JSON). A worker that cannot load the model writes its
error to a file the parent named and exits with uvicorn's start-up failure status; the parent then stops the other
workers and raises that error (the same class and message as with one process). On SIGTERM the parent asks every
worker to drain its requests in flight, waits for them and returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import exceptions
from .._io import atomic_write_text
from ..exceptions import BackendError, UsageError
from .protocol import bind, make_config, server_logging

__all__ = ["serve_workers", "worker_app", "SETTINGS_ENV"]

log = logging.getLogger("multilabel_ic.serve")
SETTINGS_ENV = "MULTILABEL_IC_SERVE_WORKER"
_STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: the supervisor stops instead of restarting the worker


def worker_app() -> Any:
    """The app of one worker process, from the settings the parent put in ``$MULTILABEL_IC_SERVE_WORKER``."""
    from ..logs import setup_logging
    from .app import create_app

    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise UsageError(f"${SETTINGS_ENV} is not set: worker_app is the app factory of 'multilabel-ic serve "
                         f"--workers'; use create_app(model) to build an app yourself.")
    settings = json.loads(raw)
    setup_logging(settings.pop("log_level").upper())
    error_file = Path(settings.pop("error_file"))

    def load_failed(exc: BaseException) -> None:
        with contextlib.suppress(OSError):
            if not error_file.exists():
                atomic_write_text(error_file, json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        logging.shutdown()
        os._exit(_STARTUP_FAILURE)  # the model cannot be served: the supervisor stops the others

    return create_app(settings.pop("model"), on_load_error=load_failed, **settings)


def _load_error(error_file: Path) -> BaseException | None:
    if not error_file.exists():
        return None
    try:
        found = json.loads(error_file.read_text(encoding="utf-8"))
        kind, message = str(found["type"]), str(found["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return BackendError("a server worker could not load the model; its log lines above say why.")
    cls = getattr(exceptions, kind, None)
    if isinstance(cls, type) and issubclass(cls, exceptions.MultilabelICError):
        with contextlib.suppress(Exception):  # a class whose constructor takes more than the message
            return cls(message)
    return BackendError(f"a server worker could not load the model ({kind}: {message}).")


@contextlib.contextmanager
def _signals_restored() -> Iterator[None]:
    """uvicorn's supervisor installs its own signal handlers for good: put the previous ones back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def serve_workers(model: Any, *, workers: int, host: str, port: int, log_level: str, graceful_timeout_s: float | None,
                  header_timeout_s: float, cache_dir: str | os.PathLike | None, app_settings: dict[str, Any],
                  on_listening: Callable[[str, int], None] | None = None) -> None:
    """Serve ``model`` with ``workers`` processes; see :func:`multilabel_ic.serve.serve`."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    from .model_source import local_model

    if not isinstance(model, (str, os.PathLike)):
        raise UsageError(f"workers={workers}: each worker process loads the model itself; give the path or s3:// URI "
                         f"of a model.tar.gz, not {type(model).__name__}.")
    from ..model.predictor import RUNTIMES

    if app_settings["runtime"] not in RUNTIMES:
        raise UsageError(f"runtime={app_settings['runtime']!r} is not one of {', '.join(RUNTIMES)}.")
    path = Path(local_model(model, cache_dir))  # an s3:// model is downloaded once, here, not by every worker
    if not path.is_file():
        raise UsageError(f"{path}: no such model.tar.gz; give the path of a trained model's artifact.")
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    with tempfile.TemporaryDirectory(prefix="multilabel-ic-serve-") as tmp:
        error_file = Path(tmp) / "load-error.json"
        settings = {**app_settings, "model": str(path.resolve()), "log_level": log_level,
                    "error_file": str(error_file)}
        config = make_config("multilabel_ic.serve.workers:worker_app", factory=True, workers=workers,
                             log_level=log_level, graceful_timeout_s=graceful_timeout_s,
                             header_timeout_s=header_timeout_s)

        class Supervisor(Multiprocess):
            def keep_subprocess_alive(self) -> None:
                if error_file.exists():  # a worker could not load the model: stop, do not restart it
                    self.should_exit.set()
                    return
                super().keep_subprocess_alive()

        previous = os.environ.get(SETTINGS_ENV)
        os.environ[SETTINGS_ENV] = json.dumps(settings)  # the spawned workers inherit it
        try:
            with server_logging(log_level), _signals_restored():
                log.info("listening on http://%s:%d with %d worker processes (GET /ping, POST /invocations); "
                         "SIGTERM or Ctrl-C stops it", bound_host, bound_port, workers)
                if on_listening is not None:
                    on_listening(bound_host, bound_port)
                Supervisor(config, sockets=[sock]).run()
        finally:
            sock.close()
            if previous is None:
                os.environ.pop(SETTINGS_ENV, None)
            else:
                os.environ[SETTINGS_ENV] = previous
        failure = _load_error(error_file)
    if failure is not None:
        raise failure
