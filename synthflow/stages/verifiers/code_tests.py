"""The `code_tests` verifier: run each row's generated code against its tests in the sandbox.

Tests come from a column of the row (generated with the code, or carried from a seed such as MBPP's `test_list`)
or from a Jinja template over the row. A list of strings is one test case per string (`assert f(2) == 4`); a
string is a test module whose top level is one case and whose `test_*` functions are one case each. The code is
importable as `solution` and its names are visible to the tests. See sandbox.py beside it for what the sandbox
enforces. Where the sandbox cannot start (no bubblewrap, no user namespaces) the verifier refuses to run any code
unless the spec says `isolation: none`; the level that held is in every verdict (`isolation`) and in `stats`.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from synthflow.stages.verifiers.base import VerifyContext, verdicts
from synthflow.stages.verifiers.llm_judge import row_contexts
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.stages.verifiers.rules import column_values
from synthflow.stages.verifiers.sandbox import Limits, SandboxResult, SandboxUnavailable, probe, run_python
from synthflow.templates import TemplateError, TemplateStr, render

MARKER = "@@synthflow-tests@@"

# Runs inside the sandbox as main.py. Prints one marker line with the tally as the last thing it does.
HARNESS = r"""
import json, sys, traceback
MARKER = "@@synthflow-tests@@"
spec = json.load(open("tests.json"))
results = []

def record(name, fn):
    try:
        fn()
        results.append([name, None])
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        results.append([name, (type(e).__name__ + ": " + str(e))[:300]])

def finish(error=None):
    failures = [[n, e] for n, e in results if e is not None]
    out = {"passed": len(results) - len(failures), "total": len(results), "failures": failures[:3], "error": error}
    sys.stdout.flush()
    print("\n" + MARKER + json.dumps(out), flush=True)
    sys.exit(0 if error is None and not failures and results else 1)

try:
    import solution
except BaseException as e:
    finish("solution does not import: " + type(e).__name__ + ": " + str(e)[:300])
names = {k: v for k, v in vars(solution).items() if not k.startswith("__")}

if spec["kind"] == "cases":
    for case in spec["cases"]:
        ns = dict(names)
        record(case.strip().splitlines()[0][:120] if case.strip() else "<empty>",
               lambda c=case, ns=ns: exec(compile(c, "<test>", "exec"), ns))
else:
    ns = dict(names, __name__="tests")
    record("<module>", lambda: exec(compile(spec["module"], "tests.py", "exec"), ns))
    tests = [(n, f) for n, f in list(ns.items())
             if n.startswith("test") and callable(f) and getattr(f, "__module__", None) == "tests"]
    if tests and results[-1][1] is None:
        results.pop()  # a top level that only defines test functions is not a case of its own
    for name, fn in tests:
        record(name, fn)
finish()
"""


class CodeTestsParams(VerifierParams):
    code_column: str = "code"
    tests_column: str | None = "tests"  # a string (test module) or a list of strings (one case each)
    tests: TemplateStr | None = None  # Jinja2 template over the row giving the test module; wins over tests_column
    min_pass_rate: float = Field(default=1.0, gt=0, le=1)
    timeout_s: float = Field(default=10.0, gt=0)  # wall clock per row
    cpu_s: int = Field(default=10, ge=1)
    memory_mb: int = Field(default=1024, ge=64)
    max_processes: int = Field(default=16, ge=1)
    max_output_bytes: int = Field(default=200_000, ge=1000)
    max_file_bytes: int = Field(default=10_000_000, ge=0)
    workers: int = Field(default=2, ge=1)  # sandboxes run at once
    max_disk_bytes: int = Field(default=64_000_000, ge=1_000_000)  # all files the code writes, together
    # "none" runs generated code without isolation, as the pipeline's own user: only for trusted code.
    isolation: Literal["sandbox", "none"] = "sandbox"

    @property
    def limits(self) -> Limits:
        return Limits(
            wall_s=self.timeout_s,
            cpu_s=self.cpu_s,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
            max_output_bytes=self.max_output_bytes,
            max_file_bytes=self.max_file_bytes,
            max_disk_bytes=self.max_disk_bytes,
        )


@register("code_tests", CodeTestsParams)
def code_tests_verifier(name: str, params: CodeTestsParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        codes = list(column_values(rows, params.code_column, name))
        tests = _tests_per_row(rows, params, name)
        if params.isolation == "sandbox":
            try:
                report = probe()
            except SandboxUnavailable as e:
                raise SandboxUnavailable(f"verifier {name!r} refuses to run generated code: {e}") from e
        else:
            report = {"level": "none"}
        if not verify.stats:
            ctx.log(f"verifier {name!r} runs code with isolation {report['level']}: {json.dumps(report)}")
        verify.stats.update(isolation=report["level"], isolation_report=json.dumps(report, sort_keys=True))
        verify.stats["rows_run"] = verify.stats.get("rows_run", 0) + len(rows)
        ctx.state.setdefault("verifier_stats", {})[name] = verify.stats
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            outcomes = list(
                pool.map(
                    lambda ct: run_tests(ct[0], ct[1], params.limits, params.isolation),
                    zip(codes, tests, strict=True),
                )
            )
        out = verdicts(
            rows.index,
            [o.ran and o.pass_rate >= params.min_pass_rate for o in outcomes],
            [o.reason(params.min_pass_rate) for o in outcomes],
            score=[o.pass_rate for o in outcomes],
        )
        out["status"] = pd.Series([o.status for o in outcomes], index=rows.index, dtype=object)
        out["duration_s"] = pd.Series([o.duration_s for o in outcomes], index=rows.index, dtype=float)
        out["isolation"] = pd.Series([o.isolation for o in outcomes], index=rows.index, dtype=object)
        return out

    verify.name = name
    verify.stats = {}  # isolation level and report, rows run: for the round's metadata
    return verify


class Outcome:
    """What running one row's tests gave: the sandbox status and the harness tally."""

    def __init__(
        self,
        status: str,
        passed: int = 0,
        total: int = 0,
        detail: str = "",
        duration_s: float = 0.0,
        failures: list[list[str]] | None = None,
        isolation: str | None = None,
    ):
        self.status, self.passed, self.total, self.detail = status, passed, total, detail
        self.duration_s, self.failures = duration_s, failures or []
        self.isolation = isolation  # the sandbox's level; None when no code ran

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def ran(self) -> bool:
        """The tests ran to the end (whatever they found)."""
        return self.status in ("passed", "failed") and self.total > 0 and not self.detail

    def reason(self, min_rate: float) -> str | None:
        if self.ran and self.pass_rate >= min_rate:
            return None
        if self.detail:
            return self.detail
        first = f"; first failure: {self.failures[0][0]}: {self.failures[0][1]}" if self.failures else ""
        return f"{self.passed}/{self.total} tests passed{first}"


def run_tests(code: Any, tests: Any, limits: Limits, isolation: Literal["sandbox", "none"] = "sandbox") -> Outcome:
    """Run one row's code against its tests in a fresh sandbox."""
    if _missing(code) or not str(code).strip():
        return Outcome("error", detail="no code")
    spec = _test_spec(tests)
    if spec is None:
        return Outcome("error", detail="no tests for this row")
    result = run_python(
        HARNESS,
        files={"solution.py": str(code), "tests.json": json.dumps(spec)},
        limits=limits,
        isolation=isolation,
    )
    outcome = _outcome(result)
    outcome.isolation = result.isolation.get("level")
    return outcome


def _outcome(result: SandboxResult) -> Outcome:
    tally = None
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                tally = json.loads(line[len(MARKER) :])
            except json.JSONDecodeError:
                tally = None
            break
    if result.status in ("timeout", "memory", "output_limit", "error") or tally is None:
        detail = f"sandbox {result.status}: {result.detail}" if result.detail else f"sandbox {result.status}"
        return Outcome(result.status, detail=detail, duration_s=result.duration_s)
    errors = [tally.get("error") or "", *(f[1] or "" for f in tally.get("failures") or [])]
    # The harness catches MemoryError like any other exception; it still means the memory limit was hit.
    status = "memory" if any("MemoryError" in e for e in errors) else result.status
    return Outcome(
        status,
        tally["passed"],
        tally["total"],
        tally.get("error") or "",
        result.duration_s,
        tally.get("failures"),
    )


def _test_spec(tests: Any) -> dict[str, Any] | None:
    if isinstance(tests, str) and tests.strip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            tests = json.loads(tests)
    if hasattr(tests, "tolist"):  # numpy arrays out of Parquet list columns
        tests = tests.tolist()
    if isinstance(tests, list | tuple):
        cases = [str(t) for t in tests if str(t).strip()]
        return {"kind": "cases", "cases": cases} if cases else None
    if _missing(tests) or not str(tests).strip():
        return None
    return {"kind": "module", "module": str(tests)}


def _tests_per_row(rows: pd.DataFrame, params: CodeTestsParams, verifier: str) -> list[Any]:
    if params.tests is not None:
        try:
            return [render(params.tests, **c) for c in row_contexts(rows)]
        except TemplateError as e:
            raise ValueError(f"verifier {verifier!r}: {e}") from e
    if params.tests_column is None:
        raise ValueError(f"verifier {verifier!r}: set tests_column or tests")
    return list(column_values(rows, params.tests_column, verifier))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA
