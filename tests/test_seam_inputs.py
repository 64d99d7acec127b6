"""Training sets as plain inputs: the README's "From an existing code location" example, run as written, in a real
Dagster instance. Its host assets declare `ins=` on synthflow's keys and get pandas DataFrames with no IO manager
or resource of their own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synthflow.store import Store
from tests.seam_kit import failure_text, materialize
from tests.test_pipeline import small_spec

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From an existing code location") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_example_host_assets_take_training_sets_as_inputs(project, monkeypatch):
    small_spec(project)
    monkeypatch.chdir(project)  # the example's paths are relative to the project folder
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    defs: dg.Definitions = namespace["defs"]
    dg.Definitions.validate_loadable(defs)
    assert "io_manager" not in defs.resources  # the host's default IO manager is left alone

    base = ["synthetic", "math_word_problems"]
    key = lambda n: dg.AssetKey([*base, n])  # noqa: E731
    round_keys = [key(n) for n in ("candidates", "verified", "coverage", "training_set")]
    store = Store(str(project / "store"))
    name = "synthetic__math_word_problems"
    with dg.instance_for_test() as instance:
        assert materialize(defs, instance, [key("seed"), key("seed_map")]).success
        for part in ("2026-01-01", "2026-01-02"):
            res = materialize(defs, instance, round_keys, part, raise_on_error=False)
            assert res.success, failure_text(res)

        # A round-partitioned host asset gets that round's table.
        res = materialize(defs, instance, [dg.AssetKey("round_report")], "2026-01-01")
        round1 = store.read(name, "training_set", "2026-01-01")
        assert res.output_for_node("round_report") == {
            "rows": len(round1),
            "accepted": len(store.read(name, "verified", "2026-01-01")),
        }
        # An unpartitioned one gets the latest round's tables (not a dict of every round).
        res = materialize(defs, instance, [dg.AssetKey("fine_tune_manifest")])
        round2 = store.read(name, "training_set", "2026-01-02")
        assert res.output_for_node("fine_tune_manifest") == {"rows": len(round2), "round": 2}

    # The CLI finds the prefixed pipeline's tables with --key-prefix (and only with it).
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "synthflow.cli", *args, "--profile", "smoke"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=600,
        )

    spec_file = "assets/math_word_problems.yaml"
    assert cli("versions", spec_file, "training_set").returncode == 1
    out = cli("versions", spec_file, "training_set", "--key-prefix", "synthetic")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["2026-01-01", "2026-01-02"]
    out = cli("export", spec_file, "--key-prefix", "synthetic", "--to", str(project / "out.parquet"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "exported round 2 (2026-01-02)" in out.stdout
    assert len(pd.read_parquet(project / "out.parquet")) == len(round2)
