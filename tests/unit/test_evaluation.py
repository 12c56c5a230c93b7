"""Promotion on evidence: the Wilson bound, a minimum test size, and the export check."""

from __future__ import annotations

import pytest

from models.evaluation import check_export, decide_promotion, wilson_lower_bound


def test_wilson_lower_bound_matches_the_textbook_values():
    # 13 of 14 (the photo run that promoted a 0.76 model): the 95% bound is about 0.69.
    assert wilson_lower_bound(13, 14) == pytest.approx(0.6853, abs=1e-3)
    assert wilson_lower_bound(161, 166) == pytest.approx(0.9314, abs=1e-3)
    assert wilson_lower_bound(0, 0) == 0.0 and wilson_lower_bound(0, 10) == pytest.approx(0.0, abs=1e-12)
    assert wilson_lower_bound(50, 50) < 1.0
    assert wilson_lower_bound(90, 100, confidence=0.99) < wilson_lower_bound(90, 100, confidence=0.9)


def test_a_small_test_split_promotes_nothing_whatever_its_accuracy():
    d = decide_promotion({"test": {"records": 14, "accuracy": 13 / 14}}, bar=0.9, min_records=50,
                         confidence=0.95)
    assert not d.promoted and "14 test records, fewer than training.min_test_records 50" in d.reason


def test_the_bound_not_the_point_estimate_must_clear_the_bar():
    metrics = {"test": {"records": 60, "accuracy": 0.95}}
    low = decide_promotion(metrics, bar=0.9, min_records=50, confidence=0.95)
    assert not low.promoted and low.lower_bound < 0.9 < low.accuracy and "lower bound" in low.reason
    high = decide_promotion({"test": {"records": 166, "accuracy": 161 / 166}}, bar=0.9,
                            min_records=50, confidence=0.95)
    assert high.promoted and high.lower_bound == pytest.approx(0.9314, abs=1e-3)
    assert high.as_dict()["split"] == "test" and high.as_dict()["records"] == 166


def test_the_export_check_fails_when_inference_lags_training():
    bad = check_export(0.77, 1.0, tolerance=0.05)
    assert not bad.ok and "0.2300 below the last epoch's training accuracy 1.0000" in bad.reason
    assert check_export(0.97, 0.99, tolerance=0.05).ok
    assert check_export(1.0, 0.9, tolerance=0.05).ok, "inference may beat training (dropout, averaging)"
    assert check_export(0.5, None, tolerance=0.05).ok


def test_a_challenger_below_the_champion_on_the_same_records_is_refused():
    from models.evaluation import compare_with_champion

    worse = compare_with_champion(0.91, records=200, margin=0.0, champion_version=3, champion_accuracy=0.95)
    assert not worse.ok and "champion version 3's 0.9500" in worse.reason
    assert compare_with_champion(0.95, records=200, margin=0.0, champion_version=3,
                                 champion_accuracy=0.95).ok, "as good as the champion is enough"
    assert not compare_with_champion(0.955, records=200, margin=0.01, champion_version=3,
                                     champion_accuracy=0.95).ok, "a positive margin asks for more"
    assert compare_with_champion(0.94, records=200, margin=-0.02, champion_version=3,
                                 champion_accuracy=0.95).ok, "a negative margin tolerates a loss"


def test_without_a_comparable_champion_the_other_checks_decide():
    from models.evaluation import compare_with_champion

    first = compare_with_champion(0.5, records=10, margin=0.0, champion_version=None, champion_accuracy=None)
    assert first.ok and first.reason == "no version is served yet"
    other = compare_with_champion(0.5, records=10, margin=0.0, champion_version=2, champion_accuracy=None,
                                  incomparable="it was trained on classes ['a', 'b']")
    assert other.ok and "not compared: it was trained on classes" in other.reason


def test_a_challenger_must_also_hold_on_the_champions_own_test_split():
    from models.evaluation import compare_with_champion

    theirs = {"challenger": 0.90, "champion": 0.95, "records": 300.0}
    check = compare_with_champion(0.97, records=200, margin=0.0, champion_version=3,
                                  champion_accuracy=0.95, on_champion_split=theirs)
    assert not check.ok and "own test split (300 records)" in check.reason
    fine = compare_with_champion(0.97, records=200, margin=0.0, champion_version=3, champion_accuracy=0.95,
                                 on_champion_split={**theirs, "challenger": 0.96})
    assert fine.ok and "on its own test split" in fine.reason
