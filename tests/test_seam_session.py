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
