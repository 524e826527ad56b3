"""A SageMaker endpoint as a :class:`~multilabel_ic.Predictor`: same ``predict`` / ``predict_batch`` /
``predict_labels`` as the local one; as a context manager it deletes the endpoint, its config and its model on exit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...exceptions import BackendError, UsageError
from ..base import Predictor, parse_probabilities
from .teardown import by_hand, delete_endpoint, not_found

if TYPE_CHECKING:
    from ...backends.base import Model
    from .session import Session

__all__ = ["SageMakerPredictor", "ensure_model", "call_quietly", "CONTENT_TYPES"]

log = logging.getLogger("multilabel_ic.sagemaker")
CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")


def ensure_model(backend: Session, model: Model | str, name: str) -> tuple[str, bool]:
    """A SageMaker model for ``model`` (a Model, an s3:// artifact, or the name of an existing SageMaker model), and
    whether this call created it (then the caller deletes it when done)."""
    if isinstance(model, str) and not model.startswith("s3://"):
        return model, False
    artifact = model if isinstance(model, str) else model.artifact
    backend._call("sagemaker", "create_model", **backend.resources.model(name=name, role=backend.role_arn(),
                                                                        image=backend.image(), artifact=artifact))
    return name, True


def call_quietly(backend: Session, op: str, **kwargs) -> bool:
    """Make a clean-up call (a delete, a stop); a failure is logged with the CLI command that does it by hand, never
    raised."""
    try:
        backend._call("sagemaker", op, **kwargs)
        return True
    except BackendError as exc:
        log.error("%s failed (%s); do it by hand: %s", op, exc, by_hand(op, kwargs))
        return False


class SageMakerPredictor(Predictor):
    """Invoke an endpoint of the built-in algorithm with JPEG/PNG bytes; the body is ``[p_0, ..., p_{C-1}]``."""

    def __init__(self, backend: Session, endpoint_name: str, *, class_names: Sequence[str] | None = None,
                 owns_resources: bool = False, thresholds: Sequence[float] | None = None):
        self.backend, self.endpoint_name = backend, endpoint_name
        self.label = f"endpoint {endpoint_name}"
        self.class_names = list(class_names) if class_names else []
        self._names_given = bool(class_names)
        self.owns_resources = owns_resources
        self.thresholds = list(thresholds) if thresholds else None
        self._closed = False

    def wait_in_service(self, *, delay: float | None = None, max_attempts: int = 120) -> None:
        """Wait for ``InService`` with boto3's ``endpoint_in_service`` waiter; an endpoint that fails (or never
        comes up) raises :class:`BackendError` with SageMaker's ``FailureReason``."""
        from botocore.exceptions import WaiterError

        delay = self.backend.poll_interval if delay is None else delay
        waiter = self.backend.client("sagemaker").get_waiter("endpoint_in_service")
        try:
            waiter.wait(EndpointName=self.endpoint_name, WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts})
        except WaiterError as exc:
            last = exc.last_response or {}
            status = last.get("EndpointStatus") or "not InService"
            reason = last.get("FailureReason") or last.get("Error", {}).get("Message") or str(exc)
            raise BackendError(f"endpoint {self.endpoint_name} is {status}: {reason}") from exc
        log.info("endpoint %s is InService", self.endpoint_name)

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        if content_type not in CONTENT_TYPES:
            raise UsageError(f"content type {content_type!r} is not accepted; use one of {', '.join(CONTENT_TYPES)}")
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise UsageError(f"predict takes the encoded image as bytes, got {type(image).__name__}; read a file with "
                             f"Path(path).read_bytes().")
        resp = self.backend._call("sagemaker-runtime", "invoke_endpoint", EndpointName=self.endpoint_name,
                                  Body=bytes(image), ContentType=content_type, Accept="application/json")
        fix = (f"check that it serves a model of the built-in Image Classification algorithm (aws sagemaker "
               f"describe-endpoint --endpoint-name {self.endpoint_name})")
        scores = parse_probabilities(resp["Body"].read(), source=f"endpoint {self.endpoint_name}", fix=fix)
        self._check_width(scores, where=f"endpoint {self.endpoint_name} answered", names_given=self._names_given,
                          fix=fix)
        return scores

    def delete(self, *, only: Sequence[str] | None = None) -> list[str]:
        """Delete the endpoint, its endpoint config and its models, found by describing the endpoint and its config;
        a config or model that another endpoint uses is kept (see :func:`~.teardown.delete_endpoint`). Returns the
        kinds that could not be deleted (each logged with the command that does it by hand).

        ``only`` (``"endpoint"``, ``"endpoint_config"``, ``"model"``) is for resources that :meth:`deploy` has just
        created under the endpoint's own name: those are deleted by that name, without describing anything."""
        if self._closed:
            return []
        name = self.endpoint_name
        failed: list[str] = []
        if only is not None:
            for kind, op, kw in (("endpoint", "delete_endpoint", {"EndpointName": name}),
                                 ("endpoint_config", "delete_endpoint_config", {"EndpointConfigName": name}),
                                 ("model", "delete_model", {"ModelName": name})):
                if kind in only and not call_quietly(self.backend, op, **kw):
                    failed.append(kind)
            log.info("deleted %s of endpoint %s", ", ".join(k for k in only if k not in failed) or "nothing", name)
        else:
            report = delete_endpoint(self.backend, name)
            for line in report.lines():
                log.info("%s", line)
            failed = sorted({kind.replace(" ", "_") for kind, _ in report.failed})
        self._closed = True
        return failed

    def close(self) -> None:
        if not self.owns_resources:
            return
        try:
            self.delete()
        except BackendError as exc:
            if not not_found(exc):
                raise
            # the endpoint that deploy() made is gone already: its config and model carry its name
            log.warning("%s; deleting the endpoint config and model that deploy() made for it", exc)
            self.delete(only=("endpoint_config", "model"))
