"""The size an encoded image will decode to, read from its header the way OpenCV's decoder for it reads it.

OpenCV picks a decoder by the file's first bytes, trying its decoders in a fixed order (``loadsave.cpp``), and
allocates the image from that decoder's header before it reads any pixel. :func:`header_size` makes the same choice
and reads the same header, so a pixel limit checked on its answer holds for every format OpenCV decodes:

===============  ==================================  ===============================================
format           signature (OpenCV's order)          size read from
===============  ==================================  ===============================================
BMP              ``BM``                              the DIB header (here)
GIF              ``GIF87a`` / ``GIF89a``             the logical screen and every image descriptor
AVIF             ``ftyp`` box, brand avif/avis       libavif through Pillow
Radiance HDR     ``#?RADIANCE`` / ``#?RGBE``         the resolution line (here)
JPEG             ``FF D8 FF``                        the frame header through Pillow
WebP             ``RIFF....WEBP``                    libwebp through Pillow
Sun raster       ``59 A6 6A 95``                     the 32-byte header (here)
PBM/PGM/PPM      ``P1``..``P6`` and a space          the text header (here)
PAM              ``P7`` and a space                  ``WIDTH`` / ``HEIGHT`` (here)
PFM              ``PF`` / ``Pf`` and a space         the text header (here)
TIFF             ``II*\\0`` / ``MM\\0*`` (BigTIFF too)  the first IFD through Pillow
PNG              ``\\x89PNG\\r\\n\\x1a\\n``              IHDR (here)
JPEG 2000        JP2 box / J2K ``FF 4F FF 51``       the codestream's SIZ marker and the ihdr box (here)
===============  ==================================  ===============================================

Bytes that none of these signatures match are not decoded by OpenCV at all. A format that matches but whose header
cannot be read is refused (:class:`HeaderError`): it is never decoded unchecked.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

__all__ = ["header_size", "HeaderError", "FORMATS"]

FORMATS = ("BMP", "GIF", "AVIF", "HDR", "JPEG", "WebP", "Sun raster", "PBM/PGM/PPM", "PAM", "PFM", "TIFF", "PNG",
           "JPEG 2000")

_SPACE = b" \t\n\r\x0b\x0c"
_JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K = b"\xff\x4f\xff\x51"


class HeaderError(ValueError):
    """A file whose signature names a format OpenCV decodes, but whose header says no size this reader can trust."""


def _u(fmt: str, data: bytes, offset: int) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise HeaderError("the header is truncated") from None


def _bmp(data: bytes) -> tuple[int, int]:
    (header,) = _u("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER
        w, h = _u("<HH", data, 18)
        return w, h
    w, h = _u("<ii", data, 18)
    return abs(w), abs(h)


def _gif(data: bytes) -> tuple[int, int]:
    """The logical screen, grown to hold every image descriptor (a frame may claim more than the screen)."""
    w, h, flags = _u("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor
            left, top, fw, fh, fflags = _u("<HHHHB", data, pos + 1)
            w, h = max(w, left + fw), max(h, top + fh)
            pos += 10 + (3 << ((fflags & 7) + 1) if fflags & 0x80 else 0) + 1  # + LZW minimum code size
        else:
            break  # not a GIF block: the decoders stop here too
        while pos < len(data) and data[pos]:  # sub-blocks
            pos += data[pos] + 1
        pos += 1
    return w, h


def _hdr(data: bytes) -> tuple[int, int]:
    m = re.search(rb"\n\n([-+][XY]) +(\d+) +([-+][XY]) +(\d+)", data[:65536])
    if not m:
        raise HeaderError("no resolution line ('-Y height +X width') after the header")
    first, second = int(m.group(2)), int(m.group(4))
    return (second, first) if m.group(1).endswith(b"Y") else (first, second)


def _sun(data: bytes) -> tuple[int, int]:
    w, h = _u(">II", data, 4)
    return w, h


def _pnm_tokens(data: bytes, count: int) -> list[int]:
    """The first ``count`` integers after the two-byte magic number, skipping blanks and ``#`` comments."""
    out: list[int] = []
    pos = 2
    while len(out) < count:
        while pos < len(data) and (data[pos] in _SPACE or data[pos] == 0x23):
            if data[pos] == 0x23:
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end
            pos += 1
        m = re.compile(rb"[-+]?\d+").match(data, pos)
        if not m:
            raise HeaderError("the width and height are not numbers")
        out.append(int(m.group()))
        pos = m.end()
    return out


def _pxm(data: bytes) -> tuple[int, int]:
    w, h = _pnm_tokens(data, 2)
    return abs(w), abs(h)


def _pam(data: bytes) -> tuple[int, int]:
    head = data[:65536].split(b"ENDHDR", 1)[0]
    fields = dict(re.findall(rb"^\s*(WIDTH|HEIGHT)\s+([-+]?\d+)", head, re.MULTILINE))
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        raise HeaderError("no WIDTH and HEIGHT lines in the header")
    return abs(int(fields[b"WIDTH"])), abs(int(fields[b"HEIGHT"]))


def _png(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise HeaderError("the first chunk is not IHDR")
    w, h = _u(">II", data, 16)
    return w, h


def _siz(data: bytes, pos: int) -> tuple[int, int]:
    if data[pos:pos + 4] != _J2K:
        raise HeaderError("the codestream does not start with SOC and SIZ")
    xsiz, ysiz, x0, y0 = _u(">IIII", data, pos + 8)
    return max(xsiz - x0, 0), max(ysiz - y0, 0)


def _jp2(data: bytes) -> tuple[int, int]:
    """The codestream's SIZ (what OpenJPEG allocates) and the ihdr box, the larger of each."""
    w = h = 0
    pos, end, found = 0, len(data), False
    while pos + 8 <= end:
        length, kind = _u(">I4s", data, pos)
        head = 8
        if length == 1:
            (length,) = _u(">Q", data, pos + 8)
            head = 16
        elif length == 0:
            length = end - pos
        if length < head:
            raise HeaderError(f"a box of {length} bytes")
        if kind == b"jp2h":  # a super box: walk into it
            inner = pos + head
            while inner + 8 <= pos + length:
                ilen, ikind = _u(">I4s", data, inner)
                if ikind == b"ihdr":
                    ih, iw = _u(">II", data, inner + 8)
                    w, h = max(w, iw), max(h, ih)
                if ilen < 8:
                    break
                inner += ilen
        elif kind == b"jp2c":
            cw, ch = _siz(data, pos + head)
            w, h, found = max(w, cw), max(h, ch), True
            break
        pos += length
    if not found:
        raise HeaderError("no codestream (jp2c box)")
    return w, h


def _pillow(data: bytes, formats: tuple[str, ...]) -> tuple[int, int]:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data), formats=list(formats)) as im:
                return im.size
        except Image.DecompressionBombError as exc:  # Pillow's own limit: its message has the pixel count
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return (int(found.group(1)) if found else 1 << 62), 1
        except Exception as exc:  # noqa: BLE001 - any failure of the parser means: size unknown, so refused
            raise HeaderError(f"its header cannot be read ({type(exc).__name__})") from None


def _avif_signature(data: bytes) -> bool:
    if data[4:8] != b"ftyp":
        return False
    (size,) = struct.unpack_from(">I", data, 0) if len(data) >= 4 else (0,)
    brands = data[8:12] + data[16:max(16, min(size, 64))]
    return any(brands[i:i + 4] in (b"avif", b"avis") for i in range(0, len(brands), 4))


def _tiff_signature(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# (name, signature test, size reader) in the order of OpenCV's decoder list
_DECODERS = (
    ("BMP", lambda d: d[:2] == b"BM", _bmp),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ("AVIF", _avif_signature, lambda d: _pillow(d, ("AVIF",))),
    ("HDR", lambda d: d.startswith((b"#?RADIANCE", b"#?RGBE")), _hdr),
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff", lambda d: _pillow(d, ("JPEG", "MPO"))),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", lambda d: _pillow(d, ("WEBP",))),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95", _sun),
    ("PBM/PGM/PPM", lambda d: len(d) >= 3 and d[:1] == b"P" and d[1:2] in b"123456" and d[2] in _SPACE, _pxm),
    ("PAM", lambda d: len(d) >= 3 and d[:2] == b"P7" and d[2] in _SPACE, _pam),
    ("PFM", lambda d: len(d) >= 3 and d[:2] in (b"PF", b"Pf") and d[2] in _SPACE, _pxm),
    ("TIFF", _tiff_signature, lambda d: _pillow(d, ("TIFF",))),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ("JPEG 2000", lambda d: d[:12] == _JP2, _jp2),
    ("JPEG 2000", lambda d: d[:4] == _J2K, lambda d: _siz(d, 0)),
)


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` from the header of the decoder OpenCV would use; None when OpenCV has no decoder
    for these bytes. :class:`HeaderError` (naming the format) when it has one but the header cannot be read.

    Beyond Pillow's own bomb limit (2 x 89 Mpx) the formats sized through Pillow give ``(format, pixels, 1)``."""
    data = bytes(data)
    for name, accepts, size in _DECODERS:
        if accepts(data):
            try:
                w, h = size(data)
            except HeaderError as exc:
                raise HeaderError(f"a {name} file, but {exc}") from None
            return name, int(w), int(h)
    return None
