"""The failure catalog's shared machinery: the workspace of good and damaged inputs, the case types and the checks
every case gets. The catalog itself is ``test_failure_catalog.py`` plus the ``test_catalog_*.py`` modules, one per
area; each module lists ``CLI_CASES`` and ``API_CASES`` and runs them through ``check_cli_case`` / ``check_api_case``.
"""

from __future__ import annotations

import io
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from multilabel_ic import Dataset, MultilabelICError
from multilabel_ic.cli import main
from multilabel_ic.data import recordio
from multilabel_ic.model.artifact import write_model_tar

CLASSES = "person,bicycle,car,motorcycle,airplane"


SMALL_HP = ["--hp", "image_shape=3,32,32", "--hp", "resize=36", "--hp", "mini_batch_size=8", "--hp", "epochs=1",
            "--hp", "multi_label=1", "--workers", "0"]


class Workspace:
    """Shared, read-only inputs: images, a good .lst, a model.tar.gz, and makers of damaged variants."""

    def __init__(self, root: Path, coco5: Dataset):
        self.root = root
        self.images = root / "images"
        self.images.mkdir()
        data = coco5.subset(range(24))
        for rel in data.paths:
            shutil.copy(coco5.root / rel, self.images / rel)
        self.data = Dataset(data.paths, data.labels, data.class_names, root=self.images)
        self.lst = self.data.to_lst(root / "good.lst")
        self.rec, _ = self.data.to_recordio(root / "good.rec")
        torch.manual_seed(0)
        from multilabel_ic.model.network import ResNetV2, mxnet_state_dict

        args, aux = mxnet_state_dict(ResNetV2(5, 20, (3, 28, 28)))  # small: the cases copy and rewrite it
        self.args = {k: v.numpy() for k, v in args.items()}
        self.aux = {k: v.numpy() for k, v in aux.items()}
        self.model = write_model_tar(root / "model" / "model.tar.gz", {1: (self.args, self.aux)}, num_classes=5,
                                     num_layers=20, image_shape=(3, 28, 28), multi_label=True)
        self.jpeg = self.images / self.data.paths[0]

    def snapshot(self) -> dict[str, int]:
        return {str(p.relative_to(self.root)): p.stat().st_mtime_ns for p in self.root.rglob("*")}

    # --- makers of bad files (written under the case's own tmp folder)
    def lst_with(self, tmp: Path, lines: list[str], name: str = "bad.lst") -> Path:
        p = tmp / name
        p.write_text("".join(line + "\n" for line in lines))
        return p

    def good_lines(self, n: int = 24) -> list[str]:
        return self.lst.read_text().splitlines()[:n]

    def tar_with(self, tmp: Path, files: dict[str, bytes], name: str = "bad.tar.gz") -> Path:
        p = tmp / name
        with tarfile.open(p, "w:gz") as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return p

    def members(self) -> dict[str, bytes]:
        with tarfile.open(self.model) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}

    def rec_with(self, tmp: Path, records: list[tuple[int, object]], name: str = "bad.rec") -> Path:
        jpeg = self.jpeg.read_bytes()
        recs = [(i, recordio.pack(recordio.IRHeader(0, np.asarray(lab, np.float32) if isinstance(lab, list) else lab,
                                                    rid, 0), jpeg)) for i, (rid, lab) in enumerate(records)]
        rec, _ = recordio.write_recordio(tmp / name, recs)
        return rec


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def tar_member_header_only(name: str, size: int) -> bytes:
    """A gzip'd tar whose first member header claims ``size`` bytes, followed by a little data."""
    import gzip

    info = tarfile.TarInfo(name)
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096)


def params_with_shape(shape: tuple[int, ...]) -> bytes:
    head = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Ii", 0xF993FAC9, 0)
    head += struct.pack(f"<I{len(shape)}q", len(shape), *shape) + struct.pack("<iii", 1, 0, 0)
    return head + b"\0" * 64 + struct.pack("<Q", 1) + struct.pack("<Q", 10) + b"arg:fc1_wt"


@dataclass
class CliCase:
    id: str
    argv: Callable[[Workspace, Path], list[str]]
    code: int
    message: str  # a substring of the error line


def train_argv(ws: Workspace, tmp: Path, *extra: str, lst: Path | None = None) -> list[str]:
    return ["train", "--train-lst", str(lst or ws.lst), "--images", str(ws.images), "--classes", CLASSES,
            "--output", str(tmp / "out"), *SMALL_HP, *extra]


def train_to_argv(ws: Workspace, output: Path) -> list[str]:
    return ["train", "--train-lst", str(ws.lst), "--images", str(ws.images), "--classes", CLASSES,
            "--output", str(output), *SMALL_HP]


def eval_argv(ws: Workspace, tmp: Path, model: Path | None = None, lst: Path | None = None, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(model or ws.model), "--lst", str(lst or ws.lst), "--images", str(ws.images),
            "--output", str(tmp / "out" / "eval.json"), *extra]


def predict_argv(ws: Workspace, tmp: Path, *images: str, model: Path | None = None) -> list[str]:
    return ["predict", "--model", str(model or ws.model), *images]


def write_file(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def members_with(ws: Workspace, **replace: bytes) -> dict[str, bytes]:
    files = ws.members()
    for key, value in replace.items():
        files[key.replace("__", "-").replace("_json", ".json")] = value
    return files


def with_metadata(ws: Workspace, tmp: Path, meta: bytes) -> Path:
    folder = tmp / "m"
    folder.mkdir(exist_ok=True)
    shutil.copy(ws.model, folder / "model.tar.gz")
    (folder / "model-metadata.json").write_bytes(meta)
    return folder / "model.tar.gz"


def file_tree(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size (links by their own size: a dangling one is a file too)."""
    return {str(p.relative_to(folder)): p.lstat().st_size for p in folder.rglob("*")} if folder.exists() else {}


@dataclass
class ApiCase:
    id: str
    call: Callable[[Workspace, Path], object]
    error: type
    message: str


def make_hp(**kw):
    from multilabel_ic import Hyperparameters

    base = dict(num_classes=5, num_training_samples=24, image_shape="3,32,32", resize=36, mini_batch_size=8, epochs=1,
                multi_label=1)
    return Hyperparameters(**{**base, **kw})


def make_predictor(ws: Workspace, **kw):
    from multilabel_ic.model.predictor import LocalPredictor

    return LocalPredictor(ws.model, class_names=CLASSES.split(","), device="cpu", **kw)


def sagemaker_backend(**kw):
    from multilabel_ic.backends.sagemaker import SageMakerBackend

    return SageMakerBackend(**{"role": "arn:aws:iam::1:role/R", "bucket": "b", "region": "us-east-1", **kw})


def local_options(**kw):
    from multilabel_ic.backends.local import LocalOptions

    return LocalOptions(**kw)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def clear_or_correct(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except MultilabelICError:
        return None


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["source-ref", "class", "name", "shape", "id", "x"]), inner, max_size=4),
                     max_leaves=12)



def check_cli_case(case: CliCase, ws: Workspace, tmp_path: Path, capsys) -> None:
    """The exit code, one ``error:`` line without a traceback holding the message, and nothing new on disk."""
    argv = case.argv(ws, tmp_path)
    before_ws, before_tmp = ws.snapshot(), file_tree(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == case.code, err
    assert len(error_lines) == 1 and "Traceback" not in err, err
    assert case.message in error_lines[0], error_lines[0]
    assert ws.snapshot() == before_ws, "the shared inputs were changed"
    assert file_tree(tmp_path) == before_tmp, "the command left files behind"


INPUTS_A_CASE_MAY_WRITE = {"m.tar.gz", "bad.tar.gz", "bad.rec", "bad.idx", "a.zip", "art", "art/model-shapes.json",
                           "m.manifest"}


def check_api_case(case: ApiCase, ws: Workspace, tmp_path: Path, inputs: set[str] = frozenset()) -> None:
    """The exception type and message; the library adds nothing on disk (the case's own bad inputs, ``inputs`` or
    the usual names, may stay)."""
    import pytest

    before_ws = ws.snapshot()
    before_tmp = file_tree(tmp_path)
    with pytest.raises(case.error) as e:
        case.call(ws, tmp_path)
    assert isinstance(e.value, MultilabelICError), type(e.value)
    assert case.message in str(e.value), str(e.value)
    assert ws.snapshot() == before_ws
    allowed = {n for n in INPUTS_A_CASE_MAY_WRITE | set(inputs) if (tmp_path / n).exists()}
    added = set(file_tree(tmp_path)) - set(before_tmp) - allowed
    assert not added, added

