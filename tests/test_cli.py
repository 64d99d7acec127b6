"""The CLI as a user runs it: `synthflow run` on the local profile (here made to fall back to the smoke model), `versions`."""

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
    # The local profile's real model (tests/test_cpu_model.py, tests/test_first_hour.py) made unloadable here.
    local = project / "resources" / "local.yaml"
    local.write_text(local.read_text().replace("model: smollm2-135m-instruct", "model: /nonexistent/model.gguf"))
    out = _synthflow(project, "run", "assets/math_word_problems.yaml", "--rounds", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "could not be loaded (no such GGUF file: /nonexistent/model.gguf)" in text and "smoke model" in text
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


def _cli(cwd: Path, *args: str, home: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The CLI as a user starts it from `cwd`, with no SYNTHFLOW_HOME or DAGSTER_HOME unless `home` is given."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNTHFLOW_HOME", "DAGSTER_HOME")}
    env["HF_HUB_OFFLINE"] = "1"
    if home is not None:
        env["SYNTHFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "synthflow.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def _relative_store_profile(project: Path) -> None:
    """A profile whose store root is relative, as the shipped ones are: it must resolve against the project."""
    text = (project / "resources" / "smoke.yaml").read_text()
    text = text.replace(f"root: {project / 'store'}", "root: .synthflow/store")
    (project / "resources" / "rel.yaml").write_text(text)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_rounds_below_one_are_refused_in_one_line(project, value):
    out = _cli(project, "run", "assets/math_word_problems.yaml", "--rounds", value)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "--rounds" in errors[0] and "x>=1" in errors[0], out.stderr
    assert "Traceback" not in out.stderr and "TypeError" not in out.stderr
    assert not (project / ".synthflow").exists(), "nothing ran"


def test_missing_profile_is_one_line_naming_where_it_looked(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = project / "assets" / "math_word_problems.yaml"
    for args in ((), ("--project-root", str(project))):
        out = _cli(elsewhere, "run", str(spec), "--profile", "nope", *args)
        assert out.returncode == 2
        assert out.stderr.splitlines() == [
            f"error: {project / 'resources' / 'nope.yaml'}: no resource profile named 'nope'; "
            "known: ['endpoint', 'gpu', 'local', 'ray', 'smoke']"
        ], out.stderr
    assert not (elsewhere / ".synthflow").exists()


def test_seed_failure_from_another_folder_is_one_line_and_state_stays_in_the_project(project, tmp_path):
    _relative_store_profile(project)
    seed = project / "assets" / "data" / "math_word_problems.jsonl"
    lines = seed.read_text().splitlines()
    lines[6] = lines[6].replace('"answer": ', '"answer": "forty", "was": ', 1)
    seed.write_text("\n".join(lines) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _cli(elsewhere, "run", str(project / "assets" / "math_word_problems.yaml"), "--profile", "rel")
    assert out.returncode == 1
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: the seed failed its schema check"), out.stderr
    assert "row 7, column 'answer'" in errors[0]
    assert "Stack Trace" not in out.stdout + out.stderr and "dagster - ERROR" not in out.stdout + out.stderr
    # The Dagster instance and the store both live in the project, whichever folder the command ran in.
    assert (project / ".synthflow" / "dagster" / "dagster.yaml").exists()
    assert any((project / ".synthflow" / "store").rglob("*.parquet"))
    assert not (elsewhere / ".synthflow").exists()


def test_more_rounds_than_exist_are_refused_with_the_cap(project):
    small_spec(project)
    spec = project / "assets" / "math_word_problems.yaml"
    # A start two days before today: exactly two daily round partitions exist.
    import datetime

    start = (datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=2)).isoformat()
    spec.write_text(spec.read_text().replace('start: "2026-01-01"', f'start: "{start}"'))
    out = _cli(project, "run", str(spec), "--rounds", "5", "--profile", "smoke", home=project / ".synthflow")
    assert out.returncode == 1
    assert [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("Loading weights")] == [
        f"error: only 2 more round partition(s) exist up to now for cron '0 0 * * *' from {start}; "
        "move rounds.start earlier or wait for the next tick"
    ], out.stderr


def test_validate_reads_the_seed_and_reports_rows(project):
    from click.testing import CliRunner

    from synthflow.cli import main

    spec = str(project / "assets" / "math_word_problems.yaml")
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", spec])
    assert ok.exit_code == 0 and "seed ok: 48 rows" in ok.output, ok.output
    seed = project / "assets" / "data" / "math_word_problems.jsonl"
    good = seed.read_text()
    lines = good.splitlines()
    lines[6] = lines[6].replace('"answer": ', '"answer": "forty", "was": ', 1)
    seed.write_text("\n".join(lines) + "\n")
    bad = runner.invoke(main, ["validate", spec])
    assert bad.exit_code == 1
    assert "data/math_word_problems.jsonl: row 7, column 'answer': coerce_dtype('float64') (value: 'forty')" in bad.output
    assert runner.invoke(main, ["validate", "--no-data", spec]).exit_code == 0
    lines = good.splitlines()
    lines[4] = lines[4][:-7]
    seed.write_text("\n".join(lines) + "\n")
    broken = runner.invoke(main, ["validate", spec])
    assert broken.exit_code == 1
    assert f"seed of math_word_problems: {seed}:5: not valid JSON: the JSON object is cut off" in broken.output


@pytest.mark.slow
def test_a_round_then_export_print_no_dagster_logs(project, tmp_path):
    small_spec(project)
    spec = str(project / "assets" / "math_word_problems.yaml")
    home = project / ".synthflow"
    out = _cli(project, "run", spec, "--profile", "smoke", home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    exported = _cli(project, "export", spec, "--profile", "smoke", "--to", str(tmp_path / "ts.parquet"), home=home)
    assert exported.returncode == 0, exported.stderr[-3000:]
    for res in (out, exported):
        console = res.stdout + res.stderr
        assert " - DEBUG - " not in console and " - INFO - " not in console and "dagster - " not in console
    assert exported.stdout.startswith("exported round 1") and (tmp_path / "ts.parquet").exists()


def test_versions_and_export_find_the_project_from_another_folder(project, tmp_path):
    """Run, then `versions` and `export` from an unrelated folder: same store, one-line error for a bad profile."""
    small_spec(project)
    spec = str(project / "assets" / "math_word_problems.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _cli(elsewhere, "run", spec, "--profile", "smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    versions = _cli(elsewhere, "versions", spec, "training_set", "--profile", "smoke")
    assert versions.returncode == 0 and "2026-01-01" in versions.stdout, versions.stderr
    out = tmp_path / "export"
    exported = _cli(elsewhere, "export", spec, "--profile", "smoke", "--to", str(out))
    assert exported.returncode == 0 and (out / "README.md").is_file(), exported.stderr[-3000:]
    missing = _cli(elsewhere, "versions", spec, "training_set", "--profile", "nope")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope" in missing.stderr, missing.stderr
