"""Logging set-up in the algorithm's CloudWatch line format: ``[MM/DD/YYYY HH:MM:SS INFO <thread>] message``.

The library only emits records on the ``multilabel_ic`` logger; call :func:`setup_logging` (the CLI does) to see them.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging", "AlgorithmFormatter"]


class AlgorithmFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%m/%d/%Y %H:%M:%S", time.localtime(record.created))
        return f"[{stamp} {record.levelname} {record.thread}] {record.getMessage()}"


def setup_logging(level: int | str = logging.INFO, stream=None) -> logging.Logger:
    """Send the library's log lines (epoch metrics, decisions, warnings) to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(AlgorithmFormatter())
    logger = logging.getLogger("multilabel_ic")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger
