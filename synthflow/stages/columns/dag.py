"""Filling `generate.columns` for a batch of candidate rows, column by column in dependency order.

The result is the same parsed candidate table the single-step path makes (stages/parse.py): the verify chain, the
training set and the stores read it unchanged. Each row also carries `parent_id` (the row it was sampled from when
an llm column has n > 1) and `column_provenance` (per llm column: model, prompt hash, cache key, sample index).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from synthflow.column_graph import order, template_refs
from synthflow.generators.base import Generator
from synthflow.spec import PipelineSpec
from synthflow.stages.cache import ResultCache
from synthflow.stages.columns.base import ColumnContext, ColumnParams, ColumnStats, Row, checked, column_type
from synthflow.stages.generate import GenerationStats
from synthflow.stages.prompts import exemplar_records
from synthflow.text import text_hash


def column_params(spec: PipelineSpec) -> list[ColumnParams]:
    """The spec's columns as their types' parameter models, in the order they are filled."""
    params = {c.name: checked(c.entry) for c in spec.generate.columns or ()}
    deps = {name: _deps(p, params) for name, p in params.items()}
    return [params[n] for n in order(deps)]


def _deps(p: ColumnParams, known: dict[str, ColumnParams]) -> list[str]:
    names = [n for t in p.templates().values() for n in template_refs(t)] + p.reads()
    return list(dict.fromkeys(n for n in names if n in known and n != p.name))


def fanout(params: Sequence[ColumnParams]) -> int:
    """Candidate rows per prompt row: the product of the llm columns' n."""
    return math.prod(int(getattr(p, "n", 1)) for p in params)


def first_llm(params: Sequence[ColumnParams]) -> str | None:
    return next((p.name for p in params if p.type == "llm"), None)


def run_column_batch(
    spec: PipelineSpec,
    plan: Sequence[tuple[int, pd.DataFrame]],
    *,
    round_index: int,
    first_index: int,
    cache: ResultCache,
    generator_for: Callable[[str], Generator],
    stats: dict[str, ColumnStats],
    log: Callable[[str], None] = lambda msg: None,
    memo: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, GenerationStats]:
    """One prompt row per `plan` entry (its target cluster and exemplars), filled column by column.

    A row a column fails on (a failed request, unparsable JSON, a template error) keeps its error and skips the
    later columns: it reaches the verify chain as a parse error, so it is rejected with the reason.
    """
    params = column_params(spec)
    seed_columns = [c.name for c in spec.seed.columns]
    rows = [
        Row(
            round_index=round_index,
            index=first_index + i,
            target_cluster=t,
            exemplars=exemplar_records(ex, seed_columns),
            exemplar_ids=[str(x) for x in ex["_id"]] if "_id" in ex else [],
        )
        for i, (t, ex) in enumerate(plan)
    ]
    generation = GenerationStats()
    memo = {} if memo is None else memo
    for p in params:
        st = stats.setdefault(p.name, ColumnStats(type=p.type))
        ctx = ColumnContext(
            round_index=round_index,
            seed=spec.generate.sampling.seed,
            base_dir=spec.base_dir,
            cache=cache,
            generator_for=generator_for,
            default_generator=spec.generate.generator,
            default_sampling=spec.generate.sampling,
            stats=st,
            generation=generation,
            log=log,
            memo=memo,
        )
        live = [r for r in rows if r.error is None]
        done = [r for r in rows if r.error is not None]
        filled = column_type(p.type).fill(p, live, ctx)
        st.rows += len(filled)
        st.failures += sum(1 for r in filled if r.error is not None)
        rows = sorted(done + filled, key=lambda r: (r.index, r.path))
    return rows_frame(spec, params, rows), generation


def rows_frame(spec: PipelineSpec, params: Sequence[ColumnParams], rows: Sequence[Row]) -> pd.DataFrame:
    produced = {k: s for p in params for k, s in p.produces().items()}
    # The n samples of a row share everything up to their fan-out; their own columns join the text that dedup
    # compares, or every sample after the first would be an exact duplicate of its sibling.
    fanned = [p.name for p in params if int(getattr(p, "n", 1)) > 1]
    records = []
    for r in rows:
        models = list(dict.fromkeys(v["model"] for v in r.provenance.values()))
        hashes = [f"{k}:{v['prompt_hash']}" for k, v in r.provenance.items()]
        visible = {k: v for k, v in r.values.items() if k not in r.hidden}
        rec: dict[str, Any] = {
            "candidate_id": r.id,
            "round": r.round_index,
            "candidate_index": r.index,
            "target_cluster": r.target_cluster,
            "exemplar_ids": json.dumps(r.exemplar_ids),
            "prompt_hash": hashlib.sha256("|".join(hashes).encode()).hexdigest()[:16],
            "messages": json.dumps(r.messages, ensure_ascii=False),
            "sampling": "{}",
            "seed": 0,
            "sample_index": r.path[-1] if r.path else 0,
            "parent_id": r.parent,
            "model": models[0] if len(models) == 1 else ", ".join(models) or "sampler",
            "raw_text": json.dumps(r.raw, ensure_ascii=False),
            "finish_reason": r.finish_reason,
            "error": r.error if r.error and "generation failed" in r.error else None,
            "prompt_tokens": r.tokens[0],
            "completion_tokens": r.tokens[1],
            "column_provenance": json.dumps(r.provenance, sort_keys=True),
            **{k: r.values.get(k) for k in produced},
            "_output": None if r.error else {**visible, **{k: v for k, v in r.originals.items()}},
            "parse_error": r.error,
        }
        rec["_text"] = "" if r.error else _text([*spec.seed.text_columns, *fanned], r.values)
        rec["_text_hash"] = text_hash(rec["_text"])
        records.append(rec)
    frame = pd.DataFrame(records)
    for c in ("error", "parse_error", "parent_id"):
        if c in frame:
            frame[c] = pd.Series(list(frame[c]), dtype=object).where(frame[c].notna(), None)
    return frame


def _text(text_columns: Sequence[str], values: dict[str, Any]) -> str:
    """The text embedded and deduplicated: each seed text column, or the fields of a structured column of that
    name (`question` -> `question.text`)."""
    parts = []
    for c in text_columns:
        if c in values and isinstance(values[c], list):  # a dialogue
            parts += [f"{m['role']}: {m['content']}" for m in values[c]]
        elif c in values:
            parts.append("" if values[c] is None else str(values[c]))
        else:
            parts += [str(v) for k, v in values.items() if k.startswith(c + ".") and v is not None]
    return "\n".join(parts)


def sampler_shares(params: Sequence[ColumnParams], accepted: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """For each weighted sampler: configured share vs the share among the round's accepted rows, per value."""
    out: dict[str, dict[str, Any]] = {}
    for p in params:
        weights = p.weights()
        if not weights or p.name not in accepted:
            continue
        counts = accepted[p.name].astype(str).value_counts()
        total = int(counts.sum())
        shares = {
            v: {"weight": round(w, 4), "share": round(int(counts.get(v, 0)) / total, 4) if total else 0.0}
            for v, w in weights.items()
        }
        out[p.name] = {
            "values": shares,
            "max_abs_deviation": round(max(abs(s["share"] - s["weight"]) for s in shares.values()), 4)
            if total
            else None,
            "rows": total,
        }
    return out


SHARES_CHECK = "sampler_shares"


def share_gates(spec: PipelineSpec) -> dict[str, float]:
    """Category columns with `max_share_deviation`: the columns the `sampler_shares` coverage check gates."""
    if not spec.generate.columns:
        return {}
    return {
        p.name: p.max_share_deviation
        for p in column_params(spec)
        if getattr(p, "max_share_deviation", None) is not None
    }


def share_check(spec: PipelineSpec, coverage: dict[str, Any]) -> tuple[bool, dict[str, Any]] | None:
    """(passed, metadata) of the `sampler_shares` check, or None when no column asks for it. A round with no
    accepted rows has no shares to judge and fails."""
    gates = share_gates(spec)
    if not gates:
        return None
    shares = coverage.get("sampler_shares") or {}
    meta: dict[str, Any] = {}
    passed = True
    for name, limit in gates.items():
        dev = (shares.get(name) or {}).get("max_abs_deviation")
        ok = dev is not None and dev <= limit
        passed = passed and ok
        meta[name] = f"max deviation {dev if dev is not None else 'not measured'} (limit {limit})"
    return passed, meta
