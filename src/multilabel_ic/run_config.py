"""A whole training run in one file (``multilabel-ic train --config run.toml``): data paths, hyperparameters, local
options and SageMaker options. TOML, YAML (with PyYAML installed) or JSON; command-line flags override it, and the
resolved configuration is written to the run folder as ``run-config.json`` (itself a valid ``--config``).

    backend = "local"                 # or "sagemaker"
    output = "runs/coco5"
    classes = ["person", "bicycle", "car", "motorcycle", "airplane"]

    [data]
    train_lst = "data/train.lst"
    validation_lst = "data/validation.lst"
    images = "data/synthetic/images"

    [hyperparameters]
    num_layers = 18
    epochs = 5

    [local]
    device = "cuda"
    seed = 0

    [sagemaker]
    role = "SageMakerRole"
    bucket = "my-bucket"
    tags = { team = "vision" }
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from ._read import MiB
from .backends import BACKENDS
from .cli_args import read_option_text
from .exceptions import HyperparameterError, UsageError
from .local_options import choices_of, config_keys, not_replayed

__all__ = ["load_run_config", "train_defaults", "resolved_config", "SECTIONS", "KINDS", "PATH_KEYS", "CONFIG_LIMIT"]

CONFIG_LIMIT = MiB  # the largest run file read: a run file is a few hundred bytes

# config key -> the train command's option (argparse dest), per section; None = the top level
SECTIONS: dict[str | None, dict[str, str]] = {
    None: {"backend": "backend", "output": "output", "classes": "classes", "initial_model": "initial_model"},
    "data": {"train_lst": "train_lst", "validation_lst": "validation_lst", "images": "images",
             "train_rec": "train_rec", "validation_rec": "validation_rec"},
    # every LocalOptions field with a run-file key (local_options), and the experiment trackers
    "local": {**{key: dest for key, (dest, _, _) in config_keys().items()}, "tensorboard": "tensorboard",
              "mlflow": "mlflow", "mlflow_experiment": "mlflow_experiment"},
    "sagemaker": {"region": "region", "profile": "profile", "role": "role", "bucket": "bucket", "prefix": "prefix",
                  "instance_type": "instance_type", "instance_count": "instance_count",
                  "volume_size": "volume_size", "max_run": "max_run", "input_format": "input_format",
                  "use_spot": "use_spot", "max_wait": "max_wait", "checkpoint_s3_uri": "checkpoint_s3_uri",
                  "base_job_name": "base_job_name", "subnets": "subnets", "security_group_ids": "security_group_ids",
                  "volume_kms_key": "volume_kms_key", "output_kms_key": "output_kms_key",
                  "enable_network_isolation": "network_isolation",
                  "encrypt_inter_container_traffic": "encrypt_inter_container_traffic", "tags": "tag",
                  "environment": "env", "engine": "engine", "framework_version": "framework_version", "seed": "seed"},
}

# the type of every key (see _convert): "path" keys (and a plain path in "path_or_url", "tensorboard", "mlflow") are
# relative to the run file's folder
KINDS: dict[str, str] = {
    "backend": "choice", "output": "path", "classes": "names", "initial_model": "model",
    "train_lst": "path", "validation_lst": "path", "images": "path", "train_rec": "path", "validation_rec": "path",
    **{key: kind for key, (_, kind, _) in config_keys().items()},
    "tensorboard": "tensorboard", "mlflow": "mlflow", "mlflow_experiment": "str",
    "region": "str", "profile": "str", "role": "str", "bucket": "str", "prefix": "str", "instance_type": "str",
    "instance_count": "int", "volume_size": "int", "max_run": "int", "input_format": "choice", "use_spot": "bool",
    "max_wait": "int", "checkpoint_s3_uri": "str", "base_job_name": "str", "subnets": "ids",
    "security_group_ids": "ids", "volume_kms_key": "str", "output_kms_key": "str", "enable_network_isolation": "bool",
    "encrypt_inter_container_traffic": "bool", "tags": "table", "environment": "table", "framework_version": "str",
}
# every key that names a file or folder on this machine (a URL or URI in pretrained / mlflow is kept as it is)
PATH_KEYS = frozenset(k for k, kind in KINDS.items() if kind in ("path", "path_or_url", "tensorboard", "mlflow",
                                                                   "model"))

_CHOICES = {"backend": tuple(BACKENDS), "input_format": ("lst", "recordio", "manifest"),
            **{key: choices_of(key) for key, (_, kind, _) in config_keys().items() if kind == "choice"}}
_EXPECTED = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
             "path": "a path (a string)", "path_or_url": "a path or a URL (a string)",
             "model": "a path, an s3:// URI or a training job's name (a string)",
             "tensorboard": "true, false or a folder (a string)", "mlflow": "a tracking URI or a folder (a string)",
             "names": 'a list of class names (strings without commas), e.g. ["person", "car"]',
             "ids": 'a list of ids (strings), e.g. ["subnet-0a1b2c3d"]',
             "table": 'a table of KEY = "value" (string, number or boolean values)'}
_TYPE_NAMES = {dict: "a table", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme (s3:, http:, file:, databricks:), not a drive letter


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Read a run configuration (by its extension: .toml, .yaml/.yml, .json) into a dict, checked for unknown keys
    and for the type of every value (each error names the file, the section and the key)."""
    p = Path(path)
    config = read_config_table(p)
    _check_keys(config, p)
    return config


def read_config_table(p: Path) -> dict[str, Any]:
    """The table of settings in ``p`` (.toml, .yaml/.yml, .json; read bounded), unchecked: one clear line for a
    file that cannot be read or parsed, or that does not hold a table."""
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise UsageError(f"--config {p}: use a .toml, .yaml/.yml or .json file.")
    text = read_option_text(p, "--config", limit=CONFIG_LIMIT)  # bounded, never blocks on a FIFO
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"--config {p}: not valid TOML ({exc}).") from exc
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"--config {p}: YAML needs PyYAML (pip install pyyaml), or use a .toml file.") from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {p}: not valid YAML ({' '.join(str(exc).split())}).") from exc
        except RecursionError:
            raise UsageError(f"--config {p}: not valid YAML (nested too deeply).") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--config {p}:{exc.lineno}: not valid JSON ({exc.msg}).") from exc
        except RecursionError:
            raise UsageError(f"--config {p}: not valid JSON (nested too deeply).") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {p}: expected a table of settings, got {_type_name(config)}.")
    return config


def _type_name(value: Any) -> str:
    return next((name for t, name in _TYPE_NAMES.items() if type(value) is t), f"a {type(value).__name__}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(config: dict, path: Path) -> None:
    sections = {k for k in SECTIONS if k} | {"hyperparameters"}
    for key, value in config.items():
        if not isinstance(key, str):
            raise UsageError(f"--config {path}: key {_shown(key)} is not a name; keys are strings like output.")
        if key in sections:
            if not isinstance(value, dict):
                raise UsageError(f"--config {path}: [{key}] must be a table of settings, got {_type_name(value)}.")
            known = SECTIONS.get(key)
            if known is not None:
                unknown = sorted(map(str, set(value) - set(known)))
                if unknown:
                    raise UsageError(f"--config {path}: unknown key(s) {unknown} in [{key}]; known: "
                                     f"{', '.join(sorted(known))}.")
        elif key not in SECTIONS[None]:
            raise UsageError(f"--config {path}: unknown key {key!r}; known: "
                             f"{', '.join(sorted([*SECTIONS[None], *sections]))}.")


class _WrongType(Exception):
    """A value of the wrong type or form (its argument, when there is one, is the sentence that says so)."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongType
    return value


def _local_path(value: str, base: Path) -> str:
    return value if Path(value).is_absolute() else str(base / value)


def _convert(key: str, value: Any, base: Path) -> Any:
    """The train command's option value for a run file's ``key = value``, or :class:`_WrongType`."""
    kind = KINDS[key]
    if kind == "choice":
        if not isinstance(value, str) or value not in _CHOICES[key]:
            raise _WrongType(f"is not one of {', '.join(_CHOICES[key])}")
        return value
    if kind == "str":
        return _text(value)
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _WrongType
        return value
    if kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _WrongType
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _WrongType
        return value
    if kind == "path":
        if not _text(value):
            raise _WrongType
        path = Path(value)
        return path if path.is_absolute() else base / path  # relative to the config file
    if kind == "path_or_url":
        if not _text(value):
            raise _WrongType
        return value if "://" in value else _local_path(value, base)
    if kind == "model":  # a path (relative to the run file), an s3:// URI or a SageMaker training job's name
        if not _text(value):
            raise _WrongType
        from .model.initial import source_kind

        local = base / value
        return value if "://" in value or (source_kind(value) == "job" and not local.exists()) else \
            _local_path(value, base)
    if kind == "tensorboard":
        if isinstance(value, bool):
            return "" if value else None  # true: the default folder, <output>/tensorboard
        return _local_path(value, base) if _text(value) else value
    if kind == "mlflow":
        if not _text(value):
            raise _WrongType
        return value if _URI.match(value) and not Path(value).is_absolute() else _local_path(value, base)
    if kind in ("names", "ids"):
        items = value if isinstance(value, list) else [_text(value)]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise _WrongType
        comma = next((v for v in items if "," in v), None) if isinstance(value, list) else None
        if comma is not None:
            raise _WrongType(f"must be {_EXPECTED[kind]}: {comma!r} holds a comma, which would split it in two")
        return ",".join(items)
    if kind == "table":
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and k and "=" not in k and isinstance(v, (str, int, float, bool))
                for k, v in value.items()):
            raise _WrongType
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in value.items()]
    raise AssertionError(kind)


def _check_hyperparameters(values: dict[str, Any], path: Path) -> dict[str, Any]:
    """The [hyperparameters] table, each value checked against its hyperparameter's rule (cross-field rules are
    checked when the run starts)."""
    from .hyperparameters import RULES, _coerce

    for key, value in values.items():
        if key not in RULES:
            raise UsageError(f"--config {path}: unknown hyperparameter {key!r} in [hyperparameters]; known: "
                             f"{', '.join(sorted(RULES))}.")
        if not isinstance(value, (str, int, float, bool)):
            raise UsageError(f"--config {path}: [hyperparameters] {key} = {_shown(value)} must be a string, number "
                             f"or boolean, not {_type_name(value)}.")
        try:
            _coerce(key, value)
        except HyperparameterError as exc:
            raise UsageError(f"--config {path}: [hyperparameters] {key} = {_shown(value)}: {exc}") from None
    return dict(values)


def train_defaults(config: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option defaults for the train command, hyperparameters) from a loaded configuration, every value checked
    for its type. Paths are relative to the configuration file's folder."""
    path = Path(path)
    base = path.resolve().parent
    defaults: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        values = config if section is None else config.get(section, {})
        for key, dest in keys.items():
            if key not in values:
                continue
            try:
                option = _convert(key, values[key], base)
            except _WrongType as exc:
                where = key if section is None else f"[{section}] {key}"
                problem = exc.args[0] if exc.args else \
                    f"must be {_EXPECTED[KINDS[key]]}, not {_type_name(values[key])}"
                raise UsageError(f"--config {path}: {where} = {_shown(values[key])} {problem}.") from None
            if option is not None:
                defaults[dest] = option
    return defaults, _check_hyperparameters(config.get("hyperparameters", {}), path)


def resolved_config(args, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The configuration a run actually used (flags and file merged), in the file's layout (JSON-ready)."""
    out: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        values: dict[str, Any] = {}
        for key, dest in keys.items():
            value = getattr(args, dest, None)
            if value is None or value == [] or (section == "local" and key in not_replayed()):
                continue
            if key in ("tags", "environment"):
                value = dict(item.split("=", 1) for item in value)
            elif key == "initial_model" and "://" not in str(value) and Path(value).exists():
                value = str(Path(value).resolve())
            elif isinstance(value, Path):
                value = str(value.resolve())
            values[key] = value
        backend = getattr(args, "backend", "local")
        if section is None:
            out.update(values)
        elif values and section != ("local" if backend == "sagemaker" else "sagemaker"):
            out[section] = values
    out["hyperparameters"] = hyperparameters
    return out
