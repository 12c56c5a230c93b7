"""Write TFRecord shards from Spark tasks straight to the object store's staging prefix.

Runs in the Python workers through ``mapInArrow``: rows arrive sorted by ``part`` and
``id``, so each shard is one contiguous run and its bytes depend on the data only. A shard
is framed into a local temp file (CRC of the whole file kept on the way), uploaded with
multipart, and reported as one output row; the driver checks those rows against the table
before it publishes anything. Credentials are resolved on the worker from its environment
(or the local stack's file), never shipped in the task.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlpipe.core.config import Config

if TYPE_CHECKING:
    import pyarrow as pa

OUTPUT_DDL = ("part INT, split STRING, path STRING, records BIGINT, bytes BIGINT, "
              "crc32c STRING, by_class MAP<STRING, BIGINT>")
INPUT_COLUMNS = ("part", "id", "label", "label_name", "image", "height", "width", "channels")


@dataclass(frozen=True)
class ShardTarget:
    split: str
    path: str  # relative to the dataset folder, e.g. train/part-00000-of-00004.tfrecord


class _OpenShard:
    def __init__(self, part: int, target: ShardTarget, tmp_dir: str) -> None:
        import google_crc32c

        self.part, self.target = part, target
        fd, self.tmp_path = tempfile.mkstemp(suffix=".tfrecord", dir=tmp_dir)
        self.fh = os.fdopen(fd, "wb", buffering=4 << 20)
        self.crc = google_crc32c.Checksum()
        self.records, self.bytes = 0, 0
        self.by_class: Counter[str] = Counter()

    def write(self, framed: bytes, label_name: str) -> None:
        self.fh.write(framed)
        self.crc.update(framed)
        self.records += 1
        self.bytes += len(framed)
        self.by_class[label_name] += 1


def make_shard_writer(
    cfg: Config, *, bucket: str, staging_prefix: str, targets: Mapping[int, ShardTarget],
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: sorted rows in, one row per uploaded shard out."""
    targets = dict(targets)

    def write_shards(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from boto3.s3.transfer import TransferConfig

        from dlpipe.core.s3 import s3_client
        from dlpipe.datasets.tfrecord import encode_example, frame

        schema = pa.schema([
            ("part", pa.int32()), ("split", pa.string()), ("path", pa.string()),
            ("records", pa.int64()), ("bytes", pa.int64()), ("crc32c", pa.string()),
            ("by_class", pa.map_(pa.string(), pa.int64())),
        ])
        transfer = TransferConfig(multipart_threshold=32 << 20, multipart_chunksize=16 << 20,
                                  max_concurrency=4)
        client = None

        def finish(shard: _OpenShard) -> pa.RecordBatch:
            nonlocal client
            shard.fh.close()
            client = client or s3_client(cfg)
            key = f"{staging_prefix}/{shard.target.path}"
            try:
                client.upload_file(shard.tmp_path, bucket, key, Config=transfer)
            finally:
                os.unlink(shard.tmp_path)
            row = {"part": shard.part, "split": shard.target.split, "path": shard.target.path,
                   "records": shard.records, "bytes": shard.bytes,
                   "crc32c": shard.crc.hexdigest().decode(),
                   "by_class": sorted(shard.by_class.items())}
            return pa.RecordBatch.from_pylist([row], schema=schema)

        with tempfile.TemporaryDirectory(prefix="dlpipe-export-") as tmp_dir:
            current: _OpenShard | None = None
            for batch in batches:
                cols = {name: batch.column(name).to_pylist() for name in INPUT_COLUMNS}
                for i in range(batch.num_rows):
                    part = cols["part"][i]
                    if current is None or current.part != part:
                        if current is not None:
                            yield finish(current)
                        current = _OpenShard(part, targets[part], tmp_dir)
                    record = encode_example({
                        "image": cols["image"][i], "label": cols["label"][i], "id": cols["id"][i],
                        "height": cols["height"][i], "width": cols["width"][i],
                        "channels": cols["channels"][i],
                    })
                    current.write(frame(record), cols["label_name"][i])
            if current is not None:
                yield finish(current)

    return write_shards
