"""The project's own engine as a SageMaker training job, in AWS's PyTorch training container (``engine="pytorch"``).

What the job is made of, free of I/O except :func:`source_bundle` (which writes a local file):

- the image: the SageMaker PyTorch framework image of the region, torch version and instance type, from the SageMaker
  SDK's own table (``sagemaker.core.image_uris``), which also refuses the instance types that image does not run on;
- several instances: SageMaker's ``torch_distributed`` setting (the training toolkit starts torchrun across the hosts),
  checked with the SDK's own ``validate_distribution``;
- the source: ``sourcedir.tar.gz`` with a wheel of the installed multilabel-ic, a ``requirements.txt`` that installs
  it, and ``train_entry.py``, which runs :mod:`multilabel_ic.container`;
- the hyperparameters: the algorithm's, JSON-encoded as the SDK encodes them, with ``mlic_*`` (class names, seed) and
  the toolkit's ``sagemaker_*`` keys; metric definitions that read the algorithm's log lines.

The SDK's own estimator (``sagemaker.train.ModelTrainer``) is not used: the ``sagemaker-train`` package needs MLflow 3,
paramiko, graphene and more, far heavier than the ``sagemaker`` extra (boto3 and sagemaker-core); the request is built
here from the same pieces it uses (docs/sagemaker.md, "The project's engine on SageMaker").
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...exceptions import UsageError, require

if TYPE_CHECKING:
    from ...hyperparameters import Hyperparameters

__all__ = ["DEFAULT_FRAMEWORK_VERSION", "MIN_TORCH", "ENTRY_POINT", "METRIC_DEFINITIONS", "framework_image",
           "distribution", "gpus_per_instance", "check_batch_split", "job_hyperparameters", "source_bundle",
           "build_wheel", "CHECKPOINT_LOCAL_PATH", "split_job_hyperparameters", "manifest_settings"]

DEFAULT_FRAMEWORK_VERSION = "2.8"  # the newest the SDK's torch_distributed check accepts on GPU instances
MIN_TORCH = (2, 2)  # the local extra's torch>=2.2
ENTRY_POINT = "train_entry.py"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# SageMaker metrics from the algorithm's log lines (the built-in algorithm defines the same names itself)
METRIC_DEFINITIONS = [
    {"Name": "train:accuracy", "Regex": r"Epoch\[\d+\] Train-accuracy=" + _NUMBER},
    {"Name": "validation:accuracy", "Regex": r"Epoch\[\d+\] Validation-accuracy=" + _NUMBER},
    {"Name": "validation:mAP", "Regex": r"Epoch\[\d+\] Validation-mAP=" + _NUMBER},
]
_ENTRY_SCRIPT = '''"""The training job's entry point: multilabel-ic's engine (installed from requirements.txt)."""
import sys

from multilabel_ic.container.entry import main

sys.exit(main())
'''


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _sdk():
    return require("sagemaker.core.image_uris", extra="sagemaker", package="sagemaker-core")


def resolve_version(framework_version: str) -> tuple[str, str]:
    """``(full torch version, Python version)`` of the SDK's PyTorch training images for ``framework_version``."""
    image_uris = _sdk()
    versions = image_uris.list_versions("pytorch", image_scope="training")
    if framework_version not in versions:
        raise UsageError(f"framework_version={framework_version!r}: SageMaker has no PyTorch training image of that "
                         f"version (from {versions[0]} to {versions[-1]}); pick one of the 2.x versions, e.g. "
                         f"{DEFAULT_FRAMEWORK_VERSION!r}.")
    config = image_uris.config_for_framework("pytorch")["training"]
    full = config.get("version_aliases", {}).get(framework_version, framework_version)
    numbers = tuple(int(p) for p in re.findall(r"\d+", full)[:2])
    if numbers < MIN_TORCH:
        raise UsageError(f"framework_version={framework_version!r}: the project's engine needs torch >= "
                         f"{'.'.join(map(str, MIN_TORCH))}; pick {DEFAULT_FRAMEWORK_VERSION!r} or another 2.x version.")
    py = config["versions"][full]["py_versions"][-1]
    return full, py


def framework_image(region: str, framework_version: str, instance_type: str) -> str:
    """The PyTorch training image for the region, version and instance type (the SDK's lookup and its checks)."""
    full, py = resolve_version(framework_version)
    try:
        return _sdk().retrieve("pytorch", region, version=full, py_version=py, instance_type=instance_type,
                               image_scope="training")
    except ValueError as exc:
        raise UsageError(f"instance_type={instance_type!r}, framework_version={framework_version!r}, region={region!r}: "
                         f"no SageMaker PyTorch training image runs there ({_one_line(exc)}); use a GPU instance "
                         f"(ml.p3, ml.g5...) or a CPU one (ml.m5, ml.c5) in a region SageMaker serves.") from exc


def distribution(instance_type: str, instance_count: int, framework_version: str) -> dict:
    """SageMaker's ``torch_distributed`` setting for several instances (``{}`` for one), checked by the SDK."""
    if instance_count <= 1:
        return {}
    full, py = resolve_version(framework_version)
    fw_utils = require("sagemaker.core.fw_utils", extra="sagemaker", package="sagemaker-core")
    dist = {"torch_distributed": {"enabled": True}}
    try:
        fw_utils.validate_distribution(dist, None, "pytorch", full, py, None,
                                       {"instance_type": instance_type, "entry_point": ENTRY_POINT})
    except ValueError as exc:
        raise UsageError(f"instance_count={instance_count} on {instance_type} with torch {full}: SageMaker's "
                         f"torch_distributed cannot run it ({_one_line(exc)}); use GPU instances (ml.p3, ml.p4d, "
                         f"ml.g5...) with a framework_version it lists, or instance_count=1.") from exc
    return dist


def gpus_per_instance(region: str, instance_type: str) -> int | None:
    """The instance type's GPU count from the SDK's table (None when it does not list the type)."""
    info = require("sagemaker.core.instance_types_gpu_info", extra="sagemaker", package="sagemaker-core")
    try:
        entry = info.retrieve(region).get(instance_type)
    except ValueError:
        return None
    return int(entry["Count"]) if entry else None


def check_batch_split(hp: Hyperparameters, instance_count: int, gpus: int | None, instance_type: str) -> None:
    """Every host takes ``mini_batch_size`` per step, split across its GPUs (the algorithm's kv_store dist_sync):
    refuse a batch the GPUs cannot split or a data set smaller than one global batch, before anything is billed."""
    if gpus and gpus > 1 and hp.mini_batch_size % gpus:
        raise UsageError(f"mini_batch_size={hp.mini_batch_size} is split across the {gpus} GPUs of each "
                         f"{instance_type}: make it a multiple of {gpus}.")
    if instance_count > 1 and hp.num_training_samples < instance_count * hp.mini_batch_size:
        raise UsageError(f"instance_count={instance_count} x mini_batch_size={hp.mini_batch_size} is more than the "
                         f"num_training_samples={hp.num_training_samples}: each host takes mini_batch_size images per "
                         f"step, so use fewer instances or a smaller mini_batch_size.")


def manifest_settings(channels: list[dict], *, label_format: str) -> dict[str, Any]:
    """The entry point's settings for augmented-manifest channels (:func:`.request.manifest_file_channels`): the
    label format, and each split's image prefix (its images channel's S3 URI, where the ``source-ref``s start, so
    that they map to files under ``/opt/ml/input/data/<split>``); empty for other channels."""
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in channels}
    if "train_manifest" not in uris:
        return {}
    return {"manifest_label_format": label_format,
            "image_prefixes": {name: uris[name] for name in ("train", "validation") if name in uris}}


def job_hyperparameters(hp: Hyperparameters, class_names: list[str], *, seed: int = 0, program: str = ENTRY_POINT,
                        submit_directory: str | None = None, region: str | None = None, job_name: str | None = None,
                        distributed: bool = False, own: dict[str, Any] | None = None) -> dict[str, str]:
    """The job's hyperparameters, each value JSON-encoded as the SageMaker SDK encodes them for framework jobs
    (``own``: more of this project's settings, sent as ``mlic_<name>``)."""
    values: dict[str, Any] = dict(hp.to_sagemaker())
    values.update({"mlic_class_names": list(class_names), "mlic_seed": seed, "sagemaker_program": program,
                   "sagemaker_container_log_level": 20})
    values.update({f"mlic_{k}": v for k, v in (own or {}).items()})
    if submit_directory:
        values["sagemaker_submit_directory"] = submit_directory
    if region:
        values["sagemaker_region"] = region
    if job_name:
        values["sagemaker_job_name"] = job_name
    if distributed:
        values["sagemaker_torch_distributed_enabled"] = True
    return {k: json.dumps(v) for k, v in values.items()}


def split_job_hyperparameters(values: dict[str, str]) -> tuple[dict[str, str], list[str] | None]:
    """``(the algorithm's hyperparameters, class names or None)`` of a job of either engine: a job of this engine
    (it has ``sagemaker_program``) has JSON-encoded values and its own ``mlic_*`` and ``sagemaker_*`` keys."""
    if "sagemaker_program" not in values:
        return dict(values), None

    def decode(v: str) -> Any:
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v

    decoded = {k: decode(v) for k, v in values.items()}
    algorithm = {k: v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()
                 if not k.startswith(("sagemaker_", "mlic_"))}
    names = decoded.get("mlic_class_names")
    return algorithm, [str(n) for n in names] if isinstance(names, list) else None


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel() -> tuple[str, bytes]:
    """``(file name, bytes)`` of a wheel of the installed multilabel-ic: its package files as imported (no tests, no
    data, no working-tree clutter), with the installed distribution's metadata. Reproducible: the same files give
    the same bytes, so the uploaded source is reused."""
    import importlib.metadata

    from ..._version import __version__

    package = Path(__file__).resolve().parents[2]  # the multilabel_ic package that is running
    try:
        metadata = importlib.metadata.distribution("multilabel-ic").read_text("METADATA") or ""
    except importlib.metadata.PackageNotFoundError:
        metadata = ""
    if not metadata:
        metadata = f"Metadata-Version: 2.1\nName: multilabel-ic\nVersion: {__version__}\n"
    metadata = re.sub(r"(?m)^Version: .*$", f"Version: {__version__}", metadata)
    dist_info = f"multilabel_ic-{__version__}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json", ".typed"):
            files.append((f"multilabel_ic/{path.relative_to(package).as_posix()}", path.read_bytes()))
    files.append((f"{dist_info}/METADATA", metadata.encode()))
    files.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: multilabel-ic\nRoot-Is-Purelib: true\n"
                                        b"Tag: py3-none-any\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files)
    files.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return f"multilabel_ic-{__version__}-py3-none-any.whl", buf.getvalue()


def source_bundle(folder: str | Path) -> Path:
    """Write the job's ``sourcedir.tar.gz`` (entry script, requirements.txt, the wheel) into ``folder``."""
    from ..._io import atomic_write_bytes

    wheel_name, wheel = build_wheel()
    members = [(ENTRY_POINT, _ENTRY_SCRIPT.encode()), ("requirements.txt", f"./{wheel_name}\n".encode()),
               (wheel_name, wheel)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = Path(folder) / "sourcedir.tar.gz"
    atomic_write_bytes(out, gzip.compress(buf.getvalue(), mtime=0))  # mtime 0: the same files, the same bytes
    return out
