"""The `openai_batch` backend: a round's requests as one OpenAI Batch API job (JSONL in, JSONL out).

Each request is one line `{"custom_id": <request key>, "method": "POST", "url": "/v1/chat/completions",
"body": ...}` whose body is exactly what the `openai` backend would send (OpenAIGenerator.request_body). The job
runs on one of two transports (batch_transports.py): a server's `/v1/files` + `/v1/batches` (hosted OpenAI, or
anything implementing them), or vLLM's own batch runner as a subprocess. A batch job is not interactive: results
come back when the job ends, so they reach the request cache job by job rather than one by one.

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
from synthflow.generators.base import GenerationRequest, GenerationResult, ProgressCallback, Usage
from synthflow.generators.batch_transports import (
    AnthropicMessageBatches,
    BatchJobFailed,
    OpenAIBatchAPI,
    VLLMRunBatch,
)

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

    transport="openai": the endpoint comes from the environment only (`base_url_env`, `api_key_env`), as with the
    openai backend. transport="vllm": `model` is the weights (folder or hub id) given to `--model`, and
    `served_model_name` (default: `model`) is the name in the bodies and the cache key.
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
        metadata: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        from synthflow.generators.openai_backend import OpenAIGenerator

        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if max_attempts < 1 or max_batch_requests < 1:
            raise ValueError("max_attempts and max_batch_requests must be >= 1")
        self.transport = transport
        self._weights = model
        self._model = served_model_name or model
        self._label = label
        # The openai backend builds the bodies (one copy of the body rules) and prices the usage.
        url_env, key_env = _ENV.get(transport, _ENV["openai"])
        self._bodies = OpenAIGenerator(self._model, base_url_env=base_url_env or url_env, api_key_env=api_key_env or key_env,
                                       prices=prices, extra_body=extra_body)  # fmt: skip
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
        # custom_ids of every job sent, in order: what was (re)submitted, for logs and tests.
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
            "model": self._model, "max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
            "messages": [{"role": r, "content": c} for r, c in request.messages if r != "system"],
        }  # fmt: skip
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

    def line(self, request: GenerationRequest) -> dict[str, Any]:
        """One line of the batch input file (Message Batches: one request of the batch)."""
        if self.transport == "anthropic":
            return {"custom_id": request.key(self.model_id), "params": self.anthropic_params(request)}
        return {"custom_id": request.key(self.model_id), "method": "POST", "url": "/v1/chat/completions",
                "body": self.request_body(request)}  # fmt: skip

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        if not reqs:
            return
        by_id: dict[str, list[GenerationRequest]] = {}
        for r in reqs:  # custom_ids must be unique in a batch: a request given twice goes once
            by_id.setdefault(r.key(self.model_id), []).append(r)
        lines = {
            cid: json.dumps(self.line(rs[0]), ensure_ascii=False).encode() + b"\n"
            for cid, rs in by_id.items()
        }
        t0 = time.perf_counter()
        tmp = None if self.work_dir else tempfile.mkdtemp(prefix="synthflow-batch-")
        transport = self._transport(Path(self.work_dir or tmp))
        done, shown, total = 0, 0, len(reqs)
        answered: dict[int, int] = {}
        base = 0

        def job_progress(job: int, n: int) -> None:
            nonlocal shown
            answered[job] = n
            now = min(total, base + sum(answered.values()))
            if progress is not None and now > shown:
                shown = now
                progress(now, total)

        pending = list(by_id)
        try:
            for attempt in range(1, self.max_attempts + 1):
                chunks = [
                    pending[i : i + self.max_batch_requests]
                    for i in range(0, len(pending), self.max_batch_requests)
                ]
                self.submissions += chunks
                answered.clear()
                base = done
                retry_next: list[str] = []
                for job, outputs in transport.run_jobs(
                    [b"".join(lines[c] for c in ch) for ch in chunks], job_progress
                ):
                    got = {o.get("custom_id"): o for o in outputs}
                    for cid in chunks[job]:
                        result, kind = self._read(cid, got.get(cid), transport.where(transport.ids.get(job)))
                        if (
                            result.error is None
                            or kind not in self.retry_kinds
                            or attempt == self.max_attempts
                        ):
                            if result.error is not None and attempt > 1:
                                result.error += f" (after {attempt} attempts)"
                            result.retries = attempt - 1
                            for i, r in enumerate(by_id[cid]):
                                res = result if i == 0 else dataclasses.replace(result)
                                done += 1
                                self.usage.add(res)
                                if progress is not None and done > shown:
                                    shown = done
                                    progress(done, total)
                                yield r, res
                        else:
                            retry_next.append(cid)
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

    def _read(self, cid: str, out: dict[str, Any] | None, where: str) -> tuple[GenerationResult, str | None]:
        """The result of one output line, and its failure kind (None on success)."""

        def failed(kind: str, detail: str) -> tuple[GenerationResult, str]:
            return GenerationResult(
                key=cid, text="", model=self.model_id, error=f"{kind}: {where}: {detail}"
            ), kind

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
            return completion_result(body, cid, self.model_id), None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return failed(retry.INVALID_RESPONSE, f"unreadable response ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """Nothing held between calls: each generate() call owns its jobs (and cancels those it leaves)."""

    def __enter__(self) -> BatchGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def completion_result(data: Any, key: str, model: str) -> GenerationResult:
    """A chat completion body as a result: text (a reasoning parser's reasoning put back inline as a leading
    <think> block, as the openai backend does), token counts, finish reason."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    message = choice["message"]
    text = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = f"<think>{reasoning}</think>{text}"
    return GenerationResult(
        key=key, text=text, model=model, prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0), finish_reason=choice.get("finish_reason"),
    )  # fmt: skip


def _message(err: Any, limit: int = 300) -> str:
    """The server's own message from an OpenAI-shaped error ({"error": {"message"}}, {"message"}) or its text."""
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:limit]
    return str(err)[:limit]
