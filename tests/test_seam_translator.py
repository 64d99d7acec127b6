"""The translator: each spec output's AssetSpec from one overridable object, overrides from the Component's YAML,
and the scaffolder (`dg scaffold defs synthflow.dagster.SynthflowPipelineComponent NAME`) run in a real dg project."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

import synthflow
from synthflow.dagster import SynthflowTranslator
from synthflow.dagster.assets import ROUND_OUTPUTS
from synthflow.dagster.translator import SynthflowOutputProps
from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.test_pipeline import small_spec
from tests.test_seam_dg_project import dg_cli, write_dg_project


class TeamTranslator(SynthflowTranslator):
    """Keys under ml/, one group, the platform team owns the training set, a tag on everything."""

    def get_asset_key(self, spec, output, key_prefix):
        return dg.AssetKey(["ml", spec.name, output])

    def get_asset_spec(self, props: SynthflowOutputProps) -> dg.AssetSpec:
        s = super().get_asset_spec(props).replace_attributes(group_name="ml_data")
        s = s.merge_attributes(tags={"cost_center": "42"})
        if props.output == "training_set":
            s = s.replace_attributes(owners=["team:ml-platform"])
        return s


def test_a_translator_renames_keys_and_every_dep_check_and_job_follows(project):
    spec = small_spec(project)
    defs = synthflow.build_pipeline_defs(
        spec, profile="smoke", project_root=project, translator=TeamTranslator()
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    ts = dg.AssetKey(["ml", spec.name, "training_set"])
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        f"ml/{spec.name}/{n}" for n in ("seed", "seed_map", *ROUND_OUTPUTS)
    }
    node = graph.get(ts)
    assert node.group_name == "ml_data" and node.owners == ["team:ml-platform"]
    assert node.tags["cost_center"] == "42" and node.tags["synthflow/pipeline"] == spec.name
    assert ts in node.parent_keys  # the self-dependency on round r-1 follows the new key
    checks = {k.name for k in defs.resolve_assets_def(ts).check_keys if k.asset_key == ts}
    assert {"schema", "keeps_previous_rows"} <= checks
    job = defs.resolve_job_def(f"{spec.name}__rounds")
    assert {ts, dg.AssetKey(["ml", spec.name, "candidates"])} <= set(job.asset_layer.executable_asset_keys)


def test_a_host_asset_reads_a_renamed_output_through_the_io_manager(project):
    spec = small_spec(project)
    seed_key = dg.AssetKey(["ml", spec.name, "seed"])

    @dg.asset(ins={"seed": dg.AssetIn(key=seed_key)})
    def seed_size(seed) -> int:
        return len(seed)

    defs = dg.Definitions.merge(
        synthflow.build_pipeline_defs(
            spec, profile="smoke", project_root=project, translator=TeamTranslator()
        ),
        dg.Definitions(assets=[seed_size]),
    )
    with dg.instance_for_test() as instance:
        res = materialize(defs, instance, [seed_key, seed_size.key], raise_on_error=False)
        assert res.success, failure_text(res)
        assert res.output_for_node("seed_size") == len(Store(str(project / "store")).read(spec.name, "seed"))


def test_component_yaml_overrides_asset_attributes(project):
    from dagster.components.testing import create_defs_folder_sandbox

    small_spec(project)
    with create_defs_folder_sandbox() as sandbox:
        comp_dir = sandbox.defs_folder_path / "synthetic_math"
        comp_dir.mkdir()
        (comp_dir / "defs.yaml").write_text(
            yaml.safe_dump(
                {
                    "type": "synthflow.dagster.SynthflowPipelineComponent",
                    "attributes": {
                        "spec": str(project / "assets" / "math_word_problems.yaml"),
                        "profile": "smoke",
                        "project_root": str(project),
                        "key_prefix": "synthetic",
                        "translation": {
                            "tags": {"team": "ml-data"},
                            "kinds": ["parquet"],
                            "outputs": {
                                "training_set": {
                                    "owners": ["team:ml-platform"],
                                    "kinds": ["parquet", "delta"],
                                }
                            },
                        },
                    },
                }
            )
        )
        with sandbox.build_all_defs() as defs:
            graph = defs.resolve_asset_graph()
            base = ["synthetic", "math_word_problems"]
            ts, seed = (
                graph.get(dg.AssetKey([*base, "training_set"])),
                graph.get(dg.AssetKey([*base, "seed"])),
            )
            assert ts.owners == ["team:ml-platform"] and ts.kinds == {"parquet", "delta"}
            assert seed.kinds == {"parquet"} and seed.tags["team"] == "ml-data"
            assert seed.owners == ["team:ml-data"]  # the spec's owners stay where not overridden


@pytest.mark.slow
def test_dg_scaffold_writes_a_starter_that_checks_and_launches(tmp_path, monkeypatch):
    root = tmp_path / "host_project"
    root.mkdir()
    write_dg_project(root, {})
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env_home = tmp_path / "synthflow_home"

    out = dg_cli(root, home, "scaffold", "defs", "synthflow.dagster.SynthflowPipelineComponent", "starter")
    assert out.returncode == 0, out.stderr[-3000:]
    folder = root / "host" / "defs" / "starter"
    assert {p.name for p in folder.iterdir()} >= {"defs.yaml", "starter.yaml", "data", "resources"}
    assert dg_cli(root, home, "check", "defs").returncode == 0

    monkeypatch.setenv("SYNTHFLOW_HOME", str(env_home))  # where the starter profile's store lives
    up = dg_cli(root, home, "launch", "--assets", "key:starter/seed,key:starter/seed_map")
    assert up.returncode == 0, up.stderr[-3000:]
    rnd = ",".join(f"key:starter/{n}" for n in ROUND_OUTPUTS)
    out = dg_cli(root, home, "launch", "--assets", rnd, "--partition", "2026-01-01")
    assert out.returncode == 0, out.stderr[-3000:]
    assert Store(str(env_home / "store")).latest("starter", "training_set", "2026-01-01") is not None
