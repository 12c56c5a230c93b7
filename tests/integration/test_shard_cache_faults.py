"""The shard cache under faults (issue 17): a worker SIGKILLed mid-download, a full disk, and
two worker processes filling one cache at once, on real shards in MinIO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.core.faults import ENV as FAULT_ENV
from dlpipe.datasets.shard_cache import PARTIAL, RemoteShard, ShardCache, ShardError

pytestmark = pytest.mark.integration

FETCH = """
import json, sys
from pathlib import Path
from dlpipe.core.config import load_config
from dlpipe.datasets.shard_cache import RemoteShard, ShardCache

cache = ShardCache.from_config(load_config(), cache_dir=Path(sys.argv[1]))
for shard in json.loads(sys.argv[2]):
    path = cache.fetch(RemoteShard(**shard))
print(json.dumps({"downloaded": cache.downloaded_bytes}))
"""


def fetch_in(cache_dir: Path, shards: list[RemoteShard], env: dict[str, str]) -> subprocess.Popen[str]:
    """A worker process filling ``cache_dir`` with ``shards``."""
    spec = json.dumps([vars(s) for s in shards])
    return subprocess.Popen([sys.executable, "-c", FETCH, str(cache_dir), spec], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def remote(exported) -> list[RemoteShard]:
    return [RemoteShard.of(exported, s) for s in exported.shards_of("train")]


def test_a_download_killed_midway_is_deleted_by_the_next_one_and_counted_meanwhile(
        cfg, exported, test_env, tmp_path):
    first, second = remote(exported)[:2]
    worker = fetch_in(tmp_path, [first], {**test_env, FAULT_ENV: "shard_downloaded"})
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == -9, err[-2000:]
    (partial,) = [p for p in tmp_path.iterdir() if PARTIAL in p.name]
    assert partial.stat().st_size == first.size and str(worker.pid) in partial.name

    cache = ShardCache.from_config(cfg, cache_dir=tmp_path)
    try:
        path = cache.fetch(second)
    finally:
        cache.close()
    assert cache.reclaimed_partials == 1 and not partial.exists()
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_full_disk_names_the_shard_and_the_fix(cfg, exported, tmp_path):
    shard = max(remote(exported), key=lambda s: s.size)
    disk = tmp_path / "disk"
    disk.mkdir()
    size = max(4096, shard.size // 2 // 4096 * 4096)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"this test mounts a small tmpfs as root: {mounted.stderr}"
    try:
        cache = ShardCache.from_config(cfg, cache_dir=disk)
        try:
            with pytest.raises(ShardError) as full:
                cache.fetch(shard)
        finally:
            cache.close()
        assert f"no space left in the shard cache {disk} for shard {shard.uri}" in str(full.value)
        assert "fix: free space there, lower export.reader.cache_max_gb" in str(full.value)
        assert not list(disk.iterdir()), "the partial download is removed"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_two_workers_fill_one_cache_at_once_and_both_read_verified_shards(exported, test_env, tmp_path):
    shards = remote(exported)
    workers = [fetch_in(tmp_path, shards, test_env) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outs]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if PARTIAL in n]
    naming = ShardCache(client=None, cache_dir=tmp_path, max_bytes=0)  # type: ignore[arg-type]
    naming.close()
    assert names == sorted(naming.local_path(s).name for s in shards)
    for shard in shards:
        assert naming.local_path(shard).stat().st_size == shard.size
