"""serving.tls_cert_file / tls_key_file are checked at start: a wrong pair names the setting."""

from __future__ import annotations

import pytest

from dlpipe.core.config import load_config, with_overrides
from dlpipe.core.errors import ConfigError
from dlpipe.localstack.certs import self_signed
from dlpipe.serving.tls import tls_files
from tests.conftest import ROOT


def serving(**tls):
    cfg = load_config(ROOT / "conf" / "pipeline.yaml")
    return with_overrides(cfg, {f"serving.{k}": str(v) for k, v in tls.items()}).serving


def test_no_tls_by_default_and_a_good_pair_loads(tmp_path):
    assert tls_files(serving()) is None
    cert, key = self_signed(tmp_path)
    files = tls_files(serving(tls_cert_file=cert, tls_key_file=key))
    assert files is not None and (files.cert, files.key) == (cert, key)


def test_half_a_pair_a_missing_file_and_a_foreign_key_are_refused_naming_the_fix(tmp_path):
    cert, key = self_signed(tmp_path / "a")
    _, other_key = self_signed(tmp_path / "b")
    cases = [({"tls_cert_file": cert}, "serving.tls_cert_file is set but not its pair"),
             ({"tls_key_file": key}, "serving.tls_key_file is set but not its pair"),
             ({"tls_cert_file": cert, "tls_key_file": tmp_path / "nope.key"},
              f"serving.tls_key_file: cannot read {tmp_path / 'nope.key'}"),
             ({"tls_cert_file": cert, "tls_key_file": other_key}, "do not load as a certificate")]
    for settings, says in cases:
        with pytest.raises(ConfigError, match="fix:") as refused:
            tls_files(serving(**settings))
        assert says in str(refused.value)
