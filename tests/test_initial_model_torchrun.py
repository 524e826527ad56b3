"""``train --nproc-per-node N --initial-model s3://...|JOB``: the remote initial model is downloaded once, by the
launcher, before the N processes start (against the moto server, whose S3 runs in this process and counts the
downloads); the processes read that copy, and a mismatch is refused before any of them starts."""

from __future__ import annotations

import contextlib
import hashlib
import json

import boto3
import pytest
import torch

from multilabel_ic.cli import main
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

REGION, BUCKET, KEY = "us-east-1", "ic-torchrun-bucket", "base/output/model.tar.gz"
CLASSES = "person,bicycle,car,motorcycle,airplane"


@pytest.fixture(scope="module")
def lists(coco5, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lists")
    train, val = coco5.split(0.75, seed=0)
    train.subset(range(32)).to_lst(folder / "train.lst")
    val.subset(range(16)).to_lst(folder / "val.lst")
    return folder / "train.lst", folder / "val.lst", coco5.root


def _artifact(path):
    torch.manual_seed(0)
    args, aux = mxnet_state_dict(ResNetV2(5, 20, (3, 28, 28)))
    return write_model_tar(path, {2: ({k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()})},
                           num_classes=5, num_layers=20, image_shape=(3, 28, 28), multi_label=True)


@pytest.fixture()
def remote_model(aws, tmp_path, monkeypatch):
    """A model.tar.gz in S3 (moto) and the list of GetObject requests the server answers for it."""
    import moto.s3.responses as s3r

    tar = _artifact(tmp_path / "src" / "model.tar.gz")
    s3 = boto3.Session(region_name=REGION).client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=tar.read_bytes())
    gets: list[str] = []
    original = s3r.S3Response.get_object

    def counting(self, *a, **kw):
        gets.append(self.path)
        return original(self, *a, **kw)

    monkeypatch.setattr(s3r.S3Response, "get_object", counting)
    return f"s3://{BUCKET}/{KEY}", tar, gets


def _argv(lists, out, *extra):
    train, val, root = lists
    return ["--quiet", "train", "--train-lst", str(train), "--validation-lst", str(val), "--images", str(root),
            "--classes", CLASSES, "--output", str(out), "--workers", "0", "--region", REGION, "--hp=num_layers=20",
            "--hp=image_shape=3,28,28", "--hp=resize=32", "--hp=mini_batch_size=16", "--hp=epochs=1",
            "--hp=multi_label=1", "--nproc-per-node", "2", *extra]


@pytest.mark.slow  # torchrun starts two processes that import PyTorch and train one short epoch
def test_two_processes_download_a_remote_initial_model_once(remote_model, lists, tmp_path, capsys, monkeypatch):
    import tempfile

    uri, tar, gets = remote_model
    monkeypatch.setattr(tempfile, "tempdir", str((tmp_path / "tmp").resolve()))  # where the launcher downloads
    (tmp_path / "tmp").mkdir()
    import multilabel_ic.continuation as continuation

    handed, fetch = [], continuation.fetched_once

    @contextlib.contextmanager
    def recording(source, aws):
        with fetch(source, aws) as (initial, env):
            handed.append((initial, env, initial.path.is_file()))
            yield initial, env

    monkeypatch.setattr(continuation, "fetched_once", recording)
    assert main(_argv(lists, tmp_path / "run", "--initial-model", uri)) == 0, capsys.readouterr().err[-3000:]
    assert [g for g in gets if g.endswith(KEY)] == [f"/{BUCKET}/{KEY}"]  # one download for the two processes
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    # both processes trained from that model: the run records its digest and saved epoch
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert digest in json.dumps(recorded), recorded
    [(initial, env, existed)] = handed  # the processes were handed the launcher's copy, under the temporary folder
    assert existed and initial.path.is_relative_to(tmp_path / "tmp") and str(initial.path) in json.dumps(env)
    assert initial.source == uri and initial.s3_uri == uri
    assert list((tmp_path / "tmp").iterdir()) == []  # the download lived as long as the processes


def test_a_mismatching_remote_model_is_refused_before_the_processes_start(remote_model, lists, tmp_path, capsys):
    uri, _, gets = remote_model
    code = main(_argv(lists, tmp_path / "run", "--initial-model", uri, "--hp=num_layers=32"))
    err = capsys.readouterr().err
    assert code == 2 and "num_layers is 20 in the model and 32 here" in err and uri in err, err
    assert "torch.distributed.run" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len([g for g in gets if g.endswith(KEY)]) == 1 and not (tmp_path / "run").exists()


def test_a_handed_down_model_serves_only_the_source_it_was_fetched_for(tmp_path, monkeypatch):
    from multilabel_ic.continuation import HANDED_DOWN_ENV, handed_down

    tar = _artifact(tmp_path / "model.tar.gz")
    uri = "s3://b/base/model.tar.gz"
    assert handed_down(uri) is None  # nothing handed down: the process fetches it itself
    monkeypatch.setenv(HANDED_DOWN_ENV, json.dumps({"source": uri, "path": str(tar), "s3_uri": uri}))
    got = handed_down(uri)
    assert got is not None and (got.path, got.source, got.s3_uri, got.epoch) == (tar, uri, uri, 2)
    assert got.sha256 == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert handed_down("s3://b/other/model.tar.gz") is None and handed_down("ic-job-1") is None
