"""The Gluon engine's resume state, ``checkpoints/last-gluon.params``: parameters, optimizer states and loop state
in MXNet's NDArray format, read by this project's own parser (never unpickled). MXNet is imported by the caller
(gluon.py); the arrays it needs back are made with the ``nd`` module handed in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write_bytes, json_default
from ..._read import GiB, read_bounded
from ...exceptions import ArtifactError, RunConflictError
from ...model.params import dumps_params, loads_params
from .run import RESTART_HINT, refuse_other_run

__all__ = ["STATE_FORMAT", "save_state", "read_state", "load_state"]

STATE_FORMAT = "multilabel-ic/gluon-checkpoint-v1"


def _flatten_state(state, key: str, arrays: dict[str, np.ndarray]):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return [_flatten_state(s, f"{key}.{i}", arrays) for i, s in enumerate(state)]
    arrays[key] = state.asnumpy()
    return key


def _unflatten_state(spec, arrays: dict[str, np.ndarray], nd, ctx):
    if spec is None:
        return None
    if isinstance(spec, list):
        return tuple(_unflatten_state(s, arrays, nd, ctx) for s in spec)
    value = arrays[spec]
    return nd.array(value, ctx=ctx, dtype=value.dtype)


def save_state(path: Path, net, trainer, state: dict, fingerprint: dict) -> None:
    arrays: dict[str, np.ndarray] = {f"param:{k}": p.data().asnumpy() for k, p in net.collect_params().items()}
    updater = trainer._updaters[0]
    structure = {str(i): _flatten_state(s, f"opt:{i}", arrays) for i, s in updater.states.items()}
    optimizer = trainer._optimizer
    meta = {"format": STATE_FORMAT, "state": state, "fingerprint": fingerprint, "optimizer_states": structure,
            "index_update_count": {str(k): v for k, v in optimizer._index_update_count.items()},
            "num_update": optimizer.num_update}
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=json_default).encode(), dtype=np.uint8)
    atomic_write_bytes(path, dumps_params(arrays))


def read_state(path: Path, fingerprint: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a resume state of this very run; any other is refused."""
    try:
        data = read_bounded(path, limit=16 * GiB, what="checkpoint", error=ArtifactError)  # never blocks on a FIFO
        arrays = loads_params(data, source=str(path))
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (ArtifactError, KeyError, ValueError, OSError) as exc:
        raise RunConflictError(f"{path}: not a Gluon checkpoint this version of multilabel_ic can resume from "
                               f"({exc}): {RESTART_HINT}.") from exc
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise RunConflictError(f"{path}: not a Gluon checkpoint of this version of multilabel_ic: {RESTART_HINT}.")
    refuse_other_run(path, meta["fingerprint"], fingerprint)
    return arrays, meta


def load_state(path: Path, net, trainer, fingerprint: dict, nd, ctx) -> dict:
    """Restore the network and the optimizer from ``path``; return the loop state."""
    arrays, meta = read_state(path, fingerprint)
    for name, param in net.collect_params().items():
        param.set_data(nd.array(arrays[f"param:{name}"], ctx=ctx, dtype=param.dtype))
    updater = trainer._updaters[0]
    for index, spec in meta["optimizer_states"].items():
        updater.states[int(index)] = _unflatten_state(spec, arrays, nd, ctx)
        updater.states_synced[int(index)] = True
    optimizer = trainer._optimizer
    optimizer._index_update_count.update({int(k): v for k, v in meta["index_update_count"].items()})
    optimizer.num_update = meta["num_update"]
    return dict(meta["state"])
