"""The persistent hash set behind exact dedup across rounds (issue 14): chunks per round partition, a rerun replaces
its round's chunk, and the `exact_dedup` verifier rejects a row accepted in an earlier round without its rows."""

from __future__ import annotations

import pandas as pd

from synthflow.stages.text_index import TextIndex, text_hashes
from synthflow.stages.verifiers import VerifyContext, run_chain
from synthflow.stages.verifiers.builtin import ACCEPTED_TEXT_INDEX, ExactDedupParams, exact_dedup_verifier
from synthflow.store import Store


def _candidates(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"candidate_id": [f"c{i}" for i in range(len(texts))], "_text": texts,
                         "parse_error": pd.Series([None] * len(texts), dtype=object)})  # fmt: skip


def test_index_persists_per_round_and_a_rerun_replaces_its_chunk(tmp_path):
    store = Store(str(tmp_path / "store"))
    TextIndex(store, "p").write("r1", text_hashes(["What is 2+2?", "Name a prime."]))
    TextIndex(store, "p").write("r2", text_hashes(["Old round two"]))
    TextIndex(store, "p").write("r2", text_hashes(["New round two"]))  # round 2 run again
    index = TextIndex(store, "p").load(["r1", "r2", "r3"])  # r3 was never written
    assert len(index) == 3 and index.nbytes == 24
    # Normalized like exact_dedup compares: case and spacing do not matter.
    got = index.contains(text_hashes(["what is  2+2?", "old round two", "new round two", "unseen"]))
    assert got.tolist() == [True, False, True, False]
    assert TextIndex(store, "p").load(["r1"]).contains(text_hashes(["new round two"])).tolist() == [False]


def test_a_local_index_reads_no_chunk_whole_and_sees_a_rerun_of_its_round(tmp_path):
    """On a local store, opening the index reads nothing: each lookup maps the chunks, so a round run again since
    (its chunk replaced by a rename) is what the next lookup sees."""
    store = Store(str(tmp_path / "store"))
    TextIndex(store, "p").write("r1", text_hashes([f"row {i}" for i in range(1000)]))
    TextIndex(store, "p").write("r2", text_hashes([]))
    index = TextIndex(store, "p").load(["r1", "r2"])
    assert index._chunks == [] and len(index) == 1000 and index.nbytes == 8000
    assert index.contains(text_hashes(["row 7", "other"])).tolist() == [True, False]
    TextIndex(store, "p").write("r1", text_hashes(["other"]))  # round 1 run again
    assert index.contains(text_hashes(["row 7", "other"])).tolist() == [False, True]
    TextIndex(store, "p").write("r1", text_hashes([]))  # and again, accepting nothing
    assert index.contains(text_hashes(["row 7", "other"])).tolist() == [False, False]


def test_an_object_store_index_is_fetched_whole(tmp_path):
    store = Store("memory://text-index-test/store")
    TextIndex(store, "p").write("r1", text_hashes(["What is 2+2?"]))
    index = TextIndex(store, "p").load(["r1"])
    assert index.contains(text_hashes(["what is 2+2?", "unseen"])).tolist() == [True, False]


def test_exact_dedup_rejects_earlier_rounds_rows_through_the_index(tmp_path):
    store = Store(str(tmp_path / "store"))
    TextIndex(store, "p").write("r1", text_hashes(["A question from round one"]))
    index = TextIndex(store, "p").load(["r1"])
    reference = pd.DataFrame({"_id": ["s1"], "_text": ["A seed question"]})
    ctx = VerifyContext(spec=None, reference=reference, accepted=pd.DataFrame(columns=["_id", "_text"]),  # type: ignore[arg-type]
                        state={ACCEPTED_TEXT_INDEX: index})  # fmt: skip
    verify = exact_dedup_verifier("exact_dedup", ExactDedupParams())
    out = run_chain(_candidates(["a question from ROUND one", "A seed question", "fresh", "fresh"]), [verify], ctx)
    assert out["accepted"].tolist() == [False, False, True, False]
    assert out["reject_reason"].iloc[0] == "exact duplicate of a row accepted in an earlier round"
    assert out["reject_reason"].iloc[1] == "exact duplicate of seed/real row s1"
