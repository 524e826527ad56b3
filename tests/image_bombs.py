"""Header bombs: a small file of each format this OpenCV decodes whose header claims a huge image, and a small good
file of each format (encoded by OpenCV itself)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

SMALL = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)

# extension OpenCV encodes -> the bomb maker below of the same format
GOOD_EXTENSIONS = {".jpg": "jpeg", ".png": "png", ".bmp": "bmp", ".ppm": "ppm", ".pgm": "pgm", ".pbm": "pbm",
                   ".pam": "pam", ".pfm": "pfm", ".tif": "tiff", ".webp": "webp", ".jp2": "jp2", ".hdr": "hdr",
                   ".ras": "sun", ".gif": "gif", ".avif": "avif"}


def encoded(ext: str, params: tuple[int, ...] = ()) -> bytes:
    img = SMALL
    if ext in (".hdr", ".pfm"):
        img = SMALL.astype(np.float32) / 255
    elif ext in (".pgm", ".pbm"):
        img = SMALL[:, :, 0]
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok, ext
    return buf.tobytes()


def good_j2k() -> bytes:
    data = encoded(".jp2")
    return data[data.index(b"\xff\x4f\xff\x51"):]


def bmp(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


def gif(w: int, h: int, frame: tuple[int, int] | None = None) -> bytes:
    fw, fh = frame or (w, h)
    screen = struct.pack("<6sHHBBB", b"GIF89a", w, h, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, fw, fh, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b"


def hdr(w: int, h: int) -> bytes:
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (h, w) + b"\0" * 256


def jpeg(w: int, h: int) -> bytes:
    data = bytearray(encoded(".jpg"))
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, h, w)
    return bytes(data)


def webp(w: int, h: int) -> bytes:
    """A lossless WebP whose VP8L header (14-bit width-1 and height-1) claims ``w x h``."""
    data = bytearray(encoded(".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)))
    i = data.index(b"VP8L") + 8
    bits = struct.unpack_from("<I", data, i + 1)[0]
    struct.pack_into("<I", data, i + 1, (bits & ~((1 << 28) - 1)) | (w - 1) | ((h - 1) << 14))
    return bytes(data)


def sun(w: int, h: int) -> bytes:
    return struct.pack(">8I", 0x59A66A95, w, h, 24, w * h * 3 & 0xFFFFFFFF, 1, 0, 0) + b"\0" * 64


def ppm(w: int, h: int) -> bytes:
    return b"P6\n# a comment\n%d %d\n255\n" % (w, h) + b"\0" * 64


def pgm(w: int, h: int) -> bytes:
    return b"P5 %d %d 255\n" % (w, h) + b"\0" * 64


def pbm(w: int, h: int) -> bytes:
    return b"P4\n%d %d\n" % (w, h) + b"\0" * 64


def pam(w: int, h: int) -> bytes:
    return b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" % (w, h) + b"\0" * 64


def pfm(w: int, h: int) -> bytes:
    return b"PF\n%d %d\n-1.0\n" % (w, h) + b"\0" * 64


def tiff(w: int, h: int) -> bytes:
    longs = {256: w, 257: h, 273: 8 + 2 + 9 * 12 + 4, 278: h, 279: w * h & 0xFFFFFFFF}
    shorts = {258: 8, 259: 1, 262: 1, 277: 1}
    tags = sorted([(t, 4, v) for t, v in longs.items()] + [(t, 3, v) for t, v in shorts.items()])
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", t, 4, 1, v) if kind == 4 else struct.pack("<HHIHH", t, 3, 1, v, 0) for t, kind, v in tags)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + b"\0" * 64


def png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def jp2(w: int, h: int) -> bytes:
    """The codestream's SIZ claims ``w x h``; the ihdr box keeps the small size (the one Pillow reports)."""
    data = bytearray(encoded(".jp2"))
    struct.pack_into(">II", data, data.index(b"\xff\x4f\xff\x51") + 8, w, h)
    return bytes(data)


def j2k(w: int, h: int) -> bytes:
    data = jp2(w, h)
    return data[data.index(b"\xff\x4f\xff\x51"):]


def avif(w: int, h: int) -> bytes:
    data = bytearray(encoded(".avif"))
    struct.pack_into(">II", data, data.index(b"ispe") + 8, w, h)
    return bytes(data)


# name -> (maker, the size it claims): 30000 x 30000 where the format allows it; WebP's fields have 14 bits and
# libavif refuses more than 16384 x 16384 on its own
BOMBS = {"bmp": bmp, "gif": gif, "hdr": hdr, "jpeg": jpeg, "webp": webp, "sun": sun, "ppm": ppm, "pgm": pgm,
         "pbm": pbm, "pam": pam, "pfm": pfm, "tiff": tiff, "png": png, "jp2": jp2, "j2k": j2k, "avif": avif}
BOMB_SIZE = {name: (16000, 15000) if name in ("webp", "avif") else (30000, 30000) for name in BOMBS}


def bomb(name: str) -> bytes:
    return BOMBS[name](*BOMB_SIZE[name])
