"""Running requests through a generator with the result cache in front of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from synthflow.generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    GeneratorWrapper,
    Usage,
    sample_runs,
    supports_n,
)
from synthflow.stages.cache import ResultCache


@dataclass
class GenerationStats:
    requested: int = 0
    sent: int = 0  # samples sent
    server_requests: int = 0  # requests they took: fewer than `sent` where the backend asks for n at once
    from_cache: int = 0
    usage: Usage = field(default_factory=Usage)

    def merge(self, other: GenerationStats) -> None:
        self.requested += other.requested
        self.sent += other.sent
        self.server_requests += other.server_requests
        self.from_cache += other.from_cache
        u, o = self.usage, other.usage
        u.requests += o.requests
        u.prompt_tokens += o.prompt_tokens
        u.completion_tokens += o.completion_tokens
        u.retries += o.retries
        u.wall_seconds += o.wall_seconds
        for k, v in o.failures.items():
            u.failures[k] = u.failures.get(k, 0) + v


def run_generation(
    requests: Sequence[GenerationRequest],
    generator: Generator,
    cache: ResultCache,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[GenerationResult], GenerationStats]:
    """Results in the order of `requests`; only requests with no cached result reach the generator.

    Each result goes to the cache the moment it arrives (flushed in chunks), so a killed run loses at most one
    chunk of work.

    Every sample has its own cache key (model, messages, sampling, schema, seed, sample index), also where the
    backend asks its server for the n samples of a prompt in one request (supports_n): all n cached sends
    nothing; a partial miss sends only the missing samples, each unbroken range of sample indexes as one request
    (samples 2..3 of 4 missing: one request with n=2, seeded so they are the samples 2 and 3 a full request would
    have drawn on vLLM).
    """
    model = generator.model_id
    keys = [r.key(model) for r in requests]
    found, todo = split_cached(requests, keys, cache)
    stats = GenerationStats(
        requested=len(requests),
        from_cache=len(found),
        sent=len(todo),
        server_requests=len(sample_runs(todo)) if supports_n(generator) else len(todo),
    )
    start = time.perf_counter()
    try:
        for req, result in generator.generate(todo, progress=progress):
            result.key = req.key(model)
            found[result.key] = result
            stats.usage.add(result)
            cache.put(result)
    finally:
        cache.flush()
        stats.usage.wall_seconds = time.perf_counter() - start
    return [found[k] for k in keys], stats


def split_cached(
    requests: Sequence[GenerationRequest], keys: Sequence[str], cache: ResultCache
) -> tuple[dict[str, GenerationResult], list[GenerationRequest]]:
    """(the cached results by key, the requests still to send: one per key, in order)."""
    found: dict[str, GenerationResult] = {}
    missing: dict[str, GenerationRequest] = {}
    for req, key in zip(requests, keys, strict=True):
        hit = cache.get(key)
        if hit is not None:
            found[key] = hit
        else:
            missing.setdefault(key, req)
    return found, list(missing.values())


def prefetch_uncached(
    requests: Sequence[GenerationRequest], generator: Generator, cache: ResultCache
) -> Callable[[], None] | None:
    """Queue the uncached `requests` on a generator that can take them early (the openai backend's prefetch:
    behind what it is sending now), for the run_generation() call that will ask for them; returns what drops them
    again, or None. Looks through wrappers (budget meter, caches) for `prefetch`."""
    inner: object = generator
    while not hasattr(inner, "prefetch") and isinstance(inner, GeneratorWrapper):
        inner = inner.wrapped
    prefetch = getattr(inner, "prefetch", None)
    if prefetch is None:
        return None
    model = generator.model_id
    _, todo = split_cached(requests, [r.key(model) for r in requests], cache)
    return prefetch(todo) if todo else None


class CachingGenerator(GeneratorWrapper):
    """A generator with the result cache in front: what verifiers (LLM judges, self-consistency) call, so that
    re-verifying a round re-sends nothing that already has an answer."""

    def __init__(self, inner: Generator, cache: ResultCache):
        super().__init__(inner)
        self.inner = inner
        self.cache = cache
        self.supports_n = supports_n(inner)

    def generate(self, requests, progress=None):
        requests = list(requests)
        results, _ = run_generation(requests, self.inner, self.cache, progress=progress)
        yield from zip(requests, results, strict=True)
