"""The python backend end to end through a real Dagster instance: rounds in order, the policies, provenance,
the request cache, the training-set checks, and the collapse_study example."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synthflow.collapse import data, gaussian
from synthflow.collapse.loop import LoopConfig, run_loop
from synthflow.dagster.assets import PipelineKeys
from synthflow.dagster.runner import run_rounds
from synthflow.profiles import load_profile
from synthflow.spec import load_spec
from synthflow.store import Store

RUNS, M, SEED = 5, 20, 1

SPEC = """
name: gauss_{policy}
seed:
  source: data/gauss_loop.jsonl
  text: run
  columns:
    - {{name: run, type: integer}}
    - {{name: y, type: float}}
generate:
  generator: loop
  prompt: Refit the Gaussian of every run and sample round {{{{ round }}}}.
  few_shot: 0
  output_schema:
    type: object
    properties: {{run: {{type: integer}}, y: {{type: number}}}}
    required: [run, y]
  rows_per_round: {rows}
  candidate_budget: {rows}
  sampling:
    seed: {seed}
verify: []
accumulate:
  policy: {policy}
"""

PROFILE = """
store:
  root: {root}
generators:
  loop:
    backend: python
    model: synthflow.collapse.gaussian:generate
    options:
      group_by: [run]
"""


def loop_project(project: Path, policy: str):
    rows = data.gaussian_rows(RUNS, M, seed=SEED).to_dict("records")
    (project / "assets" / "data" / "gauss_loop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "resources" / "loop.yaml").write_text(PROFILE.format(root=project / "store"))
    path = project / "assets" / f"gauss_{policy}.yaml"
    path.write_text(SPEC.format(policy=policy, rows=RUNS * M, seed=SEED))
    return load_spec(path)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.slow
def test_python_backend_accumulates_through_dagster_rounds(project):
    spec = loop_project(project, "accumulate")
    store = Store(load_profile("loop", project).store_root())
    keys = PipelineKeys(spec, ())
    with dg.instance_for_test() as instance:
        summaries = run_rounds(spec, 3, profile="loop", project_root=project, instance=instance)
        assert [(s.round, s.real_rows, s.synthetic_rows) for s in summaries] == [
            (1, 100, 100),
            (2, 100, 200),
            (3, 100, 300),
        ]
        sets = [store.read(spec.name, "training_set", s.partition) for s in summaries]
        for prev, cur in zip(sets, sets[1:], strict=False):
            assert set(prev["_id"]) <= set(cur["_id"])
        last = sets[-1]
        synth = last[last["_source"] == "synthetic"]
        assert synth["_model"].str.startswith("python:synthflow.collapse.gaussian:generate@").all()
        assert synth["_model"].nunique() == 3, "one fit per round, each named by the data it was fitted on"
        assert synth["_model_version"].nunique() == 1 and synth["_prompt_hash"].notna().all()
        assert synth.groupby("_round")["run"].value_counts().eq(M).all()
        assert summaries[0].generator == "python:synthflow.collapse.gaussian:generate"

        # The benchmark's loop (run_round without Dagster) fits exactly the same models on the same seeds.
        loop = run_loop(LoopConfig("gaussian", "accumulate", runs=RUNS, rows=M, generations=4, seed=SEED))
        for r, ts in enumerate(sets, start=1):
            fits = gaussian.fit(ts)
            assert fits["var"].to_numpy() == pytest.approx(loop[r + 1]["var"], rel=1e-12)
            assert (fits["mean"] ** 2).to_numpy() == pytest.approx(loop[r + 1]["mean_sq"], rel=1e-9)

        # Re-materializing round 2: the same fit, so every row comes from the request cache, same data version.
        job = dg.Definitions.merge(
            __import__("synthflow").build_pipeline_defs(spec, profile="loop", project_root=project)
        ).resolve_implicit_global_asset_job_def()
        round_keys = [keys.key(n) for n in ("candidates", "verified", "coverage", "training_set")]
        res = job.execute_in_process(
            instance=instance, partition_key=summaries[1].partition, asset_selection=round_keys
        )
        assert res.success
        mats = {e.asset_key: e.materialization for e in res.get_asset_materialization_events()}
        assert mats[keys.key("candidates")].metadata["requests_sent"].value == 0
        assert (
            mats[keys.key("training_set")].tags["dagster/data_version"]
            == summaries[1].versions["training_set"]
        )
        checks = _checks(res)
        assert checks["keeps_previous_rows"] and checks["unique_ids"] and checks["real_fraction"]


@pytest.mark.slow
def test_python_backend_replace_keeps_only_the_round(project):
    spec = loop_project(project, "replace")
    store = Store(load_profile("loop", project).store_root())
    with dg.instance_for_test() as instance:
        summaries = run_rounds(spec, 2, profile="loop", project_root=project, instance=instance)
        ts = store.read(spec.name, "training_set", summaries[-1].partition)
        assert set(ts["_source"]) == {"synthetic"} and set(ts["_round"]) == {2}
        assert len(ts) == RUNS * M


@pytest.mark.slow
def test_collapse_study_example_shows_error_per_policy(project):
    spec = load_spec(project / "assets" / "collapse_study.yaml")
    with dg.instance_for_test() as instance:
        summaries = run_rounds(spec, 2, profile="smoke", project_root=project, instance=instance)
        assert [s.synthetic_rows for s in summaries] == [3000, 6000]
        ev = instance.get_latest_materialization_event(PipelineKeys(spec, ()).key("coverage"))
        meta = ev.asset_materialization.metadata
        assert meta["collapse_plot"].value.startswith("![")  # a PNG the UI shows
        errors = {p: meta[f"linear_error_ratio_{p}"].value for p in ("replace", "accumulate")}
        assert all(isinstance(v, float) and v > 0 for v in errors.values())
    ts = Store(load_profile("smoke", project).store_root()).read(
        spec.name, "training_set", summaries[-1].partition
    )
    arms = ts[ts["_source"] == "synthetic"].groupby(["experiment", "policy"]).size()
    assert len(arms) == 6 and arms.nunique() == 2, "every arm adds its rows each round"
    assert pd.isna(ts.loc[ts["_source"] == "real", "policy"]).all()
