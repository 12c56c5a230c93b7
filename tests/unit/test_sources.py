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


def _folder(root, *labels):
    for label in labels:
        (root / label).mkdir(parents=True)
    return root


def _cfg(tmp_path, pipeline="photos", **overrides):
    from dlpipe.core.config import load_config

    return load_config(overrides={"stack.state_dir": str(tmp_path / "state"), "pipeline.name": pipeline,
                                  "pipeline.profile": "photos", **overrides}, environ={})


def test_a_folders_classes_are_learned_once_for_its_pipeline_and_read_by_every_later_command(tmp_path):
    from dlpipe.produce.producer import learn_folder_classes

    photos = _folder(tmp_path / "photos", "dog", "cat")
    cfg = learn_folder_classes(_cfg(tmp_path), photos, user_set=False)
    assert cfg.ingest.classes == ["cat", "dog"]
    later = _cfg(tmp_path)  # ingest, export, train: a new process of the same pipeline
    assert later.ingest.classes == ["cat", "dog"]
    assert _cfg(tmp_path, pipeline="other").ingest.classes != ["cat", "dog"]  # its own pipeline only
    assert _cfg(tmp_path, **{"ingest.classes": ["x", "y"]}).ingest.classes == ["x", "y"]  # --set wins
    assert learn_folder_classes(later, _folder(tmp_path / "some", "cat"), user_set=False) == later
    shapes = learn_folder_classes(_cfg(tmp_path, "shapes"), _folder(tmp_path / "s", "circle"), user_set=False)
    assert shapes.ingest.classes == ["circle"]  # the folder's, not the profile's example classes


def test_a_folder_with_a_new_class_never_renumbers_a_pipeline_that_learned_its_classes(tmp_path):
    from dlpipe.core.errors import ConfigError
    from dlpipe.produce.producer import learn_folder_classes

    learn_folder_classes(_cfg(tmp_path), _folder(tmp_path / "a", "cat", "dog"), user_set=False)
    with pytest.raises(ConfigError) as err:
        learn_folder_classes(_cfg(tmp_path), _folder(tmp_path / "b", "cat", "bird"), user_set=False)
    assert "already learned its classes" in str(err.value) and "new pipeline name" in str(err.value)


def test_a_folder_whose_classes_the_user_set_otherwise_or_the_demo_owns_is_refused_before_sending(tmp_path):
    from dlpipe.core.errors import ConfigError
    from dlpipe.produce.producer import learn_folder_classes

    photos = _folder(tmp_path / "photos", "cat", "dog")
    assert learn_folder_classes(_cfg(tmp_path, **{"ingest.classes": ["cat", "dog", "bird"]}), photos,
                                user_set=True).ingest.classes == ["cat", "dog", "bird"]
    with pytest.raises(ConfigError) as err:
        learn_folder_classes(_cfg(tmp_path, **{"ingest.classes": ["0", "1"]}), photos, user_set=True)
    assert "has classes cat, dog" in str(err.value) and "UNKNOWN_LABEL" in str(err.value)
    assert "--set ingest.classes='[cat, dog]'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        learn_folder_classes(_cfg(tmp_path, pipeline="digits"), photos, user_set=False)
    assert "DLPIPE_PIPELINE=photos" in str(err.value)
    assert not (tmp_path / "state" / "pipelines").exists()


def test_set_by_user_sees_the_environment_and_set_flags():
    from dlpipe.core.config import set_by_user

    assert set_by_user("ingest.classes", ["ingest.classes=[a, b]"], environ={})
    assert set_by_user("ingest.classes", [], environ={"DLPIPE__INGEST__CLASSES": "[a]"})
    assert not set_by_user("ingest.classes", ["pipeline.name=x"], environ={"DLPIPE_PIPELINE": "x"})
