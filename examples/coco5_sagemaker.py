"""The AWS MS-COCO multi-label example with multilabel_ic: COCO val2017 -> 5 categories -> .lst channels ->
the built-in algorithm on SageMaker -> endpoint -> prediction -> clean-up.

    python examples/coco5_sagemaker.py --annotations annotations/instances_val2017.json --images val2017 \
        --role arn:aws:iam::123456789012:role/SageMakerRole --bucket my-bucket --region us-east-1

It costs money on a real account (a GPU training job and an endpoint, deleted at the end). Without COCO at hand,
``--synthetic 300`` uses generated COCO-format data instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from multilabel_ic import Dataset, Hyperparameters, Trainer, setup_logging
from multilabel_ic.backends.sagemaker import SageMakerBackend
from multilabel_ic.data import COCO5, generate_coco

# The notebook's hyperparameters, unchanged.
COCO5_HYPERPARAMETERS = dict(num_layers=18, use_pretrained_model=1, image_shape="3,224,224", num_classes=5,
                             mini_batch_size=128, resize=256, epochs=5, learning_rate=0.001,
                             num_training_samples=2500, use_weighted_loss=1,
                             augmentation_type="crop_color_transform", precision_dtype="float32", multi_label=1)


def run(*, annotations: Path, images: Path, role: str, bucket: str, region: str, prefix: str = "ic-multilabel",
        train_size: int = 2500, instance_type: str = "ml.p3.2xlarge", endpoint_instance_type: str = "ml.m5.xlarge",
        output_dir: Path = Path("runs/coco5-sagemaker"), session=None, poll_interval: float = 30.0,
        overrides: dict | None = None) -> dict:
    data = Dataset.from_coco(annotations, images=images, categories=COCO5)
    print(data.summary())
    train, val = data.split(train_size=min(train_size, len(data) - 1), seed=0)
    hp = Hyperparameters(**{**COCO5_HYPERPARAMETERS, **(overrides or {})})
    backend = SageMakerBackend(role=role, bucket=bucket, prefix=prefix, region=region, session=session,
                               instance_type=instance_type, volume_size=50, max_run=360000,
                               poll_interval=poll_interval)
    model = Trainer(hp, backend=backend, output_dir=output_dir).fit(train, validation=val)
    print("training job:", model.info["job_name"], "artifact:", model.artifact)
    for epoch in model.metrics["epochs"]:
        print(f"epoch {epoch['epoch']}: train accuracy {epoch.get('train_accuracy')}, "
              f"validation accuracy {epoch.get('validation_accuracy')}")
    image = val.image_path(0).read_bytes()
    with model.deploy(instance_type=endpoint_instance_type, initial_instance_count=1) as endpoint:
        probs = endpoint.predict(image)
        for name, p in zip(model.class_names, probs):
            print(f"{name}: {p:.4f}")
    return {"job_name": model.info["job_name"], "probabilities": probs, "endpoint": endpoint.endpoint_name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--synthetic", type=int, default=0, help="use N synthetic images instead of COCO")
    ap.add_argument("--role", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--prefix", default="ic-multilabel")
    ap.add_argument("--instance-type", default="ml.p3.2xlarge")
    args = ap.parse_args(argv)
    setup_logging(logging.INFO)
    if args.synthetic:
        args.annotations, args.images = generate_coco("synthetic-coco", num_images=args.synthetic)
    if not args.annotations or not args.images:
        ap.error("pass --annotations and --images (or --synthetic N)")
    run(annotations=args.annotations, images=args.images, role=args.role, bucket=args.bucket, region=args.region,
        prefix=args.prefix, instance_type=args.instance_type)
    return 0


if __name__ == "__main__":
    sys.exit(main())
