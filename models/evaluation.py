"""Whether a trained model is good enough to serve, decided on evidence rather than luck.

A point estimate from a small test split is noisy: 13 right out of 14 reads as 0.93 but is
consistent with a model that gets 0.70 right. Promotion therefore compares the Wilson score
lower bound of the test accuracy (at ``training.promotion_confidence``) with the bar, and
needs at least ``training.min_test_records`` test records. A second check guards the export
itself: the exported model, run in inference mode on the train split, must agree with what
training reported for its last epoch (BatchNormalization's moving statistics are the usual
culprit when it does not). Pure functions: numbers in, a decision with its inputs out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any


def wilson_lower_bound(correct: int, total: int, *, confidence: float = 0.95) -> float:
    """The lower end of the two-sided Wilson score interval for ``correct / total``."""
    if total <= 0:
        return 0.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / total
    centre = p + z * z / (2 * total)
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - margin) / (1 + z * z / total))


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    split: str
    records: int
    accuracy: float
    lower_bound: float
    confidence: float
    bar: float
    min_records: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(metrics: dict[str, dict[str, Any]], *, bar: float, min_records: int,
                     confidence: float) -> Promotion:
    """Promote when the test split is large enough and its accuracy's lower bound clears the bar.

    Falls back to the validation split only when there is no test split at all.
    """
    split = "test" if "test" in metrics else "validation"
    m = metrics.get(split, {"records": 0, "accuracy": 0.0})
    records, accuracy = int(m["records"]), float(m["accuracy"])
    bound = wilson_lower_bound(round(accuracy * records), records, confidence=confidence)
    if records < min_records:
        promoted, reason = False, (f"{records} {split} records, fewer than training.min_test_records "
                                   f"{min_records}")
    elif bound < bar:
        promoted, reason = False, (f"{split} accuracy {accuracy:.4f} on {records} records has a "
                                   f"{confidence:.0%} lower bound of {bound:.4f}, below the bar {bar}")
    else:
        promoted, reason = True, (f"{split} accuracy {accuracy:.4f} on {records} records, "
                                  f"{confidence:.0%} lower bound {bound:.4f} >= bar {bar}")
    return Promotion(promoted, reason, split, records, accuracy, bound, confidence, bar, min_records)


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    reason: str
    trained_accuracy: float | None
    exported_accuracy: float
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_export(exported_train_accuracy: float, last_epoch_accuracy: float | None, *,
                 tolerance: float) -> ExportCheck:
    """The exported model must not be worse on the train split than training said it was."""
    if last_epoch_accuracy is None:
        return ExportCheck(True, "no training accuracy to compare with (nothing was trained in this "
                           "run)", None, exported_train_accuracy, tolerance)
    gap = last_epoch_accuracy - exported_train_accuracy
    if gap > tolerance:
        return ExportCheck(False, (
            f"the exported model scores {exported_train_accuracy:.4f} on the train split in inference "
            f"mode, {gap:.4f} below the last epoch's training accuracy {last_epoch_accuracy:.4f} "
            f"(tolerance training.max_train_accuracy_gap {tolerance})"),
            last_epoch_accuracy, exported_train_accuracy, tolerance)
    return ExportCheck(True, (f"exported train accuracy {exported_train_accuracy:.4f} vs last epoch "
                              f"{last_epoch_accuracy:.4f}"),
                       last_epoch_accuracy, exported_train_accuracy, tolerance)


@dataclass(frozen=True)
class ChampionCheck:
    """The challenger against the served version (the champion), on the same test records:
    this run's test split, and the champion's own when it was trained on another dataset."""
    ok: bool
    reason: str
    champion_version: int | None
    champion_accuracy: float | None
    challenger_accuracy: float
    records: int
    margin: float
    # on the champion's test split: {"challenger": acc, "champion": acc, "records": n}
    on_champion_split: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_with_champion(challenger_accuracy: float, *, records: int, margin: float,
                          champion_version: int | None, champion_accuracy: float | None,
                          incomparable: str | None = None,
                          on_champion_split: dict[str, float] | None = None) -> ChampionCheck:
    """The challenger must reach the champion's accuracy plus ``margin`` (negative: a loss the
    operator tolerates) on the challenger's test split, and on the champion's test split when
    that is given. Without a champion, or with one that cannot run on this data
    (``incomparable`` says why: other classes or image size), the other checks decide alone."""
    args = (champion_version, champion_accuracy, challenger_accuracy, records, margin)
    if champion_version is None:
        return ChampionCheck(True, "no version is served yet", *args)
    if incomparable is not None or champion_accuracy is None:
        return ChampionCheck(True, f"champion version {champion_version} not compared: "
                             f"{incomparable or 'no accuracy'}", *args)
    if challenger_accuracy + 1e-12 < champion_accuracy + margin:
        return ChampionCheck(False, (
            f"test accuracy {challenger_accuracy:.4f} on {records} records is below champion version "
            f"{champion_version}'s {champion_accuracy:.4f} on the same records (margin "
            f"training.champion_margin {margin:+})"), *args, on_champion_split)
    theirs = on_champion_split
    if theirs is not None and theirs["challenger"] + 1e-12 < theirs["champion"] + margin:
        return ChampionCheck(False, (
            f"on champion version {champion_version}'s own test split ({theirs['records']:.0f} "
            f"records) the accuracy {theirs['challenger']:.4f} is below its {theirs['champion']:.4f} "
            f"(margin training.champion_margin {margin:+})"), *args, theirs)
    also = "" if theirs is None else (f", and {theirs['challenger']:.4f} >= {theirs['champion']:.4f} "
                                      f"on its own test split")
    return ChampionCheck(True, (f"test accuracy {challenger_accuracy:.4f} >= champion version "
                                f"{champion_version}'s {champion_accuracy:.4f} {margin:+} on the same "
                                f"{records} records{also}"), *args, theirs)
