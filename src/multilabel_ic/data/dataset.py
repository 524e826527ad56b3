"""``Dataset``: an ordered list of (image path, multi-hot label vector) with class names and an image root.

It is built from COCO annotations, a .lst file, a RecordIO file or an augmented manifest, and written back to any of
those formats. Paths are stored relative to ``root`` (the SageMaker image channel).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..exceptions import DataError
from . import lst as lst_mod
from . import manifest as manifest_mod
from . import recordio
from .split import iterative_stratification, random_split

MAX_CLASS_NAME = 1024  # characters; model-metadata.json holds the same bound

__all__ = ["Dataset"]


class Dataset:
    """Multi-label image records: ``paths[i]`` (relative to ``root``) with multi-hot ``labels[i]``."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, class_names: Sequence[str], *,
                 root: str | os.PathLike = ".", indices: Sequence[int] | np.ndarray | None = None):
        labels = np.asarray(labels, dtype=np.uint8)
        if labels.ndim != 2 or labels.shape[0] != len(paths):
            raise DataError(f"labels must have shape (len(paths)={len(paths)}, num_classes); got {labels.shape}")
        if labels.shape[1] != len(class_names):
            raise DataError(f"labels have {labels.shape[1]} columns but {len(class_names)} class names were given")
        if labels.size and labels.max() > 1:
            raise DataError("labels must be multi-hot (0 or 1)")
        names = [str(c) for c in class_names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"class names must be unique; {', '.join(map(repr, dupes))} appear more than once in "
                            f"{names}. Give every label column its own name.")
        odd = [n for n in names if not n or len(n) > MAX_CLASS_NAME]
        if odd:
            raise DataError(f"class name {odd[0][:40]!r}{'...' if len(odd[0]) > 40 else ''} ({len(odd[0])} characters)"
                            f": every class name must have 1 to {MAX_CLASS_NAME} characters (the model's metadata "
                            f"keeps them); give it a shorter name.")
        self.paths = [lst_mod.check_relative_path(str(p), where=f"dataset entry {i}") for i, p in enumerate(paths)]
        self.labels = labels
        self.class_names = [str(c) for c in class_names]
        self.root = Path(root)
        self.indices = np.asarray(indices if indices is not None else range(len(paths)), dtype=np.int64)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Path, np.ndarray]:
        return self.root / self.paths[i], self.labels[i]

    def __iter__(self) -> Iterator[tuple[Path, np.ndarray]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Dataset({len(self)} images, {self.num_classes} classes {self.class_names}, root={str(self.root)!r})"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, i: int) -> Path:
        return self.root / self.paths[i]

    def check_images(self, *, what: str = "dataset") -> None:
        """Fail early, naming the files, if any image is missing or empty (a stat per file; nothing is decoded)."""
        bad = []
        for rel in self.paths:
            p = self.root / rel
            try:
                if p.stat().st_size == 0:
                    bad.append(f"{p} (empty)")
            except OSError:
                bad.append(f"{p} (missing)")
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(f"{what}: {len(bad)} of {len(self)} images cannot be used: {', '.join(bad[:5])}{more}. "
                            f"Check the image root ({self.root}) or remove these entries.")

    def subset(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        picked = np.asarray(rows, dtype=np.int64)
        return Dataset([self.paths[i] for i in picked], self.labels[picked], self.class_names, root=self.root,
                       indices=self.indices[picked])

    def split(self, train_size: float | int, *, seed: int = 0, stratify: bool = False) -> tuple[Dataset, Dataset]:
        """Deterministic split into (train, validation); ``stratify=True`` keeps rare classes on both sides."""
        if stratify:
            a, b = iterative_stratification(self.labels, train_size, seed)
        else:
            a, b = random_split(len(self), train_size, seed)
        return self.subset(a), self.subset(b)

    # ------------------------------------------------------------------ statistics
    def class_counts(self) -> dict[str, int]:
        return dict(zip(self.class_names, (int(c) for c in self.labels.sum(axis=0))))

    def cooccurrence(self) -> np.ndarray:
        """(C, C) matrix: images that contain both class i and class j (the diagonal holds the class counts)."""
        lab = self.labels.astype(np.int64)
        return lab.T @ lab

    def summary(self) -> str:
        """A printable table of per-class counts, label cardinality and co-occurrence."""
        n = len(self)
        counts = self.labels.sum(axis=0)
        width = max(8, *(len(c) for c in self.class_names))
        lines = [f"{n} images, {self.num_classes} classes, {self.labels.sum(axis=1).mean() if n else 0:.2f} "
                 f"labels per image, {int((self.labels.sum(axis=1) == 0).sum())} with no label"]
        lines.append(f"{'class':<{width}} {'images':>7} {'share':>6}")
        for name, c in zip(self.class_names, counts):
            lines.append(f"{name:<{width}} {int(c):>7} {c / max(n, 1):>6.1%}")
        co = self.cooccurrence()
        lines.append("co-occurrence (images with both):")
        lines.append(" " * (width + 1) + " ".join(f"{c[:7]:>7}" for c in self.class_names))
        for name, row in zip(self.class_names, co):
            lines.append(f"{name:<{width}} " + " ".join(f"{int(v):>7}" for v in row))
        return "\n".join(lines)

    # ------------------------------------------------------------------ COCO
    @classmethod
    def from_coco(cls, annotation_json: str | os.PathLike, *, images: str | os.PathLike,
                  categories: Sequence[str | int]) -> Dataset:
        """Images that contain at least one of ``categories``, labelled multi-hot in the order given.

        Reproduces the AWS MS-COCO multi-label example's selection and order: for each category in turn, the images
        pycocotools' ``getImgIds(catIds=...)`` returns, each image kept once at its first appearance. (The example's
        running label sum aliases the first row and writes a 2 into it; that bug is not reproduced.)
        """
        from pycocotools.coco import COCO

        from .._io import quiet_stdout

        ann = Path(annotation_json)
        coco = _load_coco(ann, COCO, quiet_stdout)
        by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
        cat_ids, names = [], []
        for c in categories:
            if isinstance(c, str):
                if c not in by_name:
                    raise DataError(f"{ann}: no category named {c!r}. Known: {', '.join(sorted(by_name))}.")
                cat_ids.append(by_name[c])
                names.append(c)
            else:
                if int(c) not in coco.cats:
                    raise DataError(f"{ann}: no category with id {c}.")
                cat_ids.append(int(c))
                names.append(coco.cats[int(c)]["name"])
        image_ids: list[int] = []
        position: dict[int, int] = {}
        rows: list[np.ndarray] = []
        for k, cat_id in enumerate(cat_ids):
            for image_id in coco.getImgIds(catIds=cat_id):
                if image_id not in position:
                    position[image_id] = len(image_ids)
                    image_ids.append(image_id)
                    rows.append(np.zeros(len(cat_ids), dtype=np.uint8))
                rows[position[image_id]][k] = 1
        paths = [coco.loadImgs(i)[0]["file_name"] for i in image_ids]
        labels = np.stack(rows) if rows else np.zeros((0, len(cat_ids)), dtype=np.uint8)
        return cls(paths, labels, names, root=images)

    # ------------------------------------------------------------------ .lst
    @classmethod
    def from_lst(cls, path: str | os.PathLike, *, root: str | os.PathLike, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None, layout: str = "auto") -> Dataset:
        n = len(class_names) if class_names is not None else num_classes
        entries = lst_mod.read_lst(path, num_classes=n, layout=layout)
        if not entries:
            raise DataError(f"{path}: no entries.")
        width = len(entries[0].labels)
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(width)]
        return cls([e.path for e in entries], np.stack([e.labels for e in entries]), names, root=root,
                   indices=[e.index for e in entries])

    def to_lst(self, path: str | os.PathLike, *, layout: str = "multi-hot", renumber: bool = True) -> Path:
        """Write a .lst; ``renumber`` uses 0..N-1 as indices, otherwise the indices the records were read with."""
        idx = range(len(self)) if renumber else self.indices
        return lst_mod.write_lst(path, zip(idx, self.labels, self.paths), layout=layout)

    # ------------------------------------------------------------------ RecordIO
    def to_recordio(self, rec_path: str | os.PathLike, *, pack_label: bool = True, resize: int | None = None,
                    quality: int = 95, progress: bool = False, renumber: bool = False,
                    threads: int | None = None) -> tuple[Path, Path]:
        """Write an im2rec-style .rec/.idx: multi-hot label arrays (``--pack-label``). Each record's id and .idx key
        is its .lst index, as im2rec writes them (so a record maps back to its .lst line); ``renumber`` uses 0..N-1,
        matching ``to_lst(renumber=True)``.

        With ``resize`` the images are re-encoded with their shorter side scaled to it (im2rec ``--resize``);
        otherwise the original encoded bytes are stored unchanged. ``threads`` read and re-encode images in
        parallel (default: all cores); the records are written in order.
        """
        from tqdm.auto import tqdm

        from .._parallel import ordered_map
        from ..images import read_bytes

        def payload(i: int) -> bytes:
            return (read_bytes(self.image_path(i)) if resize is None
                    else _reencode(self.image_path(i), resize, quality))

        def gen():
            payloads = ordered_map(payload, len(self), threads=threads)
            for i, data in enumerate(tqdm(payloads, total=len(self), desc="recordio", disable=not progress,
                                          unit="img")):
                label = self.labels[i].astype(np.float32) if pack_label else float(np.argmax(self.labels[i]))
                rid = i if renumber else int(self.indices[i])
                yield rid, recordio.pack(recordio.IRHeader(0, label, rid, 0), data)

        return recordio.write_recordio(rec_path, gen())

    @classmethod
    def from_recordio(cls, rec_path: str | os.PathLike, *, extract_to: str | os.PathLike,
                      class_names: Sequence[str] | None = None, num_classes: int | None = None) -> Dataset:
        """Read a .rec file, writing its images under ``extract_to`` as ``<record id>.jpg``.

        Every record must have its own id (two records with one id would train two label vectors on one image).
        The images are written into a temporary folder that replaces ``extract_to`` only when the whole file has
        been read, so a bad record leaves nothing behind.
        """
        import shutil
        import tempfile

        rec_path = Path(rec_path)
        if not rec_path.is_file():
            raise DataError(f"{rec_path}: RecordIO file not found." if not rec_path.exists() else
                            f"{rec_path}: is a folder, not a RecordIO (.rec) file.")
        out = Path(extract_to)
        from .._io import ensure_dir

        ensure_dir(out.parent, what="folder")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            paths, labels, ids = [], [], []
            first_at: dict[int, int] = {}
            for position, rec in enumerate(recordio.read_recordio(rec_path)):
                header, img = recordio.unpack(rec, source=f"{rec_path} (record {position})")
                if header.id in first_at:
                    raise DataError(f"{rec_path}: records {first_at[header.id]} and {position} both have id "
                                    f"{header.id}; every record needs its own id (rebuild the file from a .lst with "
                                    f"unique indices, e.g. with Dataset.to_recordio or im2rec).")
                first_at[header.id] = position
                if header.flag > 0:
                    lab = np.asarray(header.label)
                else:
                    n = num_classes or (len(class_names) if class_names else int(header.label) + 1)
                    if not float(header.label).is_integer() or not 0 <= header.label < n:
                        raise DataError(f"{rec_path} (record {position}, id {header.id}): class {header.label} is not "
                                        f"an integer in [0, {n}).")
                    lab = np.zeros(n, dtype=np.float32)
                    lab[int(header.label)] = 1
                if not np.isin(lab, (0.0, 1.0)).all():
                    raise DataError(f"{rec_path} (record {position}, id {header.id}): label {lab.tolist()} is not a "
                                    f"multi-hot 0/1 array.")
                name = f"{header.id}.jpg"
                (tmp / name).write_bytes(img)
                paths.append(name)
                labels.append(lab)
                ids.append(header.id)
            if not paths:
                raise DataError(f"{rec_path}: no records.")
            width = max(len(x) for x in labels)
            if any(len(x) != width for x in labels):
                raise DataError(f"{rec_path}: records have label arrays of different lengths "
                                f"({sorted({len(x) for x in labels})}); every record needs one label per class.")
            if out.is_dir():
                shutil.rmtree(out)  # the images of an earlier extraction of a RecordIO file into this folder
            elif out.exists():
                from ..exceptions import OutputError

                raise OutputError(f"{out} is a file; RecordIO images need a folder there: choose another folder.")
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        lab = np.stack(labels)
        names = list(class_names) if class_names else [f"class_{i}" for i in range(width)]
        return cls(paths, lab.astype(np.uint8), names, root=out, indices=ids)

    # ------------------------------------------------------------------ augmented manifest
    def to_manifest(self, path: str | os.PathLike, *, image_prefix: str, label_format: str = "multi-hot",
                    label_attribute: str = "class") -> Path:
        return manifest_mod.write_manifest(path, zip(self.paths, self.labels), image_prefix=image_prefix,
                                           label_format=label_format, label_attribute=label_attribute)

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, *, root: str | os.PathLike, class_names: Sequence[str],
                      image_prefix: str = "", label_format: str = "multi-hot",
                      label_attribute: str = "class") -> Dataset:
        entries = manifest_mod.read_manifest(path, num_classes=len(class_names), image_prefix=image_prefix,
                                             label_format=label_format, label_attribute=label_attribute)
        if not entries:
            raise DataError(f"{path}: no entries.")
        return cls([p for p, _ in entries], np.stack([lab for _, lab in entries]), class_names, root=root)


def _load_coco(ann: Path, coco_cls, quiet_stdout):
    """pycocotools' COCO over ``ann``, after checking the structure it assumes (it fails with bare KeyErrors)."""
    from .lst import read_text_file

    text = read_text_file(ann, what="COCO annotation file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann}:{exc.lineno}: not valid JSON ({exc.msg}).") from None
    fix = "expected a COCO instances file such as annotations/instances_val2017.json"
    if not isinstance(doc, dict):
        raise DataError(f"{ann}: a JSON {type(doc).__name__}, not an object; {fix}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{ann}: no {key!r} list; {fix}.")
    required = {"images": ("id", "file_name"), "annotations": ("image_id", "category_id"),
                "categories": ("id", "name")}
    for key, fields in required.items():
        for i, item in enumerate(doc[key]):
            if not isinstance(item, dict) or any(f not in item for f in fields):
                raise DataError(f"{ann}: {key}[{i}] needs the fields {', '.join(fields)}; {fix}.")
            for f in fields:
                ok = isinstance(item[f], str) if f in ("file_name", "name") else (
                    isinstance(item[f], int) and not isinstance(item[f], bool))
                if not ok:
                    kind = "a string" if f in ("file_name", "name") else "an integer"
                    raise DataError(f"{ann}: {key}[{i}].{f} is {item[f]!r}, not {kind}; {fix}.")
    image_ids = {item["id"] for item in doc["images"]}
    for i, item in enumerate(doc["annotations"]):
        if item["image_id"] not in image_ids:
            raise DataError(f"{ann}: annotations[{i}] refers to image_id {item['image_id']!r}, which is not in "
                            f"'images'.")
    coco = coco_cls()
    coco.dataset = doc
    try:
        with quiet_stdout():
            coco.createIndex()
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{ann}: not a COCO instances annotation file ({exc}).") from exc
    return coco


def _reencode(path: Path, resize: int, quality: int) -> bytes:
    from ..images import encode_jpeg, read_image, resize_shorter

    return encode_jpeg(resize_shorter(read_image(path), resize), quality=quality)
