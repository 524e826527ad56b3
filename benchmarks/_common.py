"""Shared set-up for the benchmark scripts: the MS-COCO configuration on synthetic COCO-format data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from multilabel_ic import Dataset, Hyperparameters, setup_logging
from multilabel_ic.bench.common import machine_info
from multilabel_ic.bench.run import COCO5_BENCH_HP
from multilabel_ic.data import COCO5, generate_coco


def setup(out: Path, num_images: int, batch: int | None = None) -> tuple[Hyperparameters, Dataset]:
    setup_logging()
    hp = dict(COCO5_BENCH_HP)
    if batch:
        hp["mini_batch_size"] = batch
    ann, images = generate_coco(out / "data", num_images=num_images, seed=0)
    return Hyperparameters(**hp), Dataset.from_coco(ann, images=images, categories=COCO5)


def write(out: Path, name: str, result: dict, device: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(device), **result}
    (out / name).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out / name}", file=sys.stderr)
