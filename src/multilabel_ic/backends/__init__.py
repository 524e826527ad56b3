"""Training backends: ``local`` (PyTorch re-implementation) and ``sagemaker`` (the real built-in algorithm).

A backend never imports another backend; the API imports a backend only when it is used. :data:`BACKENDS` is the
one table of their names: the API (``Trainer(backend=...)``), the command line (``--backend``) and the run file
(``backend = ...``) read it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BACKENDS", "backend_class"]

# name -> (module under multilabel_ic.backends, class); adding a backend: docs/extending.md
BACKENDS: dict[str, tuple[str, str]] = {"local": ("local", "LocalBackend"), "sagemaker": ("sagemaker", "SageMakerBackend")}


def backend_class(name: str) -> Any:
    """The backend class of ``name`` (imported now: a backend's optional dependencies are needed only when used)."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
