"""Seed loading and the pandera schema: bad input is reported with its file, line, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthflow.spec import load_spec
from synthflow.stages.schema import column_failures
from synthflow.stages.seed import SeedLoadError, load_seed

REPO = Path(__file__).resolve().parent.parent
SPEC = load_spec(REPO / "assets" / "math_word_problems.yaml")


def test_example_seed_is_valid():
    df = load_seed(SPEC.seed, SPEC.base_dir)
    assert len(df) >= 40 and df["topic"].nunique() >= 6
    assert column_failures(df, SPEC.seed.columns) == []
    assert df["_id"].is_unique and (df["_text"] == df["question"]).all()


def _rows() -> list[dict]:
    return [
        json.loads(x) for x in (REPO / "assets/data/math_word_problems.jsonl").read_text().splitlines()[:5]
    ]


def test_broken_json_line_is_named(tmp_path):
    p = tmp_path / "seed.jsonl"
    lines = [json.dumps(r) for r in _rows()]
    lines[2] = lines[2][:-5]
    p.write_text("\n".join(lines))
    with pytest.raises(SeedLoadError, match=rf"{p}:3: not valid JSON"):
        load_seed(SPEC.seed.model_copy(update={"source": str(p)}), tmp_path)


def test_empty_file_is_named(tmp_path):
    p = tmp_path / "seed.jsonl"
    p.write_text("")
    with pytest.raises(SeedLoadError, match=rf"{p}: the file is empty"):
        load_seed(SPEC.seed.model_copy(update={"source": str(p)}), tmp_path)


def test_wrong_type_and_missing_column_name_row_and_column():
    rows = _rows()
    df = pd.DataFrame(rows)
    df["answer"] = df["answer"].astype(object)
    df.loc[3, "answer"] = "forty"
    failures = column_failures(df, SPEC.seed.columns)
    assert (3, "answer") in [(r, c) for r, c, _ in failures]
    missing = column_failures(df.drop(columns=["solution"]), SPEC.seed.columns)
    assert (None, "solution", "column is missing") in missing


def test_csv_and_parquet_over_fsspec(tmp_path):
    df = pd.DataFrame(_rows())
    df.to_csv(tmp_path / "s.csv", index=False)
    df.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        got = load_seed(SPEC.seed.model_copy(update={"source": f"file://{tmp_path / name}"}), tmp_path)
        assert list(got["_id"]) == list(df["id"])


def test_truncated_json_line_gets_a_plain_message(tmp_path):
    p = tmp_path / "seed.jsonl"
    lines = [json.dumps(r) for r in _rows()]
    lines[1] = lines[1][:30]  # cut inside a string: json says "Invalid control character at" for the newline
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SeedLoadError) as e:
        load_seed(SPEC.seed.model_copy(update={"source": str(p)}), tmp_path)
    assert str(e.value) == f"{p}:2: not valid JSON: the JSON object is cut off (the line ends before it is closed)"
    lines[1] = '{"id": "x", "topic": arithmetic}'
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SeedLoadError, match=rf"^{p}:2: not valid JSON: Expecting value at column 22$"):
        load_seed(SPEC.seed.model_copy(update={"source": str(p)}), tmp_path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_non_utf8_seed_names_the_line(tmp_path, fmt):
    df = pd.DataFrame(_rows())
    p = tmp_path / f"seed.{fmt}"
    if fmt == "jsonl":
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in _rows()) + "\n"
        line = 4
    else:
        text = df.to_csv(index=False)
        line = 5  # the header is line 1
    data = text.encode()
    lines = data.split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"a", b"\xe9", 1)  # latin-1 'é'
    p.write_bytes(b"\n".join(lines))
    col = lines[line - 1].index(b"\xe9") + 1
    with pytest.raises(SeedLoadError) as e:
        load_seed(SPEC.seed.model_copy(update={"source": str(p)}), tmp_path)
    assert str(e.value) == f"{p}:{line}: not UTF-8 text (byte 0xe9 at column {col}); save the file as UTF-8"


def test_missing_key_in_a_row_is_reported_as_missing():
    rows = _rows()
    del rows[2]["solution"]
    failures = column_failures(pd.DataFrame(rows), SPEC.seed.columns)
    assert failures == [(2, "solution", "missing (no value for this column in the row)")]
