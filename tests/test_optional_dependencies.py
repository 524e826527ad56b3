import sys

import pytest

from multilabel_ic import MissingDependencyError
from multilabel_ic.exceptions import require


def test_missing_optional_package_names_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    from multilabel_ic.backends.sagemaker import SageMakerBackend

    with pytest.raises(MissingDependencyError, match=r"pip install 'multilabel-ic\[sagemaker\]'") as e:
        SageMakerBackend(role="r", bucket="b", region="us-east-1")
    assert isinstance(e.value, ImportError) and isinstance(e.value.__cause__, ImportError)


def test_require_returns_the_module():
    assert require("json", extra="dev").dumps([1]) == "[1]"
    with pytest.raises(MissingDependencyError, match=r"'no_such_pkg' is needed .* pip install 'multilabel-ic\[x\]'"):
        require("no_such_pkg.sub", extra="x")


def test_gluon_engine_without_mxnet_names_its_own_virtualenv(monkeypatch, coco5, tmp_path, capsys):
    """MXNet 1.9.1 needs numpy < 1.24, so the error names a virtualenv of its own as well as the extra; the CLI prints
    it as one line and leaves no output folder behind."""
    monkeypatch.setitem(sys.modules, "mxnet", None)  # as where MXNet is not installed
    monkeypatch.delitem(sys.modules, "multilabel_ic.backends.local.gluon", raising=False)
    from multilabel_ic.backends.local import LocalBackend
    from multilabel_ic.cli import main

    with pytest.raises(MissingDependencyError, match=r"\.venv-gluon/bin/pip install 'multilabel-ic\[local,gluon\]'"):
        LocalBackend(engine="gluon")
    coco5.to_lst(tmp_path / "train.lst")
    code = main(["--quiet", "train", "--engine", "gluon", "--train-lst", str(tmp_path / "train.lst"), "--images",
                 str(coco5.root), "--classes", ",".join(coco5.class_names), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "multilabel-ic[local,gluon]" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_engine_is_a_usage_error():
    from multilabel_ic.backends.local import LocalBackend, LocalOptions
    from multilabel_ic.exceptions import UsageError

    with pytest.raises(UsageError, match="engine"):
        LocalOptions(engine="tensorflow")
    with pytest.raises(UsageError, match="engine"):
        LocalBackend(engine="mxnet")
