"""The failure catalog's cases of continuing from a model (``train --initial-model``, ``fit(initial_model=...)``): a
missing, damaged or foreign artifact (exit 1), a model whose network differs from the hyperparameters (exit 2, each
differing field named with both values), and initial models given where they cannot be used. Nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from catalog_support import (
    ApiCase,
    CliCase,
    check_api_case,
    check_cli_case,
    make_hp,
    sagemaker_backend,
    train_argv,
    write_file,
)

from multilabel_ic import Trainer, UsageError
from multilabel_ic.model.artifact import write_model_tar
from multilabel_ic.model.params import dumps_params

FIT_28 = ["--hp", "num_layers=20", "--hp", "image_shape=3,28,28", "--hp", "resize=32"]  # the workspace model's network


def _model(ws, tmp: Path, *, num_classes: int = 5, multi_label: bool = True, nan: bool = False) -> Path:
    """The workspace's ResNet-20 at 28 px with another head, or a NaN weight."""
    args = {k: v.copy() for k, v in ws.args.items()}
    if num_classes != 5:
        args["fc1_weight"], args["fc1_bias"] = args["fc1_weight"][:num_classes], args["fc1_bias"][:num_classes]
    if nan:
        args["stage2_unit1_conv1_weight"].flat[3] = np.nan
    return write_model_tar(tmp / "m.tar.gz", {2: (args, ws.aux)}, num_classes=num_classes, num_layers=20,
                           image_shape=(3, 28, 28), multi_label=multi_label)


def _truncated(ws, tmp: Path) -> Path:
    data = ws.model.read_bytes()
    return write_file(tmp / "m.tar.gz", data[: len(data) // 2])


def _foreign_network(ws, tmp: Path) -> Path:
    params = dumps_params({"arg:fc1_weight": np.zeros((5, 8), np.float32), "arg:fc1_bias": np.zeros(5, np.float32),
                           "arg:dense0_weight": np.zeros((8, 8), np.float32)})
    return ws.tar_with(tmp, {"image-classification-0001.params": params})


def _case(id: str, make, code: int, message: str, *extra: str) -> CliCase:
    return CliCase(f"incr-{id}", lambda ws, t: train_argv(ws, t, *extra, "--initial-model", str(make(ws, t))), code,
                   message)


CLI_CASES = [
    _case("initial-model-missing", lambda ws, t: t / "none" / "model.tar.gz", 1, "none/model.tar.gz: no model.tar.gz "
          "there; give the model.tar.gz of a training run"),
    _case("initial-model-folder-without-artifact", lambda ws, t: t, 1, "no model.tar.gz there"),
    _case("initial-model-truncated", _truncated, 1, "m.tar.gz: cannot read the model artifact ("),
    _case("initial-model-not-an-archive", lambda ws, t: write_file(t / "m.tar.gz", "weights\n"), 1,
          "cannot read the model artifact"),
    _case("initial-model-foreign-archive", lambda ws, t: ws.tar_with(t, {"weights.bin": b"\0" * 64}), 1,
          "no 'image-classification-NNNN.params' file inside"),
    _case("initial-model-foreign-network", _foreign_network, 1, "not an image-classification ResNet"),
    _case("initial-model-nan-weights", lambda ws, t: _model(ws, t, nan=True), 1,
          "m.tar.gz: image-classification-0002.params: parameter 'arg:stage2_unit1_conv1_weight' holds 1 NaN "
          "values"),
    _case("initial-model-other-network", lambda ws, t: ws.model, 2,
          "num_layers is 20 in the model and 152 here; image_shape is 3,28,28 in the model and 3,32,32 here."),
    _case("initial-model-other-network-torchrun", lambda ws, t: ws.model, 2,  # checked once, before N processes
          "num_layers is 20 in the model and 152 here", "--nproc-per-node", "2"),
    _case("initial-model-other-classes", lambda ws, t: _model(ws, t, num_classes=4), 2,
          "num_classes is 4 in the model and 5 here.", *FIT_28),
    _case("initial-model-single-label", lambda ws, t: _model(ws, t, multi_label=False), 2,
          "multi_label is 0 in the model and 1 here.", *FIT_28),
]


def _fake_backend():
    from multilabel_ic.testing import FakeBackend

    return FakeBackend(probabilities=[0.5] * 5)


def _local_fit(ws, tmp: Path, source):
    from multilabel_ic.backends.local import LocalBackend

    return LocalBackend(device="cpu").fit(make_hp(), ws.data, None, output_dir=tmp / "out", initial_model=source)


API_CASES = [
    ApiCase("incr-api-backend-cannot-continue", lambda ws, tmp: Trainer(
        make_hp(), backend=_fake_backend(), output_dir=tmp / "out").fit(ws.data, initial_model=ws.model),
        UsageError, "backend 'fake' cannot continue from a model"),
    ApiCase("incr-api-initial-model-of-another-type", lambda ws, tmp: Trainer(
        make_hp(), output_dir=tmp / "out").fit(ws.data, initial_model=3), UsageError,
        "initial_model must be a path, an s3:// URI, a training job name or a Model; got int."),
    ApiCase("incr-api-local-backend-given-an-s3-uri", lambda ws, tmp: _local_fit(ws, tmp, "s3://b/model.tar.gz"),
            UsageError, "is in SageMaker: pass it to Trainer(hp, backend='local').fit"),
    ApiCase("incr-api-sagemaker-two-initial-models", lambda ws, tmp: Trainer(
        make_hp(), backend=sagemaker_backend(model_uri="s3://b/m/model.tar.gz"), output_dir=tmp / "out").fit(
        ws.data, validation=ws.data, initial_model=ws.model), UsageError, "give the initial model once"),
    ApiCase("incr-api-sagemaker-other-network", lambda ws, tmp: Trainer(
        make_hp(), backend=sagemaker_backend(), output_dir=tmp / "out").fit(
        ws.data, validation=ws.data, initial_model=ws.model), UsageError,
        "num_layers is 20 in the model and 152 here; image_shape is 3,28,28 in the model and 3,32,32 here"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path)
