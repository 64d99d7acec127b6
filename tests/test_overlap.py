"""Overlap (issue 14): batch k+1 generates while batch k is verified, with the same rows and cache keys as the
sequential order (`generate.overlap: false`), and the generator's idle fraction drops when verification is slow."""

from __future__ import annotations

import json
import textwrap
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

import synthflow
from synthflow.dagster.assets import PipelineKeys
from synthflow.generators.base import GenerationResult
from synthflow.spec import load_spec, parse_spec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.round import RoundInputs, RoundOutput, run_round
from synthflow.store import Store
from tests.fixtures.embedder import TOPIC_NAMES, topic_seed, topic_sentence
from tests.seam_kit import copy_pipeline, failure_text, materialize
from tests.test_pipeline import small_spec

SPEC = """
name: overlap_topics
seed:
  source: unused.jsonl
  text: text
  columns: [{name: text, type: string}]
generate:
  prompt: "Write one sentence like these: {% for ex in exemplars %}{{ ex.text }} {% endfor %}"
  few_shot: 3
  output_schema: {type: object, properties: {text: {type: string}}, required: [text]}
  rows_per_round: 40
  candidate_budget: 160
  batch_size: 12
  sampling: {seed: 5, max_tokens: 24}
diversity: {clusters: 6, exploration: 0.1}
verify:
  - {type: schema}
  - {type: exact_dedup}
  - {type: dedup}
"""


class TopicWriter:
    """A generator double whose answer is a function of the request alone: a sentence on the topic of the
    exemplars it is shown, from a template picked by the request's seed modulo a small number, so that some
    candidates repeat others exactly and many are near-duplicates (what the dedup verifiers must catch).
    `delay_s` per call stands in for a server's latency."""

    model_id = label = "topic-writer"

    def __init__(self, topics: dict[str, str], delay_s: float = 0.0):
        self.topics, self.delay_s = topics, delay_s
        self.calls = 0

    def generate(self, requests, progress=None):
        self.calls += 1
        time.sleep(self.delay_s)  # a server's wait: releases the GIL like a socket read
        for req in requests:
            shown = [self.topics[i] for i in req.meta["exemplar_ids"]]
            topic = max(set(shown), key=shown.count) if shown else TOPIC_NAMES[0]
            text = topic_sentence(topic, np.random.default_rng(req.seed % 23))
            yield req, GenerationResult(key="", text=json.dumps({"text": text}), model=self.model_id)

    def close(self) -> None:
        pass


def _seed(spec):
    seed = topic_seed(8, np.random.default_rng(11))
    seed["text"] = seed["_text"]
    return seed


def _round(spec, seed, generator, embedder, store_dir) -> tuple[RoundOutput, ResultCache]:
    from synthflow.stages.diversity import GapPlanner, seed_map_from_frame

    seed_map, _ = seed_map_from_frame(seed, embedder, k=spec.diversity.clusters)
    planner = GapPlanner(seed, seed_map, embedder, exploration=spec.diversity.exploration, few_shot=3)
    cache = ResultCache(Store(str(store_dir)), spec.name)
    out = run_round(
        RoundInputs(
            spec=spec,
            round_index=1,
            seed=seed,
            real=real_rows(seed, ["text"], 0),
            previous=None,
            generator=generator,
            cache=cache,
            embedder=embedder,
            planner=planner,
        )
    )
    return out, ResultCache(Store(str(store_dir)), spec.name)  # read back from the store, as a rerun would


def _with(spec, **generate):
    return spec.model_copy(update={"generate": spec.generate.model_copy(update=generate)})


def _assert_same_round(seq: RoundOutput, ovl: RoundOutput) -> None:
    cols = ["candidate_id", "candidate_index", "target_cluster", "_text", "accepted", "rejected_by", "reject_reason"]
    pd.testing.assert_frame_equal(seq.verified[cols], ovl.verified[cols])
    pd.testing.assert_frame_equal(seq.accepted[cols], ovl.accepted[cols])
    pd.testing.assert_frame_equal(seq.rejected[cols], ovl.rejected[cols])
    assert seq.candidates["candidate_id"].tolist() == ovl.candidates["candidate_id"].tolist()
    assert seq.stop_reason == ovl.stop_reason
    assert seq.coverage["planned_per_cluster"] == ovl.coverage["planned_per_cluster"]
    assert seq.coverage["cumulative_coverage"] == ovl.coverage["cumulative_coverage"]


def _assert_cache_keys(spec, seq_out, seq_cache, ovl_cache) -> None:
    """The sequential round's cache is the overlap round's, less at most the one batch planned past the stop."""
    seq_keys, ovl_keys = set(seq_cache._load()), set(ovl_cache._load())
    assert seq_keys == set(seq_out.candidates["candidate_id"])
    assert seq_keys <= ovl_keys
    assert len(ovl_keys - seq_keys) <= spec.generate.batch_size


def test_overlap_gives_the_rows_rejections_and_cache_keys_of_sequential_order(tmp_path, fresh_embedder):
    spec = parse_spec(SPEC, str(tmp_path / "spec.yaml"))
    seed = _seed(spec)
    topics = dict(zip(seed["_id"], seed["topic"], strict=True))
    runs = {}
    for overlap in (False, True):
        runs[overlap] = _round(
            _with(spec, overlap=overlap), seed, TopicWriter(topics), fresh_embedder(), tmp_path / f"store-{overlap}"
        )
    (seq, seq_cache), (ovl, ovl_cache) = runs[False], runs[True]
    _assert_same_round(seq, ovl)
    _assert_cache_keys(spec, seq, seq_cache, ovl_cache)
    # The round exercised what the lag must keep exact: several batches, both dedups, gap filling, the quota.
    reasons = seq.verified["rejected_by"].value_counts()
    assert len(seq.accepted) == spec.generate.rows_per_round and seq.stop_reason == "target reached"
    assert reasons.get("exact_dedup", 0) > 0 and reasons.get("dedup", 0) > 0, reasons
    assert len(seq.candidates) > 3 * spec.generate.batch_size
    assert seq.coverage["planner"] == "gap_filling"
    assert len(seq.candidates) <= spec.generate.candidate_limit


def test_overlap_stays_within_the_candidate_budget(tmp_path, fresh_embedder):
    """A budget the round cannot reach its rows in: both modes stop at exactly the budget, nothing past it."""
    spec = _with(parse_spec(SPEC, str(tmp_path / "spec.yaml")), rows_per_round=400, candidate_budget=50)
    seed = _seed(spec)
    topics = dict(zip(seed["_id"], seed["topic"], strict=True))
    (seq, seq_cache), (ovl, ovl_cache) = (
        _round(_with(spec, overlap=o), seed, TopicWriter(topics), fresh_embedder(), tmp_path / f"s{o}")
        for o in (False, True)
    )
    _assert_same_round(seq, ovl)
    assert seq.stop_reason == "budget exhausted" and len(seq.candidates) == 50
    assert set(seq_cache._load()) == set(ovl_cache._load())  # nothing was planned past the budget


def test_overlap_matches_sequential_with_the_smoke_model(tmp_path, fresh_embedder, smoke_model_dir):
    """The same comparison with a real model (the smoke model on the transformers backend, called from the
    worker thread): random text, so dedup rarely fires, but the plans, keys and verdicts must agree."""
    from synthflow.generators.transformers_backend import TransformersGenerator

    spec = _with(parse_spec(SPEC, str(tmp_path / "spec.yaml")), rows_per_round=16, batch_size=6)
    seed = _seed(spec)
    gen = TransformersGenerator(str(smoke_model_dir), device="cpu", batch_size=6, max_model_len=256)
    try:
        runs = [
            _round(_with(spec, overlap=o), seed, gen, fresh_embedder(), tmp_path / f"smoke-{o}") for o in (False, True)
        ]
    finally:
        gen.close()
    (seq, seq_cache), (ovl, ovl_cache) = runs
    _assert_same_round(seq, ovl)
    _assert_cache_keys(spec, seq, seq_cache, ovl_cache)
    assert len(seq.candidates) > 2 * 6  # three batches at least, so batches really overlapped
    texts = pd.Series([r.text for r in seq_cache._load().values()])
    assert texts.str.len().gt(0).all()


SLOW_CHECK = """
import time

def slow(rows):
    time.sleep({delay})  # a slow verifier (an embedding model, a sandbox, a judge)
    return [True] * len(rows)
"""


def test_idle_fraction_drops_with_overlap_when_verification_is_slow(tmp_path):
    gen_s, verify_s = 0.4, 0.3  # each batch: generation a little slower than verification
    (tmp_path / "slow_check.py").write_text(textwrap.dedent(SLOW_CHECK.format(delay=verify_s)))
    text = SPEC.replace("diversity: {clusters: 6, exploration: 0.1}\n", "").replace(
        "  - {type: dedup}\n", "  - {type: python, function: 'slow_check:slow'}\n"
    )
    spec = _with(parse_spec(text, str(tmp_path / "spec.yaml")), rows_per_round=48, batch_size=8, candidate_budget=48)
    seed = _seed(spec)
    topics = dict(zip(seed["_id"], seed["topic"], strict=True))
    idle, outs = {}, {}
    for overlap in (False, True):
        gen = TopicWriter(topics, delay_s=gen_s)
        out = run_round(
            RoundInputs(
                spec=_with(spec, overlap=overlap),
                round_index=1,
                seed=seed,
                real=real_rows(seed, ["text"], 0),
                previous=None,
                generator=gen,
                cache=ResultCache(Store(str(tmp_path / f"idle-{overlap}")), spec.name),
            )
        )
        idle[overlap], outs[overlap] = out.coverage["generator_idle_fraction"], out
    # Six batches: one after another the generator idles 3/7 of the round or more; with overlap only during the
    # last batch's verification and the round's own bookkeeping (which a loaded machine stretches in both modes).
    assert len(outs[False].candidates) == 48 == len(outs[True].candidates)
    assert idle[False] > 0.35, idle
    assert idle[True] < 0.6 * idle[False], idle


class WatchingWriter(TopicWriter):
    """Notes how many texts the embedder had embedded when the first batch's generation ended."""

    def __init__(self, topics, embedder, delay_s):
        super().__init__(topics, delay_s)
        self.embedder, self.embedded_during_first = embedder, None

    def generate(self, requests, progress=None):
        out = list(super().generate(requests, progress))
        if self.embedded_during_first is None:
            self.embedded_during_first = self.embedder.stats.embedded
        yield from out


def test_dedup_embeds_the_reference_rows_while_the_first_batch_generates(tmp_path, fresh_embedder):
    """The dedup index of the seed rows is built before the first verification, beside the first batch's
    generation with overlap, and the round's rows are those of sequential order."""
    spec = parse_spec(SPEC.replace("diversity: {clusters: 6, exploration: 0.1}\n", ""), str(tmp_path / "s.yaml"))
    seed = _seed(spec)
    topics = dict(zip(seed["_id"], seed["topic"], strict=True))
    outs, writers = {}, {}
    for overlap in (False, True):
        emb = fresh_embedder()
        writers[overlap] = gen = WatchingWriter(topics, emb, delay_s=0.5 if overlap else 0.0)
        outs[overlap] = run_round(
            RoundInputs(
                spec=_with(spec, overlap=overlap),
                round_index=1,
                seed=seed,
                real=real_rows(seed, ["text"], 0),
                previous=None,
                generator=gen,
                cache=ResultCache(Store(str(tmp_path / f"prep-{overlap}")), spec.name),
                embedder=emb,
            )
        )
    assert writers[True].embedded_during_first == len(seed)  # the seed, and nothing of the batch yet
    assert writers[False].embedded_during_first == len(seed)  # sequential: prepared before the batch generates
    cols = ["candidate_id", "_text", "accepted", "rejected_by", "reject_reason"]
    pd.testing.assert_frame_equal(outs[False].verified[cols], outs[True].verified[cols])
    assert outs[True].verified["rejected_by"].eq("dedup").any()  # the prepared index is the one dedup used


@pytest.mark.slow
def test_two_rounds_with_overlap_through_dagster_beside_a_sequential_pipeline(project):
    """A code location with two prefixed pipelines, one overlapping and one not, on the smoke profile: each round
    is its own run, the second does not re-run the seed, and both pipelines accept the same rows."""
    small_spec(project, **{"batch_size: 6": "batch_size: 2\n  overlap: true"})
    seq_path = project / "assets" / "math_sequential.yaml"
    copy_pipeline(project, "math_sequential")
    seq_path.write_text(seq_path.read_text().replace("overlap: true", "overlap: false"))
    ovl_spec = load_spec(project / "assets" / "math_word_problems.yaml")
    seq_spec = load_spec(seq_path)
    assert ovl_spec.generate.overlap and not seq_spec.generate.overlap
    defs = dg.Definitions.merge(
        *(synthflow.build_pipeline_defs(s, key_prefix="team", profile="smoke", project_root=project)
          for s in (ovl_spec, seq_spec))
    )  # fmt: skip
    dg.Definitions.validate_loadable(defs)
    keys = {s.name: PipelineKeys(s, ("team",)) for s in (ovl_spec, seq_spec)}
    round_assets = ("candidates", "verified", "coverage", "training_set")
    store = Store(str(project / "store"))
    with dg.instance_for_test() as instance:
        upstream = [k.key(n) for k in keys.values() for n in ("seed", "seed_map")]
        assert materialize(defs, instance, upstream).success
        for part in ("2026-01-01", "2026-01-02"):
            res = materialize(
                defs, instance, [k.key(n) for k in keys.values() for n in round_assets], part, raise_on_error=False
            )
            assert res.success, failure_text(res)
            assert not any(ev.asset_key == keys[ovl_spec.name].key("seed") for ev in res.get_asset_materialization_events())
        for k in keys.values():
            seeds = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=k.key("seed")), limit=10).records
            assert len(seeds) == 1  # the rounds read the stored seed, never re-ran it

    for part in ("2026-01-01", "2026-01-02"):
        tables = {
            name: store.read(k.store_name, "verified", part).sort_values("candidate_index", ignore_index=True)
            for name, k in keys.items()
        }
        ovl, seq = tables[ovl_spec.name], tables[seq_spec.name]
        cols = ["candidate_id", "_text", "accepted", "rejected_by"]
        pd.testing.assert_frame_equal(ovl[cols], seq[cols])
        # Random smoke-model text rarely passes dedup and the schema: what matters is several batches (so batches
        # really overlapped) asking the same requests in both pipelines.
        cands = {name: store.read(k.store_name, "candidates", part)["candidate_id"].tolist() for name, k in keys.items()}
        assert cands[ovl_spec.name] == cands[seq_spec.name]
        assert len(cands[ovl_spec.name]) > 2 * ovl_spec.generate.batch_size
        assert ovl["accepted"].sum() <= ovl_spec.generate.rows_per_round
        cov = store.read(keys[ovl_spec.name].store_name, "coverage", part)
        assert 0 <= cov["generator_idle_fraction"].iloc[0] < 1


@pytest.mark.slow
def test_openai_batches_queue_behind_each_other_with_the_rows_of_sequential_order(tmp_path, fresh_embedder, openai_env):
    """The openai backend against the real vLLM server: with overlap, batch k+1 is prefetched when it is planned
    and its requests queue behind batch k's, so more requests are in flight at once than a batch holds (the server
    never drains between batches), never more than max_concurrency; the rows are those of sequential order, and
    nothing is sent twice."""
    from synthflow.generators.openai_backend import OpenAIGenerator

    text = SPEC.replace("batch_size: 12", "batch_size: 4").replace("rows_per_round: 40", "rows_per_round: 12")
    text = text.replace("candidate_budget: 160", "candidate_budget: 48").replace("diversity: {clusters: 6, exploration: 0.1}\n", "")
    text = text.replace("{text: {type: string}}", "{text: {type: string, maxLength: 40}}")
    spec = parse_spec(text, str(tmp_path / "spec.yaml"))
    seed = _seed(spec)
    outs, gens = {}, {}
    for overlap in (False, True):
        gens[overlap] = OpenAIGenerator(openai_env.served_model_name, max_concurrency=6)
        cache = ResultCache(Store(str(tmp_path / f"store-{overlap}")), spec.name)
        outs[overlap] = run_round(
            RoundInputs(spec=_with(spec, overlap=overlap), round_index=1, seed=seed, real=real_rows(seed, ["text"], 0),
                        previous=None, generator=gens[overlap], cache=cache, embedder=fresh_embedder())
        )  # fmt: skip
    seq, ovl = outs[False], outs[True]
    assert gens[False].peak_in_flight <= 4  # one batch at a time
    assert 4 < gens[True].peak_in_flight <= 6, gens[True].peak_in_flight
    assert gens[True]._live is None and not gens[True]._prefetched  # the run stopped with the round
    cols = ["candidate_id", "_text", "accepted", "rejected_by"]
    pd.testing.assert_frame_equal(seq.verified[cols], ovl.verified[cols])
    assert len(ovl.candidates) > 2 * spec.generate.batch_size
    # Sent once each: the candidates' requests, plus at most the one batch planned past the stop.
    assert gens[True].usage.server_requests <= len(ovl.candidates) + spec.generate.batch_size
