"""Scaling of local training over processes (DDP under torchrun): images/s with 1 and N processes on one host,
the same global batch, measured side by side in one run. ``multilabel-ic bench --scaling`` /
``benchmarks/bench_scaling.py``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from .common import machine_info

__all__ = ["run_scaling"]

log = logging.getLogger("multilabel_ic.bench")


def _train(lists: dict[str, Path], root: Path, out: Path, procs: int, hp: dict[str, Any], device: str | None) -> dict:
    cmd = [sys.executable, "-m", "multilabel_ic", "--quiet", "train", "--train-lst", str(lists["train"]),
           "--validation-lst", str(lists["validation"]), "--images", str(root), "--classes",
           "person,bicycle,car,motorcycle,airplane", "--output", str(out), "--workers", "0",
           *[f"--hp={k}={v}" for k, v in hp.items()]]
    if procs > 1:
        cmd += ["--nproc-per-node", str(procs)]
    if device:
        cmd += ["--device", device]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def run_scaling(out_dir: Path, *, processes: tuple[int, ...] = (1, 2), num_images: int = 256, epochs: int = 3,
                device: str | None = None) -> dict:
    """Train the same configuration with each process count; report images/s (median over the epochs after the
    first), the speed-up over one process and the scaling efficiency (speed-up / processes)."""
    from ..data import COCO5, Dataset, generate_coco

    hp = dict(num_layers=18, image_shape="3,64,64", resize=72, mini_batch_size=32, epochs=epochs, multi_label=1,
              optimizer="adam", learning_rate=0.001, augmentation_type="crop_color_transform")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ann, images = generate_coco(work / "data", num_images=num_images, seed=0)
        data = Dataset.from_coco(ann, images=images, categories=COCO5)
        train, val = data.split(0.8, seed=0)
        lists = {"train": train.to_lst(work / "train.lst"), "validation": val.to_lst(work / "validation.lst")}
        for procs in processes:
            metrics = _train(lists, data.root, work / f"p{procs}", procs, hp, device)
            later = [e["images_per_sec"] for e in metrics["epochs"][1:]] or [metrics["epochs"][0]["images_per_sec"]]
            rows.append({"processes": procs, "images_per_sec": float(np.median(later)),
                         "device": metrics.get("device_name")})
    base = float(rows[0]["images_per_sec"])
    for r in rows:
        speedup = float(r["images_per_sec"]) / base
        r.update(speedup=speedup, efficiency=speedup / int(r["processes"]))
    report = {"machine": machine_info(device), "config": {**hp, "training_images": len(train)}, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "scaling.json", json.dumps(report, indent=2, default=str) + "\n")
    print(f"{'processes':>9} {'img/s':>8} {'speed-up':>9} {'efficiency':>10}")
    for r in rows:
        print(f"{r['processes']:>9} {r['images_per_sec']:>8.1f} {r['speedup']:>9.2f} {r['efficiency']:>10.2f}")
    print(f"wrote {out_dir / 'scaling.json'}")
    return report
