"""The SageMaker backend: the real built-in Image Classification algorithm, driven with boto3.

The SDK (``sagemaker-core``) supplies the algorithm's image URIs; every AWS call goes through boto3 clients built
from one ``boto3.Session`` (profile, region and credentials from the usual places, or explicit arguments). botocore
errors are translated into :class:`BackendError` / :class:`TrainingError` with the original as ``__cause__``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._io import ensure_dir
from ...exceptions import BackendError, TrainingError, UsageError, require
from ...hyperparameters import Rule, check_options
from ...preflight import check_training_request
from . import request as rq
from .cloudwatch import LogParser, stream_job_logs
from .s3 import download_file, parse_s3_uri, sync_files, upload_channel

if TYPE_CHECKING:
    from ...backends.base import Model
    from ...callbacks import Callback
    from ...data.dataset import Dataset
    from ...hyperparameters import Hyperparameters

__all__ = ["SageMakerBackend", "INPUT_FORMATS"]

log = logging.getLogger("multilabel_ic.sagemaker")
INPUT_FORMATS = ("lst", "recordio", "manifest")
_TERMINAL = ("Completed", "Failed", "Stopped")
# builtin: the SageMaker algorithm's own container; pytorch: this project's engine in SageMaker's PyTorch container
ENGINES = ("builtin", "pytorch")


# One rule per setting, in the rule table's terms (the same mechanism and message shape as Hyperparameters).
BACKEND_RULES = {
    "input_format": Rule("choice", choices=INPUT_FORMATS), "instance_count": Rule("int", low=1),
    "volume_size": Rule("int", low=1, high=16384), "max_run": Rule("int", low=1),
    "max_wait": Rule("int", low=1, nullable=True),
    "manifest_label_format": Rule("choice", choices=("multi-hot", "class-id")),
    "poll_interval": Rule("float", low=0), "max_attempts": Rule("int", low=1), "use_spot": Rule("bool"),
    "logs": Rule("bool"), "progress": Rule("bool"), "score_validation": Rule("bool"),
    "instance_type": Rule("str"), "base_job_name": Rule("str"), "role": Rule("str", nullable=True),
    "bucket": Rule("str", nullable=True), "engine": Rule("choice", choices=ENGINES),
    "framework_version": Rule("str"), "seed": Rule("int", low=0),
}


class SageMakerBackend:
    """Train with the built-in algorithm on SageMaker: upload, train, stream logs, download, deploy.

    ``instance_count > 1`` is SageMaker's distributed training (set ``kv_store`` in the hyperparameters to choose
    dist_sync or dist_async). ``use_spot=True`` uses managed spot capacity with ``checkpoint_s3_uri``.

    ``engine="pytorch"`` (or ``"torch"``) runs this project's engine instead of the built-in algorithm, in SageMaker's
    PyTorch training container (``framework_version``; several instances train as torchrun DDP through SageMaker's
    ``torch_distributed`` setting, seeded with ``seed``). Same channels, hyperparameters and artifact format.
    """

    name = "sagemaker"
    capabilities = frozenset({"deploy", "batch_transform"})

    def __init__(self, *, role: str | None = None, bucket: str | None = None, prefix: str = "multilabel-ic", region: str | None = None,
                 instance_type: str = "ml.p3.2xlarge", instance_count: int = 1, volume_size: int = 50,
                 max_run: int = 360000, input_format: str = "lst", session: Any = None, use_spot: bool = False,
                 max_wait: int | None = None, checkpoint_s3_uri: str | None = None, tags: dict | None = None,
                 base_job_name: str = "ic-multilabel", model_uri: str | None = None,
                 manifest_label_format: str = "multi-hot", poll_interval: float = 30.0, logs: bool = True,
                 progress: bool = True, max_attempts: int = 10, profile: str | None = None,
                 score_validation: bool = True, subnets: Sequence[str] | None = None,
                 security_group_ids: Sequence[str] | None = None, volume_kms_key: str | None = None,
                 output_kms_key: str | None = None, enable_network_isolation: bool = False,
                 encrypt_inter_container_traffic: bool = False, environment: dict[str, str] | None = None,
                 engine: str = "builtin", framework_version: str | None = None, seed: int = 0):
        boto3 = require("boto3", extra="sagemaker")
        from .framework import DEFAULT_FRAMEWORK_VERSION

        engine = "pytorch" if engine == "torch" else engine
        if framework_version is not None and engine != "pytorch":
            raise UsageError(f"framework_version={framework_version!r} picks the torch of engine='pytorch'; the "
                             f"built-in algorithm has its own image: pass engine='pytorch' or drop framework_version.")
        framework_version = framework_version or DEFAULT_FRAMEWORK_VERSION
        from botocore.config import Config

        checked = check_options(dict(
            input_format=input_format, instance_count=instance_count, volume_size=volume_size, max_run=max_run,
            max_wait=max_wait, manifest_label_format=manifest_label_format, poll_interval=poll_interval,
            max_attempts=max_attempts, use_spot=use_spot, logs=logs, progress=progress,
            score_validation=score_validation, instance_type=instance_type, base_job_name=base_job_name,
            role=role, bucket=bucket, engine=engine, framework_version=framework_version, seed=seed), BACKEND_RULES,
            owner="SageMakerBackend")
        instance_count, volume_size, max_run = checked["instance_count"], checked["volume_size"], checked["max_run"]
        max_wait, poll_interval, max_attempts = checked["max_wait"], checked["poll_interval"], checked["max_attempts"]
        from .security import ResourceSettings

        # VPC, KMS, isolation, encryption, tags and environment for every resource created (docs/sagemaker.md)
        self.resources = ResourceSettings.build(
            subnets=subnets, security_group_ids=security_group_ids, volume_kms_key=volume_kms_key,
            output_kms_key=output_kms_key, enable_network_isolation=enable_network_isolation,
            encrypt_inter_container_traffic=encrypt_inter_container_traffic, environment=environment, tags=tags)
        if encrypt_inter_container_traffic and instance_count == 1:
            log.info("encrypt_inter_container_traffic=True with instance_count=1: a single instance sends nothing "
                     "between containers; it takes effect with instance_count > 1")
        if session is not None and profile is not None:
            raise UsageError("pass either session= or profile=, not both")
        if max_wait is not None and not use_spot:
            raise UsageError("max_wait applies to managed spot training only: set use_spot=True or drop max_wait.")
        if use_spot and max_wait is not None and max_wait < max_run:
            raise UsageError(f"max_wait ({max_wait} s) must be at least max_run ({max_run} s): SageMaker rejects a "
                             f"spot job that may wait less than it may run.")
        if checkpoint_s3_uri is not None and not use_spot:
            raise UsageError("checkpoint_s3_uri is used with managed spot training (use_spot=True), where the "
                             "algorithm resumes from it after an interruption; set use_spot=True or drop it.")
        if checkpoint_s3_uri is not None and not checkpoint_s3_uri.startswith("s3://"):
            raise UsageError(f"checkpoint_s3_uri must be an s3:// URI, got {checkpoint_s3_uri!r}")
        self.session = session or boto3.Session(profile_name=profile, region_name=region)
        self.region = region or self.session.region_name
        if not self.region:
            raise BackendError("no AWS region: pass region=..., set AWS_DEFAULT_REGION, or configure a profile.")
        self.config = Config(region_name=self.region, retries={"max_attempts": max_attempts, "mode": "adaptive"},
                             user_agent_extra="multilabel-ic")
        self.role, self.bucket, self.prefix = role, bucket, prefix.strip("/")
        self.instance_type, self.instance_count, self.volume_size = instance_type, instance_count, volume_size
        self.max_run, self.input_format, self.use_spot, self.max_wait = max_run, input_format, use_spot, max_wait
        self.checkpoint_s3_uri, self.tags, self.base_job_name = checkpoint_s3_uri, tags, base_job_name
        self.model_uri, self.manifest_label_format = model_uri, manifest_label_format
        self.poll_interval, self.logs, self.progress = poll_interval, logs, progress
        self.score_validation = score_validation
        self.engine, self.framework_version, self.seed = engine, framework_version, seed
        self._clients: dict[str, Any] = {}
        self.sleep = time.sleep  # the pause between status polls (replaceable in tests)
        self.last_request: dict | None = None

    # ----------------------------------------------------------------- clients
    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self.config)
        return self._clients[service]

    def _call(self, service: str, op: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(service), op)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise BackendError(f"{service}.{op} failed: {err.get('Code', '?')}: {err.get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise BackendError(f"{service}.{op} failed: {exc}") from exc

    @property
    def base_uri(self) -> str:
        self._need_bucket()
        return f"s3://{self.bucket}/{self.prefix}"

    def _need_bucket(self) -> str:
        if not self.bucket:
            raise UsageError("this needs an S3 bucket for the data and outputs: pass bucket= (CLI: --bucket).")
        return self.bucket

    def image(self) -> str:
        return rq.image_uri(self.region)

    def role_arn(self) -> str:
        if not self.role:
            raise UsageError("this needs an IAM role that SageMaker can assume: pass role= (a role name or ARN; "
                             "CLI: --role).")
        if self.role.startswith("arn:"):
            return self.role
        return self._call("iam", "get_role", RoleName=self.role)["Role"]["Arn"]

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._need_bucket()
        try:
            self.client("s3").head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            raise BackendError(f"S3 bucket {self.bucket!r} does not exist or is not accessible ({code}); create it "
                               f"in {self.region} or pass another bucket=.") from exc
        except BotoCoreError as exc:
            raise BackendError(f"cannot check the S3 bucket {self.bucket!r}: {exc}; check the network, the "
                               f"credentials (--profile, AWS_PROFILE) and the region.") from exc

    def fetch_initial_model(self, source: str, folder: str | Path):
        """An initial model for a run elsewhere (a local run continuing a SageMaker model): an s3:// URI or a
        training job's name, downloaded into ``folder`` and read (:mod:`.initial`)."""
        from .initial import fetch_initial_model

        return fetch_initial_model(self, source, Path(folder))

    def check_artifact(self, uri: str) -> dict:
        """HEAD the ``s3://`` model artifact before any SageMaker resource is made for it: a :class:`BackendError`
        naming the URI and the fix if it is missing, unreadable or empty; its ``head_object`` answer otherwise."""
        from .s3 import head_object

        parse_s3_uri(uri, need_key=True, what="model artifact")
        head = head_object(self.client("s3"), uri, what="the model artifact",
                           if_missing="give the s3:// URI of an existing model.tar.gz (a training job prints it as "
                                      "'model artifact: s3://...'; list them with: aws s3 ls --recursive "
                                      "s3://<bucket>/<prefix>/output/); nothing was created")
        if not head.get("ContentLength"):
            raise BackendError(f"model artifact {uri} is empty (0 bytes); give the URI of a model.tar.gz that a "
                               f"training job wrote; nothing was created.")
        return head

    # ----------------------------------------------------------------- upload
    def upload(self, train: Dataset, validation: Dataset | None) -> list[dict]:
        """Upload the data in ``input_format`` and return the channel definitions.

        Each channel goes under its own content-addressed prefix, ``<prefix>/data/<channel>/<digest>/`` (the digest
        covers its file names, sizes and SHA-256s): the same data reuses what is already there, other data never
        deletes or replaces the objects of an earlier upload, which a job may still be reading."""
        if validation is None:
            raise BackendError("the built-in algorithm needs a validation channel: pass validation=...")
        train.check_images(what="training data")
        validation.check_images(what="validation data")
        s3 = self.client("s3")
        bucket = self._need_bucket()

        def put(channel: str, files: list[tuple[Path, str]], desc: str) -> str:
            uri = upload_channel(s3, files, bucket=bucket, prefix=self.prefix, channel=channel,
                                 progress=self.progress, desc=desc)
            log.info("channel %s: %s", channel, uri)
            return uri

        def images(ds: Dataset) -> list[tuple[Path, str]]:
            return [(ds.image_path(i), p) for i, p in enumerate(ds.paths)]

        uris: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            if self.input_format == "lst":
                for name, ds in (("train", train), ("validation", validation)):
                    uris[name] = put(name, images(ds), f"{name} images")
                    lst = ds.to_lst(tmp / f"{name}.lst")
                    uris[f"{name}_lst"] = put(f"{name}_lst", [(lst, f"{name}.lst")], f"{name}_lst")
                return rq.lst_channels(uris)
            if self.input_format == "recordio":
                for name, ds in (("train", train), ("validation", validation)):
                    rec, _ = ds.to_recordio(tmp / f"{name}.rec", progress=self.progress, renumber=True)
                    uris[name] = put(name, [(rec, f"{name}.rec")], f"{name}.rec")
                return rq.recordio_channels(uris)
            image_uris, manifest_uris = {}, {}
            for name, ds in (("train", train), ("validation", validation)):
                image_uris[name] = put(f"{name}_images", images(ds), f"{name} images")
                man = ds.to_manifest(tmp / f"{name}.manifest", image_prefix=image_uris[name],
                                     label_format=self.manifest_label_format)
                manifest_uris[name] = put(f"{name}_manifest", [(man, f"{name}.manifest")], f"{name} manifest")
            if self.engine == "pytorch":  # File mode: the same objects, as S3Prefix channels (docs/sagemaker.md)
                return rq.manifest_file_channels(image_uris, manifest_uris)
            return rq.manifest_channels(*(manifest_uris[n] + f"{n}.manifest" for n in ("train", "validation")),
                                        label_format=self.manifest_label_format)

    # ----------------------------------------------------------------- training
    def fit(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None, *, output_dir: Path,
            callbacks: Sequence[Callback] = (), initial_model: Any = None):
        """``initial_model``: continue from a ``model.tar.gz`` (a path, an s3:// URI, a training job's name or a
        :class:`Model`) through the algorithm's ``model`` channel; it is checked against ``hp`` before any upload."""
        output_dir = Path(output_dir)
        image = self.check_request(hp, train, validation)
        initial = None
        if initial_model is not None:
            from .initial import initial_model_for_job

            if self.model_uri:
                raise UsageError("give the initial model once: as initial_model= (CLI: --initial-model) or as "
                                 "SageMakerBackend(model_uri=...), not both.")
            initial = initial_model_for_job(self, hp, initial_model)
        if hp.num_training_samples != len(train):
            log.warning("num_training_samples=%d but the training data has %d images", hp.num_training_samples,
                        len(train))
        role = self.role_arn()
        self._check_bucket()
        ensure_dir(output_dir)
        channels = self.upload(train, validation)
        model_uri = self.model_uri
        if initial is not None:
            from .initial import model_channel_uri

            model_uri = model_channel_uri(self, initial)
        name = rq.job_name(self.base_job_name)
        req = self.resources.apply_to_training_job(self.training_request(
            name, role, image, hp, channels, list(train.class_names), model_uri=model_uri))
        self.last_request = req
        self._call("sagemaker", "create_training_job", **req)
        log.info("started training job %s (%d x %s)", name, self.instance_count, self.instance_type)
        model = self._model_of_job(name, hp, list(train.class_names), output_dir, validation, callbacks)
        if initial is not None:
            model.info["initial_model"] = {"source": initial.source, "s3_uri": model_uri, **initial.fingerprint()}
        return model

    def training_request(self, name: str, role: str, image: str, hp: Hyperparameters, channels: list[dict],
                         class_names: list[str], *, model_uri: str | None = None) -> dict:
        """The CreateTrainingJob request of either engine, before the resource settings (VPC, KMS, tags...) are
        applied; a tuning job's training job definition is made of it too. ``name`` is the job's (for a tuning
        job, the tuning job's, which the toolkit of this engine's container is given as ``sagemaker_job_name``)."""
        if self.engine == "pytorch":
            return self._framework_request(name, role, image, hp, channels, class_names, model_uri=model_uri)
        return rq.training_job_request(
            name=name, role_arn=role, image=image, hyperparameters=hp.to_sagemaker(), channels=channels,
            output_path=f"{self.base_uri}/output", instance_type=self.instance_type,
            instance_count=self.instance_count, volume_size=self.volume_size, max_run=self.max_run,
            input_mode="Pipe" if self.input_format == "manifest" else "File", use_spot=self.use_spot,
            max_wait=self.max_wait, checkpoint_s3_uri=self.checkpoint_s3_uri, model_uri=model_uri)

    def _framework_request(self, name: str, role: str, image: str, hp: Hyperparameters, channels: list[dict],
                           class_names: list[str], *, model_uri: str | None = None) -> dict:
        """engine="pytorch": upload the job's source (a wheel of this installed version and the entry script) and
        build the CreateTrainingJob request for SageMaker's PyTorch container (``model_uri``: the ``model`` channel
        of a continued run, which the entry point passes to ``fit(initial_model=...)``)."""
        from . import framework as fw

        with tempfile.TemporaryDirectory() as tmp:
            bundle = fw.source_bundle(tmp)
            source = upload_channel(self.client("s3"), [(bundle, bundle.name)], bucket=self._need_bucket(),
                                    prefix=self.prefix, channel="source", progress=False, desc="source")
        log.info("job source (multilabel-ic wheel and entry point): %s%s", source, bundle.name)
        dist = fw.distribution(self.instance_type, self.instance_count, self.framework_version)
        checkpoints = self.checkpoint_s3_uri or (f"{self.base_uri}/checkpoints/{name}" if self.use_spot else None)
        req = rq.training_job_request(
            name=name, role_arn=role, image=image, channels=channels, output_path=f"{self.base_uri}/output",
            hyperparameters=fw.job_hyperparameters(
                hp, class_names, seed=self.seed, submit_directory=f"{source}{bundle.name}", region=self.region,
                job_name=name, distributed=bool(dist),
                own=fw.manifest_settings(channels, label_format=self.manifest_label_format)),
            instance_type=self.instance_type, instance_count=self.instance_count, volume_size=self.volume_size,
            max_run=self.max_run, use_spot=self.use_spot, max_wait=self.max_wait, checkpoint_s3_uri=checkpoints,
            model_uri=model_uri)
        req["AlgorithmSpecification"]["MetricDefinitions"] = [dict(m) for m in fw.METRIC_DEFINITIONS]
        if "CheckpointConfig" in req:
            req["CheckpointConfig"]["LocalPath"] = fw.CHECKPOINT_LOCAL_PATH
        return req

    def _score_artifact(self, artifact: Path, hp: Hyperparameters, validation: Dataset) -> dict:
        """The shipped model's metrics on the validation data, from a scoring pass of the downloaded artifact with
        the validation transform (what the local backend reports); empty without the ``local`` extra."""
        from ...exceptions import MissingDependencyError
        from ...metrics import evaluate, tune_thresholds

        try:
            from ...model.predictor import LocalPredictor
            from ...model.transforms import AugmentOptions
        except MissingDependencyError as exc:
            log.warning("no scoring pass of %s on the validation data (mAP, per-class AP, thresholds stay null): %s",
                        artifact, exc)
            return {}
        log.info("scoring the trained model on the %d validation images (mAP, per-class AP, tuned thresholds) ...",
                 len(validation))
        pred = LocalPredictor(artifact, class_names=validation.class_names, device="cpu", resize=hp.resize,
                              augment=AugmentOptions(inference="centre_crop"))
        paths = [validation.image_path(i) for i in range(len(validation))]
        import numpy as np

        scores = np.asarray(pred.predict_batch([p.read_bytes() for p in paths], sources=[str(p) for p in paths]))
        labels = validation.labels
        return {**evaluate(labels, scores, class_names=validation.class_names),
                "tuned_thresholds": tune_thresholds(labels, scores), "epoch": pred.epoch}

    @staticmethod
    def _saved_epochs(artifact: Path) -> list[int] | None:
        from ...exceptions import ArtifactError
        from ...model.artifact import read_model_tar

        try:
            return read_model_tar(artifact).epochs_available
        except ArtifactError as exc:
            log.warning("%s: %s", artifact, exc)
            return None

    def check_request(self, hp: Hyperparameters, train: Dataset, validation: Dataset | None) -> str:
        """What would make the job fail, checked before anything is uploaded; returns the algorithm's image URI."""
        if validation is None:
            raise BackendError("the built-in algorithm needs a validation channel: pass validation=...")
        check_training_request(hp, train, validation)
        if self.input_format == "manifest" and self.instance_count > 1 and self.engine != "pytorch":
            raise UsageError(f"input_format='manifest' (Pipe mode) with instance_count={self.instance_count}: the "
                             f"algorithm does not support distributed training in Pipe mode. Use "
                             f"input_format='recordio' or 'lst' for several instances, or instance_count=1.")
        if self.engine == "pytorch":
            return self._check_framework_request(hp)
        return self.image()

    def _check_framework_request(self, hp: Hyperparameters) -> str:
        """engine="pytorch": the image, the distribution and the batch split, refused here with one line."""
        from . import framework as fw

        if self.resources.enable_network_isolation:
            raise UsageError("enable_network_isolation=True: the PyTorch container installs multilabel-ic and its "
                             "dependencies (OpenCV, pycocotools, xxhash) from PyPI when the job starts, which an "
                             "isolated container cannot reach; drop it, or use engine='builtin'.")
        image = fw.framework_image(self.region, self.framework_version, self.instance_type)
        fw.distribution(self.instance_type, self.instance_count, self.framework_version)
        fw.check_batch_split(hp, self.instance_count, fw.gpus_per_instance(self.region, self.instance_type),
                             self.instance_type)
        return image

    def attach(self, job_name: str, *, output_dir: str | Path = "runs/attached",
               class_names: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()):
        """The :class:`Model` of a training job started elsewhere (or by an earlier process): waits for it with log
        streaming, then downloads its artifact into ``output_dir``."""
        from ...hyperparameters import Hyperparameters
        from .framework import split_job_hyperparameters

        desc = self._call("sagemaker", "describe_training_job", TrainingJobName=job_name)
        values, job_names = split_job_hyperparameters(desc.get("HyperParameters", {}))  # either engine's job
        hp = Hyperparameters.from_sagemaker(values)
        class_names = class_names or job_names
        names = list(class_names) if class_names else [f"class_{i}" for i in range(hp.num_classes)]
        if len(names) != hp.num_classes:
            raise UsageError(f"class_names has {len(names)} names but job {job_name} trains {hp.num_classes} classes")
        output_dir = Path(output_dir)
        made = not output_dir.exists()
        ensure_dir(output_dir)
        log.info("attached to training job %s (%s)", job_name, desc["TrainingJobStatus"])
        try:
            return self._model_of_job(job_name, hp, names, output_dir, callbacks=callbacks)
        except BaseException:
            if made and not any(output_dir.iterdir()):  # nothing of the job arrived: leave no empty folder behind
                output_dir.rmdir()
            raise

    def _model_of_job(self, name: str, hp: Hyperparameters, class_names: list[str], output_dir: Path,
                      validation: Dataset | None = None, callbacks: Sequence[Callback] = ()):
        import json

        from ..._io import atomic_write_text, json_default
        from ...callbacks import CallbackList, RunInfo, default_callbacks
        from ...model.artifact import write_metadata
        from ..base import Model, final_metrics

        desc, parser = self.wait(name)
        artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
        local = download_file(self.client("s3"), artifact, output_dir / "model.tar.gz", progress=self.progress,
                              what=f"the artifact of training job {name}",
                              if_missing="the job finished but its model.tar.gz was moved or deleted since; "
                                         "restore it there (or train again), then attach to the job again")
        epochs = parser.epochs()
        summary = parser.summary()
        accs = [(e.get("validation_accuracy"), e["epoch"]) for e in epochs if e.get("validation_accuracy") is not None]
        best_acc, best_epoch = max(accs) if accs else (None, None)
        final = final_metrics(validation_accuracy=best_acc)
        if validation is not None and self.score_validation:
            final.update(self._score_artifact(local, hp, validation))
        saved = self._saved_epochs(local)
        metrics = {"backend": "sagemaker", "epochs": epochs, "final": final, "best_epoch": best_epoch,
                   "saved_epochs": saved, "stopped_early": parser.stopped_early,
                   "images_per_sec_median": summary["images_per_sec_total"],
                   "hyperparameters": hp.to_sagemaker(include_defaults=True), "artifact": artifact,
                   "job_name": name, "instance_type": self.instance_type, "instance_count": self.instance_count,
                   "log_summary": summary, "billable_seconds": desc.get("BillableTimeInSeconds"),
                   "training_seconds": desc.get("TrainingTimeInSeconds")}
        write_metadata(local, class_names=class_names, hyperparameters=hp.to_sagemaker(include_defaults=True),
                       thresholds=final.get("tuned_thresholds"),
                       extra={"backend": "sagemaker", "job_name": name, "artifact": artifact})
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, default=json_default) + "\n")
        # the job's epochs, replayed through the same hooks as a local run (metrics.jsonl, plot, trackers)
        hooks = CallbackList([*default_callbacks(), *callbacks])
        hooks.on_train_start(RunInfo(output_dir=output_dir, backend="sagemaker",
                                     hyperparameters=hp.to_sagemaker(include_defaults=True), class_names=class_names,
                                     settings={"job_name": name, "instance_type": self.instance_type,
                                               "instance_count": self.instance_count}))
        for record in epochs:
            hooks.on_epoch_end(record)
        hooks.on_train_end(metrics)
        return Model(hyperparameters=hp, class_names=class_names, metrics=metrics, artifact=artifact,
                     local_artifact=local, backend=self, info={"job_name": name, "description": desc})

    def wait(self, name: str) -> tuple[dict, LogParser]:
        """Poll the job until it ends, streaming its log lines; Ctrl-C asks SageMaker to stop it."""
        parser = LogParser()
        seen: dict = {}
        status = None

        def on_line(host: str, message: str, ts: int) -> None:
            parser.feed(message, host=host, timestamp_ms=ts)
            if self.logs:
                log.info("%s | %s", host, message.replace("#011", "\t"))

        try:
            while True:
                try:
                    desc = self._call("sagemaker", "describe_training_job", TrainingJobName=name)
                except BackendError as exc:
                    raise BackendError(
                        f"lost track of training job {name} ({exc}); the job itself still runs on SageMaker and is "
                        f"billed. Re-attach when the problem is fixed: SageMakerBackend(...).attach({name!r}), or "
                        f"stop it: aws sagemaker stop-training-job --training-job-name {name}") from exc
                now = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
                if now != status:
                    log.info("%s: %s%s", name, now[0], f" / {now[1]}" if now[1] else "")
                    status = now
                self._drain_logs(name, seen, on_line)
                if now[0] in _TERMINAL:
                    break
                self.sleep(self.poll_interval)
        except KeyboardInterrupt:
            self._stop(name)
            raise
        self._drain_logs(name, seen, on_line)
        if desc["TrainingJobStatus"] != "Completed":
            reason = desc.get("FailureReason", "no reason given")
            raise TrainingError(f"training job {name} ended with status {desc['TrainingJobStatus']}: {reason}",
                                job_name=name, status=desc["TrainingJobStatus"], failure_reason=reason)
        return desc, parser

    def _drain_logs(self, name: str, seen: dict[str, Any], on_line: Callable[[str, str, int], None]) -> None:
        try:
            stream_job_logs(self.client("logs"), name, seen, on_line)
        except Exception as exc:  # logs are best effort; the job status decides success
            log.debug("could not read logs of %s: %s", name, exc)

    def _stop(self, name: str) -> None:
        log.warning("interrupted: asking SageMaker to stop training job %s ...", name)
        try:
            self._call("sagemaker", "stop_training_job", TrainingJobName=name)
            log.warning("stop requested for %s; it ends within minutes and is billed until then", name)
        except BackendError as exc:
            log.error("could not stop %s (%s); stop it yourself: aws sagemaker stop-training-job "
                      "--training-job-name %s", name, exc, name)

    # ----------------------------------------------------------------- inference
    def predictor(self, model: Model, **kwargs: Any):
        """A local predictor over the downloaded artifact (no endpoint, no cost); use ``deploy`` for an endpoint."""
        from ...model.predictor import LocalPredictor

        if model.local_artifact is None:
            raise UsageError("this model has no downloaded artifact; use deploy() for an endpoint predictor")
        return LocalPredictor(model.local_artifact, class_names=model.class_names, **kwargs)

    def deploy(self, model: Model | str, *, instance_type: str = "ml.m5.xlarge", initial_instance_count: int = 1,
               endpoint_name: str | None = None, wait: bool = True):
        """Create model, endpoint config and endpoint for ``model`` (or an ``s3://.../model.tar.gz``).

        On any failure (a refused call, an endpoint that goes ``Failed``, Ctrl-C while waiting for ``InService``) what
        this call created is deleted before the error is raised, so nothing is left to bill.
        """
        from .endpoint import SageMakerPredictor

        artifact = model if isinstance(model, str) else model.artifact
        self.check_artifact(artifact)
        class_names = None if isinstance(model, str) else model.class_names
        thresholds = None if isinstance(model, str) else model.thresholds
        name = endpoint_name or rq.job_name(f"{self.base_job_name}-ep")
        image = self.image()
        role = self.role_arn()
        pred = SageMakerPredictor(self, name, class_names=class_names, owns_resources=True, thresholds=thresholds)
        created: list[str] = []
        try:
            self._call("sagemaker", "create_model", **self.resources.model(name=name, role=role, image=image,
                                                                            artifact=artifact))
            created.append("model")
            self._call("sagemaker", "create_endpoint_config", **self.resources.endpoint_config(name=name, variants=[
                {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": initial_instance_count,
                 "InstanceType": instance_type}]))
            created.append("endpoint_config")
            self._call("sagemaker", "create_endpoint", **self.resources.endpoint(name=name, config=name))
            created.append("endpoint")
            log.info("creating endpoint %s (%d x %s)", name, initial_instance_count, instance_type)
            if wait:
                pred.wait_in_service()
        except BaseException:
            log.warning("deploying %s failed; deleting the %s it created", name, ", ".join(created) or "nothing")
            pred.delete(only=created)
            raise
        return pred

    def batch_transform(self, model: Model | str, data: Dataset | str, *, instance_type: str = "ml.m5.xlarge",
                        instance_count: int = 1, output_path: str | None = None,
                        wait: bool = True) -> list[list[float]] | dict | str:
        """Batch transform with jsonlines output (``{"prediction": [...]}`` per image).

        ``data`` is a Dataset (uploaded; predictions come back as a list in the dataset's order) or an ``s3://``
        prefix of images (predictions come back as ``{input s3 URI: probabilities}``). ``wait=False`` returns the
        transform job's name at once.
        """
        from .endpoint import call_quietly, ensure_model

        name = rq.job_name(f"{self.base_job_name}-bt")
        if not isinstance(model, str) or model.startswith("s3://"):  # (otherwise: the name of a SageMaker model)
            self.check_artifact(model if isinstance(model, str) else model.artifact)
        inputs = self._transform_input(name, data)  # checked (or uploaded) before any SageMaker resource is made
        model_name, created_model = ensure_model(self, model, name)
        try:
            return self._transform(name, model_name, data, inputs, instance_type=instance_type,
                                   instance_count=instance_count, output_path=output_path, wait=wait,
                                   num_classes=None if isinstance(model, str) else len(model.class_names))
        finally:
            if created_model and wait:
                call_quietly(self, "delete_model", ModelName=model_name)

    def _transform_input(self, name: str, data: Dataset | str) -> tuple[str, str, str, list[str]]:
        """``(input URI, bucket, prefix, keys)`` of the images to transform: an s3:// prefix's objects, or the
        dataset's images uploaded under ``<prefix>/transform/<job>/input/``."""
        from .s3 import list_objects

        s3 = self.client("s3")
        if isinstance(data, str):
            in_bucket, in_prefix = parse_s3_uri(data, what="transform input")
            keys = [k for k in list_objects(s3, data, what="the transform input") if not k.endswith("/")]
            if not keys:
                raise BackendError(f"no objects under {data}; nothing to transform. Give the s3:// prefix of the "
                                   f"images (aws s3 ls {data}).")
            return data, in_bucket, in_prefix, keys
        in_bucket, in_prefix = self._need_bucket(), f"{self.prefix}/transform/{name}/input/"
        keys = [f"{in_prefix}{p}" for p in data.paths]
        sync_files(s3, [(data.image_path(i), k) for i, k in enumerate(keys)], bucket=in_bucket,
                   prefix=in_prefix, progress=self.progress, desc="transform images")
        return f"s3://{in_bucket}/{in_prefix}", in_bucket, in_prefix, keys

    def _transform(self, name: str, model_name: str, data: Dataset | str, inputs: tuple[str, str, str, list[str]],
                   *, instance_type: str, instance_count: int, output_path: str | None, wait: bool,
                   num_classes: int | None = None):
        import json

        from .s3 import read_object

        s3 = self.client("s3")
        input_uri, in_bucket, in_prefix, keys = inputs
        out = output_path or f"{self.base_uri}/transform/{name}/output"
        self._call("sagemaker", "create_transform_job", **self.resources.apply_to_transform_job(dict(
            TransformJobName=name, ModelName=model_name,
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                            "ContentType": "application/x-image"},
            TransformOutput={"S3OutputPath": out, "Accept": "application/jsonlines"},
            TransformResources={"InstanceType": instance_type, "InstanceCount": instance_count})))
        log.info("started transform job %s over %d images", name, len(keys))
        if not wait:
            return name
        from botocore.exceptions import WaiterError

        waiter = self.client("sagemaker").get_waiter("transform_job_completed_or_stopped")
        try:  # boto3's waiter; the job's own status below decides success
            waiter.wait(TransformJobName=name, WaiterConfig={
                "Delay": self.poll_interval, "MaxAttempts": max(1, int(7 * 24 * 3600 / max(self.poll_interval, 1e-3)))})
        except WaiterError:
            pass
        except BaseException:
            from .endpoint import call_quietly

            log.warning("interrupted: stopping transform job %s", name)
            call_quietly(self, "stop_transform_job", TransformJobName=name)
            raise
        desc = self._call("sagemaker", "describe_transform_job", TransformJobName=name)
        if desc["TransformJobStatus"] != "Completed":
            raise TrainingError(f"transform job {name} ended with status {desc['TransformJobStatus']}: "
                                f"{desc.get('FailureReason', 'no reason given')}", job_name=name,
                                status=desc["TransformJobStatus"], failure_reason=desc.get("FailureReason"))
        out_bucket, out_prefix = parse_s3_uri(out)
        base = in_prefix if in_prefix.endswith("/") or not in_prefix else in_prefix.rsplit("/", 1)[0] + "/"
        from ..base import check_scores

        preds: dict[str, list[float]] = {}
        for key in keys:
            rel = key[len(base):]  # SageMaker writes <output>/<path relative to the input prefix>.out
            source = f"s3://{in_bucket}/{key}"
            out_uri = f"s3://{out_bucket}/{out_prefix.rstrip('/')}/{rel}.out"
            body = read_object(s3, out_uri, what=f"the output of transform job {name} for {source}",
                               if_missing=f"the job wrote no prediction for it; see the job's logs: aws sagemaker "
                                          f"describe-transform-job --transform-job-name {name}")
            where = f"transform job {name}, {out_uri}"
            try:
                line = (body.decode().strip().splitlines() or [""])[0]
                answer = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BackendError(f"{where}: not a JSON line ({body[:100]!r}); the model must be one of the built-in "
                                   f"algorithm, which writes {{\"prediction\": [...]}}.") from exc
            if not isinstance(answer, dict) or "prediction" not in answer:
                raise BackendError(f"{where}: expected {{\"prediction\": [...]}}, got {line[:100]!r}; the model must "
                                   f"be one of the built-in algorithm.")
            expected = len(next(iter(preds.values()))) if preds else num_classes
            preds[source] = check_scores(answer["prediction"], expected=expected, where=where,
                                         fix="the model must be one of the built-in algorithm")
        return preds if isinstance(data, str) else list(preds.values())
