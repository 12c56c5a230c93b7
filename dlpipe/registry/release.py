"""Which version of a model is served: one pointer object, changed only by a release action.

::

    s3://<models bucket>/<model>/_serving.json        {"version": 7, "history": [3, 5], ...}
    s3://<models bucket>/<model>/_audit/<time>-<id>.json   one object per change, never rewritten

Training promotes a version that passed its checks (the accuracy bar, the export check and
the comparison with the champion); ``dlpipe models promote`` and ``rollback`` are the
operator's overrides. Serving and ``models sync --watch`` read only the pointer each poll
(one GET, however many versions the store holds). Every change is a conditional PUT on the
ETag read before it, so two releases at once cannot both win: the loser gets
:class:`ReleaseConflict` and decides again. ``history`` is the stack of versions served
before, which ``rollback`` pops.

A store that has no pointer yet (written before releases existed, or by hand) serves its
newest version whose marker says ``promoted``; the first release writes the pointer.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlpipe.core.errors import DlpipeError
from dlpipe.core.s3 import CONFLICT, REFUSED, error_code
from dlpipe.registry.store import complete_versions, read_info

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

POINTER = "_serving.json"
AUDIT = "_audit"


class ReleaseConflict(DlpipeError):
    """Another release changed the served version between our read and our write."""


@dataclass(frozen=True)
class Served:
    """The version serving takes, and where that answer came from."""
    version: int
    run_id: str | None = None
    history: tuple[int, ...] = ()
    etag: str | None = None          # of the pointer; None: no pointer (legacy fallback)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two answers the same release (a reload is due when it changes): the
        version and its training run, or without a pointer the version's whole marker (a
        version republished under the same number in a wiped store differs in it)."""
        if self.etag is None:
            return self.record
        return {"version": self.version, "run_id": self.run_id}


def read_pointer(client: S3Client, bucket: str, model: str) -> Served | None:
    """The pointer, or None when the model has none yet."""
    try:
        response = client.get_object(Bucket=bucket, Key=f"{model}/{POINTER}")
    except client.exceptions.NoSuchKey:
        return None
    body = json.loads(response["Body"].read())
    return Served(int(body["version"]), body.get("run_id"), tuple(body.get("history", [])),
                  response["ETag"], body)


def served_version(client: S3Client, bucket: str, model: str) -> Served | None:
    """The served version: the pointer's, or (no pointer yet) the newest promoted marker's."""
    pointer = read_pointer(client, bucket, model)
    if pointer is not None:
        return pointer
    promoted = [i for i in complete_versions(client, bucket, model) if i.get("promoted")]
    best = max(promoted, key=lambda i: i["version"], default=None)
    return None if best is None else Served(best["version"], best.get("run_id"), record=best)


def serving_version(client: S3Client, bucket: str, model: str) -> int | None:
    served = served_version(client, bucket, model)
    return None if served is None else served.version


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no user name in a container's passwd
        return socket.gethostname()


def set_served(client: S3Client, bucket: str, model: str, version: int, *, action: str,
               reason: str, current: Served | None, history: tuple[int, ...],
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Point serving at ``version`` if the pointer is still the one ``current`` was read from
    (no pointer: still none), and write the audit line. Raises :class:`ReleaseConflict` when
    another release came first."""
    info = read_info(client, bucket, model, version)
    if info is None:
        raise DlpipeError(f"model {model!r} has no complete version {version} in s3://{bucket}",
                          fix=f"dlpipe models list --model {model}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"model": model, "version": version, "run_id": info.get("run_id"),
              "history": list(history), "action": action, "reason": reason, "by": _who(),
              "at": now, "previous": None if current is None else current.version, **(details or {})}
    etag = None if current is None else current.etag
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=bucket, Key=f"{model}/{POINTER}", Body=json.dumps(record, indent=1),
                          ContentType="application/json", **condition)
    except client.exceptions.ClientError as exc:
        if error_code(exc) in REFUSED + CONFLICT:
            raise ReleaseConflict(
                f"the served version of {model!r} changed while this release was decided",
                fix=f"dlpipe models list --model {model}; then promote again if still wanted") from exc
        raise
    client.put_object(Bucket=bucket, Key=f"{model}/{AUDIT}/{now}-{uuid.uuid4().hex[:8]}.json",
                      Body=json.dumps(record, indent=1), ContentType="application/json")
    return record


def promote(client: S3Client, bucket: str, model: str, version: int, *, reason: str,
            force: bool = False, action: str = "promote",
            details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve ``version``. A version whose training checks refused it needs ``force``."""
    info = read_info(client, bucket, model, version)
    if info is None:
        raise DlpipeError(f"model {model!r} has no complete version {version} in s3://{bucket}",
                          fix=f"dlpipe models list --model {model}")
    if not info.get("promoted") and not force:
        why = (info.get("release") or info.get("promotion") or {}).get("reason", "no reason recorded")
        raise DlpipeError(f"version {version} of {model!r} was not promoted by training: {why}",
                          fix=f"dlpipe models promote {version} --model {model} --force "
                              "to serve it anyway")
    current = served_version(client, bucket, model)
    if current is not None and current.version == version:
        return {**current.record, "unchanged": True}
    history = (*current.history, current.version) if current is not None else ()
    return set_served(client, bucket, model, version, action=action, reason=reason, current=current,
                      history=history, details=details)


def rollback(client: S3Client, bucket: str, model: str, *, reason: str) -> dict[str, Any]:
    """Serve the version served before the current one again."""
    current = read_pointer(client, bucket, model)
    if current is None or not current.history:
        raise DlpipeError(f"model {model!r} has no earlier served version to roll back to",
                          fix=f"dlpipe models promote VERSION --model {model}")
    return set_served(client, bucket, model, current.history[-1], action="rollback", reason=reason,
                      current=current, history=current.history[:-1])


def audit_log(client: S3Client, bucket: str, model: str) -> list[dict[str, Any]]:
    """Every release change of ``model``, oldest first."""
    from dlpipe.core.s3 import list_keys

    return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read())
            for k in sorted(list_keys(client, bucket, f"{model}/{AUDIT}/"))]
