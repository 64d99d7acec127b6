"""A malformed spec is refused with file, line and field; `synthflow validate` prints that and exits non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synthflow.cli import main
from synthflow.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "assets" / "math_word_problems.yaml"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    p = tmp_path / "broken.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_example_spec_is_valid():
    spec = load_spec(EXAMPLE)
    assert spec.name == "math_word_problems"
    assert spec.output_columns == ["question", "solution", "answer"]
    assert len(spec.seed.columns) == 5


def test_unknown_key_names_file_line_and_field(tmp_path):
    p = _broken(tmp_path, "  few_shot: 3", "  few_shot: 3\n  fewshot_count: 4")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    line, field, msg = e.value.problems[0]
    assert field == "generate.fewshot_count"
    assert line == _line_of(p, "fewshot_count")
    assert "unknown key" in msg
    assert f"{p}:{line}: generate.fewshot_count" in str(e.value)


def test_wrong_type_names_the_nested_field(tmp_path):
    p = _broken(tmp_path, "temperature: 0.9", "temperature: hot")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    line, field, _ = e.value.problems[0]
    assert field == "generate.sampling.temperature"
    assert line == _line_of(p, "temperature: hot")


def test_bad_template_is_refused(tmp_path):
    p = _broken(tmp_path, "{% endfor %}", "{% endfo %}")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    line, field, msg = e.value.problems[0]
    assert field == "generate.prompt"
    assert line == _line_of(p, "prompt: |")
    assert "template" in msg


def test_bad_column_in_list_points_at_its_line(tmp_path):
    p = _broken(tmp_path, "{name: answer, type: float", "{name: answer, type: decimal")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    line, field, _ = e.value.problems[0]
    assert field == "seed.columns[4].type"
    assert line == _line_of(p, "type: decimal")


def test_unknown_verifier_and_bad_param(tmp_path):
    p = _broken(tmp_path, "  - type: exact_dedup", "  - type: exact_dedupe")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert "unknown verifier type 'exact_dedupe'" in str(e.value)
    p2 = _broken(tmp_path, "    k: 5", "    k: 5\n    samples: 3")
    with pytest.raises(SpecError) as e:
        load_spec(p2)
    assert "samples: unknown parameter" in str(e.value)


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nseed: [unclosed\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert e.value.problems[0][0] is not None
    assert "not valid YAML" in str(e.value)


def test_validate_cli_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    bad = _broken(tmp_path, "temperature: 0.9", "temperature: hot")
    res = runner.invoke(main, ["validate", str(EXAMPLE), str(bad)])
    assert res.exit_code == 1
    assert f"{bad}:" in res.output and "generate.sampling.temperature" in res.output
