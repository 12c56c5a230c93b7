"""Champion/challenger: a trained model is served only if it beats the one being served.

The champion (the version the release pointer names) is downloaded and run, in inference
mode through its exported ``serving_pixels`` signature, on the challenger's own test split,
so both scores come from the same records. A champion trained on other classes or image
sizes cannot run on this data; it is then not compared, and the note says so. The release
itself is a conditional write on the pointer as it was read before the comparison: if
another release came in between, this one is published but not served (the log says how to
serve it by hand).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dlpipe.core.errors import DlpipeError
from dlpipe.registry.release import ReleaseConflict, Served, served_version, set_served
from dlpipe.registry.store import read_info
from dlpipe.registry.sync import download_version
from models.evaluation import ChampionCheck, compare_with_champion

log = logging.getLogger(__name__)


def challenge(client: Any, bucket: str, model: str, *, manifest: Any, cache: Any,
              challenger_accuracy: float, records: int, margin: float,
              scratch: Path) -> tuple[ChampionCheck, Served | None]:
    """Compare the challenger's test accuracy with the champion's on the same split."""
    served = served_version(client, bucket, model)
    if served is None:
        return compare_with_champion(challenger_accuracy, records=records, margin=margin,
                                     champion_version=None, champion_accuracy=None), None
    info = read_info(client, bucket, model, served.version) or {}
    accuracy, why = None, _incomparable(info, manifest)
    if why is None:
        try:
            path = download_version(client, bucket, model, served.version, scratch / "champion")
            accuracy = _accuracy(path, manifest, cache)
        except Exception as exc:  # a champion that cannot run must not block every challenger
            why = f"it could not be evaluated ({type(exc).__name__}: {exc})"
            log.warning("champion %s version %s %s", model, served.version, why)
    return compare_with_champion(challenger_accuracy, records=records, margin=margin,
                                 champion_version=served.version, champion_accuracy=accuracy,
                                 incomparable=why), served


def _incomparable(info: dict[str, Any], manifest: Any) -> str | None:
    if info.get("classes") is not None and list(info["classes"]) != list(manifest.classes):
        return f"it was trained on classes {info['classes']}, this run on {list(manifest.classes)}"
    if info.get("image") is not None and info["image"] != manifest.image:
        return f"it takes images {info['image']}, this run's are {manifest.image}"
    return None


def _accuracy(path: Path, manifest: Any, cache: Any) -> float:
    """The champion's accuracy on the test split, every record counted."""
    import numpy as np
    import tensorflow as tf

    from dlpipe.contract.signatures import PIXELS_SIGNATURE
    from models.input import make_dataset

    signature = tf.saved_model.load(str(path)).signatures[PIXELS_SIGNATURE]
    right = total = 0
    for images, labels in make_dataset(manifest, "test", cache=cache, batch_size=256, shuffle=False):
        predicted = signature(pixels=tf.cast(images, tf.float32))["class_index"].numpy()
        right += int((predicted == labels.numpy()).sum())
        total += len(predicted)
    if total == 0:
        raise DlpipeError("the test split is empty")
    return float(np.float64(right) / total)


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
