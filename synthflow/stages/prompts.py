"""Turning the spec's template and seed exemplars into generation requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from synthflow.generators.base import GenerationRequest, SamplingParams
from synthflow.spec import PipelineSpec, SamplingSpec
from synthflow.templates import render


def sampling_params(spec: PipelineSpec) -> SamplingParams:
    return to_sampling(spec.generate.sampling)


def to_sampling(s: SamplingSpec) -> SamplingParams:
    """A spec's `sampling:` section as the backends' SamplingParams."""
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        max_tokens=s.max_tokens,
        stop=tuple(s.stop),
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
    )


def request_seed(base_seed: int, round_index: int, candidate_index: int) -> int:
    """A per-candidate seed that depends only on the spec's seed, the round and the candidate's position."""
    h = hashlib.sha256(f"{base_seed}:{round_index}:{candidate_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def prompt_hash(messages: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(messages), ensure_ascii=False).encode()).hexdigest()[:16]


def exemplar_records(rows: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    """Seed rows as plain dicts of the declared columns, the way templates see them."""
    present = [c for c in columns if c in rows.columns]
    # Column by column: DataFrame.to_dict on a slice of Arrow-backed strings costs ~4x as much, per prompt, on
    # the round's thread (E1 in docs/generation.md).
    values = [rows[c].tolist() for c in present]
    if not present:
        return [{} for _ in range(len(rows))]
    return [{k: _plain(v) for k, v in zip(present, rec, strict=True)} for rec in zip(*values, strict=True)]


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def build_request(
    spec: PipelineSpec,
    exemplars: pd.DataFrame,
    *,
    round_index: int,
    candidate_index: int,
    target_cluster: int = -1,
) -> GenerationRequest:
    columns = [c.name for c in spec.seed.columns]
    context = {
        "exemplars": exemplar_records(exemplars, columns),
        "round": round_index,
        "cluster": target_cluster,
    }
    messages: list[tuple[str, str]] = []
    if spec.generate.system:
        messages.append(("system", render(spec.generate.system, **context)))
    messages.append(("user", render(spec.generate.prompt, **context)))
    msgs = tuple(messages)
    return GenerationRequest(
        messages=msgs,
        sampling=sampling_params(spec),
        seed=request_seed(spec.generate.sampling.seed, round_index, candidate_index),
        sample_index=0,
        json_schema=spec.generate.output_schema,
        meta={
            "candidate_index": candidate_index,
            "target_cluster": target_cluster,
            "exemplar_ids": [str(x) for x in exemplars["_id"]],
            "prompt_hash": prompt_hash(msgs),
        },
    )
