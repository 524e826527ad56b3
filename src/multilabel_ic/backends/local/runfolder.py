"""The run folder both local engines share: which files a run owns, the claim on a folder (a run's fingerprint
before its first parameters), the algorithm's checkpoint policy and early stopping, and the finished run's artifact,
metrics and metadata. Framework-free: each engine hands over its parameters as MXNet-named numpy arrays."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._io import atomic_write_text, json_default
from ..._read import MiB, read_bounded
from ...exceptions import RunConflictError
from ...metrics import evaluate
from ...model.artifact import METADATA_NAME, PREFIX, write_model_tar
from ...model.params import save_params
from ...preflight import describe_differences
from ..base import final_metrics

if TYPE_CHECKING:
    from ...callbacks import CallbackList
    from ...hyperparameters import Hyperparameters

__all__ = ["RUN_FILES", "STATE_FILES", "CurrentParams", "SavedParams", "checkpoint_and_stop", "run_epochs", "claim_folder", "clear_previous_run",
           "holds_model", "remove_if_only_the_marker", "saved_checkpoints", "write_artifact", "shipped_final",
           "write_results"]

log = logging.getLogger("multilabel_ic.train")


# Each engine's resume state: a folder holding one holds a run that can resume.
STATE_FILES = ("checkpoints/last.pt", "checkpoints/last-gluon.params")

# Files a run writes into its output folder; --restart removes exactly these (and nothing the user put there).
RUN_FILES = ("checkpoints/last.pt", "checkpoints/last-gluon.params", "checkpoints/run.json", "model.tar.gz",
             "metrics.json", "metrics.png", METADATA_NAME, "recordio/train.rec", "recordio/train.idx",
             "recordio/validation.rec", "recordio/validation.idx")


def clear_previous_run(out: Path) -> None:
    for rel in RUN_FILES:
        (out / rel).unlink(missing_ok=True)
    for params in (out / "model").glob(f"{PREFIX}-[0-9][0-9][0-9][0-9].params"):
        params.unlink()
    log.info("restart: removed the previous run's checkpoint, parameters and artifact from %s", out)



def _params_path(out: Path, epoch: int) -> Path:
    return out / "model" / f"{PREFIX}-{epoch + 1:04d}.params"


# parameters saved by this process, by 1-based epoch: the artifact is built from these, not read back from disk
SavedParams = dict[int, tuple[dict, dict]]


# the current parameters as MXNet (arg, aux) numpy dicts: each engine gives its own
CurrentParams = Callable[[], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]



def _save_params(current: CurrentParams, path: Path, epoch: int, kept: SavedParams, write: bool) -> None:
    arg_np, aux_np = current()
    kept[epoch + 1] = (arg_np, aux_np)
    if write:
        save_params(path, {**{f"arg:{k}": v for k, v in arg_np.items()},
                           **{f"aux:{k}": v for k, v in aux_np.items()}})
        log.info('Saved checkpoint to "%s"', path)


def checkpoint_and_stop(hp: Hyperparameters, current: CurrentParams, out: Path, epoch: int, record: dict,
                        state: dict, kept: SavedParams, *, write: bool = True) -> bool:
    """Save the epoch's parameters as the algorithm does (the best validation epoch, or every
    ``checkpoint_frequency``) and apply early stopping; True when training stops here. ``write=False`` (the other
    processes of a distributed run) keeps the parameters and the state without touching the folder."""
    acc = record.get("validation_accuracy")
    improved = acc is not None and (state["best_acc"] is None or acc > state["best_acc"])
    if hp.checkpoint_frequency:
        if (epoch + 1) % hp.checkpoint_frequency == 0:
            _save_params(current, _params_path(out, epoch), epoch, kept, write)
            state["saved"].append(epoch + 1)
    elif acc is None or improved:
        if acc is not None:
            log.info("Storing the best model with validation accuracy: %f", acc)
        for old in state["saved"]:
            if write:
                _params_path(out, old - 1).unlink(missing_ok=True)
            kept.pop(old, None)
        _save_params(current, _params_path(out, epoch), epoch, kept, write)
        state["saved"] = [epoch + 1]
    if not hp.early_stopping or acc is None:
        if improved:
            state["best_acc"], state["best_epoch"] = acc, epoch
        return False
    best = state["best_acc"]
    if best is None or (best > 0 and (acc - best) / best >= hp.early_stopping_tolerance and acc > best) or \
            (best == 0 and acc > 0):
        state["es_bad"] = 0
    else:
        state["es_bad"] += 1
    if improved:
        state["best_acc"], state["best_epoch"] = acc, epoch
    if epoch + 1 >= hp.early_stopping_min_epochs and state["es_bad"] >= hp.early_stopping_patience:
        log.info("Early stopping at epoch %d: validation accuracy did not improve by more than %g (relative) for "
                 "%d epochs; best %f at epoch %d", epoch, hp.early_stopping_tolerance, state["es_bad"],
                 state["best_acc"], state["best_epoch"])
        return True
    return False



def run_epochs(hp: Hyperparameters, out: Path, state: dict, kept: SavedParams, *, state_path: Path,
               train_epoch: Callable[[int], dict], validate: Callable[[int], dict] | None, current: CurrentParams,
               save_state: Callable[[], None], callbacks: CallbackList, write: bool = True,
               barrier: Callable[[], None] = lambda: None) -> bool:
    """The epoch loop both engines run: train, validate, save as the algorithm does, keep the resume state, report;
    True when early stopping, or a callback's :class:`~multilabel_ic.callbacks.StopTraining`, ended it. An interrupt names the epochs that are saved and how to resume.

    ``train_epoch(epoch)`` returns the epoch's record; ``validate(epoch)`` its validation fields. ``write=False``
    (the other processes of a distributed run) saves nothing; ``barrier`` runs once the epoch is on disk."""
    stopped_early = False
    try:
        for epoch in range(state["epoch"], hp.epochs):
            record = train_epoch(epoch)
            if validate is not None:
                record.update(validate(epoch))
            state["history"].append(record)
            stopped_early = checkpoint_and_stop(hp, current, out, epoch, record, state, kept, write=write)
            state["epoch"] = epoch + 1
            if write:
                save_state()
            barrier()  # the epoch's checkpoint is on disk before any process goes on
            callbacks.on_epoch_end(record)
            if callbacks.stop_reason and not stopped_early and epoch + 1 < hp.epochs:
                log.info("Stopping after epoch %d: %s", epoch, callbacks.stop_reason)
                stopped_early = True
            if stopped_early:
                break
    except KeyboardInterrupt:
        log.warning("interrupted: %d of %d epochs are saved in %s; run the same command again to resume",
                    state["epoch"], hp.epochs, state_path)
        raise
    return stopped_early


def holds_model(out: Path) -> bool:
    """Whether ``out`` holds model files of a run (the artifact, or saved parameters)."""
    return (out / "model.tar.gz").exists() or any((out / "model").glob(f"{PREFIX}-*.params"))


def remove_if_only_the_marker(out: Path) -> None:
    """For a run that created ``out`` and failed before its first checkpoint: leave no folder behind (its marker,
    and the decode cache it built in ``<out>/cache``, go too)."""
    if not (any((out / rel).exists() for rel in STATE_FILES) or holds_model(out)):
        _run_marker(out).unlink(missing_ok=True)
        shutil.rmtree(out / "cache", ignore_errors=True)
    for folder in (out / "checkpoints", out / "model", out / "recordio", out / "cache", out):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _run_marker(out: Path) -> Path:
    return out / "checkpoints" / "run.json"


def claim_folder(out: Path, fingerprint: dict) -> None:
    """Before the first checkpoint: refuse a folder that holds another run's model, clear the files of an earlier
    attempt of this very run (killed before its first checkpoint), and record what this run trains on."""
    marker = _run_marker(out)
    leftovers = holds_model(out)
    recorded = None
    if marker.exists() or marker.is_symlink():
        # bounded and never blocking (a FIFO or a device there is refused); a damaged marker differs from every run
        text = read_bounded(marker, limit=16 * MiB, what="run marker", error=RunConflictError)
        try:
            recorded = json.loads(text)
        except ValueError:
            recorded = {}
        if not isinstance(recorded, dict):
            recorded = {}
    if recorded is not None:
        differ = describe_differences(recorded, fingerprint)
        if differ:
            raise RunConflictError(
                f"{out} holds an unfinished run trained with other {', '.join(differ)}. Start afresh with --restart "
                f"(LocalOptions(restart=True)), or choose another output folder.")
        if leftovers:
            log.info("an earlier attempt of this run stopped before its first checkpoint; starting it again")
            clear_previous_run(out)
    elif leftovers:
        raise RunConflictError(
            f"{out} holds a model of another run (model.tar.gz or model/*.params) but no checkpoint to resume from: "
            f"training would replace it. Start afresh with --restart (LocalOptions(restart=True)), or choose another "
            f"output folder.")
    atomic_write_text(marker, json.dumps(fingerprint, indent=1) + "\n")



def saved_checkpoints(out: Path, state: dict[str, Any], kept: SavedParams) -> SavedParams:
    """The saved epochs' parameters: kept in memory by this process, or read back (saved before a resume)."""
    from ...model.params import load_params

    checkpoints = {}
    for ep in state["saved"]:
        if ep in kept:
            checkpoints[ep] = kept[ep]
            continue
        raw = load_params(_params_path(out, ep - 1))
        args = {k[4:]: v for k, v in raw.items() if k.startswith("arg:")}
        aux = {k[4:]: v for k, v in raw.items() if k.startswith("aux:")}
        checkpoints[ep] = (args, aux)
    return checkpoints


def write_artifact(hp: Hyperparameters, out: Path, checkpoints: SavedParams) -> Path:
    return write_model_tar(out / "model.tar.gz", checkpoints, num_classes=hp.num_classes, num_layers=hp.num_layers,
                           image_shape=hp.input_shape, multi_label=hp.is_multi_label,
                           batch_size=hp.mini_batch_size)


def shipped_final(state: dict[str, Any], shipped: int, labels: np.ndarray, scores: np.ndarray,
                  class_names: Sequence[str]) -> dict:
    """The final metrics of the model that ships (epoch ``shipped``, 1-based) from its validation scores."""
    from ...metrics import tune_thresholds

    shipped_record: dict = next((r for r in state["history"] if r["epoch"] == shipped - 1), {})
    return final_metrics(**evaluate(labels, scores, class_names=class_names),
                         tuned_thresholds=tune_thresholds(labels, scores), epoch=shipped,
                         validation_accuracy=shipped_record.get("validation_accuracy"))


def write_results(hp: Hyperparameters, out: Path, tar: Path, state: dict[str, Any], final: dict, *, engine: str,
                  device: str, device_name: str, stopped_early: bool, class_names: Sequence[str],
                  processes: int = 1) -> dict:
    """metrics.json and model-metadata.json of a finished run; returns the metrics."""
    speeds = [s for r in state["history"] for s in r["speed"]]
    metrics = {"backend": "local", "engine": engine, "device": device, "device_name": device_name,
               "processes": processes,
               "epochs": state["history"], "final": final, "best_epoch": state["best_epoch"],
               "saved_epochs": state["saved"], "stopped_early": stopped_early,
               "images_per_sec_median": float(np.median([r["images_per_sec"] for r in state["history"]]))
               if state["history"] else None,
               "speedometer_median": float(np.median(speeds)) if speeds else None,
               "hyperparameters": hp.to_sagemaker(include_defaults=True), "artifact": str(tar)}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=json_default) + "\n")
    from ...model.artifact import write_metadata

    write_metadata(tar, class_names=class_names, hyperparameters=metrics["hyperparameters"],
                   thresholds=final.get("tuned_thresholds"), extra={"backend": "local", "engine": engine})
    log.info("model artifact: %s", tar)
    return metrics


