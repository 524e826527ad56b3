"""What the endpoint, teardown and initial-model helpers use of a :class:`~multilabel_ic.backends.sagemaker.SageMakerBackend`:
its AWS calls and settings, as a Protocol, so that they type-check against it without importing the backend that
imports them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .security import ResourceSettings

__all__ = ["Session"]


class Session(Protocol):
    region: str
    prefix: str
    progress: bool
    poll_interval: float
    resources: ResourceSettings

    def client(self, service: str) -> Any: ...

    def _call(self, service: str, op: str, **kwargs: Any) -> Any: ...

    def image(self) -> str: ...

    def role_arn(self) -> str: ...

    def check_artifact(self, uri: str) -> dict: ...

    def _need_bucket(self) -> str: ...
