"""The library's exceptions: one small hierarchy, so callers can catch one type per concern.

    MultilabelICError
    ├── UsageError               a wrong argument or option of an API call or command (also a ValueError; CLI exit 2)
    ├── HyperparameterError      a hyperparameter value or combination the algorithm rejects (also a ValueError)
    ├── DataError                a malformed .lst / RecordIO / manifest / COCO file or image (also a ValueError)
    │   └── ImageDecodeError     a missing, truncated or non-image file
    ├── DownloadError            a download failed or its checksum did not match
    ├── MissingDependencyError   an optional package is absent; the message has the exact pip line (ImportError)
    ├── ArtifactError            a model.tar.gz / .params file that cannot be read or does not fit the network
    ├── OutputError              a file or folder that cannot be written (not writable, disk full; also an OSError)
    ├── TrainingError            a local or SageMaker training run failed
    │   └── RunConflictError     an output folder that holds another run, or that another process is using
    └── BackendError             a SageMaker / AWS call failed (the boto3 error is kept as __cause__)

Errors from boto3, torch and OpenCV are translated at the boundary with ``raise ... from exc``. Every error a user can
cause is one of these; the command line prints it in one line and exits 2 for usage errors (``UsageError``,
``HyperparameterError``) and 1 for the others.
"""

from __future__ import annotations

__all__ = [
    "MultilabelICError",
    "UsageError",
    "OutputError",
    "AccuracyGateError",
    "RunConflictError",
    "HyperparameterError",
    "DataError",
    "ImageDecodeError",
    "DownloadError",
    "MissingDependencyError",
    "ArtifactError",
    "TrainingError",
    "BackendError",
    "require",
]


class MultilabelICError(Exception):
    """Base class of every error this library raises on purpose."""


class UsageError(MultilabelICError, ValueError):
    """A wrong argument of an API call or a command-line option; the message names the parameter and the fix."""


class HyperparameterError(MultilabelICError, ValueError):
    """A hyperparameter value, or a combination of them, that the built-in algorithm does not accept."""

    def __init__(self, message: str, *, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class DataError(MultilabelICError, ValueError):
    """A data file that cannot be used, with the file (and line) in the message."""


class ImageDecodeError(DataError):
    """An image file that is missing, truncated or not an image."""


class DownloadError(MultilabelICError):
    """A download that failed, or whose checksum did not match."""


class MissingDependencyError(MultilabelICError, ImportError):
    """An optional dependency is not installed; the message says which pip command installs it."""


class ArtifactError(MultilabelICError):
    """A model artifact that cannot be read or does not match the network it is loaded into."""


class AccuracyGateError(MultilabelICError):
    """A low-precision model that loses more accuracy against float32 than its export allows. ``gate``: the gate's
    figures; ``other_runtime``: for int8, the first other int8 model of the same calibration that passes the gate on
    the same images, else the last one tried (``{"format", "quantizer", "gate", "tried"}``; ``tried``: those that
    failed before it), or None."""

    gate: dict | None = None
    other_runtime: dict | None = None


class OutputError(MultilabelICError, OSError):
    """A file or folder that cannot be written: not writable, a file where a folder is needed, or a full disk."""


class TrainingError(MultilabelICError):
    """A training run that failed (locally or as a SageMaker job)."""

    def __init__(self, message: str, *, job_name: str | None = None, status: str | None = None,
                 failure_reason: str | None = None):
        super().__init__(message)
        self.job_name = job_name
        self.status = status
        self.failure_reason = failure_reason


class RunConflictError(TrainingError):
    """An output folder that holds a run of other data or settings, or that another process is training into."""


class BackendError(MultilabelICError):
    """An AWS / SageMaker call that failed; the original botocore error is ``__cause__``."""


def require(module: str, *, extra: str, package: str | None = None):
    """Import an optional module, or fail with the exact pip line that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{pkg!r} is needed for this feature but is not installed. "
            f"Install it with: pip install 'multilabel-ic[{extra}]'"
        ) from exc
