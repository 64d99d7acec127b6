"""The rules verifier: lengths, required/forbidden regexes, language, stop phrases."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

import synthflow.stages.verifiers.rules  # noqa: F401  (registers rules)
from synthflow.spec import VerifierSpec, parse_spec
from synthflow.stages.verifiers.registry import build
from synthflow.stages.verifiers.rules import detect_language
from tests.verifier_kit import MATH_SPEC, candidate_rows, context, run_verifier

GOOD = {
    "question": "Sarah has 12 apples and gives 5 of them to her friend. How many apples does she have left?",
    "solution": "She starts with 12 apples and gives away 5, so 12 - 5 = 7. The answer is 7.",
    "answer": 7,
}


def _verify(params: dict, records: list[dict]) -> pd.DataFrame:
    return run_verifier("rules", params, candidate_rows(records), context())


def test_a_clean_row_passes_every_default_check():
    out = _verify({"language": "en"}, [GOOD])
    assert out["ok"].tolist() == [True]
    assert out.iloc[0]["reason"] is None


def test_length_bounds_per_column_in_chars_and_words():
    params = {"lengths": {"question": {"min_chars": 40, "max_words": 30}, "solution": {"max_chars": 50}}}
    out = _verify(params, [GOOD, {**GOOD, "question": "Too short?"}])
    assert out["ok"].tolist() == [False, False]
    assert out.iloc[0]["reason"] == "solution has 75 characters, more than 50"
    assert out.iloc[1]["reason"] == (
        "question has 10 characters, fewer than 40; solution has 75 characters, more than 50"
    )


def test_required_and_forbidden_patterns():
    params = {
        "require": {"solution": [r"answer is -?\d+"]},
        "forbid": {"question": [r"(?i)\bTODO\b", r"https?://"]},
    }
    rows = [
        GOOD,
        {**GOOD, "solution": "It is seven."},
        {**GOOD, "question": GOOD["question"] + " todo: see http://example.com"},
        {**GOOD, "solution": None},
    ]
    out = _verify(params, rows)
    assert out["ok"].tolist() == [True, False, False, False]
    assert out.iloc[1]["reason"] == "solution does not match required pattern 'answer is -?\\\\d+'"
    assert out.iloc[2]["reason"] == (
        "question matches forbidden pattern '(?i)\\\\bTODO\\\\b' at 'todo'; "
        "question matches forbidden pattern 'https?://' at 'http://'"
    )
    assert out.iloc[3]["reason"] == "solution is missing"


def test_bad_regex_is_a_spec_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        build(VerifierSpec(type="rules", forbid={"question": ["(unclosed"]}))


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Sarah has 12 apples and gives 5 of them to her friend. How many apples does she have left?", "en"),
        ("Anna hat 12 Äpfel und gibt 5 davon ihrer Freundin. Wie viele Äpfel hat sie noch?", "de"),
        ("Marie a 12 pommes et en donne 5 à son amie. Combien de pommes lui reste-t-il ?", "fr"),
        ("María tiene 12 manzanas y le da 5 a su amiga. ¿Cuántas manzanas le quedan?", "es"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text)[0] == lang


def test_language_check_rejects_other_languages_and_scripts():
    rows = [
        GOOD,
        {
            **GOOD,
            "question": "Anna hat 12 Äpfel und gibt 5 davon ihrer Freundin. Wie viele Äpfel hat sie noch?",
        },
        {**GOOD, "question": "У Маши 12 яблок, она отдала 5 подруге. Сколько яблок у неё осталось?"},
        {**GOOD, "question": "2 + 2?"},  # too short to judge: passes
    ]
    out = _verify({"language": ["en"]}, rows)
    assert out["ok"].tolist() == [True, False, False, True]
    assert out.iloc[1]["reason"].startswith("_text looks like de (")
    assert out.iloc[2]["reason"] == "_text is not in en: only 0% of its letters are Latin script"
    latin = _verify({"language": "latin"}, rows)
    assert latin["ok"].tolist() == [True, True, False, True]
    assert latin.iloc[2]["reason"] == "_text is not written in the Latin script (0% Latin letters)"


def test_default_stop_phrases_catch_refusals_in_any_output_field():
    rows = [
        GOOD,
        {**GOOD, "solution": "As an AI language model, I can’t solve this."},
        {**GOOD, "question": "I'm sorry,  but I cannot   help with that request today, friend."},
    ]
    out = _verify({}, rows)
    assert out["ok"].tolist() == [True, False, False]
    assert out.iloc[1]["reason"] == "solution contains stop phrase 'as an ai'"
    assert out.iloc[2]["reason"] == "question contains stop phrase 'i cannot'"


def test_stop_phrases_can_be_replaced_extended_or_turned_off():
    row = {**GOOD, "solution": "As an AI, here it is: 12 - 5 = 7. Certainly!"}
    assert not _verify({}, [row])["ok"].iloc[0]
    assert _verify({"stop_phrases": []}, [row])["ok"].iloc[0]
    custom = _verify({"stop_phrases": ["certainly!"]}, [row])
    assert custom.iloc[0]["reason"] == "solution contains stop phrase 'certainly!'"
    extra = _verify({"extra_stop_phrases": ["Certainly"], "stop_phrase_columns": ["question"]}, [row])
    assert extra["ok"].iloc[0]  # only the question is checked


def test_unknown_column_is_a_clear_error():
    with pytest.raises(ValueError, match="column 'nope' is not in the generated rows"):
        _verify({"lengths": {"nope": {"min_chars": 1}}}, [GOOD])


def test_unknown_language_is_a_spec_error():
    with pytest.raises(ValueError, match="language 'klingon' is not supported"):
        build(VerifierSpec(type="rules", language="klingon"))


def test_the_documented_verify_list_is_a_valid_spec():
    for module in ("llm_judge", "self_consistency", "math_answer", "code_tests", "python_fn"):
        __import__(f"synthflow.stages.verifiers.{module}")
    doc = (Path(__file__).resolve().parent.parent / "docs" / "verification.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    spec = parse_spec(MATH_SPEC + "\n" + block)
    assert [v.label for v in spec.verify] == [
        "schema", "rules", "exact_dedup", "math_answer", "self_consistency", "llm_judge", "house_rules",
    ]  # fmt: skip
    assert yaml.safe_load(block)["verify"][1]["language"] == "en"
