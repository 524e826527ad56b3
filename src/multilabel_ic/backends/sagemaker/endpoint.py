"""A SageMaker endpoint as a :class:`~multilabel_ic.Predictor`: same ``predict`` / ``predict_batch`` /
``predict_labels`` as the local one; as a context manager it deletes the endpoint, its config and its model on exit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from ...api import Predictor
from ...exceptions import BackendError, UsageError

__all__ = ["SageMakerPredictor", "ensure_model", "CONTENT_TYPES"]

log = logging.getLogger("multilabel_ic.sagemaker")
CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")


def ensure_model(backend, model, name: str) -> str:
    """A SageMaker model for ``model`` (a Model, an s3:// artifact, or the name of an existing SageMaker model)."""
    if isinstance(model, str) and not model.startswith("s3://"):
        return model
    artifact = model if isinstance(model, str) else model.artifact
    backend._call("sagemaker", "create_model", ModelName=name, ExecutionRoleArn=backend.role_arn(),
                  PrimaryContainer={"Image": backend.image(), "ModelDataUrl": artifact})
    return name


class SageMakerPredictor(Predictor):
    """Invoke an endpoint of the built-in algorithm with JPEG/PNG bytes; the body is ``[p_0, ..., p_{C-1}]``."""

    def __init__(self, backend, endpoint_name: str, *, class_names: Sequence[str] | None = None,
                 owns_resources: bool = False, thresholds: Sequence[float] | None = None):
        self.backend, self.endpoint_name = backend, endpoint_name
        self.class_names = list(class_names) if class_names else []
        self.owns_resources = owns_resources
        self.thresholds = list(thresholds) if thresholds else None
        self._closed = False

    def wait_in_service(self, *, delay: float | None = None, max_attempts: int = 120) -> None:
        delay = self.backend.poll_interval if delay is None else delay
        for _ in range(max_attempts):
            desc = self.backend._call("sagemaker", "describe_endpoint", EndpointName=self.endpoint_name)
            status = desc["EndpointStatus"]
            if status == "InService":
                log.info("endpoint %s is InService", self.endpoint_name)
                return
            if status in ("Failed", "OutOfService"):
                raise BackendError(f"endpoint {self.endpoint_name} is {status}: "
                                   f"{desc.get('FailureReason', 'no reason given')}")
            time.sleep(delay)
        raise BackendError(f"endpoint {self.endpoint_name} not InService after {max_attempts} checks")

    def predict(self, image: bytes, content_type: str = "application/x-image") -> list[float]:
        if content_type not in CONTENT_TYPES:
            raise UsageError(f"content type {content_type!r} is not accepted; use one of {', '.join(CONTENT_TYPES)}")
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise UsageError(f"predict takes the encoded image as bytes, got {type(image).__name__}; read a file with "
                             f"Path(path).read_bytes().")
        resp = self.backend._call("sagemaker-runtime", "invoke_endpoint", EndpointName=self.endpoint_name,
                                  Body=bytes(image), ContentType=content_type, Accept="application/json")
        body = resp["Body"].read()
        try:
            probs = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BackendError(f"endpoint {self.endpoint_name} answered with a body that is not JSON: "
                               f"{body[:100]!r}") from exc
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(len(probs))]
        return [float(p) for p in probs]

    def delete(self) -> None:
        """Delete the endpoint, its endpoint config and its model."""
        if self._closed:
            return
        name = self.endpoint_name
        for op, kw in (("delete_endpoint", {"EndpointName": name}),
                       ("delete_endpoint_config", {"EndpointConfigName": name}),
                       ("delete_model", {"ModelName": name})):
            try:
                self.backend._call("sagemaker", op, **kw)
            except BackendError as exc:
                log.warning("%s for %s failed: %s", op, name, exc)
        log.info("deleted endpoint %s, its config and its model", name)
        self._closed = True

    def close(self) -> None:
        if self.owns_resources:
            self.delete()
