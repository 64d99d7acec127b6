"""The `math_answer` verifier: the stated answer must equal what the worked solution (or a reference) arrives at.

Generators often write a correct-looking solution and then state a different number; both are parsed (numbers,
fractions, percentages, LaTeX, "#### 42", \\boxed{}) and compared with sympy, see synthflow.stages.answers.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field, model_validator

from synthflow.stages.answers import Answer, equivalent, final_value, parse_answer
from synthflow.stages.verifiers.base import VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.stages.verifiers.rules import column_values


class MathAnswerParams(VerifierParams):
    answer_column: str = "answer"
    solution_column: str | None = "solution"  # its final value is the target when no reference is given
    reference_column: str | None = (
        None  # a reference answer (e.g. carried from the seed) wins over the solution
    )
    rel_tol: float = Field(default=1e-6, ge=0)

    @model_validator(mode="after")
    def _has_target(self) -> MathAnswerParams:
        if self.solution_column is None and self.reference_column is None:
            raise ValueError("set solution_column or reference_column: the answer needs something to match")
        return self


@register("math_answer", MathAnswerParams)
def math_answer_verifier(name: str, params: MathAnswerParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        answers = column_values(rows, params.answer_column, name)
        solutions = column_values(rows, params.solution_column, name) if params.solution_column else None
        refs = _optional_column(rows, params.reference_column)
        oks, reasons = [], []
        for pos, raw in enumerate(answers):
            target, label = _target(pos, refs, solutions)
            ok, reason = _check(params.answer_column, raw, target, label, params.rel_tol)
            oks.append(ok)
            reasons.append(reason)
        return verdicts(rows.index, oks, reasons, score=[1.0 if ok else 0.0 for ok in oks])

    verify.name = name
    return verify


def _optional_column(rows: pd.DataFrame, column: str | None) -> pd.Series | None:
    # A reference exists for rows derived from seed rows that have one; other rows fall back to the solution.
    if column is None or column not in rows.columns:
        return None
    return rows[column]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _target(pos: int, refs: pd.Series | None, solutions: pd.Series | None) -> tuple[Answer | None, str]:
    if refs is not None and not _missing(refs.iloc[pos]):
        return parse_answer(refs.iloc[pos]), "the reference answer"
    if solutions is not None and not _missing(solutions.iloc[pos]):
        return final_value(solutions.iloc[pos]), "the solution's final value"
    return None, "nothing"


def _check(
    column: str, raw: object, target: Answer | None, label: str, rel_tol: float
) -> tuple[bool, str | None]:
    if _missing(raw):
        return False, f"{column} is missing"
    answer = parse_answer(raw)
    if answer is None:
        return False, f"{column} {str(raw)[:60]!r} is not a number or expression"
    if label == "nothing":
        return False, "no solution or reference answer to check against"
    if target is None:
        what = "the reference answer" if label == "the reference answer" else "the solution"
        return False, f"cannot find a final value in {what}"
    if equivalent(answer, target, rel_tol):
        return True, None
    return False, f"{column} {answer} does not match {label} {target}"
