"""Answer parsing (synthflow.stages.answers) and the math_answer verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sympy

import synthflow.stages.verifiers.math_answer  # noqa: F401  (registers math_answer)
from synthflow.spec import VerifierSpec
from synthflow.stages.answers import answers_agree, equivalent, final_value, parse_answer
from synthflow.stages.verifiers.registry import build
from tests.verifier_kit import candidate_rows, context, run_verifier

REPO = Path(__file__).resolve().parent.parent


def _verify(params: dict, records: list[dict]) -> pd.DataFrame:
    return run_verifier("math_answer", params, candidate_rows(records), context())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("#### 42", 42),
        ("The answer is 42.", 42),
        ("\\boxed{\\frac{3}{4}}", sympy.Rational(3, 4)),
        ("3/4", sympy.Rational(3, 4)),
        ("$1,234.50", sympy.Rational("1234.5")),
        ("x = 2\\sqrt{3}", 2 * sympy.sqrt(3)),
        ("12 apples", 12),
        ("\\dfrac{\\sqrt{2}}{2}", sympy.sqrt(2) / 2),
        ("3 \\times 4", 12),
        ("12\\text{ cm}", 12),
        ("-7", -7),
        ("5-3", 2),
        ("\\sqrt[3]{27}", 3),
        ("$\\pi/2$", sympy.pi / 2),
        (60, 60),
        (2.5, sympy.Rational(5, 2)),
    ],
)
def test_parse_answer_reads_common_forms(text, expected):
    a = parse_answer(text)
    assert a is not None, text
    assert sympy.simplify(a.value - expected) == 0


@pytest.mark.parametrize(
    "text", ["", "yes", None, "9^9^9^9", "__import__('os').system('true')", "1/0", float("nan")]
)
def test_parse_answer_refuses_what_is_not_a_safe_value(text):
    assert parse_answer(text) is None


def test_percentages_match_both_readings():
    a = parse_answer("25%")
    assert a is not None and a.percent
    assert equivalent(a, parse_answer("25")) and equivalent(a, parse_answer("0.25"))
    assert not equivalent(a, parse_answer("2.5"))


def test_equivalence_is_numeric_and_symbolic():
    assert equivalent(parse_answer("0.75"), parse_answer("3/4"))
    assert equivalent(parse_answer("(x+1)^2"), parse_answer("x^2 + 2x + 1"))
    assert not equivalent(parse_answer("12"), parse_answer("14"))
    assert answers_agree("1,000", 1000) and answers_agree("B", "b.") and not answers_agree("B", "C")


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("She had 5 apples and got 9 more, so 5 + 9 = 14 apples.", 14),
        ("First 3*4 = 12. Then 12/2 = 6. She has 6 left.\n#### 6", 6),
        ("Thus x = \\frac{3}{4}.", sympy.Rational(3, 4)),
        ("So the answer is \\boxed{2\\sqrt{3}}", 2 * sympy.sqrt(3)),
        ("Half of 30 is 15, and she keeps 15 marbles", 15),
    ],
)
def test_final_value_of_a_worked_solution(solution, expected):
    v = final_value(solution)
    assert v is not None and sympy.simplify(v.value - expected) == 0


def test_math_answer_accepts_every_seed_row():
    path = REPO / "assets" / "data" / "math_word_problems.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = _verify({}, records)
    assert out["ok"].all(), out.loc[~out["ok"], "reason"].tolist()
    assert (out["score"] == 1.0).all()


def test_math_answer_rejects_an_answer_that_contradicts_the_solution():
    out = _verify(
        {},
        [
            {"question": "q", "solution": "5 + 9 = 14 apples in all.", "answer": 14.0},
            {"question": "q", "solution": "5 + 9 = 14 apples in all.", "answer": 12.0},
            {"question": "q", "solution": "Half of it: 3/4.", "answer": 0.75},
        ],
    )
    assert out["ok"].tolist() == [True, False, True]
    assert out.iloc[1]["reason"] == "answer 12 does not match the solution's final value 14"
    assert out.iloc[1]["score"] == 0.0


def test_math_answer_explains_unreadable_answers_and_solutions():
    out = _verify(
        {},
        [
            {"question": "q", "solution": "5 + 9 = 14.", "answer": "fourteen-ish"},
            {"question": "q", "solution": "no numbers here at all", "answer": 3},
            {"question": "q", "solution": "5 + 9 = 14.", "answer": None},
        ],
    )
    assert not out["ok"].any()
    assert out.iloc[0]["reason"] == "answer 'fourteen-ish' is not a number or expression"
    assert out.iloc[1]["reason"] == "cannot find a final value in the solution"
    assert out.iloc[2]["reason"] == "answer is missing"


def test_math_answer_prefers_a_reference_answer_when_the_row_has_one():
    out = _verify(
        {"reference_column": "reference"},
        [
            {"question": "q", "solution": "so 5 + 9 = 14.", "answer": 15, "reference": "15"},
            {"question": "q", "solution": "so 5 + 9 = 14.", "answer": 14, "reference": "#### 15"},
            {"question": "q", "solution": "so 5 + 9 = 14.", "answer": 14, "reference": None},
        ],
    )
    assert out["ok"].tolist() == [True, False, True]
    assert out.iloc[1]["reason"] == "answer 14 does not match the reference answer 15"


def test_math_answer_needs_something_to_check_against():
    with pytest.raises(ValueError, match="solution_column or reference_column"):
        build(VerifierSpec(type="math_answer", solution_column=None))
