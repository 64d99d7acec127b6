"""A round's batches generate one ahead of verification: batch k+1 is generating while batch k is parsed,
verified, embedded and deduplicated.

A worker thread, not asyncio: every backend's generate() is a synchronous iterator (the openai backend runs its
own event loop in its own thread; transformers and vllm spend their time in torch or engine code that releases
the GIL), so one thread overlaps them all without making each backend async. One worker, and a lock that a
verifier's generator calls (LLM judges) take as well, so no backend is ever called from two threads at once:
vllm's LLM and a torch model are not safe for that, and neither is the result cache they write to.

Results do not depend on the mode: the round plans each batch at the same point in both (before the batch in
front of it is verified), and sequential mode (`generate.overlap: false`) only runs the same generations later,
inline, when their results are asked for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from synthflow.generators.base import Generator, GeneratorWrapper

T = TypeVar("T")
Wrap = Callable[[Generator], Generator]


class Cancelled(Exception):
    """A batch's generation stopped because the round no longer needs it."""


class _Passthrough(GeneratorWrapper):
    """A wrapper the round's code sees as the generator itself: capabilities (supports_n, usage, ...) pass through."""

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)


class _Stoppable(_Passthrough):
    """A generator that stops after the result in hand once its batch is cancelled. Every result it yielded has
    been taken (and cached) by the caller; closing the inner iterator cancels what the backend still has in
    flight."""

    def __init__(self, inner: Generator, stop: threading.Event):
        super().__init__(inner)
        self._stop = stop

    def generate(self, requests, progress=None):  # noqa: ANN001, ANN201 - the Generator protocol's signature
        if self._stop.is_set():
            raise Cancelled
        it = iter(self.wrapped.generate(requests, progress=progress))
        try:
            for pair in it:
                yield pair
                if self._stop.is_set():
                    raise Cancelled
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()


class Job(Generic[T]):
    """One batch's generation, `size` candidates: queued on the worker (overlap) or run on first result()."""

    def __init__(
        self, runner: BatchRunner, fn: Callable[[Wrap], T], size: int, on_done: Callable[[], None] | None = None
    ):
        self.size = size
        self._runner = runner
        self._fn = fn
        self._stop = threading.Event()
        self._future: Future[T] | None = None
        self._on_done = on_done  # once the job has run or was cancelled: drops what was prefetched and not taken
        self._done_lock = threading.Lock()

    def _done(self) -> None:
        with self._done_lock:
            fn, self._on_done = self._on_done, None
        if fn is not None:
            fn()

    def _run(self) -> T:
        if self._stop.is_set():
            self._done()
            raise Cancelled
        with self._runner.lock:
            start = time.perf_counter()
            try:
                return self._fn(lambda gen: _Stoppable(gen, self._stop))
            finally:
                # Jobs run one at a time, so summed durations are the time with a request in flight.
                self._runner.busy_s += time.perf_counter() - start
                self._done()

    def result(self) -> T:
        return self._future.result() if self._future is not None else self._run()

    def cancel(self) -> None:
        self._stop.set()
        if self._future is not None and self._future.cancel():  # one that has not started never runs
            self._done()


class BatchRunner:
    """Runs a round's batch generations one at a time, in the order submitted. With `overlap` they run in one
    worker thread as soon as they are submitted; without it each runs when its result is first asked for."""

    def __init__(self, overlap: bool):
        self.overlap = overlap
        self.lock = threading.Lock()
        self.busy_s = 0.0  # seconds some batch was generating
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="synthflow-batch") if overlap else None
        self._jobs: list[Job[Any]] = []

    def submit(self, fn: Callable[[Wrap], T], size: int, on_done: Callable[[], None] | None = None) -> Job[T]:
        """`fn(wrap)` generates the batch; it passes every generator it calls through `wrap`, which lets a
        cancelled batch stop early. `on_done` runs once the job has run or was cancelled."""
        job = Job(self, fn, size, on_done)
        if self._pool is not None:
            job._future = self._pool.submit(job._run)
            self._jobs.append(job)
        return job

    def guard(self, generators: Mapping[str, Generator]) -> Mapping[str, Generator]:
        """The generators verifiers call, serialized with the batches (the same mapping when nothing overlaps)."""
        return _Locked(generators, self.lock) if self.overlap else generators

    def close(self) -> None:
        """Cancel what is still queued or running (the batch planned past the round's stop) and wait for the
        worker. A cancelled batch's errors do not matter any more: nothing reads its results."""
        if self._pool is None:
            return
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            if job._future is not None:
                with contextlib.suppress(Cancelled, CancelledError, Exception):
                    job._future.result()
        self._pool.shutdown(wait=True)


def prepare_verifiers(verifiers: Sequence[Any], ctx: Any) -> None:
    """The verifiers' round set-up (a `prepare(ctx)` attribute: the dedup index of the reference rows), run on the
    round's thread while the first batch generates instead of inside that batch's verification. The state it
    builds is the one the first verification would build, so results do not change."""
    for verifier in verifiers:
        prepare = getattr(verifier, "prepare", None)
        if prepare is not None:
            prepare(ctx)


class _Locked(Mapping[str, Generator]):
    def __init__(self, inner: Mapping[str, Generator], lock: threading.Lock):
        self._inner = inner
        self._lock = lock

    def __getitem__(self, name: str) -> Generator:
        with self._lock:  # lazily built generators (session._LazyGenerators) are made under the lock too
            return _LockedGenerator(self._inner[name], self._lock)

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


class _LockedGenerator(_Passthrough):
    def __init__(self, inner: Generator, lock: threading.Lock):
        super().__init__(inner)
        self._lock = lock

    def generate(self, requests, progress=None):  # noqa: ANN001, ANN201 - the Generator protocol's signature
        # Taken whole under the lock: a half-read iterator must not hold it across the caller's own work.
        with self._lock:
            out = list(self.wrapped.generate(list(requests), progress=progress))
        yield from out
