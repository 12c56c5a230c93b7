"""Decode, check and normalize images: the one step of ingest that needs Python.

``inspect_images`` is an Arrow UDF (Arrow batches in, Arrow batches out, no pandas), so
Python runs once per batch of thousands of rows, not once per row through pickling. Pillow
is imported inside, on the workers. Any exception from a decoder ends as CORRUPT_IMAGE for that row
only; a batch never fails because of one image.
"""

# No ``from __future__ import annotations`` here: arrow_udf reads the UDF's type hints, and
# string annotations fail with UNSUPPORTED_SIGNATURE.

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

from dlpipe.contract.images import sniff_format
from dlpipe.contract.record import Reason

RESULT_DDL = (
    "reason STRING, detail STRING, png BINARY, orig_format STRING, "
    "orig_width INT, orig_height INT, orig_channels INT"
)
_MODE_CHANNELS = {
    "1": 1, "L": 1, "P": 3, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I;16": 1, "I": 1, "F": 1,
}


@dataclass(frozen=True)
class ImageLimits:
    formats: tuple[str, ...]
    max_pixels: int
    max_bytes: int
    target_width: int
    target_height: int
    target_channels: int


def inspect_one(
    data_b64: str | None, declared_format: str | None, width: int | None, height: int | None,
    channels: int | None, limits: ImageLimits,
) -> dict[str, Any] | None:
    """Check one image against its declaration and the limits; normalize it if it passes."""
    if data_b64 is None:
        return None
    from PIL import Image

    def reject(reason: Reason, detail: str, **extra: Any) -> dict[str, Any]:
        return {"reason": str(reason), "detail": detail, **extra}

    if len(data_b64) > limits.max_bytes * 4 // 3 + 4:
        return reject(Reason.IMAGE_TOO_LARGE, f"encoded image over {limits.max_bytes} bytes")
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        return reject(Reason.BAD_BASE64, f"image.data is not base64: {exc}")
    if not raw:
        return reject(Reason.BAD_BASE64, "image.data decodes to no bytes")
    fmt = sniff_format(raw)
    if fmt is None or fmt not in limits.formats:
        return reject(Reason.UNSUPPORTED_FORMAT,
                      f"bytes are not {' or '.join(limits.formats)} (starts with {raw[:8].hex()})")
    if (declared_format or "").upper() != fmt:
        return reject(Reason.FORMAT_MISMATCH, f"declared {declared_format!r}, bytes are {fmt}")
    try:
        with Image.open(io.BytesIO(raw), formats=[fmt]) as im:
            w, h = im.size
            c = _MODE_CHANNELS.get(im.mode, len(im.getbands()))
            orig = {"orig_format": fmt, "orig_width": w, "orig_height": h, "orig_channels": c}
            # Checked from the header, before a single pixel is decoded.
            if w * h > limits.max_pixels:
                return reject(Reason.IMAGE_TOO_LARGE,
                              f"{w}x{h} = {w * h} pixels > {limits.max_pixels}", **orig)
            if (w, h, c) != (width, height, channels):
                return reject(Reason.SIZE_MISMATCH,
                              f"declared {width}x{height}x{channels}, image is {w}x{h}x{c}", **orig)
            im.load()  # decodes every pixel: a truncated or damaged file fails here
            already = (fmt == "PNG" and (w, h) == (limits.target_width, limits.target_height)
                       and im.mode == {1: "L", 3: "RGB"}[limits.target_channels])
            png = raw if already else _normalize(im, limits)
    except Image.DecompressionBombError as exc:  # Pillow's own header check, far above ours
        return reject(Reason.IMAGE_TOO_LARGE, f"over {limits.max_pixels} pixels by its header ({exc})")
    except Exception as exc:  # any decoder failure is this record's problem only
        # Pillow names the buffer by its address; drop it so a replay gives the same detail.
        why = re.sub(r" object at 0x[0-9a-f]+", "", str(exc))
        return reject(Reason.CORRUPT_IMAGE, f"{fmt} does not decode: {type(exc).__name__}: {why}")
    return {"reason": None, "detail": None, "png": png, **orig}


def _normalize(im: Any, limits: ImageLimits) -> bytes:
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[limits.target_channels]
    if im.mode != mode:
        im = im.convert(mode)
    size = (limits.target_width, limits.target_height)
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    im.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def make_inspect_udf(limits: ImageLimits):
    """The scalar Arrow UDF (data, format, width, height, channels) -> struct(RESULT_DDL).

    Arrow in, Arrow out: the struct is built column by column with pyarrow, with no pandas
    conversion in between.
    """
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    names = [col.split()[0] for col in RESULT_DDL.split(", ")]
    types = [pa.string(), pa.string(), pa.binary(), pa.string(), pa.int32(), pa.int32(), pa.int32()]

    @arrow_udf(RESULT_DDL)
    def inspect_images(data: pa.Array, fmt: pa.Array, w: pa.Array, h: pa.Array,
                       c: pa.Array) -> pa.Array:
        results = [
            inspect_one(d, f, wi, hi, ci, limits)
            for d, f, wi, hi, ci in zip(data.to_pylist(), fmt.to_pylist(), w.to_pylist(),
                                        h.to_pylist(), c.to_pylist(), strict=True)
        ]
        columns = [pa.array([(r or {}).get(n) for r in results], type=t)
                   for n, t in zip(names, types, strict=True)]
        mask = pa.array([r is None for r in results])
        return pa.StructArray.from_arrays(columns, names=names, mask=mask)

    return inspect_images
