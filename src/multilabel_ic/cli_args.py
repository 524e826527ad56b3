"""Command-line values shared by ``multilabel-ic`` and its ``bench`` command: hyperparameter assignments
(``--hp NAME=VALUE``, ``--hp-file``) and class lists. Every mistake is a :class:`UsageError` naming the option.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._read import MiB, read_bounded
from .exceptions import UsageError

__all__ = ["add_hp_args", "hp_values", "hyperparameters_from_args", "read_option_text", "read_hp_file", "class_list",
           "print_prediction"]


def add_hp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="a hyperparameter of the algorithm, e.g. --hp num_layers=18 --hp epochs=5 (repeatable)")
    p.add_argument("--hp-file", type=Path, help="JSON file of hyperparameters (SageMaker's string map works too)")


def hp_values(args, defaults: dict | None = None) -> dict:
    """The --hp-file and --hp values (checked for syntax, before any data is read)."""
    values = dict(defaults or {})
    if args.hp_file:
        values.update(read_hp_file(args.hp_file))
    for item in args.hp:
        if "=" not in item:
            raise UsageError(f"--hp {item!r}: expected NAME=VALUE, e.g. --hp epochs=5")
        k, v = item.split("=", 1)
        values[k.strip()] = v.strip()
    return values


def hyperparameters_from_args(args, *, num_classes: int, num_training_samples: int, defaults: dict | None = None):
    from .hyperparameters import Hyperparameters

    values = hp_values(args, defaults)
    values.setdefault("num_classes", num_classes)
    values.setdefault("num_training_samples", num_training_samples)
    return Hyperparameters(**values)


def read_option_text(path: Path, option: str, *, limit: int = MiB) -> str:
    """The text of the file a command-line option names, or a :class:`UsageError` that names the option and file.

    The read never blocks (a FIFO is refused) and stops at ``limit`` bytes (``/dev/zero`` is refused)."""
    try:
        data = read_bounded(path, limit=limit, what="file", error=UsageError)
    except UsageError as exc:
        raise UsageError(f"{option} {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{option} {path}: cannot read it as text (not UTF-8 at byte {exc.start}); save it as "
                         "UTF-8.") from None


def read_hp_file(path: Path) -> dict:
    text = read_option_text(path, "--hp-file")
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--hp-file {path}:{exc.lineno}: not valid JSON ({exc.msg}); expected an object like "
                         f'{{"epochs": 5, "learning_rate": 0.001}}.') from exc
    if not isinstance(values, dict):
        raise UsageError(f"--hp-file {path}: expected a JSON object of hyperparameters like "
                         f'{{"epochs": 5}}, got a JSON {type(values).__name__}.')
    return values


def class_list(text: str, option: str = "--classes") -> list[str]:
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise UsageError(f"{option} {text!r}: empty class name; give comma-separated names, e.g. person,bicycle,car")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"{option} {text!r}: {', '.join(dupes)} appear more than once; class names must be unique.")
    return names


def print_prediction(source: str, probs: list[float], class_names: list[str], *, threshold: float | None,
                     jsonlines: bool) -> None:
    """One image's prediction as ``predict`` prints it (the endpoint's JSON, or a batch transform line)."""
    if jsonlines:  # allow_nan=False: a bare NaN is not JSON (the predictors refuse such scores before this)
        print(json.dumps({"prediction": probs}, allow_nan=False))
        return
    print(f"{source}: {json.dumps([round(p, 6) for p in probs], allow_nan=False)}")
    if threshold is not None:
        print("  labels:", [n for n, p in zip(class_names, probs) if p >= threshold])
