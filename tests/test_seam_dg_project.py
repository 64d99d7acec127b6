"""Two SynthflowPipelineComponents, on two profiles, beside a host's own assets in one real `dg` project:
`dg list defs`, `dg check defs` and `dg launch --assets ...` run as subprocesses from the venv."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from synthflow.store import Store
from tests.seam_kit import copy_pipeline, copy_profile
from tests.test_pipeline import small_spec

BIN = Path(sys.executable).parent


def write_dg_project(root: Path, components: dict[str, dict]) -> None:
    """A minimal dg project `host` (pyproject, definitions.py, a defs folder with a warehouse asset)."""
    (root / "host" / "defs" / "warehouse").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [project]
        name = "host"
        version = "0.1.0"
        requires-python = ">=3.10"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "host"
        """)
    )
    (root / "host" / "__init__.py").write_text("")
    (root / "host" / "definitions.py").write_text(
        textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs():
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent.parent)
        """)
    )
    (root / "host" / "defs" / "warehouse" / "assets.py").write_text(
        "import dagster as dg\n\n\n@dg.asset(group_name='warehouse')\ndef orders() -> int:\n    return 3\n"
    )
    for name, attributes in components.items():
        (root / "host" / "defs" / name).mkdir()
        (root / "host" / "defs" / name / "defs.yaml").write_text(
            yaml.safe_dump({"type": "synthflow.dagster.SynthflowPipelineComponent", "attributes": attributes})
        )


def dg_cli(root: Path, home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "VIRTUAL_ENV": str(BIN.parent)}
    env.update(DAGSTER_HOME=str(home), COLUMNS="250", NO_COLOR="1")
    return subprocess.run(
        [str(BIN / "dg"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_two_components_on_two_profiles_list_check_and_launch_in_a_dg_project(project, tmp_path):
    small_spec(project)
    copy_pipeline(project, "math_b")
    store_b = copy_profile(project, "smoke_b")
    root = tmp_path / "host_project"
    root.mkdir()
    write_dg_project(
        root,
        {
            "synthetic_math": {
                "spec": str(project / "assets" / "math_word_problems.yaml"),
                "profile": "smoke",
                "project_root": str(project),
                "key_prefix": "synthetic",
            },
            "synthetic_math_b": {
                "spec": str(project / "assets" / "math_b.yaml"),
                "profile": "smoke_b",
                "project_root": str(project),
                "key_prefix": "synthetic",
            },
        },
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    listing = dg_cli(root, home, "list", "defs")
    assert listing.returncode == 0, listing.stderr[-3000:]
    for key in ("synthetic/math_word_problems/training_set", "synthetic/math_b/training_set", "orders"):
        assert key in listing.stdout, key
    for schedule in ("synthetic__math_word_problems__next_round", "synthetic__math_b__next_round"):
        assert schedule in listing.stdout
    check = dg_cli(root, home, "check", "defs")
    assert check.returncode == 0, check.stderr[-3000:]

    upstream = ",".join(
        f"key:synthetic/{p}/{n}" for p in ("math_word_problems", "math_b") for n in ("seed", "seed_map")
    )
    launch_up = dg_cli(root, home, "launch", "--assets", f"{upstream},key:orders")
    assert launch_up.returncode == 0, launch_up.stderr[-3000:]
    round_b = ",".join(
        f"key:synthetic/math_b/{n}" for n in ("candidates", "verified", "coverage", "training_set")
    )
    launch_round = dg_cli(root, home, "launch", "--assets", round_b, "--partition", "2026-01-01")
    assert launch_round.returncode == 0, launch_round.stderr[-3000:]

    # Each component's tables went to its own profile's store.
    assert Store(str(project / "store")).latest("synthetic__math_word_problems", "seed") is not None
    assert Store(str(store_b)).latest("synthetic__math_b", "training_set", "2026-01-01") is not None

    if os.environ.get("SYNTHFLOW_DG_LISTING"):  # the record for the closing note
        Path(os.environ["SYNTHFLOW_DG_LISTING"]).write_text(
            "\n".join(
                [
                    "$ dg list defs",
                    listing.stdout,
                    "$ dg check defs",
                    check.stdout + check.stderr[-500:],
                    f"$ dg launch --assets {upstream},key:orders",
                    f"exit {launch_up.returncode}; " + _run_lines(launch_up),
                    f"$ dg launch --assets {round_b} --partition 2026-01-01",
                    f"exit {launch_round.returncode}; " + _run_lines(launch_round),
                ]
            )
        )


def _run_lines(out: subprocess.CompletedProcess) -> str:
    text = out.stdout + out.stderr
    keep = [line for line in text.splitlines() if "RUN_SUCCESS" in line or "ASSET_MATERIALIZATION" in line]
    return "\n".join(keep[-12:]) or text[-1500:]
