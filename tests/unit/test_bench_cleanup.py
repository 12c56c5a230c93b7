"""After a bench run the stopped stack's marked-deleted data goes too (MinIO's trash, Kafka's
``*-delete`` topic folders), and nothing else of the stack's state."""

from __future__ import annotations

from bench.cleanup import reclaim_disk


def test_reclaim_removes_only_what_the_services_marked_deleted(tmp_path):
    trash = tmp_path / "minio" / "data" / ".minio.sys" / "tmp" / ".trash"
    (trash / "a1").mkdir(parents=True)
    (trash / "a1" / "part.1").write_bytes(b"x" * 1000)
    kafka = tmp_path / "kafka" / "data"
    (kafka / "bench.raw.x-0.abc-delete").mkdir(parents=True)
    (kafka / "bench.raw.x-0.abc-delete" / "0.log").write_bytes(b"y" * 500)
    (kafka / "dlpipe.digits.raw-0").mkdir()
    (kafka / "dlpipe.digits.raw-0" / "0.log").write_bytes(b"z")
    bucket = tmp_path / "minio" / "data" / "dlpipe-lake"
    bucket.mkdir(parents=True)

    assert reclaim_disk(tmp_path) == 1500
    assert not any(trash.iterdir())
    assert sorted(p.name for p in kafka.iterdir()) == ["dlpipe.digits.raw-0"]
    assert bucket.is_dir()
    assert reclaim_disk(tmp_path) == 0  # nothing left, and a stack never started is fine too
    assert reclaim_disk(tmp_path / "never-started") == 0
