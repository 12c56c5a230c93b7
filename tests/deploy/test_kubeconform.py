"""Every rendered object against the Kubernetes and spark-operator CRD schemas (kubeconform,
strict: unknown fields are errors, a kind without a schema is an error)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import KUBE_VERSION, VARIANTS, run, schemas, tool


def kubeconform(path: Path, *, check: bool = True):
    folder = schemas()
    return run([
        tool("kubeconform"), "-strict", "-summary", "-output", "text",
        "-kubernetes-version", KUBE_VERSION,
        "-schema-location",
        f"{folder}/kubernetes/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/"
        "{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location",
        f"{folder}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
        path,
    ], check=check)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_chart_is_valid(rendered_dir: Path, variant: str) -> None:
    out = kubeconform(rendered_dir / f"{variant}.yaml").stdout
    assert "Invalid: 0, Errors: 0, Skipped: 0" in out, out
    assert "Valid: 0," not in out, out


def _typo_in_executor(objs: list[dict[str, Any]]) -> None:
    app = next(o for o in objs if o["kind"] == "SparkApplication")
    app["spec"]["executor"]["coress"] = 2


def _bad_restart_policy(objs: list[dict[str, Any]]) -> None:
    app = next(o for o in objs if o["kind"] == "SparkApplication")
    app["spec"]["restartPolicy"]["type"] = "Sometimes"


def _typo_in_probe(objs: list[dict[str, Any]]) -> None:
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")


def _schedule_missing(objs: list[dict[str, Any]]) -> None:
    del next(o for o in objs if o["kind"] == "ScheduledSparkApplication")["spec"]["schedule"]


@pytest.mark.parametrize(("break_it", "why"), [
    (_typo_in_executor, "coress"), (_bad_restart_policy, "restartPolicy/type"),
    (_typo_in_probe, "readinessProbes"), (_schedule_missing, "schedule"),
])
def test_broken_objects_are_rejected(rendered_dir: Path, tmp_path: Path,
                                     break_it: Callable[[list[dict[str, Any]]], None], why: str) -> None:
    objs = [o for o in yaml.safe_load_all((rendered_dir / "default.yaml").read_text()) if o]
    break_it(objs)
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump_all(objs))
    proc = kubeconform(bad, check=False)
    assert proc.returncode != 0 and "Invalid: 1," in proc.stdout and why in proc.stdout, proc.stdout


def test_unknown_kind_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "unknown.yaml"
    bad.write_text("apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: x}\n")
    assert kubeconform(bad, check=False).returncode != 0
