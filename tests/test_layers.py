"""The layering contracts of pyproject.toml [tool.importlinter], run the way `make test` runs them.

Also proves they bite: a copy of the package with the issue's import cycle, a Dagster import in the stages and a
concrete backend imported by a stage breaks exactly those contracts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_every_contract_is_kept() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in out.stdout


def test_every_concrete_backend_is_forbidden_to_the_stages() -> None:
    forbidden = set(_contracts()["stages-no-concrete-backend"]["forbidden_modules"])
    backends = {f"synthflow.generators.{p.stem}" for p in (ROOT / "synthflow/generators").glob("*_backend.py")}
    assert backends and backends <= forbidden, sorted(backends - forbidden)


def _inject(path: Path, line: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)


def test_the_contracts_catch_a_cycle_a_dagster_import_and_a_backend_in_the_stages(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "synthflow", tmp_path / "synthflow", ignore=shutil.ignore_patterns("__pycache__"))
    pkg = tmp_path / "synthflow"
    # The cycle issue 11 found: spec -> stages.verifiers.registry -> stages.verifiers.base -> spec.
    _inject(pkg / "spec.py", "import synthflow.stages.verifiers.registry")
    _inject(pkg / "stages/seed.py", "import dagster")
    _inject(pkg / "stages/round.py", "import synthflow.generators.vllm_backend")
    out = _lint(tmp_path, PYTHONPATH=str(tmp_path))  # the copy shadows the editable install
    assert out.returncode == 1, out.stdout + out.stderr
    report = out.stdout
    for contract in _contracts().values():
        assert f"{contract['name']} BROKEN" in " ".join(report.split()), (contract["name"], report)
    assert "synthflow.stages.seed -> dagster" in report
    assert "synthflow.stages.round -> synthflow.generators.vllm_backend" in report
