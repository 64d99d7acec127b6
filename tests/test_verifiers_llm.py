"""llm_judge and self_consistency: verdict logic on scripted replies, plumbing on the smoke model (transformers
in-process, and a real vLLM OpenAI-compatible server when vLLM is installed).

The scripted generator is a complete implementation of the generator protocol whose replies are a function of the
request; it is how the crafted accept/reject cases get the replies they need. The smoke model writes random
(schema-valid) JSON, so its tests check plumbing and the recorded rationale, never the verdicts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator

import pandas as pd
import pytest

import synthflow.stages.verifiers.llm_judge  # noqa: F401  (registers llm_judge)
import synthflow.stages.verifiers.self_consistency  # noqa: F401  (registers self_consistency)
from synthflow.generators.base import GenerationRequest, GenerationResult
from synthflow.spec import VerifierSpec
from synthflow.stages.verifiers.llm_judge import JUDGE_SCHEMA, UNPARSEABLE
from synthflow.stages.verifiers.registry import build
from tests.verifier_kit import candidate_rows, context, run_verifier

ROWS = [
    {
        "question": "Sarah has 12 apples and gives 5 away. How many are left?",
        "solution": "12 - 5 = 7.",
        "answer": 7.0,
    },
    {
        "question": "Tom has 3 bags of 4 marbles. How many marbles does he have?",
        "solution": "3 * 4 = 12.",
        "answer": 12.0,
    },
    {"question": "A pen costs 2 dollars. What do 10 pens cost?", "solution": "10 * 2 = 20.", "answer": 25.0},
]


class ScriptedGenerator:
    """Answers each request with reply(request); records every request it saw."""

    def __init__(self, reply: Callable[[GenerationRequest], str | Exception], *, strip_meta: bool = False):
        self.reply = reply
        self.strip_meta = strip_meta  # behave like a wrapper that rebuilds requests (meta lost)
        self.seen: list[GenerationRequest] = []

    @property
    def model_id(self) -> str:
        return "scripted"

    @property
    def label(self) -> str:
        return "scripted replies"

    def generate(
        self, requests: Iterable[GenerationRequest], progress=None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        for req in reversed(reqs):  # out of order on purpose: the protocol allows any order
            if self.strip_meta:
                req = dataclasses.replace(req, meta={})
            self.seen.append(req)
            out = self.reply(req)
            if isinstance(out, Exception):
                yield req, GenerationResult(req.key("scripted"), "", "scripted", error=f"server_error: {out}")
            else:
                yield req, GenerationResult(req.key("scripted"), out, "scripted", finish_reason="stop")

    def close(self) -> None:
        pass


def _run(vtype: str, params: dict, generators: dict, records: list[dict] = ROWS) -> pd.DataFrame:
    return run_verifier(vtype, params, candidate_rows(records), context(generators=generators))


def _user_text(req: GenerationRequest) -> str:
    return dict(req.messages)["user"]


# ---- llm_judge, scripted ------------------------------------------------------------------------------------


def test_judge_scores_against_the_threshold_and_keeps_the_rationale():
    def reply(req):
        user = _user_text(req)
        if "apples" in user:
            return json.dumps({"rationale": "Clear and correct.", "score": 9})
        if "marbles" in user:
            return 'Sure! ```json\n{"rationale": "Correct but trivial.", "score": "6.5"}\n```'
        return json.dumps({"rationale": "The stated answer 25 is wrong; 10 pens cost 20.", "score": 2})

    judge = ScriptedGenerator(reply)
    out = _run("llm_judge", {"threshold": 7}, {"judge": judge})
    assert out["ok"].tolist() == [True, False, False]
    assert out["score"].tolist() == [9.0, 6.5, 2.0]
    assert out["rationale"].tolist() == [
        "Clear and correct.",
        "Correct but trivial.",
        "The stated answer 25 is wrong; 10 pens cost 20.",
    ]
    assert out.iloc[2]["reason"] == "judge score 2 < 7: The stated answer 25 is wrong; 10 pens cost 20."
    # The rubric saw the row; the request asks for the judge schema; seeds are stable per candidate.
    req = next(r for r in judge.seen if "apples" in _user_text(r))
    assert "answer: 7.0" in _user_text(req) and req.json_schema == JUDGE_SCHEMA
    assert dict(req.messages)["system"].startswith("You are a strict")
    assert len({r.seed for r in judge.seen}) == 3


def test_unparseable_out_of_range_and_failed_judgements_are_rejects():
    def reply(req):
        user = _user_text(req)
        if "apples" in user:
            return "I think it is pretty good."
        if "marbles" in user:
            return json.dumps({"rationale": "great", "score": 42})
        return RuntimeError("HTTP 500")

    out = _run("llm_judge", {}, {"judge": ScriptedGenerator(reply)})
    assert not out["ok"].any()
    assert out.iloc[0]["reason"] == UNPARSEABLE == "judge output unparseable"
    assert out.iloc[0]["rationale"] == "I think it is pretty good."  # what the judge said stays for the audit
    assert out.iloc[1]["reason"] == "judge score 42 is outside 1-10"
    assert out.iloc[2]["reason"] == "judge request failed: server_error: HTTP 500"


def test_custom_rubric_sees_row_fields_and_a_different_judge_name():
    judge = ScriptedGenerator(lambda req: json.dumps({"rationale": "ok", "score": 8}))
    rubric = "Q: {{ question }}\nA: {{ answer }}\nRow keys: {{ row.keys() | list | sort | join(',') }}"
    out = _run("llm_judge", {"judge": "big", "rubric": rubric, "system": None}, {"big": judge}, ROWS[:1])
    assert out["ok"].all()
    msgs = judge.seen[0].messages
    assert len(msgs) == 1 and msgs[0][1].startswith("Q: Sarah has 12 apples")
    assert "answer,candidate_id,question,solution" in msgs[0][1]


def test_judge_needs_its_generator():
    with pytest.raises(ValueError, match="needs a generator named 'judge' in the resource profile"):
        _run("llm_judge", {}, {"generator": ScriptedGenerator(lambda r: "{}")})


def test_rubric_template_errors_surface_at_spec_time():
    with pytest.raises(ValueError, match="template syntax error"):
        build(VerifierSpec(type="llm_judge", rubric="{% for x in %}"))


# ---- self_consistency, scripted -----------------------------------------------------------------------------


def _solver(answers_by_topic: dict[str, list[str]]):
    def reply(req):
        for topic, answers in answers_by_topic.items():
            if topic in _user_text(req):
                return json.dumps({"reasoning": "...", "answer": answers[req.sample_index % len(answers)]})
        return "no idea"

    return ScriptedGenerator(reply)


def test_self_consistency_accepts_when_enough_samples_agree():
    gen = _solver(
        {
            "apples": ["7", "7.0", "$7", "8", "7 apples"],
            "marbles": ["12", "13", "14", "12", "15"],
            "pens": ["20"],
        }
    )
    out = _run("self_consistency", {"k": 5, "threshold": 0.6}, {"generator": gen})
    assert out["ok"].tolist() == [True, False, False]
    assert out["score"].tolist() == [0.8, 0.4, 0.0]
    assert out.iloc[1]["reason"] == (
        "2/5 samples agree with answer 12 (need 60%); most common sample answer: 12 (2/5)"
    )
    assert (
        out.iloc[2]["reason"]
        == "0/5 samples agree with answer 25 (need 60%); most common sample answer: 20 (5/5)"
    )
    assert json.loads(out.iloc[0]["samples"]) == ["7", "7.0", "$7", "8", "7 apples"]
    assert out.iloc[2]["majority"] == "20"
    # k samples per row: sample_index 0..k-1, distinct seeds, the problem in the prompt, the answer schema.
    apples = sorted((r for r in gen.seen if "apples" in _user_text(r)), key=lambda r: r.sample_index)
    assert [r.sample_index for r in apples] == [0, 1, 2, 3, 4]
    assert len({r.seed for r in apples}) == 5
    assert apples[0].json_schema["required"] == ["reasoning", "answer"]


def test_results_map_back_to_rows_even_when_a_wrapper_drops_request_meta():
    gen = _solver({"apples": ["7"], "marbles": ["12"], "pens": ["20"]})
    gen.strip_meta = True
    out = _run("self_consistency", {"k": 3}, {"generator": gen})
    assert out["ok"].tolist() == [True, True, False]


def test_self_consistency_counts_unreadable_and_failed_samples_as_disagreeing():
    def reply(req):
        return [json.dumps({"answer": "7"}), "garbage", RuntimeError("boom"), json.dumps({"answer": ""})][
            req.sample_index
        ]

    out = _run(
        "self_consistency",
        {"k": 4, "threshold": 0.25, "reasoning": False},
        {"generator": ScriptedGenerator(reply)},
        ROWS[:1],
    )
    assert out["ok"].tolist() == [True]
    assert out.iloc[0]["score"] == 0.25
    assert json.loads(out.iloc[0]["samples"]) == ["7", None, None, None]


def test_self_consistency_prompt_can_use_any_column():
    gen = _solver({"apples": ["7"]})
    params = {
        "k": 1,
        "prompt": "{{ question }} (solve; the solution given was {{ solution }})",
        "generator": "solver",
    }
    out = _run("self_consistency", params, {"solver": gen}, ROWS[:1])
    assert out["ok"].all()
    assert "solution given was 12 - 5 = 7." in _user_text(gen.seen[0])


# ---- the smoke model: plumbing through real generators ------------------------------------------------------
# `smoke_generator` (a TransformersGenerator on the smoke model) comes from tests/fixtures/smoke.py.


def _check_judge_plumbing(out: pd.DataFrame) -> None:
    for _, v in out.iterrows():
        assert isinstance(v["rationale"], str)  # recorded for every row, whatever the verdict
        if v["ok"]:
            assert 7 <= v["score"] <= 10 and v["reason"] is None
        else:
            assert v["reason"] == UNPARSEABLE or v["reason"].startswith("judge score")


def _check_consistency_plumbing(out: pd.DataFrame, k: int) -> None:
    for _, v in out.iterrows():
        samples = json.loads(v["samples"])
        assert len(samples) == k
        assert v["score"] in {i / k for i in range(k + 1)}
        assert v["ok"] == (v["score"] >= 0.5)


def test_judge_and_self_consistency_on_the_smoke_model(smoke_generator):
    gens = {"judge": smoke_generator, "generator": smoke_generator}
    judged = _run("llm_judge", {"max_tokens": 64}, gens)
    _check_judge_plumbing(judged)
    consistent = _run("self_consistency", {"k": 2, "max_tokens": 48}, gens)
    _check_consistency_plumbing(consistent, 2)


@pytest.mark.vllm
@pytest.mark.slow
def test_judge_and_self_consistency_through_a_vllm_server(request: pytest.FixtureRequest):
    try:
        server = request.getfixturevalue("openai_env")
    except pytest.FixtureLookupError:
        pytest.skip("the vLLM server fixture (tests/fixtures/vllm_server.py) is not available")
    from synthflow.generators.openai_backend import OpenAIGenerator

    gen = OpenAIGenerator(server.served_model_name, max_concurrency=4, timeout_s=120)
    try:
        gens = {"judge": gen, "generator": gen}
        judged = _run("llm_judge", {"max_tokens": 64}, gens)
        _check_judge_plumbing(judged)
        consistent = _run("self_consistency", {"k": 2, "max_tokens": 48}, gens)
        _check_consistency_plumbing(consistent, 2)
    finally:
        gen.close()
