"""The `openai` backend: any OpenAI-compatible chat completions server (vLLM serve, SGLang, TGI, llama.cpp, hosted).

Requests go out concurrently (at most `max_concurrency` in flight) from an asyncio loop in a worker thread, so the
synchronous generate() can yield each result the moment it arrives while the other requests keep flowing. The
transport is the `openai` package's AsyncOpenAI with its own retries off (ours count and classify them): on a
2-core machine talking to vLLM it moved 2.5x the tokens/s of a plain httpx.AsyncClient.

Where the server is comes from environment variables only (names configurable, values never stored on the object,
logged or returned in metadata): `OPENAI_BASE_URL` (e.g. http://127.0.0.1:8000/v1) and `OPENAI_API_KEY` (optional:
a local vLLM without --api-key needs none). Error messages name the endpoint with any user:password removed.

Failures:
- 429, 5xx, timeouts and dropped or refused connections are retried with exponential backoff and full jitter;
  GenerationResult.retries counts the retries of each sample.
- A sample that still fails is yielded with `error` = "<kind>: <endpoint>: <last failure> (after N retries)";
  kinds are listed in synthflow.generators.retry.
- When a sample runs out of retries and no request has succeeded since it first failed, the endpoint is down rather
  than the sample bad: generate() stops sending and raises EndpointUnavailable (naming the endpoint and the last
  failure) instead of yielding a round of failures. Results yielded before that are good and stay good; the
  requests that were not yielded can simply be sent again once the server is back. 401/403/404 (wrong key, wrong
  URL, unknown model) raise it at once: no request could succeed.
- A server that accepts connections but never answers (its process stopped or hung) is not left to each request's
  `timeout_s` (long, since one generation may legitimately take minutes): while requests are in flight and nothing
  has answered for a while, GET {base}/models probes the server, and after `hung_after_s` with no answer at all
  (no completion, no HTTP status, no probe reply) generate() raises EndpointUnavailable.

Samples of one prompt (same messages, sampling, schema and seed; consecutive sample indexes: a SampleRun) go out as
ONE request with `n` = their number (`server_n`, on by default: vLLM, SGLang and OpenAI take `n`; turn it off for a
server that does not, then each sample is its own seeded request). The response's usage is for the whole request:
prompt tokens are split evenly over its samples, completion and reasoning tokens in proportion to each sample's text,
so the sums are what the server counted. A retry re-sends the whole run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import openai

from synthflow.generators import errors, retry
from synthflow.generators.base import (
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    SampleRun,
    Usage,
    sample_runs,
    sample_seed,
    split_count,
)

log = logging.getLogger(__name__)

# Statuses that say the endpoint is misconfigured for us, not that one sample went wrong.
_FATAL_STATUSES = frozenset({401, 403, 404})


class EndpointUnavailable(errors.EndpointUnavailable):
    """The OpenAI-compatible endpoint could not serve the round (down, or refusing every request)."""

    def __init__(self, endpoint: str, last_error: str, *, retries: int = 0, unfinished: int = 0) -> None:
        self.endpoint = endpoint
        self.last_error = last_error
        self.retries = retries
        self.unfinished = unfinished
        super().__init__(
            f"endpoint {endpoint} unavailable: {last_error}; {unfinished} request(s) not completed "
            f"({retries} retries spent). Results yielded before this are valid; send the rest again when the "
            "server is back."
        )


@dataclass
class _Failure:
    kind: str
    detail: str
    retry_after_s: float | None = None
    status: int | None = None


class OpenAIGenerator:
    """Generator for an OpenAI-compatible server. See the module docstring for where the endpoint comes from.

    `prices` = {"prompt_per_1k": USD, "completion_per_1k": USD} enables estimate_cost(). `extra_body` is merged into
    every request body (server extensions such as vLLM's {"min_tokens": 16} or {"repetition_penalty": 1.1}).
    `result_buffer` (default `max_concurrency`) is how many results may wait for the caller beyond the
    `max_concurrency` in flight; a killed round re-sends at most `max_concurrency + result_buffer` requests.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url_env: str = "OPENAI_BASE_URL",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        timeout_s: float = 60,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30,
        hung_after_s: float = 20,
        probe_timeout_s: float = 5,
        prices: Mapping[str, float] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        label: str | None = None,
        server_n: bool = True,
        result_buffer: int | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if result_buffer is not None and result_buffer < 0:
            raise ValueError("result_buffer must be >= 0")
        if prices is not None and not {"prompt_per_1k", "completion_per_1k"} <= set(prices):
            raise ValueError("prices needs both 'prompt_per_1k' and 'completion_per_1k'")
        self._model = model
        self._label = label
        self.base_url_env = base_url_env
        self.api_key_env = api_key_env
        self.max_concurrency = int(max_concurrency)
        # Results delivered and not yet taken by the caller, beyond those in flight (see _Run._take_slots).
        self.result_buffer = self.max_concurrency if result_buffer is None else int(result_buffer)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff = retry.Backoff(base_s=backoff_base_s, max_s=backoff_max_s)
        # 0 turns the hang watchdog off (then only timeout_s and the retries bound a silent server).
        self.hung_after_s = float(hung_after_s)
        self.probe_timeout_s = float(probe_timeout_s)
        self.prices = dict(prices) if prices is not None else None
        self.extra_body = dict(extra_body or {})
        self.supports_n = bool(server_n)  # the capability run_generation and llm columns read (base.supports_n)
        self.usage = Usage()
        # One run (event loop, client, worker pool) is live while any call or prefetch has requests on it; calls
        # that come while it is live queue behind it (prefetch()).
        self._runs_lock = threading.Lock()
        self._live: _Run | None = None
        self._prefetched: dict[tuple[str, ...], tuple[_Run, _Ticket]] = {}
        self.peak_in_flight = 0  # the most requests ever waiting for the server at once (tests read it)

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def label(self) -> str:
        return self._label or f"openai:{self._model}"

    @property
    def endpoint(self) -> str:
        """The base URL as it may be shown: read from the environment now, credentials removed."""
        return retry.redact_url(self._base_url())

    def _base_url(self) -> str:
        url = os.environ.get(self.base_url_env, "").strip()
        if not url:
            raise ValueError(
                f"the openai backend needs the server's base URL in the environment variable {self.base_url_env} "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        return url

    def estimate_cost(self, usage: Usage | None = None) -> float | None:
        """USD for `usage` (default: everything this generator has done) at `prices`; None without prices."""
        if self.prices is None:
            return None
        u = usage or self.usage
        return (
            u.prompt_tokens * self.prices["prompt_per_1k"] + u.completion_tokens * self.prices["completion_per_1k"]
        ) / 1000.0

    def runs(self, requests: list[GenerationRequest]) -> list[SampleRun]:
        """What goes out as one request each: runs of samples with server n, else one sample per request."""
        return sample_runs(requests) if self.supports_n else [SampleRun((r,)) for r in requests]

    def request_body(self, request: GenerationRequest, *, n: int = 1, seed: int | None = None) -> dict[str, Any]:
        """The chat completions body for `n` samples of `request`'s prompt. Without `seed`: one sample with its
        own seed (sample_seed of its index), so seeded samples differ and are reproducible."""
        s = request.sampling
        body: dict[str, Any] = {
            "model": self._model,
            "messages": request.chat(),
            "n": n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "seed": sample_seed(request.seed, request.sample_index) if seed is None else seed,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.top_k > 0:
            # Not in OpenAI's API (hosted OpenAI rejects it); vLLM, SGLang and llama.cpp accept it. Sent only when set.
            body["top_k"] = s.top_k
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        body.update(self.extra_body)
        return body

    def prefetch(self, requests: Iterable[GenerationRequest]) -> Callable[[], None] | None:
        """Queue `requests` behind what this generator is sending now, so the server is never left to drain between
        two calls; the generate() call for the very same requests later takes their results.

        For a round's next batch, planned while the current one generates (stages/overlap.py). Returns a function
        that drops them again (a batch planned past the round's stop), or None when nothing is being sent (then
        there is nothing to overlap with, and generate() sends them itself)."""
        reqs = list(requests)
        if not reqs:
            return None
        keys = tuple(r.key(self.model_id) for r in reqs)
        with self._runs_lock:
            run = self._live
            if run is None or keys in self._prefetched:
                return None
            ticket = run.add(reqs)
            if ticket is None:
                return None
            self._prefetched[keys] = (run, ticket)

        def drop() -> None:
            with self._runs_lock:
                if self._prefetched.get(keys, (None, None))[1] is not ticket:
                    return  # generate() took it
                del self._prefetched[keys]
            self._release(run, ticket)

        return drop

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        if not reqs:
            return
        keys = tuple(r.key(self.model_id) for r in reqs)
        with self._runs_lock:
            found = self._prefetched.pop(keys, None)
            if found is not None:
                run, ticket = found
            else:
                run = self._live
                ticket = run.add(reqs) if run is not None else None
                if run is None or ticket is None:
                    run = _Run(self, self._base_url(), os.environ.get(self.api_key_env) or None)
                    ticket = run.add(reqs)
                    assert ticket is not None
                    run.start()
                    self._live = run
        t0 = time.perf_counter()
        done = 0
        try:
            while done < len(reqs):
                batch = ticket.out.get()
                if isinstance(batch, BaseException):
                    raise batch
                for request, result in batch:
                    done += 1
                    self.usage.add(result)
                    if progress is not None:
                        progress(done, len(reqs))
                    yield request, result
                    run.consumed(ticket)
        finally:
            self._release(run, ticket)
            self.usage.wall_seconds += time.perf_counter() - t0

    def _release(self, run: _Run, ticket: _Ticket) -> None:
        """A call is done with its ticket (all taken, stopped early, or a prefetch dropped); the run stops when it
        was the last one open, cancelling whatever is still in flight."""
        with self._runs_lock:
            last = run.close_ticket(ticket)
            if last and self._live is run:
                self._live = None
        if last:
            run.stop()

    def close(self) -> None:
        """Nothing to release: each generate() call owns its connections and closes them when it ends."""

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Ticket:
    """One call's share of a run: how many results it waits for, and the queue they come back on."""

    def __init__(self, expected: int):
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.expected = expected
        self.unconsumed = 0  # delivered to `out` and not yet taken: each holds a backpressure slot
        self.closed = False  # its caller is gone: its queued requests are skipped, late results dropped


class _Run:
    """An event loop in a worker thread sending the requests of one or more calls (tickets), oldest first, through
    one pool of `max_concurrency` workers; each ticket's results go to its own thread-safe queue.

    Results cross to the consumer's thread in batches: everything that completed in one pass of the event loop
    goes as one list. Each crossing wakes the consumer, which must take the GIL from the loop thread; on a
    saturated machine every such hand-off can stall the loop for an OS scheduling slice, so fewer is better.
    """

    def __init__(self, gen: OpenAIGenerator, base_url: str, api_key: str | None):
        self.gen = gen
        self.base_url = base_url
        self.api_key = api_key
        self.endpoint = retry.redact_url(base_url)
        self.pending: collections.deque[tuple[_Ticket, SampleRun]] = collections.deque()
        self.rng = random.Random()  # jitter only: needs no reproducibility
        self.last_success = float("-inf")
        self.retries_spent = 0
        self.total = 0  # requests added, over all tickets
        self.completed = 0
        self._tickets: list[_Ticket] = []
        self._closing = False  # no ticket open any more, or the run failed: add() refuses
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self._batch: list[tuple[_Ticket, GenerationRequest, GenerationResult]] | None = None
        self._outstanding = 0  # samples sent and not yet taken by a consumer
        self._sending = 0  # samples sent and not yet answered
        self._waiting = 0  # workers waiting for a slot
        self._slot_freed = asyncio.Event()  # set (from the loop) when consumed() frees a slot someone waits for
        self._work = asyncio.Event()  # set (from the loop) when add() queued requests for idle workers
        self._in_flight = 0  # requests waiting for the server now
        self.last_answer = time.monotonic()  # when the server last answered anything (the hang watchdog's clock)

    # -- from the callers' threads --------------------------------------------------------------------------

    def add(self, reqs: list[GenerationRequest]) -> _Ticket | None:
        """Queue a call's requests behind those already queued; None when the run is stopping."""
        with self._lock:
            if self._closing:
                return None
            ticket = _Ticket(len(reqs))
            self._tickets.append(ticket)
            self.total += len(reqs)
            self.pending.extend((ticket, run) for run in self.gen.runs(reqs))
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed in between: the run is stopping anyway
                loop.call_soon_threadsafe(self._work.set)
        return ticket

    def close_ticket(self, ticket: _Ticket) -> bool:
        """The ticket's caller is done; its unconsumed results give their slots back. True when no ticket is open
        any more (the run then refuses new ones and should be stopped)."""
        with self._lock:
            if not ticket.closed:
                ticket.closed = True
                self._free_locked(ticket.unconsumed)
                ticket.unconsumed = 0
                self._tickets.remove(ticket)
            if not self._tickets:
                self._closing = True
            return self._closing and not self._tickets

    def consumed(self, ticket: _Ticket) -> None:
        """From the consumer's thread: one result was taken (and, in a round, handed to the result cache)."""
        with self._lock:
            ticket.unconsumed -= 1
            self._free_locked(1)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="synthflow-openai", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel what is still in flight and wait for the loop's thread."""
        self.cancel()
        if self._thread is not None:
            self._thread.join()

    def _free_locked(self, n: int) -> None:
        self._outstanding -= n
        if n and self._waiting and self._loop is not None and not self._loop.is_closed():
            self._waiting = 0  # one wake-up for all of them; each takes its slot or registers again
            self._loop.call_soon_threadsafe(self._slot_freed.set)

    def _take_slots(self, n: int) -> bool:
        """Take n slots, or register as waiting for one to be freed (one atomic step, so a slot freed in between is
        never missed).

        Two bounds: at most `max_concurrency` samples in flight, and at most `max_concurrency + result_buffer`
        sent and not yet taken by their consumer. The buffer is what lets a finished worker send its next request
        at once while its result waits for the consumer's thread: with none (in flight + waiting <= max_concurrency)
        each waiting result kept a request from going out, and during E1's rounds on 2 saturated cores 19.7-27.9 of
        32 were in flight on average; with it, 31.1-31.8 (docs/generation.md, "E1, fourth pass")."""
        gen = self.gen
        k = min(n, gen.max_concurrency)  # a run larger than the pool still starts, alone
        with self._lock:
            if (
                self._sending + k <= gen.max_concurrency
                and self._outstanding + k <= gen.max_concurrency + gen.result_buffer
            ):
                self._sending += n
                self._outstanding += n
                return True
            self._waiting += 1
            return False

    def _answered(self, n: int) -> None:
        """On the loop: n samples came back (or were skipped); their in-flight slots are free."""
        with self._lock:
            self._sending -= n
            wake = self._waiting > 0
            self._waiting = 0
        if wake:
            self._slot_freed.set()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - hand anything unexpected to the consumers instead of losing it
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Every open ticket's caller gets the error; later calls start a run of their own."""
        with self._lock:
            self._closing = True
            self._failure = exc
            tickets = list(self._tickets)
        for t in tickets:
            t.out.put(exc)

    def cancel(self) -> None:
        """Stop sending (every caller finished, stopped early or raised)."""
        with self._lock:
            self._cancelled = True
            if self._loop is not None and self._task is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._task.cancel)

    # -- on the loop --------------------------------------------------------------------------------------------

    async def _main(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        gen = self.gen
        client = openai.AsyncOpenAI(
            base_url=self.base_url,
            # A local server without --api-key accepts anything; the client insists on some key.
            api_key=self.api_key or "EMPTY",
            max_retries=0,
            timeout=gen.timeout_s,
        )
        async with client:
            workers = [asyncio.create_task(self._worker(client)) for _ in range(gen.max_concurrency)]
            tasks = [*workers, asyncio.create_task(self._watchdog(client))]
            try:
                await asyncio.gather(*tasks)  # ends by cancellation (stop) or an error
            except EndpointUnavailable as exc:
                self._flush()
                self._fail(exc)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._flush()

    async def _watchdog(self, client: openai.AsyncOpenAI) -> None:
        """Raise EndpointUnavailable when requests are in flight and the server has answered nothing (completion,
        HTTP error or probe) for `hung_after_s`: a stopped process keeps its socket open, so connections succeed
        and only each request's own timeout would end them."""
        gen = self.gen
        if gen.hung_after_s <= 0:
            return
        tick = min(1.0, gen.hung_after_s / 10)
        probe_after = gen.hung_after_s / 4
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._in_flight == 0:
                self.last_answer = now  # nothing asked, nothing owed
                continue
            silent = now - self.last_answer
            if silent >= gen.hung_after_s:
                raise EndpointUnavailable(
                    self.endpoint,
                    f"{retry.TIMEOUT}: {self.endpoint}: no answer for {silent:.0f}s to {self._in_flight} request(s) "
                    f"in flight or to GET /models probes: the server accepts connections but does not respond "
                    "(stopped or hung?)",
                    retries=self.retries_spent,
                    unfinished=self.total - self.completed,
                )
            if silent >= probe_after:
                await self._probe(client, min(gen.probe_timeout_s, max(0.5, gen.hung_after_s - silent)))

    async def _probe(self, client: openai.AsyncOpenAI, timeout_s: float) -> None:
        """GET /models (every OpenAI-compatible server has it): any HTTP answer means the process is alive."""
        try:
            await client.with_options(timeout=timeout_s).models.with_raw_response.list()
        except openai.APIStatusError:
            pass
        except openai.APIError:  # timeout, refused, reset: no answer
            return
        self.last_answer = time.monotonic()

    def _next(self) -> tuple[_Ticket, SampleRun] | None:
        with self._lock:
            while self.pending:
                ticket, run = self.pending.popleft()
                if not ticket.closed:
                    return ticket, run
            return None

    async def _worker(self, client: openai.AsyncOpenAI) -> None:
        # A fixed pool of workers pulling from one queue bounds concurrency like a semaphore would, without
        # creating a task per request for rounds of 100k requests; idle workers wait for add().
        while True:
            item = self._next()
            if item is None:
                self._work.clear()
                if self.pending:
                    continue
                await self._work.wait()
                continue
            ticket, run = item
            # Backpressure: never more than max_concurrency + result_buffer results sent and not yet taken by their
            # consumers. A slow consumer (a loaded machine) would otherwise let results pile up unstored, and a killed
            # round would re-send them all; with it, a resumed round re-sends at most that many. Woken by
            # consumed() rather than polling: on a saturated machine a polling loop keeps this thread runnable,
            # which costs the consumer's thread its wake-ups and the server its CPU.
            while not self._take_slots(run.n):
                self._slot_freed.clear()
                await self._slot_freed.wait()
            if ticket.closed:
                with self._lock:
                    self._free_locked(run.n)
                self._answered(run.n)
                continue
            try:
                results = await self._one(client, run)
            finally:
                self._answered(run.n)
            if self._batch is None:
                self._batch = []
                asyncio.get_running_loop().call_soon(self._flush)
            self._batch.extend((ticket, req, res) for req, res in zip(run.requests, results, strict=True))

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if not batch:
            return
        by_ticket: dict[int, tuple[_Ticket, list[tuple[GenerationRequest, GenerationResult]]]] = {}
        with self._lock:
            for ticket, req, res in batch:
                if ticket.closed:
                    self._free_locked(1)  # nobody takes it any more
                    continue
                ticket.unconsumed += 1
                by_ticket.setdefault(id(ticket), (ticket, []))[1].append((req, res))
        for ticket, items in by_ticket.values():
            ticket.out.put(items)

    async def _one(self, client: openai.AsyncOpenAI, run: SampleRun) -> list[GenerationResult]:
        """The results of one run (one request), one per sample; a failure is every sample's failure."""
        gen = self.gen
        keys = [r.key(gen.model_id) for r in run.requests]
        first = run.requests[0]
        body = gen.request_body(first, n=run.n, seed=run.seed) if gen.supports_n else gen.request_body(first)
        retries = 0
        first_failure_at: float | None = None

        def failed(message: str) -> list[GenerationResult]:
            return [GenerationResult(key=k, text="", model=gen.model_id, error=message, retries=retries) for k in keys]

        while True:
            gen.usage.server_requests += 1
            results, failure = await self._attempt(client, keys, body)
            if results is not None:
                self.last_success = time.monotonic()
                self.completed += len(results)
                for result in results:
                    result.retries = retries
                return results
            assert failure is not None
            if first_failure_at is None:
                # When the failure came back, not when the attempt went out: a request that was in flight when the
                # server died must not count the successes of its neighbours just before the crash as "alive".
                first_failure_at = time.monotonic()
            message = f"{failure.kind}: {self.endpoint}: {failure.detail}"
            if failure.status in _FATAL_STATUSES:
                raise EndpointUnavailable(
                    self.endpoint, message, retries=self.retries_spent, unfinished=self.total - self.completed
                )
            if failure.kind not in retry.RETRYABLE:
                return failed(message)
            if retries >= gen.max_retries:
                message = f"{message} (after {retries} retries)"
                if self.last_success < first_failure_at:
                    # Nothing anywhere succeeded while this sample kept failing: the server is gone, not the sample.
                    raise EndpointUnavailable(
                        self.endpoint,
                        message,
                        retries=self.retries_spent,
                        unfinished=self.total - self.completed,
                    )
                return failed(message)
            retries += 1
            self.retries_spent += 1
            delay = gen.backoff.delay(retries, self.rng, failure.retry_after_s)
            log.debug("retry %d of %s in %.2fs after %s", retries, keys[0], delay, message)
            await asyncio.sleep(delay)

    async def _attempt(
        self, client: openai.AsyncOpenAI, keys: list[str], body: dict[str, Any]
    ) -> tuple[list[GenerationResult] | None, _Failure | None]:
        known = {k: v for k, v in body.items() if k in _CREATE_PARAMS}
        extra = {k: v for k, v in body.items() if k not in _CREATE_PARAMS}
        self._in_flight += 1
        self.gen.peak_in_flight = max(self.gen.peak_in_flight, self._in_flight)
        try:
            # The raw response, read with json.loads: building the client's pydantic models for every completion
            # costs CPU that, on a small machine, the server itself is short of.
            raw = await client.chat.completions.with_raw_response.create(**known, extra_body=extra or None)
            self.last_answer = time.monotonic()
        except openai.APITimeoutError:
            return None, _Failure(retry.TIMEOUT, f"no response within {self.gen.timeout_s:g}s")
        except openai.APIConnectionError as exc:  # refused, reset, closed mid-response
            cause = exc.__cause__ or exc
            return None, _Failure(retry.CONNECTION, f"{type(cause).__name__}: {cause}")
        except openai.APIStatusError as exc:
            self.last_answer = time.monotonic()
            return None, _Failure(
                retry.kind_for_status(exc.status_code),
                f"HTTP {exc.status_code}: {_error_text(exc)}",
                retry_after_s=retry.parse_retry_after(exc.response.headers.get("retry-after")),
                status=exc.status_code,
            )
        except openai.APIError as exc:
            return None, _Failure(retry.INVALID_RESPONSE, f"{type(exc).__name__}: {exc}")
        finally:
            self._in_flight -= 1
        try:
            return _results(json.loads(raw.content), keys, self.gen.model_id, body.get("max_tokens")), None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return None, _Failure(retry.INVALID_RESPONSE, f"unreadable response ({type(exc).__name__}: {exc})")


def _results(
    data: dict[str, Any], keys: list[str], model: str, max_tokens: int | None = None
) -> list[GenerationResult]:
    """One result per key from a chat completions response with len(keys) choices (matched by `index`).

    The usage is the request's: a choice stopped by `length` used max_tokens; the rest of the completion tokens go
    to the other choices by text length, none above max_tokens."""
    choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
    if len(choices) != len(keys):
        raise ValueError(f"{len(choices)} choices for n={len(keys)} (a server without `n`? set server_n: false)")
    usage = data.get("usage") or {}
    texts, thoughts = [], []
    for choice in choices:
        message = choice["message"]
        text = message.get("content") or ""
        # A reasoning parser on the server (vLLM --reasoning-parser) returns the reasoning apart; keep it the way
        # reasoning models write it inline, so the cache stores one text and llm columns split it off again.
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        thoughts.append(len(reasoning))
        texts.append(f"<think>{reasoning}</think>{text}" if reasoning else text)
    details = usage.get("completion_tokens_details") or {}
    server_reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    n = len(keys)
    prompt = split_count(int(usage.get("prompt_tokens") or 0), [1] * n)
    completion = _completion_split(
        int(usage.get("completion_tokens") or 0), texts, [c.get("finish_reason") for c in choices], max_tokens
    )
    reasoning_split = (
        split_count(int(server_reasoning), thoughts) if server_reasoning is not None else [None] * n
    )
    return [
        GenerationResult(
            key=key,
            text=text,
            model=model,
            prompt_tokens=prompt[i],
            completion_tokens=completion[i],
            finish_reason=choice.get("finish_reason"),
            reasoning_tokens=reasoning_split[i],
        )
        for i, (key, text, choice) in enumerate(zip(keys, texts, choices, strict=True))
    ]


def _completion_split(
    total: int, texts: list[str], finishes: list[str | None], max_tokens: int | None
) -> list[int]:
    cut = [i for i, f in enumerate(finishes) if f == "length"] if max_tokens else []
    if not cut or len(cut) * max_tokens > total:
        return split_count(total, [len(t) for t in texts], max_tokens)
    out = [max_tokens if i in cut else 0 for i in range(len(texts))]
    rest = [i for i in range(len(texts)) if i not in cut]
    if not rest:
        out[-1] += total - sum(out)
        return out
    for i, share in zip(rest, split_count(total - sum(out), [len(texts[i]) for i in rest], max_tokens), strict=True):
        out[i] = share
    return out


# Body fields that chat.completions.create() takes by name; anything else (top_k, min_tokens, ...) is a server
# extension and travels in extra_body.
_CREATE_PARAMS = frozenset(
    {
        "model", "messages", "n", "temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty",
        "seed", "stop", "response_format",
    }
)  # fmt: skip


def _error_text(exc: openai.APIStatusError, limit: int = 300) -> str:
    """The server's own message (OpenAI shape: {"error": {"message": ...}}), else the start of the body."""
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:limit]
    try:
        return exc.response.text[:limit]
    except Exception:  # noqa: BLE001 - a streamed/closed body: the status line is all we have
        return exc.message[:limit]
