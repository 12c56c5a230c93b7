"""Training checkpoints, metrics and TensorBoard files of one run on the object store.

::

    s3://<checkpoints bucket>/train/<run id>/ckpt-<n>/{checkpoint, ckpt-*.index, ckpt-*.data-*}
    s3://<checkpoints bucket>/train/<run id>/latest.json     (points at the newest complete one)
    s3://<checkpoints bucket>/train/<run id>/metrics.jsonl   (one JSON line per epoch)
    s3://<checkpoints bucket>/train/<run id>/tensorboard/... (event files)
    s3://<checkpoints bucket>/train/<run id>/done.json       (the run finished and exported)

Keras' ``BackupAndRestore`` writes and restores the checkpoint on local disk (it knows the
epoch and step to resume from); this module mirrors the chief's copy to the store. Files are
uploaded first and ``latest.json`` (with every file's size and CRC32C) is written last, so
only complete checkpoints are ever visible. On start every worker downloads the latest one
and checks it: a missing or damaged file is an error that names it, never a fresh start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlpipe.core.errors import DlpipeError
from dlpipe.core.publish import remove_prefix, upload_files, write_marker
from dlpipe.core.s3 import NOT_FOUND, REFUSED, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEEP = 2  # complete checkpoints kept on the store


class CheckpointError(DlpipeError):
    """The run's latest checkpoint cannot be trusted."""


def _crc(path: Path) -> str:
    import google_crc32c

    crc = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            crc.update(chunk)
    return crc.hexdigest().decode()


class RunStore:
    ROOT = "train"  # every run's folder is ROOT/<run id> in the checkpoints bucket

    def __init__(self, client: S3Client, bucket: str, run_id: str) -> None:
        self.client, self.bucket, self.run_id = client, bucket, run_id
        self.prefix = f"{self.ROOT}/{run_id}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"

    def _get_json(self, name: str) -> Any | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"s3://{self.bucket}/{self.prefix}/{name} is not valid JSON: {exc}",
                                  fix=f"inspect or delete {self.uri} and train under a new run id") from exc

    def _put_json(self, name: str, data: Any) -> None:
        write_marker(self.client, self.bucket, f"{self.prefix}/{name}", json.dumps(data, indent=1))

    # -- the dataset the run started on -------------------------------------------------
    def pinned_dataset(self) -> dict[str, Any] | None:
        return self._get_json("dataset.json")

    def pin_dataset(self, pinned: dict[str, Any]) -> None:
        """Written once, at the run's first start (a conditional PUT: a concurrent first start
        of the same run id loses here rather than train on another dataset)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/dataset.json",
                                   Body=json.dumps(pinned, indent=1).encode(), IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) not in REFUSED:
                raise
            raise CheckpointError(f"run {self.run_id} was started twice at once ({self.uri})",
                                  fix="give each training its own --run-id") from None

    # -- checkpoints -------------------------------------------------------------------
    def latest(self) -> dict[str, Any] | None:
        return self._get_json("latest.json")

    def upload_checkpoint(self, local_dir: Path, *, epoch: int, step: int) -> dict[str, Any]:
        """Mirror the files of ``local_dir`` as the next checkpoint, then point latest.json at it."""
        previous = self.latest()
        number = (previous["number"] + 1) if previous else 1
        folder = f"{self.prefix}/ckpt-{number}"  # a new folder: unread until latest.json names it
        paths = {p.name: p for p in sorted(local_dir.iterdir()) if p.is_file()}
        files = {name: {"bytes": p.stat().st_size, "crc32c": _crc(p)} for name, p in paths.items()}
        upload_files(self.client, self.bucket, paths, folder)
        latest = {"number": number, "folder": folder, "epoch": epoch, "step": step, "files": files}
        self._put_json("latest.json", latest)
        self._drop_older_than(number - KEEP + 1)
        return latest

    def _drop_older_than(self, number: int) -> None:
        for n in range(max(1, number - 5), number):
            remove_prefix(self.client, self.bucket, f"{self.prefix}/ckpt-{n}/")

    def download_latest(self, local_dir: Path) -> dict[str, Any] | None:
        """Fetch and verify the latest checkpoint into ``local_dir``; None if the run is new."""
        latest = self.latest()
        if latest is None:
            return None
        local_dir.mkdir(parents=True, exist_ok=True)
        where = f"s3://{self.bucket}/{latest['folder']}"
        for name, meta in latest["files"].items():
            target = local_dir / name
            try:
                self.client.download_file(self.bucket, f"{latest['folder']}/{name}", str(target))
            except self.client.exceptions.ClientError as exc:
                if error_code(exc) not in NOT_FOUND:  # a store that fails is not a lost file
                    raise
                raise CheckpointError(
                    f"checkpoint {where} is incomplete: {name} cannot be read ({exc})",
                    fix=f"restore the file, or delete {self.uri}latest.json to start the run over",
                ) from None
            size, crc = target.stat().st_size, _crc(target)
            if size != meta["bytes"] or crc != meta["crc32c"]:
                raise CheckpointError(
                    f"checkpoint {where} is corrupt: {name} has {size} bytes with CRC32C {crc}, "
                    f"latest.json says {meta['bytes']} bytes with CRC32C {meta['crc32c']}",
                    fix=f"restore the file, or delete {self.uri}latest.json to start the run over",
                )
        return latest

    # -- metrics, TensorBoard, completion ----------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        try:
            key = f"{self.prefix}/metrics.jsonl"
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return []
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        body = "".join(json.dumps(r) + "\n" for r in records).encode()
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/metrics.jsonl", Body=body)

    def upload_tree(self, local_dir: Path, name: str, *, seen: dict[str, float]) -> None:
        """Upload files of ``local_dir`` that are new or changed since the last call."""
        for path in local_dir.rglob("*"):
            if not path.is_file():
                continue
            stamp = path.stat().st_mtime + path.stat().st_size
            rel = path.relative_to(local_dir).as_posix()
            if seen.get(rel) != stamp:
                self.client.upload_file(str(path), self.bucket, f"{self.prefix}/{name}/{rel}")
                seen[rel] = stamp

    def done(self) -> dict[str, Any] | None:
        return self._get_json("done.json")

    def mark_done(self, result: dict[str, Any]) -> None:
        self._put_json("done.json", result)
