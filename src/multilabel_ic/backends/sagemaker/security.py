"""The settings companies put on every SageMaker resource: VPC, KMS keys, network isolation, inter-container
traffic encryption, tags and environment. Checked before anything is uploaded; each lands in the request field the
SageMaker API documents for it, on every resource the backend creates (training jobs, models, endpoint configs,
endpoints, transform jobs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...exceptions import UsageError

__all__ = ["ResourceSettings"]

_KMS_RE = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_+=.@-]+|alias/[A-Za-z0-9/_+=.@-]+|"
                     r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$")
_ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OWNER = "SageMakerBackend"


def _ids(values: Sequence[str] | str | None, option: str, prefix: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not re.match(rf"^{prefix}-[0-9a-z]+$", v):
            raise UsageError(f"The '{option}' option of {_OWNER} takes ids like '{prefix}-0123abcd'; got {v!r}.")
    if len(out) > 16 or len(set(out)) != len(out):
        raise UsageError(f"The '{option}' option of {_OWNER} takes 1 to 16 distinct ids; got {list(out)}.")
    return out


@dataclass(frozen=True)
class ResourceSettings:
    """What every resource gets. ``subnets`` and ``security_group_ids`` come together (a ``VpcConfig``);
    ``volume_kms_key`` encrypts the ML storage volumes (training, endpoint, transform), ``output_kms_key`` the model
    artifact and transform output in S3."""

    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False
    environment: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, *, subnets=None, security_group_ids=None, volume_kms_key=None, output_kms_key=None,
              enable_network_isolation=False, encrypt_inter_container_traffic=False, environment=None,
              tags=None) -> ResourceSettings:
        """Check every setting (a :class:`UsageError` naming the option and the fix) and build them."""
        subnet_ids = _ids(subnets, "subnets", "subnet")
        group_ids = _ids(security_group_ids, "security_group_ids", "sg")
        if bool(subnet_ids) != bool(group_ids):
            raise UsageError(f"A VPC needs both 'subnets' and 'security_group_ids' ({_OWNER}; CLI: --subnets, "
                             f"--security-group-ids); got only {'subnets' if subnet_ids else 'security_group_ids'}.")
        for option, key in (("volume_kms_key", volume_kms_key), ("output_kms_key", output_kms_key)):
            if key is not None and (not isinstance(key, str) or not _KMS_RE.match(key)):
                raise UsageError(f"The '{option}' option of {_OWNER} takes a KMS key id, key ARN, alias name "
                                 f"('alias/...') or alias ARN; got {key!r}.")
        for option, flag in (("enable_network_isolation", enable_network_isolation),
                             ("encrypt_inter_container_traffic", encrypt_inter_container_traffic)):
            if not isinstance(flag, bool):
                raise UsageError(f"The '{option}' option of {_OWNER} must be True or False; got {flag!r}.")
        env = dict(environment or {})
        for k, v in env.items():
            if not isinstance(k, str) or not _ENV_KEY_RE.match(k) or len(k) > 1024:
                raise UsageError(f"The 'environment' option of {_OWNER}: {k!r} is not a variable name "
                                 f"([a-zA-Z_][a-zA-Z0-9_]*, at most 1024 characters).")
            if not isinstance(v, str) or len(v) > 1024:
                raise UsageError(f"The 'environment' option of {_OWNER}: the value of {k} must be a string of at "
                                 f"most 1024 characters; got {v!r}.")
        if len(env) > 100:
            raise UsageError(f"The 'environment' option of {_OWNER} takes at most 100 variables; got {len(env)}.")
        tag_map = dict(tags or {})
        for k, v in tag_map.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 128 or k.lower().startswith("aws:"):
                raise UsageError(f"The 'tags' option of {_OWNER}: tag key {k!r} must be 1-128 characters and must "
                                 f"not start with 'aws:' (reserved by AWS).")
            if not isinstance(v, str) or len(v) > 256:
                raise UsageError(f"The 'tags' option of {_OWNER}: the value of tag {k!r} must be a string of at "
                                 f"most 256 characters; got {v!r}.")
        if len(tag_map) > 50:
            raise UsageError(f"The 'tags' option of {_OWNER} takes at most 50 tags; got {len(tag_map)}.")
        return cls(subnet_ids, group_ids, volume_kms_key, output_kms_key, enable_network_isolation,
                   encrypt_inter_container_traffic, env, tag_map)

    # -- the request fields, per resource --
    def _tags(self) -> dict[str, Any]:
        return {"Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()]} if self.tags else {}

    def _vpc(self) -> dict[str, Any]:
        return ({"VpcConfig": {"SecurityGroupIds": list(self.security_group_ids), "Subnets": list(self.subnets)}}
                if self.subnets else {})

    def apply_to_training_job(self, req: dict[str, Any]) -> dict[str, Any]:
        """CreateTrainingJob: VpcConfig, ResourceConfig.VolumeKmsKeyId, OutputDataConfig.KmsKeyId,
        EnableNetworkIsolation, EnableInterContainerTrafficEncryption, Environment, Tags."""
        req = {**req, **self._vpc(), **self._tags()}
        if self.volume_kms_key:
            req["ResourceConfig"] = {**req["ResourceConfig"], "VolumeKmsKeyId": self.volume_kms_key}
        if self.output_kms_key:
            req["OutputDataConfig"] = {**req["OutputDataConfig"], "KmsKeyId": self.output_kms_key}
        if self.enable_network_isolation:
            req["EnableNetworkIsolation"] = True
        if self.encrypt_inter_container_traffic:
            req["EnableInterContainerTrafficEncryption"] = True
        if self.environment:
            req["Environment"] = dict(self.environment)
        return req

    def model(self, *, name: str, role: str, image: str, artifact: str) -> dict[str, Any]:
        """CreateModel: PrimaryContainer.Environment, VpcConfig, EnableNetworkIsolation, Tags."""
        container: dict[str, Any] = {"Image": image, "ModelDataUrl": artifact}
        if self.environment:
            container["Environment"] = dict(self.environment)
        req: dict[str, Any] = {"ModelName": name, "ExecutionRoleArn": role, "PrimaryContainer": container,
                               **self._vpc(), **self._tags()}
        if self.enable_network_isolation:
            req["EnableNetworkIsolation"] = True
        return req

    def endpoint_config(self, *, name: str, variants: list[dict]) -> dict[str, Any]:
        """CreateEndpointConfig: KmsKeyId (the endpoint's storage volume), Tags."""
        req: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": variants, **self._tags()}
        if self.volume_kms_key:
            req["KmsKeyId"] = self.volume_kms_key
        return req

    def endpoint(self, *, name: str, config: str) -> dict[str, Any]:
        """CreateEndpoint: Tags."""
        return {"EndpointName": name, "EndpointConfigName": config, **self._tags()}

    def apply_to_transform_job(self, req: dict[str, Any]) -> dict[str, Any]:
        """CreateTransformJob: TransformOutput.KmsKeyId, TransformResources.VolumeKmsKeyId, Environment, Tags."""
        req = {**req, **self._tags()}
        if self.output_kms_key:
            req["TransformOutput"] = {**req["TransformOutput"], "KmsKeyId": self.output_kms_key}
        if self.volume_kms_key:
            req["TransformResources"] = {**req["TransformResources"], "VolumeKmsKeyId": self.volume_kms_key}
        if self.environment:
            req["Environment"] = dict(self.environment)
        return req
