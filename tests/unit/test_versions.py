"""Version names, listed once: what counts as a version on the store and on local disk.

The object-store side of publishing (copies checked, marker last) runs against MinIO in
tests/integration/test_publish.py.
"""

from __future__ import annotations

from dlpipe.core.s3 import is_version, numeric_names
from dlpipe.registry.sync import local_versions


def test_version_names_are_ascii_digits_only():
    assert numeric_names(["10", "2", "_staging", ".incoming-3-ab", "2", "x1", "\u0663"]) == [2, 10]
    assert is_version("007") and not is_version("\u00b2") and not is_version("")


def test_local_versions_skip_incoming_folders_and_files(tmp_path):
    for name in ("3", "12", ".incoming-4-ab"):
        (tmp_path / "m" / name).mkdir(parents=True)
    (tmp_path / "m" / "5").write_text("a file, not a version")
    assert local_versions(tmp_path, "m") == [3, 12]
    assert local_versions(tmp_path, "none") == []
