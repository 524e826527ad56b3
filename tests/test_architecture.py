"""The shape of the house: the import graph of the package has no cycle, no backend imports another, the contract and
the model package import no backend, and everything on the SageMaker path works without PyTorch installed."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import multilabel_ic

PACKAGE = Path(multilabel_ic.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports, at module level or inside functions (``TYPE_CHECKING`` blocks aside)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
                for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([node.module] if node.module else []))
                candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in candidates:
                while target and target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "multilabel_ic.backends.local.train" in graph
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _backend_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "backends" and parts[2] != "base":
        return parts[2]
    return None


def test_no_backend_imports_another_and_the_contract_and_model_import_no_backend():
    graph = import_graph()
    problems = []
    for module, targets in graph.items():
        for target in targets:
            mine, theirs = _backend_of(module), _backend_of(target)
            if theirs is None:
                continue
            if mine is not None and mine != theirs:
                problems.append(f"backend {module} imports backend {target}")
            if module.startswith(("multilabel_ic.backends.base", "multilabel_ic.model", "multilabel_ic.data",
                                  "multilabel_ic.metrics", "multilabel_ic.hyperparameters", "multilabel_ic.preflight")):
                problems.append(f"{module} imports backend {target}")
    assert problems == []


_WITHOUT_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoTorch())
    import multilabel_ic
    from multilabel_ic import Dataset, Hyperparameters, Trainer
    from multilabel_ic.backends.sagemaker import SageMakerBackend
    from multilabel_ic.model.artifact import read_model_tar, symbol_json
    from multilabel_ic.metrics import evaluate
    backend = SageMakerBackend(role="arn:aws:iam::1:role/R", bucket="b", region="us-east-1")
    Trainer(Hyperparameters(num_classes=2, num_training_samples=100), backend=backend)
    symbol_json(num_classes=2, num_layers=18, image_shape=(3, 224, 224), multi_label=True)
    # the project's engine on SageMaker: its image, distribution, hyperparameters and source are made without torch
    import tempfile
    from multilabel_ic.backends.sagemaker import framework
    from multilabel_ic.container.contract import ContainerEnv
    hp = Hyperparameters(num_classes=2, num_training_samples=100, mini_batch_size=16)
    engine = SageMakerBackend(role="arn:aws:iam::1:role/R", bucket="b", region="us-east-1", engine="pytorch",
                              instance_type="ml.p3.16xlarge", instance_count=2)
    Trainer(hp, backend=engine)
    engine._check_framework_request(hp)
    framework.job_hyperparameters(hp, ["a", "b"], distributed=True)
    with tempfile.TemporaryDirectory() as tmp:
        framework.source_bundle(tmp)
    assert "torch" not in sys.modules, "torch was imported"
    from multilabel_ic import MissingDependencyError
    for what in ("multilabel_ic.backends.local", "multilabel_ic.model.predictor"):
        try:
            __import__(what)
        except MissingDependencyError as exc:
            assert "pip install 'multilabel-ic[local]'" in str(exc), exc
        else:
            raise AssertionError(what + " imported without torch")
    try:
        Trainer(Hyperparameters(num_classes=2, num_training_samples=100), backend="local")
    except MissingDependencyError as exc:
        assert "multilabel-ic[local]" in str(exc)
    else:
        raise AssertionError("the local backend started without torch")
    print("OK")
""")


def test_the_sagemaker_path_and_the_artifact_format_need_no_torch():
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-3000:]


def test_import_multilabel_ic_imports_no_torch():
    code = "import sys, multilabel_ic; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_trainer_refuses_local_options_with_another_backend():
    import pytest

    from multilabel_ic import Hyperparameters, Trainer, UsageError
    from multilabel_ic.testing import FakeBackend

    hp = Hyperparameters(num_classes=2, num_training_samples=100)
    with pytest.raises(UsageError, match="device can only be given with backend='local'"):
        Trainer(hp, backend=FakeBackend(probabilities=[0.5, 0.5]), device="cuda")
    with pytest.raises(UsageError, match="lacks fit\\(\\) and predictor\\(\\)"):
        Trainer(hp, backend=object())
