"""The decode cache never answers with pixels other than the files': its key follows every change of a file, its
encoding follows the options, damaged bytes or indexes are found, a killed build leaves nothing behind for long, and
an image too small for image_shape stops the run before it starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from catalog_support import FUZZ, json_values
from hypothesis import given
from hypothesis import strategies as st

from multilabel_ic import DataError, Dataset, Hyperparameters, RunConflictError, Trainer
from multilabel_ic.backends.local import LocalOptions
from multilabel_ic.backends.local.imagesizes import check_headers, resized_size
from multilabel_ic.backends.local.imagestore import ImageStore, _locked_temp, decode_resized, store_key
from multilabel_ic.backends.local.train import run_fingerprint
from multilabel_ic.images import read_image, resize_shorter
from multilabel_ic.preflight import describe_differences

SHAPES = [(40, 36), (36, 44), (38, 38), (50, 36)]
NAMES = ["a", "b", "c"]


def _pixels(k: int, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    base = rng.integers(0, 256, (rows // 4 + 1, cols // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(base, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _bmp(img: np.ndarray) -> bytes:
    """Uncompressed: the file's size depends on the image's size only, as for PPM, raw TIFF or fixed-size exports."""
    ok, buf = cv2.imencode(".bmp", img[:, :, ::-1])
    assert ok
    return buf.tobytes()


def _bmp_dataset(root: Path, shapes=SHAPES, n: int | None = None) -> Dataset:
    root.mkdir(parents=True, exist_ok=True)
    shapes = [shapes[k % len(shapes)] for k in range(n or len(shapes))]
    paths = []
    for k, (rows, cols) in enumerate(shapes):
        (root / f"{k}.bmp").write_bytes(_bmp(_pixels(k, rows, cols)))
        paths.append(f"{k}.bmp")
    labels = np.eye(len(NAMES), dtype=np.uint8)[np.arange(len(shapes)) % len(NAMES)]
    return Dataset(paths, labels, NAMES, root=root)


def _expected(data: Dataset, resize=None) -> list[np.ndarray]:
    return [decode_resized(data, i, resize, 3) for i in range(len(data))]


def _assert_serves(store: ImageStore, data: Dataset, resize=None) -> None:
    for i, img in enumerate(_expected(data, resize)):
        np.testing.assert_array_equal(np.asarray(store[i]), img)


# ---------------------------------------------------------------------------------------------- item 1: the key

def _invert_file(path: Path) -> bytes:
    new = _bmp(255 - read_image(path))
    assert len(new) == path.stat().st_size
    return new


def _other_root(data: Dataset, tmp: Path) -> Dataset:
    other = tmp / "other"
    other.mkdir()
    for rel in data.paths:
        (other / rel).write_bytes(_invert_file(data.root / rel))
    return Dataset(data.paths, data.labels, data.class_names, root=other)


def _rewrite(data: Dataset, tmp: Path) -> Dataset:
    p = data.image_path(0)
    new = _invert_file(p)
    with open(p, "r+b") as fh:  # in place: same inode, same size
        fh.write(new)
    return data


def _rewrite_keeping_mtime(data: Dataset, tmp: Path) -> Dataset:
    p = data.image_path(0)
    st = p.stat()
    _rewrite(data, tmp)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_mtime_ns == st.st_mtime_ns and p.stat().st_size == st.st_size
    return data


def _replace_by_rename(data: Dataset, tmp: Path) -> Dataset:
    p = data.image_path(0)
    st = p.stat()
    new = p.with_name("new.bmp")
    new.write_bytes(_invert_file(p))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, p)
    return data


def _copy2_over(data: Dataset, tmp: Path) -> Dataset:
    p = data.image_path(0)
    st = p.stat()
    src = tmp / "elsewhere.bmp"
    src.write_bytes(_invert_file(p))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy2(src, p)  # content and times copied: same name, size and mtime
    assert p.stat().st_mtime_ns == st.st_mtime_ns
    return data


CHANGES = {"another-root-same-names-and-sizes": _other_root, "rewritten-in-place": _rewrite,
           "rewritten-in-place-mtime-restored": _rewrite_keeping_mtime, "replaced-by-rename": _replace_by_rename,
           "copied-over-with-copy2": _copy2_over}


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_of_the_files_pixels_builds_another_store(tmp_path, change, encoding):
    data = _bmp_dataset(tmp_path / "img")
    cache = tmp_path / "cache"
    before = ImageStore.build(data, cache, resize=36, channels=3, encoding=encoding)
    old = np.array(before[0])
    changed = CHANGES[change](data, tmp_path)
    after = ImageStore.build(changed, cache, resize=36, channels=3, encoding=encoding)
    assert after.path != before.path
    fresh = decode_resized(changed, 0, 36, 3)
    assert not np.array_equal(fresh, old)
    if encoding == "raw":
        _assert_serves(after, changed, 36)
    else:
        assert np.abs(after[0].astype(int) - fresh).mean() < 4 < np.abs(after[0].astype(int) - old).mean()


def test_labels_and_unchanged_files_reuse_the_store(tmp_path):
    data = _bmp_dataset(tmp_path / "img")
    store = ImageStore.build(data, tmp_path / "cache", resize=None, channels=3)
    relabelled = Dataset(data.paths, data.labels[::-1].copy(), data.class_names, root=data.root)
    read_image(data.image_path(1))  # reading a file changes nothing
    again = ImageStore.build(relabelled, tmp_path / "cache", resize=None, channels=3)
    assert again.path == store.path


# ------------------------------------------------------------------------------------- item 2: the encoding

def test_the_encoding_follows_the_options_not_the_folder(tmp_path, caplog):
    data = _bmp_dataset(tmp_path / "img", n=8)
    raw_bytes = sum(img.nbytes for img in _expected(data))
    cache = tmp_path / "cache"
    small = ImageStore.build(data, cache, resize=None, channels=3, max_bytes=raw_bytes)
    assert small.encoding == "jpeg"
    exact = ImageStore.build(data, cache, resize=None, channels=3)  # the limit is lifted: exact pixels again
    assert exact.encoding == "raw" and "not using the JPEG decode cache" in caplog.text
    _assert_serves(exact, data)
    stamp = small.path.stat().st_mtime_ns
    again = ImageStore.build(data, cache, resize=None, channels=3, max_bytes=raw_bytes)  # a raw store exists
    assert again.encoding == "jpeg" and again.path == small.path and small.path.stat().st_mtime_ns == stamp
    assert ImageStore.build(data, cache, resize=None, channels=3).path == exact.path


def test_the_cache_encoding_is_part_of_the_run_fingerprint(tmp_path):
    data = _bmp_dataset(tmp_path / "img", n=8)
    hp = Hyperparameters(num_classes=3, num_training_samples=8, image_shape="3,28,28", mini_batch_size=4,
                         num_layers=20, epochs=1, multi_label=1)
    opts = LocalOptions()
    raw = run_fingerprint(hp, data, None, opts, cache={"training images": "raw", "validation images": None})
    none = run_fingerprint(hp, data, None, opts, cache={"training images": None, "validation images": None})
    jpeg = run_fingerprint(hp, data, None, opts, cache={"training images": "jpeg", "validation images": None})
    assert describe_differences(raw, none) == [] and describe_differences(raw, jpeg) == ["decode cache"]
    val_jpeg = run_fingerprint(hp, data, data, opts, cache={"training images": "raw", "validation images": "jpeg"})
    assert "decode cache" in describe_differences(run_fingerprint(hp, data, data, opts), val_jpeg)


@pytest.fixture(scope="module")
def bmp_run(tmp_path_factory):
    """A finished one-epoch run whose training images were cached as JPEG (a small cache_max_gb)."""
    tmp = tmp_path_factory.mktemp("bmprun")
    data = _bmp_dataset(tmp / "img", shapes=[(36, 36)], n=16)
    hp = Hyperparameters(num_classes=3, num_training_samples=16, image_shape="3,28,28", mini_batch_size=8,
                         num_layers=20, epochs=1, multi_label=1, augmentation_type="crop")
    raw_bytes = 16 * 36 * 36 * 3
    small = dict(num_workers=0, progress=False, cache_max_gb=raw_bytes / 1e9)
    Trainer(hp, output_dir=tmp / "out", options=LocalOptions(**small)).fit(data)
    return data, hp, tmp / "out", small


def test_a_resume_with_another_cache_encoding_is_refused(bmp_run):
    data, hp, out, small = bmp_run
    assert len(list((out / "cache").glob("*.jpegs"))) == 1
    before = sorted(p.name for p in out.rglob("*") if "cache" not in p.parts)
    with pytest.raises(RunConflictError, match="trained with other decode cache"):
        Trainer(hp, output_dir=out, options=LocalOptions(num_workers=0, progress=False)).fit(data)
    assert sorted(p.name for p in out.rglob("*") if "cache" not in p.parts) == before


def test_restart_after_images_are_replaced_in_place_trains_on_the_new_pixels(bmp_run, tmp_path, caplog):
    shared, hp, out, small = bmp_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.copytree(shared.root, tmp_path / "img")
    data = Dataset(shared.paths, shared.labels, shared.class_names, root=tmp_path / "img")
    for i in range(len(data)):
        p = data.image_path(i)
        with open(p, "r+b") as fh:
            fh.write(_invert_file(p))
    caplog.clear()
    Trainer(hp, output_dir=copy, options=LocalOptions(**small, restart=True)).fit(data)
    assert "decoding 16 images once" in caplog.text
    stores = sorted((copy / "cache").glob("*.jpegs"), key=lambda p: p.stat().st_mtime_ns)
    newest = ImageStore.build(data, copy / "cache", resize=None, channels=3, max_bytes=small["cache_max_gb"] * 1e9)
    assert newest.path == stores[-1] and len(stores) == 2
    fresh = _expected(data)
    assert all(np.abs(newest[i].astype(int) - fresh[i]).mean() < 4 for i in range(len(data)))


# ------------------------------------------------------------------------------------ item 3: integrity

@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_flipped_bytes_in_the_store_are_found_and_the_files_pixels_served(tmp_path, caplog, encoding):
    data = _bmp_dataset(tmp_path / "img")
    store = ImageStore.build(data, tmp_path / "cache", resize=36, channels=3, encoding=encoding)
    start = int(store.offsets[2]) + (int(store.lengths[2]) // 2 if encoding == "jpeg" else 100)
    with open(store.path, "r+b") as fh:
        fh.seek(start)
        byte = fh.read(1)
        fh.seek(start)
        fh.write(bytes([byte[0] ^ 0x10]))
    opened = ImageStore.build(data, tmp_path / "cache", resize=36, channels=3, encoding=encoding)
    assert opened.path == store.path  # the index is fine: the damage is in the pixels
    caplog.clear()
    got = opened[2]
    np.testing.assert_array_equal(got, decode_resized(data, 2, 36, 3))
    assert "image 2 of this decode cache is damaged (its bytes do not match their digest)" in caplog.text
    assert not store.index_path.exists()  # the next run builds it again
    caplog.clear()
    rebuilt = ImageStore.build(data, tmp_path / "cache", resize=36, channels=3, encoding=encoding)
    assert "decoding 4 images once" in caplog.text
    if encoding == "raw":
        _assert_serves(rebuilt, data, 36)


def _damage(meta: dict, how: str) -> str:
    m = json.loads(json.dumps(meta))
    if how == "offset":
        m["offsets"][1] += 3
    elif how == "shape-sides-swapped":
        m["shapes"][0][0], m["shapes"][0][1] = m["shapes"][0][1], m["shapes"][0][0]
    elif how == "shape-of-another-size":
        m["shapes"][3] = [m["shapes"][3][0] + 1, m["shapes"][3][1], 3]
    elif how == "length":
        m.setdefault("lengths", [5] * 4)[0] += 1
    elif how == "fewer-images":
        m["shapes"], m["offsets"], m["digests"] = m["shapes"][:3], m["offsets"][:3], m["digests"][:3]
    elif how == "types":
        m["shapes"] = [[str(v) for v in s] for s in m["shapes"]]
    elif how == "booleans":
        m["digests"] = [True] * 4
    elif how == "huge-numbers":
        m["offsets"] = [10 ** 30 * k for k in range(4)]
        m["raw_estimate"] = 10 ** 400
    elif how == "negative":
        m["offsets"][0] = -1
    elif how == "digest-of-another-image":
        m["digests"][1] = m["digests"][2]
        return json.dumps(m)
    elif how == "not-an-object":
        return json.dumps([m])
    elif how == "truncated":
        return json.dumps(m)[: len(json.dumps(m)) // 2]
    elif how == "deep":
        return "[" * 100_000 + "]" * 100_000
    elif how == "not-utf8":
        return "\udcff"
    return json.dumps(m)


DAMAGES = ["offset", "shape-of-another-size", "length", "fewer-images", "types", "booleans",
           "huge-numbers", "negative", "not-an-object", "truncated", "deep", "not-utf8"]


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_a_damaged_index_is_rebuilt_with_one_warning(tmp_path, caplog, encoding):
    data = _bmp_dataset(tmp_path / "img")
    cache = tmp_path / "cache"
    store = ImageStore.build(data, cache, resize=36, channels=3, encoding=encoding)
    good = json.loads(store.index_path.read_text())
    for how in DAMAGES:
        if (how == "length" and encoding == "raw") or (how == "shape-of-another-size" and encoding == "jpeg"):
            continue  # a raw index has no lengths; a JPEG's lengths do not follow from its shapes (read below)
        store.index_path.write_bytes(_damage(good, how).encode("utf-8", "surrogateescape"))
        caplog.clear()
        rebuilt = ImageStore.build(data, cache, resize=36, channels=3, encoding=encoding)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "index" in warnings[0] and "is damaged" in warnings[0], (how, warnings)
        assert "\n" not in warnings[0]
        assert json.loads(rebuilt.index_path.read_text()) == good, how
        if encoding == "raw":
            _assert_serves(rebuilt, data, 36)
    # an index whose values check out but do not describe the bytes: found at the read, the file's pixels served
    at_read = [("digest-of-another-image", 1), ("shape-sides-swapped", 0), ("shape-of-another-size", 3)]
    for how, i in at_read[:3 if encoding == "jpeg" else 2]:
        store.index_path.write_text(_damage(good, how))
        opened = ImageStore.build(data, cache, resize=36, channels=3, encoding=encoding)
        assert opened.path == store.path
        caplog.clear()
        np.testing.assert_array_equal(opened[i], decode_resized(data, i, 36, 3))
        assert f"image {i} of this decode cache is damaged" in caplog.text, how


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzzstore")
    data = _bmp_dataset(tmp / "img")
    store = ImageStore.build(data, tmp / "cache", resize=None, channels=3)
    return data, store, json.loads(store.index_path.read_text()), _expected(data)


FIELDS = ["format", "key", "resize", "channels", "encoding", "raw_estimate", "shapes", "offsets", "digests", "lengths"]
numbers = st.integers(-2, 2) | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=True) | st.booleans()


@FUZZ
@given(field=st.sampled_from(FIELDS), value=json_values, element=st.tuples(st.integers(0, 5), numbers),
       whole=st.none() | json_values)
def test_fuzz_cache_index(fuzz_store, field, value, element, whole):
    """Structures of the wrong types and sizes in the index: the store is opened and serves the files' pixels, or it
    is not opened (and so rebuilt, as test_a_damaged_index_is_rebuilt_with_one_warning shows); never another error."""
    data, store, good, expected = fuzz_store
    meta = json.loads(json.dumps(good))
    meta[field] = value
    if isinstance(good.get(field), list) and element[0] < len(good[field]):  # one entry of a list changed
        meta[field] = json.loads(json.dumps(good[field]))
        target = meta[field][element[0]]
        if isinstance(target, list):
            target[element[0] % 3] = element[1]
        else:
            meta[field][element[0]] = element[1]
    text = json.dumps(meta if whole is None else whole)
    store.index_path.write_text(text)
    opened = ImageStore.open(store.path.parent, store.path.stem, encoding="raw", count=len(data), resize=None,
                             channels=3, source=(data, None, 3))
    if opened is not None:
        for i, img in enumerate(expected):
            np.testing.assert_array_equal(np.asarray(opened[i]), img)


# ------------------------------------------------------------------ item 12: temporary files of a killed build

KILLED_BUILD = textwrap.dedent("""
    import sys, time, types
    from pathlib import Path
    import multilabel_ic.backends as backends
    package = types.ModuleType("multilabel_ic.backends.local")  # the store alone: no torch to import
    package.__path__ = [backends.__path__[0] + "/local"]
    sys.modules["multilabel_ic.backends.local"] = package
    import multilabel_ic.backends.local.imagestore as imagestore
    from multilabel_ic import Dataset
    import numpy as np
    root, cache, ready = map(Path, sys.argv[1:4])
    decode = imagestore.decode_resized
    def slow(data, i, resize, channels):
        if i == 20:
            ready.touch()
            time.sleep(60)
        return decode(data, i, resize, channels)
    imagestore.decode_resized = slow
    paths = sorted((p.name for p in root.iterdir()), key=lambda name: int(name.split(".")[0]))
    data = Dataset(paths, np.zeros((len(paths), 3), np.uint8), ["a", "b", "c"], root=root)
    imagestore.ImageStore.build(data, cache, resize=None, channels=3, threads=1)
""")


def test_a_killed_builds_temporary_file_is_removed_by_the_next_build_but_a_live_ones_is_not(tmp_path, caplog):
    data = _bmp_dataset(tmp_path / "img", n=24)
    cache, ready = tmp_path / "cache", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(data.root), str(cache), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the build did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith("." + store_key(data, resize=None, channels=3) + ".u8.")
    other = cache / ("0" * 24 + ".u8")
    with _locked_temp(other) as live:  # a concurrent build into the shared folder, still writing
        live.write(b"x")
        caplog.clear()
        store = ImageStore.build(data, cache, resize=None, channels=3)
        assert not left[0].exists() and f"removed {left[0]}" in caplog.text
        held = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
        assert len(held) == 1 and held[0].name.startswith("." + other.name + ".")
    assert other.read_bytes() == b"x" and not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    _assert_serves(store, data)


# --------------------------------------------------------------------- item 22: too small for image_shape

def test_header_sizes_give_the_decoded_size(tmp_path):
    data = _bmp_dataset(tmp_path / "img", shapes=[(40, 30), (30, 41), (33, 33)])
    for resize in (None, 32, 35):
        for i in range(len(data)):
            rows, cols = read_image(data.image_path(i)).shape[:2]
            assert resized_size(rows, cols, resize) == (resize_shorter(read_image(data.image_path(i)), resize).shape[:2]
                                                        if resize else (rows, cols))
    check_headers(data, height=30, width=30, resize=None, what="x")
    with pytest.raises(DataError, match=r"x: 3 of 3 images are smaller than image_shape's 34x34 .*0\.bmp \(30x40\)"):
        check_headers(data, height=34, width=34, resize=None, what="x")
    with pytest.raises(DataError, match=r"3 of 3 .* after resize=32: .*0\.bmp \(32x42\)"):
        check_headers(data, height=34, width=34, resize=32, what="x")
    check_headers(data, height=32, width=32, resize=32, what="x")
