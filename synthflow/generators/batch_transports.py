"""Where a batch of OpenAI Batch API lines runs: a server's /v1/files + /v1/batches, or vLLM's batch runner.

Both take JSONL input (one `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` per line) and
give back the output lines (`custom_id`, `response.status_code`, `response.body`, `error`); the backend
(batch_backend.py) builds the lines, reads the answers and decides what to resubmit. A transport raises
BatchJobFailed when a job as a whole could not run (no request of it can have an answer).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from synthflow.generators import errors, retry

log = logging.getLogger(__name__)

JobProgress = Callable[[int, int], None]  # (job index, lines of that job answered so far)


class BatchJobFailed(errors.EndpointUnavailable):
    """A batch job could not run at all (rejected, failed or cancelled as a whole, or the runner died)."""

    def __init__(self, where: str, detail: str, *, unfinished: int = 0) -> None:
        self.where = where
        self.detail = detail
        self.unfinished = unfinished
        super().__init__(
            f"{where}: {detail}; {unfinished} request(s) not completed. Results yielded before this are valid; "
            "a rerun sends the rest."
        )


def read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- (a) the OpenAI Batch API ------------------------------------------------------------------------------------

_DONE = frozenset({"completed", "failed", "expired", "cancelled"})


class _HTTPBatches:
    """What the two HTTP batch transports share: SDK calls whose failures name the step, and cancelling the jobs
    still open when the caller stops. A subclass sets `_sdk` (the client library), `client`, `endpoint`, and says
    how one job is cancelled (`_cancel_job`) and named (`where`)."""

    _sdk: Any
    client: Any
    endpoint: str
    max_wait_s: float | None
    poll_interval_s: float
    _noun = "batch"

    def __init__(self) -> None:
        self._open: set[str] = set()  # jobs submitted and not yet ended: cancelled when the caller stops
        self.ids: dict[int, str] = {}

    def where(self, job_id: str | None = None) -> str:
        return f"{self.endpoint} {self._noun} {job_id}" if job_id else self.endpoint

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call (the client retries 429/5xx/connection errors itself); what still fails names the step."""
        try:
            return fn(*args, **kwargs)
        except self._sdk.APIStatusError as exc:
            raise BatchJobFailed(
                self.where(), f"cannot {what}: HTTP {exc.status_code}: {exc.message}"
            ) from exc
        except self._sdk.APIError as exc:
            raise BatchJobFailed(self.where(), f"cannot {what}: {type(exc).__name__}: {exc}") from exc

    def _cancel_job(self, job_id: str) -> None:
        raise NotImplementedError

    def _submit(self, i: int, data: bytes) -> str:
        """Submit job `i` (its JSONL lines); its id."""
        raise NotImplementedError

    def _poll(self, job_id: str) -> tuple[Any, str, bool, int, int]:
        """(the job object, its status, whether it ended, requests answered, requests in all)."""
        raise NotImplementedError

    def _fetch(self, job: Any, lines: int) -> list[dict[str, Any]]:
        """An ended job's results as OpenAI batch output lines."""
        raise NotImplementedError

    def run_jobs(
        self, jobs: Sequence[bytes], progress: JobProgress
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Submit every job, then poll them together, yielding (job index, output lines) as each ends."""
        ids = self.ids = {}  # job index -> job id, for the error messages of its lines
        try:
            for i, data in enumerate(jobs):
                ids[i] = job_id = self._submit(i, data)
                self._open.add(job_id)
                log.info("%s %s submitted to %s: %d request(s)", self._noun, job_id, self.endpoint,
                         data.count(b"\n"))  # fmt: skip
            started = time.monotonic()
            waiting = dict(ids)
            while waiting:
                for i, job_id in list(waiting.items()):
                    job, status, ended, answered, total = self._poll(job_id)
                    progress(i, answered)
                    if not ended:
                        log.info("%s %s: %s, %d/%d answered, %.0fs", self._noun, job_id, status, answered, total,
                                 time.monotonic() - started)  # fmt: skip
                        continue
                    del waiting[i]
                    self._open.discard(job_id)
                    yield i, self._fetch(job, jobs[i].count(b"\n"))
                if waiting:
                    self._wait(waiting, jobs, started)
        finally:
            self.cancel()

    def _wait(self, waiting: Mapping[int, str], jobs: Sequence[bytes], started: float) -> None:
        """Sleep one poll interval before looking at the unfinished jobs again, or give up after `max_wait_s`
        (the caller's `finally` cancels what is still open)."""
        if self.max_wait_s is not None and time.monotonic() - started > self.max_wait_s:
            raise BatchJobFailed(self.where(next(iter(waiting.values()))),
                                 f"not finished after max_wait_s={self.max_wait_s:g}s (cancelled)",
                                 unfinished=sum(jobs[i].count(b"\n") for i in waiting))  # fmt: skip
        time.sleep(self.poll_interval_s)

    def cancel(self) -> None:
        for job_id in list(self._open):
            with contextlib.suppress(Exception):  # best effort: the caller is already stopping or failing
                self._cancel_job(job_id)
                log.info("%s %s cancelled", self._noun, job_id)
            self._open.discard(job_id)

    def close(self) -> None:
        self.cancel()
        self.client.close()


class OpenAIBatchAPI(_HTTPBatches):
    """files.create + batches.create, then batches.retrieve every `poll_interval_s` until each job ends, then
    files.content of its output and error files. All of a call's jobs are submitted first and polled together."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        completion_window: str,
        poll_interval_s: float,
        timeout_s: float,
        max_wait_s: float | None,
        max_retries: int,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        import openai  # only this transport needs the client

        super().__init__()
        self._sdk = openai
        self.endpoint = retry.redact_url(base_url)
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s,
                                    max_retries=max_retries)  # fmt: skip
        self.completion_window = completion_window
        self.poll_interval_s = poll_interval_s
        self.max_wait_s = max_wait_s
        self.metadata = dict(metadata or {})

    def _submit(self, i: int, data: bytes) -> str:
        f = self._call("upload the batch input", self.client.files.create,
                       file=(f"synthflow-{i}.jsonl", data), purpose="batch")  # fmt: skip
        b = self._call("create the batch", self.client.batches.create, input_file_id=f.id,
                       endpoint="/v1/chat/completions", completion_window=self.completion_window,
                       **({"metadata": self.metadata} if self.metadata else {}))  # fmt: skip
        return b.id

    def _poll(self, job_id: str) -> tuple[Any, str, bool, int, int]:
        b = self._call("poll the batch", self.client.batches.retrieve, job_id)
        counts = b.request_counts
        answered = (counts.completed + counts.failed) if counts else 0
        return b, b.status, b.status in _DONE, answered, counts.total if counts else 0

    def _fetch(self, b: Any, lines: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for file_id in (b.output_file_id, b.error_file_id):
            if file_id:
                out += read_jsonl(
                    self._call("download the batch results", self.client.files.content, file_id).text
                )
        if b.status == "failed" or (b.status == "cancelled" and not out):
            errs = getattr(b, "errors", None)
            detail = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                               for e in (errs.data or [])) if errs else ""  # fmt: skip
            raise BatchJobFailed(self.where(b.id), f"the batch {b.status}" + (f": {detail}" if detail else ""),
                                 unfinished=lines)  # fmt: skip
        return out  # completed, expired (what finished is in the output file; the rest in the error file)

    def _cancel_job(self, job_id: str) -> None:
        self.client.batches.cancel(job_id)


# -- (c) Anthropic's Message Batches API ------------------------------------------------------------------------

# errored results: the error type -> the HTTP status Anthropic gives it, so the kinds match the OpenAI lines'.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
    "request_too_large": 413, "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529,
}  # fmt: skip
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicMessageBatches(_HTTPBatches):
    """messages.batches.create (the requests inline: `{"custom_id", "params"}`), then messages.batches.retrieve every
    `poll_interval_s` until `processing_status == "ended"`, then messages.batches.results. Results are handed on in
    the OpenAI batch line shape (a chat completion body, or an error with its status), so the backend reads one
    format."""

    _noun = "message batch"

    def __init__(
        self, base_url: str, api_key: str | None, *, poll_interval_s: float, timeout_s: float,
        max_wait_s: float | None, max_retries: int,
    ) -> None:  # fmt: skip
        import anthropic  # only this transport needs the client

        super().__init__()
        self._sdk = anthropic
        self.endpoint = retry.redact_url(base_url)
        self.client = anthropic.Anthropic(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s,
                                          max_retries=max_retries)  # fmt: skip
        self.poll_interval_s = poll_interval_s
        self.max_wait_s = max_wait_s

    def _submit(self, i: int, data: bytes) -> str:
        batches = self.client.messages.batches
        return self._call("create the message batch", batches.create, requests=read_jsonl(data.decode())).id

    def _poll(self, job_id: str) -> tuple[Any, str, bool, int, int]:
        b = self._call("poll the message batch", self.client.messages.batches.retrieve, job_id)
        c = b.request_counts
        answered = c.succeeded + c.errored + c.canceled + c.expired
        return b, b.processing_status, b.processing_status == "ended", answered, answered + c.processing

    def _fetch(self, b: Any, lines: int) -> list[dict[str, Any]]:
        results = self._call("download the batch results", self.client.messages.batches.results, b.id)
        return [_openai_line(r.model_dump(mode="json")) for r in results]

    def _cancel_job(self, job_id: str) -> None:
        self.client.messages.batches.cancel(job_id)


def _openai_line(r: dict[str, Any]) -> dict[str, Any]:
    """One Message Batches result as an OpenAI batch output line. `canceled` gives no line (never answered)."""
    cid, result = r.get("custom_id"), r.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        msg = result["message"]
        text = "".join(b.get("text") or "" for b in msg.get("content") or [] if b.get("type") == "text")
        thinking = "".join(
            b.get("thinking") or "" for b in msg.get("content") or [] if b.get("type") == "thinking"
        )
        usage = msg.get("usage") or {}
        body = {
            "choices": [{"message": {"content": text, "reasoning_content": thinking or None},
                         "finish_reason": _FINISH.get(msg.get("stop_reason"), msg.get("stop_reason"))}],
            "usage": {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")},
        }  # fmt: skip
        return {"custom_id": cid, "response": {"status_code": 200, "body": body}, "error": None}
    if kind == "errored":
        err = (result.get("error") or {}).get("error") or result.get("error") or {}
        status = _ANTHROPIC_STATUS.get(err.get("type"), 500)
        return {"custom_id": cid, "response": {"status_code": status, "body": None}, "error": err}
    if kind == "expired":
        return {
            "custom_id": cid,
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "the message batch expired before this request ran",
            },
        }
    return {"custom_id": None}


# -- (b) vLLM's batch runner -------------------------------------------------------------------------------------

# run_batch's tqdm line: "Running batch:  50% Completed | 3/6 [00:04<00:04, ...]"
_PROGRESS = re.compile(r"Running batch:.*?\|\s*(\d+)/(\d+)")


class VLLMRunBatch:
    """`python -m vllm.entrypoints.openai.run_batch -i IN -o OUT --model M ...` as a subprocess, one per job.

    Each job starts a fresh engine (load the weights, size the KV cache, warm up): on 2 CPU cores ~1-2 minutes for
    the smoke model, so keep jobs big. Its log goes to `<work dir>/job-N.log`; when it fails, the error names the
    root cause from that log.
    """

    def __init__(
        self,
        model: str,
        served_model_name: str,
        *,
        work_dir: Path,
        max_model_len: int | None,
        dtype: str,
        kv_cache_gib: float | None,
        enforce_eager: bool,
        seed: int,
        engine_args: Mapping[str, Any] | None,
        max_wait_s: float | None,
    ) -> None:
        self.model = model
        self.served_model_name = served_model_name
        self.work_dir = work_dir
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.engine_args = dict(engine_args or {})
        self.max_wait_s = max_wait_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.ids: dict[int, str] = {}

    def where(self, job_id: str | None = None) -> str:
        return f"vllm run_batch {job_id}" if job_id else "vllm run_batch"

    def command(self, inp: Path, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(inp), "-o", str(out),
               "--model", self.model, "--served-model-name", self.served_model_name, "--dtype", self.dtype,
               "--seed", str(self.seed)]  # fmt: skip
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        cmd += self._cpu_args()
        for name, value in self.engine_args.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is False:
                cmd.append("--no-" + name.replace("_", "-"))
            elif value is not None:
                cmd += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
        return cmd

    def _cpu_args(self) -> list[str]:
        """The same sizing as the engine and server on CPU (vllm_cpu.py): an explicit KV cache, no chunked prefill."""
        from synthflow.generators import vllm_cpu

        if not vllm_cpu.on_cpu():
            return []
        given = {k.replace("-", "_") for k in self.engine_args}
        args = [] if "enable_chunked_prefill" in given else ["--no-enable-chunked-prefill"]
        if "kv_cache_memory_bytes" in given or os.environ.get(vllm_cpu.KV_ENV):
            return args
        if self.kv_cache_gib is not None:
            return [*args, "--kv-cache-memory-bytes", str(int(self.kv_cache_gib * vllm_cpu.GIB))]
        max_len = self.max_model_len or int(
            vllm_cpu._model_config(self.model).get("max_position_embeddings", 2048)
        )
        dtype = "float32" if self.dtype == "float32" else "auto"
        return [*args, *vllm_cpu.server_kv_args(self.model, max_model_len=max_len, dtype=dtype,
                                                max_num_seqs=self.engine_args.get("max_num_seqs"))]  # fmt: skip

    def run_jobs(
        self, jobs: Sequence[bytes], progress: JobProgress
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        for i, data in enumerate(jobs):
            yield i, self._run(i, data, progress)

    def _run(self, i: int, data: bytes, progress: JobProgress) -> list[dict[str, Any]]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Numbered on from what the folder holds: a kept work_dir collects every job's files, none overwritten.
        name = f"job-{len(list(self.work_dir.glob('job-*.in.jsonl'))) + 1}"
        self.ids[i] = name
        inp, out, log_path = (self.work_dir / f"{name}.{s}" for s in ("in.jsonl", "out.jsonl", "log"))
        inp.write_bytes(data)
        env = dict(os.environ)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        tail: collections.deque[str] = collections.deque(maxlen=400)
        started = time.monotonic()
        log.info("vllm run_batch %s: %d request(s), log %s", name, data.count(b"\n"), log_path)
        with open(log_path, "wb") as logf:
            # Its own session, so stopping it takes the engine-core child down too.
            self._proc = proc = subprocess.Popen(self.command(inp, out), stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
            reader = threading.Thread(
                target=_follow, args=(proc, logf, tail, lambda n: progress(i, n)), daemon=True
            )
            reader.start()
            try:
                proc.wait(timeout=self.max_wait_s)
            except subprocess.TimeoutExpired:
                self.cancel()
                raise BatchJobFailed(self.where(name), f"not finished after max_wait_s={self.max_wait_s:g}s "
                                     "(stopped)", unfinished=data.count(b"\n")) from None  # fmt: skip
            finally:
                reader.join(timeout=10)
                self._proc = None
        if proc.returncode != 0 or not out.is_file():
            from synthflow.generators.vllm_cpu import root_cause

            cause = root_cause("\n".join(tail)) or "no exception in its log"
            raise BatchJobFailed(self.where(name), f"exited with {proc.returncode}: {cause} (log: {log_path})",
                                 unfinished=data.count(b"\n"))  # fmt: skip
        log.info("vllm run_batch %s finished in %.0fs", name, time.monotonic() - started)
        return read_jsonl(out.read_text(encoding="utf-8"))

    def cancel(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # SIGTERM to the runner alone lets it shut its engine core down; whatever is left is killed with the group.
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def close(self) -> None:
        self.cancel()


def _follow(proc: subprocess.Popen[bytes], logf: Any, tail: collections.deque[str], progress: Callable[[int], None]
            ) -> None:  # fmt: skip
    assert proc.stdout is not None
    for raw in proc.stdout:
        logf.write(raw)
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        m = _PROGRESS.search(line)
        if m:
            progress(int(m.group(1)))
    logf.flush()
