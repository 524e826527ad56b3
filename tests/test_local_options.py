"""Every LocalOptions field is declared once (local_options.py): the train command's flags, the run file's [local]
keys and the SageMaker refusal are derived from it, and no other module writes an option's default."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import multilabel_ic
from multilabel_ic.cli import build_parser
from multilabel_ic.cli_sagemaker import LOCAL_ONLY_TRAIN_FLAGS
from multilabel_ic.exceptions import UsageError
from multilabel_ic.local_options import OPTION_RULES, LocalOptions, option_fields, options_from_args
from multilabel_ic.run_config import KINDS, SECTIONS, load_run_config, train_defaults

PACKAGE = Path(multilabel_ic.__file__).parent
# set through the API only, and why (the test fails for a new field that is neither reachable nor listed here)
API_ONLY = {"augment": "an AugmentOptions object", "bce_reduction": "a parity switch of the BCE's normalisation",
            "preload": "a memory knob of the reference pipeline", "log_interval": "the Speedometer's cadence",
            "progress": "the CLI's --quiet", "cpu_float16": "an open choice of the precision rule",
            "cuda_half": "an open choice of the precision rule", "pretrained_sha256": "pinned by scripts",
            "channels_last": "a measured default", "resume": "the CLI resumes; --restart replaces"}


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_field_has_a_flag_and_a_run_file_key_or_is_api_only():
    train = _train_parser()
    flags = {s: a for a in train._actions for s in a.option_strings}
    names = {f.name for f in dataclasses.fields(LocalOptions)}
    assert set(API_ONLY) <= names, set(API_ONLY) - names
    for f, info in option_fields():
        if f.name in API_ONLY:
            assert info.flag is None and info.key is None, f"{f.name} is reachable: drop it from API_ONLY"
            continue
        assert info.flag in flags, f"LocalOptions.{f.name} has no train flag"
        assert info.key in SECTIONS["local"] and SECTIONS["local"][info.key] == flags[info.flag].dest, f.name
        assert KINDS[info.key] == info.kind
        if f.name in OPTION_RULES and OPTION_RULES[f.name].kind == "choice":
            assert list(flags[info.flag].choices) == list(OPTION_RULES[f.name].choices)


def test_the_flags_defaults_are_the_fields_defaults():
    """Parsing no flag gives LocalOptions(); a flag's default is the field's own."""
    args = _train_parser().parse_args([])
    assert options_from_args(args) == LocalOptions()
    for f, info in option_fields():
        if info.flag is not None and info.local_only:
            assert LOCAL_ONLY_TRAIN_FLAGS[info.dest or f.name] == getattr(LocalOptions(), f.name)


@pytest.mark.parametrize("name", [f.name for f, info in option_fields() if info.key is not None])
def test_every_run_file_key_reaches_its_field(name, tmp_path):
    """The class: a non-default value of each keyed field, written in a run file, arrives in LocalOptions."""
    f, info = next((f, i) for f, i in option_fields() if f.name == name)
    rule = OPTION_RULES[name]
    default = getattr(LocalOptions(), name)
    value = {"choice": next((c for c in rule.choices if c != default), None), "int": 3, "float": 0.25,
             "bool": not default, "str": "cpu"}[rule.kind]
    if info.kind == "path" or info.kind == "path_or_url":
        value = str(tmp_path / "x")
    import json

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"local": {info.key: value}}))
    defaults, _ = train_defaults(load_run_config(path), path)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices["train"].set_defaults(**defaults)
    args = parser.parse_args(["train"])
    assert getattr(options_from_args(args), name) == value


def _flags_written(tree: ast.AST, receivers: set[str] | None) -> list[str]:
    """add_argument calls (on a parser named in ``receivers``; None: any) that spell a LocalOptions flag, i.e. a
    second home for its default and help. The train command's parser is ``t`` in cli.py; the other commands (demo,
    bench, prepare) have flags of their own that happen to share a name."""
    flags = {info.flag for _, info in option_fields() if info.flag}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args and \
                isinstance(node.args[0], ast.Constant) and node.args[0].value in flags and \
                (receivers is None or getattr(node.func.value, "id", None) in receivers):
            found.append(f"add_argument({node.args[0].value!r})")
    return found


@pytest.mark.parametrize("module", ["cli.py", "cli_sagemaker.py", "cli_tune.py", "run_config.py"])
def test_no_option_flag_or_default_is_written_outside_the_table(module):
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    assert _flags_written(tree, {"t"} if module == "cli.py" else None) == []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LocalOptions"]
    assert all(not c.keywords or {k.arg for k in c.keywords} <= {"progress", "num_workers", "seed", None}
               for c in calls), module


def test_asl_settings_are_checked():
    for bad in ({"loss": "focal"}, {"asl_gamma_neg": -1}, {"asl_clip": 0.9}):
        with pytest.raises(UsageError, match="option of LocalOptions must be"):
            LocalOptions(**bad)
