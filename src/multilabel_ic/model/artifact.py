"""``model.tar.gz`` in the built-in algorithm's layout, written and read without MXNet.

Contents: ``image-classification-symbol.json`` (an MXNet symbol graph of the ResNet), one or more
``image-classification-%04d.params`` (``arg:``/``aux:`` NDArray dict, 1-based epoch) and ``model-shapes.json``
(``[{"name": "data", "shape": [N, C, H, W]}]``). The reader infers depth, classes and input shape from the files, so
an artifact of a SageMaker job loads into the local network and the other way round.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from ..exceptions import ArtifactError
from .architecture import small_stem, units_for
from .metadata import METADATA_NAME, read_metadata, write_metadata
from .params import dumps_params, loads_params, require_finite

__all__ = ["ArtifactContents", "write_model_tar", "read_model_tar", "symbol_json", "PREFIX", "write_metadata",
           "read_metadata", "METADATA_NAME"]

log = logging.getLogger("multilabel_ic")

PREFIX = "image-classification"
_PARAMS_RE = re.compile(rf"^{PREFIX}-(\d{{4}})\.params$")


@dataclass
class ArtifactContents:
    params: dict[str, np.ndarray]  # MXNet names without arg:/aux: prefixes
    epoch: int
    epochs_available: list[int]
    symbol: dict | None
    data_shape: tuple[int, ...] | None
    num_layers: int
    num_classes: int
    output: str  # "sigmoid" or "softmax"

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        if not self.data_shape:
            return None
        c, h, w = self.data_shape[1:4]
        return (c, h, w)


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.arg_nodes: list[int] = []
        self.rows: list[int] = [0]

    def var(self, name: str) -> int:
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        self.arg_nodes.append(len(self.nodes) - 1)
        self.rows.append(self.rows[-1] + 1)
        return len(self.nodes) - 1

    def op(self, op: str, name: str, inputs: list[int], attrs: dict | None = None, aux: tuple[int, ...] = (),
           outputs: int = 1) -> int:
        node: dict[str, Any] = {"op": op, "name": name, "inputs": [[i, 0, 1 if i in aux else 0] for i in inputs]}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        self.rows.append(self.rows[-1] + outputs)
        return len(self.nodes) - 1

    def bn(self, x: int, name: str, fix_gamma: bool = False) -> int:
        ins = [x] + [self.var(f"{name}_{p}") for p in ("gamma", "beta", "moving_mean", "moving_var")]
        return self.op("BatchNorm", name, ins, {"eps": 2e-5, "fix_gamma": fix_gamma, "momentum": 0.9,
                                                "use_global_stats": False}, aux=(ins[3], ins[4]), outputs=3)

    def conv(self, x: int, name: str, num_filter: int, kernel: int, stride: int, pad: int) -> int:
        w = self.var(f"{name}_weight")
        return self.op("Convolution", name, [x, w], {"kernel": (kernel, kernel), "stride": (stride, stride),
                                                     "pad": (pad, pad), "num_filter": num_filter, "no_bias": True,
                                                     "workspace": 256})


def symbol_json(*, num_classes: int, num_layers: int, image_shape: tuple[int, int, int], multi_label: bool) -> dict:
    """The MXNet symbol graph of ``symbols/resnet.py`` for these settings (as ``Symbol.tojson()`` lays it out)."""

    units, filters, bottle = units_for(num_layers, image_shape[1])
    g = _Graph()
    x = g.var("data")
    x = g.bn(g.op("_copy", "id", [x]), "bn_data", fix_gamma=True)
    if small_stem(image_shape[1]):
        x = g.conv(x, "conv0", filters[0], 3, 1, 1)
    else:
        x = g.conv(x, "conv0", filters[0], 7, 2, 3)
        x = g.op("Activation", "relu0", [g.bn(x, "bn0")], {"act_type": "relu"})
        x = g.op("Pooling", "pooling0", [x], {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "pool_type": "max"})
    for i, n in enumerate(units):
        for j in range(n):
            name = f"stage{i + 1}_unit{j + 1}"
            stride = (1 if i == 0 else 2) if j == 0 else 1
            nf = filters[i + 1]
            act1 = g.op("Activation", f"{name}_relu1", [g.bn(x, f"{name}_bn1")], {"act_type": "relu"})
            if bottle:
                c1 = g.conv(act1, f"{name}_conv1", nf // 4, 1, 1, 0)
                a2 = g.op("Activation", f"{name}_relu2", [g.bn(c1, f"{name}_bn2")], {"act_type": "relu"})
                c2 = g.conv(a2, f"{name}_conv2", nf // 4, 3, stride, 1)
                a3 = g.op("Activation", f"{name}_relu3", [g.bn(c2, f"{name}_bn3")], {"act_type": "relu"})
                out = g.conv(a3, f"{name}_conv3", nf, 1, 1, 0)
            else:
                c1 = g.conv(act1, f"{name}_conv1", nf, 3, stride, 1)
                a2 = g.op("Activation", f"{name}_relu2", [g.bn(c1, f"{name}_bn2")], {"act_type": "relu"})
                out = g.conv(a2, f"{name}_conv2", nf, 3, 1, 1)
            short = x if j > 0 else g.conv(act1, f"{name}_sc", nf, 1, stride, 0)
            x = g.op("elemwise_add", f"_plus{len(g.nodes)}", [out, short])
    x = g.op("Activation", "relu1", [g.bn(x, "bn1")], {"act_type": "relu"})
    x = g.op("Pooling", "pool1", [x], {"kernel": (7, 7), "global_pool": True, "pool_type": "avg"})
    x = g.op("Flatten", "flatten0", [x])
    x = g.op("FullyConnected", "fc1", [x, g.var("fc1_weight"), g.var("fc1_bias")], {"num_hidden": num_classes})
    if multi_label:
        head = g.op("LogisticRegressionOutput", "sigmoid", [x, g.var("sigmoid_label")])
    else:
        head = g.op("SoftmaxOutput", "softmax", [x, g.var("softmax_label")])
    return {"nodes": g.nodes, "arg_nodes": g.arg_nodes, "node_row_ptr": g.rows, "heads": [[head, 0, 0]],
            "attrs": {"mxnet_version": ["int", 10300]}}


def write_model_tar(path: str | os.PathLike, checkpoints: dict[int, tuple[dict, dict]], *, num_classes: int,
                    num_layers: int, image_shape: tuple[int, int, int], multi_label: bool,
                    batch_size: int = 1) -> Path:
    """Write ``model.tar.gz`` atomically. ``checkpoints`` maps 1-based epoch -> (arg_params, aux_params)."""
    if not checkpoints:
        raise ArtifactError("no checkpoint to write into model.tar.gz")
    sym = symbol_json(num_classes=num_classes, num_layers=num_layers, image_shape=image_shape,
                      multi_label=multi_label)
    files = {f"{PREFIX}-symbol.json": json.dumps(sym, indent=2).encode(),
             "model-shapes.json": json.dumps([{"name": "data", "shape": [batch_size, *image_shape]}]).encode()}
    for epoch, (args, aux) in sorted(checkpoints.items()):
        params = {f"arg:{k}": np.asarray(v, dtype=np.float32) for k, v in args.items()}
        params.update({f"aux:{k}": np.asarray(v, dtype=np.float32) for k, v in aux.items()})
        files[f"{PREFIX}-{epoch:04d}.params"] = dumps_params(params)
    with atomic_write(path, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return Path(path)


def _infer_depth(params: dict[str, np.ndarray]) -> int:
    units: dict[int, int] = {}
    for name in params:
        m = re.match(r"stage(\d+)_unit(\d+)_", name)
        if m:
            s, u = int(m.group(1)), int(m.group(2))
            units[s] = max(units.get(s, 0), u)
    if not units:
        raise ArtifactError("no 'stageN_unitM_*' parameters: not an image-classification ResNet")
    bottle = "stage1_unit1_conv3_weight" in params
    return sum(units.values()) * (3 if bottle else 2) + 2


# Size limits of the members read from an artifact, checked from the tar headers before anything is read. The
# largest network the algorithm trains (ResNet-200, 64.7M parameters, plus 2048 x num_classes in fc1) is 0.26 GB in
# float32; the parameters limit leaves room for ~60k classes. Nothing else in the layout is more than a few MB.
MEMBER_LIMITS = {"params": 768 * 1024 ** 2, f"{PREFIX}-symbol.json": 16 * 1024 ** 2, "model-shapes.json": 64 * 1024}
MAX_MEMBERS = 1000
# Members outside the layout are skipped, but a gzip stream must be decompressed to reach what follows them: at most
# this many bytes of them are passed over (the algorithm's artifact has none), so a model.tar.gz padded with
# gigabytes of other files is refused at the first header that goes past it instead of decompressed for seconds.
MAX_SKIPPED_BYTES = 64 * 1024 ** 2


def _member_limit(name: str) -> int | None:
    if _PARAMS_RE.match(name):
        return MEMBER_LIMITS["params"]
    return MEMBER_LIMITS.get(name)


@dataclass
class _Members:
    """What an artifact holds: the JSON members' bytes, every saved epoch, and the chosen epoch's parameters."""

    files: dict[str, bytes]
    epochs: list[int]
    params_name: str | None = None
    params: bytes | None = None


def _wanted(name: str, epoch: int | None, members: _Members) -> bool:
    """Whether a .params member is the one to keep: the requested epoch, else the latest so far."""
    m = _PARAMS_RE.match(name)
    if not m:
        return True
    ep = int(m.group(1))
    members.epochs.append(ep)
    if epoch is not None:
        return ep == epoch
    return all(ep >= e for e in members.epochs)


def _keep(members: _Members, name: str, data: bytes) -> None:
    if _PARAMS_RE.match(name):
        members.params_name, members.params = name, data
    else:
        members.files[name] = data


def _read_members(p: Path, epoch: int | None) -> _Members:
    """The members of the layout (by base name), each within its size limit, and of the .params files only the one of
    ``epoch`` (default: the latest). Other regular files are skipped, up to :data:`MAX_SKIPPED_BYTES`; two members of
    one base name (in different folders, or repeated) are refused."""
    members = _Members(files={}, epochs=[])
    if p.is_dir():
        for f in sorted(p.iterdir()):
            limit = _member_limit(f.name)
            if limit is None or not f.is_file():
                continue
            if f.stat().st_size > limit:
                raise ArtifactError(f"{f}: {f.stat().st_size} bytes is more than a {f.name} of the algorithm can be "
                                    f"({limit} bytes); this is not an image-classification model.")
            if _wanted(f.name, epoch, members):
                _keep(members, f.name, f.read_bytes())
        return members
    seen: dict[str, str] = {}
    skipped = 0
    with tarfile.open(p, "r:*") as tar:
        for count, m in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise ArtifactError(f"{p}: more than {MAX_MEMBERS} members; the algorithm's model.tar.gz holds a "
                                    f"symbol, model-shapes.json and one .params file per saved epoch.")
            name = Path(m.name).name
            if m.isdir():
                continue
            if not m.isfile():
                raise ArtifactError(f"{p}: member {m.name!r} is a link or a device file; a model.tar.gz of the "
                                    f"algorithm holds regular files only.")
            limit = _member_limit(name)
            if limit is None:
                skipped += m.size
                if skipped > MAX_SKIPPED_BYTES:
                    raise ArtifactError(
                        f"{p}: member {m.name!r} ({m.size} bytes) is not part of the algorithm's layout, and with it "
                        f"the archive holds more than {MAX_SKIPPED_BYTES} bytes of such files, which would all be "
                        f"decompressed to reach the model; repack it with only {PREFIX}-symbol.json, "
                        f"model-shapes.json and the {PREFIX}-NNNN.params files.")
                log.debug("%s: skipping member %s (not part of the algorithm's layout)", p, m.name)
                continue
            if name in seen:
                raise ArtifactError(f"{p}: members {seen[name]!r} and {m.name!r} are both a {name}; it is ambiguous "
                                    f"which one is the model. Repack the archive with one of them.")
            seen[name] = m.name
            if m.size > limit:
                raise ArtifactError(f"{p}: member {m.name!r} is {m.size} bytes, more than a {name} of the algorithm "
                                    f"can be ({limit} bytes); refusing to read it.")
            if not _wanted(name, epoch, members):
                continue
            fh = tar.extractfile(m)
            if fh is None:
                raise ArtifactError(f"{p}: member {m.name!r} cannot be read.")
            _keep(members, name, fh.read())
    return members


def _json_member(files: dict[str, bytes], name: str, p: Path):
    try:
        return json.loads(files[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{p}: {name} is not valid JSON ({exc}); the artifact is damaged.") from exc


def _data_shape(shapes, p: Path) -> tuple[int, ...] | None:
    bad = ArtifactError(f"{p}: model-shapes.json must be a list like [{{\"name\": \"data\", \"shape\": "
                        f"[N, C, H, W]}}]; got {str(shapes)[:80]}")
    if not isinstance(shapes, list):
        raise bad
    for entry in shapes:
        if not isinstance(entry, dict):
            raise bad
        if entry.get("name") == "data":
            shape = entry.get("shape")
            if (not isinstance(shape, list) or len(shape) != 4
                    or not all(isinstance(v, int) and 0 < v < 1 << 16 for v in shape)):
                raise bad
            return tuple(shape)
    return None


# The output heads of the algorithm's symbols and what each one computes; any other head is refused.
HEADS = {"LogisticRegressionOutput": "sigmoid", "sigmoid": "sigmoid", "SoftmaxOutput": "softmax", "softmax": "softmax",
         "SoftmaxActivation": "softmax"}


def _head_output(symbol, p: Path) -> str:
    try:
        head = symbol["nodes"][symbol["heads"][0][0]]
        head_op = head["op"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ArtifactError(f"{p}: {PREFIX}-symbol.json has no output head (nodes/heads are missing or empty); "
                            f"the artifact is damaged.") from exc
    if head_op == "Activation" and isinstance(head.get("attrs"), dict) and head["attrs"].get("act_type") == "sigmoid":
        return "sigmoid"
    if not isinstance(head_op, str) or head_op not in HEADS:
        known = ", ".join(f"{op} ({out})" for op, out in HEADS.items())
        raise ArtifactError(f"{p}: the output head of {PREFIX}-symbol.json is the op {str(head_op)[:40]!r}, which is "
                            f"not one of the algorithm's: {known}, Activation (act_type sigmoid). The artifact is "
                            f"damaged or not an image-classification model.")
    return HEADS[head_op]


def read_model_tar(path: str | os.PathLike, *, epoch: int | None = None) -> ArtifactContents:
    """Read a ``model.tar.gz`` (or an extracted directory) of the algorithm; the latest epoch unless ``epoch``.

    Only the layout's members are read, each within :data:`MEMBER_LIMITS` (checked from the tar header first), and
    of the ``.params`` files only the chosen epoch's; links, device files, oversized members, two members of one
    name, more than :data:`MAX_SKIPPED_BYTES` of other files, archives of more than :data:`MAX_MEMBERS` members,
    an output head that is not one of :data:`HEADS` and non-finite parameters are refused.
    """
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p}: model artifact not found; pass the model.tar.gz a training run wrote.")
    try:
        members = _read_members(p, epoch)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{p}: cannot read the model artifact ({exc or type(exc).__name__}); it is truncated "
                            f"or not a model.tar.gz. Download or copy it again.") from exc
    epochs, files = sorted(members.epochs), members.files
    if not epochs:
        raise ArtifactError(f"{p}: no '{PREFIX}-NNNN.params' file inside; is this an image-classification model?")
    if members.params is None or members.params_name is None:
        raise ArtifactError(f"{p}: no parameters for epoch {epoch}; available: {epochs}")
    name = members.params_name
    chosen = int(name[len(PREFIX) + 1:len(PREFIX) + 5])
    raw = loads_params(members.params, source=f"{p}:{name}")
    require_finite(raw, source=f"{p}:{name}")
    params = {k.split(":", 1)[-1]: v for k, v in raw.items()}
    if "fc_weight" in params and "fc1_weight" not in params:  # MX-FT fine-tune naming
        params["fc1_weight"], params["fc1_bias"] = params.pop("fc_weight"), params.pop("fc_bias")
    symbol = _json_member(files, f"{PREFIX}-symbol.json", p) if f"{PREFIX}-symbol.json" in files else None
    shape = _data_shape(_json_member(files, "model-shapes.json", p), p) if "model-shapes.json" in files else None
    output = _head_output(symbol, p) if symbol is not None else "softmax"
    if "fc1_weight" not in params or params["fc1_weight"].ndim != 2:
        raise ArtifactError(f"{p}: no 2-D fc1_weight parameter; is this an image-classification model?")
    return ArtifactContents(params=params, epoch=chosen, epochs_available=epochs, symbol=symbol, data_shape=shape,
                            num_layers=_infer_depth(params), num_classes=int(params["fc1_weight"].shape[0]),
                            output=output)
