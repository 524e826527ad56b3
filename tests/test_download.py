import hashlib
import io
import zipfile

import pytest
from http_support import RangeHandler

from multilabel_ic.download import download, extract_zip
from multilabel_ic.exceptions import DownloadError


def test_download_with_checksum(server, tmp_path):
    _, url, root = server
    data = b"x" * 300_000
    (root / "f.bin").write_bytes(data)
    out = download(f"{url}/f.bin", tmp_path / "dl" / "f.bin", sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert out.read_bytes() == data
    # present and valid: no second request
    n = len(RangeHandler.requests)
    download(f"{url}/f.bin", out, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert len(RangeHandler.requests) == n


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    _, url, root = server
    data = bytes(range(256)) * 2000
    (root / "g.bin").write_bytes(data)
    out = download(f"{url}/cut/g.bin", tmp_path / "g.bin", md5=hashlib.md5(data).hexdigest(), progress=False)
    assert out.read_bytes() == data
    ranges = [r for p, r in RangeHandler.requests if p.endswith("g.bin")]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    _, url, root = server
    (root / "h.bin").write_bytes(b"hello")
    with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
        download(f"{url}/h.bin", tmp_path / "h.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "h.bin").exists()


def test_missing_url_and_unreachable_server(server, tmp_path):
    _, url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/nope.bin", tmp_path / "n.bin", progress=False)
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", progress=False, retries=2, timeout=2)


def test_extract_zip_refuses_path_traversal(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("val2017/a.jpg", b"abc")
    extract_zip(good, tmp_path / "out")
    assert (tmp_path / "out/val2017/a.jpg").read_bytes() == b"abc"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(DownloadError, match="outside"):
        extract_zip(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()


def test_prepare_coco_download_end_to_end(server, tmp_path, synthetic_coco):
    """`multilabel-ic prepare coco --download` against a local mirror serving COCO-shaped zips."""
    from multilabel_ic.cli import main

    _, url, root = server
    ann, images = synthetic_coco
    (root / "zips").mkdir()
    (root / "annotations").mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(images.iterdir())[:40]:
            zf.write(p, f"val2017/{p.name}")
    (root / "val2017.zip").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        import json

        doc = json.loads(ann.read_text())
        keep = {p.name for p in sorted(images.iterdir())[:40]}
        doc["images"] = [im for im in doc["images"] if im["file_name"] in keep]
        ids = {im["id"] for im in doc["images"]}
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
        zf.writestr("annotations/instances_val2017.json", json.dumps(doc))
    (root / "annotations_trainval2017.zip").write_bytes(buf.getvalue())
    out = tmp_path / "prep"
    rc = main(["--quiet", "prepare", "coco", "--download", "--base-url", url, "--output", str(out),
               "--train-size", "30", "--formats", "lst,recordio"])
    assert rc == 0
    assert (out / "coco/val2017").is_dir() and (out / "coco/annotations/instances_val2017.json").exists()
    train_lines = (out / "train.lst").read_text().splitlines()
    assert len(train_lines) == 30 and len(train_lines[0].split("\t")) == 7
    assert (out / "validation.rec").stat().st_size > 0


def test_recorded_checksum_detects_a_corrupted_cache(server, tmp_path):
    _, url, root = server
    data = b"weights" * 1000
    (root / "w.params").write_bytes(data)
    dest = tmp_path / "cache" / "w.params"
    download(f"{url}/w.params", dest, progress=False)
    assert (tmp_path / "cache" / "w.params.sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
    n = len(RangeHandler.requests)
    download(f"{url}/w.params", dest, progress=False)  # intact: reused, no request
    assert len(RangeHandler.requests) == n
    dest.write_bytes(b"corrupt" + data[7:])  # same size, different bytes
    download(f"{url}/w.params", dest, progress=False)
    assert len(RangeHandler.requests) == n + 1 and dest.read_bytes() == data
