"""The SageMaker training container's contract, honoured locally: the job's entry point runs in an emulated
``/opt/ml`` layout under a temporary folder (``SAGEMAKER_BASE_DIR``) on one host, and on two "hosts" (two processes
that rendezvous on 127.0.0.1 with the host names of their ``resourceconfig.json``), and ships the artifact that
``Trainer(backend="local")`` ships for the same seed and data, at the distributed tests' tolerance."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from multilabel_ic import Dataset, Hyperparameters, UsageError
from multilabel_ic.backends.sagemaker.cloudwatch import LogParser
from multilabel_ic.backends.sagemaker.framework import (
    METRIC_DEFINITIONS,
    job_hyperparameters,
    manifest_settings,
)
from multilabel_ic.backends.sagemaker.request import manifest_file_channels
from multilabel_ic.container.contract import ContainerEnv
from multilabel_ic.container.entry import rendezvous, torchrun_command
from multilabel_ic.model.artifact import read_model_tar

HP = dict(num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=8, epochs=2, multi_label=1,
          num_classes=5, num_training_samples=32, optimizer="adam", learning_rate=0.002,
          augmentation_type="crop_color_transform")
HP_1 = {**HP, "epochs": 1}
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def data(coco5):
    train, val = coco5.subset(range(32)), coco5.subset(range(32, 48))
    return train, val


@pytest.fixture(scope="module")
def initial_model(tmp_path_factory) -> Path:
    """A model.tar.gz of HP's network (ResNet-20 at 28 px, 5 classes, sigmoid) to continue from."""
    from multilabel_ic.model.artifact import write_model_tar
    from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

    torch.manual_seed(1)
    args, aux = mxnet_state_dict(ResNetV2(5, 20, (3, 28, 28)))
    return write_model_tar(tmp_path_factory.mktemp("initial") / "model.tar.gz",
                           {4: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                           num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)


def lay_out(root: Path, train: Dataset, val: Dataset, *, hosts: list[str], current: str, extra: dict | None = None,
            fmt: str = "lst", hp: dict = HP, model: Path | None = None) -> Path:
    """The files SageMaker gives a training container: config JSONs and the channels' data under ``root``
    (``model``: a ``model`` channel holding that model.tar.gz)."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    label_format = "class-id" if fmt == "manifest-class-id" else "multi-hot"
    images = {n: f"s3://bucket/p/data/{n}_images/0123abcd/" for n in ("train", "validation")}
    # the settings the backend sends with manifest channels: the images channels' URIs, where the source-refs start
    own = manifest_settings(manifest_file_channels(images, {n: f"s3://bucket/p/data/{n}_manifest/4567ef/"
                                                            for n in images}), label_format=label_format)
    values = job_hyperparameters(Hyperparameters(**hp), list(train.class_names), seed=0, submit_directory="s3://b/source.tar.gz",
                                 region="us-east-1", job_name="job-1", distributed=len(hosts) > 1,
                                 own=own if fmt.startswith("manifest") else None)
    values.update({k: json.dumps(v) for k, v in (extra or {"mlic_workers": 0}).items()})
    (config / "hyperparameters.json").write_text(json.dumps(values))
    channels = {}
    for name, ds in (("train", train), ("validation", val)):
        folder = root / "input" / "data" / name
        if fmt != "recordio":  # the images channel: SageMaker keeps the keys' paths under the channel's prefix
            for rel in ds.paths:
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ds.image_path(ds.paths.index(rel)), folder / rel)
        if fmt.startswith("manifest"):
            (root / "input" / "data" / f"{name}_manifest").mkdir(parents=True)
            ds.to_manifest(root / "input" / "data" / f"{name}_manifest" / f"{name}.manifest",
                           image_prefix=images[name], label_format=label_format)
            channels[f"{name}_manifest"] = {"ContentType": "application/jsonlines", "TrainingInputMode": "File"}
        elif fmt == "lst":
            (root / "input" / "data" / f"{name}_lst").mkdir(parents=True)
            ds.to_lst(root / "input" / "data" / f"{name}_lst" / f"{name}.lst")
            channels[f"{name}_lst"] = {"ContentType": "application/x-image", "TrainingInputMode": "File"}
        else:
            folder.mkdir(parents=True)
            ds.to_recordio(folder / f"{name}.rec", renumber=True)
        channels[name] = {"ContentType": "application/x-image", "TrainingInputMode": "File",
                          "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    if model is not None:  # SageMaker downloads the object the channel's S3 URI names into the channel's folder
        (root / "input" / "data" / "model").mkdir(parents=True)
        shutil.copy(model, root / "input" / "data" / "model" / "model.tar.gz")
        channels["model"] = {"ContentType": "application/x-sagemaker-model", "TrainingInputMode": "File",
                             "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": current, "hosts": hosts,
                                                            "network_interface_name": "eth0"}))
    return root


def _env(root: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return {**env, "SAGEMAKER_BASE_DIR": str(root), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", ""), **extra}


def _container(root: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "multilabel_ic.container"], env=_env(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _packed(model_dir: Path, tmp: Path):
    """``model/`` packed as SageMaker packs it into the job's model.tar.gz, then read as an artifact."""
    tar_path = tmp / "sagemaker-model.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for p in sorted(model_dir.iterdir()):
            tar.add(p, arcname=p.name)
    return read_model_tar(tar_path)


def _assert_same(a, b) -> None:
    assert a.params.keys() == b.params.keys() and a.epoch == b.epoch
    for k in a.params:
        torch.testing.assert_close(torch.from_numpy(a.params[k]), torch.from_numpy(b.params[k]), rtol=1e-4,
                                   atol=1e-5, msg=k)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_KILLED_CONTAINER = textwrap.dedent("""
    import os, signal, sys
    import multilabel_ic.backends.local.epoch as epoch_mod
    from multilabel_ic.container.entry import main

    calls, step = [0], epoch_mod.train_step

    def killing_step(*a, **k):  # the spot instance goes away at the given training step
        calls[0] += 1
        if calls[0] == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return step(*a, **k)

    epoch_mod.train_step = killing_step
    sys.exit(main())
""")


@pytest.mark.slow  # subprocesses that start PyTorch, and a short training run
def test_one_host_resumes_from_checkpoints_after_a_spot_interruption_and_ships_the_local_artifact(data, tmp_path):
    """The job's instance is lost in the second epoch; SageMaker restores /opt/ml/checkpoints on the new instance
    (nothing else survives), the entry point resumes there, and the artifact is the uninterrupted local run's."""
    from multilabel_ic import Trainer
    from multilabel_ic.backends.local import LocalBackend, LocalOptions

    train, val = data
    root = lay_out(tmp_path / "opt-ml", train, val, hosts=["algo-1"], current="algo-1")
    steps = HP["num_training_samples"] // HP["mini_batch_size"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_CONTAINER], env=_env(root, KILL_AT_STEP=str(steps + 2)),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    state = torch.load(root / "checkpoints" / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads(state["state"])["epoch"] == 1 and not (root / "model").exists()
    for gone in ("model", "output", "work"):  # a new instance: only the checkpoints come back (from S3)
        shutil.rmtree(root / gone, ignore_errors=True)
    proc = _container(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the container's process runs (OMP_NUM_THREADS=1): the same float32 sums
    try:
        local = Trainer(Hyperparameters(**HP), backend=LocalBackend(options=LocalOptions(
            seed=0, num_workers=0, progress=False)), output_dir=tmp_path / "local").fit(train, validation=val)
    finally:
        torch.set_num_threads(threads)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "1 of 2 epochs done" in out and not (root / "output" / "failure").exists()
    _assert_same(_packed(root / "model", tmp_path), read_model_tar(local.local_artifact))
    assert json.loads((root / "output" / "data" / "metrics.json").read_text())["final"]["epoch"] is not None
    # the job's metric definitions find the algorithm's lines (the resumed epoch's), as SageMaker applies them
    for m in METRIC_DEFINITIONS:
        assert len(re.findall(m["Regex"], out)) == 1, m["Name"]
    parser = LogParser()
    for line in out.splitlines():
        parser.feed(line)
    assert sorted(parser.hosts["algo-1"]) == [1]


@pytest.mark.slow  # subprocesses that start PyTorch, and a short training run
def test_two_hosts_rendezvous_by_their_resourceconfig_and_ship_the_local_two_process_artifact(data, tmp_path):
    """One process per host: each takes its rank from its host's place in resourceconfig.json (no launcher), and
    together they train as the local backend does on two nodes (torchrun --nnodes 2): same seed, data and
    hyperparameters, the same artifact."""
    train, val = data
    hosts = ["algo-1", "algo-2"]
    port = str(_port())
    roots = [lay_out(tmp_path / h, train, val, hosts=hosts, current=h, hp=HP_1) for h in hosts]
    procs = [_container(r, MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in reversed(roots)]  # either may be first
    # the local backend on two nodes of one process each (torchrun --nnodes 2), the same seed, data and hyperparameters
    ref_port = str(_port())
    script = textwrap.dedent(f"""
        import sys
        from multilabel_ic import Dataset, Hyperparameters, Trainer
        from multilabel_ic.backends.local import LocalBackend, LocalOptions
        train = Dataset.from_lst({str(roots[0] / 'input/data/train_lst/train.lst')!r},
                                 root={str(roots[0] / 'input/data/train')!r}, class_names={list(train.class_names)!r})
        val = Dataset.from_lst({str(roots[0] / 'input/data/validation_lst/validation.lst')!r},
                               root={str(roots[0] / 'input/data/validation')!r}, class_names={list(train.class_names)!r})
        Trainer(Hyperparameters(**{HP_1!r}), backend=LocalBackend(options=LocalOptions(seed=0, num_workers=0,
                progress=False)), output_dir={str(tmp_path / 'local')!r}).fit(train, validation=val)
    """)
    refs = [subprocess.Popen([sys.executable, "-c", script], env={**_env(tmp_path), "RANK": str(r), "WORLD_SIZE": "2",
                                                                  "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": ref_port},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs + refs]
    assert all(p.returncode == 0 for p in procs + refs), "\n".join(o[-2000:] for o in outs)
    assert (roots[0] / "model").is_dir() and not (roots[1] / "model").exists()  # process 0 ships the model
    _assert_same(_packed(roots[0] / "model", tmp_path), read_model_tar(tmp_path / "local" / "model.tar.gz"))
    metrics = json.loads((roots[0] / "output" / "data" / "metrics.json").read_text())
    assert metrics["processes"] == 2


def test_the_launcher_is_the_training_toolkits_torchrun_command(tmp_path, data):
    train, val = data
    root = lay_out(tmp_path / "r", train.subset(range(8)), val.subset(range(8)), hosts=["algo-1", "algo-2", "algo-3"],
                   current="algo-2")
    env = ContainerEnv.read(root, {"SM_NUM_GPUS": "4"})
    joined = " ".join(torchrun_command(env))
    for part in ("--nproc_per_node 4", "--nnodes 3", "--master_addr algo-1", "--master_port 7777", "--node_rank 1",
                 "-m multilabel_ic.container"):
        assert part in joined, joined
    single = torchrun_command(ContainerEnv.read(lay_out(tmp_path / "s", train.subset(range(8)), val.subset(range(8)),
                                                        hosts=["algo-1"], current="algo-1"), {"SM_NUM_GPUS": "8"}))
    assert "--standalone" in single and "--nnodes" not in single
    # one process per host joins the group without a launcher, with its host's rank
    assert rendezvous(ContainerEnv.read(root, {"SM_NUM_GPUS": "0", "MASTER_ADDR": "10.0.0.5"})) == {
        "RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "10.0.0.5",
        "MASTER_PORT": "7777"}
    # the algorithm's hyperparameters arrive decoded, the project's own settings apart, the toolkit's dropped
    assert env.hyperparameters["image_shape"] == "3,28,28" and env.own["class_names"].startswith("[")
    assert not any(k.startswith("sagemaker_") for k in env.hyperparameters)


@pytest.mark.parametrize("damage", ["no_hyperparameters", "no_train_channel", "wrong_class_count"])
def test_a_job_that_cannot_train_writes_its_one_line_reason_to_output_failure(data, tmp_path, damage):
    """Each way the job's inputs can be wrong ends in exit 1 with output/failure holding one line that names it (the
    reason SageMaker shows as FailureReason), and no model."""
    train, val = data
    root = lay_out(tmp_path / "r", train.subset(range(8)), val.subset(range(8)), hosts=["algo-1"], current="algo-1",
                   extra={"mlic_class_names": ["a", "b"]} if damage == "wrong_class_count" else None)
    if damage == "no_hyperparameters":
        (root / "input/config/hyperparameters.json").unlink()
    if damage == "no_train_channel":
        shutil.rmtree(root / "input/data/train_lst")
        config = json.loads((root / "input/config/inputdataconfig.json").read_text())
        del config["train_lst"]
        (root / "input/config/inputdataconfig.json").write_text(json.dumps(config))
    proc = _container(root)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-2000:]
    assert "Traceback" not in out
    reason = (root / "output" / "failure").read_text()
    assert reason.count("\n") == 1 and reason.startswith("UsageError:"), reason
    expected = {"no_hyperparameters": "hyperparameters.json", "no_train_channel": ".rec",
                "wrong_class_count": "mlic_class_names"}[damage]
    assert expected in reason
    assert not (root / "model").exists()


@pytest.mark.parametrize("fmt", ["lst", "recordio", "manifest", "manifest-class-id"])
def test_the_channels_of_each_format_give_the_jobs_datasets(data, tmp_path, fmt):
    """The channel layouts (images + .lst, RecordIO files, images + augmented manifest in either label format) read
    back as the data that was uploaded: the same labels in the same order, the class names from the job's
    hyperparameters."""
    from multilabel_ic.container.entry import datasets

    train, val = (d.subset(range(8)) for d in data)
    root = lay_out(tmp_path / "r", train, val, hosts=["algo-1"], current="algo-1", fmt=fmt)
    env = ContainerEnv.read(root, {})
    got = datasets(env, list(train.class_names))
    for ds, want in zip(got, (train, val)):
        assert len(ds) == len(want) and (ds.labels == want.labels).all()
        assert list(ds.class_names) == list(train.class_names)
        assert all(ds.image_path(i).read_bytes() == want.image_path(i).read_bytes() for i in range(len(ds)))


@pytest.mark.slow  # two short training runs
def test_a_model_channel_continues_from_that_model_to_the_local_backends_artifact(data, initial_model, tmp_path,
                                                                                 monkeypatch):
    """The job's ``model`` channel is the run's initial model: the container ships the artifact that
    ``Trainer(backend="local").fit(..., initial_model=<the same file>)`` ships (same seed, data, hyperparameters)."""
    from multilabel_ic import Trainer
    from multilabel_ic.backends.local import LocalBackend, LocalOptions
    from multilabel_ic.container.entry import train as container_train

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    train, val = (d.subset(range(16)) for d in data)
    hp = {**HP_1, "num_training_samples": 16}
    root = lay_out(tmp_path / "opt-ml", train, val, hosts=["algo-1"], current="algo-1", hp=hp, model=initial_model)
    container_train(ContainerEnv.read(root, {}))  # what main() runs on one host with one process
    local = Trainer(Hyperparameters(**hp), backend=LocalBackend(options=LocalOptions(
        seed=0, num_workers=0, progress=False)), output_dir=tmp_path / "local").fit(
        train, validation=val, initial_model=initial_model)
    shipped = _packed(root / "model", tmp_path)
    _assert_same(shipped, read_model_tar(local.local_artifact))
    start = read_model_tar(initial_model)  # and it did continue: it is not the model it started from
    assert any(not np.allclose(shipped.params[k], start.params[k]) for k in start.params)


@pytest.mark.parametrize("tars", [0, 2])
def test_a_model_channel_without_exactly_one_model_is_refused_naming_it(data, initial_model, tmp_path, tars):
    train, val = (d.subset(range(8)) for d in data)
    root = lay_out(tmp_path / "r", train, val, hosts=["algo-1"], current="algo-1", model=initial_model)
    folder = root / "input" / "data" / "model"
    (folder / "model.tar.gz").unlink()
    for i in range(tars):
        shutil.copy(initial_model, folder / f"m{i}.tar.gz")
    with pytest.raises(UsageError, match=rf"channel 'model' \({re.escape(str(folder))}\) holds {tars} \.tar\.gz files"):
        ContainerEnv.read(root, {}).initial_model()
    assert ContainerEnv.read(lay_out(tmp_path / "none", train, val, hosts=["algo-1"], current="algo-1"),
                             {}).initial_model() is None


@pytest.mark.parametrize("damage", ["no_prefixes", "prefix_without_validation", "source_ref_elsewhere"])
def test_manifest_channels_whose_images_cannot_be_found_are_refused_in_one_line(data, tmp_path, damage):
    """A manifest's source-refs map to the images channel's files through the image prefix the backend sends; a job
    without that prefix, or with source-refs elsewhere, fails naming the hyperparameter or the manifest's line."""
    from multilabel_ic import DataError
    from multilabel_ic.container.entry import datasets

    train, val = (d.subset(range(4)) for d in data)
    root = lay_out(tmp_path / "r", train, val, hosts=["algo-1"], current="algo-1", fmt="manifest")
    config = root / "input/config/hyperparameters.json"
    values = json.loads(config.read_text())
    if damage == "no_prefixes":
        del values["mlic_image_prefixes"]
    elif damage == "prefix_without_validation":
        values["mlic_image_prefixes"] = json.dumps({"train": "s3://bucket/p/data/train_images/0123abcd/"})
    else:
        values["mlic_image_prefixes"] = json.dumps({n: f"s3://other/{n}/" for n in ("train", "validation")})
    config.write_text(json.dumps(values))
    error, expected = {"no_prefixes": (UsageError, "hyperparameter mlic_image_prefixes has no 'train' entry"),
                       "prefix_without_validation": (UsageError,
                                                     "hyperparameter mlic_image_prefixes has no 'validation' entry"),
                       "source_ref_elsewhere": (DataError, "train.manifest:1: image reference 's3://bucket/p/data/"
                                                           "train_images/0123abcd/")}[damage]
    with pytest.raises(error, match=re.escape(expected)):
        datasets(ContainerEnv.read(root, {}), list(train.class_names))
