"""What a run promises about its output folder: it trains what it is given or refuses, one run per folder, no
code from a checkpoint, files that follow the umask, a full disk that loses nothing; downloads that never splice."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from multilabel_ic import (
    Dataset,
    DownloadError,
    Hyperparameters,
    ImageDecodeError,
    OutputError,
    RunConflictError,
    Trainer,
)
from multilabel_ic._io import atomic_write_text
from multilabel_ic._lock import FolderLock
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.cli import main

TINY = dict(num_classes=5, num_layers=20, image_shape="3,28,28", resize=32, mini_batch_size=16, epochs=1,
            learning_rate=0.01, optimizer="adam", multi_label=1)


def _opts(**kw):
    return LocalOptions(num_workers=0, progress=False, **kw)


@pytest.fixture(scope="module")
def splits(coco5):
    train, val = coco5.subset(range(64)).split(48, seed=0)
    return train, val


def _fit(train, val, out, hp=None, **opts):
    hp = hp or Hyperparameters(**TINY, num_training_samples=len(train))
    return Trainer(hp, output_dir=out, options=_opts(**opts)).fit(train, validation=val)


@pytest.fixture(scope="module")
def finished(splits, tmp_path_factory):
    train, val = splits
    out = tmp_path_factory.mktemp("finished")
    model = _fit(train, val, out)
    return out, model


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ resume only what was trained on the same inputs
@pytest.mark.parametrize("change, field", [
    ("other-training-data", "training data"),
    ("other-validation-data", "validation data"),
    ("other-class-names", "class names"),
    ("other-seed", "seed"),
    ("other-hyperparameters", "hyperparameters"),
    ("other-options", "weighted_loss"),
])
def test_a_finished_run_is_not_resumed_with_other_inputs(change, field, finished, splits, tmp_path):
    out = _copy_run(finished[0], tmp_path / "run")
    train, val = splits
    hp = Hyperparameters(**TINY, num_training_samples=len(train))
    opts = {}
    if change == "other-training-data":
        train = Dataset(train.paths, np.roll(train.labels, 1, axis=0), train.class_names, root=train.root)
    elif change == "other-validation-data":
        val = val.subset(range(8))
    elif change == "other-class-names":
        names = ["person", "bicycle", "car", "motorbike", "airplane"]
        train = Dataset(train.paths, train.labels, names, root=train.root)
        val = Dataset(val.paths, val.labels, names, root=val.root)
    elif change == "other-seed":
        opts["seed"] = 1
    elif change == "other-hyperparameters":
        hp = hp.replace(learning_rate=0.02)
    elif change == "other-options":
        opts["weighted_loss"] = "balanced"
    before = (out / "model.tar.gz").read_bytes()
    with pytest.raises(RunConflictError, match=f"trained with other .*{field}") as e:
        _fit(train, val, out, hp, **opts)
    assert "--restart" in str(e.value)
    assert (out / "model.tar.gz").read_bytes() == before  # the finished run is untouched


def test_restart_replaces_the_previous_run(finished, splits, tmp_path):
    out = _copy_run(finished[0], tmp_path / "run")
    train, val = splits
    names = ["p", "b", "c", "m", "a"]
    train = Dataset(train.paths, train.labels, names, root=train.root)
    val = Dataset(val.paths, val.labels, names, root=val.root)
    (out / "notes.txt").write_text("mine")
    model = _fit(train, val, out, restart=True)
    assert json.loads((out / "model-metadata.json").read_text())["class_names"] == names
    assert model.metrics["epochs"] and (out / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_same_inputs_resume_a_finished_run_without_training(finished, splits, tmp_path, caplog):
    out = _copy_run(finished[0], tmp_path / "run")
    train, val = splits
    model = _fit(train, val, out)
    assert "resuming from" in caplog.text and model.metrics["final"]["mAP"] == finished[1].metrics["final"]["mAP"]


def test_a_folder_with_a_foreign_model_and_no_checkpoint_is_refused(finished, splits, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.tar.gz").write_bytes((finished[0] / "model.tar.gz").read_bytes())
    with pytest.raises(RunConflictError, match="holds a model of another run"):
        _fit(*splits, out)


# ------------------------------------------------------------------ checkpoints are data, never code
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_a_planted_checkpoint_does_not_run_code(splits, tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": "multilabel-ic/checkpoint-v2", "model": _Payload(marker)}, out / "checkpoints" / "last.pt")
    with pytest.raises(RunConflictError, match="holds objects other than tensors"):
        _fit(*splits, out)
    assert not marker.exists()


def test_a_checkpoint_holds_only_tensors_and_plain_values(finished):
    ck = torch.load(finished[0] / "checkpoints" / "last.pt", weights_only=True)
    assert set(ck) == {"format", "model", "optimizer", "scaler", "torch_rng", "state", "fingerprint"}
    assert json.loads(ck["state"])["epoch"] == 1 and json.loads(ck["fingerprint"])["seed"] == 0


# ------------------------------------------------------------------ one run per folder
_HOLDER = textwrap.dedent("""
    import sys, time
    from multilabel_ic._lock import FolderLock
    lock = FolderLock(sys.argv[1]).acquire()
    print("LOCKED", flush=True)
    time.sleep(120)
""")


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_holder_does_not_block(splits, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(RunConflictError, match=f"in use by process {holder.pid} on"):
            _fit(*splits, out)
        assert not (out / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (out / ".lock").exists()  # left by the killed holder: a stale lock
    model = _fit(*splits, out)
    assert model.metrics["epochs"] and not (out / ".lock").exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(RunConflictError, match=f"process {os.getpid()}"):
            FolderLock(tmp_path).acquire()
    with FolderLock(tmp_path):
        pass


# ------------------------------------------------------------------ the file system
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.lst", "x")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.lst").stat().st_mode & 0o777 == mode == plain.stat().st_mode & 0o777


def test_a_full_disk_while_checkpointing_loses_nothing(splits, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save

    def full_disk(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match="last.pt: cannot write .*the disk is full: free some space"):
        _fit(*splits, out)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not (out / ".lock").exists()
    monkeypatch.setattr(torch, "save", real_save)
    model = _fit(*splits, out)  # the same command, once space is free
    assert model.metrics["epochs"] and (out / "model.tar.gz").exists()


def test_a_run_that_fails_before_writing_leaves_no_folder(splits, tmp_path):
    train, val = splits
    bad_root = tmp_path / "imgs"
    bad_root.mkdir()
    for rel in train.paths:
        (bad_root / rel).write_text("not an image")
    broken = Dataset(train.paths, train.labels, train.class_names, root=bad_root)
    out = tmp_path / "run"
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        _fit(broken, None, out)
    assert not out.exists()


def test_validation_without_positives_finishes_with_a_null_map(splits, tmp_path, capsys):
    train, val = splits
    root = train.root
    train.to_lst(tmp_path / "train.lst")
    Dataset(val.paths, np.zeros_like(val.labels), val.class_names, root=root).to_lst(tmp_path / "val.lst")
    rc = main(["--quiet", "train", "--train-lst", str(tmp_path / "train.lst"), "--validation-lst",
               str(tmp_path / "val.lst"), "--images", str(root), "--classes", ",".join(train.class_names),
               "--output", str(tmp_path / "run"), "--workers", "0", "--hp", "num_layers=20",
               "--hp", "image_shape=3,28,28", "--hp", "resize=32", "--hp", "mini_batch_size=16", "--hp", "epochs=1",
               "--hp", "multi_label=1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "validation mAP n/a" in captured.out and "no positive label" in captured.out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["mAP"] is None


# ------------------------------------------------------------------ downloads
def test_a_file_that_changed_on_the_server_is_downloaded_whole_not_spliced(server, tmp_path):
    from multilabel_ic.download import download

    _, url, root = server
    old, new = os.urandom(300_000), os.urandom(300_000)
    (root / "w.bin").write_bytes(old)
    with pytest.raises(DownloadError):
        download(f"{url}/cut/w.bin", tmp_path / "w.bin", progress=False, retries=1)
    assert (tmp_path / "w.bin.part").stat().st_size == 150_000
    (root / "w.bin").write_bytes(new)  # same size, other content: a Range without If-Range would splice
    download(f"{url}/w.bin", tmp_path / "w.bin", progress=False)
    assert (tmp_path / "w.bin").read_bytes() == new


def test_a_partial_file_without_a_validator_starts_again(server, tmp_path):
    from multilabel_ic.download import download

    _, url, root = server
    (root / "v.bin").write_bytes(b"B" * 1000)
    (tmp_path / "v.bin.part").write_bytes(b"A" * 400)  # no .part.json: unknown origin
    download(f"{url}/v.bin", tmp_path / "v.bin", progress=False)
    assert (tmp_path / "v.bin").read_bytes() == b"B" * 1000


def test_http_is_tried_over_https_first(server, tmp_path, caplog):
    from multilabel_ic.download import download

    _, url, root = server
    (root / "h.bin").write_bytes(b"h" * 10)
    download(f"{url}/h.bin", tmp_path / "h.bin", progress=False)
    assert "does not serve https" in caplog.text
    with pytest.raises(DownloadError, match="does not serve https"):
        download(f"{url}/h.bin", tmp_path / "h2.bin", progress=False, require_https=True)
    assert not (tmp_path / "h2.bin").exists()


def test_extraction_merges_and_deletes_nothing(tmp_path):
    import zipfile

    from multilabel_ic.download import extract_zip

    dest = tmp_path / "coco"
    (dest / "val2017").mkdir(parents=True)
    (dest / "val2017" / "mine.jpg").write_bytes(b"user data")
    (dest / "val2017" / "a.jpg").write_bytes(b"old a")
    archive = tmp_path / "v.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("val2017/a.jpg", b"new a")
        zf.writestr("val2017/b.jpg", b"b")
    extract_zip(archive, dest)
    assert (dest / "val2017" / "mine.jpg").read_bytes() == b"user data"
    assert (dest / "val2017" / "a.jpg").read_bytes() == b"new a" and (dest / "val2017" / "b.jpg").read_bytes() == b"b"
    assert sorted(p.name for p in (dest / "val2017").iterdir()) == ["a.jpg", "b.jpg", "mine.jpg"]


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    import cv2
    from test_failure_catalog import png_header_only

    from multilabel_ic.images import decode_image

    calls = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(a))
    with pytest.raises(ImageDecodeError, match="has 400000000 pixels"):
        decode_image(png_header_only(20000, 20000), source="bomb.png")
    assert calls == []  # refused from the header: nothing was decoded
    monkeypatch.setenv("MULTILABEL_IC_MAX_PIXELS", "0")  # no limit: the decoder is reached
    with pytest.raises(ImageDecodeError):
        decode_image(png_header_only(20000, 20000), source="bomb.png")
    assert len(calls) == 1


def test_stale_lock_file_of_a_dead_process_is_reused(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "x", "since": "then"}))
    with FolderLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()
