"""A shard range whose body the store cut off mid-read (it restarted while streaming) is read
again, not taken for a short shard: botocore retries failed requests, not cut bodies."""

from __future__ import annotations

import os

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


def read_range(cache: ShardCache, shard: RemoteShard, path) -> bytes:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert cache._get_range(shard, 0, shard.size - 1, fd) == shard.size
    finally:
        os.close(fd)
    return path.read_bytes()


def test_a_cut_off_range_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_cache.time, "sleep", lambda s: None)
    shard = RemoteShard("b", "k", len(BODY), "crc")
    with cutting_server(BODY, cut=BODY_ATTEMPTS - 1) as url:
        assert read_range(cache_of(url, tmp_path), shard, tmp_path / "range") == BODY


def test_a_range_larger_than_a_chunk_is_written_whole(tmp_path, monkeypatch):
    body = os.urandom(shard_cache.CHUNK * 2 + 123)
    shard = RemoteShard("b", "k", len(body), "crc")
    with cutting_server(body, cut=0) as url:
        assert read_range(cache_of(url, tmp_path), shard, tmp_path / "range") == body


def test_a_range_cut_off_every_time_fails_naming_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_cache.time, "sleep", lambda s: None)
    shard = RemoteShard("b", "k", len(BODY), "crc")
    with cutting_server(BODY, cut=BODY_ATTEMPTS) as url, pytest.raises(Exception) as failed:
        read_range(cache_of(url, tmp_path), shard, tmp_path / "range")
    assert store_unreachable(failed.value) is not None, failed.value
