"""Catalog cases of the local engine's options and losses: each option reached by a flag or a run-file key is
refused with one line that names it (a value out of its rule, a local-only option with --backend sagemaker, a
multi-label loss for a single-label run), before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalog_support import ApiCase, CliCase, Workspace, check_api_case, check_cli_case, make_hp, train_argv

from multilabel_ic import Dataset, Trainer, UsageError
from multilabel_ic.local_options import LocalOptions, local_only_flags, option_fields


def _config(tmp: Path, local: dict) -> Path:
    path = tmp / "run.json"
    path.write_text(json.dumps({"local": local}))
    return path


def _sagemaker_with(flag: str, value: str | None):
    def argv(ws: Workspace, tmp: Path) -> list[str]:
        base = train_argv(ws, tmp, "--backend", "sagemaker", flag, *([] if value is None else [value]))
        at = base.index("--workers")  # the workspace's own --workers 0, itself a local-only flag
        return base[:at] + base[at + 2:] if flag != "--workers" else base
    return argv


# one non-default command-line value per local-only flag (the class: every one is refused with --backend sagemaker)
_NON_DEFAULT = {"--device": "cpu", "--workers": "2", "--weighted-loss": "balanced", "--loss": "asl",
                "--asl-gamma-neg": "2", "--asl-gamma-pos": "1", "--asl-clip": "0.1", "--input-pipeline": "reference",
                "--cache-dir": "c", "--cache-max-gb": "1", "--pretrained": "p.params", "--restart": None,
                "--sync-batchnorm": None, "--compile": None}
_LOCAL_ONLY = [info.flag for f, info in option_fields() if info.flag and info.local_only]

CLI_CASES = [
    CliCase("house-asl-for-a-single-label-run",
            lambda ws, tmp: train_argv(ws, tmp, "--loss", "asl", "--hp", "multi_label=0"), 2,
            "loss='asl' is a multi-label loss, but multi_label=0 trains the softmax head: set multi_label=1"),
    CliCase("house-asl-clip-out-of-range", lambda ws, tmp: train_argv(ws, tmp, "--loss", "asl", "--asl-clip", "0.9"),
            2, "The 'asl_clip' option of LocalOptions must be a float in the range [0, 0.5]. Got 0.9"),
    CliCase("house-asl-negative-gamma", lambda ws, tmp: train_argv(ws, tmp, "--asl-gamma-neg", "-1"), 2,
            "The 'asl_gamma_neg' option of LocalOptions must be a float in the range [0, inf). Got -1.0"),
    CliCase("house-run-file-unknown-loss", lambda ws, tmp: ["train", "--config", str(_config(tmp, {"loss": "focal"}))],
            2, "[local] loss = 'focal' is not one of bce, asl"),
    CliCase("house-run-file-weighted-loss-not-a-choice",
            lambda ws, tmp: ["train", "--config", str(_config(tmp, {"weighted_loss": "inverse"}))], 2,
            "[local] weighted_loss = 'inverse' is not one of neg_pos_ratio, balanced"),
    CliCase("house-run-file-sync-batchnorm-not-a-bool",
            lambda ws, tmp: ["train", "--config", str(_config(tmp, {"sync_batchnorm": "yes"}))], 2,
            "[local] sync_batchnorm = 'yes' must be true or false, not a string"),
    *[CliCase(f"house-sagemaker-refuses{flag}", _sagemaker_with(flag, _NON_DEFAULT[flag]), 2,
              f"{flag} apply to --backend local only") for flag in _LOCAL_ONLY],
]


def _fit(ws: Workspace, tmp: Path, hp, options: LocalOptions) -> None:
    data = Dataset.from_lst(ws.lst, root=ws.images, class_names=ws.data.class_names)
    Trainer(hp, output_dir=tmp / "out", options=options).fit(data)


API_CASES = [
    ApiCase("house-api-asl-for-a-single-label-run",
            lambda ws, tmp: _fit(ws, tmp, make_hp(multi_label=0), LocalOptions(loss="asl", num_workers=0,
                                                                               progress=False)),
            UsageError, "loss='asl' is a multi-label loss, but multi_label=0"),
    ApiCase("house-api-unknown-loss", lambda ws, tmp: LocalOptions(loss="focal"), UsageError,
            "The 'loss' option of LocalOptions must be one of 'bce', 'asl'. Got 'focal'"),
]


def test_every_local_only_flag_has_a_case():
    assert set(_LOCAL_ONLY) == set(_NON_DEFAULT) and len(_LOCAL_ONLY) == len(local_only_flags())


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case, ws, tmp_path, capsys):
    check_cli_case(case, ws, tmp_path, capsys)


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_case(case, ws, tmp_path):
    check_api_case(case, ws, tmp_path)
