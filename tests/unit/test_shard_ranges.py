"""A shard range whose body the store cut off mid-read (it restarted while streaming) is read
again, not taken for a short shard: botocore retries failed requests, not cut bodies."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from dlpipe.core.errors import store_unreachable
from dlpipe.datasets import shard_cache
from dlpipe.datasets.shard_cache import BODY_ATTEMPTS, RemoteShard, ShardCache
from tests.unit.cutting_server import cutting_server

BODY = bytes(range(256)) * 8


def cache_of(url: str, tmp_path) -> ShardCache:
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    return ShardCache(client, tmp_path, max_bytes=1 << 20)


def test_a_cut_off_range_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_cache.time, "sleep", lambda s: None)
    shard = RemoteShard("b", "k", len(BODY), "crc")
    with cutting_server(BODY, cut=BODY_ATTEMPTS - 1) as url:
        assert cache_of(url, tmp_path)._get_range(shard, 0, len(BODY) - 1) == BODY


def test_a_range_cut_off_every_time_fails_naming_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_cache.time, "sleep", lambda s: None)
    shard = RemoteShard("b", "k", len(BODY), "crc")
    with cutting_server(BODY, cut=BODY_ATTEMPTS) as url, pytest.raises(Exception) as failed:
        cache_of(url, tmp_path)._get_range(shard, 0, len(BODY) - 1)
    assert store_unreachable(failed.value) is not None, failed.value
