"""Where the deploy-validation tools are, and what a test does when one is missing.

``scripts/install_deploy_tools.sh`` installs them under ``$DLPIPE_HOME/deploy-tools`` (``make
setup`` runs it). As everywhere in the tests, a missing tool fails the test and says how to
install it: it never skips, in CI or not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dlpipe"
TERRAFORM = ROOT / "terraform"
INSTALL = "scripts/install_deploy_tools.sh"
KUBE_VERSION = "1.33.0"  # the same as KUBE_VERSION in scripts/install_deploy_tools.sh
# Rendered variants: name -> values file of the chart's ci/ folder.
VARIANTS = {
    "default": CHART / "ci" / "default-values.yaml",
    "gpu": CHART / "ci" / "gpu-values.yaml",
    "tf-serving-off": CHART / "ci" / "tf-serving-off-values.yaml",
}


def tools_home() -> Path:
    home = Path(os.environ.get("DLPIPE_HOME", Path.home() / ".cache" / "dlpipe")).expanduser()
    return home / "deploy-tools"


def missing(what: str) -> None:
    pytest.fail(f"{what} is not installed\n  fix: {INSTALL}  (or: make setup, which runs it)",
                pytrace=False)


def tool(name: str) -> Path:
    """A binary of the deploy tools (bin/ or the venv), else one on PATH for terraform."""
    home = tools_home()
    for candidate in (home / "bin" / name, home / "venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if name == "terraform" and (found := shutil.which("terraform")):
        return Path(found)
    missing(name)
    raise AssertionError("unreachable")


def schemas() -> Path:
    folder = tools_home() / "schemas"
    if not (folder / "sparkoperator.k8s.io" / "sparkapplication_v1beta2.json").is_file():
        missing(f"the Kubernetes and spark-operator JSON schemas ({folder})")
    return folder


def run(args: Sequence[str | Path], *, check: bool = True, cwd: Path = ROOT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(str(a) for a in args)} exited {proc.returncode}\n"
                    f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}", pytrace=False)
    return proc


def helm_template(values: Sequence[Path] = (), *, sets: Sequence[str] = (),
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = [tool("helm"), "template", "dlpipe", CHART, "--namespace", "dlpipe",
                              "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", path]
    for item in sets:
        args += ["--set", item]
    return run(args, check=check)
