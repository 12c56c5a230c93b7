"""The dataset manifest: the one object that makes an export visible, and its lineage.

Layout on the object store (the export writes every shard first, the manifest last)::

    s3://<datasets bucket>/<dataset>/<delta version>/manifest.json
    s3://<datasets bucket>/<dataset>/<delta version>/{train,validation,test}/part-NNNNN-of-NNNNN.tfrecord
    s3://<datasets bucket>/<dataset>/<delta version>/_staging/<export id>/...   (in flight only)

Readers open manifests only, so shards without one (a killed export) are never read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dlpipe.core.errors import DlpipeError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FORMAT = "dlpipe.datasets.tfrecord-dataset/1"
MANIFEST = "manifest.json"
STAGING = "_staging"
SPLITS = ("train", "validation", "test")


class DatasetNotFoundError(DlpipeError):
    """No published manifest where one was expected."""


@dataclass(frozen=True)
class Shard:
    split: str
    path: str  # relative to the manifest's folder
    records: int
    bytes: int
    crc32c: str  # hex of the whole file, Castagnoli CRC (as in TFRecord framing)
    by_class: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    dataset: str
    bucket: str
    prefix: str  # the manifest's folder, "<dataset>/<version>"
    export_id: str
    created_at: str
    source: dict[str, Any]  # table, delta_version, delta_timestamp, rows
    split: dict[str, Any]  # method, salt, fractions
    classes: list[str]
    image: dict[str, Any]  # format, height, width, channels
    features: dict[str, dict[str, Any]]
    counts: dict[str, dict[str, Any]]  # split -> {"records": n, "by_class": {name: n}}
    shards: list[Shard]
    format: str = FORMAT

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{MANIFEST}"

    @property
    def delta_version(self) -> int:
        return int(self.source["delta_version"])

    def shards_of(self, split: str) -> list[Shard]:
        if split not in SPLITS:
            raise DlpipeError(f"unknown split {split!r}; a dataset has {', '.join(SPLITS)}")
        return [s for s in self.shards if s.split == split]

    def key(self, shard: Shard) -> str:
        return f"{self.prefix}/{shard.path}"

    def shard_uri(self, shard: Shard) -> str:
        return f"s3://{self.bucket}/{self.key(shard)}"

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps({"format": data.pop("format"), **data}, indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DlpipeError(f"{where} is not valid JSON: {exc}") from exc
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise DlpipeError(f"{where} is not a {FORMAT} manifest (format: "
                              f"{data.get('format') if isinstance(data, Mapping) else None!r})")
        try:
            shards = [Shard(**s) for s in data["shards"]]
            return cls(**{**data, "shards": shards})
        except (KeyError, TypeError) as exc:
            raise DlpipeError(f"{where} is missing or has unexpected fields: {exc}") from exc


def dataset_prefix(dataset: str, version: int) -> str:
    return f"{dataset}/{version}"


def shard_path(split: str, index: int, count: int) -> str:
    return f"{split}/part-{index:05d}-of-{count:05d}.tfrecord"


def read_manifest(client: S3Client, bucket: str, prefix: str) -> Manifest | None:
    """The manifest in ``prefix``, or None when that version was never published."""
    key = f"{prefix}/{MANIFEST}"
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return Manifest.from_json(body.decode(), where=f"s3://{bucket}/{key}")


def published_versions(client: S3Client, bucket: str, dataset: str) -> list[int]:
    """Delta versions of ``dataset`` that have a manifest, newest first."""
    from dlpipe.core.s3 import child_names, numeric_names

    published = []
    for version in reversed(numeric_names(child_names(client, bucket, f"{dataset}/"))):
        key = f"{dataset_prefix(dataset, version)}/{MANIFEST}"
        try:
            client.head_object(Bucket=bucket, Key=key)
        except client.exceptions.ClientError:
            continue
        published.append(version)
    return published


def open_manifest(client: S3Client, bucket: str, dataset: str, version: int | None = None) -> Manifest:
    """A published manifest: the given Delta version, or the newest one."""
    if version is None:
        versions = published_versions(client, bucket, dataset)
        if not versions:
            raise DatasetNotFoundError(
                f"no published export of dataset {dataset!r} in s3://{bucket}/{dataset}/",
                fix="run `dlpipe export` (a killed export publishes nothing)",
            )
        version = versions[0]
    manifest = read_manifest(client, bucket, dataset_prefix(dataset, version))
    if manifest is None:
        raise DatasetNotFoundError(
            f"dataset {dataset!r} has no published version {version} "
            f"(no s3://{bucket}/{dataset_prefix(dataset, version)}/{MANIFEST})",
            fix=f"run `dlpipe export --version {version}`",
        )
    return manifest
