"""Hyperparameter tuning on both backends: one search space, a local Optuna study or a SageMaker tuning job.

    from multilabel_ic.tune import Tuner, ContinuousRange, IntegerRange, CategoricalRange

See docs/lifecycle.md. The local study needs the ``tune`` extra (Optuna).
"""

from .space import AWS_RECOMMENDED, CategoricalRange, ContinuousRange, IntegerRange, SearchSpace
from .tuner import Tuner, TuningResult

__all__ = ["Tuner", "TuningResult", "SearchSpace", "IntegerRange", "ContinuousRange", "CategoricalRange",
           "AWS_RECOMMENDED"]
