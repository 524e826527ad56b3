"""One run of the algorithm inside its locked output folder, whichever engine trains it: claim or resume, the
network, the optimizer and the loss, ``RunInfo``, the epochs with the checkpoint policy and early stopping, the
shipped model's evaluation, the artifact and the results. Each engine (engine.Engine) supplies its own steps;
the sequence, the loop state and the messages exist only here. Framework-free."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...callbacks import RunInfo
from ...exceptions import RunConflictError
from ...preflight import describe_differences
from ..base import final_metrics
from .epochlog import validation_record
from .initial import load_initial
from .loss import class_weights
from .runfolder import (
    SavedParams,
    claim_folder,
    run_epochs,
    saved_checkpoints,
    shipped_final,
    write_artifact,
    write_results,
)

if TYPE_CHECKING:
    from ...callbacks import CallbackList
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters
    from ...local_options import LocalOptions
    from ...model.initial import InitialModel
    from .distributed import Distributed
    from .engine import Engine

__all__ = ["new_state", "check_or_claim", "refuse_other_run", "run_training", "RESTART_HINT"]

log = logging.getLogger("multilabel_ic.train")

RESTART_HINT = "start afresh with --restart (LocalOptions(restart=True)), or choose another output folder"


def new_state() -> dict[str, Any]:
    """The loop state a run starts with (a resumed run reads its own from the checkpoint)."""
    return {"epoch": 0, "num_update": 0, "history": [], "best_acc": None, "best_epoch": None, "es_bad": 0,
            "saved": []}


def refuse_other_run(path: Path, recorded: dict, fingerprint: dict) -> None:
    """A resume state at ``path`` (``<out>/checkpoints/...``) of other data or settings is refused."""
    differ = describe_differences(recorded, fingerprint)
    if differ:
        raise RunConflictError(
            f"{path.parent.parent} holds a run trained with other {', '.join(differ)}; resuming would ship that "
            f"run's model under this run's settings. To train this configuration, {RESTART_HINT}.")


def check_or_claim(out: Path, options: LocalOptions, engine: Engine, fingerprint: dict) -> None:
    """Before any process trains: a run in ``out`` must be this one (then it resumes), or the folder is claimed."""
    path = out / engine.state_file
    if path.exists():
        if not options.resume:
            raise RunConflictError(f"{out} holds a run ({engine.state_file}) and resume=False: pass restart=True "
                                   f"(CLI: --restart) to replace it, or choose another output folder.")
        engine.check_state(path, fingerprint)  # refuses a run of other data or settings
    else:
        claim_folder(out, fingerprint)


def _weights(hp: Hyperparameters, train_data: Dataset, options: LocalOptions) -> tuple[np.ndarray, np.ndarray] | None:
    if not hp.use_weighted_loss:
        return None
    wp, wn = class_weights(train_data.labels, options.weighted_loss)
    log.info("weighted loss (%s): positive weights %s", options.weighted_loss, np.round(wp, 3).tolist())
    return wp, wn


def run_training(engine: Engine, hp: Hyperparameters, train_data: Dataset, validation: Dataset | None, out: Path,
                 options: LocalOptions, fingerprint: dict, pretrained: Path | None, callbacks: CallbackList,
                 dist: Distributed, initial: InitialModel | None = None) -> dict:
    """The run, the folder claimed (or holding this run's resume state): returns the metrics of every process.
    ``initial``: continue from that model (every parameter; the optimizer and the schedule start afresh)."""
    engine.build_network(pretrained)
    # after the network is built, before the optimizer: the one place where the network may be changed
    if initial is not None:
        load_initial(engine, initial)
    engine.build_optimizer(_weights(hp, train_data, options))
    state = new_state()
    path = out / engine.state_file
    if path.exists():  # checked (and the folder claimed otherwise) by check_or_claim before training
        state = engine.load_state(path, fingerprint)
        log.info("resuming from %s: %d of %d epochs done", path, state["epoch"], hp.epochs)
    workers = engine.prepare_data(train_data, validation, out)
    where = engine.describe()
    settings = {k: v for k, v in fingerprint.items() if k not in ("training data", "validation data", "hyperparameters")}
    callbacks.on_train_start(RunInfo(output_dir=out, backend="local", hyperparameters=hp.to_sagemaker(
        include_defaults=True), class_names=list(train_data.class_names), history=list(state["history"]),
        settings={**settings, "device": where["device"], "num_workers": workers}))

    def validate(epoch: int) -> dict:
        assert validation is not None
        labels, scores = engine.score()
        return validation_record(hp, labels, scores, validation.class_names, epoch)

    kept: SavedParams = {}
    train_epoch: Callable[[int], dict] = lambda epoch: engine.train_epoch(epoch, state)  # noqa: E731
    stopped_early = run_epochs(hp, out, state, kept, state_path=path, train_epoch=train_epoch,
                               validate=validate if validation is not None else None, current=engine.current_params,
                               save_state=lambda: engine.save_state(path, state, fingerprint), callbacks=callbacks,
                               write=dist.is_main, barrier=dist.barrier)
    checkpoints = saved_checkpoints(out, state, kept)
    final = final_metrics()
    if validation is not None and state["saved"]:
        # evaluate the model that ships (the best / last saved epoch), not the last one trained
        shipped = max(checkpoints)
        engine.set_params(checkpoints[shipped], source=str(out / "model.tar.gz"))
        labels, scores = engine.score()
        final = shipped_final(state, shipped, labels, scores, validation.class_names)
    metrics = None
    if dist.is_main:
        tar = write_artifact(hp, out, checkpoints)
        metrics = write_results(hp, out, tar, state, final, engine=engine.name, device=where["device"],
                                device_name=where["device_name"], stopped_early=stopped_early,
                                class_names=train_data.class_names, processes=dist.world_size)
    metrics = dist.broadcast(metrics)  # every process returns the run's metrics (and the artifact exists by then)
    engine.close()
    callbacks.on_train_end(metrics)
    return metrics
