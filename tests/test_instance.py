"""synthflow's own Dagster instance: the dagster.yaml it writes (run monitoring, telemetry off, one run per round
partition), runs left STARTED by a kill -9 marked failed by the next command, and one-line store errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from bench.resume import make_project
from synthflow import cli
from synthflow.dagster.instance import MARKER

_KILLED_RUN = """
import os, signal
import dagster as dg

@dg.asset
def suicide():
    os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` of `synthflow run` mid-round

dg.materialize([suicide], instance=dg.DagsterInstance.get())
"""


@pytest.fixture
def synthflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("SYNTHFLOW_HOME", str(tmp_path / ".synthflow"))
    return tmp_path / ".synthflow"


def _status(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.dagster_run.status.value for r in instance.get_run_records()]


def test_instance_has_run_monitoring_one_run_per_partition_and_no_telemetry(synthflow_home: Path) -> None:
    home = cli._use_local_dagster_home()
    assert (home / "dagster.yaml").read_text().startswith(MARKER)
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled and not instance.telemetry_enabled
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_a_users_own_dagster_yaml_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = "telemetry:\n  enabled: true\n"
    (tmp_path / "dagster.yaml").write_text(own)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    cli._use_local_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == own


def test_run_killed_with_sigkill_is_marked_failed_by_the_next_command(synthflow_home: Path) -> None:
    home = cli._use_local_dagster_home()
    done = subprocess.run([sys.executable, "-c", _KILLED_RUN], env={**os.environ, "DAGSTER_HOME": str(home)},
                          capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert _status(home) == ["STARTED"]  # nobody is left to say it ended
    cli._use_local_dagster_home()  # what `synthflow run`, `export` and `ui` do first
    assert _status(home) == ["FAILURE"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        failure = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "is gone: it was killed or crashed" in failure[-1].message


def test_store_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    project = make_project(tmp_path / "project", blocker / "store", "m", rows=2, chunk=2)
    env = {**os.environ, "SYNTHFLOW_HOME": str(project / ".synthflow"), "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "synthflow.cli", "run", "assets/resume_probe.yaml", "-p", "probe"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot create the store at {blocker}/store: Not a directory"], done.stderr
