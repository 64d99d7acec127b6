"""Candidates and parsing inside a round: one failed request must cost only its own row."""

from __future__ import annotations

import pandas as pd

from synthflow.generators.transformers_backend import TransformersGenerator
from synthflow.spec import parse_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
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
