"""Publishing on the object store: markers last, copies checked, version names listed once.

An in-memory stand-in for the S3 calls the publisher makes records the order of writes; the
integration tests run the same code against MinIO.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlpipe.core.errors import DlpipeError
from dlpipe.core.publish import publish, remove_prefix, upload_files
from dlpipe.core.s3 import child_names, is_version, numeric_names
from dlpipe.registry.store import MARKER, publish_model, serving_version
from dlpipe.registry.sync import local_versions


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []
        self.drop_on_copy: str | None = None

    def _put(self, key: str, body: bytes) -> None:
        self.objects[key] = body
        self.writes.append(key)

    def upload_file(self, path, bucket, key, **_):
        self._put(key, Path(path).read_bytes())

    def put_object(self, *, Bucket, Key, Body, IfNoneMatch=None, **_):
        if IfNoneMatch == "*" and Key in self.objects:
            raise AssertionError("the fake reserves fresh keys only")
        self._put(Key, Body)

    def copy(self, source, bucket, key):
        if key != self.drop_on_copy:
            self._put(key, self.objects[source["Key"]])

    def get_object(self, *, Bucket, Key):
        if Key not in self.objects:
            raise self.exceptions.NoSuchKey()
        return {"Body": _Body(self.objects[Key])}

    def delete_objects(self, *, Bucket, Delete):
        for item in Delete["Objects"]:
            self.objects.pop(item["Key"], None)
        return {}

    def get_paginator(self, _name):
        return self

    def paginate(self, *, Bucket, Prefix, Delimiter=None):
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        if Delimiter is None:
            yield {"Contents": [{"Key": k, "Size": len(self.objects[k])} for k in keys]}
            return
        rest = [k[len(Prefix):] for k in keys]
        yield {"Contents": [{"Key": Prefix + r, "Size": 0} for r in rest if "/" not in r],
               "CommonPrefixes": [{"Prefix": Prefix + p + "/"}
                                  for p in sorted({r.split("/")[0] for r in rest if "/" in r})]}

    class exceptions:  # boto3's spelling
        class NoSuchKey(Exception):
            pass

        ClientError = Exception


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def test_version_names_are_ascii_digits_only():
    assert numeric_names(["10", "2", "_staging", ".incoming-3-ab", "2", "x1", "\u0663"]) == [2, 10]
    assert is_version("007") and not is_version("\u00b2") and not is_version("")


def test_child_names_lists_folders_and_objects_one_level_down():
    s3 = FakeS3()
    for key in ("m/1/a", "m/2/b/c", "m/_versions/3", "m/_staging/4-x/d", "other/5/e"):
        s3.objects[key] = b""
    assert sorted(child_names(s3, "b", "m/")) == ["1", "2", "_staging", "_versions"]
    assert numeric_names(child_names(s3, "b", "m/_versions/")) == [3]


def test_a_publish_copies_checks_then_writes_the_marker_last(tmp_path):
    s3 = FakeS3()
    files = {"b.bin": tmp_path / "b.bin", "last.pb": tmp_path / "last.pb", "d/c.bin": tmp_path / "c"}
    for path in files.values():
        path.write_bytes(path.name.encode())
    upload_files(s3, "b", files, "p/_staging/1")
    s3.writes.clear()
    publish(s3, "b", staging="p/_staging/1", final="p/v", paths=files, last=["last.pb"],
            extras={"extra.json": b"{}"}, marker="p/v/marker.json", body='{"ok": 1}')
    assert s3.writes[-3:] == ["p/v/last.pb", "p/v/extra.json", "p/v/marker.json"]
    assert s3.objects["p/v/d/c.bin"] == b"c" and s3.objects["p/v/marker.json"] == b'{"ok": 1}'
    assert not [k for k in s3.objects if k.startswith("p/_staging/")]


def test_a_copy_that_did_not_land_publishes_nothing(tmp_path):
    s3 = FakeS3()
    s3.objects.update({"p/_staging/1/a": b"aa", "p/_staging/1/b": b"bb"})
    s3.drop_on_copy = "p/v/b"
    with pytest.raises(DlpipeError, match="p/v/b has None bytes"):
        publish(s3, "b", staging="p/_staging/1", final="p/v", paths=["a", "b"],
                marker="p/v/marker.json", body="{}")
    assert "p/v/marker.json" not in s3.objects and "p/_staging/1/a" in s3.objects
    assert remove_prefix(s3, "b", "p/_staging/") == ["p/_staging/1/a", "p/_staging/1/b"]


def test_model_versions_count_up_and_serving_takes_the_newest_promoted(tmp_path):
    s3 = FakeS3()
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    (saved / "variables" / "variables.index").write_bytes(b"ix")
    for promoted in (True, False):
        s3.writes.clear()
        version = publish_model(s3, "models", "m", saved, extras={"metrics.json": b"{}"},
                                info={"promoted": promoted})
        assert s3.writes[-3:] == [f"m/{version}/saved_model.pb", f"m/{version}/metrics.json",
                                  f"m/{version}/{MARKER}"]
    assert version == 2 and serving_version(s3, "models", "m") == 1
    assert json.loads(s3.objects[f"m/2/{MARKER}"])["uri"] == "s3://models/m/2/"


def test_local_versions_skip_incoming_folders_and_files(tmp_path):
    for name in ("3", "12", ".incoming-4-ab"):
        (tmp_path / "m" / name).mkdir(parents=True)
    (tmp_path / "m" / "5").write_text("a file, not a version")
    assert local_versions(tmp_path, "m") == [3, 12]
    assert local_versions(tmp_path, "none") == []
