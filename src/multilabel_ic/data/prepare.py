"""Data preparation shared by the CLI and the demo: COCO (downloaded or local) or synthetic data -> splits ->
.lst, RecordIO and augmented-manifest files for both splits, with a printed class summary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_write_text, ensure_dir
from ..download import download, extract_zip
from ..exceptions import UsageError
from .dataset import Dataset
from .synthetic import COCO5, generate_coco

__all__ = ["PreparedData", "prepare_dataset", "download_coco", "COCO_URLS"]

log = logging.getLogger(__name__)

# The files the AWS MS-COCO example downloads.
COCO_BASE_URL = "http://images.cocodataset.org"
COCO_URLS = {"images": "zips/val2017.zip", "annotations": "annotations/annotations_trainval2017.zip"}


@dataclass
class PreparedData:
    train: Dataset
    validation: Dataset
    files: dict[str, Path]

    def describe(self) -> str:
        lines = ["train split:", self.train.summary(), "", "validation split:", self.validation.summary(), "",
                 "files written:"]
        lines += [f"  {k:<20} {v}" for k, v in self.files.items()]
        return "\n".join(lines)


def download_coco(dest: str | Path, *, base_url: str = COCO_BASE_URL, progress: bool = True,
                  checksums: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Download and unzip COCO val2017 images and annotations (resumable); return (annotation json, image dir)."""
    dest = Path(dest)
    checksums = checksums or {}
    for key, rel in COCO_URLS.items():
        name = rel.rsplit("/", 1)[-1]
        marker = dest / f".{name}.extracted"
        if marker.exists():
            continue
        archive = download(f"{base_url.rstrip('/')}/{rel}", dest / "downloads" / name,
                           sha256=checksums.get(key), progress=progress)
        extract_zip(archive, dest)
        atomic_write_text(marker, "ok\n")
    return dest / "annotations" / "instances_val2017.json", dest / "val2017"


def prepare_dataset(output: str | Path, *, source: str = "synthetic", annotations: str | Path | None = None,
                    images: str | Path | None = None, categories: Sequence[str] = tuple(COCO5),
                    num_images: int = 600, seed: int = 0, train_size: float | int = 0.8, stratify: bool = True,
                    formats: Sequence[str] = ("lst", "recordio", "manifest"), image_prefix: str | None = None,
                    progress: bool = True) -> PreparedData:
    """Build the dataset, split it deterministically and write the requested formats under ``output``."""
    out = Path(output)
    if source == "synthetic":
        ensure_dir(out)
        annotations, images = generate_coco(out / "synthetic", num_images=num_images, seed=seed, progress=progress)
    elif source != "coco":
        raise UsageError(f"source must be 'synthetic' or 'coco', got {source!r}")
    elif annotations is None or images is None:
        raise UsageError("source='coco' needs annotations= and images= (or use download_coco first)")
    data = Dataset.from_coco(annotations, images=images, categories=list(categories))
    train, val = data.split(train_size, seed=seed, stratify=stratify)  # checked before anything is written
    ensure_dir(out)
    files: dict[str, Path] = {"annotations": Path(annotations), "images": Path(images)}
    if "lst" in formats:
        files["train.lst"] = train.to_lst(out / "train.lst")
        files["validation.lst"] = val.to_lst(out / "validation.lst")
    if "recordio" in formats:
        # the same 0..N-1 indices as the .lst files written beside them
        files["train.rec"], files["train.idx"] = train.to_recordio(out / "train.rec", progress=progress,
                                                                   renumber=True)
        files["validation.rec"], files["validation.idx"] = val.to_recordio(out / "validation.rec", progress=progress,
                                                                           renumber=True)
    if "manifest" in formats:
        prefix = image_prefix or Path(images).resolve().as_uri() + "/"
        files["train.manifest"] = train.to_manifest(out / "train.manifest", image_prefix=prefix)
        files["validation.manifest"] = val.to_manifest(out / "validation.manifest", image_prefix=prefix)
    meta = {"class_names": data.class_names, "num_train": len(train), "num_validation": len(val), "seed": seed,
            "train_size": train_size, "stratify": stratify, "images": str(images), "annotations": str(annotations)}
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    files["dataset.json"] = out / "dataset.json"
    return PreparedData(train, val, files)
