"""Local model copies (issue 16): used only while the store lists what they were copied
from, and pruned to ``keep`` versions."""

from __future__ import annotations

import json
from pathlib import Path

from dlpipe.registry.sync import RECORD, _verified, local_versions, prune_versions


def copy(root: Path, version: int, files: dict[str, bytes]) -> dict[str, list]:
    folder = root / "m" / str(version)
    listing = {}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        listing[name] = [len(data), f"etag-{name}-{len(data)}"]
    (folder / RECORD).write_text(json.dumps({"files": listing}))
    return listing


def test_a_copy_is_verified_against_the_stores_listing(tmp_path):
    listing = copy(tmp_path, 1, {"saved_model.pb": b"pb", "variables/variables.index": b"idx"})
    folder = tmp_path / "m" / "1"
    assert _verified(folder, listing)
    republished = {**listing, "saved_model.pb": [2, "another-etag"]}  # same size, new object
    assert not _verified(folder, republished)
    assert not _verified(folder, {**listing, "assets/new.txt": [1, "e"]})
    (folder / "variables" / "variables.index").write_bytes(b"damaged")
    assert not _verified(folder, listing)
    (folder / RECORD).unlink()  # a copy made before records existed
    assert not _verified(folder, listing)


def test_prune_keeps_the_newest_and_the_protected_and_drops_withdrawn(tmp_path):
    for v in (1, 2, 3, 5, 7):
        copy(tmp_path, v, {"saved_model.pb": b"pb"})
    (tmp_path / "m" / ".incoming-9-abc").mkdir()  # a download in flight stays
    removed = prune_versions(tmp_path, "m", current=5, keep=2, protect=[1])
    assert removed == [2, 7]
    assert local_versions(tmp_path, "m") == [1, 3, 5]
    assert (tmp_path / "m" / ".incoming-9-abc").is_dir()
    assert prune_versions(tmp_path, "m", current=5, keep=1) == [1, 3]
