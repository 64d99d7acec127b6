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
    assert line == _line_of(p, "{% endfo %}")  # the template's own line, not the `prompt: |` line
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


def test_duplicate_key_is_an_error_naming_both_lines(tmp_path):
    p = _broken(tmp_path, "accumulate:\n  policy: accumulate", "accumulate:\n  policy: accumulate\naccumulate:\n  policy: replace")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    first = _line_of(p, "accumulate:")
    second = first + 2
    [(line, field, msg)] = e.value.problems
    assert (line, field) == (second, "accumulate")
    assert f"line {first}" in msg and f"line {second}" in msg and "duplicate key" in msg
    # Nested mappings and list items too.
    p2 = _broken(tmp_path, "    k: 5", "    k: 5\n    k: 6")
    with pytest.raises(SpecError, match=r"verify\[5\]\.k: duplicate key"):
        load_spec(p2)


def test_duplicate_key_in_a_resource_profile(tmp_path):
    from synthflow.profiles import load_profile

    (tmp_path / "resources").mkdir()
    prof = tmp_path / "resources" / "dup.yaml"
    prof.write_text("store:\n  root: /tmp/a\n  root: /tmp/b\n")
    with pytest.raises(SpecError) as e:
        load_profile("dup", tmp_path)
    assert e.value.problems == [(3, "store.root", "duplicate key: first given on line 2, again on line 3")]


@pytest.mark.parametrize(
    "cron, field",
    [("61 25 * * *", "minute '61'"), ("0 0 32 * *", "day of month '32'"), ("0 0 * 13 *", "month '13'")],
)
def test_cron_values_are_checked(tmp_path, cron, field):
    p = _broken(tmp_path, 'cron: "0 0 * * *"', f'cron: "{cron}"')
    with pytest.raises(SpecError) as e:
        load_spec(p)
    [(line, where, msg)] = e.value.problems
    assert (line, where) == (_line_of(p, "cron:"), "rounds.cron")
    assert field in msg and "is not valid" in msg
    if cron.startswith("61"):
        assert "hour '25'" in msg


@pytest.mark.parametrize("cron", ["0 6 * * *", "*/15 * * * *", "30 2 * * MON"])
def test_any_valid_cron_takes_a_plain_start_date(tmp_path, cron):
    p = _broken(tmp_path, 'cron: "0 0 * * *"', f'cron: "{cron}"')
    spec = load_spec(p)
    assert spec.rounds.cron == cron and spec.rounds.start == "2026-01-01"


def test_start_that_is_no_date_is_refused(tmp_path):
    p = _broken(tmp_path, 'start: "2026-01-01"', 'start: "next monday"')
    with pytest.raises(SpecError, match=r"rounds.start: start must be a date"):
        load_spec(p)


def test_template_with_an_unknown_seed_field_fails_at_load(tmp_path):
    p = _broken(tmp_path, "Problem ({{ ex.topic }})", "Problem ({{ ex.topic }}, {{ ex.difficulty }})")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    [(line, field, msg)] = e.value.problems
    assert (line, field) == (_line_of(p, "ex.difficulty"), "generate.prompt")
    assert "ex.difficulty" in msg and "'topic'" in msg
    p2 = _broken(tmp_path, "{% endfor %}", "{% endfor %}{{ exemplar }}")
    with pytest.raises(SpecError, match=r"generate.prompt: template uses 'exemplar', which it is not given"):
        load_spec(p2)
    p3 = _broken(tmp_path, "system: You write grade-school", "system: >-\n    {{ ex.topic }}\n    You write grade-school")
    line = _line_of(p3, "    {{ ex.topic }}")  # a folded block: the template's line 1 is the line after `>-`
    with pytest.raises(SpecError, match=rf"{p3}:{line}: generate.system: template uses 'ex'"):
        load_spec(p3)


def test_prompt_names_are_what_build_request_renders():
    from synthflow.spec import PROMPT_NAMES, parse_spec
    from synthflow.stages.prompts import build_request
    from synthflow.stages.seed import load_seed

    text = EXAMPLE.read_text().replace(
        "Write one new problem", "Round {{ round }}, cluster {{ cluster }}, {{ exemplars | length }}. Write one new problem"
    )
    spec = parse_spec(text, str(EXAMPLE))
    seed = load_seed(spec.seed, spec.base_dir)
    req = build_request(spec, seed.head(2), round_index=4, candidate_index=0, target_cluster=7)
    assert "Round 4, cluster 7, 2." in req.messages[-1][1]
    assert set(PROMPT_NAMES) == {"exemplars", "round", "cluster"}


def test_unknown_key_inside_a_verifier_points_at_that_key(tmp_path):
    p = _broken(tmp_path, "    language: en", "    language: en\n    foo: 1")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    [(line, field, msg)] = e.value.problems
    assert (line, field) == (_line_of(p, "foo: 1"), "verify[1].foo")
    assert "foo: unknown parameter" in msg
    p2 = _broken(tmp_path, "      question: {min_chars: 40", "      question: {min_chars: -4")
    with pytest.raises(SpecError) as e:
        load_spec(p2)
    [(line, field, _)] = e.value.problems
    assert line == _line_of(p2, "min_chars: -4") and field.startswith("verify[1].lengths.question")


def test_bad_output_schema_value_reports_its_line(tmp_path):
    p = _broken(tmp_path, "answer: {type: number}", "answer: {type: numbr}")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    [(line, field, msg)] = e.value.problems
    assert (line, field) == (_line_of(p, "type: numbr"), "generate.output_schema.properties.answer.type")
    assert "not a valid JSON schema" in msg
