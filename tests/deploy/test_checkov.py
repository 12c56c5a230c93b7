"""checkov on the rendered chart, the Terraform modules and the Dockerfile: every finding is
fixed or justified in checkov-baseline.yaml, and every justification is still needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ROOT, TERRAFORM, VARIANTS, run, tool

BASELINE = Path(__file__).with_name("checkov-baseline.yaml")


def baseline() -> dict[str, dict[str, str]]:
    return yaml.safe_load(BASELINE.read_text())


def findings(framework: str, *target: str | Path) -> set[str]:
    proc = run([tool("checkov"), *target, "--framework", framework, "--skip-download",
                "--compact", "--quiet", "-o", "json"], check=False,
               env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    try:
        reports: Any = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    reports = reports if isinstance(reports, list) else [reports]
    assert reports and all(r.get("summary", {}).get("parsing_errors", 0) == 0 for r in reports), reports
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 0, "checkov checked nothing"
    return {f["check_id"] for r in reports for f in r["results"]["failed_checks"]}


def compare(framework: str, found: set[str]) -> None:
    allowed = baseline().get(framework) or {}
    unjustified = sorted(found - set(allowed))
    stale = sorted(set(allowed) - found)
    assert not unjustified, f"checkov {framework} findings to fix or justify in {BASELINE.name}: " \
        f"{unjustified}"
    assert not stale, f"{BASELINE.name} justifies {framework} findings that no longer occur: {stale}"


def test_every_justification_has_a_reason() -> None:
    for framework, entries in baseline().items():
        for check, reason in (entries or {}).items():
            assert isinstance(reason, str) and len(reason.split()) >= 8, (framework, check)


def test_rendered_chart(rendered_dir: Path, tmp_path: Path) -> None:
    for name in VARIANTS:
        shutil.copy(rendered_dir / f"{name}.yaml", tmp_path / f"{name}.yaml")
    compare("kubernetes", findings("kubernetes", "-d", tmp_path))


def test_terraform() -> None:
    compare("terraform", findings("terraform", "-d", TERRAFORM))


def test_dockerfile() -> None:
    compare("dockerfile", findings("dockerfile", "-f", ROOT / "Dockerfile"))


def test_checkov_catches_a_weakened_container(rendered_dir: Path, tmp_path: Path) -> None:
    text = (rendered_dir / "default.yaml").read_text()
    assert "allowPrivilegeEscalation: false" in text
    (tmp_path / "weak.yaml").write_text(text.replace("allowPrivilegeEscalation: false",
                                                     "allowPrivilegeEscalation: true"))
    assert "CKV_K8S_20" in findings("kubernetes", "-d", tmp_path)
