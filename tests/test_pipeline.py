"""End to end through a real Dagster instance: rounds in order, accumulation, versions, blocking seed checks."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from synthflow.dagster.assets import PipelineKeys
from synthflow.dagster.runner import SeedRejected, run_rounds
from synthflow.profiles import load_profile
from synthflow.spec import load_spec
from synthflow.store import Store


def small_spec(project: Path, **replace: str):
    """The example spec, made small enough for CPU tests (4 accepted rows a round)."""
    path = project / "assets" / "math_word_problems.yaml"
    text = path.read_text()
    for old, new in {
        "rows_per_round: 12": "rows_per_round: 4",
        "candidate_budget: 36": "candidate_budget: 12",
        "batch_size: 12": "batch_size: 6",
        **replace,
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    # The smoke model writes random text, which the example's math checks rightly reject; these tests exercise the
    # round plumbing, so they keep the verifiers that random-but-schema-valid rows can pass.
    start, end = text.index("verify:"), text.index("diversity:")
    text = text[:start] + PLUMBING_VERIFY + text[end:]
    path.write_text(text)
    return load_spec(path)


PLUMBING_VERIFY = """verify:
  - type: schema
  - type: exact_dedup
  - type: dedup

"""


def _latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].asset_materialization.tags["dagster/data_version"]


@pytest.mark.slow
def test_three_rounds_accumulate_in_order_with_stable_versions(project):
    spec = small_spec(project)
    store = Store(load_profile("smoke", project).store_root())
    keys = PipelineKeys(spec, ())
    with dg.instance_for_test() as instance:
        summaries = run_rounds(spec, 3, profile="smoke", project_root=project, instance=instance)
        assert [s.round for s in summaries] == [1, 2, 3]
        parts = [s.partition for s in summaries]
        assert parts == sorted(parts)

        seed = store.read(spec.name, "seed")
        real_ids = set(seed["_id"])
        sizes, versions = [], []
        for s in summaries:
            ts = store.read(spec.name, "training_set", s.partition)
            assert real_ids <= set(ts[ts["_source"] == "real"]["_id"]), "every round holds all real rows"
            assert (ts[ts["_source"] == "synthetic"]["_round"] <= s.round).all()
            assert ts["_id"].is_unique
            for col in ("_source", "_round", "_model", "_prompt_hash"):
                assert col in ts.columns
            sizes.append(len(ts))
            versions.append(s.versions["training_set"])
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0] - 0 and sizes[-1] > len(seed), sizes
        # A round that accepts nothing (the smoke model's random text mostly fails to parse) leaves the training
        # set as it was, and identical content has the identical data version; different tables never share one.
        assert len(set(versions)) == len(set(sizes)), "data versions differ exactly where the tables differ"
        for s in summaries:  # each version stays readable
            old = store.read(spec.name, "training_set", s.partition, version=s.versions["training_set"])
            assert len(old) == s.real_rows + s.synthetic_rows
            assert (
                _latest_data_version(instance, keys.key("training_set"), s.partition)
                == s.versions["training_set"]
            )

        for p in parts:  # the share of the round with no request in flight (issue 14, E1)
            idle = store.read(spec.name, "coverage", p)["generator_idle_fraction"].iloc[0]
            assert 0.0 <= idle < 1.0
        # Accumulation: round r keeps every row of round r-1, stored by appending to r-1's Delta version (its
        # Parquet files are round r's first files; issue 14).
        recs = [store.latest(spec.name, "training_set", p) for p in parts]
        for before, after in zip(recs, recs[1:], strict=False):
            assert after.table["files"][: len(before.table["files"])] == before.table["files"]
        prev = set(store.read(spec.name, "training_set", parts[0])["_id"])
        for p in parts[1:]:
            cur = set(store.read(spec.name, "training_set", p)["_id"])
            assert prev <= cur
            prev = cur

        # Re-materializing round 2 with unchanged inputs and seeds: same data version, nothing re-generated.
        defs_assets = dg.Definitions.merge(
            __import__("synthflow").build_pipeline_defs(spec, profile="smoke", project_root=project)
        )
        job = defs_assets.resolve_implicit_global_asset_job_def()
        round_keys = [keys.key(n) for n in ("candidates", "verified", "coverage", "training_set")]
        res = job.execute_in_process(instance=instance, partition_key=parts[1], asset_selection=round_keys)
        assert res.success
        mats = {e.asset_key: e.materialization for e in res.get_asset_materialization_events()}
        assert mats[keys.key("training_set")].tags["dagster/data_version"] == versions[1]
        cand_meta = mats[keys.key("candidates")].metadata
        assert cand_meta["requests_sent"].value == 0
        assert cand_meta["requests_from_cache"].value == cand_meta["requests"].value > 0

        checks = {(e.asset_key, e.check_name): e.passed for e in res.get_asset_check_evaluations()}
        assert checks[(keys.key("training_set"), "keeps_previous_rows")]
        assert checks[(keys.key("training_set"), "unique_ids")]


def _write_seed(project: Path, lines: list[str]) -> None:
    (project / "assets" / "data" / "math_word_problems.jsonl").write_text(
        "\n".join(lines) + ("\n" if lines else "")
    )


def _seed_lines(project: Path) -> list[str]:
    return (project / "assets" / "data" / "math_word_problems.jsonl").read_text().splitlines()


def _wrong_type(lines):
    row = json.loads(lines[6])
    row["answer"] = "forty-two"
    return lines[:6] + [json.dumps(row)] + lines[7:], r"row 7, column 'answer'"


def _missing_column(lines):
    rows = [json.loads(x) for x in lines]
    for r in rows:
        r.pop("solution")
    return [json.dumps(r) for r in rows], r"column 'solution': column is missing"


def _broken_json(lines):
    return lines[:4] + [lines[4][:-7]] + lines[5:], r"math_word_problems.jsonl:5: not valid JSON"


def _empty(lines):
    return [], r"the file is empty"


@pytest.mark.parametrize(
    "breakage", [_wrong_type, _missing_column, _broken_json, _empty], ids=lambda f: f.__name__[1:]
)
def test_bad_seed_stops_the_pipeline_and_names_the_row(project, breakage):
    spec = small_spec(project)
    lines, expected = breakage(_seed_lines(project))
    _write_seed(project, lines)
    keys = PipelineKeys(spec, ())
    with dg.instance_for_test() as instance:
        with pytest.raises(SeedRejected, match=expected):
            run_rounds(spec, 1, profile="smoke", project_root=project, instance=instance)
        for name in ("seed_map", "candidates", "verified", "training_set"):
            assert instance.get_latest_materialization_event(keys.key(name)) is None, name
        evals = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(keys.key("seed"), "schema")]
        )
        if breakage in (_wrong_type, _missing_column):
            ev = evals[dg.AssetCheckKey(keys.key("seed"), "schema")]
            assert ev.evaluation is not None and not ev.evaluation.passed
            assert "failures" in ev.evaluation.metadata
