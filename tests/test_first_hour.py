"""A new user's first hour, from a fresh clone of this repository in a temporary folder, with the project's venv.

The README's demo command (`make demo`, on the default real CPU model), then `synthflow validate`, `versions`,
`export` (read back with `datasets.load_from_disk`) and `synthflow ui` answering GraphQL for the demo's assets.
Nothing synthflow-, Dagster- or Hugging-Face-specific from this test session's environment reaches the commands:
they run the way a user's shell would run them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_ui import graphql, ui_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
PIPELINE = "support_questions"
ROWS_PER_ROUND = 12


def user_env(clone: Path) -> dict[str, str]:
    drop = ("SYNTHFLOW_", "DAGSTER_", "HF_", "TRANSFORMERS_", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # The venv's synthflow is an editable install of the repository under test; the clone's own code goes first.
    env["PYTHONPATH"] = str(clone)
    return env


def run(clone: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=clone, env=user_env(clone), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("first_hour") / "synthflow"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=120)
    return dest


@pytest.fixture(scope="module")
def demo(clone: Path) -> subprocess.CompletedProcess[str]:
    # `make demo` exactly as the README says, on this venv: -o keeps make from re-installing into it.
    stamp = VENV / ".synthflow-installed"
    t0 = time.monotonic()
    done = run(clone, "make", "demo", f"VENV={VENV}", "-o", str(stamp), timeout=1500)
    print(f"make demo: {time.monotonic() - t0:.0f} s\n{done.stdout}\n{done.stderr[-3000:]}")
    return done


def test_tracked_files_stay_inside_the_repository(clone: Path) -> None:
    staged = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True)
    for line in staged.stdout.splitlines():
        mode, _, _, path = line.split(maxsplit=3)
        if mode == "120000":  # a symbolic link: its target must resolve inside the tree
            target = (REPO / path).parent / os.readlink(REPO / path)
            assert target.resolve().is_relative_to(REPO.resolve()), f"{path} -> {os.readlink(REPO / path)}"
    for name in (".venv", ".venv/"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO, check=False)
        assert ignored.returncode == 0, f".gitignore does not cover {name!r}"


def test_make_demo_accepts_real_rows_from_the_real_model(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stderr[-3000:]
    out = demo.stdout
    assert "generator: transformers:smollm2-135m-instruct" in out, out
    assert "smoke model" not in out, out
    rounds = re.findall(r"^(\d+)\s+(\S+)\s+48\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.M)
    assert [r[0] for r in rounds] == ["1", "2"], out
    for _, _, _synthetic, _candidates, accepted in rounds:
        assert int(accepted) >= ROWS_PER_ROUND // 2, out
    assert re.search(r"^  1\. question: \S", out, re.M) and re.search(r"^  3\. question: \S", out, re.M), out
    assert "full table (" in out and "Delta Lake table" in out and "synthflow ui" in out, out


def test_validate_versions_and_export_from_the_clone(clone: Path, demo) -> None:
    assert demo.returncode == 0
    synthflow = str(VENV / "bin" / "synthflow")
    valid = run(clone, synthflow, "validate", f"assets/{PIPELINE}.yaml")
    assert valid.returncode == 0 and "ok" in valid.stdout, valid.stderr

    versions = run(clone, synthflow, "versions", f"assets/{PIPELINE}.yaml", "training_set")
    assert versions.returncode == 0, versions.stderr
    assert "2026-01-01" in versions.stdout and "2026-01-02" in versions.stdout, versions.stdout

    exported = run(clone, synthflow, "export", f"assets/{PIPELINE}.yaml", "--to", "exports/support")
    assert exported.returncode == 0, exported.stderr
    assert "exported round 2" in exported.stdout, exported.stdout
    import datasets

    ds = datasets.load_from_disk(str(clone / "exports" / "support"))
    assert len(ds) >= 48 + ROWS_PER_ROUND and "question" in ds.column_names and "_source" in ds.column_names
    assert (clone / "exports" / "support" / "README.md").is_file()


@pytest.fixture(scope="module")
def ui_url(clone: Path, demo) -> Iterator[str]:
    assert demo.returncode == 0
    cmd = [str(VENV / "bin" / "synthflow"), "ui"]
    ready = lambda keys: [PIPELINE, "training_set"] in keys  # noqa: E731
    with ui_server(cmd, clone, user_env(clone), clone / "ui.log", ready) as url:
        yield url


def test_ui_answers_graphql_for_the_demo_assets(ui_url: str) -> None:
    query = """
    query Asset($path: [String!]!) {
      assetNodeOrError(assetKey: {path: $path}) {
        ... on AssetNode { partitionStats { numMaterialized } assetMaterializations(limit: 1) { partition } }
      }
    }"""
    node = graphql(ui_url, query, {"path": [PIPELINE, "training_set"]})["assetNodeOrError"]
    assert node["partitionStats"]["numMaterialized"] == 2, node
    assert node["assetMaterializations"][0]["partition"] == "2026-01-02", node
    seed = graphql(ui_url, query.replace("partitionStats { numMaterialized } ", ""), {"path": [PIPELINE, "seed"]})
    assert seed["assetNodeOrError"]["assetMaterializations"], seed
