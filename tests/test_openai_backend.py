"""The openai backend against a real vLLM OpenAI-compatible server on 127.0.0.1 (tests/fixtures/vllm_server.py).

The server starts once per session (~45 s on 2 cores). The last test kills it mid-round and starts it again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jsonschema
import pytest

from synthflow.generators.base import GenerationRequest, Generator, SamplingParams
from synthflow.generators.openai_backend import EndpointUnavailable, OpenAIGenerator
from tests.fixtures.vllm_server import SERVED_MODEL, VLLMServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# Bounded so that the random-weight smoke model's guided output ends well inside max_tokens (see test_vllm_backend).
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
        "answer": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["label", "ok", "answer"],
    "additionalProperties": False,
}


def _req(prompt: str, *, seed: int = 0, index: int = 0, schema: dict | None = None, **sampling) -> GenerationRequest:
    params = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, **sampling}
    return GenerationRequest(
        messages=(("user", prompt),), sampling=SamplingParams(**params), seed=seed, sample_index=index, json_schema=schema
    )


def _gen(**kw) -> OpenAIGenerator:
    return OpenAIGenerator(SERVED_MODEL, **{"max_concurrency": 4, "timeout_s": 30, **kw})


def test_n_samples_usage_cost_and_reproducibility(openai_env: VLLMServer) -> None:
    gen = _gen(prices={"prompt_per_1k": 0.5, "completion_per_1k": 1.5})
    assert isinstance(gen, Generator) and gen.label == f"openai:{SERVED_MODEL}"
    reqs = [_req(p, seed=11, index=i) for p in ("first prompt", "second prompt") for i in range(3)]
    seen: list[int] = []
    out = {r.key(SERVED_MODEL): res for r, res in gen.generate(reqs, progress=lambda d, t: seen.append(d))}

    assert len(out) == 6 and seen == list(range(1, 7))
    for res in out.values():
        assert res.error is None and res.retries == 0
        assert 0 < res.completion_tokens <= 8 and res.prompt_tokens > 0
    assert len({out[r.key(SERVED_MODEL)].text for r in reqs[:3]}) == 3  # samples differ
    assert gen.usage.requests == 6
    expected = (gen.usage.prompt_tokens * 0.5 + gen.usage.completion_tokens * 1.5) / 1000
    assert gen.estimate_cost() == pytest.approx(expected) and expected > 0

    # `seed` goes to the server, so the same requests give the same samples (one in flight at a time: batches
    # of the same shape both times).
    one = _gen(max_concurrency=1)
    first = {r.key(SERVED_MODEL): res.text for r, res in one.generate(reqs)}
    second = {r.key(SERVED_MODEL): res.text for r, res in one.generate(reqs)}
    assert first == second


def test_server_n_is_one_request_per_prompt(openai_env: VLLMServer) -> None:
    """The samples of a prompt go out as one request with the server's own `n`, counted by the server itself; each
    comes back as its own result under its own key. server_n: false sends one seeded request per sample."""
    reqs = [_req(p, seed=5, index=i) for p in ("alpha prompt", "beta prompt") for i in range(3)]
    gen = _gen()
    before = openai_env.chat_requests()
    out = {r.key(SERVED_MODEL): res for r, res in gen.generate(reqs)}
    assert openai_env.chat_requests() - before == 2 and gen.usage.server_requests == 2
    assert len(out) == 6 and gen.usage.requests == 6
    for res in out.values():
        assert res.error is None and 0 < res.completion_tokens <= 8 and res.prompt_tokens > 0
        assert res.reasoning_tokens is None  # vLLM reports it only with --reasoning-parser
    for p in range(2):
        assert len({out[r.key(SERVED_MODEL)].text for r in reqs[3 * p : 3 * p + 3]}) == 3  # samples differ

    # A later sample alone (what a resumed round misses) is one request for it alone.
    before = openai_env.chat_requests()
    [(_, late)] = gen.generate([_req("alpha prompt", seed=5, index=3)])
    assert late.error is None and openai_env.chat_requests() - before == 1

    plain = _gen(server_n=False)
    before = openai_env.chat_requests()
    assert all(res.error is None for _, res in plain.generate(reqs))
    assert openai_env.chat_requests() - before == 6 and plain.usage.server_requests == 6


def test_guided_json(openai_env: VLLMServer) -> None:
    reqs = [_req("answer in json", seed=s, schema=SCHEMA, max_tokens=64) for s in range(3)]
    results = list(_gen().generate(reqs))
    assert len(results) == 3
    for _, res in results:
        assert res.error is None and res.finish_reason == "stop", res
        jsonschema.validate(json.loads(res.text), SCHEMA)


def test_bad_request_is_a_sample_failure_without_retries(openai_env: VLLMServer) -> None:
    good = _req("fine")
    too_long = _req("x", max_tokens=100_000)  # beyond --max-model-len: HTTP 400
    results = {r.key(SERVED_MODEL): res for r, res in _gen().generate([too_long, good])}
    assert results[good.key(SERVED_MODEL)].error is None
    bad = results[too_long.key(SERVED_MODEL)]
    assert bad.error.startswith(f"bad_request: {openai_env.base_url}: HTTP 400") and bad.retries == 0


def test_wrong_model_or_key_raises_at_once(openai_env: VLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EndpointUnavailable, match="HTTP 404"):
        list(OpenAIGenerator("no-such-model").generate([_req("x")]))
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with pytest.raises(EndpointUnavailable, match="HTTP 401"):
        list(_gen().generate([_req("x")]))


def test_endpoint_only_from_the_environment(openai_env: VLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _gen()
    # Nothing about the endpoint or the key is kept on the object (it may end up pickled, logged or in metadata).
    state = repr(vars(gen))
    assert openai_env.base_url not in state and str(openai_env.api_key) not in state
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:secret@127.0.0.1:9/v1?token=abc")
    assert gen.endpoint == "http://127.0.0.1:9/v1"  # credentials never reach a message
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        list(gen.generate([_req("x")]))


def test_endpoint_down_for_good_raises_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens here
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    gen = _gen(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)
    with pytest.raises(EndpointUnavailable) as info:
        list(gen.generate([_req(f"p{i}") for i in range(5)]))
    exc = info.value
    assert exc.endpoint == url and url in str(exc)
    assert exc.last_error.startswith(f"connection: {url}: ") and "after 3 retries" in exc.last_error
    assert exc.retries >= 3 and exc.unfinished == 5


def test_server_killed_mid_round_then_restarted(openai_env: VLLMServer) -> None:
    """Kill the server (SIGKILL) while a round is streaming: what arrived is kept, the call retries and then
    raises naming the endpoint; restart the server and the unfinished requests go through, retrying until it is
    back."""
    reqs = [_req(f"prompt {i}", seed=i, max_tokens=16) for i in range(40)]
    gen = _gen(max_concurrency=2, max_retries=4, backoff_base_s=0.05, backoff_max_s=0.5)
    done: dict[str, str] = {}
    with pytest.raises(EndpointUnavailable) as info:
        for request, res in gen.generate(reqs):
            assert res.error is None
            done[request.key(SERVED_MODEL)] = res.text
            if len(done) == 3:
                openai_env.kill()
    exc = info.value
    assert exc.endpoint == openai_env.base_url and openai_env.base_url in str(exc)
    assert exc.last_error.split(":", 1)[0] in ("connection", "timeout") and "after 4 retries" in exc.last_error
    assert exc.retries >= 4
    assert 3 <= len(done) < len(reqs)

    # Resume: send what did not arrive while the server comes back; patient retries carry the requests over the
    # gap (start-up takes ~45 s here), then every one succeeds.
    rest = [r for r in reqs if r.key(SERVED_MODEL) not in done]
    restarter = threading.Thread(target=openai_env.start)
    restarter.start()
    try:
        patient = _gen(max_concurrency=2, max_retries=400, backoff_base_s=0.2, backoff_max_s=1.0)
        results = list(patient.generate(rest))
    finally:
        restarter.join()
    assert len(results) == len(rest) and all(res.error is None for _, res in results)
    assert sum(res.retries for _, res in results) > 0 and patient.usage.retries > 0


def test_stopped_server_fails_within_the_documented_window(openai_env: VLLMServer) -> None:
    """SIGSTOP the server (API server and engine core): its socket stays open and connections are accepted, but
    nothing answers. With the default timeout and retries the call must fail within 16-32 s (docs/generation.md),
    not after timeout_s x (max_retries + 1)."""
    gen = OpenAIGenerator(SERVED_MODEL)  # every default: timeout_s, max_retries, backoff, hung_after_s
    reqs = [_req(f"stopped {i}", seed=i, max_tokens=8) for i in range(4)]
    outcome: dict[str, object] = {}

    def call() -> None:
        t0 = time.monotonic()
        try:
            outcome["results"] = list(gen.generate(reqs))
        except EndpointUnavailable as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - t0

    os.killpg(openai_env.proc.pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(60)
    finally:
        os.killpg(openai_env.proc.pid, signal.SIGCONT)
    assert not worker.is_alive(), "a stopped server was not detected within 60 s"
    exc = outcome.get("error")
    assert isinstance(exc, EndpointUnavailable), outcome
    assert 16 <= outcome["seconds"] <= 32, outcome
    assert exc.endpoint == openai_env.base_url and exc.unfinished == len(reqs)
    assert exc.last_error.startswith(f"timeout: {openai_env.base_url}: no answer for ")
    # Continued, the server answers again, and the same generator goes through.
    results = list(gen.generate(reqs))
    assert len(results) == len(reqs) and all(res.error is None for _, res in results)


def test_prefetched_requests_queue_behind_a_running_call_and_are_sent_once(openai_env) -> None:
    """prefetch() while a call is sending: the later generate() of the same requests takes their results (the
    server saw each request once); a prefetch nobody takes is dropped, and the run stops when nothing is open."""
    gen = _gen(max_concurrency=4)
    first = [_req(f"first {i}") for i in range(6)]
    second = [_req(f"second {i}") for i in range(6)]
    unused = [_req(f"unused {i}") for i in range(3)]
    assert gen.prefetch(second) is None  # nothing is sending: nothing to queue behind
    it = gen.generate(first)
    got = [next(it)]  # the call is live now
    assert gen.prefetch(second) is not None
    drop = gen.prefetch(unused)
    got += list(it)
    assert {r.key(gen.model_id) for r, _ in got} == {r.key(gen.model_id) for r in first}
    assert gen._live is not None  # the prefetches keep the run open
    out = dict((r.key(gen.model_id), res) for r, res in gen.generate(second))
    assert set(out) == {r.key(gen.model_id) for r in second} and not any(res.error for res in out.values())
    drop()
    assert gen._live is None and not gen._prefetched
    assert gen.usage.server_requests <= len(first) + len(second) + len(unused)  # nothing sent twice


@pytest.mark.parametrize("buffer", [0, 2])
def test_a_paused_caller_holds_at_most_the_in_flight_and_the_result_buffer(openai_env: VLLMServer, buffer) -> None:
    """Backpressure: while the caller holds a result (a round stores it before it comes back for the next), the
    server gets max_concurrency + result_buffer requests and no more; the buffer lets finished workers send on
    without waiting for the caller's thread, and in flight it is still max_concurrency at most. (What a killed
    round may re-send, bench/resume.py.)"""
    gen = _gen(max_concurrency=2, result_buffer=buffer)
    reqs = [_req(f"paused {buffer} {i}") for i in range(12)]
    before = openai_env.chat_requests()
    it = gen.generate(reqs)
    next(it)  # one yielded, and the caller does not come back for the next yet
    deadline = time.monotonic() + 20
    expected = 2 + buffer
    while time.monotonic() < deadline and openai_env.chat_requests() - before < expected:
        time.sleep(0.2)
    time.sleep(1.5)  # long enough for a few more answers, had anything more been sent
    assert openai_env.chat_requests() - before == expected
    assert gen.peak_in_flight <= 2
    rest = list(it)
    assert len(rest) == 11 and not any(res.error for _, res in rest)
    assert openai_env.chat_requests() - before == 12


def test_result_buffer_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="result_buffer"):
        OpenAIGenerator(SERVED_MODEL, result_buffer=-1)
