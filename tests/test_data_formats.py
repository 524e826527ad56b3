import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multilabel_ic import DataError, Dataset
from multilabel_ic.data import recordio
from multilabel_ic.data.lst import read_lst, write_lst
from multilabel_ic.data.manifest import read_manifest, write_manifest
from multilabel_ic.exceptions import ImageDecodeError


def _write(tmp_path, text, name="x.lst"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ .lst
def test_lst_multi_hot_round_trip(tmp_path):
    labels = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], np.uint8)
    p = write_lst(tmp_path / "a.lst", zip([0, 5, 9], labels, ["a/1.jpg", "2.jpg", "b/c/3.png"]))
    assert p.read_text().splitlines()[0] == "0\t1\t0\t1\ta/1.jpg"
    entries = read_lst(p, num_classes=3)
    assert [e.index for e in entries] == [0, 5, 9]
    assert [e.path for e in entries] == ["a/1.jpg", "2.jpg", "b/c/3.png"]
    np.testing.assert_array_equal(np.stack([e.labels for e in entries]), labels)


def test_lst_reads_mxnet_float_labels_and_class_id_layout(tmp_path):
    p = _write(tmp_path, "0\t1.000000\t0.000000\timg.jpg\n")
    assert read_lst(p, num_classes=2)[0].labels.tolist() == [1, 0]
    p = _write(tmp_path, "3\t2\tdog/1.jpg\n4\t0\tcat/2.jpg\n", "s.lst")
    entries = read_lst(p, num_classes=3, layout="class-id")
    assert [e.labels.tolist() for e in entries] == [[0, 0, 1], [1, 0, 0]]
    write_lst(tmp_path / "s2.lst", [(e.index, e.labels, e.path) for e in entries], layout="class-id")
    assert (tmp_path / "s2.lst").read_text() == p.read_text()


@pytest.mark.parametrize("text,message", [
    ("0\t1\t2\ta.jpg\n", r"x.lst:1: label '2' is not 0 or 1"),
    ("0\t1\tx\ta.jpg\n", r"x.lst:1: label 'x' is not a number"),
    ("0\t1\t0\ta.jpg\n1\t1\tb.jpg\n", r"x.lst:2: expected 4 columns"),
    ("0\t1\t0\t1\ta.jpg\n", r"x.lst:1: expected 4 columns \(index, 2 labels, path\)"),
    ("0\t1\t0\ta.jpg\n0\t0\t1\tb.jpg\n", r"x.lst:2: duplicate index 0 \(first used on line 1\)"),
    ("0\t1\t0\t/abs/a.jpg\n", r"x.lst:1: image path '/abs/a.jpg' is absolute"),
    ("0\t1\t0\t../up/a.jpg\n", r"x.lst:1: image path '../up/a.jpg' escapes the image root"),
    ("0 1 0 a.jpg\n", r"x.lst:1: expected tab-separated"),
    ("a\t1\t0\ta.jpg\n", r"x.lst:1: index 'a' is not an integer"),
])
def test_lst_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_lst(_write(tmp_path, text), num_classes=2)


def test_lst_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_lst(tmp_path / "nope.lst")


def test_write_lst_class_id_rejects_multi_label(tmp_path):
    with pytest.raises(DataError, match="exactly one"):
        write_lst(tmp_path / "a.lst", [(0, np.array([1, 1]), "a.jpg")], layout="class-id")


# ------------------------------------------------------------------ RecordIO
def test_recordio_byte_layout_matches_mxnet(tmp_path):
    label = np.array([1, 0, 1], np.float32)
    packed = recordio.pack(recordio.IRHeader(0, label, 7, 0), b"JPEGDATA!")
    # IRHeader 'IfQQ': flag = label length, label 0, id 7, id2 0; then float32 labels; then the payload
    assert packed[:24] == struct.pack("<IfQQ", 3, 0.0, 7, 0)
    assert packed[24:36] == label.tobytes() and packed[36:] == b"JPEGDATA!"
    rec, idx = recordio.write_recordio(tmp_path / "a.rec", [(7, packed)])
    raw = rec.read_bytes()
    assert raw[:4] == struct.pack("<I", 0xCED7230A)
    assert struct.unpack("<I", raw[4:8])[0] == len(packed)  # cflag 0, length
    assert len(raw) == 8 + len(packed) + (-len(packed)) % 4 and raw.endswith(b"\0" * ((-len(packed)) % 4))
    assert idx.read_text() == "7\t0\n"
    header, payload = recordio.unpack(next(recordio.read_recordio(rec)))
    assert header.flag == 3 and header.id == 7 and payload == b"JPEGDATA!"
    np.testing.assert_array_equal(header.label, label)


def test_recordio_scalar_label_header():
    packed = recordio.pack(recordio.IRHeader(0, 4.0, 1, 0), b"x")
    header, payload = recordio.unpack(packed)
    assert header.flag == 0 and header.label == 4.0 and payload == b"x"


def test_recordio_splits_payloads_containing_the_magic_word(tmp_path):
    magic = struct.pack("<I", recordio.MAGIC)
    data = b"abcd" + magic + b"efgh" + magic + b"xy"
    rec, _ = recordio.write_recordio(tmp_path / "m.rec", [(0, data), (1, b"plain")])
    raw = rec.read_bytes()
    # dmlc-core: part 1 (cflag 1, 4 bytes), part 2 (cflag 2, 4 bytes), last part (cflag 3, 2 bytes + 2 pad)
    assert struct.unpack("<I", raw[4:8])[0] == (1 << 29) | 4
    assert struct.unpack("<I", raw[16:20])[0] == (2 << 29) | 4
    assert struct.unpack("<I", raw[28:32])[0] == (3 << 29) | 2
    assert list(recordio.read_recordio(rec)) == [data, b"plain"]
    reader = recordio.RecordIOReader(rec)
    assert reader.read(1) == b"plain" and reader.read(0) == data


@settings(max_examples=40, deadline=None)
@given(payloads=st.lists(st.binary(max_size=64), min_size=1, max_size=6))
def test_recordio_round_trip_any_bytes(tmp_path_factory, payloads):
    d = tmp_path_factory.mktemp("rio")
    rec, _ = recordio.write_recordio(d / "r.rec", enumerate(payloads))
    assert list(recordio.read_recordio(rec)) == payloads
    reader = recordio.RecordIOReader(rec)
    assert [reader.read(k) for k in range(len(payloads))] == payloads


def test_recordio_corrupt_file_is_reported(tmp_path):
    p = tmp_path / "bad.rec"
    p.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="bad RecordIO magic .* at byte 0"):
        list(recordio.read_recordio(p))
    rec, _ = recordio.write_recordio(tmp_path / "t.rec", [(0, b"123456789")])
    rec.write_bytes(rec.read_bytes()[:12])
    with pytest.raises(DataError, match="truncated record"):
        list(recordio.read_recordio(rec))


def test_dataset_recordio_round_trip(coco5, tmp_path):
    small = coco5.subset(range(6))
    rec, idx = small.to_recordio(tmp_path / "train.rec")
    back = Dataset.from_recordio(rec, extract_to=tmp_path / "x", class_names=small.class_names)
    np.testing.assert_array_equal(back.labels, small.labels)
    for i in range(len(small)):
        assert back.image_path(i).read_bytes() == small.image_path(i).read_bytes()
    assert len(recordio.read_idx(idx)) == 6


# ------------------------------------------------------------------ manifests
@pytest.mark.parametrize("fmt,expected", [("multi-hot", "[1, 0, 1]"), ("class-id", "[0, 2]")])
def test_manifest_round_trip(tmp_path, fmt, expected):
    entries = [("a/1.jpg", np.array([1, 0, 1])), ("2.jpg", np.array([0, 0, 0]))]
    p = write_manifest(tmp_path / "m.manifest", entries, image_prefix="s3://bucket/train", label_format=fmt)
    first = json.loads(p.read_text().splitlines()[0])
    assert first == {"source-ref": "s3://bucket/train/a/1.jpg", "class": expected}
    back = read_manifest(p, num_classes=3, image_prefix="s3://bucket/train/", label_format=fmt)
    assert [r for r, _ in back] == ["a/1.jpg", "2.jpg"]
    np.testing.assert_array_equal(np.stack([lab for _, lab in back]), np.stack([lab for _, lab in entries]))


@pytest.mark.parametrize("line,fmt,message", [
    ('{"source-ref": "s3://b/a.jpg", "class": "[1, 0]"}', "multi-hot", r"m.manifest:1: multi-hot label .* 3 values"),
    ('{"source-ref": "s3://b/a.jpg", "class": "[5]"}', "class-id", r"m.manifest:1: class-id label .* outside"),
    ('{"source-ref": "s3://b/a.jpg"}', "multi-hot", r"m.manifest:1: missing attribute 'class'"),
    ('not json', "multi-hot", r"m.manifest:1: not valid JSON"),
    ('{"source-ref": "s3://other/a.jpg", "class": "[1,0,0]"}', "multi-hot", r"does not start with 's3://b/'"),
])
def test_manifest_errors(tmp_path, line, fmt, message):
    p = _write(tmp_path, line + "\n", "m.manifest")
    with pytest.raises(DataError, match=message):
        read_manifest(p, num_classes=3, image_prefix="s3://b/", label_format=fmt)


def test_recordio_ids_are_the_lst_indices_as_im2rec_writes_them(coco5, tmp_path):
    """im2rec packs each image with its .lst index as the record id and .idx key; a shuffled .lst keeps its ids."""
    from multilabel_ic import Dataset
    from multilabel_ic.data import recordio

    sub = coco5.subset(range(4))
    lst = tmp_path / "shuffled.lst"
    lines = [f"{idx}\t" + "\t".join(str(int(v)) for v in sub.labels[k]) + f"\t{sub.paths[k]}"
             for k, idx in enumerate([7, 3, 11, 0])]
    lst.write_text("\n".join(lines) + "\n")
    data = Dataset.from_lst(lst, root=sub.root, class_names=sub.class_names)
    rec, idx = data.to_recordio(tmp_path / "s.rec")
    ids = [recordio.unpack(r)[0].id for r in recordio.read_recordio(rec)]
    assert ids == [7, 3, 11, 0] and list(recordio.read_idx(idx)) == [7, 3, 11, 0]
    back = Dataset.from_recordio(rec, extract_to=tmp_path / "x", class_names=sub.class_names)
    assert list(back.indices) == [7, 3, 11, 0] and (back.labels == data.labels).all()
    rec2, _ = data.to_recordio(tmp_path / "r.rec", renumber=True)
    assert [recordio.unpack(r)[0].id for r in recordio.read_recordio(rec2)] == [0, 1, 2, 3]


def test_recordio_written_on_several_threads_is_the_one_written_on_one(coco5, tmp_path):
    """Images are re-encoded in parallel and written in order: the file does not depend on the thread count, and
    a failing image is reported by name whatever thread met it."""
    subset = coco5.subset(range(24))
    one, one_idx = subset.to_recordio(tmp_path / "one.rec", resize=40, threads=1)
    many, many_idx = subset.to_recordio(tmp_path / "many.rec", resize=40, threads=4)
    assert one.read_bytes() == many.read_bytes() and one_idx.read_text() == many_idx.read_text()
    broken = tmp_path / "img"
    broken.mkdir()
    for i in range(6):
        (broken / f"{i}.jpg").write_bytes(subset.image_path(i).read_bytes() if i != 4 else b"not a jpeg")
    bad = Dataset([f"{i}.jpg" for i in range(6)], subset.labels[:6], subset.class_names, root=broken)
    with pytest.raises(ImageDecodeError, match="4.jpg: not a decodable image"):
        bad.to_recordio(tmp_path / "bad.rec", resize=40, threads=3)
    assert not (tmp_path / "bad.rec").exists()
