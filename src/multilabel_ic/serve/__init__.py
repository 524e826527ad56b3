"""The model behind HTTP, with the SageMaker inference container contract of the built-in algorithm: ``GET /ping``,
``POST /invocations`` (JPEG/PNG in, the JSON list of class probabilities out), port 8080, 6 MB bodies; concurrent
requests run through the network as one batch; ``GET /metrics`` for Prometheus; ``workers`` processes on one port.
docs/serve.md has the contract, its sources and the figures.

    from multilabel_ic.serve import serve, create_app, HttpPredictor
    serve("run/model.tar.gz", port=8080)                  # blocks; SIGTERM drains and returns
    app = create_app("run/model.tar.gz", max_batch=16)    # an ASGI app, for uvicorn or another ASGI server
    HttpPredictor("http://127.0.0.1:8080").predict(jpeg_bytes)

The server needs the ``serve`` extra (uvicorn, Starlette, prometheus_client): ``pip install 'multilabel-ic[serve]'``;
importing this package does not, and :class:`HttpPredictor` (the client) never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import HttpPredictor, is_url
from .contract import ACCEPT_TYPES, CONTENT_TYPES, DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES

if TYPE_CHECKING:
    from .app import create_app
    from .server import serve

__all__ = ["serve", "create_app", "HttpPredictor", "is_url", "CONTENT_TYPES", "ACCEPT_TYPES", "MAX_BODY_BYTES",
           "DEFAULT_PORT", "DEFAULT_HOST"]


def __getattr__(name: str) -> Any:
    # the server stack is imported on first use, so a missing extra fails there with the pip line
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
