"""A moto server on 127.0.0.1 for the SageMaker tests, with the emulator patches moto 5.2 needs.

- Binary InvokeEndpoint bodies: moto decodes request bodies as UTF-8; keep the raw body and give moto a base64 text
  (it only uses the body as a cache key).
- Empty dicts in Describe responses (VpcConfig: {}, ...) are dropped, as real SageMaker omits them.
"""

from __future__ import annotations

import base64
import functools
import json

import requests


def apply_patches() -> None:
    import moto.sagemaker.responses as sm
    import moto.sagemakerruntime.responses as rt

    if getattr(rt.SageMakerRuntimeResponse, "_multilabel_ic_patched", False):
        return
    rt.SageMakerRuntimeResponse.use_raw_body = True
    original_invoke = rt.SageMakerRuntimeResponse.invoke_endpoint

    @functools.wraps(original_invoke)
    def invoke_endpoint(self):
        if isinstance(self.body, (bytes, bytearray)):
            self.body = base64.b64encode(bytes(self.body)).decode("ascii")
        return original_invoke(self)

    rt.SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint
    rt.SageMakerRuntimeResponse._multilabel_ic_patched = True

    def drop_empty(value):
        if isinstance(value, dict):
            return {k: drop_empty(v) for k, v in value.items() if v != {}}
        if isinstance(value, list):
            return [drop_empty(v) for v in value]
        return value

    for name in ("describe_model", "describe_endpoint_config", "describe_endpoint", "describe_training_job",
                 "describe_transform_job"):
        original = getattr(sm.SageMakerResponse, name)

        def wrapper(self, _original=original):
            out = _original(self)
            if isinstance(out, str):
                return json.dumps(drop_empty(json.loads(out)))
            if isinstance(out, tuple) and len(out) == 3 and isinstance(out[2], str):
                return out[0], out[1], json.dumps(drop_empty(json.loads(out[2])))
            return out

        setattr(sm.SageMakerResponse, name, wrapper)


class MotoServer:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        apply_patches()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10)

    def queue_invoke_results(self, bodies: list, region: str = "us-east-1") -> None:
        results = [{"Body": json.dumps(b), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic",
                    "CustomAttributes": ""} for b in bodies]
        r = requests.post(f"{self.url}/moto-api/static/sagemaker/endpoint-results",
                          json={"region": region, "results": results}, timeout=10)
        r.raise_for_status()

    def set_training_status(self, job_name: str, status: str, reason: str | None = None,
                            region: str = "us-east-1") -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sagemaker.models import sagemaker_backends

        job = sagemaker_backends[DEFAULT_ACCOUNT_ID][region].training_jobs[job_name]
        job.training_job_status = status
        if reason:
            job.failure_reason = reason

    def stop(self) -> None:
        self.server.stop()


def created_tuning_job(tuner, monkeypatch, client, train, validation) -> tuple[dict, dict, str]:
    """``tuner.fit`` on moto, stopped once the tuning job exists (no training job runs there): the request sent, the
    job SageMaker describes, and its name."""
    import pytest

    import multilabel_ic.tune.sagemaker as tsm

    created = {}

    def stop_after_create(backend, name, **kw):
        created["name"] = name
        raise RuntimeError("stop")

    monkeypatch.setattr(tsm, "attach_tuning_job", stop_after_create)
    with pytest.raises(RuntimeError, match="stop"):
        tuner.fit(train, validation=validation)
    described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=created["name"])
    return tuner.last_request, described, created["name"]
