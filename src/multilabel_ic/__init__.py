"""multilabel_ic: multi-label image classification with the SageMaker built-in Image Classification algorithm,
run on SageMaker or re-implemented locally in PyTorch, behind one API.

    from multilabel_ic import Dataset, Hyperparameters, Trainer, Predictor, Tuner
"""

from . import _pixel_limit  # noqa: F401  first: sets OpenCV's pixel limit before anything loads cv2
from ._version import __version__  # noqa: E402
from .api import Backend, Model, Predictor, Trainer
from .data.dataset import Dataset
from .exceptions import (
    AccuracyGateError,
    ArtifactError,
    BackendError,
    DataError,
    DownloadError,
    HyperparameterError,
    ImageDecodeError,
    MissingDependencyError,
    MultilabelICError,
    OutputError,
    RunConflictError,
    TrainingError,
    UsageError,
)
from .hyperparameters import Hyperparameters
from .logs import setup_logging
from .tune import Tuner, TuningResult

__all__ = [
    "Dataset",
    "Hyperparameters",
    "Trainer",
    "Model",
    "Predictor",
    "Backend",
    "Tuner",
    "TuningResult",
    "setup_logging",
    "MultilabelICError",
    "UsageError",
    "OutputError",
    "RunConflictError",
    "HyperparameterError",
    "DataError",
    "ImageDecodeError",
    "DownloadError",
    "MissingDependencyError",
    "ArtifactError",
    "AccuracyGateError",
    "TrainingError",
    "BackendError",
    "__version__",
]
