"""OpenCV's own pixel limit, set from this library's before OpenCV is loaded: the second line of defence against
decompression bombs, behind the header check of :mod:`multilabel_ic.images`.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when ``cv2`` is loaded (a static of ``loadsave.cpp``; its default is
2**30 pixels), and refuses a larger image before allocating it. :func:`cap_opencv_pixels` runs when this module is
imported, first thing in ``multilabel_ic/__init__.py``, and sets it to this library's limit
(``MULTILABEL_IC_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`), unless it is set already, the limit is 0 (none), or ``cv2`` was imported earlier (then
it is too late, and OpenCV keeps its own default).
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEFAULT_MAX_PIXELS", "cap_opencv_pixels", "OPENCV_ENV"]

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit
OPENCV_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"


def cap_opencv_pixels() -> None:
    if "cv2" in sys.modules or OPENCV_ENV in os.environ:
        return
    setting = os.environ.get("MULTILABEL_IC_MAX_PIXELS", str(DEFAULT_MAX_PIXELS)).strip()
    if setting.isdigit() and int(setting) > 0:  # a bad setting is reported when an image is decoded
        os.environ[OPENCV_ENV] = setting


cap_opencv_pixels()
