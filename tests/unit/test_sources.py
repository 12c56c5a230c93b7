from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from dlpipe.produce.sources import SYNTHETIC_CLASSES, digits, image_folder, synthetic


def test_digits_are_the_real_8x8_data_set_and_cycle_with_new_indices() -> None:
    first = list(itertools.islice(digits(), 1800))
    assert (first[0].image.width, first[0].image.height, first[0].image.channels) == (8, 8, 1)
    assert {s.label for s in first} == {str(i) for i in range(10)}
    assert first[1797].image.data == first[0].image.data and first[1797].index == 1797


def test_synthetic_is_deterministic_balanced_and_sized() -> None:
    a = list(itertools.islice(synthetic(size=32, seed=3), 16))
    b = list(itertools.islice(synthetic(size=32, seed=3), 16))
    assert [s.image.data for s in a] == [s.image.data for s in b]
    assert [s.label for s in a[:8]] == list(SYNTHETIC_CLASSES)
    assert (a[0].image.width, a[0].image.channels) == (32, 3)
    assert a[0].image.data != next(synthetic(size=32, seed=4)).image.data


def test_image_folder_labels_by_subfolder(tmp_path: Path) -> None:
    for label, mode in [("cat", "RGB"), ("dog", "L")]:
        (tmp_path / label).mkdir()
        PILImage.fromarray(np.zeros((5, 7, 3) if mode == "RGB" else (5, 7), np.uint8)).save(
            tmp_path / label / "a.png")
    (tmp_path / "dog" / "b.jpg").write_bytes(_jpeg())
    got = [(s.label, s.image.format, s.image.width, s.image.height, s.image.channels)
           for s in itertools.islice(image_folder(tmp_path), 3)]
    assert got == [("cat", "PNG", 7, 5, 3), ("dog", "PNG", 7, 5, 1), ("dog", "JPEG", 4, 4, 3)]


def _jpeg() -> bytes:
    import io

    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), (200, 10, 10)).save(out, format="JPEG")
    return out.getvalue()


def test_a_folder_whose_classes_are_not_configured_is_refused_before_sending(tmp_path):
    from dlpipe.core.errors import ConfigError
    from dlpipe.produce.producer import check_folder_classes

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
    check_folder_classes(tmp_path, ["cat", "dog", "bird"])
    with pytest.raises(ConfigError) as err:
        check_folder_classes(tmp_path, ["0", "1"])
    assert "has classes cat, dog" in str(err.value) and "UNKNOWN_LABEL" in str(err.value)
    assert "--set ingest.classes='[cat, dog]'" in str(err.value)
