"""The CLI as a user runs it: `synthflow run` on the local profile (falls back to the smoke model), `versions`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import small_spec


def _synthflow(project: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNTHFLOW_HOME": str(project / ".synthflow"), "HF_HUB_OFFLINE": "1"}
    env.pop("DAGSTER_HOME", None)  # the CLI picks .synthflow/dagster itself
    return subprocess.run(
        [sys.executable, "-m", "synthflow.cli", *args], cwd=project, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_run_on_local_profile_falls_back_to_the_smoke_model_and_prints_a_summary(project):
    small_spec(project)
    out = _synthflow(project, "run", "assets/math_word_problems.yaml", "--rounds", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "could not be loaded" in text and "smoke model" in text  # the one plain sentence
    header = next(line for line in text.splitlines() if line.startswith("round ") and "partition" in line)
    for col in ("real", "synthetic", "candidates", "accepted", "rejected by reason", "training_set version"):
        assert col in header
    assert "generator: smoke model (random weights)" in text
    assert (project / ".synthflow" / "dagster" / "dagster.yaml").exists()

    versions = _synthflow(project, "versions", "assets/math_word_problems.yaml", "training_set")
    assert versions.returncode == 0, versions.stderr
    rows = [line for line in versions.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and rows[0].startswith("2026-01-01")

    # The next run continues with the next round, in the same Dagster instance.
    again = _synthflow(project, "run", "assets/math_word_problems.yaml", "--rounds", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert any(line.startswith("2 ") for line in again.stdout.splitlines())


def test_run_refuses_a_bad_spec_with_its_line(project):
    spec = project / "assets" / "math_word_problems.yaml"
    spec.write_text(spec.read_text().replace("few_shot: 3", "few_shot: three"))
    out = _synthflow(project, "run", "assets/math_word_problems.yaml", "--rounds", "1")
    assert out.returncode == 2
    assert "math_word_problems.yaml:" in out.stderr and "generate.few_shot" in out.stderr
