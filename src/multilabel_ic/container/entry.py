"""The training job's entry point when the project's engine runs in SageMaker's PyTorch training container.

``python -m multilabel_ic.container`` (the job's ``train_entry.py`` calls :func:`main`):

1. reads the container's contract (:mod:`.contract`): hyperparameters, channels, hosts;
2. on several hosts or GPUs, and not already under torchrun (SageMaker's ``torch_distributed`` setting has the
   training toolkit start torchrun itself): with one process per host, joins the process group directly (rank = this
   host's place in ``resourceconfig.json``, the group meeting at the first host, port 7777); with several GPUs per
   host, starts torchrun with the toolkit's command (``--nnodes H --nproc_per_node G --master_addr <first host>
   --master_port 7777 --node_rank <this host>``);
3. trains with ``Trainer(hp, backend=LocalBackend(...))``: the same code, seed and data give the artifact the local
   backend gives; a ``model`` channel is the run's ``initial_model`` (checked against the hyperparameters). The run
   folder is ``checkpoints/run`` (synced with the job's checkpoint S3 URI, so a managed spot job that was
   interrupted resumes from its last finished epoch), the decode cache is outside it;
4. unpacks the artifact into ``model/`` (SageMaker packs that folder into the job's ``model.tar.gz``), copies the
   run's metrics into ``output/data/``, and on an error writes the one-line reason to ``output/failure`` (the job's
   FailureReason) and exits 1.

The log lines are the algorithm's (``Epoch[0] Train-accuracy=...``), so the job's metric definitions and the
project's CloudWatch parser read them as they read the built-in's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_text, ensure_dir
from ..exceptions import MultilabelICError, UsageError
from .contract import ContainerEnv

__all__ = ["main", "torchrun_command", "rendezvous", "datasets", "MASTER_PORT"]

log = logging.getLogger("multilabel_ic.container")
MASTER_PORT = "7777"  # the training toolkit's torchrun port


def torchrun_command(env: ContainerEnv) -> list[str]:
    """torchrun over the job's hosts, one process per GPU (one on a CPU instance), as the training toolkit starts it.

    ``MASTER_ADDR`` / ``MASTER_PORT`` in the environment replace the first host's name and port 7777 (an emulated
    cluster on one machine, where ``algo-1`` does not resolve)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--max-restarts=0",
           "--nproc_per_node", str(env.processes_per_host)]
    if len(env.hosts) > 1:
        cmd += ["--nnodes", str(len(env.hosts)), "--master_addr", env.env.get("MASTER_ADDR", env.hosts[0]),
                "--master_port", env.env.get("MASTER_PORT", MASTER_PORT), "--node_rank", str(env.host_rank)]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "multilabel_ic.container"]


def rendezvous(env: ContainerEnv) -> dict[str, str]:
    """The variables torchrun would give the one process of each host: its rank is its host's place in
    ``resourceconfig.json``, the group meets at the first host (``MASTER_ADDR``/``MASTER_PORT`` override it)."""
    return {"RANK": str(env.host_rank), "WORLD_SIZE": str(len(env.hosts)), "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": env.env.get("MASTER_ADDR", env.hosts[0]),
            "MASTER_PORT": env.env.get("MASTER_PORT", MASTER_PORT)}


def _class_names(env: ContainerEnv, num_classes: int) -> list[str]:
    raw = env.own.get("class_names")
    if raw is None:
        return [f"class_{i}" for i in range(num_classes)]
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = [n.strip() for n in raw.split(",")]
    if not isinstance(names, list) or len(names) != num_classes:
        raise UsageError(f"hyperparameter mlic_class_names: {len(names) if isinstance(names, list) else 0} names for "
                         f"num_classes={num_classes}; give one name per class, in label order.")
    return [str(n) for n in names]


def _image_prefix(env: ContainerEnv, name: str) -> str:
    """Where the ``source-ref``s of split ``name``'s manifest start (``mlic_image_prefixes``, set by the backend)."""
    raw = env.own.get("image_prefixes")
    try:
        prefixes = json.loads(raw) if raw is not None else {}
    except json.JSONDecodeError:
        prefixes = None
    if not isinstance(prefixes, dict) or not isinstance(prefixes.get(name), str):
        raise UsageError(f"hyperparameter mlic_image_prefixes has no {name!r} entry (got {raw!r}): the job's "
                         f"{name}_manifest channel needs the S3 prefix its source-refs start with, the S3 URI of the "
                         f"{name!r} images channel, as {{\"{name}\": \"s3://...\"}}.")
    return prefixes[name]


def datasets(env: ContainerEnv, class_names: list[str]):
    """The training and validation datasets of the job's channels: ``train``/``validation`` images with
    ``train_lst``/``validation_lst`` or with ``train_manifest``/``validation_manifest`` (augmented manifests whose
    ``source-ref``s start with the images channel's S3 URI), or ``train``/``validation`` RecordIO files (extracted
    under ``work/``)."""
    from ..data.dataset import Dataset

    out = []
    for name in ("train", "validation"):
        if f"{name}_manifest" in env.channels:
            out.append(Dataset.from_manifest(env.files(f"{name}_manifest", ".manifest")[0],
                                             root=env.channel_dir(name), class_names=class_names,
                                             image_prefix=_image_prefix(env, name),
                                             label_format=env.own.get("manifest_label_format", "multi-hot")))
        elif f"{name}_lst" in env.channels:
            out.append(Dataset.from_lst(env.files(f"{name}_lst", ".lst")[0], root=env.channel_dir(name),
                                        class_names=class_names))
        else:
            rec = env.files(name, ".rec")[0]
            out.append(Dataset.from_recordio(rec, extract_to=env.root / "work" / "records" / name,
                                             class_names=class_names))
    return out[0], out[1]


def train(env: ContainerEnv) -> Path:
    """Train on the job's data; process 0 writes ``model/`` and ``output/data/``. Returns the run folder."""
    from ..hyperparameters import Hyperparameters

    hp = Hyperparameters.from_sagemaker(env.hyperparameters)
    train_data, validation = datasets(env, _class_names(env, hp.num_classes))
    from ..api import Trainer  # (PyTorch: once the job's inputs are known to be good)
    from ..backends.local import LocalBackend, LocalOptions

    workers = env.own.get("workers")
    options = LocalOptions(seed=int(env.own.get("seed", "0")), progress=False,
                           cache_dir=str(env.root / "work" / "cache"),
                           num_workers=None if workers is None else int(workers))
    run = env.checkpoint_dir / "run"
    initial = env.initial_model()  # the model channel: continue from its weights, as a local run does
    if initial is not None:
        log.info("continuing from the initial model %s", initial)
    model = Trainer(hp, backend=LocalBackend(options=options), output_dir=run).fit(
        train_data, validation=validation, initial_model=None if initial is None else str(initial))
    if os.environ.get("RANK", "0") == "0":
        _unpack(Path(model.artifact), env.model_dir)
        ensure_dir(env.output_data_dir)
        for name in ("metrics.json", "model-metadata.json"):
            if (run / name).is_file():
                atomic_write_bytes(env.output_data_dir / name, (run / name).read_bytes())
        log.info("model written to %s", env.model_dir)
    return run


def _unpack(artifact: Path, model_dir: Path) -> None:
    """The artifact's members into ``model_dir``: SageMaker packs that folder into the job's ``model.tar.gz``."""
    from .._io import atomic_write

    ensure_dir(model_dir, what="model folder")
    with tarfile.open(artifact, "r:gz") as tar:  # the artifact this run wrote: flat, regular files only
        for member in tar.getmembers():
            source = tar.extractfile(member) if member.isfile() else None
            if source is None or Path(member.name).name != member.name or member.name in ("", ".", ".."):
                raise UsageError(f"{artifact}: member {member.name!r} is not a plain file of the artifact.")
            with source, atomic_write(model_dir / member.name) as out:
                shutil.copyfileobj(source, out)


def _fail(env_root: Path, exc: BaseException) -> None:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]
    print(reason, file=sys.stderr)
    try:
        ensure_dir(env_root / "output")
        atomic_write_text(env_root / "output" / "failure", reason + "\n")
    except MultilabelICError:
        pass


def main(argv: list[str] | None = None) -> int:
    from ..logs import setup_logging

    setup_logging(logging.INFO, stream=sys.stdout)  # the algorithm's lines, where CloudWatch collects them
    root = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    try:
        env = ContainerEnv.read(root)
        if "WORLD_SIZE" not in os.environ and len(env.hosts) > 1 and env.processes_per_host == 1:
            os.environ.update(rendezvous(env))  # one process per host: it joins the group itself, no launcher
        if "WORLD_SIZE" not in os.environ and len(env.hosts) * env.processes_per_host > 1:
            cmd = torchrun_command(env)
            log.info("starting %d process(es) on host %s of %d: %s", env.processes_per_host, env.current_host,
                     len(env.hosts), " ".join(cmd[1:]))
            code = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
                                  ).returncode
            if code != 0 and not (root / "output" / "failure").exists():
                _fail(root, RuntimeError(f"the distributed run stopped: a process exited with status {code}"))
            return 0 if code == 0 else 1
        train(env)
        return 0
    except BaseException as exc:  # SageMaker reads the reason from output/failure
        _fail(root, exc)
        if not isinstance(exc, (MultilabelICError, Exception)):
            raise
        if not isinstance(exc, MultilabelICError):
            logging.getLogger("multilabel_ic").exception("training failed")
        return 1
