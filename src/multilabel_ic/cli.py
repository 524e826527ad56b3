"""Command line: multilabel-ic prepare | train | evaluate | predict | demo | parity | bench | serve | tune, and the SageMaker
verbs deploy | transform | attach | delete-endpoint.

Every subcommand is a thin wrapper over the library; ``--quiet`` drops progress bars and INFO logs. An error is printed
in one line (``--debug`` adds the traceback); the exit code is 0 on success, 1 for a runtime error, 2 for a usage
error (a bad option, hyperparameter or configuration) and 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .backends import BACKENDS
from .cli_args import add_hp_args, class_list, hp_values, hyperparameters_from_args, print_prediction
from .cli_lowp import add_lowp_export_args, export_low_precision_cli
from .cli_sagemaker import HANDLERS as SAGEMAKER_HANDLERS
from .cli_sagemaker import LOCAL_ONLY_TRAIN_FLAGS, add_commands, add_sagemaker_args, backend_from_args
from .cli_serve import add_serve_parser, cmd_serve
from .cli_tune import add_tune_parser, cmd_tune
from .exceptions import HyperparameterError, MultilabelICError, TrainingError, UsageError
from .local_options import add_option_args

__all__ = ["main", "build_parser"]

log = logging.getLogger("multilabel_ic")

# The MS-COCO example's recipe scaled to a CPU: ResNet-18, weighted loss, crop_color_transform, at 64 px from scratch
# (no pretrained weights can be fetched offline), with Adam, which converges in few epochs from scratch.
DEMO_HP = dict(num_layers=18, image_shape="3,64,64", resize=72, mini_batch_size=32, epochs=15, learning_rate=0.001,
               multi_label=1, use_weighted_loss=1, augmentation_type="crop_color_transform", optimizer="adam")


def _setup_logging(quiet: bool) -> None:
    from .logs import setup_logging

    setup_logging(logging.WARNING if quiet else logging.INFO)


class _HelpFormatter(argparse.HelpFormatter):
    """Help with each option's default where it has a meaningful one (not None, False or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text and \
                action.option_strings:
            text += " (default: %(default)s)"
        return text


DESCRIPTION = ("Multi-label image classification with the SageMaker built-in Image Classification algorithm, on "
               "SageMaker or on this machine. Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted.")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    ap = argparse.ArgumentParser(prog="multilabel-ic", description=DESCRIPTION, formatter_class=_HelpFormatter)
    ap.add_argument("--version", action="version", version=f"multilabel-ic {__version__}")
    ap.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build train/validation .lst, RecordIO and manifest files")
    p.add_argument("source", choices=["synthetic", "coco"], help="synthetic COCO-format data, or MS-COCO val2017")
    p.add_argument("--output", type=Path, default=Path("data"), help="where to write (default: data/)")
    p.add_argument("--download", action="store_true", help="coco: download val2017 and annotations first")
    p.add_argument("--base-url", default=None, help="coco: mirror to download from")
    p.add_argument("--annotations", type=Path, help="coco: instances_val2017.json (when not downloading)")
    p.add_argument("--images", type=Path, help="coco: the val2017 image folder (when not downloading)")
    p.add_argument("--categories", default="person,bicycle,car,motorcycle,airplane")
    p.add_argument("--num-images", type=int, default=600, help="synthetic: images to generate")
    p.add_argument("--train-size", type=float, default=0.8, help="count (>= 1) or fraction of images for training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stratify", action="store_true", help="plain random split instead of iterative stratification")
    p.add_argument("--formats", default="lst,recordio,manifest")

    t = sub.add_parser("train", help="train on .lst (+ images) or RecordIO files, locally or on SageMaker")
    t.add_argument("--config", type=Path, default=None,
                   help="a run configuration (.toml, .yaml or .json: data, hyperparameters, local and SageMaker "
                        "options; docs/cli.md); flags given here override it")
    t.add_argument("--backend", choices=list(BACKENDS), default="local",
                   help="local: this machine's GPU/CPU; sagemaker: the built-in algorithm (the SageMaker options)")
    t.add_argument("--train-lst", type=Path, help="training .lst (with --images)")
    t.add_argument("--validation-lst", type=Path, help="validation .lst (with --images)")
    t.add_argument("--images", type=Path, help="image root the .lst paths are relative to")
    t.add_argument("--train-rec", type=Path, help="training RecordIO file (instead of --train-lst/--images)")
    t.add_argument("--validation-rec", type=Path, help="validation RecordIO file")
    t.add_argument("--classes", default=None, help="comma-separated class names, in label order (required, here "
                   "or in --config)")
    t.add_argument("--output", type=Path, default=Path("runs/train"), help="the run folder")
    t.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                   help="train with N processes on this machine (one per GPU) under torchrun; mini_batch_size is "
                        "split across them (docs/local-backend.md, many GPUs)")
    t.add_argument("--initial-model", default=None, metavar="PATH|s3://...|JOB_NAME",
                   help="continue from an earlier model.tar.gz (a local run's, a SageMaker job's or its s3:// URI) of "
                        "the same num_layers, image_shape, num_classes and multi_label (docs/lifecycle.md)")
    t.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                   help="write TensorBoard events (to DIR, default <output>/tensorboard); needs the tracking extra")
    t.add_argument("--mlflow", default=None, metavar="TRACKING_URI",
                   help="log the run to MLflow (a server URL, or file:./mlruns); needs the tracking extra")
    t.add_argument("--mlflow-experiment", default="multilabel-ic", help="MLflow experiment name")
    add_option_args(t)  # every LocalOptions flag, with its default, from the option table
    add_hp_args(t)
    add_sagemaker_args(t, training=True, resources=True)

    e = sub.add_parser("evaluate", help="score a model.tar.gz on a .lst file (mAP, per-class AP, F1, accuracy)")
    e.add_argument("--model", type=Path, default=None, help="a model.tar.gz to run locally")
    e.add_argument("--endpoint", default=None, help="score a server instead: a URL (http://127.0.0.1:8080, "
                   "multilabel-ic serve) or a SageMaker endpoint name (the SageMaker options)")
    e.add_argument("--lst", type=Path, required=True)
    e.add_argument("--images", type=Path, required=True)
    e.add_argument("--classes", default=None, help="class names in label order (default: model-metadata.json)")
    e.add_argument("--preprocess", choices=["resize", "centre_crop"], default="resize",
                   help="resize: the endpoint's plain resize to the input size; centre_crop: the run's validation "
                        "transform (the shorter side to --resize, then the centre crop), which reproduces the mAP of "
                        "its metrics.json on its validation data")
    e.add_argument("--resize", type=int, default=None,
                   help="with --preprocess centre_crop: the shorter side before the crop (default: the resize the "
                        "model was trained with, from model-metadata.json; else the input size)")
    e.add_argument("--output", type=Path, help="write the metrics JSON here")
    add_sagemaker_args(e)

    r = sub.add_parser("predict", help="per-class probabilities for image files, from a model.tar.gz on this "
                       "machine or a SageMaker endpoint")
    r.add_argument("--model", type=Path, default=None, help="a model.tar.gz to run locally")
    r.add_argument("--endpoint", default=None, help="invoke a server instead: a URL (http://127.0.0.1:8080, "
                   "multilabel-ic serve) or a SageMaker endpoint name (the SageMaker options)")
    r.add_argument("images", nargs="+", type=Path)
    r.add_argument("--classes", default=None, help="class names in label order (default: model-metadata.json)")
    r.add_argument("--threshold", type=float, default=None, help="also print the labels at this threshold")
    r.add_argument("--jsonlines", action="store_true", help="batch transform output: {\"prediction\": [...]} lines")
    r.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default="torch",
                   help="run the network with PyTorch, or on the CPU with OpenVINO (the openvino extra; the fastest "
                        "measured there) or as an ONNX graph on onnxruntime (the export extra)")
    r.add_argument("--precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="with --runtime openvino/onnxruntime: int8 runs the export --precision int8 beside the model; "
                        "bf16 (OpenVINO, CPUs with avx512_bf16/amx_bf16) its bfloat16 hint (docs/export.md)")
    add_sagemaker_args(r)

    rp = sub.add_parser("report", help="a self-contained HTML report of a finished run (curves, per-class AP, PR "
                        "curves, co-occurrence, validation images)")
    rp.add_argument("run", type=Path, help="the run folder (metrics.json, model.tar.gz)")
    rp.add_argument("--validation-lst", type=Path, default=None, help="validation .lst for the scoring pass")
    rp.add_argument("--images", type=Path, default=None, help="image root of --validation-lst")
    rp.add_argument("--classes", default=None, help="class names in label order (default: model-metadata.json)")
    rp.add_argument("--output", type=Path, default=None, help="(default: RUN/report.html)")

    x = sub.add_parser("export", help="a model.tar.gz as ONNX, OpenVINO or TorchScript, checked against the "
                       "predictor (1e-4), or in int8/bf16 held to an accuracy gate")
    x.add_argument("model", type=Path, help="the model.tar.gz")
    x.add_argument("--format", choices=["onnx", "openvino", "torchscript"], default="onnx")
    x.add_argument("--output", default=None, help="the file to write (default: model.onnx / model.pt / model.xml, "
                   "model-int8.xml ... beside the artifact); it may replace only an earlier export, never the "
                   "artifact, its metadata or a folder")
    x.add_argument("--epoch", type=int, default=None, help="which saved epoch (default: the last in the artifact)")
    add_lowp_export_args(x)

    d = sub.add_parser("demo", help="synthetic data -> train on this machine -> evaluate -> predict")
    d.add_argument("--output", type=Path, default=Path("demo-output"))
    d.add_argument("--num-images", type=int, default=1000)
    d.add_argument("--device", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--min-map", type=float, default=None, metavar="M",
                   help="exit 1 if the held-out mAP is below M (the project's CI runs the demo with 0.90)")
    add_hp_args(d)

    pa = sub.add_parser("parity", help="train both local engines (PyTorch, MXNet Gluon) on the same data with "
                        "several seeds; report the spread and the cross-loaded artifacts (docs/parity.md)")
    pa.add_argument("--seeds", type=int, default=3, help="seeds per engine (0..N-1)")
    pa.add_argument("--num-images", type=int, default=400, help="synthetic COCO-5 images (75%% train)")
    pa.add_argument("--output", type=Path, default=Path("parity-output"))
    pa.add_argument("--workers", type=int, default=1,
                    help="data workers; 1 makes both engines bit-reproducible per seed")
    add_hp_args(pa)
    add_commands(sub)
    add_serve_parser(sub)
    add_tune_parser(sub)
    b = sub.add_parser("bench", help="throughput benchmarks (local training, input pipeline, SageMaker logs)")
    b.add_argument("--quick", action="store_true", help="small sizes that finish in minutes on a CPU")
    b.add_argument("--scaling", type=int, default=None, metavar="N",
                   help="instead: training images/s with 1 and N processes (DDP under torchrun), and the efficiency")
    b.add_argument("--output", type=Path, default=Path("bench-output"))
    b.add_argument("--device", default=None)
    b.add_argument("--compile", action="store_true",
                   help="also the float32 training step with torch.compile (end-to-end and ceiling; compiles first)")
    b.add_argument("--steps", type=int, default=None, metavar="N",
                   help="timed training steps per measurement (default 30, --quick 6); more steadies the medians of "
                        "short steps")
    b.add_argument("--sagemaker-log", type=Path, action="append", default=[],
                   help="a CloudWatch log export of a training job to compare against (repeatable)")
    b.add_argument("--sagemaker-job", action="append", default=[], help="a training job name (needs AWS access)")
    b.add_argument("--instance-type", default="ml.p3.2xlarge", help="instance type of the --sagemaker-log jobs")
    b.add_argument("--sagemaker-cost", action="store_true",
                   help="instead: both SageMaker engines (built-in, --engine pytorch) priced per epoch of the MS-COCO "
                        "configuration, from --sagemaker-job/--sagemaker-log jobs and published figures")
    b.add_argument("--region", default="us-east-1")
    b.add_argument("--prices", type=Path, default=None, help="a price table JSON to use instead of the packaged one")
    add_hp_args(b)
    for command in sub.choices.values():
        command.formatter_class = _HelpFormatter
    return ap


def cmd_prepare(args) -> int:
    from .data.prepare import COCO_BASE_URL, download_coco, prepare_dataset

    ann, images = args.annotations, args.images
    if args.source == "coco":
        if args.download:
            ann, images = download_coco(args.output / "coco", base_url=args.base_url or COCO_BASE_URL,
                                        progress=not args.quiet)
        elif ann is None or images is None:
            raise UsageError("prepare coco needs --download, or --annotations and --images")
    train_size = int(args.train_size) if args.train_size >= 1 else args.train_size
    prepared = prepare_dataset(args.output, source=args.source, annotations=ann, images=images,
                               categories=[c.strip() for c in args.categories.split(",")],
                               num_images=args.num_images, seed=args.seed, train_size=train_size,
                               stratify=not args.no_stratify, formats=args.formats.split(","),
                               progress=not args.quiet)
    print(prepared.describe())
    return 0


def _torchrun(args, argv: list[str], env: dict[str, str] | None = None) -> int:
    """``train --nproc-per-node N``: the same command under torchrun (PyTorch's elastic launcher), N processes
    (``env``: variables added to their environment)."""
    import os
    import subprocess

    if args.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node {args.nproc_per_node}: give at least 1 process.")
    from .hyperparameters import Hyperparameters

    batch = hp_values(args, getattr(args, "config_hyperparameters", {})).get("mini_batch_size",
                                                                          Hyperparameters.mini_batch_size)
    if str(batch).isdigit() and int(batch) % args.nproc_per_node:
        raise UsageError(f"mini_batch_size={batch} is split across the {args.nproc_per_node} processes of a host: make "
                         f"it a multiple of {args.nproc_per_node} (or change --nproc-per-node).")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if not a.startswith("--nproc-per-node="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}",
           "--max-restarts=0", "-m", "multilabel_ic", *rest]
    log.info("starting %d processes: %s", args.nproc_per_node, " ".join(cmd[1:]))
    code = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                                    **(env or {})}).returncode
    if code != 0:
        raise TrainingError(f"the distributed run stopped: a process exited with status {code} (its error is above). "
                            f"Run the same command again to resume from the last finished epoch.")
    return 0


def cmd_train(args) -> int:
    from .api import Trainer
    from .data.dataset import Dataset

    if not args.classes:
        raise UsageError("train needs --classes (comma-separated class names in label order), or classes = [...] in "
                         "--config.")
    classes = class_list(args.classes)
    config_hp = getattr(args, "config_hyperparameters", {})
    hp_values(args, config_hp)
    launch = args.nproc_per_node is not None and "WORLD_SIZE" not in __import__("os").environ
    if launch and args.backend == "sagemaker":
        raise UsageError("--nproc-per-node applies to --backend local; on SageMaker use --instance-count.")
    if launch and args.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node {args.nproc_per_node}: give at least 1 process.")
    if args.backend == "sagemaker":
        given = [f"--{k.replace('_', '-')}" for k, default in LOCAL_ONLY_TRAIN_FLAGS.items()
                 if getattr(args, k) != default]
        if given:
            raise UsageError(f"{', '.join(given)} apply to --backend local only; SageMaker trains on its own "
                             f"instances (see --instance-type, --instance-count).")
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output {args.output} is a file; choose a folder for the run.")
    created_output = not args.output.exists()
    records = args.output / "records"
    extracted: list[Path] = []
    try:
        if args.train_rec:
            if args.train_lst or args.validation_lst:
                raise UsageError("give either --train-rec (and --validation-rec) or --train-lst with --images, not both")
            for rec in (args.train_rec, args.validation_rec):
                if rec is not None and not rec.is_file():
                    raise UsageError(f"--train-rec/--validation-rec {rec}: " + (
                        "not a regular file (a folder, FIFO or device); give a .rec file." if rec.exists()
                        else "file not found."))
            if launch:  # the processes extract the records; here only what can be checked without them
                return _launch_checked(args, classes, config_hp, train=None, val=None)
            # RecordIO holds the encoded images; they are extracted once under the output folder
            train = Dataset.from_recordio(args.train_rec, extract_to=records / "train", class_names=classes)
            extracted.append(records / "train")
            val = None
            if args.validation_rec:
                val = Dataset.from_recordio(args.validation_rec, extract_to=records / "validation",
                                            class_names=classes)
                extracted.append(records / "validation")
        elif args.train_lst and args.images:
            train = Dataset.from_lst(args.train_lst, root=args.images, class_names=classes)
            val = (Dataset.from_lst(args.validation_lst, root=args.images, class_names=classes)
                   if args.validation_lst else None)
        else:
            raise UsageError("train needs --train-lst with --images, or --train-rec")
        if launch:
            return _launch_checked(args, classes, config_hp, train=train, val=val)
        hp = hyperparameters_from_args(args, num_classes=len(classes), num_training_samples=len(train),
                                       defaults=config_hp)
        if args.backend == "sagemaker":
            model = Trainer(hp, backend=backend_from_args(args), output_dir=args.output).fit(
                train, validation=val, initial_model=args.initial_model)
        else:
            from .continuation import initial_model_for, is_remote

            # a remote initial model is fetched with the SageMaker options (--region, --profile)
            aws = backend_from_args(args) if args.initial_model and is_remote(args.initial_model) else None
            with initial_model_for(args.initial_model, "local", aws=aws) as initial:
                model = Trainer(hp, backend="local", output_dir=args.output, device=args.device,
                                options=_local_options(args), callbacks=_trackers(args)).fit(
                    train, validation=val, initial_model=initial)
    except MultilabelICError:
        # a refused run leaves the output folder as it found it (extracted records are re-made on the next run)
        import shutil

        for folder in extracted:
            shutil.rmtree(folder, ignore_errors=True)
        if records.is_dir() and not any(records.iterdir()):
            records.rmdir()
        if created_output and args.output.is_dir() and not any(args.output.iterdir()):
            args.output.rmdir()
        raise
    if __import__("os").environ.get("RANK", "0") != "0":
        return 0  # under torchrun, process 0 reports for the run
    from ._io import atomic_write_text
    from .run_config import resolved_config

    # what this run used, flags and --config merged: itself a valid --config
    atomic_write_text(args.output / "run-config.json",
                      json.dumps(resolved_config(args, hp.to_sagemaker()), indent=2) + "\n")
    _print_final(model.metrics)
    print(f"model artifact: {model.artifact}")
    from .report import report_after_training

    report = report_after_training(args.output, artifact=model.artifact, validation=val)
    if report is not None:
        print(f"report: {report}")
    return 0


def _local_options(args):
    from .local_options import options_from_args

    return options_from_args(args, progress=not args.quiet)


def _launch_checked(args, classes: list[str], config_hp: dict, *, train, val) -> int:
    """``train --nproc-per-node N``: check here, in one process, all that can be checked without starting the N
    processes (hyperparameters, options, device, data), so a usage error is one line and exit 2, not N errors and
    torchrun's traceback; then launch them."""
    from .backends.local import check_launch

    if train is None:  # RecordIO: the record count from its index, when there is one
        from .data.recordio import read_idx

        idx = args.train_rec.with_suffix(".idx")
        count = len(read_idx(idx)) if idx.is_file() else None
    else:
        count = len(train)
    hp = hyperparameters_from_args(args, num_classes=len(classes), num_training_samples=max(1, count or 1),
                                   defaults=config_hp)
    check_launch(hp, train, val, _local_options(args), device=args.device, processes=args.nproc_per_node)
    if args.initial_model:
        from .continuation import fetched_once, is_remote
        from .model.initial import check_initial_model, read_initial_model

        if is_remote(args.initial_model):  # downloaded once, here; the processes read that copy
            with fetched_once(args.initial_model, backend_from_args(args)) as (initial, env):
                check_initial_model(hp, initial)
                return _torchrun(args, args.argv, env=env)
        check_initial_model(hp, read_initial_model(args.initial_model))
    return _torchrun(args, args.argv)


def _trackers(args) -> list:
    from .callbacks import Callback, MLflow, TensorBoard

    out: list[Callback] = []
    if args.tensorboard is not None:
        out.append(TensorBoard(args.tensorboard or None))
    if args.mlflow:
        out.append(MLflow(args.mlflow, experiment=args.mlflow_experiment))
    return out


def _print_final(metrics: dict) -> None:
    final = metrics.get("final") or {}

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if final.get("epoch") is not None:
        print(f"validation mAP {fmt(final.get('mAP'))}  micro mAP {fmt(final.get('micro_mAP'))}  accuracy "
              f"{fmt(final.get('accuracy'))}  F1 macro {fmt(final.get('f1_macro'))}  (epoch {final.get('epoch')})")
        for name, ap in (final.get("per_class_AP") or {}).items():
            print(f"  AP {name:<14} {fmt(ap)}")
        if final.get("mAP") is None:
            print("  (mAP is undefined: the validation data has no positive label)")


def cmd_evaluate(args) -> int:
    from .data.dataset import Dataset
    from .model.predictor import LocalPredictor
    from .model.transforms import AugmentOptions

    classes = class_list(args.classes) if args.classes else None
    if args.resize is not None and (args.resize < 1 or args.preprocess != "centre_crop"):
        raise UsageError(f"--resize {args.resize}: give a positive number of pixels, with --preprocess centre_crop "
                         f"(the endpoint's plain resize has no resize step).")
    if (args.model is None) == (args.endpoint is None):
        raise UsageError("evaluate needs either --model (a model.tar.gz run here) or --endpoint (a server URL or a "
                         "SageMaker endpoint), not both.")
    if args.endpoint is not None:
        from .cli_sagemaker import endpoint_predictor

        pred = endpoint_predictor(args)
    else:
        pred = LocalPredictor(args.model, class_names=classes, augment=AugmentOptions(inference=args.preprocess),
                              resize=args.resize)
    data = Dataset.from_lst(args.lst, root=args.images, class_names=pred.class_names)
    result = pred.evaluate(data)
    if isinstance(pred, LocalPredictor):
        c, h, w = pred.image_shape
        result["preprocessing"] = (f"shorter side to {pred.resize or max(h, w)}, centre crop {h}x{w}"
                                   if args.preprocess == "centre_crop" else f"plain resize to {h}x{w}")
    text = json.dumps(result, indent=2, allow_nan=False)
    if args.output:
        from ._io import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    print(text)
    return 0


def cmd_predict(args) -> int:
    from .images import read_bytes
    from .model.predictor import LocalPredictor

    if (args.model is None) == (args.endpoint is None):
        raise UsageError("predict needs either --model (a model.tar.gz run here) or --endpoint (a SageMaker "
                         "endpoint), not both.")
    if args.endpoint is not None:
        from .cli_sagemaker import predict_endpoint

        return predict_endpoint(args)
    classes = class_list(args.classes) if args.classes else None
    pred = LocalPredictor(args.model, class_names=classes, runtime=args.runtime, precision=args.precision)
    blobs = [read_bytes(p) for p in args.images]
    sources = [str(p) for p in args.images]
    for path, probs in zip(sources, pred.predict_batch(blobs, sources=sources)):
        print_prediction(path, probs, pred.class_names, threshold=args.threshold, jsonlines=args.jsonlines)
    return 0


def cmd_report(args) -> int:
    from .data.dataset import Dataset
    from .report import write_report

    validation = None
    if args.validation_lst is not None:
        if args.images is None:
            raise UsageError("--validation-lst needs --images (the folder its paths are relative to).")
        names = class_list(args.classes) if args.classes else None
        if names is None:
            from .report_inputs import read_class_names

            names = read_class_names(args.run)[0] or None
        validation = Dataset.from_lst(args.validation_lst, root=args.images, class_names=names)
    print(write_report(args.run, validation=validation, output=args.output))
    return 0


def cmd_export(args) -> int:
    from .model.export import export_model

    output = args.output or args.model.with_name("model.onnx" if args.format == "onnx" else "model.pt")  # str: a
    # trailing "/" (a folder) reaches the export's check
    if args.format == "openvino" or args.precision != "fp32":
        return export_low_precision_cli(args)
    info = export_model(args.model, output, format=args.format, epoch=args.epoch)
    weights = f" + its weights in {info['external_data']} (keep them together)" if "external_data" in info else ""
    print(f"{info['model']}{weights} (max |diff| vs the predictor {info['max_abs_diff_vs_predictor']:.1e}); "
          f"class names, thresholds and preprocessing: {info['metadata']}")
    return 0


def cmd_demo(args) -> int:
    from .api import Trainer
    from .backends.local import LocalOptions
    from .data.prepare import prepare_dataset
    from .images import read_bytes

    started = time.time()
    print(f"[1/4] generating {args.num_images} synthetic COCO-format images and preparing splits ...", flush=True)
    prepared = prepare_dataset(args.output / "data", source="synthetic", num_images=args.num_images,
                               seed=args.seed, train_size=0.75, progress=not args.quiet)
    print(prepared.describe(), flush=True)
    hp = hyperparameters_from_args(args, num_classes=5, num_training_samples=len(prepared.train), defaults=DEMO_HP)
    print(f"\n[2/4] training ResNet-{hp.num_layers} at {hp.image_shape} for {hp.epochs} epochs "
          f"(hyperparameters: {hp.to_sagemaker()}) ...", flush=True)
    options = LocalOptions(seed=args.seed, progress=not args.quiet)
    model = Trainer(hp, backend="local", output_dir=args.output / "run", device=args.device,
                    options=options).fit(prepared.train, validation=prepared.validation)
    print("\n[3/4] evaluation of the shipped model on the held-out split:")
    _print_final(model.metrics)
    print("\n[4/4] prediction for one held-out image (the endpoint's JSON body):")
    predictor = model.predictor()
    path, labels = prepared.validation[0]
    probs = predictor.predict(read_bytes(path))
    print(f"  {path.name}: {json.dumps([round(p, 4) for p in probs])}")
    for name, p, y in zip(predictor.class_names, probs, labels):
        print(f"    {name:<11} p={p:.3f}  truth={int(y)}")
    from .report import report_after_training

    report = report_after_training(args.output / "run", artifact=model.artifact, validation=prepared.validation,
                                   title="Demo run report")
    print(f"\nartifact: {model.artifact}\nmetrics:  {args.output / 'run' / 'metrics.json'} (+ metrics.png)\n"
          f"report:   {report or 'not written (see the warning above)'} (open it in a browser)\n"
          f"done in {time.time() - started:.0f} s")
    held_out = model.metrics["final"]["mAP"]
    if args.min_map is not None and (held_out is None or held_out < args.min_map):
        print(f"error: the held-out mAP {held_out} is below --min-map {args.min_map}", file=sys.stderr)
        return 1
    return 0


def cmd_parity(args) -> int:
    from .backends.local import LocalOptions
    from .data.prepare import prepare_dataset
    from .parity import PARITY_HP, run_parity

    if args.seeds < 2:
        raise UsageError(f"--seeds {args.seeds}: at least 2 seeds per engine are needed for a seed-to-seed spread.")
    hp_values(args)
    prepared = prepare_dataset(args.output / "data", source="synthetic", num_images=args.num_images, seed=0,
                               train_size=0.75, progress=not args.quiet)
    hp = hyperparameters_from_args(args, num_classes=5, num_training_samples=len(prepared.train), defaults=PARITY_HP)
    report = run_parity(prepared.train, prepared.validation, hp, seeds=range(args.seeds), output=args.output,
                        options=LocalOptions(progress=not args.quiet, num_workers=args.workers))
    print((args.output / "parity.md").read_text(encoding="utf-8"))
    print(f"report: {args.output / 'parity.json'}, {args.output / 'parity.png'}")
    return 0 if report["cross_load_within_1e-4"] else 1


def cmd_bench(args) -> int:
    if args.sagemaker_cost:
        from .bench.run import sagemaker_cost

        sagemaker_cost(args)
        return 0
    if args.scaling is not None:
        from .bench.scaling import run_scaling

        if args.scaling < 2:
            raise UsageError(f"--scaling {args.scaling}: compare at least 2 processes with 1.")
        run_scaling(args.output, processes=(1, args.scaling), device=args.device)
        return 0
    from .bench.run import run_bench
    from .bench.sagemaker import load_prices, read_log_export

    # the files it compares against are read first, not after minutes of measuring
    if args.prices is not None:
        load_prices(args.prices)
    for path in args.sagemaker_log:
        read_log_export(path)
    run_bench(args)
    return 0


def _with_config(parser: argparse.ArgumentParser, argv: list[str], path: Path) -> argparse.Namespace:
    """Parse ``argv`` again with the run configuration's values as the train command's defaults (flags win)."""
    from .run_config import load_run_config, train_defaults

    defaults, hyperparameters = train_defaults(load_run_config(path), path)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subparsers.choices["train"].set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.argv = argv
    args.config_hyperparameters = hyperparameters
    return args


def _exit_code(exc: BaseException) -> int:
    return 2 if isinstance(exc, (UsageError, HyperparameterError)) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # global flags are accepted after the subcommand too
    pre = [a for a in argv if a in ("--quiet", "--debug")]
    argv = pre + [a for a in argv if a not in ("--quiet", "--debug")]
    args = parser.parse_args(argv)
    args.argv = argv
    _setup_logging(args.quiet)
    if getattr(args, "config", None) is not None:
        try:
            args = _with_config(parser, argv, args.config)
        except MultilabelICError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return _exit_code(exc)
    handlers = {"prepare": cmd_prepare, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "demo": cmd_demo, "export": cmd_export, "report": cmd_report, "bench": cmd_bench, "parity": cmd_parity, "serve": cmd_serve, "tune": cmd_tune, **SAGEMAKER_HANDLERS}
    try:
        return handlers[args.command](args)
    except MultilabelICError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or an error not yet translated: still one line unless --debug
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (an unexpected error; run again with --debug for the "
              f"traceback and report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
