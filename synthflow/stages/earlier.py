"""What round r knows of the synthetic rows of r-1's training set without reading it: the persistent indexes.

Every persisted round writes, for the synthetic rows it added to its training set, one chunk of the exact-dedup
hash set (stages/text_index.py) and, with an embedder, one chunk of the vector index and embeddings table
(stages/vector_index.py); its training-set record then says so (`INDEXED`). Round r-1's synthetic rows are the
union of some rounds' additions, which the policy decides: every earlier round's for a policy that keeps r-1 whole
(`accumulate`), round r-1's alone for `replace`. Other policies (a selection such as `accumulate_subsample`) get
None: the round reads r-1 as before. So does a round any of whose rounds lacks a chunk (a store written before the
indexes, a round run in light mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from synthflow.registry import policies
from synthflow.spec import PipelineSpec
from synthflow.stages.text_index import TextIndex, text_hashes
from synthflow.stages.vector_index import VectorIndex, table_vectors
from synthflow.stages.verifiers.builtin import ACCEPTED_TEXT_INDEX
from synthflow.stages.verifiers.semantic_dedup import ACCEPTED_VECTOR_INDEX
from synthflow.store import Store

INDEXED = "indexed"  # training-set record meta: {"exact": true, "vectors": <embedder model id> | null}


def source_partitions(spec: PipelineSpec, partitions: Sequence[str]) -> list[str] | None:
    """The rounds whose additions make up r-1's synthetic rows, or None when the policy's set is not such a union."""
    name = spec.accumulate.policy
    if name == "accumulate" or (name in policies and policies.get(name).keeps_previous_rows):
        return list(partitions[:-1])
    if name == "replace":
        return list(partitions[-2:-1])
    return None


def model_id(embedder: Any) -> str:
    return str(getattr(embedder, "model_id", None) or type(embedder).__name__)


@dataclass
class EarlierIndexes:
    partitions: list[str]
    texts: TextIndex
    vectors: VectorIndex | None

    def state(self) -> dict[str, Any]:
        """The verifiers' view (VerifyContext.state) of the earlier rounds' accepted rows."""
        out: dict[str, Any] = {ACCEPTED_TEXT_INDEX: self.texts}
        if self.vectors is not None:
            out[ACCEPTED_VECTOR_INDEX] = self.vectors
        return out

    def planner_rows(self) -> tuple[pd.DataFrame, Any] | None:
        """Earlier accepted rows' texts and cached vectors, for the planner's shares (None without vectors)."""
        if self.vectors is None:
            return None
        table = self.vectors.table(self.partitions, columns=["_id", "_text", "vector"])
        frame = pd.DataFrame({"_id": table.column("_id").to_pylist(), "_text": table.column("_text").to_pylist()})
        return frame, table_vectors(table, self.vectors.dim)


def open_indexes(
    store: Store, name: str, spec: PipelineSpec, partitions: Sequence[str], embedder: Any | None
) -> EarlierIndexes | None:
    """The indexes of the rounds before `partitions[-1]`, or None when some round lacks its chunks."""
    parts = source_partitions(spec, partitions)
    if parts is None:
        return None
    wanted_model = model_id(embedder) if embedder is not None else None
    for p in parts:
        rec = store.latest(name, "training_set", p)
        indexed = rec.meta.get(INDEXED) if rec is not None else None
        if not indexed or (wanted_model is not None and indexed.get("vectors") != wanted_model):
            return None
    vectors = (
        VectorIndex(store, name, wanted_model, int(embedder.dim)).load(parts) if embedder is not None else None
    )
    return EarlierIndexes(parts, TextIndex(store, name).load(parts), vectors)


def write_chunks(store: Store, name: str, partition: str, added: pd.DataFrame, embedder: Any | None) -> dict[str, Any]:
    """Index the synthetic rows round `partition` added to its training set; returns the record meta saying so."""
    rows = added[added["_source"] == "synthetic"] if len(added) else added
    texts = rows["_text"].tolist() if len(rows) else []
    TextIndex(store, name).write(partition, text_hashes(texts))
    vectors_model = None
    if embedder is not None:
        vectors_model = model_id(embedder)
        import numpy as np

        vecs = embedder.encode([str(t) if t is not None else "" for t in texts]) if texts else np.empty((0, embedder.dim))
        VectorIndex(store, name, vectors_model, int(embedder.dim)).write(
            partition, rows["_id"].astype(str).tolist() if len(rows) else [], texts, vecs
        )
    return {INDEXED: {"exact": True, "vectors": vectors_model}}
