"""``LocalOptions``: the local engine's settings that are not algorithm hyperparameters, each declared once.

Every field carries its rule and, in its metadata, how a user reaches it: the train command's flag, the run file's
``[local]`` key (``run_config``), whether ``--backend sagemaker`` refuses it (``cli_sagemaker``), and its help line.
The command line, the run file and the SageMaker check derive their flags, keys and defaults from this table, so a
new option is one field here (docs/extending.md). A field with neither flag nor key is set through the API only.

Torch-free on purpose: the command line builds its parser, and reads run files, without the local extra installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from .exceptions import UsageError
from .hyperparameters import Rule, check_options
from .model.transforms import AugmentOptions

__all__ = ["LocalOptions", "OptionInfo", "OPTION_RULES", "option_fields", "add_option_args", "options_from_args",
           "local_only_flags", "config_keys", "LOSSES"]

# the multi-label losses a run can train with (backends/local/loss.py implements each, for both engines)
LOSSES = ("bce", "asl")


@dataclass(frozen=True)
class OptionInfo:
    """How users reach a ``LocalOptions`` field: ``flag`` on the train command (its argparse ``dest`` is ``dest``),
    ``key`` in the run file's ``[local]`` table with the run file's value ``kind`` (run_config.KINDS), whether it is
    ``local_only`` (refused with ``--backend sagemaker``), and whether the resolved ``run-config.json`` records it
    (``replay``: a run file that says ``restart = true`` would erase the run it resumes)."""

    help: str
    flag: str | None = None
    key: str | None = None
    kind: str | None = None
    dest: str | None = None
    local_only: bool = True
    replay: bool = True
    store_true: bool = False
    unset_default: bool = False  # the flag's default is "not given": each backend picks its own (--engine)


def _option(default: Any, rule: Rule | None, help: str, **info: Any) -> Any:
    meta = {"rule": rule, "info": OptionInfo(help=help, **info)}
    if isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LocalOptions:
    """Settings of the local engine that are not algorithm hyperparameters (SageMaker would reject them)."""

    seed: int = _option(0, Rule("int", low=0), "seed of initialisation, sampling and augmentation",
                        flag="--seed", key="seed", kind="int", local_only=False)
    device: str | None = _option(None, Rule("str", nullable=True),
                                 "cuda, cuda:1 or cpu (default: cuda when available)",
                                 flag="--device", key="device", kind="str")
    num_workers: int | None = _option(None, Rule("int", low=0, nullable=True),
                                      "data loading workers (default: min(8, cores - 1))",
                                      flag="--workers", key="workers", kind="int", dest="workers")
    weighted_loss: str = _option("neg_pos_ratio", Rule("choice", choices=("neg_pos_ratio", "balanced")),
                                 "the class weights of use_weighted_loss=1: neg_pos_ratio (w+ = N-/N+) or balanced "
                                 "(docs/local-backend.md)", flag="--weighted-loss", key="weighted_loss",
                                 kind="choice")
    # the multi-label loss: "bce" (the algorithm's sigmoid BCE) or "asl" (asymmetric loss, Ridnik et al. 2021; a
    # local-only extension: SageMaker's built-in trains only the BCE)
    loss: str = _option("bce", Rule("choice", choices=LOSSES),
                        "multi-label loss: bce (the algorithm's) or asl (asymmetric loss, local only; "
                        "docs/local-backend.md)", flag="--loss", key="loss", kind="choice")
    asl_gamma_neg: float = _option(4.0, Rule("float", low=0), "loss=asl: focusing exponent of the negatives",
                                   flag="--asl-gamma-neg", key="asl_gamma_neg", kind="number")
    asl_gamma_pos: float = _option(0.0, Rule("float", low=0), "loss=asl: focusing exponent of the positives",
                                   flag="--asl-gamma-pos", key="asl_gamma_pos", kind="number")
    asl_clip: float = _option(0.05, Rule("float", low=0, high=0.5), "loss=asl: probability margin m of the "
                              "negatives (p - m, floored at 0)", flag="--asl-clip", key="asl_clip", kind="number")
    bce_reduction: str = _option("mean", Rule("choice", choices=("mean", "sum")),
                                 "multi-label loss over classes: mean (MXNet's head) or sum (C times the step)")
    augment: AugmentOptions = _option(AugmentOptions, None, "the augmentation's open choices (AugmentOptions)")
    input_pipeline: str = _option("batched", Rule("choice", choices=("batched", "reference")),
                                  "batched: decode cache + the batch's augmentation on the device; reference: OpenCV "
                                  "per image on the workers (docs/local-backend.md, input pipeline)",
                                  flag="--input-pipeline", key="input_pipeline", kind="choice")
    cache_dir: str | None = _option(None, Rule("str", nullable=True),
                                    "folder of the decode cache (default <output>/cache); share one between runs of "
                                    "the same data", flag="--cache-dir", key="cache_dir", kind="path")
    cache_max_gb: float = _option(64.0, Rule("float", low=0),
                                  "largest decode cache: data over it is cached as JPEG, and over that too decoded "
                                  "every epoch (docs/local-backend.md, the decode cache)",
                                  flag="--cache-max-gb", key="cache_max_gb", kind="number")
    preload: bool | None = _option(None, Rule("bool", nullable=True),
                                   "reference pipeline: keep decoded, resized images in memory; None = if < 2 GiB")
    log_interval: int = _option(20, Rule("int", low=1), "batches between the Speedometer's log lines")
    progress: bool = _option(True, Rule("bool"), "progress bars and log lines (the CLI's --quiet drops them)")
    cpu_float16: str = _option("bfloat16", Rule("choice", choices=("bfloat16", "float32")),
                               "precision_dtype=float16 on a CPU: bfloat16 autocast or float32")
    cuda_half: str = _option("float16", Rule("choice", choices=("float16", "bfloat16")),
                             "precision_dtype=float16 on CUDA: float16 (+ loss scaling) or bfloat16")
    pretrained: str | None = _option(None, Rule("str", nullable=True),
                                     "file or URL of ImageNet .params for use_pretrained_model=1",
                                     flag="--pretrained", key="pretrained", kind="path_or_url")
    pretrained_sha256: str | None = _option(None, Rule("str", nullable=True), "the pretrained file's SHA-256")
    channels_last: bool = _option(True, Rule("bool"), "NHWC memory format (faster convolutions on GPU and CPU)")
    resume: bool = _option(True, Rule("bool"), "continue a run of the same data and settings found in the output "
                           "folder (False: refuse)")
    restart: bool = _option(False, Rule("bool"), "remove the previous run's checkpoint, parameters and artifact from "
                            "--output and start afresh (without it, a run of the same data and settings is resumed, "
                            "and another run is refused)", flag="--restart", key="restart", kind="bool",
                            replay=False, store_true=True)
    engine: str = _option("pytorch", Rule("choice", choices=("pytorch", "gluon")),
                          "local: pytorch (default), or gluon: MXNet itself trains (needs the gluon extra; "
                          "docs/gluon.md); sagemaker: the built-in algorithm (default), or pytorch: this project's "
                          "engine in SageMaker's PyTorch container (docs/sagemaker.md)",
                          flag="--engine", key="engine", kind="choice", local_only=False, unset_default=True)
    sync_batchnorm: bool = _option(False, Rule("bool"), "with --nproc-per-node on GPUs: SyncBatchNorm instead of "
                                   "per-device statistics", flag="--sync-batchnorm", key="sync_batchnorm",
                                   kind="bool", store_true=True)
    # docs/local-backend.md, "torch.compile", has what it gained where it was measured
    compile: bool = _option(False, Rule("bool"), "torch.compile the network (the first steps wait while it "
                            "compiles; docs/local-backend.md)", flag="--compile", key="compile", kind="bool",
                            store_true=True)

    def __post_init__(self):
        checked = check_options({f.name: getattr(self, f.name) for f in fields(self)}, OPTION_RULES,
                                owner="LocalOptions")
        for name in OPTION_RULES:
            object.__setattr__(self, name, checked[name])
        if self.compile and self.engine == "gluon":
            raise UsageError("compile=True is a PyTorch-engine option (torch.compile); the Gluon engine runs MXNet's "
                             "own graph: drop it or use engine='pytorch'.")
        if not isinstance(self.augment, AugmentOptions):
            raise UsageError(f"The 'augment' option of LocalOptions must be an AugmentOptions. Got "
                             f"{type(self.augment).__name__} instead.")


def option_fields() -> Iterator[tuple[Field, OptionInfo]]:
    for f in fields(LocalOptions):
        yield f, f.metadata["info"]


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


# One rule per setting, in the rule table's terms (the same mechanism and message shape as Hyperparameters).
OPTION_RULES: dict[str, Rule] = {f.name: f.metadata["rule"] for f in fields(LocalOptions) if f.metadata["rule"]}


def _dest(f: Field, info: OptionInfo) -> str:
    return info.dest or f.name


def add_option_args(parser: argparse.ArgumentParser) -> None:
    """The train command's flag of every option that has one, with the option's own default and choices."""
    for f, info in option_fields():
        if info.flag is None:
            continue
        rule: Rule = f.metadata["rule"]
        kwargs: dict[str, Any] = {"dest": _dest(f, info), "help": info.help}
        if info.store_true:
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = None if info.unset_default else default_of(f)
            kwargs["type"] = {"int": int, "number": float, "path": Path}.get(info.kind or "", str)
            if rule.kind == "choice":
                kwargs["choices"] = list(rule.choices)
        parser.add_argument(info.flag, **kwargs)


def options_from_args(args: argparse.Namespace, **overrides: Any) -> LocalOptions:
    """The ``LocalOptions`` of a parsed train command (its flags, or the run file's keys it was given)."""
    values: dict[str, Any] = {}
    for f, info in option_fields():
        if info.flag is None:
            continue
        value = getattr(args, _dest(f, info))
        if value is None and info.unset_default:
            continue
        values[f.name] = str(value) if isinstance(value, Path) else value
    return LocalOptions(**{**values, **overrides})


def local_only_flags() -> dict[str, Any]:
    """argparse dest -> default of every flag that applies to ``--backend local`` only."""
    return {_dest(f, info): (False if info.store_true else default_of(f)) for f, info in option_fields()
            if info.flag is not None and info.local_only}


def config_keys() -> dict[str, tuple[str, str, str]]:
    """Run file ``[local]`` key -> (train command dest, value kind, LocalOptions field)."""
    return {info.key: (_dest(f, info), info.kind or "str", f.name) for f, info in option_fields()
            if info.key is not None}


def choices_of(key: str) -> tuple:
    """The allowed values of a choice key of the run file."""
    name = config_keys()[key][2]
    return OPTION_RULES[name].choices


def not_replayed() -> frozenset[str]:
    """Run-file keys a resolved run-config.json leaves out (see :class:`OptionInfo`)."""
    return frozenset(info.key for _, info in option_fields() if info.key is not None and not info.replay)
