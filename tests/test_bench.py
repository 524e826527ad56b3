"""The benchmarks' parsing, arithmetic and report writing (never this machine's speed)."""

import json
import statistics
from pathlib import Path

import boto3
import numpy as np
import pytest

from multilabel_ic import Hyperparameters
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.backends.sagemaker.cloudwatch import LOG_GROUP
from multilabel_ic.bench.common import cpu_description, stats
from multilabel_ic.bench.run import format_table, side_by_side, write_report
from multilabel_ic.bench.sagemaker import (
    figures_from_job,
    figures_from_log_file,
    job_figures,
    load_prices,
    read_log_export,
)

DATA = Path(__file__).parent / "data"
PRICES = {"as_of": "test", "region": "us-east-1", "currency": "USD", "per_hour": {"ml.p3.2xlarge": 3.6}}


def test_stats():
    s = stats([3.0, 1.0, 2.0, 4.0])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0 and s["n"] == 4
    assert stats([])["median"] is None


def test_cpu_description_tells_generations_apart():
    block = "processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: {fam}\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
    zen5 = block.format(i=0, fam=26) + block.format(i=1, fam=25)
    assert cpu_description(zen5) == "AMD EPYC, family 26 model 2"  # the first processor's block
    assert cpu_description("processor\t: 0\nmodel name\t: Neoverse-V2\n") == "Neoverse-V2"  # no family (Arm)


def test_packaged_price_table_is_dated_with_region():
    p = load_prices()
    assert p["as_of"] and p["region"] == "us-east-1" and p["currency"] == "USD"
    assert all(isinstance(v, (int, float)) and v > 0 for v in p["per_hour"].values())


def test_figures_from_a_two_host_log_export():
    f = figures_from_log_file(DATA / "sagemaker-2host.log", instance_type="ml.p3.2xlarge",
                              created="2026-11-20T09:58:00Z", billable_seconds=400, prices=PRICES)
    assert f["instance_count"] == 2
    # per-host medians: algo-1 median(204.183, 210, 206) = 206; algo-2 median(198.5, 201.5, 199.5) = 199.5
    assert f["images_per_sec_per_host"] == {"algo-1": 206.0, "algo-2": 199.5}
    assert f["images_per_sec"] == pytest.approx(405.5)
    assert f["seconds_per_epoch"] == pytest.approx(30.0)  # median of the Time cost lines 30, 32, 28, 30
    assert f["time_to_first_step_s"] == pytest.approx(310.0)  # 10:03:10 - 09:58:00
    assert f["cost_per_epoch"] == pytest.approx(3.6 * 2 * f["seconds_per_epoch"] / 3600)
    assert f["per_host_epochs"]["algo-2"][0] == {"epoch": 0, "images_per_sec": 200.0, "time_cost": 32.0}
    assert f["billable_seconds"] == 400


def test_json_export_and_unknown_instance_price(tmp_path):
    events = [{"logStreamName": "job/algo-1-1", "timestamp": 1000,
               "message": "Epoch[0] Batch [20]#011Speed: 50.000 samples/sec#011accuracy=0.5"},
              {"logStreamName": "job/algo-1-1", "timestamp": 2000, "message": "Epoch[0] Time cost=10.000"}]
    p = tmp_path / "export.json"
    p.write_text(json.dumps({"events": events}))
    parser = read_log_export(p)
    f = job_figures(parser, instance_type="ml.x.unknown", created_ms=0, prices=PRICES)
    assert f["images_per_sec"] == 50.0 and f["seconds_per_epoch"] == 10.0 and f["time_to_first_step_s"] == 1.0
    assert f["price_per_instance_hour"] is None and f["cost_per_epoch"] is None


def test_figures_from_a_job_in_the_emulator(aws):
    session = boto3.Session(region_name="us-east-1")
    sm = session.client("sagemaker")
    sm.create_training_job(
        TrainingJobName="bench-job", RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1",
                                "TrainingInputMode": "File"},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/train/", "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": "s3://b/out"},
        ResourceConfig={"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    created = sm.describe_training_job(TrainingJobName="bench-job")["CreationTime"]
    logs = session.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="bench-job/algo-1-1700000000")
    t0 = int(created.timestamp() * 1000) + 120_000
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="bench-job/algo-1-1700000000", logEvents=[
        {"timestamp": t0, "message": "Epoch[0] Batch [20]#011Speed: 300.000 samples/sec#011accuracy=0.5"},
        {"timestamp": t0 + 1, "message": "Epoch[0] Batch [40]#011Speed: 320.000 samples/sec#011accuracy=0.6"},
        {"timestamp": t0 + 2, "message": "Epoch[0] Time cost=20.000"}])
    backend = SageMakerBackend(role="unused", bucket="unused", region="us-east-1", session=session, progress=False)
    f = figures_from_job(backend, "bench-job", prices=PRICES)
    assert f["images_per_sec"] == 310.0 and f["seconds_per_epoch"] == 20.0
    assert f["time_to_first_step_s"] == pytest.approx(120.0, abs=1.0)
    assert f["cost_per_epoch"] == pytest.approx(3.6 * 20 / 3600)
    assert f["source"] == "training job bench-job" and f["engine"] == "built-in"  # from its image


def test_side_by_side_report_is_written(tmp_path):
    local = [{"label": "float32 b16", "device_name": "CPU (x86_64, 2 cores)", "machine": "box",
              "images_per_sec": 12.5, "seconds_per_epoch": 200.0}]
    sm = [job_figures(read_log_export(DATA / "sagemaker-2host.log"), instance_type="ml.p3.2xlarge", prices=PRICES)]
    rows = side_by_side(local, sm)
    assert rows[0]["where"].startswith("local") and rows[1]["where"] == "SageMaker 2 x ml.p3.2xlarge"
    assert rows[1]["cost_per_epoch"] == pytest.approx(sm[0]["cost_per_epoch"])
    table = format_table(rows)
    assert "12.5" in table and "405.5" in table
    report = {"machine": {"date": "2026-11-24T00:00:00Z"}, "side_by_side": rows}
    j, p = write_report(report, tmp_path)
    assert json.loads(j.read_text())["side_by_side"][1]["images_per_sec"] == pytest.approx(405.5)
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_bench_measurement_functions_report_consistent_figures(coco5, tmp_path):
    """Tiny runs of each measurement: the arithmetic between the figures holds (no speed is asserted)."""
    from multilabel_ic.bench import local as L

    hp = Hyperparameters(num_classes=5, num_training_samples=64, num_layers=20, image_shape="3,28,28", resize=32,
                         mini_batch_size=4, multi_label=1, augmentation_type="crop_color_transform")
    import time

    store, _ = L.image_store(hp, coco5, tmp_path / "cache")
    with pytest.raises(ValueError, match="reads the decode cache"):
        L.bench_training(hp, coco5, device="cpu", steps=4, warmup=1, workers=0, window=2)
    t0 = time.perf_counter()
    e2e = L.bench_training(hp, coco5, device="cpu", steps=4, warmup=1, workers=0, window=2, store=store)
    wall = time.perf_counter() - t0
    assert e2e["steps"] == 4 and len(e2e["images_per_sec_windows"]) == 2
    assert e2e["images_per_sec"]["median"] == pytest.approx(sum(e2e["images_per_sec_windows"]) / 2)
    assert 0 <= e2e["data_wait_fraction"] <= 1
    assert e2e["epoch_seconds_from_median_step"] == pytest.approx(e2e["median_step_seconds"] * 16)
    assert 0 < e2e["time_to_first_step_s"] < wall - sum(1 / r * 2 * 4 for r in e2e["images_per_sec_windows"]) + 1e-6
    ceiling = L.bench_ceiling(hp, device="cpu", steps=2, warmup=1, window=1)
    assert ceiling["steps"] == 2 and ceiling["images_per_sec"]["n"] == 2
    pipe = L.bench_pipeline(hp, coco5, n_images=8, workers=0, batch=4)
    for r in pipe["results"].values():
        assert r["multilabel_ic"]["images"] == 4 and r["pil_torchvision"]["images"] == 4  # first batch excluded
        assert r["ratio"] == pytest.approx(r["multilabel_ic"]["images_per_sec"] / r["pil_torchvision"]["images_per_sec"])
    reference = L.bench_training(hp, coco5, device="cpu", steps=2, warmup=1, workers=0, window=1, pipeline="reference")
    assert reference["pipeline"] == "reference" and reference["steps"] == 2
    plain = L.bench_plain_loop(hp.replace(num_layers=18, image_shape="3,32,32", resize=36), coco5, device="cpu", steps=2, warmup=1, workers=0, window=1)
    assert plain["steps"] == 2 and plain["images_per_sec"]["n"] == 2 and "torchvision resnet18" in plain["what"]
    jpeg_store, _ = L.image_store(hp, coco5, tmp_path / "cache", encoding="jpeg")
    host = L.bench_host(hp, coco5, store, n_images=10, batch=4, jpeg_store=jpeg_store)
    assert host["images"] == 8 and host["cache_bytes_per_image"] == pytest.approx(store.nbytes / len(store))
    assert jpeg_store.encoding == "jpeg" and host["jpeg_cache_bytes_per_image"] < host["cache_bytes_per_image"]
    assert host["jpeg_cache_read_ms"] > 0 and host["jpeg_batched_host_ms"] > 0
    jpeg_diff = host["jpeg_abs_diff_levels"]
    assert 0 < jpeg_diff["mean"] < 3 and jpeg_diff["p99"] <= jpeg_diff["max"]
    assert host["reference_over_batched"] == pytest.approx(host["reference_host_ms"] / host["batched_host_ms"])
    inter = L.bench_interleaved(hp, coco5, store, device="cpu", steps=4, warmup=1, window=2)
    assert inter["steps"] == 4 and len(inter["ratio_per_window"]) == 2
    assert inter["end_to_end_over_ceiling"] == pytest.approx(statistics.median(
        [a / b for a, b in zip(inter["end_to_end_images_per_sec_windows"], inter["ceiling_images_per_sec_windows"])]))
    aug = L.bench_device_augment(hp, coco5, store, device="cpu", batches=3, warmup=1)
    assert aug["images_per_sec"]["n"] == 3 and aug["batch_size"] == 4
    assert aug["method"] == "opencv" and aug["tensor_method_images_per_sec"]["n"] == 3  # a CPU: both methods


def test_bench_inference_compares_the_runtimes_on_one_batch(coco5, tmp_path):
    """Every predictor variant answers the same batch (to 1e-4), and each speed-up is its rate over the first's. The
    benchmark's network gives probabilities away from 0 and 1, where a difference between runtimes would show."""
    from multilabel_ic.bench import local as L
    from multilabel_ic.model.artifact import write_model_tar
    from multilabel_ic.model.network import mxnet_state_dict
    from multilabel_ic.model.predictor import LocalPredictor

    hp = Hyperparameters(num_classes=5, num_training_samples=64, num_layers=20, image_shape="3,28,28", resize=32,
                         mini_batch_size=4, multi_label=1)
    args, aux = mxnet_state_dict(L.trained_like_network(hp))
    art = write_model_tar(tmp_path / "m.tar.gz", {1: ({k: v.numpy() for k, v in args.items()},
                                                      {k: v.numpy() for k, v in aux.items()})},
                          num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)
    probs = np.asarray(LocalPredictor(art, device="cpu").predict_batch(
        [coco5.image_path(i).read_bytes() for i in range(6)]))
    assert ((probs > 0.02) & (probs < 0.98)).mean() > 0.5
    out = L.bench_inference(hp, coco5, artifact=art, device="cpu", n_single=3, batch=6, rounds=2)
    names = list(out["variants"])
    assert len(names) == 4 and names[2:] == ["runtime='onnxruntime'", "runtime='openvino'"]
    first = out["variants"][names[0]]["batch_images_per_sec"]
    for name, v in out["variants"].items():
        assert v["max_abs_diff_vs_first"] <= 1e-4 and v["single_image_ms"]["n"] == 3
        assert out["speedup_over_first"][name] == pytest.approx(v["batch_images_per_sec"] / first)
    assert out["batch_images_per_sec"] == max(v["batch_images_per_sec"] for v in out["variants"].values())


def test_bench_measures_the_compiled_step(coco5):
    """bench --compile: the ceiling and the end-to-end step with the network through torch.compile."""
    from multilabel_ic.bench import local as L

    hp = Hyperparameters(num_classes=5, num_training_samples=64, num_layers=20, image_shape="3,28,28", resize=32,
                         mini_batch_size=4, multi_label=1)
    ceiling = L.bench_ceiling(hp, device="cpu", steps=2, warmup=1, window=1, compile=True)
    assert ceiling["compiled"] is True and ceiling["steps"] == 2 and ceiling["images_per_sec"]["median"] > 0
