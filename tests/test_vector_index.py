"""The persistent vector index behind semantic dedup across rounds (issue 14): one chunk per round partition (a faiss
flat index plus an embeddings table of id, text and vector), reopened memory-mapped, a rerun replaces its round's
chunk, and the `dedup` verifier rejects a near-copy of an earlier round's row through it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthflow.stages.vector_index import VectorIndex, table_vectors
from synthflow.store import Store

DIM = 8


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _basis(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i] = 1.0
    return v


def test_add_search_persist_reopen_and_rerun_replaces_the_chunk(tmp_path):
    pytest.importorskip("faiss")
    store = Store(str(tmp_path / "store"))
    one = VectorIndex(store, "p", "model/a", DIM)
    one.write("r1", ["a", "b"], ["text a", "text b"], _unit([_basis(0), _basis(1)]))
    assert len(one) == 2  # searchable in the process that wrote it
    VectorIndex(store, "p", "model/a", DIM).write("r2", ["old"], ["old"], _unit([_basis(2)]))
    VectorIndex(store, "p", "model/a", DIM).write("r2", ["new"], ["new"], _unit([_basis(3)]))  # round 2 again

    index = VectorIndex(store, "p", "model/a", DIM).load(["r1", "r2", "r3"])  # r3 was never written
    assert len(index) == 3 and [c.partition for c in index.chunks] == ["r1", "r2"]
    sim, ids = index.nearest(_unit([[1, 0.1, 0, 0, 0, 0, 0, 0], _basis(2), _basis(3), _basis(4)]))
    assert ids.tolist()[0] == "a" and sim[0] > 0.99
    assert ids.tolist()[2] == "new" and sim[2] > 0.99
    assert sim[1] < 0.01 and sim[3] < 0.01  # the replaced row is gone; an unseen direction matches nothing
    # Only the rounds asked for: round 2's chunk is not searched from round 2 itself.
    assert VectorIndex(store, "p", "model/a", DIM).load(["r1"]).nearest(_unit([_basis(3)]))[0][0] < 0.01
    # Another embedder's vectors are never compared.
    assert len(VectorIndex(store, "p", "model/b", DIM).load(["r1", "r2"])) == 0
    empty = VectorIndex(store, "p", "model/a", DIM)
    sim, ids = empty.nearest(_unit([_basis(0)]))
    assert sim[0] == -np.inf and ids[0] is None

    # The embeddings table: the folder is a Parquet dataset any reader opens; vectors come back as stored.
    table = index.table(["r1", "r2"])
    assert table.column("_id").to_pylist() == ["a", "b", "new"]
    assert np.allclose(table_vectors(table, DIM), _unit([_basis(0), _basis(1), _basis(3)]))
    folder = tmp_path / "store" / "p" / "_index" / "semantic" / "model_a" / "vectors"
    assert pq.read_table(folder).num_rows == 3


def test_a_mismatched_dimension_is_refused(tmp_path):
    pytest.importorskip("faiss")
    store = Store(str(tmp_path / "store"))
    VectorIndex(store, "p", "m", DIM).write("r1", ["a"], ["a"], _unit([_basis(0)]))
    with pytest.raises(ValueError, match="dimension 8, the embedder gives 4"):
        VectorIndex(store, "p", "m", 4).load(["r1"])


def test_semantic_dedup_rejects_an_earlier_rounds_near_copy_through_the_index(tmp_path, minilm):
    from synthflow.spec import load_spec
    from synthflow.stages.verifiers import VerifyContext, run_chain
    from synthflow.stages.verifiers.semantic_dedup import (
        ACCEPTED_VECTOR_INDEX,
        SemanticDedupParams,
        semantic_dedup_verifier,
    )
    from tests.conftest import REPO

    store = Store(str(tmp_path / "store"))
    earlier = "A farmer sells twelve baskets of apples at three dollars each. How much does he earn?"
    VectorIndex(store, "p", minilm.model_id, minilm.dim).write("r1", ["r1-0"], [earlier], minilm.encode([earlier]))
    index = VectorIndex(store, "p", minilm.model_id, minilm.dim).load(["r1"])
    ctx = VerifyContext(
        spec=load_spec(REPO / "assets" / "math_word_problems.yaml"),
        reference=pd.DataFrame({"_id": ["s1"], "_text": ["Name the largest planet in the solar system."]}),
        accepted=pd.DataFrame(columns=["_id", "_text"]),
        embedder=minilm,
        state={ACCEPTED_VECTOR_INDEX: index},
    )
    rows = pd.DataFrame({
        "candidate_id": ["c0", "c1"],
        "_text": ["A farmer sells twelve baskets of apples at three dollars each. How much does he earn?",
                  "Write a haiku about the sea at night."],
        "parse_error": pd.Series([None, None], dtype=object),
    })  # fmt: skip
    out = run_chain(rows, [semantic_dedup_verifier("dedup", SemanticDedupParams())], ctx)
    assert out["accepted"].tolist() == [False, True]
    assert out["reject_reason"].iloc[0].startswith("near-duplicate of synthetic row r1-0")
