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
import sys
from pathlib import Path
from typing import Any

from .cli_args import read_option_text
from .exceptions import UsageError

__all__ = ["load_run_config", "train_defaults", "resolved_config", "SECTIONS"]

# config key -> the train command's option (argparse dest), per section; None = the top level
SECTIONS: dict[str | None, dict[str, str]] = {
    None: {"backend": "backend", "output": "output", "classes": "classes"},
    "data": {"train_lst": "train_lst", "validation_lst": "validation_lst", "images": "images",
             "train_rec": "train_rec", "validation_rec": "validation_rec"},
    "local": {"device": "device", "engine": "engine", "workers": "workers", "pretrained": "pretrained",
              "seed": "seed", "tensorboard": "tensorboard", "mlflow": "mlflow",
              "mlflow_experiment": "mlflow_experiment", "input_pipeline": "input_pipeline",
              "cache_dir": "cache_dir", "cache_max_gb": "cache_max_gb", "compile": "compile"},
    "sagemaker": {"region": "region", "profile": "profile", "role": "role", "bucket": "bucket", "prefix": "prefix",
                  "instance_type": "instance_type", "instance_count": "instance_count",
                  "volume_size": "volume_size", "max_run": "max_run", "input_format": "input_format",
                  "use_spot": "use_spot", "max_wait": "max_wait", "checkpoint_s3_uri": "checkpoint_s3_uri",
                  "base_job_name": "base_job_name", "subnets": "subnets", "security_group_ids": "security_group_ids",
                  "volume_kms_key": "volume_kms_key", "output_kms_key": "output_kms_key",
                  "enable_network_isolation": "network_isolation",
                  "encrypt_inter_container_traffic": "encrypt_inter_container_traffic", "tags": "tag",
                  "environment": "env"},
}
_PATHS = {"output", "train_lst", "validation_lst", "images", "train_rec", "validation_rec"}


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Read a run configuration (by its extension: .toml, .yaml/.yml, .json) into a dict, checked for unknown keys."""
    p = Path(path)
    text = read_option_text(p, "--config")
    suffix = p.suffix.lower()
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
    elif suffix == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--config {p}:{exc.lineno}: not valid JSON ({exc.msg}).") from exc
    else:
        raise UsageError(f"--config {p}: use a .toml, .yaml/.yml or .json file.")
    if not isinstance(config, dict):
        raise UsageError(f"--config {p}: expected a table of settings, got a {type(config).__name__}.")
    _check_keys(config, p)
    return config


def _check_keys(config: dict, path: Path) -> None:
    sections = {k for k in SECTIONS if k} | {"hyperparameters"}
    for key, value in config.items():
        if key in sections:
            if not isinstance(value, dict):
                raise UsageError(f"--config {path}: [{key}] must be a table of settings.")
            known = SECTIONS.get(key)
            if known is not None:
                unknown = sorted(set(value) - set(known))
                if unknown:
                    raise UsageError(f"--config {path}: unknown key(s) {unknown} in [{key}]; known: "
                                     f"{', '.join(sorted(known))}.")
        elif key not in SECTIONS[None]:
            raise UsageError(f"--config {path}: unknown key {key!r}; known: "
                             f"{', '.join(sorted([*SECTIONS[None], *sections]))}.")


_CHOICES = {"backend": ("local", "sagemaker"), "engine": ("pytorch", "gluon"),
            "input_format": ("lst", "recordio", "manifest")}


def _as_option(key: str, value: Any, base: Path) -> Any:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UsageError(f"--config: {key} = {value!r} is not one of {', '.join(_CHOICES[key])}.")
    if key in _PATHS and value is not None:
        path = Path(str(value))
        return path if path.is_absolute() else base / path  # relative to the config file
    if key == "classes" and isinstance(value, list):
        return ",".join(str(v) for v in value)
    if key in ("tags", "environment"):
        if not isinstance(value, dict):
            raise UsageError(f"--config: [sagemaker] {key} must be a table of KEY = \"value\".")
        return [f"{k}={v}" for k, v in value.items()]
    if key in ("subnets", "security_group_ids") and isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def train_defaults(config: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option defaults for the train command, hyperparameters) from a loaded configuration. Paths are relative to
    the configuration file's folder."""
    base = Path(path).resolve().parent
    defaults: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        values = config if section is None else config.get(section, {})
        for key, dest in keys.items():
            if key in values:
                defaults[dest] = _as_option(key, values[key], base)
    return defaults, dict(config.get("hyperparameters", {}))


def resolved_config(args, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The configuration a run actually used (flags and file merged), in the file's layout (JSON-ready)."""
    out: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        values: dict[str, Any] = {}
        for key, dest in keys.items():
            value = getattr(args, dest, None)
            if value is None or value == []:
                continue
            if key in ("tags", "environment"):
                value = dict(item.split("=", 1) for item in value)
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
