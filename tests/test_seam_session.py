"""The round driver in the stages layer, without Dagster: what round r reads, what it refuses, what it writes."""

from __future__ import annotations

import pytest

from synthflow.embedding import Embedder
from synthflow.generators import make_generator
from synthflow.spec import load_spec
from synthflow.stages.seed import load_seed
from synthflow.stages.session import (
    FAILED_CHECKS,
    RoundInputError,
    RoundSession,
    failed_checks,
    latest_passing_partition,
    pipeline_needs,
)
from synthflow.store import Store
from tests.test_pipeline import small_spec


def _stored_seed(project, failed: list[str] | None = None):
    spec = small_spec(project)
    store = Store(str(project / "store"))
    rec = store.write(
        spec.name,
        "seed",
        load_seed(spec.seed, spec.base_dir),
        meta={FAILED_CHECKS: failed} if failed else None,
    )
    return spec, store, rec


def test_a_round_refuses_a_seed_that_failed_its_check_naming_check_and_version(project):
    spec, store, rec = _stored_seed(project, ["schema"])
    with pytest.raises(RoundInputError, match=rf"version {rec.version}\) failed its blocking check 'schema'"):
        RoundSession(spec, store, spec.name, ["2026-01-01"]).load()


def test_a_round_needs_its_predecessor_and_refuses_a_blocked_one(project):
    spec, store, _ = _stored_seed(project)
    with pytest.raises(RoundInputError, match="materialize the earlier round first"):
        RoundSession(spec, store, spec.name, ["2026-01-01", "2026-01-02"]).load()
    reads = RoundSession(spec, store, spec.name, ["2026-01-01"]).load()
    assert reads.previous is None and len(reads.real) == len(reads.seed) == 48
    bad = store.write(
        spec.name,
        "training_set",
        reads.real,
        partition="2026-01-01",
        meta={FAILED_CHECKS: ["keeps_previous_rows"]},
    )
    with pytest.raises(
        RoundInputError, match=rf"round 2 \(2026-01-02\) cannot run: .*version {bad.version}\)"
    ):
        RoundSession(spec, store, spec.name, ["2026-01-01", "2026-01-02"]).load()
    assert latest_passing_partition(store, spec.name, ["2026-01-01"]) is None


def test_pipeline_needs_collects_generators_named_by_generate_and_the_verifiers(project):
    small_spec(project)
    path = project / "assets" / "math_word_problems.yaml"
    text = path.read_text()
    verify = "verify:\n  - type: llm_judge\n    judge: strict_judge\n  - type: self_consistency\n    generator: solver\n"
    start, end = text.index("verify:"), text.index("diversity:")
    path.write_text(text[:start] + verify + "\n" + text[end:])
    needs = pipeline_needs(load_spec(path))
    assert needs.generators == ("generator", "strict_judge", "solver")
    assert needs.embedders == ("embedder",)


@pytest.mark.slow
def test_a_session_runs_a_round_and_stores_every_table_with_its_checks(project):
    spec, store, _ = _stored_seed(project)
    session = RoundSession(spec, store, spec.name, ["2026-01-01"])
    generator = make_generator("smoke", "smoke")
    try:
        result = session.run(session.load(), generators={"generator": lambda: generator}, embedder=Embedder)
    finally:
        generator.close()
    assert set(result.records) >= {"candidates", "verified", "rejected", "coverage", "training_set"}
    for name, rec in result.records.items():
        assert store.latest(spec.name, name, "2026-01-01").version == rec.version
    checks = {c.name: c for c in result.checks if c.asset == "training_set"}
    assert checks["schema"].passed and checks["schema"].blocking
    assert checks["keeps_previous_rows"].blocking and not checks["unique_ids"].blocking
    assert not failed_checks(result.records["training_set"])
    assert result.coverage["round"] == 1 and len(result.coverage_frame) == 1
    assert latest_passing_partition(store, spec.name, ["2026-01-01"]) == "2026-01-01"


def test_light_mode_carries_rounds_in_memory_exactly_as_a_stored_session_reads_them(tmp_path):
    """The collapse study's and D2's light mode is the same driver: over three accumulate_subsample rounds,
    `carry` hands each round what `load` reads back from the store, and no table is written."""
    import dataclasses
    import uuid

    import pandas as pd

    from synthflow.collapse import loop
    from synthflow.generators.python_backend import PythonGenerator

    cfg = loop.LoopConfig("gaussian", "accumulate_subsample", runs=20, rows=30, generations=4, seed=5)
    spec = loop.spec_for(cfg)
    generator = PythonGenerator("synthflow.collapse.gaussian:generate", group_by=["run"], sigma=1.0)
    generators = {spec.generate.generator: lambda: generator}
    stored = Store(str(tmp_path / "store"))
    stored.write(spec.name, "seed", loop.real_data(cfg, 0, cfg.rows))
    memory = Store(f"memory://test-light-{uuid.uuid4().hex}")

    def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
        # As row sets: a stored training set can come back in another row order than it was handed in.
        a, b = (x.sort_values("_id", ignore_index=True) for x in (a, b))
        pd.testing.assert_frame_equal(a, b, check_dtype=False)

    keys = ["r1", "r2", "r3"]
    light = RoundSession(
        spec, memory, spec.name, keys[:1], persist=False, checks=(), plots=False, keep_cache=False
    )
    reads = carried = RoundSession(spec, stored, spec.name, keys[:1]).load()
    for r in range(1, 4):
        session = RoundSession(spec, stored, spec.name, keys[:r])
        if r > 1:  # what the stored session reads back is what the light session carried
            loaded = session.load()
            same_rows(loaded.previous, carried.previous)
            same_rows(loaded.pool, carried.pool)
            reads = loaded
        light = dataclasses.replace(light, partitions=keys[:r])
        light_result = light.run(reads, generators=generators)
        result = session.run(reads, generators=generators)
        pd.testing.assert_frame_equal(result.output.training_set, light_result.output.training_set)
        assert {"schema", "keeps_previous_rows"} <= {c.name for c in result.checks}
        assert not light_result.checks
        assert light_result.records == {} and "training_set" in result.records
        carried = light.carry(reads, light_result)
    assert len(carried.pool) == 3 * cfg.runs * cfg.rows
    assert not memory.fs.exists(memory.path(spec.name, "_cache", "generations"))  # keep_cache=False
