"""The shape of the house: the import graph of the package (type-only imports counted) has no cycle, no backend
imports another, the floors below the backends (the model package with the predictor contract, the data, the
metrics, the hyperparameters and their rules, the options) import nothing above them, the local backend's run is
entered through its package only, and everything on the SageMaker path works without PyTorch installed."""

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
    """module -> package modules it imports, at module level, inside functions or for type checking only (a
    ``TYPE_CHECKING`` import is an arrow too: the module's types depend on the target)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
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


def test_type_only_imports_are_arrows():
    graph = import_graph()
    # runfolder.py imports the callbacks for type checking only
    assert "multilabel_ic.callbacks" in graph["multilabel_ic.backends.local.runfolder"]


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _backend_of(module: str) -> str | None:
    """The backend a module belongs to; ``backends.base`` is the contract they all implement, not a backend."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "backends" and parts[2] != "base":
        return parts[2]
    return None


def test_no_backend_imports_another():
    graph = import_graph()
    problems = [f"backend {module} imports backend {target}" for module, targets in graph.items() for target in targets
                if None is not _backend_of(module) != _backend_of(target) is not None]
    assert problems == []


# the floors below the backends, and what is above them
LOWER = ("multilabel_ic.model", "multilabel_ic.data", "multilabel_ic.metrics", "multilabel_ic.hyperparameters",
         "multilabel_ic.rules", "multilabel_ic.preflight", "multilabel_ic.images", "multilabel_ic.image_header",
         "multilabel_ic.local_options", "multilabel_ic.exceptions", "multilabel_ic._io", "multilabel_ic._read")
UPPER = ("multilabel_ic.backends", "multilabel_ic.api", "multilabel_ic.cli", "multilabel_ic.serve",
         "multilabel_ic.tune", "multilabel_ic.bench", "multilabel_ic.testing", "multilabel_ic.report",
         "multilabel_ic.callbacks", "multilabel_ic.parity")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") or module.startswith(p + "_") for p in prefixes)


def test_no_arrow_goes_back_up():
    """The model package (the predictor contract among it), the data, metrics, hyperparameters and options import
    no backend, not even the contract module backends.base, and nothing else above them."""
    graph = import_graph()
    problems = [f"{module} imports {target}" for module, targets in graph.items() if _within(module, LOWER)
                for target in targets if _within(target, UPPER)]
    assert problems == []
    assert _within("multilabel_ic.cli_tune", UPPER) and not _within("multilabel_ic.model", UPPER)


def test_the_local_run_is_entered_through_its_package():
    """Nothing outside backends/local/ reaches into its training modules; LocalBackend (the package) is the door."""
    graph = import_graph()
    inside = "multilabel_ic.backends.local"
    private = {f"{inside}.{m}" for m in ("train", "run", "torch_engine", "gluon_engine")}
    problems = [f"{module} imports {target}" for module, targets in graph.items()
                if module != inside and not module.startswith(inside + ".") for target in targets & private]
    assert problems == []


def test_the_run_skeleton_is_framework_free_and_the_engines_are_small():
    local = PACKAGE / "backends" / "local"
    for name in ("run.py", "engine.py", "runfolder.py", "augment.py"):
        tree = ast.parse((local / name).read_text(encoding="utf-8"))
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not roots & {"torch", "mxnet", "torchvision"}, name
    for name in ("train.py", "gluon.py"):
        assert len((local / name).read_text(encoding="utf-8").splitlines()) < 350, name


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
