"""What SageMaker gives a training container, read without any framework: the ``/opt/ml`` layout and ``SM_*`` variables.

- ``input/config/hyperparameters.json``: every value a string; the SageMaker SDK JSON-encodes them (``"\\"sgd\\""``),
  so each is decoded when it is JSON, kept as it is otherwise. ``sagemaker_*`` keys are the training toolkit's;
  ``mlic_*`` keys are this project's own settings (class names, seed); the rest are the algorithm's hyperparameters.
- ``input/config/inputdataconfig.json``: the channels; each channel's files are under ``input/data/<channel>``.
- ``input/config/resourceconfig.json``: ``current_host`` and ``hosts`` (``algo-1``, ``algo-2``...).
- ``model/`` (packed by SageMaker into ``model.tar.gz``), ``output/failure`` (the reason a job failed),
  ``output/data/`` (packed into ``output.tar.gz``), ``checkpoints/`` (synced with the job's checkpoint S3 URI).
- ``input/data/model/``: a continued run's initial ``model.tar.gz`` (the ``model`` channel), when the job has one.

The base folder is ``/opt/ml``, or ``SAGEMAKER_BASE_DIR`` (the training toolkit's own variable) when it is set: the
tests lay out the same files under a temporary folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import UsageError

__all__ = ["ContainerEnv", "base_dir", "OWN_PREFIX", "TOOLKIT_PREFIX"]

OWN_PREFIX = "mlic_"  # this project's settings among the hyperparameters (not the algorithm's)
TOOLKIT_PREFIX = "sagemaker_"  # the SageMaker training toolkit's (sagemaker_program, sagemaker_submit_directory...)


def base_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: not found; a SageMaker training container is given its {what} there (set "
                         f"SAGEMAKER_BASE_DIR to the folder that holds input/config/ when running elsewhere).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the {what} ({' '.join(str(exc).split())[:200]}).") from exc


def _decode(value: Any) -> str:
    """A hyperparameter as the algorithm reads it: the JSON-decoded value of an SDK-encoded string, as a string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class ContainerEnv:
    """The training container's inputs and output folders, as SageMaker lays them out."""

    root: Path
    hyperparameters: dict[str, str]  # the algorithm's (strings, as SageMaker passes them)
    own: dict[str, str]  # mlic_* settings, without the prefix
    channels: dict[str, dict]  # inputdataconfig.json
    hosts: list[str]
    current_host: str
    num_gpus: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, root: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> ContainerEnv:
        env = dict(os.environ if environ is None else environ)
        root = Path(root) if root is not None else Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        config = root / "input" / "config"
        raw = _read_json(config / "hyperparameters.json", "hyperparameters")
        if not isinstance(raw, dict):
            raise UsageError(f"{config / 'hyperparameters.json'}: expected a JSON object of hyperparameters.")
        channels = _read_json(config / "inputdataconfig.json", "channel definitions")
        resources = _read_json(config / "resourceconfig.json", "cluster description")
        hosts = list(resources.get("hosts") or [])
        current = resources.get("current_host")
        if not hosts or current not in hosts:
            raise UsageError(f"{config / 'resourceconfig.json'}: needs 'hosts' and a 'current_host' among them "
                             f"(got hosts={hosts!r}, current_host={current!r}).")
        algorithm = {k: _decode(v) for k, v in raw.items() if not k.startswith((OWN_PREFIX, TOOLKIT_PREFIX))}
        own = {k[len(OWN_PREFIX):]: _decode(v) for k, v in raw.items() if k.startswith(OWN_PREFIX)}
        gpus = int(env.get("SM_NUM_GPUS", "0") or 0)
        return cls(root=root, hyperparameters=algorithm, own=own, channels=dict(channels), hosts=sorted(hosts),
                   current_host=current, num_gpus=gpus, env=env)

    # -- folders --
    def channel_dir(self, name: str) -> Path:
        """``SM_CHANNEL_<NAME>`` when the toolkit set it, else ``input/data/<name>``."""
        return Path(self.env.get(f"SM_CHANNEL_{name.upper()}", self.root / "input" / "data" / name))

    @property
    def model_dir(self) -> Path:
        return Path(self.env.get("SM_MODEL_DIR", self.root / "model"))

    @property
    def output_data_dir(self) -> Path:
        return Path(self.env.get("SM_OUTPUT_DATA_DIR", self.root / "output" / "data"))

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def processes_per_host(self) -> int:
        return max(1, self.num_gpus)

    def initial_model(self) -> Path | None:
        """The ``model.tar.gz`` of the job's ``model`` channel (a continued run), or None without that channel; the
        channel must hold exactly one ``.tar.gz`` (SageMaker downloads the object its S3 URI names)."""
        if "model" not in self.channels:
            return None
        folder = self.channel_dir("model")
        found = sorted(p for p in folder.rglob("*.tar.gz") if p.is_file()) if folder.is_dir() else []
        if len(found) != 1:
            raise UsageError(f"channel 'model' ({folder}) holds {len(found)} .tar.gz files "
                             f"({', '.join(p.name for p in found[:5]) or 'none'}); it must hold one model.tar.gz: "
                             f"give the S3 URI of that one object as the initial model (or model_uri).")
        return found[0]

    def files(self, channel: str, suffix: str) -> list[Path]:
        """The channel's files ending in ``suffix``, sorted; a missing channel is a usage error that names it."""
        if channel not in self.channels:
            raise UsageError(f"channel {channel!r} is missing from the job (channels: {sorted(self.channels)}); "
                             f"the engine needs train and validation data as .lst + images, an augmented "
                             f"manifest + images, or RecordIO.")
        folder = self.channel_dir(channel)
        found = sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())
        if not found:
            raise UsageError(f"channel {channel!r} ({folder}) has no {suffix} file.")
        return found
