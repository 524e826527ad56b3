"""The command line's SageMaker side: the backend's options (``train --backend sagemaker`` and every SageMaker verb)
and the verbs a user needs from a shell: ``deploy``, ``predict --endpoint``, ``transform``, ``attach``,
``delete-endpoint``. Each is a thin wrapper over :class:`~multilabel_ic.backends.sagemaker.SageMakerBackend`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .exceptions import BackendError, UsageError
from .local_options import local_only_flags

__all__ = ["add_sagemaker_args", "backend_from_args", "add_commands", "HANDLERS", "LOCAL_ONLY_TRAIN_FLAGS"]

# train flags of the local backend only: given with --backend sagemaker they are refused (SageMaker would ignore them)
LOCAL_ONLY_TRAIN_FLAGS = {**local_only_flags(), "tensorboard": None, "mlflow": None}


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} team=vision")
        out[key.strip()] = value.strip()
    return out


def add_sagemaker_args(p: argparse.ArgumentParser, *, training: bool = False, resources: bool = False) -> None:
    """Connection options (every verb); ``training``: the training job's; ``resources``: VPC, KMS, tags, env."""
    g = p.add_argument_group("SageMaker")
    g.add_argument("--region", default=None, help="AWS region (default: the profile's or AWS_DEFAULT_REGION)")
    g.add_argument("--profile", default=None, help="AWS profile from ~/.aws (default: the usual credential chain)")
    g.add_argument("--role", default=None, help="IAM role name or ARN that SageMaker assumes")
    g.add_argument("--bucket", default=None, help="S3 bucket for data and outputs")
    g.add_argument("--prefix", default="multilabel-ic", help="S3 key prefix under --bucket")
    if training:
        g.add_argument("--instance-type", default="ml.p3.2xlarge", help="training instance type")
        g.add_argument("--instance-count", type=int, default=1, help="training instances (> 1: distributed)")
        g.add_argument("--volume-size", type=int, default=50, help="EBS volume per instance, GB")
        g.add_argument("--max-run", type=int, default=360000, help="training time limit, seconds")
        g.add_argument("--input-format", choices=["lst", "recordio", "manifest"], default="lst",
                       help="how the data is uploaded: images + .lst, RecordIO, or augmented manifests (Pipe; "
                            "with --engine pytorch, File-mode channels of the images and the manifests)")
        g.add_argument("--use-spot", action="store_true", help="managed spot training")
        g.add_argument("--max-wait", type=int, default=None, help="spot: wait + run time limit, seconds")
        g.add_argument("--checkpoint-s3-uri", default=None, help="spot: where the job checkpoints")
        g.add_argument("--base-job-name", default="ic-multilabel", help="prefix of the job name")
        g.add_argument("--framework-version", default=None,
                       help="with --engine pytorch: the SageMaker PyTorch image's torch version (default 2.8)")
    if resources:
        g.add_argument("--subnets", default=None, help="VPC subnet ids, comma-separated (with --security-group-ids)")
        g.add_argument("--security-group-ids", default=None, help="VPC security group ids, comma-separated")
        g.add_argument("--volume-kms-key", default=None, help="KMS key for the ML storage volumes")
        g.add_argument("--output-kms-key", default=None, help="KMS key for the artifact and transform output in S3")
        g.add_argument("--network-isolation", action="store_true", help="no network access for the containers")
        g.add_argument("--encrypt-inter-container-traffic", action="store_true",
                       help="encrypt traffic between training instances")
        g.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag on every resource")
        g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="an environment variable of the containers")


def backend_from_args(args: argparse.Namespace):
    """The :class:`SageMakerBackend` the options describe (the options a verb lacks take their defaults)."""
    from .backends.sagemaker import SageMakerBackend

    settings: dict[str, Any] = dict(role=args.role, bucket=args.bucket, prefix=args.prefix, region=args.region,
                                    profile=args.profile, progress=not args.quiet)
    for name in ("instance_type", "instance_count", "volume_size", "max_run", "input_format", "use_spot", "max_wait",
                 "checkpoint_s3_uri", "base_job_name"):
        if hasattr(args, name) and args.command == "train":
            settings[name] = getattr(args, name)
    if args.command == "train" and hasattr(args, "engine"):  # --engine pytorch: the project's engine on SageMaker
        if args.engine == "gluon":
            raise UsageError("--engine gluon trains on this machine only; with --backend sagemaker use --engine "
                             "pytorch (this project's engine) or leave --engine out (the built-in algorithm).")
        if args.framework_version and args.engine != "pytorch":
            raise UsageError("--framework-version picks the torch version of --engine pytorch; the built-in "
                             "algorithm has its own image: add --engine pytorch or drop --framework-version.")
        settings.update(engine="pytorch" if args.engine == "pytorch" else "builtin", seed=args.seed,
                        framework_version=args.framework_version)
    elif getattr(args, "framework_version", None):
        raise UsageError("--framework-version applies to train --backend sagemaker --engine pytorch.")
    if hasattr(args, "subnets"):
        settings.update(subnets=args.subnets, security_group_ids=args.security_group_ids,
                        volume_kms_key=args.volume_kms_key, output_kms_key=args.output_kms_key,
                        enable_network_isolation=args.network_isolation,
                        encrypt_inter_container_traffic=args.encrypt_inter_container_traffic,
                        tags=_pairs(args.tag, "--tag"), environment=_pairs(args.env, "--env"))
    return SageMakerBackend(**settings)


def add_commands(sub) -> None:
    d = sub.add_parser("deploy", help="SageMaker: create an endpoint for a model.tar.gz in S3; prints its name")
    d.add_argument("artifact", help="s3://.../model.tar.gz (a training job's output)")
    d.add_argument("--endpoint-name", default=None, help="(default: <base>-ep-<time>-<hex>)")
    d.add_argument("--instance-type", default="ml.m5.xlarge", help="endpoint instance type")
    d.add_argument("--instance-count", type=int, default=1, help="endpoint instances")
    d.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    add_sagemaker_args(d, resources=True)

    t = sub.add_parser("transform", help="SageMaker: batch transform of a folder of images or an S3 prefix")
    t.add_argument("model", help="s3://.../model.tar.gz, or the name of a SageMaker model")
    t.add_argument("input", help="a local folder of images (uploaded), or an s3:// prefix of images")
    t.add_argument("--output-path", default=None, help="s3:// prefix for the predictions (default: under --bucket)")
    t.add_argument("--instance-type", default="ml.m5.xlarge", help="transform instance type")
    t.add_argument("--instance-count", type=int, default=1)
    t.add_argument("--no-wait", action="store_true", help="print the transform job's name and return")
    add_sagemaker_args(t, resources=True)

    a = sub.add_parser("attach", help="SageMaker: follow a training job (status, logs) and download its artifact")
    a.add_argument("job", help="training job name")
    a.add_argument("--output", type=Path, default=Path("runs/attached"), help="where the artifact and metrics go")
    a.add_argument("--classes", default=None, help="class names in label order (default: class_0, ...)")
    add_sagemaker_args(a)

    x = sub.add_parser("delete-endpoint", help="SageMaker: delete an endpoint, its endpoint config and its models "
                                               "(found by describing them; what another endpoint uses is kept)")
    x.add_argument("endpoint", help="endpoint name (as deploy printed it, or any endpoint)")
    add_sagemaker_args(x)


def cmd_deploy(args) -> int:
    if not args.artifact.startswith("s3://"):
        raise UsageError(f"deploy {args.artifact}: give the s3:// URI of a model.tar.gz (a training job's output; "
                         f"'train --backend sagemaker' prints it).")
    backend = backend_from_args(args)
    endpoint = backend.deploy(args.artifact, instance_type=args.instance_type,
                              initial_instance_count=args.instance_count, endpoint_name=args.endpoint_name,
                              wait=args.wait)
    endpoint.owns_resources = False  # it outlives this command: delete-endpoint removes it
    print(endpoint.endpoint_name)
    return 0


def cmd_transform(args) -> int:
    import numpy as np

    from .data.dataset import Dataset

    backend = backend_from_args(args)
    data: Dataset | str
    if args.input.startswith("s3://"):
        data = args.input
    else:
        folder = Path(args.input)
        if not folder.is_dir():
            raise UsageError(f"transform {args.input}: not a folder of images or an s3:// prefix.")
        paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                       if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not paths:
            raise UsageError(f"transform {args.input}: no .jpg, .jpeg or .png files in it.")
        data = Dataset(paths, np.zeros((len(paths), 1), np.float32), ["unlabelled"], root=folder)
    result = backend.batch_transform(args.model, data, instance_type=args.instance_type,
                                     instance_count=args.instance_count, output_path=args.output_path,
                                     wait=not args.no_wait)
    if isinstance(result, str):
        print(result)
    elif isinstance(result, dict):
        for uri, probs in result.items():
            print(json.dumps({"source": uri, "prediction": probs}))
    else:
        assert isinstance(data, Dataset)
        for path, probs in zip(data.paths, result):
            print(json.dumps({"source": path, "prediction": probs}))
    return 0


def cmd_attach(args) -> int:
    from .cli_args import class_list

    backend = backend_from_args(args)
    model = backend.attach(args.job, output_dir=args.output,
                           class_names=class_list(args.classes) if args.classes else None)
    print(json.dumps({"job": args.job, "final": model.metrics.get("final"), "artifact": model.artifact,
                      "local_artifact": str(model.local_artifact)}, indent=2))
    return 0


def cmd_delete_endpoint(args) -> int:
    from .backends.sagemaker.teardown import delete_endpoint

    report = delete_endpoint(backend_from_args(args), args.endpoint)
    for line in report.lines():
        print(line)
    if report.failed:
        raise BackendError(f"could not delete {', '.join(f'{kind} {name}' for kind, name in report.failed)} of "
                           f"endpoint {args.endpoint} (the log line above gives the command that does it by hand)")
    return 0


def endpoint_predictor(args):
    """The predictor for ``--endpoint``: a server's URL (``multilabel-ic serve``, a container of it) or the name of a
    SageMaker endpoint; both answer the same contract and are parsed the same way."""
    from .cli_args import class_list

    classes = class_list(args.classes) if args.classes else None
    if getattr(args, "preprocess", "resize") != "resize":
        raise UsageError(f"--preprocess {args.preprocess} applies to --model only: an endpoint preprocesses as the "
                         f"built-in's does (a plain resize to the model's size).")
    if args.endpoint.lower().startswith(("http://", "https://")):
        from .serve.client import HttpPredictor

        return HttpPredictor(args.endpoint, class_names=classes)
    from .backends.sagemaker.endpoint import SageMakerPredictor

    if args.command == "evaluate" and classes is None:
        raise UsageError(f"evaluate --endpoint {args.endpoint} needs --classes (the class names in label order): a "
                         f"SageMaker endpoint does not say them.")
    return SageMakerPredictor(backend_from_args(args), args.endpoint, class_names=classes)


def predict_endpoint(args) -> int:
    """``predict --endpoint NAME|URL images...``: the endpoint's probabilities, printed like the local predictor's."""
    from .cli_args import print_prediction
    from .images import read_bytes

    pred = endpoint_predictor(args)
    for path in args.images:
        try:
            probs = pred.predict(read_bytes(path))
        except BackendError as exc:
            raise BackendError(f"{path}: {exc}") from exc
        print_prediction(str(path), probs, pred.class_names, threshold=args.threshold, jsonlines=args.jsonlines)
    return 0


HANDLERS = {"deploy": cmd_deploy, "transform": cmd_transform, "attach": cmd_attach,
            "delete-endpoint": cmd_delete_endpoint}
