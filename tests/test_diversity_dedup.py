"""Semantic dedup of candidates: the similarity index, within-batch dedup and the `dedup` verifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from synthflow.spec import VerifierSpec, parse_spec  # noqa: E402
from synthflow.stages.diversity import SimilarityIndex, within_batch  # noqa: E402
from synthflow.stages.verifiers import semantic_dedup  # noqa: E402, F401  (registers `dedup`)
from synthflow.stages.verifiers.base import VerifyContext  # noqa: E402
from synthflow.stages.verifiers.registry import build, validate_params  # noqa: E402

SPEC = """
name: dedup_test
seed:
  source: seed.jsonl
  text: question
  columns: [{name: question}]
generate:
  prompt: "Write a problem."
  output_schema: {type: object, properties: {question: {type: string}}}
diversity:
  near_duplicate_threshold: 0.95
  seed_copy_threshold: 0.9
"""

SEED = [
    "Tom has 5 apples and buys 3 more at the market. How many apples does he have now?",
    "A train travels 120 kilometres in 2 hours. What is its average speed?",
    "A rectangle is 8 metres long and 3 metres wide. What is its area?",
    "Sara saved 40 dollars and spent a quarter of it on books. How much money does she have left?",
]
PARAPHRASES = [  # cosine 0.96..0.99 to the seed row at the same position
    "Tom has five apples and then buys three more at the market. How many apples does Tom have now?",
    "A train covers 120 km in 2 hours. What is the train's average speed?",
    "A rectangle is 8 metres long and 3 metres wide. Find its area.",
    "Sara had saved 40 dollars and spent one quarter of it on books. How much money is left?",
]
DISTINCT = [  # at most 0.6 to any seed row or each other
    "A cyclist rides 45 kilometres on Monday and 30 on Tuesday. How far did she ride in total?",
    "A shop sells pencils at 25 cents each. How much do 12 pencils cost?",
    "Liam reads 15 pages a day. How many days does he need to finish a 180-page book?",
]
ACCEPTED = "A tank holds 500 litres and is 40 percent full. How many litres of water are in it?"


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_similarity_index_nearest_by_kind():
    idx = SimilarityIndex(3)
    assert len(idx) == 0
    empty = idx.nearest(unit([[1, 0, 0]]))
    assert empty.similarity[0] == -np.inf and empty.id[0] is None and empty.kind[0] is None
    idx.add(unit([[1, 0, 0], [0, 1, 0]]), ["s0", "s1"], "reference")
    idx.add(unit([[0.9, 0.1, 0]]), ["x0"], "synthetic")
    assert len(idx) == 3 and idx.count("reference") == 2 and ("synthetic", "x0") in idx
    q = unit([[1, 0.05, 0], [0, 0, 1]])
    both = idx.nearest(q)
    assert both.id.tolist()[0] == "s0" and both.kind[0] == "reference"
    syn = idx.nearest(q, kinds=("synthetic",))
    assert syn.id[0] == "x0" and syn.similarity[0] == pytest.approx(0.9982, abs=1e-3)
    assert both.similarity[1] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        idx.add(unit([[1, 0, 0]]), ["a"], "seed")
    with pytest.raises(ValueError):
        idx.add(unit([[1, 0]]), ["a"], "reference")


def test_within_batch_is_first_come_greedy():
    x = unit([[1, 0], [0.99, 0.1], [0, 1], [0.98, 0.2], [0.05, 1]])
    dup, sim = within_batch(x, 0.95)
    assert dup.tolist() == [-1, 0, -1, 0, 2]
    assert sim[1] > 0.95 and sim[0] == -np.inf
    # A row rejected earlier in the chain neither stays nor shadows later rows.
    dup, _ = within_batch(x, 0.95, skip=np.array([True, False, False, False, False]))
    assert dup.tolist() == [-1, -1, -1, 1, 2]


def test_params_default_to_the_spec_and_are_checked():
    assert validate_params(VerifierSpec(type="dedup")).near_duplicate_threshold is None
    assert validate_params(VerifierSpec(type="dedup", seed_copy_threshold=0.8)).seed_copy_threshold == 0.8
    with pytest.raises(ValueError, match="dedup"):
        validate_params(VerifierSpec(type="dedup", near_duplicate_threshold=1.5))
    with pytest.raises(ValueError, match="unknown parameter"):
        validate_params(VerifierSpec(type="dedup", threshold=0.9))


def context(embedder, accepted=()):
    spec = parse_spec(SPEC)
    reference = pd.DataFrame({"_id": [f"gsm-{i}" for i in range(len(SEED))], "_text": SEED, "_round": 0})
    acc = pd.DataFrame({"_id": [f"syn-{i}" for i in range(len(accepted))], "_text": list(accepted)})
    return VerifyContext(spec=spec, reference=reference, accepted=acc, embedder=embedder)


def candidates(texts, start=0):
    return pd.DataFrame({"candidate_id": [f"c{start + i}" for i in range(len(texts))], "_text": texts},
                        index=range(start, start + len(texts)))


def test_dedup_rejects_seed_paraphrases_and_near_duplicates_and_keeps_distinct_rows(fresh_embedder):
    emb = fresh_embedder()
    ctx = context(emb, accepted=[ACCEPTED])
    verify = build(VerifierSpec(type="dedup"))
    texts = [
        PARAPHRASES[0],
        DISTINCT[0],
        "A tank holds 500 litres and is 40 percent full. How many litres of water does it hold?",
        DISTINCT[1],
        "A cyclist rides 45 km on Monday and 30 km on Tuesday. How far did she ride in total?",
        PARAPHRASES[2],
        DISTINCT[2],
    ]
    out = verify(candidates(texts), ctx)
    assert out["ok"].tolist() == [False, True, False, True, False, False, True]
    assert out.loc[0, "reason"].startswith("copies seed row gsm-0 (cos 0.9")
    assert out.loc[2, "reason"].startswith("near-duplicate of synthetic row syn-0 (cos 0.9")
    assert out.loc[4, "reason"].startswith("near-duplicate of candidate c1 in this batch (cos 0.9")
    assert out.loc[5, "reason"].startswith("copies seed row gsm-2")
    assert out.loc[0, "nearest_id"] == "gsm-0" and out.loc[2, "nearest_id"] == "syn-0"
    assert out.loc[4, "nearest_id"] == "c1" and out["nearest_id"].notna().all()
    assert out.loc[0, "nearest_kind"] == "reference" and out.loc[4, "nearest_kind"] == "batch"
    assert (out.loc[out["ok"], "score"] < 0.9).all() and (out.loc[~out["ok"], "score"] >= 0.9).all()
    assert out.loc[out["ok"], "reason"].isna().all()


def test_thresholds_from_params_override_the_spec(fresh_embedder):
    ctx = context(fresh_embedder())
    strict = build(VerifierSpec(type="dedup", name="loose", seed_copy_threshold=0.995))
    out = strict(candidates(PARAPHRASES), ctx)
    assert out["ok"].sum() >= 3  # a 0.995 bar lets paraphrases through
    only_batch = build(VerifierSpec(type="dedup", name="batch_only", against=["batch"]))
    assert only_batch(candidates(PARAPHRASES), ctx)["ok"].all()


def test_index_lives_in_the_round_state_and_grows_with_accepted_rows(fresh_embedder):
    emb = fresh_embedder()
    ctx = context(emb)
    verify = build(VerifierSpec(type="dedup"))
    first = verify(candidates(DISTINCT[:2]), ctx)
    assert first["ok"].all()
    index = ctx.state["dedup:dedup"]["index"]
    embedded = emb.stats.embedded
    assert embedded == len(SEED) + 2
    # The round accepts the first batch; the next batch is checked against it without re-embedding anything old.
    ctx.accepted = pd.DataFrame({"_id": ["c0", "c1"], "_text": DISTINCT[:2]})
    second = verify(candidates([DISTINCT[0].replace("rides", "cycles"), DISTINCT[2]], start=2), ctx)
    assert ctx.state["dedup:dedup"]["index"] is index and index.count("synthetic") == 2
    assert emb.stats.embedded == embedded + 2  # only the two new candidates reached the model
    assert second["ok"].tolist() == [False, True]
    assert second.loc[2, "reason"].startswith("near-duplicate of synthetic row c0")


def test_dedup_needs_an_embedder():
    ctx = context(None)
    with pytest.raises(ValueError, match="needs an embedder"):
        build(VerifierSpec(type="dedup"))(candidates(DISTINCT), ctx)
