"""Fixtures of the deploy tests: the chart rendered once per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import VARIANTS, helm_template


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<variant>.yaml`` for every variant, rendered by ``helm template``."""
    folder = tmp_path_factory.mktemp("rendered")
    for name, values in VARIANTS.items():
        (folder / f"{name}.yaml").write_text(helm_template([values]).stdout)
    return folder


@pytest.fixture(scope="session")
def rendered(rendered_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Variant -> its rendered objects."""
    return {
        name: [doc for doc in yaml.safe_load_all((rendered_dir / f"{name}.yaml").read_text()) if doc]
        for name in VARIANTS
    }
