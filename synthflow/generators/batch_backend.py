"""The `openai_batch` backend: a round's requests as batch jobs (JSONL in, JSONL out), OpenAI Batch API format.

Each run of samples of one prompt (base.SampleRun, as the openai backend groups them; one sample a run with
`server_n: false`) is one line `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": ...}` whose
body is exactly what the `openai` backend sends for that run (OpenAIGenerator.request_body), and the answer is read
by the openai backend's reader. The job runs on one of three transports (batch_transports.py): a server's
`/v1/files` + `/v1/batches` (hosted OpenAI, or anything implementing them), vLLM's own batch runner as a
subprocess, or Anthropic's Message Batches API (one sample a request, Messages API params). A batch job is not
interactive: results come back when the job ends, so they reach the request cache job by job.

Lines that failed are resubmitted, alone, in a new job while their failure is of a retryable kind and attempts
are left (`max_attempts` jobs in all); what still fails is yielded with `error` like the openai backend's
failures (`"<kind>: <where>: <detail> (after N attempts)"`), so the cache does not keep it and a rerun tries again.

The cache key is the request's key for `model_id`, which is the model name the server is asked for (the body's
`model`), as with the openai backend: the same request for the same served model has the same key in both, so
results cached by one are hits for the other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from synthflow.generators import retry
from synthflow.generators.base import GenerationRequest, GenerationResult, ProgressCallback, SampleRun, Usage
from synthflow.generators.batch_transports import (
    AnthropicMessageBatches,
    BatchJobFailed,
    OpenAIBatchAPI,
    VLLMRunBatch,
)

# The openai backend's body builder and response reader: one copy of each (it costs this module the openai import).
from synthflow.generators.openai_backend import OpenAIGenerator
from synthflow.generators.openai_backend import _results as completion_results

TRANSPORTS = ("openai", "vllm", "anthropic")
# Where each HTTP transport finds its server and key by default (names configurable; values only from the environment).
_ENV = {
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
}
ANTHROPIC_URL = "https://api.anthropic.com"
# A line the server never answered (a job that expired, or an answer missing from the output).
_UNANSWERED = retry.TIMEOUT
DEFAULT_RETRY_KINDS = (*sorted(retry.RETRYABLE), retry.INVALID_RESPONSE)


class BatchGenerator:
    """Generator that sends its requests as OpenAI Batch API jobs. See docs/generation.md for every option.

    transport="openai" / "anthropic": the endpoint comes from the environment only (`base_url_env`, `api_key_env`;
    default OPENAI_* / ANTHROPIC_*), as with the openai backend. transport="vllm": `model` is the weights (folder
    or hub id) given to `--model`, and `served_model_name` (default: `model`) is the name in the bodies and the
    cache key.
    """

    def __init__(
        self,
        model: str,
        *,
        transport: str = "openai",
        base_url_env: str | None = None,
        api_key_env: str | None = None,
        completion_window: str = "24h",
        poll_interval_s: float = 30.0,
        timeout_s: float = 60.0,
        http_retries: int = 4,
        max_wait_s: float | None = None,
        max_attempts: int = 3,
        retry_kinds: Sequence[str] | None = None,
        max_batch_requests: int = 50_000,
        served_model_name: str | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        kv_cache_gib: float | None = None,
        enforce_eager: bool = True,
        seed: int = 0,
        engine_args: Mapping[str, Any] | None = None,
        work_dir: str | None = None,
        prices: Mapping[str, float] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        server_n: bool = True,
        metadata: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if max_attempts < 1 or max_batch_requests < 1:
            raise ValueError("max_attempts and max_batch_requests must be >= 1")
        self.transport = transport
        self._weights = model
        self._model = served_model_name or model
        self._label = label
        url_env, key_env = _ENV.get(transport, _ENV["openai"])
        # Messages API requests have no `n`: one sample a request there.
        self.supports_n = bool(server_n) and transport != "anthropic"
        # The openai backend groups the runs, builds the bodies (one copy of the body rules) and prices the usage.
        self._bodies = OpenAIGenerator(
            self._model, base_url_env=base_url_env or url_env, api_key_env=api_key_env or key_env,
            server_n=self.supports_n, prices=prices, extra_body=extra_body,
        )  # fmt: skip
        self.completion_window = completion_window
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_s = float(timeout_s)
        self.http_retries = int(http_retries)
        self.max_wait_s = max_wait_s
        self.max_attempts = int(max_attempts)
        self.retry_kinds = frozenset(DEFAULT_RETRY_KINDS if retry_kinds is None else retry_kinds)
        self.max_batch_requests = int(max_batch_requests)
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.engine_args = dict(engine_args or {})
        self.work_dir = work_dir
        self.metadata = dict(metadata or {})
        self.usage = Usage()
        # The sample keys each job sent, in order: what was (re)submitted, for logs and tests.
        self.submissions: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def label(self) -> str:
        return self._label or f"openai_batch[{self.transport}]:{self._model}"

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        return self._bodies.request_body(request)

    def anthropic_params(self, request: GenerationRequest) -> dict[str, Any]:
        """The Messages API params of one sample: the system turns go to `system`, the schema to
        `output_config.format`; Anthropic has no seed and no presence/frequency penalties, so those are not sent
        (samples of one prompt are then not reproducible)."""
        s = request.sampling
        system = "\n\n".join(c for r, c in request.messages if r == "system")
        params: dict[str, Any] = {
            "model": self._model, "max_tokens": s.max_tokens, "temperature": s.temperature,
            "messages": [{"role": r, "content": c} for r, c in request.messages if r != "system"],
        }  # fmt: skip
        if s.top_p < 1.0:  # 1 is no nucleus cut; recent Claude models refuse top_p beside temperature
            params["top_p"] = s.top_p
        if system:
            params["system"] = system
        if s.top_k > 0:
            params["top_k"] = s.top_k
        if s.stop:
            params["stop_sequences"] = list(s.stop)
        if request.json_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": request.json_schema}}
        params.update(self._bodies.extra_body)
        return params

    def estimate_cost(self, usage: Usage | None = None) -> float | None:
        """USD at `prices` (give the batch prices: usually half the interactive ones); None without prices."""
        return self._bodies.estimate_cost(usage or self.usage)

    def custom_id(self, run: SampleRun) -> str:
        """The request key of a run's first sample (32 hex), `-n<k>` added for a run of k > 1 samples: unique in a
        call (each key is sent once) and within Anthropic's `^[a-zA-Z0-9_-]{1,64}$`."""
        key = run.requests[0].key(self.model_id)
        return key if run.n == 1 else f"{key}-n{run.n}"

    def line(self, run: SampleRun) -> dict[str, Any]:
        """One line of the batch input file for a run of samples (Message Batches: one request of the batch).
        The body is the openai backend's for that run: n = the run's samples, seeded as it seeds them."""
        first = run.requests[0]
        if self.transport == "anthropic":
            return {"custom_id": self.custom_id(run), "params": self.anthropic_params(first)}
        body = (
            self._bodies.request_body(first, n=run.n, seed=run.seed)
            if self.supports_n
            else self.request_body(first)
        )
        return {
            "custom_id": self.custom_id(run),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        if not reqs:
            return
        by_key: dict[str, list[GenerationRequest]] = {}
        for r in reqs:  # custom_ids must be unique in a batch: a request given twice goes once
            by_key.setdefault(r.key(self.model_id), []).append(r)
        unique = [rs[0] for rs in by_key.values()]
        runs = {self.custom_id(run): run for run in self._bodies.runs(unique)}
        lines = {
            cid: json.dumps(self.line(run), ensure_ascii=False).encode() + b"\n" for cid, run in runs.items()
        }
        t0 = time.perf_counter()
        tmp = None if self.work_dir else tempfile.mkdtemp(prefix="synthflow-batch-")
        transport = self._transport(Path(self.work_dir or tmp))
        done, shown, total = 0, 0, len(reqs)
        answered: dict[int, int] = {}
        base, per_line = 0, 1.0

        def job_progress(job: int, n: int) -> None:
            # The server counts lines; a line holds a run's samples: shown in samples, roughly.
            nonlocal shown
            answered[job] = n
            now = min(total, base + int(sum(answered.values()) * per_line))
            if progress is not None and now > shown:
                shown = now
                progress(now, total)

        pending = list(runs)
        try:
            for attempt in range(1, self.max_attempts + 1):
                step = self.max_batch_requests
                chunks = [pending[i : i + step] for i in range(0, len(pending), step)]
                self.submissions += [
                    [r.key(self.model_id) for c in ch for r in runs[c].requests] for ch in chunks
                ]
                answered.clear()
                base, per_line = done, sum(runs[c].n for c in pending) / len(pending)
                retry_next: list[str] = []
                jobs = [b"".join(lines[c] for c in ch) for ch in chunks]
                for job, outputs in transport.run_jobs(jobs, job_progress):
                    got = {o.get("custom_id"): o for o in outputs}
                    where = transport.where(transport.ids.get(job))
                    for cid in chunks[job]:
                        keys = [r.key(self.model_id) for r in runs[cid].requests]
                        results, kind = self._read(keys, got.get(cid), where)
                        if kind is not None and kind in self.retry_kinds and attempt < self.max_attempts:
                            retry_next.append(cid)
                            continue
                        for key, result in zip(keys, results, strict=True):
                            if result.error is not None and attempt > 1:
                                result.error += f" (after {attempt} attempts)"
                            result.retries = attempt - 1
                            for i, r in enumerate(by_key[key]):
                                res = result if i == 0 else dataclasses.replace(result)
                                done += 1
                                self.usage.add(res)
                                if progress is not None and done > shown:
                                    shown = done
                                    progress(done, total)
                                yield r, res
                pending = retry_next
                if not pending:
                    break
        except BatchJobFailed as exc:  # counted over the whole call, not the one job that failed
            raise BatchJobFailed(exc.where, exc.detail, unfinished=total - done) from exc
        finally:
            transport.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            self.usage.wall_seconds += time.perf_counter() - t0

    def _transport(self, work_dir: Path) -> OpenAIBatchAPI | VLLMRunBatch | AnthropicMessageBatches:
        if self.transport == "anthropic":
            url = os.environ.get(self._bodies.base_url_env, "").strip() or ANTHROPIC_URL
            return AnthropicMessageBatches(url, os.environ.get(self._bodies.api_key_env) or None,
                                           poll_interval_s=self.poll_interval_s, timeout_s=self.timeout_s,
                                           max_wait_s=self.max_wait_s, max_retries=self.http_retries)  # fmt: skip
        if self.transport == "vllm":
            return VLLMRunBatch(self._weights, self._model, work_dir=work_dir, max_model_len=self.max_model_len,
                                dtype=self.dtype, kv_cache_gib=self.kv_cache_gib, enforce_eager=self.enforce_eager,
                                seed=self.seed, engine_args=self.engine_args, max_wait_s=self.max_wait_s)  # fmt: skip
        return OpenAIBatchAPI(self._bodies._base_url(), os.environ.get(self._bodies.api_key_env) or None,
                              completion_window=self.completion_window, poll_interval_s=self.poll_interval_s,
                              timeout_s=self.timeout_s, max_wait_s=self.max_wait_s, max_retries=self.http_retries,
                              metadata=self.metadata)  # fmt: skip

    def _read(
        self, keys: list[str], out: dict[str, Any] | None, where: str
    ) -> tuple[list[GenerationResult], str | None]:
        """The results of one output line (one per sample of its run), and its failure kind (None on success)."""

        def failed(kind: str, detail: str) -> tuple[list[GenerationResult], str]:
            error = f"{kind}: {where}: {detail}"
            return [GenerationResult(key=k, text="", model=self.model_id, error=error) for k in keys], kind

        if out is None:
            return failed(
                _UNANSWERED, "no answer in the batch output (the job ended before this request ran)"
            )
        response = out.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        error = out.get("error")
        if error or (status is not None and status != 200):
            if isinstance(error, dict) and error.get("code") == "batch_expired":
                return failed(_UNANSWERED, _message(error))
            kind = retry.kind_for_status(int(status)) if status else retry.SERVER
            return failed(kind, f"HTTP {status}: {_message(error or body)}" if status else _message(error))
        try:
            return completion_results(body, keys, self.model_id), None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return failed(retry.INVALID_RESPONSE, f"unreadable response ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """Nothing held between calls: each generate() call owns its jobs (and cancels those it leaves)."""

    def __enter__(self) -> BatchGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _message(err: Any, limit: int = 300) -> str:
    """The server's own message from an OpenAI-shaped error ({"error": {"message"}}, {"message"}) or its text."""
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:limit]
    return str(err)[:limit]
