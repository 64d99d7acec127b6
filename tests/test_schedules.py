"""Schedules and automation on a real Dagster instance: the cron schedule asks for the next round and its run
materializes it; `rounds.automation: on_seed_change` starts one round per seed change; GPU pool and Kubernetes
GPU requests on the round."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

import synthflow
from synthflow.dagster.assets import (
    ROUND_OUTPUTS,
    PipelineKeys,
    previous_partition,
    round_index,
    round_partitions,
)
from synthflow.spec import load_spec
from tests.test_pipeline import small_spec

_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
GPU_LIMIT = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance, keys: PipelineKeys, *names: str) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        instance=instance, asset_selection=[keys.key(n) for n in names], run_config=_QUIET
    )
    assert res.success


def _run_round(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str, tags=None) -> None:
    job = defs.resolve_job_def("math_word_problems__rounds")
    res = job.execute_in_process(instance=instance, partition_key=partition, tags=tags, run_config=_QUIET)
    assert res.success


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, when: datetime, name: str = "math_word_problems"
):
    """One tick of the pipeline's schedule; the repository resolves the round partition of its run request."""
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        repository_def=defs.get_repository_def(),
        resources=defs.resources,  # what the daemon gives a schedule of this code location
    ) as context:
        return defs.resolve_schedule_def(f"{name}__next_round").evaluate_tick(context)


def _edit_seed(project: Path) -> None:
    path = project / "assets" / "data" / "math_word_problems.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["question"] += " Show your work."
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")


def test_round_job_schedule_pool_and_gpu_requests(project):
    spec_path = project / "assets" / "math_word_problems.yaml"
    gpu = synthflow.build_pipeline_defs(spec_path, profile="gpu", project_root=project)
    keys = PipelineKeys(load_spec(spec_path), ())

    job = gpu.resolve_job_def("math_word_problems__rounds")
    assert json.loads(job.tags["dagster-k8s/config"]) == GPU_LIMIT  # run pod (K8sRunLauncher)
    round_def = gpu.resolve_assets_def(keys.key("training_set"))
    assert round_def.keys == {keys.key(n) for n in ROUND_OUTPUTS}
    assert json.loads(round_def.op.tags["dagster-k8s/config"]) == GPU_LIMIT  # step pod (k8s_job_executor)
    assert round_def.op.pool == "gpu"

    schedule = gpu.resolve_schedule_def("math_word_problems__next_round")
    assert schedule.cron_schedule == "0 0 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == job.name

    # CPU profiles declare no `gpus:`; nothing asks Kubernetes for a GPU.
    smoke = synthflow.build_pipeline_defs(spec_path, profile="smoke", project_root=project)
    assert "dagster-k8s/config" not in smoke.resolve_job_def("math_word_problems__rounds").tags
    assert "dagster-k8s/config" not in smoke.resolve_assets_def(keys.key("training_set")).op.tags
    # Without `rounds.automation` nothing is automated.
    for key in smoke.resolve_asset_graph().get_all_asset_keys():
        assert smoke.resolve_assets_def(key).automation_conditions_by_key.get(key) is None


@pytest.mark.slow
def test_schedule_requests_the_next_round_and_its_run_materializes_it(project):
    spec = small_spec(project)
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project)
    day5 = datetime(2026, 1, 5, tzinfo=UTC)

    with dg.instance_for_test() as instance:
        tick = _tick(defs, instance, day5)
        assert not tick.run_requests and "never materialized" in tick.skip_message

        _materialize(defs, instance, keys, "seed", "seed_map")
        [request] = _tick(defs, instance, day5).run_requests
        assert request.partition_key == "2026-01-01"  # round 1, not the newest window (2026-01-04)

        _run_round(defs, instance, request.partition_key, request.tags)
        assert instance.get_materialized_partitions(keys.key("training_set")) == {"2026-01-01"}
        [run] = instance.get_run_records(dg.RunsFilter(job_name="math_word_problems__rounds"))
        assert run.dagster_run.tags["synthflow/pipeline"] == "math_word_problems"

        [request] = _tick(defs, instance, day5).run_requests
        assert request.partition_key == "2026-01-02"
        # At 2026-01-02 00:00 only the window of 2026-01-01 has closed, and it is done.
        tick = _tick(defs, instance, datetime(2026, 1, 2, tzinfo=UTC))
        assert not tick.run_requests and "every round up to this tick" in tick.skip_message


@pytest.mark.slow
def test_on_seed_change_starts_one_round_per_seed_change(project):
    spec_path = project / "assets" / "math_word_problems.yaml"
    small_spec(project, **{'start: "2026-01-01"': 'start: "2026-01-01"\n  automation: on_seed_change'})
    spec_path.write_text(spec_path.read_text() + "\nexport:\n  url: ../exports/math\n")
    spec = load_spec(spec_path)
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project)
    now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    cursor = None

    def tick() -> dict[str, set]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=cursor, evaluation_time=now
        )
        cursor = result.cursor
        names = ("seed_map", *ROUND_OUTPUTS, "export")
        return {
            n: result.get_requested_partitions(keys.key(n))
            for n in names
            if result.get_num_requested(keys.key(n))
        }

    round_of = lambda p: {n: {p} for n in ROUND_OUTPUTS}  # noqa: E731 - the whole multi-asset, one partition

    with dg.instance_for_test() as instance:
        assert tick() == {}
        _materialize(defs, instance, keys, "seed")
        assert tick() == {"seed_map": {None}}  # the seed map follows the seed
        _materialize(defs, instance, keys, "seed_map")
        assert tick() == round_of("2026-01-01")  # a new seed (version) -> the next round
        assert tick() == {}  # requested once

        _run_round(defs, instance, "2026-01-01")
        assert tick() == {"export": {None}}  # the export follows the round; no chain into round 2

        _edit_seed(project)
        _materialize(defs, instance, keys, "seed")
        assert tick() == {"seed_map": {None}}  # the round waits for the rebuilt seed map
        _materialize(defs, instance, keys, "seed_map")
        assert tick() == round_of("2026-01-02")
        assert tick() == {}

        # Same content, same data version: the seed map refreshes, no new round.
        _materialize(defs, instance, keys, "seed")
        assert tick() == {"seed_map": {None}}
        _materialize(defs, instance, keys, "seed_map")
        assert tick() == {}


@pytest.mark.parametrize(
    ("cron", "start", "first_keys"),
    [
        ("0 0 * * *", "2026-01-01", ["2026-01-01", "2026-01-02"]),
        ("0 6 * * *", "2026-01-01", ["2026-01-01", "2026-01-02"]),  # was: start could not be parsed
        ("*/15 * * * *", "2026-01-01", ["2026-01-01-00:00", "2026-01-01-00:15"]),
        ("0 */6 * * *", "2026-01-01", ["2026-01-01-00:00", "2026-01-01-06:00"]),
        ("30 2 * * 1", "2026-01-01", ["2026-01-05", "2026-01-12"]),
        ("0 6 * * *", "2026-01-01T06:00", ["2026-01-01", "2026-01-02"]),
        ("*/15 * * * *", "2026-01-01-00:30", ["2026-01-01-00:30", "2026-01-01-00:45"]),
    ],
)
def test_round_partitions_fit_any_cron_with_a_plain_start_date(project, cron, start, first_keys):
    spec_path = project / "assets" / "math_word_problems.yaml"
    text = spec_path.read_text().replace('cron: "0 0 * * *"', f'cron: "{cron}"')
    spec_path.write_text(text.replace('start: "2026-01-01"', f'start: "{start}"'))
    spec = load_spec(spec_path)
    parts = round_partitions(spec)
    keys = parts.get_partition_keys(current_time=datetime(2026, 1, 20, tzinfo=UTC))
    assert keys[:2] == first_keys
    assert len(set(keys)) == len(keys)  # every window has its own key
    defs = synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project)
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("math_word_problems__next_round").cron_schedule == cron
    # Round numbers and the predecessor a round reads follow the keys.
    assert round_index(parts, keys[1]) == 2 and previous_partition(parts, keys[1]) == keys[0]
