"""TFRecord files of ``tf.train.Example`` written without TensorFlow.

Export tasks run in Spark's Python workers, where importing TensorFlow would cost seconds
per worker and gigabytes per executor image. The two formats are small and stable, so they
are encoded here directly:

- ``tf.train.Example`` is protobuf: ``Features{map<string, Feature>}`` with ``BytesList``
  and ``Int64List`` values. Map entries are written in a fixed order, so the same record
  always encodes to the same bytes (and a re-export to byte-identical shards).
- A TFRecord file is a sequence of ``uint64 length, uint32 masked_crc32c(length), data,
  uint32 masked_crc32c(data)``, all little-endian (tensorflow/core/lib/io/record_writer.cc).

The tests parse what this writes with ``tf.data.TFRecordDataset`` and ``tf.io.parse_example``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

# The feature spec of every exported record: name -> (dtype, what it holds). The manifest
# and docs/data-contract.md carry it; models/input.py builds tf.io.FixedLenFeature from it.
FEATURES: dict[str, tuple[str, str]] = {
    "image": ("string", "the encoded image file (PNG), height x width x channels"),
    "label": ("int64", "class index into the manifest's `classes`"),
    "id": ("string", "the record id (the Kafka key)"),
    "height": ("int64", "image height in pixels"),
    "width": ("int64", "image width in pixels"),
    "channels": ("int64", "image channels"),
}
_BYTES_FEATURES = tuple(k for k, (dtype, _) in FEATURES.items() if dtype == "string")

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its CRC, the record, its CRC."""
    length = _U64.pack(len(record))
    return b"".join((length, _U32.pack(masked_crc32c(length)), record,
                     _U32.pack(masked_crc32c(record))))


def read_records(fh: BinaryIO, *, name: str = "<stream>") -> Iterator[bytes]:
    """Records of a TFRecord stream, checking both CRCs (for tests and tools; TF reads shards)."""
    offset = 0
    while header := fh.read(12):
        if len(header) < 12:
            raise ValueError(f"{name}: truncated record header at byte {offset}")
        length_bytes, (length_crc,) = header[:8], _U32.unpack(header[8:])
        if masked_crc32c(length_bytes) != length_crc:
            raise ValueError(f"{name}: corrupt length at byte {offset}")
        (length,) = _U64.unpack(length_bytes)
        body = fh.read(length + 4)
        if len(body) < length + 4:
            raise ValueError(f"{name}: truncated record at byte {offset}")
        record, (data_crc,) = body[:length], _U32.unpack(body[length:])
        if masked_crc32c(record) != data_crc:
            raise ValueError(f"{name}: corrupt record at byte {offset}")
        offset += 12 + length + 4
        yield record


# -- protobuf wire format --------------------------------------------------------------

def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is encoded as its two's complement, 10 bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_varint(i) for i in range(1 << 14)]  # lengths and ints below 16384: table lookup


def _v(value: int) -> bytes:
    return _SMALL[value] if 0 <= value < 16384 else _varint(value)


def _len_field(number: int, payload: bytes) -> bytes:
    return _v(number << 3 | 2) + _v(len(payload)) + payload


_KEYS = {name: _len_field(1, name.encode()) for name in FEATURES}


def _entry(name: str, feature: bytes) -> bytes:
    """One map entry of Features.feature: key = name, value = feature."""
    body = _KEYS[name] + b"\x12" + _v(len(feature)) + feature
    return b"\x0a" + _v(len(body)) + body


def _bytes_feature(value: bytes) -> bytes:
    inner = b"\x0a" + _v(len(value)) + value  # BytesList.value
    return b"\x0a" + _v(len(inner)) + inner  # Feature.bytes_list


def _int64_feature(value: int) -> bytes:
    packed = _v(value)
    inner = b"\x0a" + _v(len(packed)) + packed  # Int64List.value, packed
    return b"\x1a" + _v(len(inner)) + inner  # Feature.int64_list


def encode_example(values: dict[str, bytes | str | int]) -> bytes:
    """A serialized ``tf.train.Example`` with exactly the ``FEATURES``, in their order."""
    parts = []
    for name in FEATURES:
        value = values[name]
        if name in _BYTES_FEATURES:
            feature = _bytes_feature(value.encode() if isinstance(value, str) else value)
        else:
            feature = _int64_feature(value)
        parts.append(_entry(name, feature))
    features = b"".join(parts)
    return b"\x0a" + _v(len(features)) + features  # Example.features
