"""Pure functions that build the CreateTrainingJob request and its channels for the built-in algorithm.

Kept free of I/O so the exact request can be checked without AWS (and against what the emulator records).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

__all__ = ["image_uri", "job_name", "channel", "lst_channels", "recordio_channels", "manifest_channels",
           "manifest_file_channels",
           "training_job_request", "CONTENT_TYPES"]

CONTENT_TYPES = {"image": "application/x-image", "recordio": "application/x-recordio",
                 "model": "application/x-sagemaker-model"}
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def image_uri(region: str) -> str:
    """The built-in algorithm's training/inference image for ``region`` (from the SageMaker SDK's bundled table)."""
    from ...exceptions import UsageError, require

    image_uris = require("sagemaker.core.image_uris", extra="sagemaker", package="sagemaker-core")
    try:
        return image_uris.retrieve("image-classification", region)
    except ValueError as exc:
        raise UsageError(f"region={region!r}: the built-in Image Classification algorithm has no image there "
                         f"({' '.join(str(exc).split())[:400]})") from exc


def job_name(base: str = "ic-multilabel") -> str:
    """A unique, valid SageMaker job name: ``base-YYYYmmdd-HHMMSS-xxxx`` (at most 63 characters)."""
    clean = re.sub(r"[^a-zA-Z0-9-]", "-", base).strip("-") or "ic"
    clean = re.sub(r"-+", "-", clean)
    suffix = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    name = f"{clean[: 63 - len(suffix) - 1]}-{suffix}"
    assert _NAME_RE.match(name), name
    return name


def channel(name: str, s3_uri: str, content_type: str, *, data_type: str = "S3Prefix", input_mode: str | None = None,
            attribute_names: list[str] | None = None, record_wrapper: str | None = None) -> dict:
    source: dict[str, Any] = {"S3DataType": data_type, "S3Uri": s3_uri, "S3DataDistributionType": "FullyReplicated"}
    if attribute_names:
        source["AttributeNames"] = attribute_names
    ch = {"ChannelName": name, "DataSource": {"S3DataSource": source}, "ContentType": content_type}
    if input_mode:
        ch["InputMode"] = input_mode
    if record_wrapper:
        ch["RecordWrapperType"] = record_wrapper
    return ch


def lst_channels(uris: dict[str, str]) -> list[dict]:
    """The MS-COCO example's four channels: images and .lst files, all ``application/x-image``; ``uris`` maps each
    channel name to its ``s3://`` prefix."""
    return [channel(c, uris[c], CONTENT_TYPES["image"]) for c in ("train", "validation", "train_lst",
                                                                  "validation_lst")]


def recordio_channels(uris: dict[str, str]) -> list[dict]:
    return [channel(c, uris[c], CONTENT_TYPES["recordio"]) for c in ("train", "validation")]


def manifest_channels(train_manifest_uri: str, validation_manifest_uri: str, *, label_format: str = "multi-hot",
                      attribute_names: tuple[str, str] = ("source-ref", "class")) -> list[dict]:
    """Augmented manifests in Pipe mode; class-id labels need ``label-format=class-id`` in the content type."""
    ct = CONTENT_TYPES["recordio"] + ("; label-format=class-id" if label_format == "class-id" else "")
    return [channel(name, uri, ct, data_type="AugmentedManifestFile", input_mode="Pipe",
                    attribute_names=list(attribute_names), record_wrapper="RecordIO")
            for name, uri in (("train", train_manifest_uri), ("validation", validation_manifest_uri))]


def manifest_file_channels(image_uris: dict[str, str], manifest_uris: dict[str, str]) -> list[dict]:
    """Augmented manifests for a File-mode job (the project's engine): SageMaker takes ``AugmentedManifestFile``
    in Pipe mode only, so each split is two S3Prefix channels, its images (``train``, ``validation``:
    the prefix the manifest's ``source-ref``s start with) and its manifest (``train_manifest``, ``validation_manifest``)."""
    return [channel(name, image_uris[name], CONTENT_TYPES["image"]) for name in ("train", "validation")] + [
        channel(f"{name}_manifest", manifest_uris[name], "application/jsonlines") for name in ("train", "validation")]


def training_job_request(*, name: str, role_arn: str, image: str, hyperparameters: dict[str, str],
                         channels: list[dict], output_path: str, instance_type: str, instance_count: int,
                         volume_size: int, max_run: int, input_mode: str = "File", use_spot: bool = False,
                         max_wait: int | None = None, checkpoint_s3_uri: str | None = None,
                         model_uri: str | None = None) -> dict:
    """The keyword arguments of ``sagemaker.create_training_job`` for the built-in algorithm (VPC, KMS, tags and
    the other company settings are added by :class:`~.security.ResourceSettings`)."""
    channels = list(channels)
    req: dict[str, Any]
    if model_uri:  # incremental training from an earlier model.tar.gz
        channels.append(channel("model", model_uri, CONTENT_TYPES["model"]))
    req = {
        "TrainingJobName": name,
        "RoleArn": role_arn,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": input_mode},
        "HyperParameters": dict(hyperparameters),
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": int(instance_count),
                           "VolumeSizeInGB": int(volume_size)},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_run)},
    }
    if use_spot:
        req["EnableManagedSpotTraining"] = True
        req["StoppingCondition"]["MaxWaitTimeInSeconds"] = int(max_wait or max_run)
        if checkpoint_s3_uri:
            req["CheckpointConfig"] = {"S3Uri": checkpoint_s3_uri}
    return req
