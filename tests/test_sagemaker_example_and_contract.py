"""The documented COCO-5 example against the moto server, the Predictor contract shared by both backends, and the
log parser on the algorithm's real line format."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import boto3
import numpy as np
import pytest
from test_sagemaker_backend import BUCKET, REGION, ROLE, JobSimulator, _backend

from multilabel_ic import ImageDecodeError, UsageError
from multilabel_ic.backends.sagemaker.cloudwatch import parse_log_lines, stream_host

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("coco5_sagemaker", ROOT / "examples" / "coco5_sagemaker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model_tar_bytes():
    from test_sagemaker_backend import _model_tar

    return _model_tar()


def test_documented_example_runs_against_the_emulator(aws, synthetic_coco_200, model_tar_bytes, tmp_path):
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    sim = JobSimulator(session, aws, model_tar_bytes)
    aws.queue_invoke_results([[0.8, 0.1, 0.6, 0.2, 0.05]])
    ann, images = synthetic_coco_200
    result = _load_example().run(annotations=ann, images=images, role=ROLE, bucket=BUCKET, region=REGION,
                                 train_size=150, output_dir=tmp_path, session=session, poll_interval=0.01)
    assert result["probabilities"] == [0.8, 0.1, 0.6, 0.2, 0.05]
    assert sim.requests[0]["HyperParameters"]["num_training_samples"] == "2500"
    assert session.client("sagemaker").list_endpoints()["Endpoints"] == []


@pytest.fixture(params=["local", "sagemaker"])
def predictor(request, aws, model_tar_bytes, tmp_path):
    """The same trained model behind the local predictor and behind an (emulated) endpoint."""
    art = tmp_path / "model.tar.gz"
    art.write_bytes(model_tar_bytes)
    names = ["person", "bicycle", "car", "motorcycle", "airplane"]
    from multilabel_ic.model.predictor import LocalPredictor

    local = LocalPredictor(art, class_names=names, device="cpu")
    if request.param == "local":
        yield local, local
        return
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    session.client("s3").put_object(Bucket=BUCKET, Key="m/model.tar.gz", Body=model_tar_bytes)
    backend = _backend(session)
    endpoint = backend.deploy(f"s3://{BUCKET}/m/model.tar.gz")
    endpoint.class_names = names
    yield endpoint, local
    endpoint.close()


def _jpeg(coco5, i=0):
    return coco5.image_path(i).read_bytes()


def test_predictor_contract(predictor, coco5, aws):
    pred, local = predictor
    expected = [local.predict(_jpeg(coco5, i)) for i in range(2)]
    if pred is not local:  # the emulated endpoint answers what the real container would: the same probabilities
        aws.queue_invoke_results(expected)
    probs = pred.predict(_jpeg(coco5, 0))
    assert isinstance(probs, list) and len(probs) == 5 and all(isinstance(p, float) and 0 <= p <= 1 for p in probs)
    assert probs == pytest.approx(expected[0], abs=1e-6)
    assert pred.predict(_jpeg(coco5, 0), content_type="image/jpeg") == pytest.approx(probs, abs=1e-6)
    lines = pred.predict_batch([_jpeg(coco5, 0)], output="jsonlines").splitlines()
    assert json.loads(lines[0]) == {"prediction": pytest.approx(probs, abs=1e-6)}
    labels = pred.predict_labels(_jpeg(coco5, 0), threshold=[p - 1e-9 for p in probs])
    assert labels == pred.class_names
    assert pred.predict_labels([_jpeg(coco5, 0)], threshold=1.5) == [[]]
    with pytest.raises(UsageError, match="content type 'text/plain' is not accepted"):
        pred.predict(b"abc", content_type="text/plain")
    # evaluate(): the same metrics whichever predictor answers
    sub = coco5.subset(range(2))
    if pred is not local:
        aws.queue_invoke_results(expected)  # the endpoint answers image 0 and 1 with the local probabilities
    ev = pred.evaluate(sub)
    from multilabel_ic.metrics import evaluate

    assert ev == evaluate(sub.labels, np.asarray(expected), class_names=pred.class_names)
    with pytest.raises(ValueError, match="output must be"):
        pred.predict_batch([_jpeg(coco5, 0)], output="csv")


def test_local_predictor_names_bad_bytes(model_tar_bytes, tmp_path):
    art = tmp_path / "model.tar.gz"
    art.write_bytes(model_tar_bytes)
    from multilabel_ic.model.predictor import LocalPredictor

    with pytest.raises(ImageDecodeError, match="<request body>"):
        LocalPredictor(art).predict(b"\x89PNG garbage")


def test_log_parser_on_the_algorithms_lines():
    lines = [
        "[09/07/2019 10:00:01 INFO 139872] Epoch[0] Batch [20]#011Speed: 111.811 samples/sec#011accuracy=0.452381",
        "[09/07/2019 10:00:11 INFO 139872] Epoch[0] Batch [40]#011Speed: 131.393 samples/sec#011accuracy=0.570503",
        "[09/07/2019 10:00:30 INFO 139872] Epoch[0] Train-accuracy=0.677083",
        "[09/07/2019 10:00:30 INFO 139872] Epoch[0] Train-top_k_accuracy_2=0.273438",
        "[09/07/2019 10:00:30 INFO 139872] Epoch[0] Time cost=102.745",
        "[09/07/2019 10:00:33 INFO 139872] Epoch[0] Validation-accuracy=0.729492",
        "Epoch[1] Batch [20]\tSpeed: 204.183 samples/sec\taccuracy=0.8",  # tabs, no prefix (local logs)
        "Epoch[1] Batch [20-40]\tSpeed: 200.0 samples/sec\taccuracy=0.85",  # MXNet 1.4+ batch ranges
        "unrelated line",
    ]
    p = parse_log_lines(lines)
    e0, e1 = p.epochs()
    assert e0["speed"] == [111.811, 131.393] and e0["batches"] == [20, 40]
    assert e0["train_accuracy_windows"] == [0.452381, 0.570503]
    assert e0["train_accuracy"] == 0.677083 and e0["train_top_k_accuracy_2"] == 0.273438
    assert e0["time_cost"] == 102.745 and e0["validation_accuracy"] == 0.729492
    assert e0["images_per_sec"] == pytest.approx((111.811 + 131.393) / 2)
    assert e1["speed"] == [204.183, 200.0]
    assert p.lines == len(lines)


def test_log_parser_per_host():
    p = parse_log_lines([])
    p.feed("Epoch[0] Batch [20]#011Speed: 100.0 samples/sec#011accuracy=0.5", host="algo-1", timestamp_ms=2000)
    p.feed("Epoch[0] Batch [20]#011Speed: 90.0 samples/sec#011accuracy=0.5", host="algo-2", timestamp_ms=1500)
    s = p.summary()
    assert s["speed_median_per_host"] == {"algo-1": 100.0, "algo-2": 90.0} and s["images_per_sec_total"] == 190.0
    assert s["first_step_ms"] == 1500
    assert stream_host("ic-job-2026/algo-2-1700000000") == "algo-2"


@pytest.mark.aws
@pytest.mark.skipif(not os.environ.get("MULTILABEL_IC_AWS_ROLE") or not os.environ.get("MULTILABEL_IC_AWS_BUCKET"),
                    reason="real AWS: set MULTILABEL_IC_AWS_ROLE and MULTILABEL_IC_AWS_BUCKET (and credentials)")
def test_whole_flow_on_real_aws(tmp_path, monkeypatch):
    """Runs the example on your own account: a real training job (ml.p3.2xlarge) and endpoint. Costs money."""
    from multilabel_ic.data import generate_coco

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    ann, images = generate_coco(tmp_path / "data", num_images=300, seed=0)
    result = _load_example().run(annotations=ann, images=images, role=os.environ["MULTILABEL_IC_AWS_ROLE"],
                                 bucket=os.environ["MULTILABEL_IC_AWS_BUCKET"],
                                 region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), train_size=200,
                                 output_dir=tmp_path / "run", overrides={"num_training_samples": 200, "epochs": 1,
                                                                         "mini_batch_size": 32})
    assert len(result["probabilities"]) == 5


def test_local_coco5_example_runs(synthetic_coco, tmp_path):
    spec = importlib.util.spec_from_file_location("coco5_local", ROOT / "examples" / "coco5_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ann, images = synthetic_coco
    result = mod.run(annotations=ann, images=images, output_dir=tmp_path, train_size=90, progress=False,
                     overrides={"use_pretrained_model": 0, "image_shape": "3,32,32", "resize": 36, "epochs": 1,
                                "mini_batch_size": 16, "num_training_samples": 90})
    assert len(result["probabilities"]) == 5 and Path(result["artifact"]).exists()
    assert result["metrics"]["hyperparameters"]["augmentation_type"] == "crop_color_transform"
