"""Ingest's image inspector: any image over max_pixels by its header is IMAGE_TOO_LARGE,
whatever Pillow's own decompression-bomb limit, and is never decoded."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from dlpipe.contract.record import Reason
from spark_jobs.ingest.images import ImageLimits, inspect_one

LIMITS = ImageLimits(("PNG", "JPEG"), max_pixels=16_777_216, max_bytes=8_388_608,
                     target_width=8, target_height=8, target_channels=1)


def png_header(width: int, height: int) -> bytes:
    """A PNG a few dozen bytes long whose header declares ``width`` x ``height`` grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height"), [(5000, 4000), (20000, 20000), (100_000, 100_000)])
def test_an_image_over_the_pixel_limit_by_its_header_is_too_large(width, height):
    data = base64.b64encode(png_header(width, height)).decode()
    result = inspect_one(data, "PNG", width, height, 1, LIMITS)
    assert result["reason"] == Reason.IMAGE_TOO_LARGE, result
    assert str(LIMITS.max_pixels) in result["detail"]
