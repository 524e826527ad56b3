import io

import cv2
import numpy as np
import pytest
from PIL import Image

from multilabel_ic import ImageDecodeError
from multilabel_ic.images import decode_image, encode_jpeg, read_image


def _png(arr, mode):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_order_is_preserved():
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 0] = 200  # red
    out = decode_image(_png(arr, "RGB"))
    assert out.shape == (8, 8, 3) and out[0, 0].tolist() == [200, 0, 0]


def test_greyscale_and_alpha_become_rgb():
    grey = decode_image(_png(np.full((5, 6), 77, np.uint8), "L"))
    assert grey.shape == (5, 6, 3) and (grey == 77).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 150
    rgba[..., 3] = 255
    out = decode_image(_png(rgba, "RGBA"))
    assert out.shape == (4, 4, 3) and out[0, 0].tolist() == [0, 150, 0]


def test_single_channel_models_get_one_channel():
    arr = np.full((4, 4, 3), 100, np.uint8)
    assert decode_image(_png(arr, "RGB"), channels=1).shape == (4, 4, 1)


def test_cmyk_jpeg():
    img = Image.new("CMYK", (6, 4), (0, 255, 255, 0))  # red in CMYK
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (4, 6, 3)
    r, g, b = out[2, 3].tolist()
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    arr = np.zeros((10, 20, 3), np.uint8)  # wide image
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape[:2] == (20, 10)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="missing.jpg: image file not found"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "page.jpg"
    bad.write_text("<html>not an image</html>")
    with pytest.raises(ImageDecodeError, match="page.jpg: not a decodable image"):
        read_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg: empty file"):
        read_image(empty)
    jpeg = encode_jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg: (truncated JPEG|not a decodable)"):
        read_image(cut)
    with pytest.raises(ImageDecodeError, match="is a directory"):
        read_image(tmp_path)


def test_encode_decode_round_trip():
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, :8] = (255, 0, 0)
    out = decode_image(encode_jpeg(arr, quality=95))
    assert abs(int(out[8, 2, 0]) - 255) < 10 and out[8, 2, 2] < 20
    assert cv2.getNumThreads() == 1
