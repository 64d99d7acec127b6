"""The definitions load: definitions.py, build_pipeline_defs and the Component beside an existing code location."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import yaml

import synthflow
from synthflow.dagster import SynthflowPipelineComponent

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "assets" / "math_word_problems.yaml"


@dg.asset(group_name="warehouse")
def orders() -> int:
    return 3


@dg.asset(group_name="warehouse", deps=[orders])
def revenue() -> None:
    pass


def test_definitions_py_is_loadable():
    code = (
        "import dagster as dg, definitions; dg.Definitions.validate_loadable(definitions.defs); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SYNTHFLOW_PROFILE": "local"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_build_pipeline_defs_merges_into_existing_code_location(project):
    existing = dg.Definitions(assets=[orders, revenue])
    synthetic = synthflow.build_pipeline_defs(
        project / "assets" / "math_word_problems.yaml",
        key_prefix="synthetic",
        group="synthetic_math",
        profile="smoke",
        project_root=project,
    )
    defs = dg.Definitions.merge(existing, synthetic)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "orders",
        "revenue",
        "synthetic/math_word_problems/seed",
        "synthetic/math_word_problems/training_set",
    } <= keys
    seed_def = defs.resolve_assets_def(dg.AssetKey(["synthetic", "math_word_problems", "seed"]))
    assert (
        seed_def.group_names_by_key[dg.AssetKey(["synthetic", "math_word_problems", "seed"])]
        == "synthetic_math"
    )
    # Materialize the seed and the unrelated assets together in one real run.
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("orders"), dg.AssetKey(["synthetic", "math_word_problems", "seed"])],
        )
        assert res.success
        checks = res.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]


def test_component_is_registered_through_the_dg_entry_point():
    eps = importlib.metadata.entry_points(group="dagster_dg_cli.registry_modules")
    ours = [ep for ep in eps if ep.name == "synthflow"]
    assert ours and ours[0].value == "synthflow.dagster"
    assert ours[0].load().SynthflowPipelineComponent is SynthflowPipelineComponent


def test_component_loads_beside_other_defs_in_a_dg_project(project):
    from dagster.components.testing import create_defs_folder_sandbox

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
                    },
                }
            )
        )
        other = sandbox.defs_folder_path / "warehouse"
        other.mkdir()
        (other / "assets.py").write_text(
            textwrap.dedent("""
            import dagster as dg

            @dg.asset
            def orders() -> int:
                return 3
        """)
        )
        with sandbox.build_all_defs() as defs:
            dg.Definitions.validate_loadable(defs)
            keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
            assert "orders" in keys
            assert "synthetic/math_word_problems/training_set" in keys
