"""Champion/challenger: a trained model is served only if it beats the one being served.

The champion (the version the release pointer names) is downloaded and run, in inference
mode through its exported ``serving_pixels`` signature, on the challenger's own test split,
so both scores come from the same records; when the champion was trained on another dataset,
both also run on the champion's test split (a challenger must not win on its new data by
losing what the champion did well). A champion trained on other classes or image
sizes cannot run on this data; it is then not compared, and the note says so. The release
itself is a conditional write on the pointer as it was read before the comparison: if
another release came in between, this one is published but not served (the log says how to
serve it by hand).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlpipe.core.errors import DlpipeError
from dlpipe.registry.release import ReleaseConflict, Served, served_version, set_served
from dlpipe.registry.store import read_info
from dlpipe.registry.sync import download_version
from models.evaluation import ChampionCheck, compare_with_champion

log = logging.getLogger(__name__)


def challenge(client: Any, bucket: str, model: str, *, manifest: Any, cache: Any,
              challenger_accuracy: float, records: int, margin: float, scratch: Path,
              challenger_on: Callable[[Any], float] | None = None,
              ) -> tuple[ChampionCheck, Served | None]:
    """Compare the challenger with the champion on this run's test split and, when the
    champion was trained on another dataset, on the champion's test split too
    (``challenger_on(manifest)``: the challenger's test accuracy on a dataset)."""
    served = served_version(client, bucket, model)
    if served is None:
        return compare_with_champion(challenger_accuracy, records=records, margin=margin,
                                     champion_version=None, champion_accuracy=None), None
    info = read_info(client, bucket, model, served.version) or {}
    accuracy, theirs, why = None, None, _incomparable(info, manifest)
    if why is None:
        try:
            path = download_version(client, bucket, model, served.version, scratch / "champion")
            accuracy = _accuracy(path, manifest, cache)
            theirs = _on_champion_split(client, bucket, model, served.version, path, manifest,
                                        cache, challenger_on)
        except Exception as exc:  # a champion that cannot run must not block every challenger
            why = f"it could not be evaluated ({type(exc).__name__}: {exc})"
            log.warning("champion %s version %s %s", model, served.version, why)
    return compare_with_champion(challenger_accuracy, records=records, margin=margin,
                                 champion_version=served.version, champion_accuracy=accuracy,
                                 incomparable=why, on_champion_split=theirs), served


def _on_champion_split(client: Any, bucket: str, model: str, version: int, path: Path,
                       manifest: Any, cache: Any, challenger_on: Callable[[Any], float] | None
                       ) -> dict[str, float] | None:
    """Both accuracies on the champion's own test split, if it is another dataset's and
    still there (``dlpipe maintain`` removes old datasets)."""
    from dlpipe.datasets.manifest import Manifest

    if challenger_on is None:
        return None
    try:
        body = client.get_object(Bucket=bucket, Key=f"{model}/{version}/dataset-manifest.json")
    except client.exceptions.NoSuchKey:
        return None
    theirs = Manifest.from_json(body["Body"].read().decode(), where="the champion's dataset manifest")
    if theirs.uri == manifest.uri or not theirs.counts["test"]["records"]:
        return None  # the same dataset: the comparison above already used its test split
    if not all(client.list_objects_v2(Bucket=theirs.bucket, Prefix=theirs.key(s), MaxKeys=1)
               .get("KeyCount") for s in theirs.shards_of("test")):
        log.warning("champion %s version %s: its dataset %s is gone; compared on this run's "
                    "test split only", model, version, theirs.uri)
        return None
    return {"challenger": challenger_on(theirs), "champion": _accuracy(path, theirs, cache),
            "records": float(theirs.counts["test"]["records"])}


def _incomparable(info: dict[str, Any], manifest: Any) -> str | None:
    if info.get("classes") is not None and list(info["classes"]) != list(manifest.classes):
        return f"it was trained on classes {info['classes']}, this run on {list(manifest.classes)}"
    if info.get("image") is not None and info["image"] != manifest.image:
        return f"it takes images {info['image']}, this run's are {manifest.image}"
    return None


def _accuracy(path: Path, manifest: Any, cache: Any) -> float:
    """The champion's accuracy on ``manifest``'s test split, through its exported signature."""
    import tensorflow as tf

    from dlpipe.contract.signatures import PIXELS_SIGNATURE

    signature = tf.saved_model.load(str(path)).signatures[PIXELS_SIGNATURE]
    return test_split_accuracy(lambda images: signature(pixels=tf.cast(images, tf.float32))["class_index"],
                         manifest, cache)


def test_split_accuracy(predict: Callable[[Any], Any], manifest: Any, cache: Any) -> float:
    """Share of ``manifest``'s test records whose class ``predict(images)`` gets right, every
    record counted (champion and challenger are measured by this one loop)."""
    import numpy as np

    from models.input import make_dataset

    right = total = 0
    for images, labels in make_dataset(manifest, "test", cache=cache, batch_size=256, shuffle=False):
        predicted = np.asarray(predict(images))
        right += int((predicted == labels.numpy()).sum())
        total += len(predicted)
    if total == 0:
        raise DlpipeError(f"the test split of {manifest.uri} is empty")
    return right / total


def release(client: Any, bucket: str, model: str, version: int, *, champion: Served | None,
            check: ChampionCheck) -> bool:
    """Serve ``version`` if the pointer is still what the comparison saw; False if not."""
    history = (*champion.history, champion.version) if champion is not None else ()
    try:
        set_served(client, bucket, model, version, action="train", reason=check.reason,
                   current=champion, history=history, details={"champion": check.as_dict()})
    except ReleaseConflict:
        log.warning("version %s of %s passed its checks but another release changed the served "
                    "version meanwhile; it is not served (dlpipe models promote %s --model %s "
                    "serves it)", version, model, version, model)
        return False
    return True
