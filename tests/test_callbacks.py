"""The training-loop hooks: metrics.jsonl grows while a run trains, args.json and the plot are written, and the
TensorBoard and MLflow adapters record what they should (read back from the event file and the MLflow file store)."""

from __future__ import annotations

import json

import pytest

from multilabel_ic import Hyperparameters, Trainer, UsageError
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.callbacks import Callback, MLflow, TensorBoard, scalars_of

TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=3,
            learning_rate=0.01, optimizer="adam", multi_label=1)


class Spy(Callback):
    """Records every hook, and how many lines metrics.jsonl holds when each epoch ends."""

    def __init__(self):
        self.calls, self.lines_at_epoch_end = [], []

    def on_train_start(self, run):
        self.calls.append(("start", len(run.history)))
        self.out = run.output_dir

    def on_epoch_end(self, record):
        self.calls.append(("epoch", record["epoch"]))
        self.lines_at_epoch_end.append(len((self.out / "metrics.jsonl").read_text().splitlines()))

    def on_train_end(self, metrics):
        self.calls.append(("end", len(metrics["epochs"])))


class Broken(Callback):
    def on_epoch_end(self, record):
        raise RuntimeError("tracker down")


@pytest.fixture(scope="module")
def splits(coco5):
    return coco5.subset(range(64)).split(48, seed=0)


@pytest.fixture(scope="module")
def tracked_run(splits, tmp_path_factory):
    import os

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 asks for it to use the file store
    train, val = splits
    out = tmp_path_factory.mktemp("tracked")
    spy = Spy()
    uri = (out.parent / f"{out.name}-mlruns").as_uri()
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    model = Trainer(hp, output_dir=out / "run", options=LocalOptions(num_workers=0, progress=False),
                    callbacks=[spy, Broken(), TensorBoard(), MLflow(uri, experiment="tests")]).fit(train, val)
    return model, out / "run", spy, uri


def test_metrics_jsonl_grows_while_training_and_matches_the_history(tracked_run):
    model, out, spy, _ = tracked_run
    assert spy.calls == [("start", 0), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("end", 3)]
    assert spy.lines_at_epoch_end == [1, 2, 3]  # written as each epoch ends, readable while the run trains
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert lines[-1]["validation_mAP"] == pytest.approx(model.metrics["epochs"][-1]["validation_mAP"])


def test_args_json_and_plot_are_written(tracked_run):
    model, out, _, _ = tracked_run
    args = json.loads((out / "args.json").read_text())
    assert args["backend"] == "local" and args["hyperparameters"]["epochs"] == "3"
    assert args["class_names"] == model.class_names and args["settings"]["seed"] == 0
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failing_callback_is_logged_and_the_run_goes_on(tracked_run, caplog, tmp_path):
    from multilabel_ic.callbacks import CallbackList

    model, _, _, _ = tracked_run
    assert model.metrics["final"]["mAP"] is not None  # the run with Broken in it finished
    after = Spy()
    after.out = tmp_path
    (tmp_path / "metrics.jsonl").write_text("")
    CallbackList([Broken(), after]).on_epoch_end({"epoch": 0})
    assert "callback Broken.on_epoch_end failed: RuntimeError: tracker down" in caplog.text
    assert after.calls == [("epoch", 0)]


def test_tensorboard_event_file_holds_every_epoch(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, out, _, _ = tracked_run
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train_loss", "validation_mAP", "validation_per_class_AP/person", "final/mAP"} <= set(tags)
    losses = acc.Scalars("train_loss")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [e.value for e in losses] == pytest.approx([r["train_loss"] for r in model.metrics["epochs"]], rel=1e-6)
    assert acc.Scalars("final/mAP")[0].value == pytest.approx(model.metrics["final"]["mAP"], rel=1e-6)


def test_mlflow_file_store_holds_params_metrics_and_artifacts(tracked_run):
    from mlflow.tracking import MlflowClient

    model, out, _, uri = tracked_run
    client = MlflowClient(uri)
    run_id = json.loads((out / "mlflow-run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["epochs"] == "3" and run.data.params["num_layers"] == "20"
    assert run.info.status == "FINISHED" and run.data.tags["backend"] == "local"
    history = client.get_metric_history(run_id, "validation_mAP")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value == pytest.approx(model.metrics["epochs"][-1]["validation_mAP"], rel=1e-6)
    assert run.data.metrics["final_mAP"] == pytest.approx(model.metrics["final"]["mAP"], rel=1e-6)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"model.tar.gz", "metrics.json", "model-metadata.json"}


def test_a_resumed_run_rewrites_metrics_jsonl_from_its_checkpoint(splits, tmp_path):
    train, val = splits
    hp = Hyperparameters(**{**TINY, "epochs": 2}, num_training_samples=len(train))
    opts = LocalOptions(num_workers=0, progress=False)
    Trainer(hp, output_dir=tmp_path, options=opts).fit(train, val)
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text(jsonl.read_text() + '{"epoch": 2, "left by": "a killed run"}\n')
    spy = Spy()
    Trainer(hp, output_dir=tmp_path, options=opts, callbacks=[spy]).fit(train, val)
    assert spy.calls[0] == ("start", 2)
    assert [json.loads(line)["epoch"] for line in jsonl.read_text().splitlines()] == [0, 1]


def test_scalars_of_keeps_numbers_and_per_class_dicts():
    rec = {"epoch": 3, "train_loss": 0.5, "speed": [1.0, 2.0], "validation_per_class_AP": {"a": 0.5, "b": None},
           "flag": True, "validation_mAP": None}
    assert scalars_of(rec) == {"train_loss": 0.5, "validation_per_class_AP/a": 0.5}


def test_callbacks_must_be_callbacks():
    with pytest.raises(UsageError, match="callbacks must be multilabel_ic.callbacks.Callback objects, got function"):
        Trainer(Hyperparameters(num_classes=2, num_training_samples=100), callbacks=[lambda record: record])
