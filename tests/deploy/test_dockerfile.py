"""The Dockerfile, statically (it is built and run by buildah and podman in
tests/integration/test_image.py; there is no Docker engine here): hadolint, and
the properties the chart relies on."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.tools import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_passes() -> None:
    run([tool("hadolint"), "--config", ROOT / ".hadolint.yaml", DOCKERFILE])


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\nADD http://x/y /y\n")
    proc = run([tool("hadolint"), "--config", ROOT / ".hadolint.yaml", bad], check=False)
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout


def test_image_runs_non_root_with_everything_baked_in() -> None:
    text = DOCKERFILE.read_text()
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert "install_spark_jars" in text  # connector jars resolved at build time
    assert not re.search(r"(?m)^(RUN|ADD).*\b(curl|wget|https?://)", final)  # no downloads at run time
    for default in re.findall(r"(?m)^ARG \w+_IMAGE=(\S+)", text):
        assert ":" in default and not default.endswith(":latest"), default
    assert (ROOT / ".dockerignore").read_text().startswith("#")
