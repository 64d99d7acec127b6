"""TransformersGenerator on the real smoke model: determinism, guided JSON, stop strings, token counts, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from synthflow.generators.base import GenerationRequest, GenerationResult, Generator, SamplingParams
from synthflow.generators.transformers_backend import ModelUnavailable, TransformersGenerator

PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "maxLength": 200},
        "solution": {"type": "string", "maxLength": 300},
        "answer": {"type": "number"},
    },
    "required": ["question", "solution", "answer"],
}

NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "difficulty": {"enum": ["easy", "medium", "hard"]},
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "text": {"type": "string"}},
                "required": ["n", "text"],
            },
            "minItems": 1,
        },
        "checked": {"type": "boolean"},
    },
    "required": ["title", "difficulty", "steps", "checked"],
}


def _req(
    prompt: str, *, seed: int = 0, i: int = 0, schema: dict | None = None, **sampling: object
) -> GenerationRequest:
    params = {"temperature": 0.9, "max_tokens": 24, **sampling}
    return GenerationRequest(
        messages=(("system", "You write math problems."), ("user", prompt)),
        sampling=SamplingParams(**params),
        seed=seed,
        sample_index=i,
        json_schema=schema,
    )


def _run(gen: TransformersGenerator, reqs: list[GenerationRequest]) -> dict[str, GenerationResult]:
    out = {req.key(gen.model_id): res for req, res in gen.generate(reqs)}
    assert len(out) == len(reqs)
    return out


def test_protocol_and_names(smoke_generator: TransformersGenerator) -> None:
    assert isinstance(smoke_generator, Generator)
    assert smoke_generator.model_id == "synthflow-smoke"
    assert smoke_generator.label == "smoke model (random weights)"


def test_smoke_alias_uses_the_project_dir(smoke_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHFLOW_HOME", str(smoke_model_dir.parent))
    gen = TransformersGenerator("smoke", batch_size=2)
    try:
        assert (gen.model_id, gen.label) == ("synthflow-smoke", "smoke model (random weights)")
        ((_, res),) = gen.generate([_req("hi", max_tokens=3)])
        assert res.error is None and res.completion_tokens == 3
    finally:
        gen.close()


def test_results_depend_only_on_the_request(smoke_generator: TransformersGenerator) -> None:
    """Same request, same output, alone or in any batch; sample_index gives distinct samples."""
    reqs = [
        _req(p, seed=11, i=i)
        for p in ("Apples.", "A long prompt about trains and their speed.")
        for i in range(3)
    ]
    reqs += [
        _req("Greedy.", temperature=0.0),
        _req("Nucleus.", seed=3, top_p=0.5, top_k=20),
        _req("Penalties.", seed=4, presence_penalty=0.8, frequency_penalty=0.5, max_tokens=30),
        _req("JSON.", seed=5, schema=PROBLEM_SCHEMA, max_tokens=40),
        _req("Stop.", seed=6, stop=("e",)),
    ]
    base = _run(smoke_generator, reqs)
    texts = {k: r.text for k, r in base.items()}
    for batch_size, order in ((1, reqs), (3, reqs[::-1]), (16, reqs[2:] + reqs[:2])):
        smoke_generator.batch_size = batch_size
        try:
            again = _run(smoke_generator, order)
        finally:
            smoke_generator.batch_size = 8
        assert {k: r.text for k, r in again.items()} == texts, f"batch_size={batch_size}"
        assert {k: r.completion_tokens for k, r in again.items()} == {
            k: r.completion_tokens for k, r in base.items()
        }
    samples = [base[r.key(smoke_generator.model_id)].text for r in reqs[:3]]
    assert len(set(samples)) == 3  # n samples of one prompt differ
    assert all(r.error is None for r in base.values())


@pytest.mark.parametrize("schema", [PROBLEM_SCHEMA, NESTED_SCHEMA], ids=["problem", "nested"])
def test_guided_json_validates(smoke_generator: TransformersGenerator, schema: dict) -> None:
    reqs = [
        _req("Write one problem as JSON.", seed=s, schema=schema, max_tokens=256, temperature=t)
        for s, t in ((0, 0.0), (1, 0.7), (2, 1.0), (3, 1.3))
    ]
    for res in _run(smoke_generator, reqs).values():
        assert res.error is None
        assert res.finish_reason == "stop", res.text
        jsonschema.validate(json.loads(res.text), schema)
        assert res.completion_tokens <= 256


def test_guided_json_closes_within_a_tight_budget(smoke_generator: TransformersGenerator) -> None:
    # The smallest instance, {"question":"","solution":"","answer":0}, is ~15 tokens.
    reqs = [_req("JSON.", seed=s, schema=PROBLEM_SCHEMA, max_tokens=24, temperature=1.0) for s in range(4)]
    for res in _run(smoke_generator, reqs).values():
        jsonschema.validate(json.loads(res.text), PROBLEM_SCHEMA)


def test_guided_json_truncated_when_budget_too_small(smoke_generator: TransformersGenerator) -> None:
    ((_, res),) = smoke_generator.generate([_req("JSON.", schema=PROBLEM_SCHEMA, max_tokens=5)])
    assert res.error is None and res.finish_reason == "length" and res.completion_tokens == 5
    assert res.text.startswith('{"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(res.text)


def test_stop_strings(smoke_generator: TransformersGenerator) -> None:
    ((_, free),) = smoke_generator.generate([_req("Count.", temperature=0.0, max_tokens=40)])
    stop = next(free.text[i : i + 2] for i in range(5, len(free.text) - 2) if free.text[i : i + 2].strip())
    ((_, cut),) = smoke_generator.generate(
        [_req("Count.", temperature=0.0, max_tokens=40, stop=(stop, "@@@"))]
    )
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.completion_tokens < free.completion_tokens == 40
    assert free.finish_reason == "length"


def test_token_counts_usage_and_progress(smoke_generator: TransformersGenerator) -> None:
    tok = smoke_generator._tokenizer
    reqs = [_req(f"Problem {i}: " + "more words " * i, seed=i, max_tokens=7 + i) for i in range(5)]
    calls: list[tuple[int, int]] = []
    before = smoke_generator.usage.completion_tokens
    results = list(smoke_generator.generate(reqs, progress=lambda done, total: calls.append((done, total))))
    for req, res in results:
        prompt = tok.apply_chat_template(req.chat(), add_generation_prompt=True, tokenize=False)
        assert res.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert res.completion_tokens == req.sampling.max_tokens  # random weights: no EOS this early
        assert res.finish_reason == "length" and res.model == "synthflow-smoke"
        assert res.key == req.key("synthflow-smoke")
    assert calls == [(i, 5) for i in range(1, 6)]
    assert smoke_generator.usage.completion_tokens - before == sum(7 + i for i in range(5))


def test_prompt_too_long_is_an_error_not_a_crash(smoke_model_dir: Path) -> None:
    gen = TransformersGenerator(str(smoke_model_dir), max_model_len=64)
    try:
        results = dict(gen.generate([_req("word " * 200), _req("short", max_tokens=100)]))
        long_res, short_res = results.values()
        assert long_res.error and long_res.error.startswith("prompt_too_long")
        assert short_res.error is None and short_res.finish_reason == "length"
        assert short_res.prompt_tokens + short_res.completion_tokens == 64  # capped by max_model_len
        assert gen.usage.failures == {"prompt_too_long": 1}
    finally:
        gen.close()


def test_throughput_on_cpu(smoke_generator: TransformersGenerator) -> None:
    reqs = [_req(f"Problem {i}.", seed=i, max_tokens=128) for i in range(32)]
    t0 = time.perf_counter()
    results = _run(smoke_generator, reqs)
    assert time.perf_counter() - t0 < 60  # ~5 s when the 2 cores are free
    assert sum(r.completion_tokens for r in results.values()) == 32 * 128


def test_missing_model_is_unavailable_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="synthflow-test/no-such-model") as info:
        TransformersGenerator("synthflow-test/no-such-model")
    assert info.value.model == "synthflow-test/no-such-model" and info.value.reason
    with pytest.raises(ModelUnavailable, match="no such directory"):
        TransformersGenerator(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable):
        TransformersGenerator(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "schema", [{"type": "integer"}, {"type": "boolean"}, {"type": "string", "maxLength": 30}]
)
def test_guided_scalars_stop_inside_the_budget(smoke_generator: TransformersGenerator, schema: dict) -> None:
    # A top-level number could take digits forever; the row must still stop with a valid value.
    reqs = [_req("Value.", seed=s, schema=schema, max_tokens=16, temperature=1.0) for s in range(3)]
    for res in _run(smoke_generator, reqs).values():
        assert res.finish_reason == "stop"
        jsonschema.validate(json.loads(res.text), schema)


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without HF_HUB_OFFLINE transformers would retry for about a minute; we check the hub once and say why.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="synthflow-test/no-such-model"):
        TransformersGenerator("synthflow-test/no-such-model")
    assert time.perf_counter() - t0 < 15
