"""The `dedup` verifier: rejects candidates that are semantic near-duplicates, by cosine similarity of embeddings.

Two thresholds, because two different things go wrong: a candidate too close to a seed/real row copies the
seed (`seed_copy_threshold`), one too close to an accepted synthetic row or to an earlier candidate of the same
batch adds nothing new (`near_duplicate_threshold`). Both default to the spec's `diversity` section.

The index of reference and accepted rows lives in `ctx.state` for the whole round; each batch only adds the rows
accepted since the last one. Texts are embedded through `ctx.embedder`, whose cache makes a rebuild cheap. Rows
accepted in earlier rounds come, when the round gives it, from the persistent vector index
(`ctx.state[ACCEPTED_VECTOR_INDEX]`, synthflow.stages.vector_index): then `ctx.accepted` holds only this round's
rows, and earlier rounds are neither read nor embedded again.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from synthflow.stages.diversity.index import SimilarityIndex, within_batch
from synthflow.stages.verifiers.base import Needs, VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register

# VerifyContext.state key: a VectorIndex of the rows accepted in earlier rounds (embedded by ctx.embedder).
ACCEPTED_VECTOR_INDEX = "accepted_vector_index"


class SemanticDedupParams(VerifierParams):
    near_duplicate_threshold: float | None = Field(default=None, gt=0, le=1)  # vs accepted rows and the batch
    seed_copy_threshold: float | None = Field(default=None, gt=0, le=1)  # vs seed/real rows
    against: list[Literal["batch", "accepted", "reference"]] = ["batch", "accepted", "reference"]

    def requires(self) -> Needs:
        return Needs(embedder=True)


def _texts(frame: pd.DataFrame) -> list[str]:
    return frame["_text"].fillna("").astype(str).tolist()


def _reference_labels(reference: pd.DataFrame) -> list[str]:
    # Round 0 of the real data is the seed itself; later rounds are real data that arrived since.
    if "_round" in reference.columns:
        rounds = pd.to_numeric(reference["_round"], errors="coerce").fillna(0)
        return ["seed" if r == 0 else "real" for r in rounds]
    return ["seed"] * len(reference)


def _index(ctx: VerifyContext, key: str, use_reference: bool, use_accepted: bool) -> tuple[SimilarityIndex, dict]:
    """The round's index, created on the first batch and topped up with rows accepted since."""
    state: dict[str, Any] = ctx.state.setdefault(key, {})
    embedder = ctx.embedder
    ref = ctx.reference if use_reference else ctx.reference.iloc[0:0]
    ref_ids = ref["_id"].tolist() if len(ref) else []
    signature = (len(ref_ids), tuple(ref_ids[:1]), tuple(ref_ids[-1:]))
    if state.get("signature") != signature:
        index = SimilarityIndex(embedder.dim)
        if len(ref):
            index.add(embedder.encode(_texts(ref)), ref_ids, "reference")
        state.update(index=index, signature=signature, ref_label=dict(zip(ref_ids, _reference_labels(ref), strict=True)))
    index = state["index"]
    acc = ctx.accepted
    if use_accepted and acc is not None and len(acc):
        new = acc[[("synthetic", i) not in index for i in acc["_id"]]]
        if len(new):
            index.add(embedder.encode(_texts(new)), new["_id"].tolist(), "synthetic")
    return index, state["ref_label"]


@register("dedup", SemanticDedupParams)
def semantic_dedup_verifier(name: str, params: SemanticDedupParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        if ctx.embedder is None:
            raise ValueError(
                f"verifier {name!r} (dedup) needs an embedder: install synthflow[embeddings] and name one in "
                "the resource profile"
            )
        near = params.near_duplicate_threshold or ctx.spec.diversity.near_duplicate_threshold
        copy = params.seed_copy_threshold or ctx.spec.diversity.seed_copy_threshold
        index, ref_label = _index(ctx, f"dedup:{name}", "reference" in params.against, "accepted" in params.against)
        n = len(rows)
        vectors = ctx.embedder.encode(_texts(rows)) if n else np.empty((0, index.dim), dtype=np.float32)
        reason = np.full(n, None, dtype=object)
        rejected = np.zeros(n, dtype=bool)
        score = np.full(n, -np.inf)
        nearest_id = np.full(n, None, dtype=object)
        nearest_kind = np.full(n, None, dtype=object)

        def note(hit: np.ndarray, sim: np.ndarray, ids: np.ndarray, kind: np.ndarray) -> None:
            closer = sim > score
            score[closer] = sim[closer]
            nearest_id[closer] = ids[closer]
            nearest_kind[closer] = kind[closer]
            for i in np.flatnonzero(hit & ~rejected):
                reason[i] = f"{_describe(kind[i], ids[i], ref_label)} (cos {sim[i]:.2f})"
                rejected[i] = True

        ref = index.nearest(vectors, kinds=("reference",))
        note(ref.similarity >= copy, ref.similarity, ref.id, np.array(["reference"] * n, dtype=object))
        syn = index.nearest(vectors, kinds=("synthetic",))
        earlier = ctx.state.get(ACCEPTED_VECTOR_INDEX) if "accepted" in params.against else None
        if earlier is not None and len(earlier) and n:
            sim, ids = earlier.nearest(vectors)
            closer = sim > syn.similarity
            syn.similarity[closer], syn.id[closer] = sim[closer], ids[closer]
        note(syn.similarity >= near, syn.similarity, syn.id, np.array(["synthetic"] * n, dtype=object))
        if "batch" in params.against and n > 1:
            dup, sim = within_batch(vectors, near, skip=rejected)
            cids = rows["candidate_id"].to_numpy(dtype=object) if "candidate_id" in rows else rows.index.to_numpy()
            ids = np.array([cids[j] if j >= 0 else None for j in dup], dtype=object)
            note(dup >= 0, np.where(dup >= 0, sim, -np.inf), ids, np.array(["batch"] * n, dtype=object))
        out = verdicts(rows.index, ~rejected, reason, score=np.where(np.isfinite(score), score, np.nan))
        out["nearest_id"] = pd.Series(nearest_id, index=rows.index, dtype=object).map(lambda v: None if v is None else str(v))
        out["nearest_kind"] = pd.Series(nearest_kind, index=rows.index, dtype=object)
        return out

    verify.name = name
    # Called once before the round's first batch is verified (stages/overlap.prepare_verifiers), while that batch
    # generates: embedding the reference rows is then no longer part of the first verification.
    def prepare(ctx: VerifyContext) -> None:
        if ctx.embedder is not None:  # without one, verify() says what is missing
            _index(ctx, f"dedup:{name}", "reference" in params.against, "accepted" in params.against)

    verify.prepare = prepare
    return verify


def _describe(kind: str, row_id: Any, ref_label: dict) -> str:
    if kind == "reference":
        return f"copies {ref_label.get(row_id, 'seed')} row {row_id}"
    if kind == "synthetic":
        return f"near-duplicate of synthetic row {row_id}"
    return f"near-duplicate of candidate {row_id} in this batch"
