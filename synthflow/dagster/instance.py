"""The Dagster instance synthflow writes for itself (DAGSTER_HOME unset): its dagster.yaml, and runs left STARTED
by a killed process.

Run monitoring is on, but Dagster's DefaultRunLauncher (the one `dagster dev` uses) cannot check a run worker's
health, and `synthflow run` executes in process with no daemon at all: a round killed with kill -9 would stay
STARTED for ever. So every `synthflow` command that opens the instance first marks failed each in-progress run
whose worker process (the pid Dagster records in the run's "Executing steps in process" / "Started process for
run" engine event) no longer exists on this host.
"""

from __future__ import annotations

import fcntl
import socket
from pathlib import Path

import dagster as dg

from synthflow.store import process_alive

MARKER = "# Written by synthflow"
# Runs of one round partition queue behind each other (the store's partition lock refuses the second one anyway;
# queueing makes two UI clicks wait instead of failing). Telemetry is off: synthflow does not phone home on a
# user's behalf; set `telemetry: {enabled: true}` in a dagster.yaml of your own to opt in.
INSTANCE_YAML = f"""{MARKER}; your own DAGSTER_HOME/dagster.yaml is never touched. SQLite storage in this folder.
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 120
  cancel_timeout_seconds: 120
  max_resume_run_attempts: 0
  poll_interval_seconds: 15
  free_slots_after_run_end_seconds: 30
concurrency:
  runs:
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
"""

_IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def write_instance_yaml(home: Path) -> Path:
    """dagster.yaml for synthflow's own instance; rewritten when an older synthflow wrote it, never otherwise."""
    path = home / "dagster.yaml"
    current = path.read_text() if path.exists() else None
    ours = current is None or current.startswith((MARKER, "# Dagster instance for synthflow"))  # older synthflow
    if ours and current != INSTANCE_YAML:
        path.write_text(INSTANCE_YAML)
    return path


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that executes the run's steps, from the run's engine events (the last one wins)."""
    pid = None
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        value = (data.metadata or {}).get("pid") if data is not None else None
        if value is not None:
            try:
                pid = int(getattr(value, "value", value))
            except (TypeError, ValueError):
                continue
    return pid


def prepare_instance(home: Path) -> list[str]:
    """Open the instance in DAGSTER_HOME (= `home`) and mark failed the runs whose process is gone; their ids.

    Under a file lock: two first commands at once would both create the SQLite schema, and one would fail with
    "table alembic_version already exists".
    """
    with open(home / ".synthflow-instance.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        with dg.DagsterInstance.get() as instance:
            return fail_dead_runs(instance, socket.gethostname())


def fail_dead_runs(instance: dg.DagsterInstance, host: str) -> list[str]:
    """Mark failed every in-progress run whose worker process is gone from `host` (this machine); their ids."""
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=_IN_PROGRESS)):
        run = record.dagster_run
        pid = run_worker_pid(instance, run.run_id)
        if pid is None or process_alive(host, pid) is not False:
            continue
        instance.report_run_failed(
            run,
            f"The process running this run (pid {pid} on {host}) is gone: it was killed or crashed. Marked failed "
            "by synthflow when it next opened this instance; run the round again (it resumes from the request "
            "cache).",
        )
        failed.append(run.run_id)
    return failed
