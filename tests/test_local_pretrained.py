import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch

from multilabel_ic import ArtifactError, DownloadError, Hyperparameters, Trainer
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.backends.local.pretrained import load_pretrained, resolve_pretrained, zoo_url
from multilabel_ic.model.network import ResNetV2, mxnet_state_dict
from multilabel_ic.model.params import save_params


def _zoo_file(path, seed=0, num_classes=1000):
    """A resnet-18 .params file in the zoo's layout (arg:/aux: names, a 1000-class fc1)."""
    torch.manual_seed(seed)
    net = ResNetV2(num_classes, 18, (3, 224, 224))
    args, aux = mxnet_state_dict(net)
    save_params(path, {**{f"arg:{k}": v.numpy() for k, v in args.items()},
                       **{f"aux:{k}": v.numpy() for k, v in aux.items()}})
    return net


@pytest.fixture()
def zoo_server(tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    (root / "18-layers").mkdir(parents=True)
    reference = _zoo_file(root / "18-layers" / "resnet-18-0000.params")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("MULTILABEL_IC_MODEL_ZOO_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("MULTILABEL_IC_CACHE", str(tmp_path / "cache"))
    yield reference, tmp_path / "cache"
    httpd.shutdown()


def test_zoo_url():
    assert zoo_url(50).endswith("/50-layers/resnet-50-0000.params")


def test_downloads_from_the_zoo_caches_and_loads_everything_but_fc1(zoo_server):
    reference, cache = zoo_server
    torch.manual_seed(123)
    model = ResNetV2(5, 18, (3, 224, 224))
    fresh_fc = model.fc1.weight.detach().clone()
    path = load_pretrained(model, progress=False)
    assert path == cache / "models" / "resnet-18-0000.params" and path.exists()
    assert torch.equal(model.conv0.weight, reference.conv0.weight)
    assert torch.equal(model.stage3_unit1.sc.weight, reference.stage3_unit1.sc.weight)
    assert torch.equal(model.bn1.running_var, reference.bn1.running_var)
    assert torch.equal(model.fc1.weight, fresh_fc) and model.fc1.weight.shape == (5, 512)
    # the cache answers the second time, even without the server
    assert resolve_pretrained(18, progress=False) == path


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTILABEL_IC_MODEL_ZOO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MULTILABEL_IC_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match=r"put it at .*resnet-34-0000.params, or pass pretrained="):
        resolve_pretrained(34, progress=False)


def test_no_zoo_model_for_resnet_200(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTILABEL_IC_CACHE", str(tmp_path))
    with pytest.raises(ArtifactError, match="ResNet-200"):
        resolve_pretrained(200, progress=False)


def test_a_file_of_another_depth_is_rejected(tmp_path):
    torch.manual_seed(0)
    net = ResNetV2(10, 34, (3, 224, 224))
    args, aux = mxnet_state_dict(net)
    save_params(tmp_path / "r34.params", {**{f"arg:{k}": v.numpy() for k, v in args.items()},
                                          **{f"aux:{k}": v.numpy() for k, v in aux.items()}})
    with pytest.raises(ArtifactError, match="parameters that ResNet-18 does not"):
        load_pretrained(ResNetV2(5, 18, (3, 224, 224)), tmp_path / "r34.params", progress=False)
    with pytest.raises(ArtifactError, match="not found"):
        load_pretrained(ResNetV2(5, 18, (3, 224, 224)), tmp_path / "none.params", progress=False)


def test_training_with_use_pretrained_model(coco5, tmp_path, caplog):
    _zoo_file(tmp_path / "r18.params", seed=4)
    train, val = coco5.split(0.75, seed=0)
    hp = Hyperparameters(num_classes=5, num_training_samples=len(train), num_layers=18, image_shape="3,40,40",
                         resize=44, mini_batch_size=16, epochs=1, learning_rate=1e-9, multi_label=1,
                         use_pretrained_model=1, optimizer="sgd", momentum=0.0)
    model = Trainer(hp, output_dir=tmp_path / "run",
                    options=LocalOptions(num_workers=0, progress=False, pretrained=str(tmp_path / "r18.params"))
                    ).fit(train, validation=val)
    assert "Using pretrained model for initializing weights and transfer learning" in caplog.text
    from multilabel_ic.model.artifact import read_model_tar

    art = read_model_tar(model.local_artifact)
    ref = _zoo_file(tmp_path / "again.params", seed=4)
    # with a ~0 learning rate the trained conv weights are still the pretrained ones
    np.testing.assert_allclose(art.params["conv0_weight"], ref.conv0.weight.detach().numpy(), atol=1e-6)
    assert art.params["fc1_weight"].shape == (5, 512)
