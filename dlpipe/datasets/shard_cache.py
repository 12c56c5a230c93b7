"""A bounded local cache of verified dataset shards, filled ahead of the reader.

TensorFlow 2.21 has no ``s3://`` filesystem, and reading records over HTTP one by one would
starve training. Instead each shard is fetched whole with parallel ranged GETs into a
``.partial`` file, checked (size and CRC32C from the manifest), and only then renamed into
place: a path this cache hands out is always a complete, verified shard, which
``tf.data.TFRecordDataset`` then reads at local-disk speed. ``stream`` keeps the next few
shards downloading while the current ones are read.

Files are named by bucket, key, size and CRC, so a re-export with new content never hits a
stale entry. The cache is shared by processes (each training worker) on one machine;
eviction removes the least recently used files beyond ``max_bytes`` but never one used in
the last ``protect_s`` seconds (a reader may be about to open it). A ``.partial`` file names
the process writing it: one whose process is gone (a worker SIGKILLed mid-download) is
deleted by the next download, and one being written counts against ``max_bytes``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError
from dlpipe.core.faults import fault_point
from dlpipe.core.s3 import object_exists

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from dlpipe.datasets.manifest import Manifest, Shard


BODY_ATTEMPTS = 4  # reads of one range whose body was cut off: 1 + 2 + 4 s of backoff in all
CHUNK = 1 << 20  # a range's body is written to the cache file in pieces of this size


class ShardError(DlpipeError):
    """A shard listed in a manifest is missing or not what the manifest says."""


@dataclass(frozen=True)
class RemoteShard:
    bucket: str
    key: str
    size: int
    crc32c: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def of(cls, manifest: Manifest, shard: Shard) -> RemoteShard:
        return cls(manifest.bucket, manifest.key(shard), shard.bytes, shard.crc32c)


class ShardCache:
    def __init__(self, client: S3Client, cache_dir: Path, *, max_bytes: int,
                 threads: int = 8, range_bytes: int = 8 << 20, protect_s: float = 120.0) -> None:
        self.client = client
        self.dir = Path(cache_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.range_bytes = range_bytes
        self.protect_s = protect_s
        self._ranges = ThreadPoolExecutor(threads, thread_name_prefix="shard-range")
        self._lock = threading.Lock()
        self._inflight: dict[Path, Future[Path]] = {}
        self.downloaded_bytes = 0
        self.reclaimed_partials = 0  # partial downloads of dead processes deleted

    @classmethod
    def from_config(cls, cfg: Config, *, cache_dir: Path | None = None) -> ShardCache:
        from dlpipe.core.s3 import s3_client

        reader = cfg.export.reader
        return cls(s3_client(cfg, max_pool_connections=max(16, reader.download_threads * 2)),
                   cache_dir or reader.cache_dir, max_bytes=int(reader.cache_max_gb * 2**30),
                   threads=reader.download_threads, range_bytes=reader.range_mb << 20)

    def close(self) -> None:
        self._ranges.shutdown(wait=False, cancel_futures=True)

    def local_path(self, shard: RemoteShard) -> Path:
        tag = hashlib.sha1(f"{shard.bucket}/{shard.key}".encode()).hexdigest()[:16]
        return self.dir / f"{tag}-{shard.size}-{shard.crc32c}.tfrecord"

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, shard: RemoteShard) -> Path:
        """The verified local copy of ``shard``, downloading it if needed (blocking)."""
        return self.fetch_async(shard).result()

    def fetch_async(self, shard: RemoteShard) -> Future[Path]:
        path = self.local_path(shard)
        with self._lock:
            if path in self._inflight:
                return self._inflight[path]
            done: Future[Path] = Future()
            if path.is_file() and path.stat().st_size == shard.size:
                os.utime(path)
                done.set_result(path)
                return done
            self._inflight[path] = done
        threading.Thread(target=self._download, args=(shard, path, done), daemon=True,
                         name=f"shard-{path.name[:16]}").start()
        return done

    def start(self, shards: Sequence[RemoteShard], *, ahead: int = 2) -> list[Future[Path]]:
        """Start the downloads ``stream(shards, ahead=ahead)`` begins with, before it is asked
        for a path (a later ``stream`` of the same shards joins them)."""
        return [self.fetch_async(shard) for shard in shards[:ahead + 1]]

    def stream(self, shards: Sequence[RemoteShard], *, ahead: int = 2) -> Iterator[str]:
        """Local paths of ``shards`` in order, keeping ``ahead`` more downloading meanwhile."""
        pending = self.start(shards, ahead=ahead)
        upcoming = iter(shards[len(pending):])
        while pending:
            path = pending.pop(0).result()
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append(self.fetch_async(nxt))
            os.utime(path)
            yield str(path)

    def _download(self, shard: RemoteShard, path: Path, done: Future[Path]) -> None:
        try:
            self._make_room(shard.size, keep=path)
            partial = path.with_name(f"{path.name}{PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                self._get_into(shard, partial)
                fault_point("shard_downloaded")  # the fault tests' hook: a worker killed here
                self._verify(shard, partial)
                os.replace(partial, path)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise ShardError(
                    f"no space left in the shard cache {self.dir} for shard {shard.uri} "
                    f"({shard.size:,} bytes): {exc.strerror}",
                    fix="free space there, lower export.reader.cache_max_gb below the free space, "
                        "or point export.reader.cache_dir at a bigger disk") from None
            finally:
                partial.unlink(missing_ok=True)
            with self._lock:
                self.downloaded_bytes += shard.size
            done.set_result(path)
        except BaseException as exc:
            done.set_exception(exc)
        finally:
            with self._lock:
                self._inflight.pop(path, None)

    def _get_into(self, shard: RemoteShard, partial: Path) -> None:
        fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            if shard.size == 0:
                self._head(shard)
                return
            os.ftruncate(fd, shard.size)

            def get(offset: int) -> None:
                end = min(offset + self.range_bytes, shard.size) - 1
                got = self._get_range(shard, offset, end, fd)
                if got != end - offset + 1:
                    raise ShardError(f"shard {shard.uri} is shorter than the manifest's "
                                     f"{shard.size} bytes (got {offset + got} at most)",
                                     fix="re-export the dataset version (dlpipe export --overwrite)")

            for future in [self._ranges.submit(get, o) for o in range(0, shard.size, self.range_bytes)]:
                future.result()
        finally:
            os.close(fd)

    def _get_range(self, shard: RemoteShard, start: int, end: int, fd: int) -> int:
        """One range written into ``fd`` at its offset; the bytes written. botocore retries a
        request that fails, not a body cut off mid-read (the store restarted while it
        streamed): that read is retried here, up to ``BODY_ATTEMPTS``, and the last failure
        names the store (``store_unreachable``), never a short shard."""
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError

        for attempt in range(1, BODY_ATTEMPTS):
            try:
                return self._get_range_once(shard, start, end, fd)
            except (ResponseStreamingError, IncompleteReadError):  # cut off mid-read, or at a chunk's end
                time.sleep(0.5 * 2 ** attempt)
        return self._get_range_once(shard, start, end, fd)

    def _get_range_once(self, shard: RemoteShard, start: int, end: int, fd: int) -> int:
        """Written as the body arrives, ``CHUNK`` at a time: no buffer of the range's size,
        whose fresh pages cost more than the copy (a range-sized bytes per GET made a cold
        reader's downloads about half as fast in a process that had run for a while)."""
        try:
            body = self.client.get_object(Bucket=shard.bucket, Key=shard.key,
                                          Range=f"bytes={start}-{end}")["Body"]
            offset = start
            for chunk in body.iter_chunks(CHUNK):
                _pwrite_all(fd, chunk, offset)
                offset += len(chunk)
            return offset - start
        except self.client.exceptions.NoSuchKey:
            raise self._missing(shard) from None
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                raise ShardError(f"shard {shard.uri} is shorter than the manifest's {shard.size} bytes",
                                 fix="re-export the dataset version (dlpipe export --overwrite)") from None
            raise

    def _head(self, shard: RemoteShard) -> None:
        if not object_exists(self.client, shard.bucket, shard.key):
            raise self._missing(shard)

    @staticmethod
    def _missing(shard: RemoteShard) -> ShardError:
        return ShardError(f"shard {shard.uri} is listed in its manifest but does not exist",
                          fix="re-export the dataset version (dlpipe export --overwrite)")

    @staticmethod
    def _verify(shard: RemoteShard, partial: Path) -> None:
        import google_crc32c

        size = partial.stat().st_size
        crc = google_crc32c.Checksum()
        with open(partial, "rb") as fh:
            while chunk := fh.read(8 << 20):
                crc.update(chunk)
        actual = crc.hexdigest().decode()
        if size != shard.size or actual != shard.crc32c:
            raise ShardError(
                f"shard {shard.uri} is corrupt: {size} bytes with CRC32C {actual}, but the "
                f"manifest says {shard.size} bytes with CRC32C {shard.crc32c}",
                fix="re-export the dataset version (dlpipe export --overwrite)",
            )

    def _make_room(self, incoming: int, *, keep: Path) -> None:
        """Evict least recently used, unprotected shards until ``incoming`` bytes fit; partial
        downloads count, and those of a process that is gone are deleted first."""
        entries, used, now = [], 0, time.time()
        for p in self.dir.iterdir():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if PARTIAL in p.name:
                if not _writer_alive(p.name) or now - st.st_mtime > STALE_PARTIAL_S:
                    p.unlink(missing_ok=True)
                    self.reclaimed_partials += 1
                    continue
                used += st.st_size
            elif p.name.endswith(".tfrecord"):
                used += st.st_size
                entries.append((st.st_mtime, st.st_size, p))
        for mtime, size, p in sorted(entries):
            if used + incoming <= self.max_bytes:
                break
            if p == keep or now - mtime < self.protect_s:
                continue
            p.unlink(missing_ok=True)
            used -= size


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` until every byte is written: on a filling disk it writes part and returns
    the count, and only the next call raises ENOSPC (a single call lost the rest silently)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


PARTIAL = ".partial-"  # <shard file>.partial-<pid>-<random>: the download that writes it
STALE_PARTIAL_S = 600  # untouched this long: its pid was reused, the download is long dead


def _writer_alive(name: str) -> bool:
    """Whether the process a partial file names still runs (on this host: the cache is local)."""
    pid = name.rpartition(PARTIAL)[2].partition("-")[0]
    if not pid.isdigit():
        return False  # an older cache's partial names no process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
