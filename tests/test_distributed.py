"""Training on several processes (DDP, gloo, 2 processes on this CPU): the algorithm's batch split holds step for
step, a run is sharded and deterministic, only process 0 writes, and a killed process ends the run, which then
resumes to the same result."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from dist_support import batches, make_model, train_steps, worker

from multilabel_ic.backends.local.pipeline import EpochSampler, epoch_order

WORLD, BATCH, STEPS = 2, 8, 3


def _spawn(tmp_path, kind: str, bn_train: bool) -> list[dict]:
    out = str(tmp_path / f"{kind}-{bn_train}")
    mp.spawn(worker, args=(WORLD, str(tmp_path / f"rdzv-{kind}-{bn_train}"), kind, bn_train, STEPS, BATCH, out),
             nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    assert not any("gloo" in name for r in ranks for name in r["threads"])  # the group ended with its threads
    return ranks


@pytest.mark.parametrize("kind", ["sgd", "nag", "adam", "rmsprop"])
def test_two_processes_with_half_batches_step_like_one_with_the_whole_batch(kind, tmp_path):
    """BatchNorm in eval mode (fixed statistics): 2 processes x B/2 give the weights of 1 process x B after several
    steps, for each optimizer: the gradient is the mean over the whole batch either way."""
    ranks = _spawn(tmp_path, kind, bn_train=False)
    single = make_model()
    train_steps(single, kind, batches(STEPS, BATCH), bn_train=False)
    for name, value in single.state_dict().items():
        for r in ranks:
            torch.testing.assert_close(r["state"][name], value, rtol=1e-4, atol=1e-5)


def test_per_process_batchnorm_differs_only_by_its_statistics(tmp_path):
    """BatchNorm in train mode with per-process statistics (MXNet's multi-device behaviour): the 2-process run is
    exactly one process that normalises each half of the batch with that half's statistics ("ghost batches") and
    averages the halves' losses; each process keeps its own moving statistics, averaged when saved."""
    ranks = _spawn(tmp_path, "sgd", bn_train=True)
    ghost = make_model()
    ghost.train()
    from dist_support import optimizer_for

    from multilabel_ic.backends.local.loss import weighted_bce

    optimizer = optimizer_for(ghost, "sgd")
    half = BATCH // WORLD
    stats = []
    for x, y in batches(STEPS, BATCH):
        optimizer.zero_grad()
        loss = sum(weighted_bce(ghost(x[r * half:(r + 1) * half]), y[r * half:(r + 1) * half]) for r in range(WORLD))
        (loss / WORLD).backward()
        optimizer.step()
    for name, value in ghost.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    # the statistics: each process's own, different from each other; the saved ones their mean
    name = "bn_data.running_mean"
    own = [r["own_stats"][name] for r in ranks]
    assert not torch.allclose(own[0], own[1])
    torch.testing.assert_close(ranks[0]["state"][name], (own[0] + own[1]) / 2)
    del stats


def test_each_process_reads_its_slice_of_the_seeded_epoch_order():
    order = epoch_order(37, batches=4, batch_size=8, seed=3, epoch=1)
    single = [k for b in EpochSampler(order, 8, 1) for k in b]
    shards = [list(EpochSampler(order, 4, 1, shard=(r, 2))) for r in range(2)]
    together = [k for b0, b1 in zip(*shards) for k in b0 + b1]
    assert together == single  # same positions, same images, same augmentation draws (they depend on the position)
    seen = [k[2] for b in shards[0] + shards[1] for k in b]
    assert len(seen) == len(set(seen)) == 32  # every image of the epoch once


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import multilabel_ic.backends.local.loss as loss_mod
    from multilabel_ic.cli import main

    kill = os.environ.get("KILL_RANK_AT_BATCH")
    if kill and os.environ.get("RANK") == kill.split(":")[0]:
        n, calls, loss = int(kill.split(":")[1]), [0], loss_mod.weighted_bce

        def killing_loss(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(*a, **k)

        loss_mod.weighted_bce = killing_loss
    code = main(sys.argv[1:])
    threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    print(f"rank {os.environ['RANK']} threads after the run: {sorted(threads)}", file=sys.stderr)
    sys.exit(code)
""")


def _run(tmp_path, lists, out, env_extra=None):
    train, val, root = lists
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    args = ["--quiet", "train", "--train-lst", str(train), "--validation-lst", str(val), "--images", str(root),
            "--classes", "person,bicycle,car,motorcycle,airplane", "--output", str(out), "--workers", "0",
            "--hp=num_layers=20", "--hp=image_shape=3,28,28", "--hp=resize=32", "--hp=mini_batch_size=16",
            "--hp=epochs=3", "--hp=optimizer=adam", "--hp=learning_rate=0.002", "--hp=multi_label=1",
            "--hp=augmentation_type=crop_color_transform"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=0",
           str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def lists(coco5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    train, val = coco5.split(0.75, seed=0)
    train.to_lst(folder / "train.lst")
    val.to_lst(folder / "val.lst")
    return folder / "train.lst", folder / "val.lst", coco5.root


def test_a_killed_process_ends_the_run_and_the_rerun_resumes_to_the_same_result(lists, tmp_path):
    reference = _run(tmp_path, lists, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert ref["processes"] == 2 and len(ref["epochs"]) == 3
    assert sorted(p.name for p in (tmp_path / "reference").iterdir()) == sorted(
        ["args.json", "cache", "checkpoints", "metrics.json", "metrics.jsonl", "metrics.png", "model", "model-metadata.json",
         "model.tar.gz", "report.html", "run-config.json"])
    assert reference.stdout.count("model artifact:") == 1  # process 0 reports for the run
    # each process ended its process group: no gloo thread is left to run into the interpreter's exit
    left = re.findall(r"rank (\d) threads after the run: (.*)", reference.stderr)
    assert sorted(r for r, _ in left) == ["0", "1"] and not any("gloo" in names for _, names in left), left

    broken = _run(tmp_path, lists, tmp_path / "run", {"KILL_RANK_AT_BATCH": "1:8"})  # process 1, 2nd epoch
    assert broken.returncode != 0
    # torchrun's agent ended the other process and names the one that died
    assert re.search(r"Root Cause.*?rank\s*:\s*1 .*?SIGKILL", broken.stderr, re.S), broken.stderr[-2000:]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads(state["state"])["epoch"] == 1  # the first epoch was saved before the kill
    resumed = _run(tmp_path, lists, tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert got["final"]["mAP"] == pytest.approx(ref["final"]["mAP"], abs=1e-9)
    assert [e["train_loss"] for e in got["epochs"]] == pytest.approx([e["train_loss"] for e in ref["epochs"]],
                                                                      abs=1e-9)
    from multilabel_ic.model.artifact import read_model_tar

    a, b = read_model_tar(tmp_path / "reference" / "model.tar.gz"), read_model_tar(tmp_path / "run" / "model.tar.gz")
    assert max(float(np.abs(a.params[k] - b.params[k]).max()) for k in a.params) == 0.0


def test_cli_starts_torchrun_for_the_user(lists, tmp_path, capsys):
    from multilabel_ic.cli import main

    train, val, root = lists
    common = ["--quiet", "train", "--train-lst", str(train), "--validation-lst", str(val), "--images", str(root),
              "--classes", "person,bicycle,car,motorcycle,airplane", "--workers", "0", "--hp=num_layers=20",
              "--hp=image_shape=3,28,28", "--hp=epochs=1", "--hp=multi_label=1"]
    # a batch that does not split across the processes is refused before anything starts
    assert main([*common, "--output", str(tmp_path / "odd"), "--nproc-per-node", "2", "--hp=mini_batch_size=15"]) == 2
    assert "make it a multiple of 2" in capsys.readouterr().err and not (tmp_path / "odd").exists()
    assert main([*common, "--output", str(tmp_path / "run"), "--nproc-per-node", "2", "--hp=mini_batch_size=16"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["epochs"][0]["epoch"] == 0
