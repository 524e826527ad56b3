"""A whole run in one file: ``train --config run.toml`` (or YAML, JSON), flags overriding it, and the resolved
configuration written to the run folder (itself a valid --config)."""

from __future__ import annotations

import json

import pytest

from multilabel_ic.cli import main
from multilabel_ic.run_config import load_run_config

CONFIG = """
backend = "local"
output = "runs/from-config"
classes = ["person", "bicycle", "car", "motorcycle", "airplane"]

[data]
train_lst = "lists/train.lst"
validation_lst = "lists/validation.lst"
images = "{images}"

[hyperparameters]
num_layers = 20
image_shape = "3,28,28"
resize = 36
mini_batch_size = 16
epochs = 3
multi_label = 1
optimizer = "adam"
learning_rate = 0.001

[local]
device = "cpu"
workers = 0
seed = 7
"""


@pytest.fixture()
def config_dir(coco5, tmp_path):
    train, val = coco5.split(0.75, seed=0)
    (tmp_path / "lists").mkdir()
    train.to_lst(tmp_path / "lists" / "train.lst")
    val.to_lst(tmp_path / "lists" / "validation.lst")
    (tmp_path / "run.toml").write_text(CONFIG.format(images=coco5.root))
    return tmp_path


def test_train_from_a_toml_config_with_flags_overriding_it(config_dir, capsys):
    assert main(["--quiet", "train", "--config", str(config_dir / "run.toml"), "--hp", "epochs=1"]) == 0
    run = config_dir / "runs" / "from-config"  # relative to the config file, not the working directory
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1  # --hp epochs=1 beat the file's epochs = 3
    assert metrics["hyperparameters"]["image_shape"] == "3,28,28" and metrics["hyperparameters"]["optimizer"] == "adam"
    resolved = json.loads((run / "run-config.json").read_text())
    assert resolved["hyperparameters"]["epochs"] == "1" and resolved["hyperparameters"]["num_layers"] == "20"
    assert resolved["local"]["seed"] == 7 and resolved["local"]["device"] == "cpu"
    assert resolved["classes"] == "person,bicycle,car,motorcycle,airplane" and "sagemaker" not in resolved
    assert resolved["data"]["train_lst"] == str((config_dir / "lists" / "train.lst").resolve())
    # the resolved file is a configuration too: the same run again, elsewhere
    assert main(["--quiet", "train", "--config", str(run / "run-config.json"), "--output",
                 str(config_dir / "again")]) == 0
    again = json.loads((config_dir / "again" / "metrics.json").read_text())
    assert again["final"]["mAP"] == pytest.approx(metrics["final"]["mAP"], abs=1e-9)  # same seed, same run
    capsys.readouterr()


def test_yaml_json_and_toml_read_the_same(config_dir):
    import yaml

    toml_config = load_run_config(config_dir / "run.toml")
    (config_dir / "run.yaml").write_text(yaml.safe_dump(toml_config))
    (config_dir / "run.json").write_text(json.dumps(toml_config))
    assert load_run_config(config_dir / "run.yaml") == toml_config == load_run_config(config_dir / "run.json")


@pytest.mark.parametrize("text,suffix,message", [
    ('epochs = 5\n', ".toml", "unknown key 'epochs'"),
    ('[local]\ngpu = 1\n', ".toml", "unknown key(s) ['gpu'] in [local]"),
    ('backend = "aws"\n', ".toml", "backend = 'aws' is not one of local, sagemaker"),
    ('[data\n', ".toml", "not valid TOML"),
    ('- 1\n', ".yaml", "expected a table of settings"),
    ('{}', ".ini", "use a .toml, .yaml/.yml or .json file"),
])
def test_bad_configs_name_the_file_and_the_key(text, suffix, message, tmp_path, capsys):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    assert main(["--quiet", "train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {path}") or err.startswith("error: --config:")
    assert message in err


def test_classes_are_required_somewhere(tmp_path, capsys):
    assert main(["--quiet", "train", "--train-lst", "x.lst", "--images", "."]) == 2
    assert "train needs --classes" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["flag", "config"])
def test_compile_reaches_the_run_from_the_flag_and_the_config(config_dir, capsys, monkeypatch, how):
    """train --compile and compile = true under [local] both turn LocalOptions.compile on (seen where the run checks
    for a compiler, before it trains)."""
    from multilabel_ic.backends.local import train as local_train
    from multilabel_ic.exceptions import UsageError

    def reached(device):
        raise UsageError(f"compile requested on {device}")

    monkeypatch.setattr(local_train, "check_compiler", reached)
    path = config_dir / "run.toml"
    if how == "config":
        path.write_text(path.read_text() + "compile = true\n")
    argv = ["--quiet", "train", "--config", str(path), *(["--compile"] if how == "flag" else [])]
    assert main(argv) == 2
    assert "compile requested on cpu" in capsys.readouterr().err
    assert not (config_dir / "runs" / "from-config").exists()


@pytest.mark.parametrize("how", ["flag", "config"])
def test_cache_max_gb_reaches_the_run_from_the_flag_and_the_config(config_dir, capsys, how):
    """train --cache-max-gb and cache_max_gb under [local] bound the decode cache: a limit nothing fits under
    trains without one, saying so; a bad value is refused naming the option."""
    path = config_dir / "run.toml"
    if how == "config":
        path.write_text(path.read_text() + "cache_max_gb = 1e-9\n")
    argv = ["train", "--config", str(path), "--hp", "epochs=1", *(["--cache-max-gb", "1e-9"] if how == "flag" else [])]
    assert main(argv) == 0
    assert "not caching decoded images" in capsys.readouterr().err
    assert not list((config_dir / "runs" / "from-config" / "cache").glob("*.u8"))
    assert main(["--quiet", "train", "--config", str(path), "--cache-max-gb", "-1", "--restart"]) == 2
    assert "cache_max_gb" in capsys.readouterr().err
