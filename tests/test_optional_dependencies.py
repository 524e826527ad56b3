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
