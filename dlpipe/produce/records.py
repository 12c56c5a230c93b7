"""Raw records as producers send them, and each kind of bad record the ingest must survive.

Pure functions: an image and its metadata in, Kafka (key, value) bytes out. The producer
uses them; the tests use them as ground truth, because every bad kind names the reason
code ingest must give it.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from dlpipe.contract.record import CURRENT_SCHEMA_VERSION, Reason


@dataclass(frozen=True)
class Image:
    """An encoded image and what a producer declares about it."""

    data: bytes
    format: str  # "PNG" or "JPEG"
    width: int
    height: int
    channels: int


def encode_png(pixels: Any) -> Image:
    """uint8 array (H, W) or (H, W, 3) -> PNG ``Image``."""
    from PIL import Image as PILImage

    im = PILImage.fromarray(pixels)
    out = io.BytesIO()
    im.save(out, format="PNG")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image(out.getvalue(), "PNG", im.width, im.height, channels)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(
    *, id: str, label: str, image: Image, source: str, event_time: datetime,
    schema_version: int = CURRENT_SCHEMA_VERSION, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid raw record (schema v1 field names) as a dict."""
    rec = {
        "schema_version": schema_version,
        "id": id,
        "event_time": iso(event_time),
        "source": source,
        "label": label,
        "image": {
            "format": image.format, "width": image.width, "height": image.height,
            "channels": image.channels, "data": base64.b64encode(image.data).decode("ascii"),
        },
    }
    return {**rec, **(extra or {})}


def to_v2(rec: dict[str, Any], *, capture_device: str = "scanner-1") -> dict[str, Any]:
    """The same record in schema v2: ``label`` renamed to ``class_name``, one field added."""
    out = {k: v for k, v in rec.items() if k != "label"}
    return {**out, "schema_version": 2, "class_name": rec["label"], "capture_device": capture_device}


def encode(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    kind: str
    expected_reason: str | None  # None: must end clean (or as a duplicate, kind "duplicate")


# -- bad kinds: each takes a valid record and returns the message that must be quarantined --

def _with(rec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**rec, **changes}


def _with_image(rec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**rec, "image": {**rec["image"], **changes}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@cache
def _huge_png() -> bytes:
    """A real, tiny PNG whose header says 5000 x 4000 pixels (20 M, over the 16.7 M limit)."""
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("1", (5000, 4000)).save(out, format="PNG")
    return out.getvalue()


def _truncated(rec: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode(rec["image"]["data"])
    return _with_image(rec, data=_b64(data[: max(len(data) // 2, 40)]))


def _too_large(rec: dict[str, Any]) -> dict[str, Any]:
    return _with_image(rec, data=_b64(_huge_png()), format="PNG", width=5000, height=4000, channels=1)


def late_event_time(now: datetime, watermark_delay_s: int) -> datetime:
    return now - timedelta(seconds=watermark_delay_s + 3600)


BadMaker = Callable[[dict[str, Any], datetime, int], tuple[bytes | None, bytes | None]]

BAD_KINDS: dict[str, tuple[str, BadMaker]] = {
    "empty_value": (Reason.EMPTY_VALUE, lambda r, now, d: (r["id"].encode(), b"")),
    "null_key": (Reason.NULL_KEY, lambda r, now, d: (None, encode(r))),
    "not_json": (Reason.NOT_JSON, lambda r, now, d: (r["id"].encode(), b"{this is not json")),
    "unknown_version": (Reason.UNKNOWN_SCHEMA_VERSION,
                        lambda r, now, d: (r["id"].encode(), encode(_with(r, schema_version=99)))),
    "missing_field": (Reason.MISSING_FIELD, lambda r, now, d: (
        r["id"].encode(), encode({k: v for k, v in r.items() if k != "label"}))),
    "extra_field": (Reason.EXTRA_FIELD,
                    lambda r, now, d: (r["id"].encode(), encode(_with(r, unexpected=1)))),
    "mistyped_field": (Reason.TYPE_MISMATCH, lambda r, now, d: (
        r["id"].encode(), encode(_with_image(r, width=str(r["image"]["width"]))))),
    "key_mismatch": (Reason.KEY_ID_MISMATCH,
                     lambda r, now, d: (b"some-other-id", encode(r))),
    "bad_event_time": (Reason.BAD_EVENT_TIME,
                       lambda r, now, d: (r["id"].encode(), encode(_with(r, event_time="yesterday")))),
    "unknown_label": (Reason.UNKNOWN_LABEL,
                      lambda r, now, d: (r["id"].encode(), encode(_with(r, label="eleven")))),
    "bad_base64": (Reason.BAD_BASE64, lambda r, now, d: (
        r["id"].encode(), encode(_with_image(r, data="!!this is not base64!!")))),
    "too_large": (Reason.IMAGE_TOO_LARGE, lambda r, now, d: (r["id"].encode(), encode(_too_large(r)))),
    "not_an_image": (Reason.UNSUPPORTED_FORMAT, lambda r, now, d: (
        r["id"].encode(), encode(_with_image(r, data=_b64(b"GIF89a" + b"\x00" * 32))))),
    "format_mismatch": (Reason.FORMAT_MISMATCH,
                        lambda r, now, d: (r["id"].encode(), encode(_with_image(r, format="JPEG")))),
    "truncated_image": (Reason.CORRUPT_IMAGE,
                        lambda r, now, d: (r["id"].encode(), encode(_truncated(r)))),
    "size_mismatch": (Reason.SIZE_MISMATCH, lambda r, now, d: (
        r["id"].encode(), encode(_with_image(r, width=r["image"]["width"] + 1)))),
    "late_event": (Reason.LATE_EVENT, lambda r, now, d: (
        r["id"].encode(), encode(_with(r, event_time=iso(late_event_time(now, d)))))),
    "rule_violation": ("RULE_SOURCE_KNOWN",
                       lambda r, now, d: (r["id"].encode(), encode(_with(r, source="   ")))),
}


def bad_message(kind: str, rec: dict[str, Any], *, now: datetime, watermark_delay_s: int) -> Message:
    reason, make = BAD_KINDS[kind]
    key, value = make(rec, now, watermark_delay_s)
    return Message(key=key, value=value, kind=kind, expected_reason=str(reason))
