"""`dg scaffold defs synthflow.dagster.SynthflowPipelineComponent NAME`: a starter pipeline that loads and runs.

It writes, into the new defs folder: `defs.yaml`, a spec (`NAME.yaml`), a small seed (`data/seed.jsonl`) and a
resource profile (`resources/<profile>.yaml`, the smoke model unless `--json-params '{"profile": ...}'` names one
the project already has), so `dg check defs` passes and `dg launch` materializes it before anything is edited.
"""

from __future__ import annotations

import json
import re

import dagster as dg
from pydantic import BaseModel

STARTER_PROFILE = """\
# The smoke model (tiny random-weight Llama): it tests the plumbing, never quality. Point `generator` at a real
# backend (transformers, vllm, openai) when the pipeline does what you want.
description: Starter profile written by `dg scaffold`.
generators:
  generator:
    backend: smoke
embedders:
  embedder:
    model: all-MiniLM-L6-v2
"""

STARTER_SEED = [
    ("q1", "What is the capital of France?", "Paris"),
    ("q2", "How many legs does a spider have?", "Eight"),
    ("q3", "Which planet is known as the red planet?", "Mars"),
    ("q4", "What gas do plants take in from the air?", "Carbon dioxide"),
    ("q5", "What is the largest ocean on Earth?", "The Pacific Ocean"),
    ("q6", "How many days are in a leap year?", "366"),
    ("q7", "What is frozen water called?", "Ice"),
    ("q8", "Which animal is known as the king of the jungle?", "The lion"),
]

STARTER_SPEC = """\
# Starter pipeline written by `dg scaffold`: short trivia questions with answers. Edit the seed, the prompt and
# the verifiers; `synthflow validate {name}.yaml` checks the file.
name: {name}
description: Short trivia questions with one-line answers.

seed:
  source: data/seed.jsonl          # relative to this file; any fsspec URL or hf://datasets/ID works too
  id_column: id
  text: question
  columns:
    - {{name: id, type: string}}
    - {{name: question, type: string, min_length: 10}}
    - {{name: answer, type: string, min_length: 1}}

rounds:
  cron: "0 0 * * *"
  start: "2026-01-01"

generate:
  generator: generator
  prompt: |
    Here are trivia questions with short answers:
    {{% for ex in exemplars %}}
    Q: {{{{ ex.question }}}}
    A: {{{{ ex.answer }}}}
    {{% endfor %}}
    Write one new question on another topic. Reply with JSON only: {{"question": ..., "answer": ...}}.
  few_shot: 3
  output_schema:
    type: object
    properties:
      question: {{type: string, minLength: 10, maxLength: 200}}
      answer: {{type: string, minLength: 1, maxLength: 100}}
    required: [question, answer]
    additionalProperties: false
  rows_per_round: 4
  candidate_budget: 8
  batch_size: 4

verify:
  - type: schema
  - type: exact_dedup

diversity:
  embedder: embedder
"""


class ScaffoldParams(BaseModel):
    profile: str = "smoke"


class SynthflowPipelineScaffolder(dg.Scaffolder[ScaffoldParams]):
    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        folder = request.target_path
        name = re.sub(r"[^A-Za-z0-9_]", "_", folder.name)
        profile = request.params.profile if request.params else "smoke"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.yaml").write_text(STARTER_SPEC.format(name=name))
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "seed.jsonl").write_text(
            "".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in STARTER_SEED)
        )
        project_resources = request.project_root / "resources" if request.project_root else None
        attributes = {"spec": f"{name}.yaml", "profile": profile}
        if project_resources is None or not (project_resources / f"{profile}.yaml").exists():
            # No such profile in the project: the starter brings its own, beside the spec.
            (folder / "resources").mkdir(exist_ok=True)
            (folder / "resources" / f"{profile}.yaml").write_text(STARTER_PROFILE)
            attributes["project_root"] = "."
        dg.scaffold_component(request, attributes)
