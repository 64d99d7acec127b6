"""Conversation columns: a user simulator and an assistant take turns; the column holds the dialogue as
`[{role, content}]` (TRL's `messages` layout), and verifiers and judges see all of it.

Each turn is one batch of requests over every live row (the simulator's, then the assistant's), all through the
request cache, so a killed round resumes turn by turn. A row's number of turns is drawn from `turns` (fixed or
[min, max]) seeded by (spec seed, round, row); the dialogue also ends early when the simulator's message contains
one of `stop_phrases` (that message is dropped).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from synthflow.stages.columns.base import ColumnContext, Row, draw_seed, register
from synthflow.stages.columns.llm import (
    WithSampling,
    answer_text,
    ask,
    column_seed,
    request,
    sampling_for_dict,
)
from synthflow.templates import TemplateError, TemplateStr, render


class ConversationParams(WithSampling):
    user: TemplateStr  # who the simulated user is and what they want; rendered with the row's columns
    assistant_system: TemplateStr | None = None  # the assistant's system prompt
    user_generator: str | None = None  # generate.generator when left out
    assistant_generator: str | None = None
    turns: int | list[int] = 2  # user+assistant exchanges: fixed, or [min, max]
    stop_phrases: list[str] = Field(default_factory=lambda: ["[DONE]"])

    @field_validator("turns")
    @classmethod
    def _turns(cls, v: int | list[int]) -> int | list[int]:
        lo, hi = (v, v) if isinstance(v, int) else (tuple(v) + (None,))[:2]
        if not isinstance(v, int) and len(v) != 2:
            raise ValueError("turns is a number or [min, max]")
        if lo is None or hi is None or lo < 1 or hi < lo:
            raise ValueError("turns must be >= 1 (and min <= max)")
        return v

    def templates(self) -> dict[str, str]:
        return {k: v for k, v in (("user", self.user), ("assistant_system", self.assistant_system)) if v}

    def produces(self) -> dict[str, dict[str, Any]]:
        message = {
            "type": "object",
            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
            "required": ["role", "content"],
        }
        return {self.name: {"type": "array", "items": message, "minItems": 2}}

    def generators(self) -> list[str]:
        return [g for g in (self.user_generator, self.assistant_generator) if g]


def _transcript(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) or "(nothing yet)"


@register("conversation", ConversationParams)
def fill_conversation(params: ConversationParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    sampling = sampling_for_dict(params.sampling, ctx)
    lo, hi = (params.turns, params.turns) if isinstance(params.turns, int) else params.turns
    plans: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        try:
            ctx_row = row.context()
            plans[i] = {
                "turns": int(rng.integers(lo, hi + 1)),
                "user": render(params.user, **ctx_row),
                "system": render(params.assistant_system, **ctx_row) if params.assistant_system else None,
                "messages": [],
                "open": True,
            }
        except TemplateError as e:
            row.error = f"column {params.name}: {e}"
    turn = 0
    while any(p["open"] for p in plans.values()):
        for speaker in ("user", "assistant"):
            live = [i for i, p in plans.items() if p["open"]]
            reqs = []
            for i in live:
                p = plans[i]
                if speaker == "user":
                    msgs: tuple[tuple[str, str], ...] = (
                        (
                            "system",
                            "You play the user in a conversation with an assistant. Write only the "
                            f"user's next message. When the user's goal is met, reply {params.stop_phrases[0]!r}."
                            if params.stop_phrases
                            else "You play the user. Write only the user's next message.",
                        ),
                        ("user", f"{p['user']}\n\nConversation so far:\n{_transcript(p['messages'])}"),
                    )
                else:
                    chat = [(m["role"], m["content"]) for m in p["messages"]]
                    msgs = tuple(([("system", p["system"])] if p["system"] else []) + chat)
                seed = column_seed(ctx.seed, ctx.round_index, rows[i], f"{params.name}:{turn}:{speaker}")
                reqs.append(request(msgs, sampling, seed, column=params.name))
            gen = params.user_generator if speaker == "user" else params.assistant_generator
            for i, req, res in zip(live, reqs, ask(ctx, gen, reqs), strict=True):
                p, row = plans[i], rows[i]
                row.tokens[0] += res.prompt_tokens
                row.tokens[1] += res.completion_tokens
                row.provenance[f"{params.name}.{speaker}"] = {
                    "model": res.model,
                    "prompt_hash": req.meta["prompt_hash"],
                }
                if res.error:
                    row.error = (
                        f"column {params.name}: turn {turn + 1} ({speaker}): generation failed: {res.error}"
                    )
                    p["open"] = False
                    continue
                text = answer_text(res.text)
                if speaker == "user" and any(s in text for s in params.stop_phrases) and p["messages"]:
                    p["open"] = False  # the simulator is done: end on the assistant's last answer
                    continue
                p["messages"].append({"role": speaker, "content": text})
            if speaker == "user":
                continue
            for i in live:
                p = plans[i]
                if p["open"] and len(p["messages"]) >= 2 * p["turns"]:
                    p["open"] = False
        turn += 1
    for i, p in plans.items():
        if rows[i].error is None:
            rows[i].values[params.name] = p["messages"]
            rows[i].raw[params.name] = _transcript(p["messages"])
    return rows
