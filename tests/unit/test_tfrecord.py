"""Tiny synthetic TFRecords written by dlpipe.datasets.tfrecord, read by TensorFlow itself."""

from __future__ import annotations

import io

import pytest

from dlpipe.datasets.tfrecord import FEATURES, encode_example, frame, read_records

RECORDS = [
    {"image": b"\x89PNG\r\n" + bytes(range(256)) * 40, "label": 7, "id": "digits-000001",
     "height": 32, "width": 32, "channels": 3},
    {"image": b"", "label": 0, "id": "", "height": 0, "width": 1, "channels": 1},
    {"image": b"x", "label": 2**40, "id": "ünïcode/id", "height": -1, "width": 300, "channels": 4},
]


def tf_spec():
    import tensorflow as tf

    types = {"string": tf.string, "int64": tf.int64}
    return {name: tf.io.FixedLenFeature([], types[dtype]) for name, (dtype, _) in FEATURES.items()}


def test_tensorflow_reads_and_parses_what_we_write(tmp_path):
    import tensorflow as tf

    path = tmp_path / "tiny.tfrecord"
    path.write_bytes(b"".join(frame(encode_example(r)) for r in RECORDS))
    (batch,) = list(tf.data.TFRecordDataset(str(path)).batch(10))
    parsed = tf.io.parse_example(batch, tf_spec())
    for name in FEATURES:
        got = parsed[name].numpy().tolist()
        want = [r[name].encode() if isinstance(r[name], str) else r[name] for r in RECORDS]
        assert got == want, name


def test_encoding_is_deterministic_and_matches_protobuf():
    import tensorflow as tf

    encoded = encode_example(RECORDS[0])
    assert encoded == encode_example(dict(reversed(list(RECORDS[0].items()))))
    example = tf.train.Example.FromString(encoded)
    assert example.features.feature["label"].int64_list.value == [7]
    assert example.features.feature["id"].bytes_list.value == [b"digits-000001"]


def test_framing_crc_is_the_one_tensorflow_checks(tmp_path):
    import tensorflow as tf

    data = bytearray(frame(encode_example(RECORDS[0])))
    data[40] ^= 0xFF
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))
    with pytest.raises(ValueError, match="corrupt record at byte 0"):
        list(read_records(io.BytesIO(bytes(data)), name="bad"))


def test_read_records_round_trip_and_truncation():
    data = b"".join(frame(encode_example(r)) for r in RECORDS)
    assert list(read_records(io.BytesIO(data))) == [encode_example(r) for r in RECORDS]
    with pytest.raises(ValueError, match="truncated"):
        list(read_records(io.BytesIO(data[:-3])))
