"""The AWS MS-COCO multi-label example on your own machine: COCO val2017 -> 5 categories -> the built-in algorithm
re-implemented in PyTorch (CUDA when present) -> evaluation -> prediction.

    multilabel-ic prepare coco --download --output data/            # or use your own copy of val2017
    python examples/coco5_local.py --annotations data/coco/annotations/instances_val2017.json \
        --images data/coco/val2017 --pretrained resnet-18-0000.params

Without the ImageNet weights at hand, ``--scratch`` trains from scratch (use_pretrained_model=0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from multilabel_ic import Dataset, Hyperparameters, Trainer, setup_logging
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.data import COCO5

# The notebook's hyperparameters, unchanged: the same object would go to SageMaker.
COCO5_HYPERPARAMETERS = dict(num_layers=18, use_pretrained_model=1, image_shape="3,224,224", num_classes=5,
                             mini_batch_size=128, resize=256, epochs=5, learning_rate=0.001,
                             num_training_samples=2500, use_weighted_loss=1,
                             augmentation_type="crop_color_transform", precision_dtype="float32", multi_label=1)


def run(*, annotations: Path, images: Path, output_dir: Path, train_size: int = 2500, pretrained: str | None = None,
        device: str | None = None, overrides: dict | None = None, progress: bool = True) -> dict:
    data = Dataset.from_coco(annotations, images=images, categories=COCO5)
    print(data.summary())
    train, val = data.split(train_size=min(train_size, len(data) - 1), seed=0)
    hp = Hyperparameters(**{**COCO5_HYPERPARAMETERS, **(overrides or {})})
    options = LocalOptions(pretrained=pretrained, progress=progress)
    model = Trainer(hp, backend="local", output_dir=output_dir, device=device, options=options).fit(
        train, validation=val)
    final = model.metrics["final"]
    print(f"held-out mAP {final['mAP']:.4f}, per class: " +
          ", ".join(f"{k} {v:.3f}" for k, v in final["per_class_AP"].items() if v is not None))
    probs = model.predictor().predict(val.image_path(0).read_bytes())
    print(json.dumps(dict(zip(model.class_names, [round(p, 4) for p in probs]))))
    return {"metrics": model.metrics, "probabilities": probs, "artifact": model.artifact}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--output", type=Path, default=Path("runs/coco5-local"))
    ap.add_argument("--pretrained", default=None, help="resnet-18-0000.params file or URL (else the zoo/cache)")
    ap.add_argument("--scratch", action="store_true", help="use_pretrained_model=0")
    ap.add_argument("--float16", action="store_true", help="precision_dtype=float16 (mixed precision on CUDA)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    setup_logging()
    overrides = {}
    if args.scratch:
        overrides["use_pretrained_model"] = 0
    if args.float16:
        overrides["precision_dtype"] = "float16"
    run(annotations=args.annotations, images=args.images, output_dir=args.output, pretrained=args.pretrained,
        device=args.device, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
