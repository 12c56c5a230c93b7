"""Ray Data reading dlpipe's published shards: the peer side of ``bench_reader``.

Run by ``bench.peer_env`` with the interpreter of Ray's own virtualenv (Ray's pins are not
dlpipe's), never imported by dlpipe. It reads the same train shards from MinIO the way a Ray
user would: ``ray.data.read_tfrecords`` (pyarrow's S3 filesystem), ``iter_tf_batches``, and
dlpipe's own ``decode_images`` on each batch (a ``tf.function``, as in dlpipe's input
pipeline). Of the layouts tried, this is Ray's fastest here: decoding in ``map_batches``
tasks instead reached about half of it on 2 cores (TensorFlow in each Ray worker, and numpy
copies between them). It prints one JSON line: ``{"rates": [images/s per timed pass], "records": n}``.

Input (JSON on stdin): endpoint, region, paths (``bucket/key``), records, batch, height,
width, channels, repeats. The store's keys come from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` in the environment, never from argv.
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import urlsplit


def main() -> int:
    spec = json.load(sys.stdin)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import pyarrow.fs as pafs
    import ray
    import tensorflow as tf

    from models.preprocess import decode_images

    url = urlsplit(spec["endpoint"])
    fs = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=url.netloc, scheme=url.scheme, region=spec["region"])
    h, w, c = spec["height"], spec["width"], spec["channels"]

    @tf.function
    def decode(encoded):
        return decode_images(encoded, height=h, width=w, channels=c, resize=False)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False

    def one_pass() -> float:
        started = time.perf_counter()
        ds = ray.data.read_tfrecords(spec["paths"], filesystem=fs)
        n = 0
        for batch in ds.iter_tf_batches(batch_size=spec["batch"]):
            decode(batch["image"])
            n += int(batch["label"].shape[0])
        if n != spec["records"]:
            raise SystemExit(f"Ray read {n} records, the manifest says {spec['records']}")
        return n / (time.perf_counter() - started)

    one_pass()  # warm-up: Ray's workers start, the decode function is traced
    rates = [one_pass() for _ in range(spec["repeats"])]
    ray.shutdown()
    print(json.dumps({"rates": rates, "records": spec["records"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
