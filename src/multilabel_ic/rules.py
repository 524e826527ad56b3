"""The rule engine of every validated setting: one :class:`Rule` per field (its type and allowed values), and the
coercion of a Python or SageMaker-string value to it, raising one message that names the field. ``Hyperparameters``
(its RULES table), ``LocalOptions``, ``AugmentOptions``, the SageMaker backend and the tuner all check through it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import HyperparameterError, UsageError

__all__ = ["Rule", "check_options", "coerce", "fail", "fmt", "INF"]

INF = math.inf


@dataclass(frozen=True)
class Rule:
    kind: str  # "int", "float", "choice", "bool01", "boolstr", "bool", "str", "image_shape", "steps"
    low: float = -INF
    high: float = INF
    low_open: bool = False
    choices: tuple = ()
    required: bool = False
    nullable: bool = False

    def describe(self) -> str:
        if self.kind in ("int", "float"):
            lo = "(" if self.low_open else "["
            low = "-inf" if self.low == -INF else fmt(self.low)
            high = "inf" if self.high == INF else fmt(self.high)
            return f"{'an int' if self.kind == 'int' else 'a float'} in the range {lo}{low}, {high}{']' if high != 'inf' else ')'}"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool01":
            return "0 or 1"
        if self.kind == "boolstr":
            return "True or False"
        if self.kind == "bool":
            return "True or False (a bool)"
        if self.kind == "str":
            return "a non-empty string"
        if self.kind == "image_shape":
            return 'a string "C,H,W" of three positive ints with C in {1, 3}'
        if self.kind == "steps":
            return 'a comma-separated, strictly increasing list of positive epoch numbers, e.g. "10,20"'
        raise AssertionError(self.kind)


def fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def check_options(values: Mapping[str, Any], rules: Mapping[str, Rule], *, owner: str) -> dict[str, Any]:
    """Check and coerce the settings of a configuration object (``LocalOptions``, ``AugmentOptions``,
    ``SageMakerBackend``) with the rule table ``Hyperparameters`` uses; a bad value raises a :class:`UsageError`
    with the same message shape: "The 'x' option of Owner must be <what is allowed>. Got <value> instead."."""
    out = dict(values)
    for name, rule in rules.items():
        if name not in values:
            continue
        try:
            out[name] = coerce(name, values[name], rule)
        except HyperparameterError:
            raise UsageError(f"The {name!r} option of {owner} must be {rule.describe()}. Got {values[name]!r} "
                             f"instead.") from None
    return out


def fail(name: str, value: Any, rule: Rule, detail: str | None = None) -> HyperparameterError:
    msg = detail or f"The {name!r} parameter must be {rule.describe()}. Got {value!r} instead."
    return HyperparameterError(msg, parameter=name)


def coerce(name: str, value: Any, rule: Rule) -> Any:
    """Turn a Python or SageMaker-string value into the field's type, or raise naming the parameter."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none") and rule.nullable):
        if rule.nullable:
            return None
        raise fail(name, value, rule)
    if rule.kind == "int":
        v = _as_int(value)
        if v is None or v < rule.low or v > rule.high:
            raise fail(name, value, rule)
        return v
    if rule.kind == "float":
        f = _as_float(value)
        if f is None or f > rule.high or f < rule.low or (rule.low_open and f == rule.low):
            raise fail(name, value, rule)
        return f
    if rule.kind == "choice":
        candidates = [value]
        if isinstance(value, str) and all(isinstance(c, int) for c in rule.choices):
            candidates = [_as_int(value)]
        for c in candidates:
            if c in rule.choices and not isinstance(c, bool):
                return c
        raise fail(name, value, rule)
    if rule.kind == "bool01":
        v = _as_int(value)
        if v not in (0, 1):
            raise fail(name, value, rule)
        return v
    if rule.kind == "bool":
        if isinstance(value, bool):
            return value
        raise fail(name, value, rule)
    if rule.kind == "str":
        if isinstance(value, str) and value:
            return value
        raise fail(name, value, rule)
    if rule.kind == "boolstr":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise fail(name, value, rule)
    if rule.kind == "image_shape":
        return _parse_image_shape(name, value, rule)
    if rule.kind == "steps":
        return _parse_steps(name, value, rule)
    raise AssertionError(rule.kind)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def _parse_image_shape(name: str, value: Any, rule: Rule) -> str:
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else None
    if parts is None or len(parts) != 3:
        raise fail(name, value, rule)
    dims = [_as_int(p) for p in parts]
    if any(d is None or d < 1 for d in dims) or dims[0] not in (1, 3):
        raise fail(name, value, rule)
    return ",".join(str(d) for d in dims)


def _parse_steps(name: str, value: Any, rule: Rule) -> str:
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else None
    if not parts:
        raise fail(name, value, rule)
    parsed = [_as_int(p) for p in parts]
    steps = [s for s in parsed if s is not None]
    if len(steps) != len(parsed) or any(s < 1 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise fail(name, value, rule)
    return ",".join(str(s) for s in steps)
