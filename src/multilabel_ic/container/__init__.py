"""The project's engine inside SageMaker's PyTorch training container: the container contract (:mod:`.contract`, no
framework imports) and the job's entry point (:mod:`.entry`, ``python -m multilabel_ic.container``)."""

from __future__ import annotations

__all__: list[str] = []
