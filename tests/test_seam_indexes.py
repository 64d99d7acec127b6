"""Issue 14 through Dagster: a round never reads the accumulated training set on the common path (accumulate +
exact_dedup + semantic dedup + the gap-filling planner). Earlier rounds' rows reach the verifiers through the
persistent indexes (an exact copy and a near copy of a round-1 row are rejected in round 3), the training set is
appended to r-1's version, and the training-set checks, run on the new rows and r-1's record, still fail a bad new
row and a dropped previous row.

The generator is a scripted double (registered as a backend, named by a profile): the smoke model's random text
cannot be made to repeat a round-1 row on purpose.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

import synthflow
from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys
from synthflow.embedding import Embedder
from synthflow.generators import Backend, register_backend
from synthflow.generators.backends import backends
from synthflow.generators.base import GenerationResult
from synthflow.stages.previous import PreviousSet
from synthflow.stages.prompts import request_seed
from synthflow.stages.session import failed_checks
from synthflow.stages.vector_index import model_slug
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.test_pipeline import small_spec

ROUNDS = ["2026-01-01", "2026-01-02", "2026-01-03"]
_PEOPLE = ["Amara", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
_THINGS = [
    ("stamps for an album", "post office"), ("bricks for a garden wall", "builders' yard"),
    ("seedlings for a vegetable bed", "nursery"), ("tickets for a choir concert", "box office"),
    ("litres of paint for a fence", "hardware shop"), ("comic books for a collection", "flea market"),
    ("ceramic tiles for a bathroom", "tile warehouse"), ("kites for a beach festival", "toy stall"),
    ("jars of honey for a bake sale", "farm shop"), ("bolts for a bicycle repair", "workshop"),
    ("candles for a lantern walk", "craft fair"), ("ropes for a sailing boat", "harbour store"),
]
_PATTERNS = [
    "{p} has {a} {t} and buys {b} more at the {s}. How many does {p} have altogether?",
    "At the {s}, {p} needs {a} {t} but only {b} are in stock. How many more must be ordered?",
    "{p} shares {a} {t} equally among {b} friends after a trip to the {s}. How many does each friend get?",
]


def _problem(round_index: int, i: int, a: int | None = None) -> dict:
    k = (round_index * 5 + i) % len(_THINGS)
    thing, shop = _THINGS[k]
    a = 20 + 3 * i + round_index if a is None else a
    b = 2 + i % 5
    q = _PATTERNS[(round_index + i) % 3].format(p=_PEOPLE[(round_index * 7 + i) % 12], a=a, b=b, t=thing, s=shop)
    return {"question": q, "solution": f"We combine the two amounts given in the problem: {a} and {b}, step by "
            f"step, and the final value is {a + b}.", "answer": float(a + b)}  # fmt: skip


def scripted(round_index: int, i: int) -> dict:
    """Round r's i-th answer; round 3 opens with an exact copy and a near copy of round 1's first two rows."""
    if round_index == 3 and i == 0:
        row = _problem(1, 0)
        return {**row, "question": row["question"].upper()}  # exact_dedup normalizes case
    if round_index == 3 and i == 1:
        row = _problem(1, 1)
        return {**row, "question": row["question"].replace("How many", "How many, in total,")}
    return _problem(round_index, i)


class ScriptedGenerator:
    """Answers each request by (round, candidate) decoded from its seed (prompts.request_seed)."""

    def __init__(self, model: str, *, bad_round: int = 0, base_seed: int = 7) -> None:
        self.bad_round = bad_round
        self._where = {request_seed(base_seed, r, i): (r, i) for r in range(1, 8) for i in range(64)}

    @property
    def model_id(self) -> str:
        return "scripted"

    @property
    def label(self) -> str:
        return "scripted double"

    def generate(self, requests, progress=None):
        for req in requests:
            r, i = self._where[req.seed]
            text = json.dumps(scripted(r, i))
            # A bad row: one the backend does not attribute to a model, which the schema check must catch.
            model = None if (r, i) == (self.bad_round, 0) else self.model_id
            yield req, GenerationResult(key=req.key(self.model_id), text=text, model=model)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True, scope="module")
def _scripted_double():
    # Registered only while this module's tests run: other tests list the known backends.
    register_backend("scripted_double", Backend(ScriptedGenerator))
    yield
    backends.unregister("scripted_double")


def _profile(project: Path, bad_round: int = 0, embedder: str = "all-MiniLM-L6-v2") -> None:
    text = (project / "resources" / "smoke.yaml").read_text()
    text = text.replace("  generator:\n    backend: smoke\n",
                        f"  generator:\n    backend: scripted_double\n    options:\n      bad_round: {bad_round}\n")  # fmt: skip
    text = text.replace("    model: all-MiniLM-L6-v2\n", f"    model: '{embedder}'\n")
    (project / "resources" / "scripted.yaml").write_text(text)


def _slug(embedder: str) -> str:
    return model_slug(Embedder(embedder).model_id)


def _round(defs, instance, keys, part, raise_on_error=True):
    return materialize(defs, instance, [keys.key(n) for n in ROUND_OUTPUTS], part, raise_on_error=raise_on_error)


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["all-MiniLM-L6-v2", "static:all-MiniLM-L6-v2"])
def test_rounds_reject_earlier_rows_through_the_indexes_without_reading_the_set(project, minilm, embedder):
    spec = small_spec(project)
    _profile(project, embedder=embedder)
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="scripted", project_root=project)
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        reads_before = PreviousSet.reads
        for part in ROUNDS:
            res = _round(defs, instance, keys, part)
            assert res.success, failure_text(res)
            assert all(c.passed for c in res.get_asset_check_evaluations()), part
        # Rounds 2 and 3 ran on r-1's record and the indexes: no training set was read back.
        assert PreviousSet.reads == reads_before
        # The seed ran once, in its own run: no round re-ran it.
        seeds = instance.fetch_materializations(keys.key("seed"), limit=10).records
        assert len(seeds) == 1

        rejected = store.read(spec.name, "rejected", ROUNDS[2])
        round1 = store.read(spec.name, "training_set", ROUNDS[0])
        first_two = round1[round1["_source"] == "synthetic"]["_id"].tolist()[:2]
        exact = [r for r in rejected["reject_reason"] if "exact duplicate of a row accepted in an earlier round" in r]
        near = [r for r in rejected["reject_reason"] if f"near-duplicate of synthetic row {first_two[1]}" in r]
        assert len(exact) == 1 and len(near) == 1, rejected["reject_reason"].tolist()

        # Each round appended its rows to r-1's Delta version; the set is the real rows plus 4 rows a round.
        recs = [store.latest(spec.name, "training_set", p) for p in ROUNDS]
        assert [r.rows for r in recs] == [48 + 4, 48 + 8, 48 + 12]
        assert recs[2].table["files"][: len(recs[1].table["files"])] == recs[1].table["files"]
        assert recs[2].meta["counts"] == {"real|0": 48, "synthetic|1": 4, "synthetic|2": 4, "synthetic|3": 4}
        full = store.read_record(recs[2])
        assert full["_id"].is_unique and (full["_source"] == "synthetic").sum() == 12
        # The indexes hold each round's additions: 4 hashes and 4 vectors a round.
        index_dir = project / "store" / spec.name / "_index"
        assert sorted(p.name for p in (index_dir / "exact_dedup").iterdir()) == [f"{p}.u64" for p in ROUNDS]
        vectors = list((index_dir / "semantic").glob("*/vectors/*.parquet"))
        assert len(vectors) == 3
        assert {p.parent.parent.name for p in vectors} == {_slug(embedder)}  # the index is the profile model's

        # Running round 3 again replaces its chunks (the cache answers; nothing is generated twice).
        res = _round(defs, instance, keys, ROUNDS[2])
        assert res.success, failure_text(res)
        again = store.latest(spec.name, "training_set", ROUNDS[2])
        assert again.version == recs[2].version
        assert PreviousSet.reads == reads_before


@pytest.mark.slow
def test_checks_on_the_new_rows_still_fail_a_bad_row_and_a_dropped_row(project, minilm):
    spec = small_spec(project)
    _profile(project, bad_round=2)
    keys = PipelineKeys(spec, ())
    defs = synthflow.build_pipeline_defs(spec, profile="scripted", project_root=project)
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        assert _round(defs, instance, keys, ROUNDS[0]).success
        res = _round(defs, instance, keys, ROUNDS[1], raise_on_error=False)
        assert not res.success
        checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert checks["schema"].passed is False
        assert "1 synthetic rows without _model" in checks["schema"].metadata["problems"].value
        assert "new rows" in checks["schema"].metadata["checked"].value  # checked on them, not on a re-read
        assert failed_checks(store.latest(spec.name, "training_set", ROUNDS[1])) == ["schema"]

    # A fresh store: a seed that shrank drops real rows of round 1 in round 2.
    _profile(project)
    defs = synthflow.build_pipeline_defs(spec, profile="scripted", project_root=project)
    shutil.rmtree(project / "store")
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        assert _round(defs, instance, keys, ROUNDS[0]).success
        seed_file = project / "assets" / "data" / "math_word_problems.jsonl"
        seed_file.write_text("\n".join(seed_file.read_text().splitlines()[5:]) + "\n")
        assert materialize(defs, instance, [keys.key("seed"), keys.key("seed_map")]).success
        res = _round(defs, instance, keys, ROUNDS[1], raise_on_error=False)
        assert not res.success
        checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
        assert checks["keeps_previous_rows"] is False
        assert failed_checks(store.latest(spec.name, "training_set", ROUNDS[1])) == ["keeps_previous_rows"]


def test_a_round_reads_r1_only_when_a_consumer_asks(project):
    """RoundSession on its own: round 2's reads hold r-1's record, not its rows, through the whole round; asking for
    `reads.previous` (what a python backend's prepare_round does) reads them once."""
    from synthflow.spec import load_spec
    from synthflow.stages.seed import load_seed
    from synthflow.stages.session import RoundSession

    path = project / "assets" / "math_word_problems.yaml"
    small_spec(project)
    text = path.read_text().replace("  - type: dedup\n", "").replace("diversity:\n", "diversity:\n  enabled: false\n")
    path.write_text(text)
    spec = load_spec(path)
    store = Store(str(project / "store"))
    store.write(spec.name, "seed", load_seed(spec.seed, spec.base_dir))
    generators = {spec.generate.generator: lambda: ScriptedGenerator("scripted")}
    for r in (1, 2):
        session = RoundSession(spec, store, spec.name, ROUNDS[:r], plots=False)
        reads = session.load()
        result = session.run(reads, generators=generators)
        assert not result.blocking_failures
        if r == 2:
            assert reads.previous_set is not None and not reads.previous_set.loaded
            assert not result.output.training_set_held and len(result.output.training_added) == 4
            assert result.output.coverage["training_rows"] == 48 + 8
            before = PreviousSet.reads
            assert len(reads.previous) == 48 + 4 and reads.previous_set.loaded  # read on first use, once
            assert len(reads.previous) == 48 + 4 and PreviousSet.reads == before + 1
    assert store.latest(spec.name, "training_set", ROUNDS[1]).rows == 48 + 8
