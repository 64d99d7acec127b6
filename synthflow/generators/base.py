"""The one generator protocol every backend implements.

A backend takes a list of `GenerationRequest`s and yields a `GenerationResult` for each sample as soon as it is
known, so the caller can store results in chunks while the rest of the round is still running (resume depends on
it). Backends never see the store, the spec or Dagster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


def sample_seed(seed: int, sample_index: int) -> int:
    """The sampling seed of one sample, the same in every backend: reproducible, different for every
    (seed, sample_index). Hashing (rather than seed + index) keeps neighbouring seeds from sharing samples (seed 1
    index 1 vs seed 2 index 0); 31 bits because hosted OpenAI-compatible APIs reject larger seeds."""
    digest = hashlib.sha256(f"{seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters shared by every backend (names follow vLLM / OpenAI)."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = -1
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to generate. `n` samples of a prompt are `n` requests with sample_index 0..n-1."""

    messages: tuple[tuple[str, str], ...]  # ((role, content), ...)
    sampling: SamplingParams
    seed: int
    sample_index: int = 0
    json_schema: dict[str, Any] | None = None  # structured output when set
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def key(self, model: str) -> str:
        """Hash of (model, messages, sampling params, schema, seed, sample index): the cache and resume key."""
        payload = {
            "model": model,
            "messages": [list(m) for m in self.messages],
            "sampling": self.sampling.as_dict(),
            "schema": self.json_schema,
            "seed": self.seed,
            "sample_index": self.sample_index,
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class GenerationResult:
    """What came back for one request. `error` is set (and `text` empty) when the request failed for good."""

    key: str
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    retries: int = 0
    # What the server reported (usage.completion_tokens_details.reasoning_tokens); None when it reported nothing,
    # and callers then estimate the reasoning's share of completion_tokens themselves.
    reasoning_tokens: int | None = None


@dataclass
class Usage:
    """Counted by every backend, reported in p/candidates metadata."""

    requests: int = 0  # samples (results), whatever number of server requests they took
    server_requests: int = 0  # requests sent to the server or engine (one per run with server-side n)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def add(self, result: GenerationResult) -> None:
        self.requests += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.retries += result.retries
        if result.error:
            kind = result.error.split(":", 1)[0]
            self.failures[kind] = self.failures.get(kind, 0) + 1


ProgressCallback = Callable[[int, int], None]  # (done, total)


def supports_n(generator: object) -> bool:
    """Whether a generator asks its server for the n samples of a prompt in one request (vLLM `n`, OpenAI `n`).
    Backends say so with a `supports_n = True` attribute; without it they get one seeded request per sample.
    A wrapper without the attribute (budget metering) answers for the generator it wraps (`inner`)."""
    value = getattr(generator, "supports_n", None)
    if value is None:
        inner = getattr(generator, "inner", None)
        return inner is not None and inner is not generator and supports_n(inner)
    return bool(value)


@dataclass(frozen=True)
class SampleRun:
    """Samples of one prompt with consecutive sample indexes, sent as ONE server request with n = len(requests).

    The server seeds sample c of a request with `seed + c` (vLLM's rule for n > 1), so the run's seed is
    sample_seed(seed, 0) + its first sample index: sample i of a prompt has the same server seed whether it came
    in a run of all n or alone (a resumed round that misses only some samples sends just those, as shorter runs).
    """

    requests: tuple[GenerationRequest, ...]

    @property
    def n(self) -> int:
        return len(self.requests)

    @property
    def seed(self) -> int:
        first = self.requests[0]
        return sample_seed(first.seed, 0) + first.sample_index


def sample_runs(requests: Iterable[GenerationRequest]) -> list[SampleRun]:
    """Requests grouped into runs: same messages, sampling, schema and seed, consecutive sample indexes (in the
    order the prompts first appear). A backend with server-side n sends each run as one request."""
    groups: dict[tuple, list[GenerationRequest]] = {}
    for r in requests:
        sig = (r.messages, r.sampling, json.dumps(r.json_schema, sort_keys=True), r.seed)
        groups.setdefault(sig, []).append(r)
    runs: list[SampleRun] = []
    for members in groups.values():
        members.sort(key=lambda r: r.sample_index)
        current: list[GenerationRequest] = []
        for r in members:
            if current and r.sample_index != current[-1].sample_index + 1:  # a gap, or a duplicate: a new run
                runs.append(SampleRun(tuple(current)))
                current = []
            current.append(r)
        runs.append(SampleRun(tuple(current)))
    return runs


def split_count(total: int, weights: list[int], cap: int | None = None) -> list[int]:
    """`total` split in proportion to `weights` (integers summing to `total`), none above `cap` where the total
    allows: what each of the n samples of one request gets of the usage the server reports for the whole request."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    shares[-1] += total - sum(shares)
    if cap is not None:
        excess = sum(max(0, s - cap) for s in shares)
        shares = [min(s, cap) for s in shares]
        for i in range(len(shares)):
            add = min(cap - shares[i], excess)
            shares[i] += add
            excess -= add
        shares[-1] += excess  # a total above n * cap: the server counted more than it may; keep its sum
    return shares


@runtime_checkable
class Generator(Protocol):
    """A text generation backend. `model_id` names the weights actually used (goes into provenance).

    Optional capability: `supports_n = True` (see supports_n()): the backend sends each SampleRun of the requests
    it gets as one server request with n samples, and still yields one result per request (per sample key)."""

    @property
    def model_id(self) -> str: ...

    @property
    def label(self) -> str:
        """Human label, e.g. 'transformers:Qwen/Qwen2.5-0.5B-Instruct' or 'smoke model (random weights)'."""
        ...

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        """Yield (request, result) as results arrive, in any order. Never raise for one bad sample: set error."""
        ...

    def close(self) -> None: ...


class GeneratorWrapper:
    """A generator in front of another (the request cache, the budget meter, the round's overlap worker): the
    model, the label and close are the wrapped generator's; a subclass changes `generate` only."""

    def __init__(self, wrapped: Generator):
        self.wrapped = wrapped

    @property
    def model_id(self) -> str:
        return self.wrapped.model_id

    @property
    def label(self) -> str:
        return self.wrapped.label

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        return self.wrapped.generate(requests, progress=progress)

    def close(self) -> None:
        self.wrapped.close()
