"""The built-in algorithm's hyperparameters as one validated, immutable value object.

Names, types, defaults and ranges follow the SageMaker Image Classification documentation (docs/hyperparameters.md).
Validation is declarative: every field has one constraint row, and cross-field rules live in one function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import HyperparameterError
from .rules import Rule, check_options, coerce, fail
from .rules import fmt as _fmt  # noqa: F401  (tune.space formats ranges with it)

__all__ = ["Hyperparameters", "Rule", "check_options", "LARGE_DEPTHS", "SMALL_DEPTHS", "AUGMENTATION_TYPES",
           "OPTIMIZERS"]

LARGE_DEPTHS = (18, 34, 50, 101, 152, 200)
SMALL_DEPTHS = (20, 32, 44, 56, 110)
AUGMENTATION_TYPES = ("crop", "crop_color", "crop_color_transform")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "nag")


# One row per hyperparameter (AWS docs: Image Classification hyperparameters).
RULES: dict[str, Rule] = {
    "num_classes": Rule("int", low=1, required=True),
    "num_training_samples": Rule("int", low=1, required=True),
    "augmentation_type": Rule("choice", choices=AUGMENTATION_TYPES, nullable=True),
    "beta_1": Rule("float", low=0, high=1),
    "beta_2": Rule("float", low=0, high=1),
    "checkpoint_frequency": Rule("int", low=1, nullable=True),
    "early_stopping": Rule("boolstr"),
    "early_stopping_min_epochs": Rule("int", low=1),
    "early_stopping_patience": Rule("int", low=1),
    "early_stopping_tolerance": Rule("float", low=0, high=1),
    "epochs": Rule("int", low=1),
    "eps": Rule("float", low=0, high=1, low_open=True),
    "gamma": Rule("float", low=0, high=1),
    "image_shape": Rule("image_shape"),
    "kv_store": Rule("choice", choices=("dist_sync", "dist_async"), nullable=True),
    "learning_rate": Rule("float", low=0, high=1, low_open=True),
    "lr_scheduler_factor": Rule("float", low=0, high=1),
    "lr_scheduler_step": Rule("steps", nullable=True),
    "mini_batch_size": Rule("int", low=1),
    "momentum": Rule("float", low=0, high=1),
    "multi_label": Rule("bool01"),
    "num_layers": Rule("choice", choices=LARGE_DEPTHS + SMALL_DEPTHS),
    "optimizer": Rule("choice", choices=OPTIMIZERS),
    "precision_dtype": Rule("choice", choices=("float32", "float16")),
    "resize": Rule("int", low=1, nullable=True),
    "top_k": Rule("int", low=2, nullable=True),
    "use_pretrained_model": Rule("bool01"),
    "use_weighted_loss": Rule("bool01"),
    "weight_decay": Rule("float", low=0, high=1),
}


class _Unset:
    """The default of every ``Hyperparameters`` keyword: the algorithm's own default (see the field list)."""

    def __repr__(self) -> str:
        return "<algorithm default>"


_UNSET: Any = _Unset()


@dataclass(frozen=True, init=False)
class Hyperparameters:
    """Every hyperparameter of the built-in Image Classification algorithm, validated on construction.

    ``Hyperparameters(num_classes=5, num_training_samples=2500, multi_label=1, ...)``: keyword arguments, each with
    its type in the signature and the algorithm's default (the field values below) when left out; SageMaker's string
    values (``epochs="5"``) are accepted too. Invalid values raise :class:`HyperparameterError` naming the parameter,
    what is allowed and what was given. Fields the caller set explicitly are remembered, so :meth:`to_sagemaker`
    sends exactly those (as SageMaker expects) unless asked for all. ``dataclasses.replace(hp, epochs=3)`` and
    ``hp.replace(epochs=3)`` give a validated copy.
    """

    num_classes: int
    num_training_samples: int
    augmentation_type: str | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    checkpoint_frequency: int | None = None
    early_stopping: bool = False
    early_stopping_min_epochs: int = 10
    early_stopping_patience: int = 5
    early_stopping_tolerance: float = 0.0
    epochs: int = 30
    eps: float = 1e-8
    gamma: float = 0.9
    image_shape: str = "3,224,224"
    kv_store: str | None = None
    learning_rate: float = 0.1
    lr_scheduler_factor: float = 0.1
    lr_scheduler_step: str | None = None
    mini_batch_size: int = 32
    momentum: float = 0.9
    multi_label: int = 0
    num_layers: int = 152
    optimizer: str = "sgd"
    precision_dtype: str = "float32"
    resize: int | None = None
    top_k: int | None = None
    use_pretrained_model: int = 0
    use_weighted_loss: int = 0
    weight_decay: float = 0.0001
    _explicit: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __init__(self, *,
                 num_classes: int | str = _UNSET,
                 num_training_samples: int | str = _UNSET,
                 augmentation_type: str | None = _UNSET,
                 beta_1: float | str = _UNSET,
                 beta_2: float | str = _UNSET,
                 checkpoint_frequency: int | str | None = _UNSET,
                 early_stopping: bool | str = _UNSET,
                 early_stopping_min_epochs: int | str = _UNSET,
                 early_stopping_patience: int | str = _UNSET,
                 early_stopping_tolerance: float | str = _UNSET,
                 epochs: int | str = _UNSET,
                 eps: float | str = _UNSET,
                 gamma: float | str = _UNSET,
                 image_shape: str = _UNSET,
                 kv_store: str | None = _UNSET,
                 learning_rate: float | str = _UNSET,
                 lr_scheduler_factor: float | str = _UNSET,
                 lr_scheduler_step: str | None = _UNSET,
                 mini_batch_size: int | str = _UNSET,
                 momentum: float | str = _UNSET,
                 multi_label: int | str = _UNSET,
                 num_layers: int | str = _UNSET,
                 optimizer: str = _UNSET,
                 precision_dtype: str = _UNSET,
                 resize: int | str | None = _UNSET,
                 top_k: int | str | None = _UNSET,
                 use_pretrained_model: int | str = _UNSET,
                 use_weighted_loss: int | str = _UNSET,
                 weight_decay: float | str = _UNSET,
                 _explicit: frozenset | None = None, **unknown: Any):
        # every keyword the caller gave (the sentinel marks the ones left at the algorithm's default)
        given = {name: value for name, value in locals().items() if name in RULES and value is not _UNSET}
        if unknown:
            names = sorted(unknown)
            raise HyperparameterError(
                f"Unknown hyperparameter(s) {', '.join(map(repr, names))}. "
                f"Valid names: {', '.join(sorted(RULES))}.", parameter=names[0])
        for name, rule in RULES.items():
            if rule.required and given.get(name) is None:
                raise HyperparameterError(
                    f"The {name!r} parameter is required: it must be {rule.describe()}.", parameter=name)
        defaults = _defaults()
        for name in RULES:
            value = _coerce(name, given[name]) if name in given else defaults[name]
            object.__setattr__(self, name, value)
        if _explicit is None:  # a plain call: what the caller set
            explicit = {k for k, v in given.items() if v is not None}
        else:  # dataclasses.replace: what was explicit before, and what now differs from the default
            explicit = set(_explicit) | {k for k in RULES if getattr(self, k) != defaults[k]}
        object.__setattr__(self, "_explicit", frozenset(explicit))
        _check_cross_fields(self)

    # ----------------------------------------------------------------- derived values
    @property
    def channels(self) -> int:
        return int(self.image_shape.split(",")[0])

    @property
    def height(self) -> int:
        return int(self.image_shape.split(",")[1])

    @property
    def width(self) -> int:
        return int(self.image_shape.split(",")[2])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the network input: image_shape parsed (it is checked at construction)."""
        c, h, w = (int(v) for v in self.image_shape.split(","))
        return c, h, w

    @property
    def is_multi_label(self) -> bool:
        """The head: sigmoid outputs with a BCE loss (multi_label=1), or the softmax (multi_label=0)."""
        return self.multi_label == 1

    @property
    def lr_steps(self) -> list[int]:
        return [int(s) for s in self.lr_scheduler_step.split(",")] if self.lr_scheduler_step else []

    @property
    def batches_per_epoch(self) -> int:
        """floor(num_training_samples / mini_batch_size): the algorithm drops the remainder every epoch."""
        return self.steps_per_epoch()

    def steps_per_epoch(self, hosts: int = 1, *, schedule: bool = False) -> int:
        """The one home of steps per epoch, with ``hosts`` machines each taking a batch of mini_batch_size per step.

        The epoch trains ``num_training_samples // (hosts x mini_batch_size)`` batches (ImageRecordIter drops the
        remainder). MXNet's LR schedule (``schedule=True``) counts epochs in fit.py's ``epoch_size``,
        ``max(int(num_training_samples / mini_batch_size / hosts), 1)``: the same number whenever an epoch has a
        step, but float division and at least 1 (the rules differ only for an epoch shorter than one batch, which
        training refuses)."""
        if schedule:
            return max(int(self.num_training_samples / self.mini_batch_size / hosts), 1)
        return self.num_training_samples // (hosts * self.mini_batch_size)

    @property
    def explicit(self) -> frozenset:
        """Names of the hyperparameters the caller set (the ones :meth:`to_sagemaker` sends by default)."""
        return self._explicit

    def replace(self, **changes: Any) -> Hyperparameters:
        """A copy with some values changed (validated again)."""
        values = {k: getattr(self, k) for k in self._explicit}
        values.update(changes)
        return Hyperparameters(**values)

    def to_dict(self, *, include_defaults: bool = True) -> dict[str, Any]:
        names = RULES if include_defaults else [n for n in RULES if n in self._explicit]
        return {n: getattr(self, n) for n in names}

    # ----------------------------------------------------------------- SageMaker wire format
    def to_sagemaker(self, *, include_defaults: bool = False) -> dict[str, str]:
        """The exact ``HyperParameters`` string map CreateTrainingJob takes.

        By default only the explicitly set values are sent (the container fills in its own defaults, as in the
        AWS notebooks); ``include_defaults=True`` sends every non-empty value.
        """
        out: dict[str, str] = {}
        for name, value in self.to_dict(include_defaults=include_defaults).items():
            if value is None:
                continue
            out[name] = _to_wire(value)
        return out

    @classmethod
    def from_sagemaker(cls, values: Mapping[str, str]) -> Hyperparameters:
        """Read a ``HyperParameters`` string map (e.g. from DescribeTrainingJob) back into a value object."""
        given: dict[str, Any] = dict(values)
        return cls(**given)


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(Hyperparameters) if f.name != "_explicit"}


def _to_wire(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fail(name: str, value: Any, rule: Rule | None = None, detail: str | None = None) -> HyperparameterError:
    return fail(name, value, rule or RULES[name], detail)


def _coerce(name: str, value: Any, rule: Rule | None = None) -> Any:
    """Turn a Python or SageMaker-string value into the hyperparameter's type, or raise naming it."""
    return coerce(name, value, rule or RULES[name])


def _check_cross_fields(hp: Hyperparameters) -> None:
    h, w = hp.height, hp.width
    if hp.resize is not None and hp.resize < max(h, w):
        raise HyperparameterError(
            f"The 'resize' parameter ({hp.resize}) must be at least the crop height and width of image_shape "
            f"{hp.image_shape!r} (max {max(h, w)}): the shorter side is resized to 'resize' before the crop. "
            f"Use resize >= {max(h, w)} or a smaller image_shape.", parameter="resize")
    if hp.use_weighted_loss == 1 and not hp.is_multi_label:
        raise HyperparameterError(
            "The 'use_weighted_loss' parameter is only valid for multi-label training: set multi_label=1 or "
            "use_weighted_loss=0. Got use_weighted_loss=1 with multi_label=0.", parameter="use_weighted_loss")
    if hp.checkpoint_frequency is not None and hp.checkpoint_frequency > hp.epochs:
        raise HyperparameterError(
            f"The 'checkpoint_frequency' parameter must be an int in the range [1, epochs={hp.epochs}]. "
            f"Got {hp.checkpoint_frequency} instead.", parameter="checkpoint_frequency")
    if hp.num_layers in SMALL_DEPTHS and h > 28:
        raise HyperparameterError(
            f"The 'num_layers' parameter {hp.num_layers} is a small-image depth (one of {list(SMALL_DEPTHS)}) and "
            f"needs images of 28 px or less; image_shape {hp.image_shape!r} is {h} px high. "
            f"Use one of {list(LARGE_DEPTHS)} or an image_shape of at most 28 px.", parameter="num_layers")
    if hp.num_layers in LARGE_DEPTHS and h <= 28:
        raise HyperparameterError(
            f"The 'num_layers' parameter {hp.num_layers} needs images taller than 28 px; image_shape "
            f"{hp.image_shape!r} is {h} px high. Use one of the small-image depths {list(SMALL_DEPTHS)}.",
            parameter="num_layers")
    if hp.use_pretrained_model == 1 and hp.num_layers not in LARGE_DEPTHS:
        raise HyperparameterError(
            f"The 'use_pretrained_model' parameter needs num_layers in {list(LARGE_DEPTHS)} (transfer learning is "
            f"limited to those depths). Got num_layers={hp.num_layers}.", parameter="use_pretrained_model")
    if hp.num_training_samples < hp.mini_batch_size:
        raise HyperparameterError(
            f"The 'mini_batch_size' parameter ({hp.mini_batch_size}) must not exceed num_training_samples "
            f"({hp.num_training_samples}): the algorithm needs at least one full batch per epoch.",
            parameter="mini_batch_size")
    if hp.top_k is not None and hp.top_k > hp.num_classes:
        raise HyperparameterError(
            f"The 'top_k' parameter must be an int in the range [2, num_classes={hp.num_classes}]. "
            f"Got {hp.top_k} instead.", parameter="top_k")
