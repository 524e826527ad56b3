import json
import struct
import tarfile

import numpy as np
import pytest
import torch

from multilabel_ic import ArtifactError
from multilabel_ic.model.artifact import read_model_tar, symbol_json, write_model_tar
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.model.params import dumps_params, load_params, loads_params, save_params


def _legacy_params(arrays: dict) -> bytes:
    """The v0.8 layout of the model-zoo files: no magic, uint32 ndim + uint32 dims."""
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for a in arrays.values():
        out += struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape) + struct.pack("<iii", 1, 0, 0) + a.astype("<f4").tobytes()
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        out += struct.pack("<Q", len(name)) + name.encode()
    return out


def _v1_params(arrays: dict) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for a in arrays.values():
        out += struct.pack("<I", 0xF993FAC8) + struct.pack(f"<I{a.ndim}q", a.ndim, *a.shape)
        out += struct.pack("<iii", 2, 0, 0) + a.astype("<f4").tobytes()  # saved from gpu(0)
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        out += struct.pack("<Q", len(name)) + name.encode()
    return out


ARRAYS = {"arg:conv0_weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
          "aux:bn0_moving_var": np.array([1.5, 2.5], np.float32)}


@pytest.mark.parametrize("encode", [dumps_params, _legacy_params, _v1_params])
def test_params_readers_for_every_ndarray_version(encode):
    back = loads_params(encode(ARRAYS))
    assert list(back) == list(ARRAYS)
    for k in ARRAYS:
        np.testing.assert_array_equal(back[k], ARRAYS[k])


def test_params_v2_byte_layout(tmp_path):
    raw = dumps_params({"arg:x": np.array([1.0, 2.0], np.float32)})
    assert raw[:24] == struct.pack("<QQQ", 0x112, 0, 1)
    assert raw[24:32] == struct.pack("<Ii", 0xF993FAC9, 0)  # magic, dense storage
    assert raw[32:44] == struct.pack("<Iq", 1, 2)  # ndim, int64 dims
    assert raw[44:56] == struct.pack("<iii", 1, 0, 0)  # cpu(0), float32
    assert raw[56:64] == np.array([1, 2], "<f4").tobytes()
    assert raw[64:] == struct.pack("<Q", 1) + struct.pack("<Q", 5) + b"arg:x"
    p = save_params(tmp_path / "x.params", {"arg:x": np.array([1.0, 2.0], np.float32), "h": np.float16([3])})
    back = load_params(p)
    assert back["h"].dtype == np.float16


def test_corrupt_params_are_reported(tmp_path):
    with pytest.raises(ArtifactError, match="not an MXNet .params file"):
        loads_params(b"\0" * 32, source="bad.params")
    with pytest.raises(ArtifactError, match="truncated"):
        loads_params(dumps_params(ARRAYS)[:60], source="cut.params")
    with pytest.raises(ArtifactError, match="not found"):
        load_params(tmp_path / "none.params")


def test_symbol_json_is_a_consistent_mxnet_graph():
    sym = symbol_json(num_classes=5, num_layers=18, image_shape=(3, 224, 224), multi_label=True)
    names = [n["name"] for n in sym["nodes"]]
    args, aux = mxnet_state_dict(ResNetV2(5, 18, (3, 224, 224)))
    for name in list(args) + list(aux):
        assert name in names
    assert all(sym["nodes"][i]["op"] == "null" for i in sym["arg_nodes"])
    assert len(sym["node_row_ptr"]) == len(sym["nodes"]) + 1
    for node in sym["nodes"]:
        for src, _, _ in node["inputs"]:
            assert src < names.index(node["name"])  # topological order
    assert sym["nodes"][sym["heads"][0][0]]["op"] == "LogisticRegressionOutput"
    single = symbol_json(num_classes=5, num_layers=50, image_shape=(3, 224, 224), multi_label=False)
    assert single["nodes"][single["heads"][0][0]]["op"] == "SoftmaxOutput"


def _checkpoint(model):
    args, aux = mxnet_state_dict(model)
    return {k: v.numpy() for k, v in args.items()}, {k: v.numpy() for k, v in aux.items()}


def test_model_tar_layout_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ResNetV2(4, 34, (3, 64, 64))
    tar = write_model_tar(tmp_path / "model.tar.gz", {2: _checkpoint(model), 4: _checkpoint(model)}, num_classes=4,
                          num_layers=34, image_shape=(3, 64, 64), multi_label=True, batch_size=8)
    with tarfile.open(tar) as t:
        assert sorted(t.getnames()) == ["image-classification-0002.params", "image-classification-0004.params",
                                        "image-classification-symbol.json", "model-shapes.json"]
        assert json.loads(t.extractfile("model-shapes.json").read()) == [{"name": "data", "shape": [8, 3, 64, 64]}]
    art = read_model_tar(tar)
    assert (art.epoch, art.epochs_available, art.num_layers, art.num_classes) == (4, [2, 4], 34, 4)
    assert art.image_shape == (3, 64, 64) and art.output == "sigmoid"
    assert read_model_tar(tar, epoch=2).epoch == 2
    with pytest.raises(ArtifactError, match="no parameters for epoch 3"):
        read_model_tar(tar, epoch=3)


def test_reads_an_extracted_directory_and_mxft_fc_names(tmp_path):
    model = ResNetV2(3, 50, (3, 64, 64))
    args, aux = _checkpoint(model)
    args["fc_weight"], args["fc_bias"] = args.pop("fc1_weight"), args.pop("fc1_bias")
    d = tmp_path / "extracted"
    d.mkdir()
    save_params(d / "image-classification-0010.params",
                {**{f"arg:{k}": v for k, v in args.items()}, **{f"aux:{k}": v for k, v in aux.items()}})
    art = read_model_tar(d)
    assert art.num_layers == 50 and art.num_classes == 3 and art.data_shape is None and art.output == "softmax"


def test_not_an_artifact(tmp_path):
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="cannot read"):
        read_model_tar(p)
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(ArtifactError, match="no 'image-classification-NNNN.params'"):
        read_model_tar(empty)
