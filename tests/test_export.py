"""Export: a Hugging Face dataset to memory:// and a local folder, Parquet, the dataset card, the hub token
rule, p/export after a real round, and `synthflow export`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import datasets
import fsspec
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from huggingface_hub import DatasetCard

import synthflow
from synthflow.dagster.assets import PipelineKeys
from synthflow.dagster.runner import run_rounds
from synthflow.profiles import load_profile
from synthflow.spec import load_spec
from synthflow.stages.dataset_card import dataset_card
from synthflow.stages.export import ExportError, ExportTarget, export_table
from synthflow.store import Store
from tests.test_pipeline import small_spec

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "assets" / "math_word_problems.yaml"


def _training_set() -> pd.DataFrame:
    """Real rows of the example seed and two synthetic rows, shaped like a round's training set."""
    seed = [
        json.loads(line) for line in (REPO / "assets/data/math_word_problems.jsonl").read_text().splitlines()
    ]
    real = pd.DataFrame(seed[:6]).assign(
        _id=lambda d: d["id"], _source="real", _round=0, _model=None, _exemplar_ids=None, _scores=None
    )
    synthetic = pd.DataFrame(
        {
            "id": [None, None],
            "topic": [None, None],
            "question": ["A baker sells 12 loaves a day. How many in 5 days?", "Tom has 3 bags of 4 apples."],
            "solution": ["12 loaves a day for 5 days is 12 * 5 = 60 loaves.", "3 bags of 4 apples is 12."],
            "answer": [60.0, 12.0],
            "_id": ["s-1", "s-2"],
            "_source": ["synthetic", "synthetic"],
            "_round": [1, 2],
            "_model": ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"],
            "_exemplar_ids": ['["gsm-001", "gsm-002"]', '["gsm-003"]'],
            "_scores": ['{"length": 51.0}', '{"length": 28.0}'],
        }
    )
    # Through Arrow, as the store reads tables back: the same column types a real training set has.
    return pa.Table.from_pandas(
        pd.concat([real, synthetic], ignore_index=True), preserve_index=False
    ).to_pandas()


def _history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "round": [1, 2],
            "partition": ["2026-01-01", "2026-01-02"],
            "candidates": [10, 10],
            "accepted": [1, 1],
            "rejected": [9, 9],
            "acceptance_rate": [0.1, 0.1],
            "stop_reason": ["budget exhausted", "budget exhausted"],
            "vendi_score": [3.5, 4.25],
        }
    )


def _card() -> str:
    return dataset_card(
        load_spec(SPEC), _training_set(), _history(), round_index=2, partition="2026-01-02", version="abc123"
    )


def _read_text(url: str) -> str:
    with fsspec.open(url, "r", encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("where", ["memory", "local"])
def test_hf_dataset_round_trips_with_provenance_and_card(tmp_path, where):
    url = "memory://synthflow-export-test/math" if where == "memory" else str(tmp_path / "math")
    table, card = _training_set(), _card()
    result = export_table(table, card, ExportTarget(format="hf", url=url))
    assert result.location == url and result.rows == len(table)

    back = datasets.load_from_disk(url).to_pandas()
    assert list(back.columns) == list(table.columns)  # provenance columns survive
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert _read_text(result.card_location) == card


def test_parquet_export_to_a_file_and_to_a_folder(tmp_path):
    table, card = _training_set(), _card()
    one = export_table(table, card, ExportTarget(format="parquet", url=str(tmp_path / "math.parquet")))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "math.parquet"), table, check_dtype=False)
    assert one.card_location == str(tmp_path / "math.README.md")

    folder = "memory://synthflow-export-test/parquet"
    two = export_table(table, card, ExportTarget(format="parquet", url=folder))
    with fsspec.open(f"{folder}/data/train-00000-of-00001.parquet", "rb") as f:
        pd.testing.assert_frame_equal(pd.read_parquet(f), table, check_dtype=False)
    assert _read_text(two.card_location) == card


def test_hub_export_needs_the_token_in_the_environment(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ExportError, match="HF_TOKEN"):
        export_table(_training_set(), _card(), ExportTarget(format="hf", hub_repo="org/math"))
    with pytest.raises(ExportError, match="nothing to export to"):
        export_table(_training_set(), _card(), ExportTarget())


def test_dataset_card_says_how_the_data_was_made():
    card = _card()
    header = DatasetCard(card).data.to_dict()  # the hub's own parser reads our YAML header
    assert header["pretty_name"] == "math_word_problems"
    assert header["size_categories"] == ["n<1K"] and "synthetic" in header["tags"]
    for section in (
        "## Counts",
        "## Models",
        "## Rounds",
        "## Quality and diversity metrics",
        "## Provenance",
        "## Accumulation policy",
        "## Spec",
    ):
        assert section in card, section
    assert "8 rows: 6 real, 2 synthetic." in card
    assert "Qwen/Qwen2.5-7B-Instruct" in card
    assert "vendi_score" in card and "4.25" in card  # diversity metrics from the coverage tables
    assert "`accumulate`" in card and "Gerstgrasser" in card
    spec_yaml = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(spec_yaml)["name"] == "math_word_problems"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SYNTHFLOW_HOME": os.environ["SYNTHFLOW_HOME"], "DAGSTER_HOME": str(home)}
    env.pop("HF_TOKEN", None)
    return env


@pytest.mark.slow
def test_p_export_after_a_real_round_then_the_cli(project, tmp_path, monkeypatch):
    spec_path = project / "assets" / "math_word_problems.yaml"
    small_spec(project)
    spec_path.write_text(spec_path.read_text() + "\nexport:\n  url: ../exports/math\n")
    spec = load_spec(spec_path)
    keys = PipelineKeys(spec, ())
    store = Store(load_profile("smoke", project).store_root())
    # A token in the environment must never reach metadata, logs or the card.
    secret = "hf_thisMustNeverAppear123"
    monkeypatch.setenv("HF_TOKEN", secret)

    with dg.instance_for_test() as instance:
        [summary] = run_rounds(spec, 1, profile="smoke", project_root=project, instance=instance)
        defs = synthflow.build_pipeline_defs(spec, profile="smoke", project_root=project)
        res = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[keys.key("export")]
        )
        assert res.success
        [mat] = res.asset_materializations_for_node("math_word_problems__export")
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        url = str((project / "exports" / "math").resolve())
        assert meta["dagster/uri"] == url and meta["round"] == 1 and meta["partition"] == summary.partition
        assert all(secret not in str(v) for v in meta.values())
        assert all(secret not in (ev.message or "") for ev in res.all_events)

    training_set = store.read(spec.name, "training_set", summary.partition)
    pd.testing.assert_frame_equal(datasets.load_from_disk(url).to_pandas(), training_set)
    card = (Path(url) / "README.md").read_text()
    assert secret not in card and "round 1" in card and "synthflow-smoke" in card

    # The CLI: same store, its own Dagster instance, a Parquet file given with --to.
    home = tmp_path / "dagster_home"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthflow.cli",
            "export",
            "assets/math_word_problems.yaml",
            "--to",
            str(tmp_path / "cli" / "math.parquet"),
            "--profile",
            "smoke",
        ],
        cwd=project,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"exported round 1 ({summary.partition})" in out.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli" / "math.parquet"), training_set)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_latest_materialization_event(keys.key("export")) is not None


def test_cli_export_without_a_target_says_so(project, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthflow.cli",
            "export",
            "assets/math_word_problems.yaml",
            "--profile",
            "smoke",
        ],
        cwd=project,
        env=_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert "no `export:` section" in out.stderr and "--to" in out.stderr
