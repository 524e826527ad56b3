"""Training callbacks: the hooks of a run (its start, each finished epoch, its end).

Through them every run writes ``args.json`` (at the start), ``metrics.jsonl`` (one line per epoch, readable while the
run trains) and ``metrics.png`` (at the end), and experiment trackers follow it: :class:`TensorBoard` and
:class:`MLflow` (the ``tracking`` extra). The local engine calls the hooks as it trains; the SageMaker backend calls
them with the epochs parsed from the job's log once the job has ended, so a tracker sees both backends alike.

    Trainer(hp, backend="local", output_dir="runs/a", callbacks=[TensorBoard(), MLflow("file:./mlruns")])

A callback that raises is logged (with its name) and the run goes on: tracking never costs a training run. The one
exception is :class:`StopTraining`, raised from ``on_epoch_end`` to end the run after that epoch (a tuner's pruner
does this): the run then finishes as an early-stopped run does, with its artifact, metrics and report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import atomic_write, atomic_write_text, json_default
from .exceptions import require

__all__ = ["RunInfo", "Callback", "StopTraining", "ArgsJson", "MetricsJsonl", "MetricsPlot", "TensorBoard", "MLflow",
           "default_callbacks", "CallbackList", "scalars_of"]

log = logging.getLogger("multilabel_ic")


@dataclass
class RunInfo:
    """What a callback learns at the start of a run."""

    output_dir: Path
    backend: str
    hyperparameters: dict[str, str]  # the SageMaker wire format, defaults included
    class_names: list[str]
    history: list[dict] = field(default_factory=list)  # epochs already trained (a resumed run)
    settings: dict[str, Any] = field(default_factory=dict)  # backend options, JSON-ready


class Callback:
    """Override any of the three hooks. ``record`` is one epoch's metrics (``epoch`` is 0-based, as in the
    algorithm's ``Epoch[N]`` log lines); ``metrics`` is the run's final ``Model.metrics``."""

    def on_train_start(self, run: RunInfo) -> None:
        """Called once, after a resumed run has loaded its history."""

    def on_epoch_end(self, record: dict) -> None:
        """Called after each epoch, once its checkpoint is saved."""

    def on_train_end(self, metrics: dict) -> None:
        """Called once, after the artifact is written."""


class StopTraining(Exception):  # noqa: N818  (a request, not an error)
    """Raised from :meth:`Callback.on_epoch_end` to end the run after this epoch; the message says why."""


class CallbackList:
    """Calls every callback's hook in order; a failing callback is logged and skipped. A :class:`StopTraining` from
    ``on_epoch_end`` is remembered in :attr:`stop_reason` (the training loop ends the run after that epoch)."""

    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)
        self.stop_reason: str | None = None

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            try:
                getattr(cb, hook)(*args)
            except StopTraining as stop:
                if hook == "on_epoch_end" and self.stop_reason is None:
                    self.stop_reason = str(stop) or type(cb).__name__
                elif hook != "on_epoch_end":
                    log.error("callback %s.%s raised StopTraining, which only on_epoch_end may raise",
                              type(cb).__name__, hook)
            except Exception as exc:  # tracking must never cost the training run
                log.error("callback %s.%s failed: %s: %s", type(cb).__name__, hook, type(exc).__name__, exc)

    def on_train_start(self, run: RunInfo) -> None:
        self._call("on_train_start", run)

    def on_epoch_end(self, record: dict) -> None:
        self._call("on_epoch_end", record)

    def on_train_end(self, metrics: dict) -> None:
        self._call("on_train_end", metrics)


class ArgsJson(Callback):
    """``args.json``: the hyperparameters, class names, backend settings, command line and versions of the run."""

    def __init__(self, name: str = "args.json"):
        self.name = name

    def on_train_start(self, run: RunInfo) -> None:
        from ._version import __version__

        doc = {"backend": run.backend, "hyperparameters": run.hyperparameters, "class_names": run.class_names,
               "settings": run.settings, "argv": sys.argv, "multilabel_ic": __version__,
               "python": sys.version.split()[0]}
        atomic_write_text(run.output_dir / self.name, json.dumps(doc, indent=2, default=json_default) + "\n")


class MetricsJsonl(Callback):
    """``metrics.jsonl``: one JSON line per finished epoch, flushed as it is written (``tail -f`` works).

    At the start it is rewritten from the run's history, so a resumed run never repeats or loses a line."""

    def __init__(self, name: str = "metrics.jsonl"):
        self.name = name
        self.path: Path | None = None

    def on_train_start(self, run: RunInfo) -> None:
        self.path = run.output_dir / self.name
        atomic_write_text(self.path, "".join(json.dumps(r, default=json_default) + "\n" for r in run.history))

    def on_epoch_end(self, record: dict) -> None:
        assert self.path is not None, "on_train_start was not called"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def metrics_figure(metrics: dict):
    """Training loss, and train/validation accuracy and validation mAP per epoch, with titles, axis labels and the
    shipped epoch marked (a matplotlib Figure; needs the ``local`` extra)."""
    require("matplotlib", extra="local")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    hist = metrics.get("epochs") or []
    epochs = [r["epoch"] + 1 for r in hist]
    shipped = (metrics.get("final") or {}).get("epoch")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    loss = [r.get("train_loss") for r in hist]
    if any(v is not None for v in loss):
        axes[0].plot(epochs, loss, marker="o", label="training loss")
    axes[0].set(title="Training loss", xlabel="epoch", ylabel="loss")
    train_key = "train_accuracy_epoch" if any("train_accuracy_epoch" in r for r in hist) else "train_accuracy"
    for key, label in ((train_key, "train accuracy"), ("validation_accuracy", "validation accuracy"),
                       ("validation_mAP", "validation mAP")):
        values = [r.get(key) for r in hist]
        if any(v is not None for v in values):
            axes[1].plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
    axes[1].set(title="Accuracy and mAP", xlabel="epoch", ylabel="score", ylim=(0, 1.02))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if shipped is not None:
            ax.axvline(shipped, color="grey", linestyle="--", label=f"shipped (epoch {shipped})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    fig.tight_layout()
    return fig


class MetricsPlot(Callback):
    """``metrics.png``: training loss, and train/validation accuracy and validation mAP per epoch, with titles, axis
    labels and the shipped epoch marked (needs matplotlib, from the ``local`` extra)."""

    def __init__(self, name: str = "metrics.png"):
        self.name = name
        self.output_dir: Path | None = None

    def on_train_start(self, run: RunInfo) -> None:
        self.output_dir = run.output_dir

    def on_train_end(self, metrics: dict) -> None:
        assert self.output_dir is not None, "on_train_start was not called"
        fig = metrics_figure(metrics)
        import matplotlib.pyplot as plt

        with atomic_write(self.output_dir / self.name, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        plt.close(fig)


def scalars_of(record: dict, class_names: Sequence[str] = ()) -> dict[str, float]:
    """The numeric fields of an epoch record as tracker scalars: numbers as they are, dicts of numbers (per-class AP)
    as ``name/key``; lists (Speedometer windows) and missing values are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    out[f"{key}/{sub}"] = float(v)
    return out


class TensorBoard(Callback):
    """Scalars of every epoch (step = epoch number, 1-based) and the hyperparameters as text, in a TensorBoard event
    file (``tensorboard --logdir``). Default folder: ``<output>/tensorboard``. A resumed run drops the events of
    epochs after its checkpoint (``purge_step``), so the curves never double back."""

    def __init__(self, log_dir: str | os.PathLike | None = None):
        require("tensorboard", extra="tracking")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None

    def on_train_start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.log_dir or run.output_dir / "tensorboard"
        self.writer = SummaryWriter(str(log_dir), purge_step=len(run.history) + 1 if run.history else None)
        if not run.history:
            self.writer.add_text("hyperparameters", json.dumps(run.hyperparameters, indent=1), 0)
            self.writer.add_text("class_names", ", ".join(run.class_names), 0)

    def on_epoch_end(self, record: dict) -> None:
        step = int(record["epoch"]) + 1
        for name, value in scalars_of(record).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def on_train_end(self, metrics: dict) -> None:
        final = metrics.get("final") or {}
        step = final.get("epoch") or len(metrics.get("epochs") or [])
        for name, value in scalars_of({k: v for k, v in final.items() if k != "epoch"}).items():
            self.writer.add_scalar(f"final/{name}", value, step)
        self.writer.close()


class MLflow(Callback):
    """An MLflow run: the hyperparameters as params, every epoch's scalars as metrics (step = epoch number,
    1-based), the final metrics, and ``model.tar.gz``, ``model-metadata.json`` and ``metrics.json`` as artifacts.

    ``tracking_uri`` is any MLflow tracking URI (a server, or ``file:./mlruns``, for which MLflow 3 asks for
    ``MLFLOW_ALLOW_FILE_STORE=true``); None uses MLflow's own configuration. A resumed run continues the same MLflow
    run (its id is kept in ``<output>/mlflow-run.json``)."""

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = "multilabel-ic",
                 run_name: str | None = None, log_artifacts: bool = True):
        self.mlflow = require("mlflow", extra="tracking", package="mlflow-skinny")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.log_artifacts = log_artifacts
        self.client: Any = None
        self.run_id: str | None = None
        self.output_dir: Path | None = None

    def on_train_start(self, run: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        self.output_dir = run.output_dir
        self.client = MlflowClient(self.tracking_uri)
        id_file = run.output_dir / "mlflow-run.json"
        if run.history and id_file.exists():
            from ._read import read_bounded

            self.run_id = json.loads(read_bounded(id_file, limit=64 * 1024, what="MLflow run record"))["run_id"]
            return
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        created = self.client.create_run(experiment_id, run_name=self.run_name or run.output_dir.name,
                                         tags={"backend": run.backend})
        self.run_id = created.info.run_id
        atomic_write_text(id_file, json.dumps({"run_id": self.run_id, "tracking_uri": self.tracking_uri}) + "\n")
        for key, value in run.hyperparameters.items():
            self.client.log_param(self.run_id, key, value)
        self.client.log_param(self.run_id, "class_names", ",".join(run.class_names))

    def on_epoch_end(self, record: dict) -> None:
        step = int(record["epoch"]) + 1
        for name, value in scalars_of(record).items():
            self.client.log_metric(self.run_id, _mlflow_key(name), value, step=step)

    def on_train_end(self, metrics: dict) -> None:
        final = metrics.get("final") or {}
        for name, value in scalars_of({k: v for k, v in final.items() if k != "epoch"}).items():
            self.client.log_metric(self.run_id, _mlflow_key(f"final_{name}"), value)
        if self.log_artifacts and self.output_dir is not None:
            for name in ("model.tar.gz", "model-metadata.json", "metrics.json", "metrics.png"):
                if (self.output_dir / name).exists():
                    self.client.log_artifact(self.run_id, str(self.output_dir / name))
        self.client.set_terminated(self.run_id)


def _mlflow_key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_-./`` and spaces; class names may hold anything else."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def default_callbacks() -> list[Callback]:
    """What every run writes: ``args.json``, ``metrics.jsonl`` and ``metrics.png``."""
    return [ArgsJson(), MetricsJsonl(), MetricsPlot()]
