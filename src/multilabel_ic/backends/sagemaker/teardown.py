"""Deleting an endpoint with what belongs to it, found by describing it, never by assuming names.

An endpoint names its endpoint config, the config names its models; another endpoint may use the same config or
model (a model can serve several endpoints), so before anything is deleted the other endpoints are described too,
and what they use is kept. Nothing is deleted when the endpoint does not exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...exceptions import BackendError

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Teardown", "delete_endpoint", "not_found", "by_hand"]

log = logging.getLogger("multilabel_ic.sagemaker")


@dataclass
class Teardown:
    """What :func:`delete_endpoint` did: ``deleted`` and ``failed`` hold ``(kind, name)`` pairs, ``kept`` maps
    ``(kind, name)`` to the reason it was kept; ``notes`` are what the user should know (e.g. a missing config)."""

    endpoint: str
    config: str | None = None
    models: list[str] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"deleted {kind} {name}" for kind, name in self.deleted]
        out += [f"kept {kind} {name}: {why}" for (kind, name), why in self.kept.items()]
        return out + self.notes


def by_hand(op: str, kwargs: dict) -> str:
    """The AWS CLI command that makes the call ``op(**kwargs)``."""
    args = " ".join(f"--{''.join('-' + c.lower() if c.isupper() else c for c in k).lstrip('-')} {v}"
                    for k, v in kwargs.items())
    return f"aws sagemaker {op.replace('_', '-')} {args}"


def not_found(exc: BaseException) -> bool:
    """Whether a failed SageMaker call failed because the resource does not exist."""
    cause = exc.__cause__ if isinstance(exc, BackendError) else exc
    err = getattr(cause, "response", {}).get("Error", {}) if cause is not None else {}
    return err.get("Code") in ("ValidationException", "ResourceNotFound") and "could not find" in str(
        err.get("Message", "")).lower()


def _describe(backend: Session, op: str, **kwargs) -> dict | None:
    """The description, or None when the resource does not exist."""
    try:
        return backend._call("sagemaker", op, **kwargs)
    except BackendError as exc:
        if not_found(exc):
            return None
        raise


def _configs_of(desc: dict) -> list[str]:
    names = [desc.get("EndpointConfigName"), (desc.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")]
    return [n for n in dict.fromkeys(names) if n]


def _models_of(config: dict) -> list[str]:
    variants = list(config.get("ProductionVariants") or []) + list(config.get("ShadowProductionVariants") or [])
    return [n for n in dict.fromkeys(v.get("ModelName") for v in variants) if n]


def _users(backend: Session, endpoint: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """For every other endpoint: ``{config: [endpoints]}`` and ``{model: [endpoints]}`` of what they use."""
    configs: dict[str, list[str]] = {}
    models: dict[str, list[str]] = {}
    cache: dict[str, dict | None] = {}
    from botocore.exceptions import BotoCoreError, ClientError

    paginator = backend.client("sagemaker").get_paginator("list_endpoints")
    try:
        others = [e["EndpointName"] for page in paginator.paginate() for e in page.get("Endpoints", [])]
    except (BotoCoreError, ClientError) as exc:
        raise BackendError(f"could not list the endpoints to check which of them use the config and model of "
                           f"{endpoint} ({exc}); nothing was deleted. The credentials need sagemaker:ListEndpoints.") \
            from exc
    for other in others:
        if other == endpoint:
            continue
        desc = _describe(backend, "describe_endpoint", EndpointName=other)
        for config in _configs_of(desc or {}):
            configs.setdefault(config, []).append(other)
            if config not in cache:
                cache[config] = _describe(backend, "describe_endpoint_config", EndpointConfigName=config)
            for model in _models_of(cache[config] or {}):
                models.setdefault(model, []).append(other)
    return configs, models


def _delete(backend: Session, report: Teardown, kind: str, name: str, op: str, **kwargs) -> bool:
    try:
        backend._call("sagemaker", op, **kwargs)
    except BackendError as exc:
        if not_found(exc):
            report.notes.append(f"{kind} {name} was already gone")
            return True
        log.error("%s failed (%s); do it by hand: %s", op, exc, by_hand(op, kwargs))
        report.failed.append((kind, name))
        return False
    report.deleted.append((kind, name))
    return True


def delete_endpoint(backend: Session, endpoint: str) -> Teardown:
    """Delete ``endpoint``, then its endpoint config and the config's models, except what another endpoint uses.

    The names come from DescribeEndpoint and DescribeEndpointConfig. A missing endpoint is a :class:`BackendError`
    (nothing is deleted); a missing config deletes the endpoint and says that its models could not be found.
    """
    try:
        desc = backend._call("sagemaker", "describe_endpoint", EndpointName=endpoint)
    except BackendError as exc:
        if not not_found(exc):
            raise
        raise BackendError(f"endpoint {endpoint!r} does not exist in {backend.region}; nothing was deleted. List the "
                           f"endpoints with: aws sagemaker list-endpoints --region {backend.region}") \
            from exc.__cause__
    report = Teardown(endpoint)
    configs = _configs_of(desc)
    report.config = configs[0] if configs else None
    config_desc = {c: _describe(backend, "describe_endpoint_config", EndpointConfigName=c) for c in configs}
    for config, cdesc in config_desc.items():
        if cdesc is None:
            report.notes.append(f"endpoint config {config} of {endpoint} no longer exists, so its models are not "
                                f"known: none was deleted (find them with: aws sagemaker list-models)")
        for model in _models_of(cdesc or {}):
            if model not in report.models:
                report.models.append(model)
    used_configs, used_models = _users(backend, endpoint)
    if not _delete(backend, report, "endpoint", endpoint, "delete_endpoint", EndpointName=endpoint):
        for config in config_desc:
            report.kept[("endpoint config", config)] = f"endpoint {endpoint} could not be deleted"
        return report
    for config, cdesc in config_desc.items():
        if config in used_configs:
            report.kept[("endpoint config", config)] = f"used by endpoint {', '.join(used_configs[config])}"
        elif cdesc is not None:
            _delete(backend, report, "endpoint config", config, "delete_endpoint_config", EndpointConfigName=config)
    for model in report.models:
        if model in used_models:
            report.kept[("model", model)] = f"used by endpoint {', '.join(used_models[model])}"
        else:
            _delete(backend, report, "model", model, "delete_model", ModelName=model)
    return report
