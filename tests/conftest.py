"""Shared test set-up: isolated state folders, the example project copied into a temp dir, fixture plugins."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    p
    for p in ("tests.fixtures.smoke", "tests.fixtures.vllm_server", "tests.fixtures.embedder")
    if (REPO / (p.replace(".", "/") + ".py")).exists()
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own SYNTHFLOW_HOME and DAGSTER_HOME; nothing touches the repo's .synthflow."""
    home = tmp_path_factory.mktemp("synthflow_home")
    os.environ["SYNTHFLOW_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project (assets/, resources/) whose store lives in the temp dir."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "assets", root / "assets")
    shutil.copytree(REPO / "resources", root / "resources")
    for prof in (root / "resources").glob("*.yaml"):
        prof.write_text(prof.read_text().replace("root: .synthflow/store", f"root: {root / 'store'}"))
    return root
