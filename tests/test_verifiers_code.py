"""code_tests (generated code run against tests in the sandbox) and python (user functions) verifiers."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pytest

import synthflow.stages.verifiers.code_tests  # noqa: F401  (registers code_tests)
import synthflow.stages.verifiers.python_fn  # noqa: F401  (registers python)
from synthflow.spec import VerifierSpec
from synthflow.stages.verifiers.registry import build
from synthflow.stages.verifiers.sandbox import SandboxUnavailable
from tests.verifier_kit import candidate_rows, context, run_verifier

SPEC = """
name: t
seed:
  source: seed.jsonl
  text: task
  columns: [{name: task}, {name: code}, {name: tests}]
generate:
  prompt: "Write a function."
  output_schema:
    type: object
    properties: {task: {type: string}, code: {type: string}, tests: {type: string}}
"""
ADD = "def add(a, b):\n    return a + b\n"


def _verify(vtype: str, params: dict, records: list[dict], base: Path | None = None) -> pd.DataFrame:
    path = str(base / "pipeline.yaml") if base else "<string>"
    return run_verifier(vtype, params, candidate_rows(records, "task"), context(SPEC, path))


# ---- code_tests ---------------------------------------------------------------------------------------------


def test_code_that_passes_its_generated_tests_is_accepted():
    tests = "assert add(2, 3) == 5\n\ndef test_negative():\n    assert add(-1, -1) == -2\n"
    out = _verify("code_tests", {}, [{"task": "add", "code": ADD, "tests": tests}])
    assert out["ok"].tolist() == [True]
    assert out.iloc[0]["score"] == 1.0
    assert out.iloc[0]["status"] == "passed"
    assert 0 < out.iloc[0]["duration_s"] < 10


def test_failing_and_broken_code_is_rejected_with_the_first_failure():
    wrong = "def add(a, b):\n    return a - b\n"
    rows = [
        {
            "task": "wrong",
            "code": wrong,
            "tests": "def test_pos():\n    assert add(2, 3) == 5, 'add(2, 3)'\n",
        },
        {"task": "syntax", "code": "def add(a, b) return a", "tests": "assert add(1, 1) == 2"},
        {"task": "no tests", "code": ADD, "tests": ""},
    ]
    out = _verify("code_tests", {}, rows)
    assert out["ok"].tolist() == [False, False, False]
    assert out.iloc[0]["reason"] == "0/1 tests passed; first failure: test_pos: AssertionError: add(2, 3)"
    assert out.iloc[1]["reason"].startswith("solution does not import: SyntaxError")
    assert out.iloc[2]["reason"] == "no tests for this row"


def test_a_list_of_asserts_is_one_case_each_and_min_pass_rate_applies():
    half = "def add(a, b):\n    return 4\n"
    cases = ["assert add(2, 2) == 4", "assert add(1, 2) == 3"]
    strict = _verify("code_tests", {}, [{"task": "t", "code": half, "tests": cases}])
    assert not strict["ok"].iloc[0]
    assert strict.iloc[0]["score"] == 0.5
    assert strict.iloc[0]["reason"].startswith("1/2 tests passed; first failure: assert add(1, 2) == 3")
    lenient = _verify("code_tests", {"min_pass_rate": 0.5}, [{"task": "t", "code": half, "tests": cases}])
    assert lenient["ok"].iloc[0]


def test_tests_can_come_from_a_template_over_the_row():
    params = {"tests": "assert add({{ a }}, {{ b }}) == {{ a + b }}", "tests_column": None}
    out = _verify("code_tests", params, [{"task": "t", "code": ADD, "tests": None, "a": 2, "b": 40}])
    assert out["ok"].tolist() == [True]


def test_runaway_code_is_rejected_by_the_sandbox():
    rows = [
        {"task": "loop", "code": "while True:\n    pass\n", "tests": "assert True"},
        {"task": "alloc", "code": "x = bytearray(10 * 1024**3)\n", "tests": "assert True"},
        {
            "task": "print",
            "code": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
            "tests": "assert True",
        },
    ]
    out = _verify("code_tests", {"timeout_s": 1.5, "memory_mb": 512, "max_output_bytes": 100_000}, rows)
    assert not out["ok"].any()
    assert out["status"].tolist() == ["timeout", "memory", "output_limit"]
    assert out.iloc[0]["reason"] == "sandbox timeout: wall-clock limit of 1.5 s exceeded"


def test_14_the_isolation_that_held_is_in_every_verdict_and_in_the_stats():
    verifier = build(VerifierSpec(type="code_tests"))
    rows = candidate_rows([{"task": "add", "code": ADD, "tests": "assert add(1, 2) == 3"}] * 2, "task")
    out = verifier(rows, context(SPEC))
    assert out["ok"].tolist() == [True, True]
    assert out["isolation"].tolist() == ["bwrap", "bwrap"]
    assert verifier.stats["isolation"] == "bwrap"
    assert "pid" in verifier.stats["isolation_report"] and verifier.stats["rows_run"] == 2


def test_14_without_the_sandbox_code_is_refused_unless_the_spec_says_isolation_none(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap: as on a machine without bubblewrap
    row = [{"task": "add", "code": ADD, "tests": "assert add(1, 2) == 3"}]
    with pytest.raises(SandboxUnavailable, match=r"verifier 'code_tests' refuses to run generated code.*isolation: none"):
        _verify("code_tests", {}, row)
    out = _verify("code_tests", {"isolation": "none"}, row)
    assert out["ok"].tolist() == [True]
    assert out["isolation"].tolist() == ["none"]
    with pytest.raises(ValueError, match="isolation"):
        build(VerifierSpec(type="code_tests", isolation="weak"))


def test_18_a_failure_reason_cannot_carry_another_pipelines_rows():
    outside = Path(tempfile.mkdtemp(prefix="synthflow-test-store-"))
    try:
        outside.chmod(0o755)
        secret = f"s3cret-{uuid.uuid4().hex}"
        (outside / "rows.jsonl").write_text(secret)
        (outside / "rows.jsonl").chmod(0o644)
        code = f"raise ValueError(open({str(outside / 'rows.jsonl')!r}).read())\n"
        out = _verify("code_tests", {}, [{"task": "steal", "code": code, "tests": "assert True"}])
        assert not out["ok"].iloc[0]
        assert secret not in out.iloc[0]["reason"]
        assert "No such file or directory" in out.iloc[0]["reason"]
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# ---- python ---------------------------------------------------------------------------------------------------


def _module(tmp_path: Path, body: str) -> str:
    name = f"user_checks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    return name


def test_user_function_returning_a_frame(tmp_path: Path):
    mod = _module(
        tmp_path,
        "import pandas as pd\n"
        "def short_tasks(rows, limit=5):\n"
        "    ok = rows['task'].str.len() <= limit\n"
        "    return pd.DataFrame({'ok': ok, 'score': rows['task'].str.len(),\n"
        "                         'reason': ['task too long' if not o else None for o in ok],\n"
        "                         'length': rows['task'].str.len()})\n",
    )
    params = {"function": f"{mod}:short_tasks", "kwargs": {"limit": 4}}
    out = _verify("python", params, [{"task": "add"}, {"task": "reverse"}], base=tmp_path)
    assert out["ok"].tolist() == [True, False]
    assert out.iloc[1]["reason"] == "task too long"
    assert out["score"].tolist() == [3.0, 7.0]
    assert out["length"].tolist() == [3, 7]  # extra columns are kept


def test_user_function_returning_a_bool_list_and_taking_ctx(tmp_path: Path):
    mod = _module(
        tmp_path,
        "def check(rows, ctx):\n    return [ctx.spec.name == 't' and len(t) > 3 for t in rows['task']]\n",
    )
    out = _verify(
        "python", {"function": f"{mod}:check"}, [{"task": "add"}, {"task": "reverse"}], base=tmp_path
    )
    assert out["ok"].tolist() == [False, True]
    assert out.iloc[0]["reason"] == f"rejected by {mod}:check"


def test_user_function_with_a_fresh_index_is_taken_in_row_order(tmp_path: Path):
    mod = _module(tmp_path, "import pandas as pd\ndef check(rows):\n    return pd.Series([True, False])\n")
    out = _verify("python", {"function": f"{mod}:check"}, [{"task": "a"}, {"task": "b"}], base=tmp_path)
    assert out["ok"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def check(rows):\n    return [True]\n", r"check returned 1 verdicts for 2 rows"),
        ("def check(rows):\n    return 'yes'\n", r"check returned str; expected a DataFrame"),
        (
            "import pandas as pd\ndef check(rows):\n    return pd.DataFrame({'x': [1, 2]})\n",
            r"check returned a DataFrame without an 'ok' column",
        ),
        ("def check(rows):\n    return [1, 0]\n", r"check returned a non-boolean ok value 1"),
    ],
)
def test_bad_return_shapes_name_the_function(tmp_path: Path, body: str, message: str):
    mod = _module(tmp_path, body)
    with pytest.raises(ValueError, match=rf"python verifier {mod}:{message}"):
        _verify("python", {"function": f"{mod}:check"}, [{"task": "a"}, {"task": "b"}], base=tmp_path)


def test_bad_targets_are_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="is not of the form 'module:function'"):
        build(VerifierSpec(type="python", function="no_colon"))
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        _verify("python", {"function": "no_such_module_xyz:f"}, [{"task": "a"}], base=tmp_path)
    mod = _module(tmp_path, "x = 1\n")
    with pytest.raises(ValueError, match=f"'{mod}' has no attribute 'missing'"):
        _verify("python", {"function": f"{mod}:missing"}, [{"task": "a"}], base=tmp_path)


# ---- through Dagster: a round whose generator writes hostile code ---------------------------------------------

CODER_SPEC = """
name: coder
seed:
  source: data/coder_seed.jsonl
  text: task
  columns: [{name: task}, {name: code}, {name: tests}]
generate:
  generator: coder
  prompt: Write a function.
  few_shot: 0
  output_schema:
    type: object
    properties: {task: {type: string}, code: {type: string}, tests: {type: string}}
    required: [task, code, tests]
  rows_per_round: 3
  candidate_budget: 3
verify:
  - {type: code_tests, name: tests, timeout_s: 5}
accumulate:
  policy: accumulate
diversity:
  enabled: false
"""

CODER = '''
ROWS = [
    {"task": "add", "code": "def add(a, b):\\n    return a + b\\n", "tests": "assert add(2, 3) == 5"},
    {"task": "kill", "code": "import os\\nos.kill(os.getppid(), 9)\\nos.kill(-1, 9)\\n", "tests": "assert True"},
    {"task": "steal", "code": "raise ValueError(open(%r).read())\\n", "tests": "assert True"},
]
NEXT = iter(range(10**6))
def generate(ctx):  # the three rows in turn, however the round splits its requests
    return [ROWS[next(NEXT) %% 3] for _ in range(ctx.n)]
'''


@pytest.mark.slow
def test_14_18_a_dagster_round_survives_hostile_code_and_records_the_isolation(project: Path):
    import dagster as dg

    from synthflow.dagster.runner import run_rounds
    from synthflow.profiles import load_profile
    from synthflow.spec import load_spec
    from synthflow.store import Store

    outside = Path(tempfile.mkdtemp(prefix="synthflow-test-store-"))
    try:
        outside.chmod(0o755)
        secret = f"s3cret-{uuid.uuid4().hex}"
        (outside / "rows.jsonl").write_text(secret)
        (outside / "rows.jsonl").chmod(0o644)
        assets = project / "assets"
        (assets / "data" / "coder_seed.jsonl").write_text(
            json.dumps({"task": "one", "code": "def one():\n    return 1\n", "tests": "assert one() == 1"}) + "\n"
        )
        (assets / "coder_gen.py").write_text(CODER % str(outside / "rows.jsonl"))
        (assets / "coder.yaml").write_text(CODER_SPEC)
        (project / "resources" / "coder.yaml").write_text(
            f"store:\n  root: {project / 'store'}\ngenerators:\n  coder:\n    backend: python\n"
            f"    model: coder_gen:generate\n    options: {{search_path: [{assets}]}}\n"
        )
        spec = load_spec(assets / "coder.yaml")
        with dg.instance_for_test() as instance:
            (summary,) = run_rounds(spec, 1, profile="coder", project_root=project, instance=instance)
            event = instance.get_latest_materialization_event(dg.AssetKey([spec.name, "verified"]))
            table = event.asset_materialization.metadata["verifiers"].value
            assert "isolation" in table and "bwrap" in table, table  # the UI shows the isolation that held
        store = Store(load_profile("coder", project).store_root())
        assert (summary.candidates, summary.accepted, summary.rejected_by) == (3, 1, {"tests": 2})
        verified = store.read(spec.name, "verified", summary.partition)
        rejected = store.read(spec.name, "rejected", summary.partition).set_index("task")
        assert verified["task"].tolist() == ["add"] and sorted(rejected.index) == ["kill", "steal"]
        assert verified["tests_isolation"].tolist() + rejected["tests_isolation"].tolist() == ["bwrap"] * 3
        assert "No such file or directory" in rejected.loc["steal", "reject_reason"]
        training = store.read(spec.name, "training_set", summary.partition)
        assert set(training["task"]) == {"one", "add"}
        for f in (project / "store").rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f
    finally:
        shutil.rmtree(outside, ignore_errors=True)
