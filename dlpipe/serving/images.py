"""Checks an encoded image passes before TensorFlow decodes it.

Size limits are read from the header, so a decompression bomb is refused before it costs
memory. The format is told from the magic bytes and must be one of ``formats``; only that
format's Pillow plugin parses the header. ``Image.open`` is not used: its own bomb check
(above ``2 * Image.MAX_IMAGE_PIXELS``) raises before the size is known, which would make a
20000x20000 PNG "unreadable" (400) instead of "too large" (413), and changing Pillow's
limit is process-wide state. Every image over ``max_pixels`` by its header is a 413.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

from dlpipe.contract.images import MAGIC, sniff_format
from dlpipe.serving.protocol import RequestError

# (bytes, where) -> the image's pixel count (width x height) from its header
ImageCheck = Callable[[bytes, str], int]


def image_checker(*, max_bytes: int, max_pixels: int,
                  formats: tuple[str, ...] = tuple(MAGIC)) -> ImageCheck:
    def check(data: bytes, where: str) -> int:
        if len(data) > max_bytes:
            raise RequestError(f"{where}: image of {len(data):,} bytes; the limit is {max_bytes:,}",
                               status=413)
        kind = sniff_format(data)
        if kind not in formats:
            raise RequestError(f"{where}: not a {' or '.join(formats)} image")
        width, height = header_size(data, kind, where=where)
        if width <= 0 or height <= 0:
            raise RequestError(f"{where}: image header is damaged (size {width}x{height})")
        if width * height > max_pixels:
            raise RequestError(f"{where}: image of {width}x{height} pixels; the limit is "
                               f"{max_pixels:,} pixels", status=413)
        return width * height

    return check


def header_size(data: bytes, kind: str, *, where: str = "image") -> tuple[int, int]:
    """(width, height) from the header of a ``kind`` image, without decoding and without
    Pillow's decompression-bomb check (the caller applies its own limit)."""
    from PIL import Image

    Image.preinit()  # registers the PNG and JPEG plugins
    factory, _ = Image.OPEN[kind]
    try:
        with factory(io.BytesIO(data), "") as image:
            return image.size
    except (SyntaxError, OSError, ValueError, IndexError, TypeError, KeyError, EOFError,
            struct.error):
        raise RequestError(f"{where}: image header is damaged") from None
