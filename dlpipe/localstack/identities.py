"""One MinIO identity per component (issue 16, least privilege).

The root key pair the stack generates can do anything; a leaked one exposes every bucket. So
``dlpipe stack up`` also creates one MinIO user per component with a policy that grants what
that component does and nothing else, derived from the config's buckets and tables:

========== ============================================ =======================================
component  reads                                        writes
========== ============================================ =======================================
ingest     the lake, checkpoints                        the lake; its checkpoint (and lease)
export     the lake                                     datasets
train      datasets                                     checkpoints, models
serve      models (``dlpipe serve``, ``models sync``)   nothing
score      the lake, models                             the predictions table (and its lease)
========== ============================================ =======================================

A process runs as one by taking its keys in ``DLPIPE_S3_ACCESS_KEY`` / ``DLPIPE_S3_SECRET_KEY``
(``dlpipe stack env <component>`` prints them; the Helm chart takes a Secret per component).
The keys live in the state dir (``identities.json``, mode 0600) next to the root pair.

The admin calls go through the ``minio`` package's ``MinioAdmin`` (its API encrypts a new
user's secret with the root secret, which boto3 cannot do).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.config import Config
from dlpipe.core.errors import ConfigError, ServiceError
from dlpipe.core.s3 import split_uri

IDENTITIES_FILE = "identities.json"
COMPONENTS = ("ingest", "export", "train", "retrain", "serve", "score")  # the keys of grants()
READ = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
WRITE = [*READ, "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
         "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads"]


@dataclass(frozen=True)
class Grant:
    """What one component may read and write: ``bucket`` or ``bucket/prefix`` each."""
    reads: tuple[str, ...]
    writes: tuple[str, ...]


def _place(uri: str) -> str:
    """``s3a://bucket/a/b`` -> ``bucket/a/b``."""
    return "/".join(split_uri(uri)).rstrip("/")


def grants(cfg: Config) -> dict[str, Grant]:
    """Reads are whole buckets; a write is a bucket or a prefix (a table's folder, a
    checkpoint), whose bucket it may also read: S3A probes the parents of what it creates, and
    a 403 there fails the write."""
    b, t = cfg.buckets, cfg.tables
    return {
        "ingest": Grant(reads=(), writes=(b.lake, _place(cfg.ingest.checkpoint))),
        "export": Grant(reads=(b.lake,), writes=(b.datasets,)),
        "train": Grant(reads=(b.datasets,), writes=(b.checkpoints, b.models)),
        # export then train in one job: the Helm chart's scheduled `retrain` workload
        "retrain": Grant(reads=(b.lake,), writes=(b.datasets, b.checkpoints, b.models)),
        "serve": Grant(reads=(b.models,), writes=()),
        "score": Grant(reads=(b.lake, b.models), writes=(_place(t.predictions),)),
    }


def policy(grant: Grant) -> dict[str, Any]:
    """The IAM policy of a grant. A prefix covers every key that starts with it (a Delta
    table's folder, and a checkpoint's ``.lease.json`` beside its folder)."""
    readable = dict.fromkeys([*grant.reads, *(w.split("/", 1)[0] for w in grant.writes)])
    statements: list[dict[str, Any]] = [{
        "Effect": "Allow", "Action": READ,
        "Resource": [r for bucket in readable
                     for r in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*")],
    }]
    if grant.writes:
        statements.append({
            "Effect": "Allow", "Action": [a for a in WRITE if a not in READ],
            "Resource": [f"arn:aws:s3:::{w}*" if "/" in w else f"arn:aws:s3:::{w}/*" for w in grant.writes]
            + [f"arn:aws:s3:::{w.split('/', 1)[0]}" for w in grant.writes]})
    return {"Version": "2012-10-17", "Statement": statements}


def _path(cfg: Config) -> Path:
    return cfg.stack.state_dir / IDENTITIES_FILE


def _stored(cfg: Config) -> dict[str, dict[str, str]]:
    path = _path(cfg)
    return json.loads(path.read_text()) if path.is_file() else {}


def ensure_identities(cfg: Config) -> list[str]:
    """Create (or update) each component's MinIO user and policy; safe to run again.
    Returns the components."""
    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    key, secret = cfg.s3_credentials()
    endpoint = cfg.s3_endpoint
    admin = MinioAdmin(endpoint=endpoint.split("://", 1)[1], credentials=StaticProvider(key, secret),
                       secure=endpoint.startswith("https://"))
    stored = _stored(cfg)
    for component, grant in grants(cfg).items():
        keys = stored.setdefault(component, {"access_key": f"dlpipe-{component}-{secrets.token_hex(4)}",
                                             "secret_key": secrets.token_urlsafe(30)})
        name = f"dlpipe-{component}"
        try:
            admin.policy_add(name, policy=policy(grant))
            admin.user_add(keys["access_key"], keys["secret_key"])
            admin.policy_set(name, user=keys["access_key"])
        except Exception as exc:  # the admin API's errors carry MinIO's message
            raise ServiceError(f"MinIO refused to create the {component} identity: {exc}",
                               fix=f"check {cfg.stack.state_dir}/minio/minio.log; the root keys in "
                                   f"{cfg.s3.access_key_env} must be MinIO's root user") from None
    path = _path(cfg)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(stored, fh)
    path.with_suffix(".tmp").replace(path)
    return list(stored)


def identity_env(cfg: Config, component: str) -> dict[str, str]:
    """The environment that makes a process run as ``component``."""
    stored = _stored(cfg)
    if component not in COMPONENTS:
        raise ConfigError(f"no component {component!r}; the components are {', '.join(COMPONENTS)}",
                          fix="pick one of them")
    if component not in stored:
        raise ConfigError(f"the stack in {cfg.stack.state_dir} has no identity for {component} yet",
                          fix="dlpipe stack up  (it creates one MinIO user per component)")
    keys = stored[component]
    return {cfg.s3.access_key_env: keys["access_key"], cfg.s3.secret_key_env: keys["secret_key"]}
