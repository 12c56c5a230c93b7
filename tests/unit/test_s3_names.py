"""Dataset and model names become object-key segments: only safe characters pass."""

from __future__ import annotations

import pytest

from dlpipe.core.errors import DlpipeError
from dlpipe.core.s3 import check_name


@pytest.mark.parametrize("name", ["digits", "digits-cnn", "v1.2_b", "0abc"])
def test_safe_names_pass(name):
    assert check_name("model", name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x' OR '1'='1", "a b"])
def test_unsafe_names_are_refused_with_the_kind_named(name):
    with pytest.raises(DlpipeError, match=r"dataset name .* may use letters"):
        check_name("dataset", name)
