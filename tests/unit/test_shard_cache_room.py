"""The shard cache's room: partial downloads count against ``cache_max_gb`` while their
process runs, and are deleted once it is gone (dlpipe.datasets.shard_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dlpipe.datasets.shard_cache import PARTIAL, ShardCache


def test_live_partials_count_dead_ones_are_deleted_and_old_shards_make_room(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    old, newer = tmp_path / "a-1000-x.tfrecord", tmp_path / "b-1000-y.tfrecord"
    live = tmp_path / f"c-1000-z.tfrecord{PARTIAL}{os.getpid()}-abcd1234"
    dead = tmp_path / f"d-5000-w.tfrecord{PARTIAL}{gone.stdout.strip()}-abcd1234"
    for path, size in [(old, 1000), (newer, 1000), (live, 1000), (dead, 5000)]:
        path.write_bytes(b"\0" * size)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    cache = ShardCache(client=None, cache_dir=tmp_path, max_bytes=3500, protect_s=60)  # type: ignore[arg-type]
    try:
        cache._make_room(1000, keep=tmp_path / "e.tfrecord")
    finally:
        cache.close()
    assert cache.reclaimed_partials == 1 and not dead.exists()
    # 1000 (newer, protected) + 1000 (live partial) + 1000 incoming fit only without the old one.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([newer.name, live.name])
