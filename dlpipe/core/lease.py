"""An exclusive, expiring lease on an object-store path: one writer per streaming checkpoint.

Two drivers on one checkpoint (two Helm releases, a retried ``SparkApplication``) would both
write its offsets files, and Delta's single-driver log store on S3 can then lose a commit.
Spark does not stop them; this does. The lease is one small JSON object next to the path:

* taken with a conditional PUT (``If-None-Match: *``), so of two drivers exactly one creates it;
* renewed every ``ttl/3`` with ``If-Match`` on its ETag, so a driver that lost it finds out at
  its next renewal (and stops) instead of writing on;
* free when released, when its last renewal is older than ``ttl`` by the store's own clock
  (``LastModified`` against the response's ``Date``, so hosts' clocks do not matter), or when
  its holder ran on this host and that process is gone (a restart after SIGKILL need not wait).

A renewal whose PUT reached the store but whose reply did not (the store killed or stalled
mid-request) is retried by the client, and the retry's ``If-Match`` then fails against the
ETag the lost reply carried. Each lease therefore writes a token of its own: a refused
renewal reads the object, and a body with this lease's token is its own write, kept.

Taking a free lease is again an ``If-Match`` PUT on the ETag that was read, so two drivers
racing for an expired lease cannot both win. The store must honour conditional writes
(MinIO and AWS S3 do); one that ignores ``If-None-Match`` is refused at start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from dlpipe.core.errors import DlpipeError
from dlpipe.core.process import start_time
from dlpipe.core.s3 import CONFLICT, REFUSED, error_code, require_conditional_writes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


class LeaseHeld(DlpipeError):
    """Another live driver holds the lease."""


class LeaseLost(DlpipeError):
    """The lease could not be renewed in time, or another driver took it."""


def lease_key(path_key: str) -> str:
    """The lease object of a path: a sibling, so deleting a checkpoint leaves the lock."""
    return path_key.rstrip("/") + ".lease.json"


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": start_time(pid)}


def describe(body: dict[str, Any]) -> str:
    return (f"{body.get('owner', '?')} (pid {body.get('pid', '?')} on {body.get('host', '?')}, "
            f"since {body.get('acquired_at', '?')})")


class Lease:
    """``with Lease(...)`` holds the lease and renews it in a thread until the block ends.

    ``on_lost`` is called (from the renewal thread) with a :class:`LeaseLost` when the lease
    cannot be kept; the holder must stop writing.
    """

    def __init__(self, client: S3Client, bucket: str, path_key: str, *, owner: str,
                 ttl_s: float = 60.0, on_lost: Callable[[LeaseLost], None] | None = None) -> None:
        self.client, self.bucket, self.key = client, bucket, lease_key(path_key)
        self.owner, self.ttl_s, self.on_lost = owner, float(ttl_s), on_lost
        self.etag: str | None = None
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0
        self._acquired_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._token = uuid.uuid4().hex  # which body is this lease's own write

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # -- taking and giving back ----------------------------------------------------------
    def _put(self, *, released: bool = False, **condition: str) -> str:
        """Write the lease body under ``condition`` (IfNoneMatch / IfMatch); its new ETag."""
        body = json.dumps({"owner": self.owner, **this_process(), "token": self._token,
                           "acquired_at": self._acquired_at,
                           "renewed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "ttl_s": self.ttl_s, "released": released}).encode()
        return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                      ContentType="application/json", **condition)["ETag"]

    def acquire(self) -> Lease:
        try:
            self.etag = self._put(IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) == "AccessDenied":
                raise DlpipeError(
                    f"the S3 identity of this job may not write its lease {self.uri}: it may not "
                    "write the path the lease guards either",
                    fix="give this job's identity write access to that prefix, or point the job at "
                        "a path it may write (each dlpipe identity's grants: docs/deploy.md, "
                        "dlpipe.localstack.identities)") from None
            if error_code(exc) not in REFUSED + CONFLICT:
                raise
            self._take_over()
        else:
            require_conditional_writes(self.client, self.bucket, self.key,
                                       why="it cannot keep two writers off one path (or set "
                                           "s3.lease_ttl_s: 0 to run without a lease)")
        self._renewed = time.monotonic()
        log.info(f"lease {self.uri} taken by {self.owner} (ttl {self.ttl_s:.0f} s)")
        return self

    def _take_over(self) -> None:
        got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        body = json.loads(got["Body"].read() or b"{}")
        server_now = parsedate_to_datetime(got["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - got["LastModified"]).total_seconds()
        why = ("released" if body.get("released") else
               f"expired ({age:.0f} s since its last renewal, ttl {body.get('ttl_s', self.ttl_s):.0f} s)"
               if age > float(body.get("ttl_s", self.ttl_s)) else
               "its process on this host is gone" if _gone_here(body) else None)
        if why is None:
            raise LeaseHeld(
                f"{self.uri} is held by {describe(body)}, renewed {age:.0f} s ago: another driver "
                f"is writing this checkpoint, and two at once can lose a Delta commit",
                fix="stop the other driver first; if it is gone, its lease expires "
                    f"{max(0.0, float(body.get('ttl_s', self.ttl_s)) - age):.0f} s from now")
        try:
            self.etag = self._put(IfMatch=got["ETag"])
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in REFUSED + CONFLICT:
                raise LeaseHeld(f"{self.uri} was taken by another driver at the same moment",
                                fix="stop the other driver first") from None
            raise
        log.info(f"lease {self.uri}: taking over from {describe(body)}: {why}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.etag is None or self.lost is not None:
            return
        try:  # conditional, so a lease someone else took over is left alone
            self._put(released=True, IfMatch=self.etag)
            log.info(f"lease {self.uri} released")
        except Exception as exc:
            log.warning(f"lease {self.uri} not released ({exc}); it expires in {self.ttl_s:.0f} s")
        self.etag = None

    # -- keeping it ----------------------------------------------------------------------
    def renew(self) -> None:
        try:
            self.etag = self._put(IfMatch=self.etag)
            self._renewed = time.monotonic()
        except Exception as exc:
            mine = self._own_write_landed() if error_code(exc) in REFUSED + CONFLICT else None
            if mine:
                return
            if mine is False:
                self._lose(f"another driver took over {self.uri}")
            elif time.monotonic() - self._renewed > self.ttl_s:
                self._lose(f"{self.uri} could not be renewed for {self.ttl_s:.0f} s ({exc}); "
                           "another driver may have taken it over")
            else:
                log.warning(f"lease {self.uri}: renewal failed ({exc}); retrying")

    def _own_write_landed(self) -> bool | None:
        """After a refused renewal: whether the object is this lease's own write (a retried
        PUT whose first attempt landed); if so its ETag is adopted and the lease kept. None
        when the object cannot be read now (the next renewal asks again, within the ttl)."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = json.loads(got["Body"].read() or b"{}")
        except Exception as exc:
            log.warning(f"lease {self.uri}: renewal refused and the lease unreadable ({exc})")
            return None
        if body.get("token") != self._token or body.get("released"):
            return False
        self.etag, self._renewed = got["ETag"], time.monotonic()
        log.warning(f"lease {self.uri}: a renewal's reply was lost, but its write landed; kept")
        return True

    def _lose(self, message: str) -> None:
        self.lost = LeaseLost(message, fix="the driver stops; restart it once the other is gone")
        self._stop.set()
        log.error(str(self.lost))
        if self.on_lost is not None:
            self.on_lost(self.lost)

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew()

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._keep, name="dlpipe-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _gone_here(body: dict[str, Any]) -> bool:
    """The holder ran on this host and that process (pid and start time) no longer exists, or
    is this very process (an earlier run in it that could not give the lease back)."""
    if body.get("host") != socket.gethostname() or not isinstance(body.get("pid"), int):
        return False
    return start_time(body["pid"]) != body.get("pid_start") or body["pid"] == os.getpid()


def path_lease(cfg: Any, uri: str, *, owner: str, ttl_s: float,
               on_lost: Callable[[LeaseLost], None] | None = None) -> Any:
    """A :class:`Lease` on an ``s3a://`` path, or a no-op context for a local path (one host's
    filesystem: Spark's own checkpoint file manager is enough) or ``ttl_s`` 0 (disabled)."""
    import contextlib

    from dlpipe.core.s3 import s3_client, split_uri

    if not ttl_s or not uri.startswith(("s3://", "s3a://")):
        return contextlib.nullcontext()
    bucket, key = split_uri(uri)
    return Lease(s3_client(cfg), bucket, key, owner=owner, ttl_s=ttl_s, on_lost=on_lost)
