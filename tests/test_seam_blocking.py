"""Checks that block across runs: a seed that failed its blocking check, or a training set that failed `schema` or
`keeps_previous_rows`, never becomes what a later round or a downstream asset reads, whether that round comes
from a plain materialize, the `<p>__next_round` schedule's tick, or a run over several partitions in order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import synthflow
from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys
from synthflow.stages.session import failed_checks
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.test_pipeline import small_spec
from tests.test_schedules import _tick

DAY10 = datetime(2026, 1, 10, tzinfo=UTC)
TS = ["math_word_problems", "training_set"]


@dg.asset(ins={"training_set": dg.AssetIn(key=TS)})
def latest_rows(training_set: pd.DataFrame) -> int:
    return len(training_set)


def _seed_file(project: Path) -> Path:
    return project / "assets" / "data" / "math_word_problems.jsonl"


def _setup(project: Path):
    spec = small_spec(project)
    keys = PipelineKeys(spec, ())
    defs = dg.Definitions.merge(
        synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project),
        dg.Definitions(assets=[latest_rows]),
    )
    return spec, keys, defs, Store(str(project / "store"))


def _round(defs, instance, keys, part):
    return materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], part, raise_on_error=False)


@pytest.mark.slow
def test_a_rejected_seed_never_feeds_a_later_round(project):
    spec, keys, defs, store = _setup(project)
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = _round(defs, instance, keys, "2026-01-01")
        assert res.success, failure_text(res)
        round1 = store.read(spec.name, "training_set", "2026-01-01")

        # A bad seed: the row the issue saw ("twelve" as an answer). Its run fails on the blocking check.
        good = _seed_file(project).read_text()
        lines = good.splitlines()
        row = json.loads(lines[3])
        row["answer"] = "twelve"
        _seed_file(project).write_text("\n".join(lines[:3] + [json.dumps(row)] + lines[4:]) + "\n")
        assert not materialize(defs, instance, [keys.key("seed")], raise_on_error=False).success
        bad = store.latest(spec.name, "seed")
        assert failed_checks(bad) == ["schema"]

        # 1. Round 2 materialized on its own (the UI's Materialize): fails at once, naming check and version.
        res = _round(defs, instance, keys, "2026-01-02")
        assert not res.success
        assert f"version {bad.version}) failed its blocking check 'schema'" in failure_text(res)
        # 2. The schedule's tick does not even start the run, and says why.
        tick = _tick(defs, instance, DAY10)
        assert not tick.run_requests
        assert "failed its blocking check 'schema'" in tick.skip_message and bad.version in tick.skip_message
        # 3. Several partitions in order, as a backfill runs them: none builds on the rejected seed.
        job = defs.resolve_job_def("math_word_problems__rounds")
        for part in ("2026-01-02", "2026-01-03"):
            res = job.execute_in_process(instance=instance, partition_key=part, raise_on_error=False)
            assert not res.success
        assert store.partitions(spec.name, "training_set") == ["2026-01-01"]
        # Downstream still reads round 1.
        res = materialize(defs, instance, [latest_rows.key])
        assert res.output_for_node("latest_rows") == len(round1)

        # The fixed seed unblocks the next round.
        _seed_file(project).write_text(good)
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        [request] = _tick(defs, instance, DAY10).run_requests
        assert request.partition_key == "2026-01-02"
        res = _round(defs, instance, keys, "2026-01-02")
        assert res.success, failure_text(res)
        round2 = store.read(spec.name, "training_set", "2026-01-02")
        assert set(round1["_id"]) <= set(round2["_id"])
        assert "twelve" not in set(round2["answer"].astype(str))


@pytest.mark.slow
def test_a_training_set_that_lost_rows_is_never_the_latest(project):
    spec, keys, defs, store = _setup(project)
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        assert _round(defs, instance, keys, "2026-01-01").success
        round1 = store.read(spec.name, "training_set", "2026-01-01")

        # A valid but smaller seed: round 2 would drop five real rows of round 1.
        lines = _seed_file(project).read_text().splitlines()
        _seed_file(project).write_text("\n".join(lines[5:]) + "\n")
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = _round(defs, instance, keys, "2026-01-02")
        assert not res.success  # the blocking check fails the step; downstream in the run would not start
        checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
        assert checks["keeps_previous_rows"] is False
        rec = store.latest(spec.name, "training_set", "2026-01-02")
        assert failed_checks(rec) == ["keeps_previous_rows"]  # kept for audit, marked

        # Neither the next round, nor the schedule, nor a downstream asset reads it.
        res = _round(defs, instance, keys, "2026-01-03")
        assert not res.success
        assert f"version {rec.version}) failed its blocking check 'keeps_previous_rows'" in failure_text(res)
        tick = _tick(defs, instance, DAY10)
        assert not tick.run_requests and "keeps_previous_rows" in tick.skip_message
        res = materialize(defs, instance, [latest_rows.key])
        assert res.output_for_node("latest_rows") == len(round1)
