"""Trust in what is read and answered: every image format OpenCV decodes is sized before decoding, an artifact is
read unambiguously and only as far as needed, model-metadata.json is checked field by field, non-finite weights or
scores are refused on every path, and evaluate reproduces a run's mAP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_bombs import BOMB_SIZE, BOMBS, GOOD_EXTENSIONS, bomb, encoded, gif, good_j2k, jp2

from multilabel_ic import ImageDecodeError
from multilabel_ic import images as images_module
from multilabel_ic.image_header import HeaderError, header_size
from multilabel_ic.images import decode_image

# --- images: every format OpenCV decodes has its size checked before decoding

# Every extension OpenCV's imencode may know; the ones this build encodes are the formats it decodes too.
CANDIDATE_EXTENSIONS = (".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".apng", ".webp", ".avif", ".pbm",
                        ".pgm", ".ppm", ".pxm", ".pnm", ".pam", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr",
                        ".pic", ".gif", ".jxl", ".qoi", ".j2k", ".j2c", ".jpx")


def _opencv_formats() -> list[str]:
    found = []
    for ext in CANDIDATE_EXTENSIONS:
        try:
            ok = cv2.haveImageWriter("x" + ext)
        except cv2.error:
            ok = False
        if ok:
            found.append(ext)
    return found


def test_every_format_this_opencv_writes_is_one_the_header_reader_sizes():
    """The class: each format of this OpenCV build (its writers; each has a reader) is sized from its header."""
    formats = _opencv_formats()
    assert {".jpg", ".png", ".bmp", ".tif", ".webp", ".hdr", ".pam", ".pfm", ".ras", ".gif"} <= set(formats)
    for ext in formats:
        img = np.zeros((48, 64), np.float32) if ext in (".hdr", ".pic", ".pfm", ".exr") else np.zeros((48, 64), np.uint8)
        ok, buf = cv2.imencode(ext, img if ext in (".pgm", ".pbm") else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        if not ok:
            continue
        assert header_size(buf.tobytes())[1:] == (64, 48), ext


@pytest.mark.parametrize("ext", [*GOOD_EXTENSIONS, ".j2k"])
def test_a_good_file_of_each_format_is_sized_and_decoded(ext):
    data = good_j2k() if ext == ".j2k" else encoded(ext)
    assert header_size(data)[1:] == (64, 48)
    assert decode_image(data, source="x" + ext).shape == (48, 64, 3)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_header_bomb_of_each_format_is_refused_before_decoding(name, monkeypatch):
    def never(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(images_module, "imdecode", never)
    w, h = BOMB_SIZE[name]
    with pytest.raises(ImageDecodeError, match=rf"bomb: the image has {w * h} pixels, more than the limit of "):
        decode_image(bomb(name), source="bomb")


def test_a_gif_frame_larger_than_its_screen_counts():
    assert header_size(gif(64, 48, frame=(30000, 30000)))[1:] == (30000, 30000)


def test_a_jpeg2000_is_sized_by_its_codestream_not_only_its_ihdr_box():
    """Pillow reports the ihdr box (64 x 48); OpenJPEG allocates what the codestream's SIZ says."""
    import io

    from PIL import Image

    data = jp2(30000, 30000)
    assert Image.open(io.BytesIO(data)).size == (64, 48)
    assert header_size(data)[1:] == (30000, 30000)


@pytest.mark.parametrize("data", [b"P6\nabc", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", b"P7\nDEPTH 3\nENDHDR\n",
                                  b"BM\0\0", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX", b"\xff\xd8\xff\xe0garbage",
                                  b"\0\0\0\x0cjP  \r\n\x87\n"], ids=lambda d: repr(d[:6]))
def test_a_known_signature_with_an_unreadable_header_is_refused_not_decoded(data, monkeypatch):
    with pytest.raises(HeaderError):
        header_size(data)
    monkeypatch.setattr(images_module, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageDecodeError, match="so its size cannot be checked before decoding"):
        decode_image(data, source="odd")


def test_bytes_no_decoder_takes_are_not_an_image():
    assert header_size(b"<html>not found</html>") is None
    with pytest.raises(ImageDecodeError, match="page.html: not a decodable image"):
        decode_image(b"<html>not found</html>", source="page.html")


def test_opencvs_own_limit_is_set_from_the_librarys_before_cv2_loads(tmp_path):
    """The second line of defence: with the library's check off, OpenCV itself refuses more pixels than the limit
    the process started with, and the error says how to raise it."""
    code = ("import os, sys; import multilabel_ic; from multilabel_ic.images import decode_image, set_max_pixels; "
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS']); set_max_pixels(0); "
            "sys.path.insert(0, 'tests'); from image_bombs import encoded\n"
            "try:\n    decode_image(encoded('.png'), source='x.png')\nexcept Exception as exc:\n    print(exc)")
    env = {**os.environ, "MULTILABEL_IC_MAX_PIXELS": "1000"}
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).parent.parent).stdout.splitlines()
    assert out[0] == "1000"
    assert "x.png: the image has 3072 pixels, more than OpenCV's limit OPENCV_IO_MAX_IMAGE_PIXELS=1000" in out[1]
