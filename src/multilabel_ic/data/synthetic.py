"""A synthetic COCO-format dataset: real JPEG files with drawn objects and an instances JSON pycocotools reads.

Five categories mirror the MS-COCO example (person, bicycle, car, motorcycle, airplane, with COCO's ids 1-5), plus a
distractor (traffic light, id 10) that is not selected. Objects are drawn over cluttered gradient backgrounds with a
realistic imbalance (person is frequent, airplane rare) and co-occurrence (bicycles and motorcycles come with riders).
Everything is a function of the seed: the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from .._io import atomic_write_text

__all__ = ["generate_coco", "CATEGORIES", "COCO5"]

CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 4, "name": "motorcycle", "supercategory": "vehicle"},
    {"id": 5, "name": "airplane", "supercategory": "vehicle"},
    {"id": 10, "name": "traffic light", "supercategory": "outdoor"},
]
COCO5 = ["person", "bicycle", "car", "motorcycle", "airplane"]
_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 360), (612, 612), (375, 500)]
_BASE_P = {"person": 0.55, "bicycle": 0.14, "car": 0.30, "motorcycle": 0.12, "airplane": 0.10, "traffic light": 0.2}


def _sample_categories(rng: np.random.Generator) -> list[str]:
    present = {name for name, p in _BASE_P.items() if rng.random() < p}
    if "airplane" in present and rng.random() < 0.7:  # airplanes are mostly alone in the sky
        present -= {"car", "bicycle", "motorcycle", "traffic light"}
    if ("bicycle" in present or "motorcycle" in present) and rng.random() < 0.75:
        present.add("person")  # riders
    if not present - {"traffic light"} and rng.random() < 0.9:
        present.add(str(rng.choice(COCO5, p=[0.45, 0.12, 0.23, 0.1, 0.1])))
    return sorted(present)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    c1, c2 = rng.integers(60, 200, size=(2, 3))
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (c1 * (1 - t) + c2 * t).astype(np.float32) * np.ones((1, w, 1), np.float32)
    img += rng.normal(0, 8, size=(h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(8, 20))):  # clutter: muted lines, boxes and blobs
        color = tuple(int(v) for v in rng.integers(70, 180, size=3))
        x1, x2 = (int(v) for v in rng.integers(0, w, 2))
        y1, y2 = (int(v) for v in rng.integers(0, h, 2))
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(img, (x1, y1), (x2, y2), color, int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.rectangle(img, (x1, y1), (x1 + int(rng.integers(10, 60)), y1 + int(rng.integers(10, 60))), color, -1)
        else:
            cv2.ellipse(img, (x1, y1), (int(rng.integers(5, 40)), int(rng.integers(5, 40))), 0, 0, 360, color, -1)
    return img


def _jit(rng, color, amount=25):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _draw(img: np.ndarray, name: str, x: int, y: int, s: int, rng: np.random.Generator) -> list[int]:
    """Draw one object with its top-left at (x, y) and size scale s; return its COCO bbox [x, y, w, h]."""
    if name == "person":
        w, h = s // 3, s
        cv2.circle(img, (x + w // 2, y + w // 3), max(w // 3, 2), _jit(rng, (225, 180, 150)), -1)
        cv2.rectangle(img, (x + w // 6, y + w * 2 // 3), (x + w * 5 // 6, y + h * 3 // 5), _jit(rng, (210, 30, 40)), -1)
        legs = _jit(rng, (40, 40, 110))
        cv2.line(img, (x + w // 3, y + h * 3 // 5), (x + w // 4, y + h), legs, max(w // 6, 2))
        cv2.line(img, (x + w * 2 // 3, y + h * 3 // 5), (x + w * 3 // 4, y + h), legs, max(w // 6, 2))
    elif name == "bicycle":
        w, h = s, s * 3 // 5
        r = h // 3
        col = _jit(rng, (30, 150, 60))
        cv2.circle(img, (x + r, y + h - r), r, col, max(s // 12, 3))
        cv2.circle(img, (x + w - r, y + h - r), r, col, max(s // 12, 3))
        pts = np.array([[x + r, y + h - r], [x + w // 2, y + h // 3], [x + w - r, y + h - r]], np.int32)
        cv2.polylines(img, [pts], True, col, max(s // 12, 3))
        cv2.line(img, (x + w // 2, y + h // 3), (x + w // 2, y + h // 8), col, max(s // 12, 3))
    elif name == "car":
        w, h = s, s // 2
        body = _jit(rng, (30, 70, 210))
        cv2.rectangle(img, (x, y + h // 3), (x + w, y + h * 4 // 5), body, -1)
        cv2.rectangle(img, (x + w // 5, y), (x + w * 4 // 5, y + h // 3), body, -1)
        cv2.rectangle(img, (x + w // 4, y + h // 12), (x + w * 3 // 4, y + h // 3), _jit(rng, (190, 220, 240)), -1)
        for cx in (x + w // 5, x + w * 4 // 5):
            cv2.circle(img, (cx, y + h * 4 // 5), h // 5, (20, 20, 20), -1)
    elif name == "motorcycle":
        w, h = s * 4 // 5, s // 2
        r = h // 4
        for cx in (x + r, x + w - r):
            cv2.circle(img, (cx, y + h - r), r, (15, 15, 15), -1)
        pts = np.array([[x + r, y + h - r], [x + w // 3, y + h // 3], [x + w * 3 // 4, y + h // 3],
                        [x + w - r, y + h - r]], np.int32)
        cv2.fillPoly(img, [pts], _jit(rng, (240, 140, 20)))
        cv2.line(img, (x + w * 3 // 4, y + h // 3), (x + w * 4 // 5, y), (90, 90, 90), max(s // 30, 2))
    elif name == "airplane":
        w, h = s, s * 2 // 3
        col = _jit(rng, (235, 235, 245), 10)
        cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, max(h // 8, 2)), 0, 0, 360, col, -1)
        wing = np.array([[x + w // 2 - w // 10, y + h // 2], [x + w // 2 + w // 8, y], [x + w // 2 + w // 5, y],
                         [x + w // 2 + w // 10, y + h // 2], [x + w // 2 + w // 5, y + h],
                         [x + w // 2 + w // 8, y + h]], np.int32)
        cv2.fillPoly(img, [wing], col)
        tail = np.array([[x, y + h // 2], [x + w // 12, y + h // 5], [x + w // 6, y + h // 2]], np.int32)
        cv2.fillPoly(img, [tail], col)
        cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, max(h // 8, 2)), 0, 0, 360, (60, 60, 80), 1)
    elif name == "traffic light":
        w, h = s // 4, s * 2 // 3
        cv2.rectangle(img, (x, y), (x + w, y + h), (30, 30, 30), -1)
        for k, c in enumerate([(220, 30, 30), (230, 200, 30), (30, 200, 60)]):
            cv2.circle(img, (x + w // 2, y + h * (2 * k + 1) // 6), max(w // 3, 2), c, -1)
    else:
        raise ValueError(name)
    return [int(x), int(y), int(w), int(h)]


def _make_image(seed: int, i: int) -> tuple[np.ndarray, list[tuple[str, list[int]]]]:
    rng = np.random.default_rng([seed, i])
    w, h = _SIZES[int(rng.integers(len(_SIZES)))]
    img = _background(rng, w, h)
    objects = []
    for name in _sample_categories(rng):
        count = int(rng.integers(1, 4 if name == "person" else 3))
        for _ in range(count):
            s = int(rng.uniform(0.3, 0.6) * min(w, h))
            x = int(rng.integers(0, max(w - s, 1)))
            y = int(rng.integers(0, max(h - s, 1)))
            objects.append((name, _draw(img, name, x, y, s, rng)))
    return img, objects


def generate_coco(out_dir: str | os.PathLike, *, num_images: int = 600, seed: int = 0, quality: int = 88,
                  images_subdir: str = "images", progress: bool = False) -> tuple[Path, Path]:
    """Write ``num_images`` JPEGs under ``out_dir/images`` and ``out_dir/annotations/instances.json``.

    Returns ``(annotation_json, images_dir)``. Files already written by the same seed are kept (idempotent).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    img_dir = out / images_subdir
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_path = out / "annotations" / "instances.json"
    by_name = {c["name"]: c["id"] for c in CATEGORIES}
    images: list[dict] = []
    annotations: list[dict] = []
    for i in tqdm(range(num_images), desc="synthetic images", unit="img", disable=not progress):
        image_id = 100000 + i
        file_name = f"{image_id:012d}.jpg"
        img, objects = _make_image(seed, i)
        h, w = img.shape[:2]
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        target = img_dir / file_name
        if not target.exists() or target.stat().st_size != len(buf):
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, target)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1})
        for name, (bx, by, bw, bh) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": by_name[name],
                "bbox": [bx, by, bw, bh], "area": float(bw * bh), "iscrowd": 0,
                "segmentation": [[bx, by, bx + bw, by, bx + bw, by + bh, bx, by + bh]],
            })
    doc = {
        "info": {"description": "multilabel_ic synthetic COCO-format data", "version": "1.0", "year": 2026,
                 "seed": seed},
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "images": images, "annotations": annotations, "categories": CATEGORIES,
    }
    atomic_write_text(ann_path, json.dumps(doc))
    return ann_path, img_dir
