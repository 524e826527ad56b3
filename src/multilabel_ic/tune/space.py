"""The search space of a tuning study: integer, continuous (linear or log) and categorical ranges over the built-in
algorithm's hyperparameters, one space for both backends.

A space is checked before any trial runs or anything is written: every name must be a hyperparameter the algorithm
has (and one a study may vary); every value a range can produce must pass the algorithm's rules
(:mod:`multilabel_ic.hyperparameters`), alone and with the study's other hyperparameters; and the ranges of the
parameters AWS gives recommended tuning ranges for must lie within them (the SageMaker docs' "Tune an Image
Classification Model", docs/lifecycle.md). Each refusal is one :class:`HyperparameterError` naming the parameter, the
range and the allowed one.

    space = SearchSpace({"learning_rate": ContinuousRange(1e-4, 0.1, scaling="log"),
                         "mini_batch_size": IntegerRange(8, 64),
                         "optimizer": CategoricalRange(["sgd", "adam"])})
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

from ..exceptions import HyperparameterError, UsageError
from ..hyperparameters import RULES, Hyperparameters, _coerce, _fmt

__all__ = ["IntegerRange", "ContinuousRange", "CategoricalRange", "Range", "SearchSpace", "AWS_RECOMMENDED",
           "NOT_TUNABLE", "SCALINGS"]

SCALINGS = ("linear", "log")

# AWS's recommended tuning ranges for the built-in Image Classification algorithm (ic-spec 1, "Tuning ranges
# recommended by AWS"): (low, high) for numbers, a tuple of values for categories.
AWS_RECOMMENDED: dict[str, tuple] = {
    "beta_1": (1e-6, 0.999), "beta_2": (1e-6, 0.999), "eps": (1e-8, 1.0), "gamma": (1e-8, 0.999),
    "learning_rate": (1e-6, 0.5), "mini_batch_size": (8, 512), "momentum": (0.0, 0.999),
    "optimizer": ("sgd", "adam", "rmsprop", "nag"), "weight_decay": (0.0, 0.999),
}

# Set by the data, never by a study: a trial that changed them would train on something else.
NOT_TUNABLE = {"num_classes": "it is the number of classes of the data",
               "num_training_samples": "it is the number of training images"}

MAX_CATEGORIES = 30  # SageMaker's limit on the values of one categorical range
MAX_RANGES = 30  # SageMaker's limit on the ranges of one tuning job
_CORNERS_LIMIT = 4096  # combinations checked together; above it each range is checked alone


def _num(v: Any) -> str:
    return _fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


@dataclass(frozen=True)
class IntegerRange:
    """Integers from ``low`` to ``high``, both included; ``scaling="log"`` searches their logarithm."""

    low: int
    high: int
    scaling: str = "linear"

    kind = "integer"

    def describe(self) -> str:
        return f"integers [{self.low}, {self.high}]" + (" (log)" if self.scaling == "log" else "")

    def candidates(self) -> tuple:
        return (self.low, self.high)


@dataclass(frozen=True)
class ContinuousRange:
    """Real numbers from ``low`` to ``high``; ``scaling="log"`` searches their logarithm (``low`` > 0)."""

    low: float
    high: float
    scaling: str = "linear"

    kind = "continuous"

    def describe(self) -> str:
        return f"[{_num(self.low)}, {_num(self.high)}]" + (" (log)" if self.scaling == "log" else "")

    def candidates(self) -> tuple:
        return (self.low, self.high)


@dataclass(frozen=True)
class CategoricalRange:
    """One of ``values`` (numbers or strings, as the hyperparameter takes them)."""

    values: tuple

    kind = "categorical"

    def __init__(self, values: Any):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "{" + ", ".join(_num(v) for v in self.values) + "}"

    def candidates(self) -> tuple:
        return self.values


Range = Union[IntegerRange, ContinuousRange, CategoricalRange]


class SearchSpace(Mapping):
    """Hyperparameter name -> range. Build it from range objects, or from a configuration table with
    :meth:`from_config`; :meth:`validate` checks it against the algorithm's rules."""

    def __init__(self, ranges: Mapping[str, Range] | SearchSpace):
        if isinstance(ranges, SearchSpace):
            ranges = ranges.ranges
        if not isinstance(ranges, Mapping) or not ranges:
            raise UsageError("search_space must be a non-empty mapping of hyperparameter names to IntegerRange, "
                             "ContinuousRange or CategoricalRange (or a [search_space] table in the config).")
        for name, rng in ranges.items():
            if not isinstance(rng, (IntegerRange, ContinuousRange, CategoricalRange)):
                raise UsageError(f"search space: {name!r} must be an IntegerRange, ContinuousRange or "
                                 f"CategoricalRange, got {type(rng).__name__}.")
        self.ranges: dict[str, Range] = dict(ranges)

    def __getitem__(self, name: str) -> Range:
        return self.ranges[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __repr__(self) -> str:
        return f"SearchSpace({self.ranges!r})"

    # ----------------------------------------------------------------- reading a configuration table
    @classmethod
    def from_config(cls, table: Any, *, source: str = "[search_space]") -> SearchSpace:
        """A space from a TOML/JSON table::

            learning_rate = { min = 1e-4, max = 0.1, scaling = "log" }     # continuous (the parameter is a float)
            mini_batch_size = { min = 8, max = 64 }                         # integer (the parameter is an int)
            optimizer = ["sgd", "adam"]                                     # categorical
            num_layers = { values = [18, 34] }                              # categorical

        ``type = "integer" | "continuous" | "categorical"`` may be given; otherwise the parameter's own type decides.
        """
        if not isinstance(table, Mapping) or not table:
            raise UsageError(f"{source} must be a non-empty table of hyperparameter = range.")
        ranges: dict[str, Range] = {}
        for name, spec in table.items():
            ranges[name] = _range_from_config(name, spec, source)
        return cls(ranges)

    def to_config(self) -> dict[str, Any]:
        """The space as a configuration table (:meth:`from_config` reads it back)."""
        out: dict[str, Any] = {}
        for name, rng in self.ranges.items():
            if isinstance(rng, CategoricalRange):
                out[name] = {"type": "categorical", "values": list(rng.values)}
            else:
                out[name] = {"type": rng.kind, "min": rng.low, "max": rng.high, "scaling": rng.scaling}
        return out

    # ----------------------------------------------------------------- validation
    def validate(self, hp: Hyperparameters) -> None:
        """Refuse, in one line naming the parameter, its range and the allowed one: a name that is not a tunable
        hyperparameter, a range of the wrong kind or an empty one, a value the algorithm's rules refuse (alone or
        with the study's other hyperparameters ``hp``), and a range outside AWS's recommended tuning range."""
        if len(self.ranges) > MAX_RANGES:
            raise HyperparameterError(f"search space: {len(self.ranges)} ranges; a tuning job takes at most "
                                      f"{MAX_RANGES}.", parameter=next(iter(self.ranges)))
        for name, rng in self.ranges.items():
            _check_range(name, rng)
        self._check_together(hp)

    def check_point(self, point: Any, *, what: str = "point") -> dict[str, Any]:
        """``point`` (name -> value) as values the ranges can produce, or a :class:`UsageError` naming the value."""
        if not isinstance(point, Mapping):
            raise UsageError(f"{what} must be a mapping of hyperparameter names to values, got {type(point).__name__}.")
        out = {}
        for name, value in point.items():
            rng = self.ranges.get(name)
            if rng is None:
                raise UsageError(f"{what}: {name!r} is not in the search space ({', '.join(self.ranges)}).")
            ok = (value in rng.values if isinstance(rng, CategoricalRange) else
                  not isinstance(value, bool) and isinstance(value, (int, float)) and rng.low <= value <= rng.high
                  and (isinstance(rng, ContinuousRange) or float(value).is_integer()))
            if not ok:
                raise UsageError(f"{what}: {name}={_num(value)} is outside its range {rng.describe()}.")
            out[name] = int(value) if isinstance(rng, IntegerRange) else value
        return out

    def _check_together(self, hp: Hyperparameters) -> None:
        """Every combination of the ranges' ends (all values of a categorical range) with the study's other
        hyperparameters: the algorithm's cross-field rules are thresholds, so the ends are the values to check."""
        names = list(self.ranges)
        combos = math.prod(len(self.ranges[n].candidates()) for n in names)
        groups = [names] if combos <= _CORNERS_LIMIT else [[n] for n in names]
        base = {k: getattr(hp, k) for k in hp.explicit}
        base.update(num_classes=hp.num_classes, num_training_samples=hp.num_training_samples)
        for group in groups:
            for values in itertools.product(*(self.ranges[n].candidates() for n in group)):
                trial = dict(zip(group, values))
                try:
                    Hyperparameters(**{**base, **trial})
                except HyperparameterError as exc:
                    culprit = exc.parameter if exc.parameter in trial else group[0]
                    others = ", ".join(f"{k}={_num(v)}" for k, v in trial.items() if k != culprit)
                    raise HyperparameterError(
                        f"search space: {culprit} {self.ranges[culprit].describe()} can give "
                        f"{_num(trial[culprit])}{' (with ' + others + ')' if others else ''}, which the algorithm "
                        f"refuses: {exc} Narrow the range or change the study's fixed hyperparameters.",
                        parameter=culprit) from None


def _range_from_config(name: str, spec: Any, source: str) -> Range:
    where = f"{source} {name}"
    if isinstance(spec, list):
        return CategoricalRange(spec)
    if not isinstance(spec, Mapping):
        raise UsageError(f"{where}: expected a table {{ min = ..., max = ... }} or {{ values = [...] }} or a list "
                         f"of values, got {spec!r}.")
    allowed = {"type", "min", "max", "scaling", "values"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; a range takes type, min, max, scaling or values.")
    kind = spec.get("type")
    if kind is not None and kind not in ("integer", "continuous", "categorical"):
        raise UsageError(f"{where}: type = {kind!r} is not one of 'integer', 'continuous', 'categorical'.")
    if "values" in spec or kind == "categorical":
        if not isinstance(spec.get("values"), list) or set(spec) - {"type", "values"}:
            raise UsageError(f"{where}: a categorical range is {{ values = [...] }} (a list, and no min, max or "
                             f"scaling).")
        return CategoricalRange(spec["values"])
    if "min" not in spec or "max" not in spec:
        raise UsageError(f"{where}: a range needs both min and max (or values = [...] for a categorical one).")
    scaling = spec.get("scaling", "linear")
    if scaling not in SCALINGS:
        raise UsageError(f"{where}: scaling = {scaling!r} is not one of 'linear', 'log'.")
    low, high = spec["min"], spec["max"]
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{where}: min and max must be numbers, got {v!r}.")
    if kind is None:
        rule = RULES.get(name)
        kind = "integer" if rule is not None and rule.kind == "int" else "continuous"
    if kind == "integer":
        if not all(float(v).is_integer() for v in (low, high)):
            raise UsageError(f"{where}: an integer range needs whole numbers, got min = {low!r}, max = {high!r}.")
        return IntegerRange(int(low), int(high), scaling)
    return ContinuousRange(float(low), float(high), scaling)


def _check_range(name: str, rng: Range) -> None:
    def fail(detail: str) -> HyperparameterError:
        return HyperparameterError(f"search space: {name} {rng.describe()}: {detail}", parameter=name)

    if name not in RULES:
        raise HyperparameterError(f"search space: {name!r} is not a hyperparameter of the algorithm; valid names: "
                                  f"{', '.join(sorted(set(RULES) - set(NOT_TUNABLE)))}.", parameter=name)
    if name in NOT_TUNABLE:
        raise HyperparameterError(f"search space: {name} cannot be tuned: {NOT_TUNABLE[name]}, set from the data.",
                                  parameter=name)
    rule = RULES[name]
    if isinstance(rng, CategoricalRange):
        if not rng.values:
            raise fail("a categorical range needs at least one value.")
        if len(rng.values) > MAX_CATEGORIES:
            raise fail(f"{len(rng.values)} values; a categorical range takes at most {MAX_CATEGORIES}.")
        coerced = []
        for v in rng.values:
            if v is None or isinstance(v, (list, dict)):
                raise fail(f"{v!r} is not a value; {name} must be {rule.describe()}.")
            try:
                coerced.append(_coerce(name, v))
            except HyperparameterError:
                raise fail(f"{_num(v)} is not allowed; {name} must be {rule.describe()}.") from None
        if len(set(map(str, coerced))) != len(coerced):
            raise fail("a value is listed twice.")
        recommended = AWS_RECOMMENDED.get(name)
        if recommended is not None:
            if isinstance(recommended[0], str):
                outside = [v for v in coerced if v not in recommended]
            else:
                outside = [v for v in coerced if not recommended[0] <= v <= recommended[1]]
            if outside:
                allowed = ("{" + ", ".join(recommended) + "}" if isinstance(recommended[0], str)
                           else f"[{_num(recommended[0])}, {_num(recommended[1])}]")
                raise fail(f"{_num(outside[0])} is outside AWS's recommended tuning range {allowed}.")
        return
    if rule.kind not in ("int", "float") or (rule.kind == "int" and isinstance(rng, ContinuousRange)):
        want = "an integer range" if rule.kind == "int" else "a categorical range (values = [...])"
        raise fail(f"{name} is {rule.describe()}: give {want}.")
    if rng.scaling not in SCALINGS:
        raise fail(f"scaling {rng.scaling!r} is not one of 'linear', 'log'.")
    for v in (rng.low, rng.high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail(f"min and max must be finite numbers, got {v!r}.")
    if not rng.low < rng.high:
        raise fail("min must be below max (for one value, set it among the fixed hyperparameters instead).")
    if rng.scaling == "log" and rng.low <= 0:
        raise fail("a log-scaled range needs min > 0.")
    for v in (rng.low, rng.high):
        try:
            _coerce(name, v)
        except HyperparameterError:
            raise fail(f"{_num(v)} is not allowed; {name} must be {rule.describe()}.") from None
    recommended = AWS_RECOMMENDED.get(name)
    if recommended is not None and not (recommended[0] <= rng.low and rng.high <= recommended[1]):
        raise fail(f"outside AWS's recommended tuning range [{_num(recommended[0])}, {_num(recommended[1])}].")
