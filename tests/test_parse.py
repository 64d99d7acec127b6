"""Candidates and parsing inside a round: one failed request must cost only its own row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthflow.generators.transformers_backend import TransformersGenerator
from synthflow.spec import parse_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.parse import parse_outputs
from synthflow.stages.round import RoundInputs, run_round
from synthflow.stages.seed import with_ids_and_text
from synthflow.store import Store

SPEC = """
name: mixed_batch
seed:
  source: seed.jsonl
  text: question
  columns:
    - {name: question, type: string}
generate:
  prompt: "Rewrite: {% for ex in exemplars %}{{ ex.question }}{% endfor %}"
  few_shot: 1
  output_schema:
    type: object
    properties:
      question: {type: string, minLength: 1, maxLength: 12}
    required: [question]
    additionalProperties: false
  rows_per_round: 8
  candidate_budget: 8
  batch_size: 8
  sampling: {max_tokens: 24, seed: 3}
verify:
  - type: schema
"""


def test_one_prompt_over_max_model_len_rejects_only_itself(tmp_path, smoke_model_dir):
    spec = parse_spec(SPEC, str(tmp_path / "mixed.yaml"))
    # Half the seed rows make a prompt far longer than the engine takes; the other half fit with room to answer.
    questions = ["two plus two"] * 4 + [" ".join(["seventeen elephants"] * 120)] * 4
    seed = with_ids_and_text(pd.DataFrame({"question": questions}), spec.seed)
    gen = TransformersGenerator(str(smoke_model_dir), device="cpu", batch_size=8, max_model_len=200)
    try:
        out = run_round(
            RoundInputs(
                spec=spec,
                round_index=1,
                seed=seed,
                real=real_rows(seed, ["question"], 0),
                previous=None,
                generator=gen,
                cache=ResultCache(Store(str(tmp_path / "store")), "mixed"),
            )
        )
    finally:
        gen.close()
    cands = out.candidates
    failed = cands["error"].map(lambda e: isinstance(e, str) and e.startswith("prompt_too_long"))
    assert 0 < failed.sum() < len(cands), cands["error"].tolist()
    assert cands.loc[~failed, "error"].isna().all()
    reasons = out.verified.set_index("candidate_id")["reject_reason"]
    assert set(out.accepted["candidate_id"]) == set(cands.loc[~failed, "candidate_id"]), reasons.tolist()
    assert reasons[cands.loc[failed, "candidate_id"]].str.startswith("generation failed: prompt_too_long").all()


# Real outputs of the vLLM smoke-model server under E1's guided JSON (xgrammar, compact whitespace), captured
# 2026-12-01 from one batch of 100 requests: 24 of them held raw control characters inside the JSON string, which
# json.loads' default strict mode refused ("Invalid control character at"), rejecting 27% of E1's candidates.
GUIDED_CONTROL_CHARS = Path(__file__).parent / "data" / "vllm_smoke_guided_control_chars.jsonl"

E1_LIKE = """
name: guided_parse
seed:
  source: unused.jsonl
  text: problem
  columns: [{name: problem, type: string}]
generate:
  prompt: "Write one: {% for ex in exemplars %}{{ ex.problem }}{% endfor %}"
  output_schema:
    type: object
    properties: {problem: {type: string, minLength: 8, maxLength: 80}}
    required: [problem]
    additionalProperties: false
  rows_per_round: 4
verify:
  - type: schema
"""


def _parsed(raw_texts: list[str], finish: list[str] | None = None) -> pd.DataFrame:
    spec = parse_spec(E1_LIKE, "guided_parse.yaml")
    cands = pd.DataFrame(
        {
            "raw_text": raw_texts,
            "error": [None] * len(raw_texts),
            "finish_reason": finish or ["stop"] * len(raw_texts),
        }
    )
    return parse_outputs(cands, spec)


def test_guided_output_with_raw_control_characters_parses_to_those_characters():
    rows = [json.loads(line) for line in GUIDED_CONTROL_CHARS.read_text().splitlines()]
    assert len(rows) == 24
    raw = [r["raw_text"] for r in rows]
    # The shape under test: unescaped, inside the string.
    assert all(any(ord(ch) < 0x20 for ch in t) for t in raw)
    with pytest.raises(json.JSONDecodeError, match="Invalid control character"):
        json.loads(raw[0])
    out = _parsed(raw, [r["finish_reason"] for r in rows])
    assert out["parse_error"].isna().all(), out["parse_error"].tolist()
    # The value is the string between the quotes, control characters included, nothing dropped or escaped.
    assert out["problem"].tolist() == [t[len('{"problem":"') : -len('"}')] for t in raw]
    assert out["_text"].tolist() == out["problem"].tolist()


def test_output_that_is_really_not_json_is_still_rejected_with_its_reason():
    out = _parsed(
        [
            '{"problem":"two apples"} and more',  # trailing text after the object
            '{"problem":"two apples"}{"problem":"three"}',  # a second JSON value
            '{"problem":"two apples and \x01',  # cut off, with a control character before the cut
            "[1, 2]",
            '{"problem":"five \x07 pears"}',
        ],
        ["stop", "stop", "length", "stop", "stop"],
    )
    errors = out["parse_error"].tolist()
    assert errors[0] == "output is not valid JSON: Extra data at char 25"
    assert errors[1] == "output is not valid JSON: Extra data at char 24"
    assert errors[2].startswith("output is not valid JSON (generation stopped at max_tokens): Unterminated")
    assert errors[3] == "output is JSON list, not an object"
    assert pd.isna(errors[4]) and out["problem"][4] == "five \x07 pears"
