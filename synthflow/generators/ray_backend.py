"""Data parallelism over Ray: a round's requests are sharded over actors that each hold one engine of any backend.

Each actor builds its engine once, with `make_generator(backend, model, **backend_options)`, and keeps it for the
generator's lifetime: loading weights or starting vLLM costs far more than a round's worth of chunk round trips.
The driver (the process that calls `generate`, i.e. the Dagster step) cuts the requests into chunks and keeps two
chunks in flight per actor, one running and one queued, so an actor never waits on the driver; `ray.wait` hands
back whichever chunk finishes first, so results stream to the caller (and its cache) chunk by chunk, and faster
actors simply take more chunks.

Failures follow the protocol: one bad sample is an error on that sample (set by the inner backend). A dead actor
(OOM, lost node) is the actor's fault, not the chunk's: its chunk goes once more to a live actor, and only a chunk
that kills a second actor comes back as per-request errors (not cached, so a rerun tries them again). When the
inner backend raises for a whole chunk (an endpoint that is down), the results it made before are yielded, then
the same exception is raised here.

`model_id` is the inner engine's, so request keys, and therefore cached results, are shared with a run of the same
backend without Ray.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from synthflow.generators.base import GenerationRequest, GenerationResult, ProgressCallback, Usage
from synthflow.generators.errors import EndpointUnavailable, ModelUnavailable

__all__ = ["RayGenerator"]

_IN_FLIGHT_PER_ACTOR = 2  # one chunk running, one queued behind it
_MAX_AUTO_CHUNK = 256
_CHUNKS_PER_ACTOR = 4  # auto chunk size: enough chunks for balance and streaming, few enough to batch well


@dataclass
class _Failure:
    """An exception from inside an actor, carried as plain data: many exceptions (ModelUnavailable among them)
    do not survive Ray's pickling, and the driver wants the type name to re-raise the right thing."""

    kind: str
    message: str
    trace: str
    model: str = ""
    reason: str = ""

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        return cls(
            kind=type(exc).__name__,
            message=str(exc),
            trace=traceback.format_exc(),
            model=getattr(exc, "model", "") or "",
            reason=getattr(exc, "reason", "") or "",
        )

    def exception(self, where: str) -> Exception:
        if self.kind == "ModelUnavailable":
            return ModelUnavailable(self.model, self.reason)
        if self.kind == "EndpointUnavailable":
            return EndpointUnavailable(self.message)
        return RuntimeError(f"{self.kind} in {where}: {self.message}\n{self.trace}")


class _EngineActor:
    """The body of one Ray actor: one engine, created in __init__, used for every chunk sent to this actor."""

    def __init__(self, backend: str, model: str, options: dict[str, Any], home: str | None) -> None:
        from synthflow.generators import make_generator

        if home is not None:  # set here, not by runtime_env: env_vars there would bar Ray's pre-started workers
            os.environ["SYNTHFLOW_HOME"] = home
        self._gen: Any = None
        self._failure: _Failure | None = None
        self._chunks = 0
        try:
            self._gen = make_generator(backend, model, **options)
        except Exception as exc:  # reported by describe(): an actor whose __init__ raises is just "dead"
            self._failure = _Failure.of(exc)

    def describe(self) -> dict[str, Any]:
        if self._failure is not None:
            return {"failure": self._failure}
        return {
            "model_id": self._gen.model_id,
            "label": self._gen.label,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "engine": id(self._gen),
            "chunks": self._chunks,
        }

    def generate(
        self, chunk: list[tuple[int, GenerationRequest]]
    ) -> tuple[list[tuple[int, GenerationResult]], _Failure | None]:
        """(position, result) for the chunk's requests; a failure when the engine raised part way."""
        self._chunks += 1
        model = self._gen.model_id
        # Positions by key, not by object identity: a backend may hand back copies of its requests.
        slots: dict[str, list[int]] = {}
        for pos, req in chunk:
            slots.setdefault(req.key(model), []).append(pos)
        out: list[tuple[int, GenerationResult]] = []
        try:
            for req, result in self._gen.generate([req for _, req in chunk]):
                out.append((slots[req.key(model)].pop(), result))
        except Exception as exc:
            return out, _Failure.of(exc)
        return out, None

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None


@dataclass
class _Chunk:
    items: list[tuple[int, GenerationRequest]]
    attempts: int = 0


class RayGenerator:
    """A `Generator` that shards requests over `num_actors` Ray actors, each running one `backend` engine.

    `address`: None runs on the Ray instance of this process, starting a local one (sized for the actors) when
    there is none; "auto" or "ray://host:10001" joins an existing cluster. Ray is shut down by `close()` only when
    this generator started or joined it. `runtime_env` is passed to the actors (e.g. `pip` or `py_modules` to get
    synthflow onto cluster nodes that lack it).
    """

    def __init__(
        self,
        model: str,
        *,
        backend: str = "transformers",
        num_actors: int = 2,
        num_gpus_per_actor: float = 0,
        num_cpus_per_actor: float = 1,
        address: str | None = None,
        backend_options: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        ready_timeout_s: float = 1800.0,
    ) -> None:
        if backend == "ray":
            raise ValueError("the ray backend cannot wrap itself; name the engine backend, e.g. transformers")
        if num_actors < 1:
            raise ValueError("num_actors must be >= 1")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be >= 1 (or unset for automatic)")
        self.requested = model
        self.backend = backend
        self.num_actors = int(num_actors)
        self.chunk_size = chunk_size
        self.usage = Usage()
        self._owns_ray = False
        self._closed = False
        self._actors: list[Any] = []
        self._start_ray(address, num_cpus_per_actor * self.num_actors)
        try:
            self._actors = self._spawn(
                model, backend, backend_options or {}, num_cpus_per_actor, num_gpus_per_actor, address, runtime_env
            )
            info = self._await_ready(ready_timeout_s, num_cpus_per_actor, num_gpus_per_actor)
        except BaseException:
            self.close()
            raise
        self._model_id: str = info["model_id"]
        self._inner_label: str = info["label"]

    # -- Generator protocol --------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def label(self) -> str:
        return f"ray x {self.num_actors} actors: {self._inner_label}"

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        """Yield (request, result) chunk by chunk, in the order chunks finish."""
        if self._closed:
            raise RuntimeError("RayGenerator is closed")
        if not self._actors:
            raise RuntimeError(f"all {self.num_actors} Ray actors of this generator have died")
        reqs = list(requests)
        total, done = len(reqs), 0
        t0 = time.perf_counter()
        queue = deque(self._chunks(reqs))
        live = list(self._actors)
        running: dict[Any, tuple[Any, _Chunk]] = {}  # object ref -> (actor, chunk)

        def submit(actor: Any) -> None:
            if queue:
                chunk = queue.popleft()
                chunk.attempts += 1
                running[actor.generate.remote(chunk.items)] = (actor, chunk)

        try:
            for actor in live:
                for _ in range(_IN_FLIGHT_PER_ACTOR):
                    submit(actor)
            while running:
                [ref], _ = ray.wait(list(running), num_returns=1)
                actor, chunk = running.pop(ref)
                try:
                    pairs, failure = ray.get(ref)
                except RayActorError as exc:
                    if actor in live:  # dead for good (max_restarts=0): later rounds skip it too
                        live.remove(actor)
                        self._actors.remove(actor)
                    if chunk.attempts < 2 and live:
                        queue.appendleft(chunk)
                        for other in live:  # top up: the dead actor's queued chunk may be the only work left
                            while queue and sum(a is other for a, _ in running.values()) < _IN_FLIGHT_PER_ACTOR:
                                submit(other)
                        continue
                    pairs, failure = self._actor_died(chunk, exc), None
                    if not live:  # nobody left to run the rest: report it per request, like a dead actor
                        while queue:
                            pairs += self._actor_died(queue.popleft(), exc)
                for pos, result in pairs:
                    done += 1
                    self.usage.add(result)
                    if progress is not None:
                        progress(done, total)
                    yield reqs[pos], result
                if failure is not None:
                    raise failure.exception(f"a Ray actor running {self.backend}")
                if actor in live:
                    submit(actor)
        finally:
            # The caller stopped early or something raised: drop the queued chunks (a running one finishes;
            # Ray does not interrupt a synchronous actor task).
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            self.usage.wall_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self._closed = True
        actors, self._actors = self._actors, []
        if actors:
            # Let each engine release its memory (vLLM shuts its engine core down) before the kill; a dead or
            # stuck actor is killed all the same.
            with contextlib.suppress(Exception):
                ray.get([a.close.remote() for a in actors], timeout=60)
            for a in actors:
                ray.kill(a)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    # -- helpers ---------------------------------------------------------------------------------------------------

    def actor_info(self) -> list[dict[str, Any]]:
        """What each actor reports: pid, node, engine identity, chunks served (for tests and debugging)."""
        return ray.get([a.describe.remote() for a in self._actors])

    def _start_ray(self, address: str | None, cpus_needed: float) -> None:
        if ray.is_initialized():
            return  # the process already has Ray (a test, a notebook, a Ray job): use it, and leave it be
        if address is None:
            # Just big enough for the actors: the machine may be shared, and nothing else here needs Ray CPUs.
            ray.init(num_cpus=max(1, math.ceil(cpus_needed)), include_dashboard=False)
        else:
            ray.init(address=address)
        self._owns_ray = True

    def _spawn(
        self,
        model: str,
        backend: str,
        options: dict[str, Any],
        cpus: float,
        gpus: float,
        address: str | None,
        runtime_env: dict[str, Any] | None,
    ) -> list[Any]:
        home = None
        if address is None:
            # Same machine: actors must find the same state folder (smoke model, caches) whatever the cwd and
            # environment of the raylet that started them.
            from synthflow.paths import state_dir

            home = str(state_dir())
        actor_cls = ray.remote(_EngineActor).options(
            num_cpus=cpus, num_gpus=gpus, runtime_env=runtime_env, max_restarts=0, max_concurrency=1
        )
        return [actor_cls.remote(backend, model, options, home) for _ in range(self.num_actors)]

    def _await_ready(self, timeout_s: float, cpus: float, gpus: float) -> dict[str, Any]:
        refs = [a.describe.remote() for a in self._actors]
        try:
            infos = ray.get(refs, timeout=timeout_s)
        except GetTimeoutError:
            raise RuntimeError(
                f"{self.num_actors} Ray actors ({cpus} CPU, {gpus} GPU each) were not ready after {timeout_s:.0f} s;"
                f" the cluster has {ray.cluster_resources()} in all and {ray.available_resources()} free"
            ) from None
        for info in infos:
            if "failure" in info:
                raise info["failure"].exception(f"a Ray actor creating the {self.backend} engine")
        ids = {i["model_id"] for i in infos}
        if len(ids) != 1:  # e.g. nodes with different local weights under one path: keys would not be shared
            raise RuntimeError(f"Ray actors loaded different models: {sorted(ids)}")
        return infos[0]

    def _chunks(self, reqs: list[GenerationRequest]) -> list[_Chunk]:
        size = self.chunk_size or min(
            _MAX_AUTO_CHUNK, max(1, math.ceil(len(reqs) / (self.num_actors * _CHUNKS_PER_ACTOR)))
        )
        items = list(enumerate(reqs))
        return [_Chunk(items[i : i + size]) for i in range(0, len(items), size)]

    def _actor_died(self, chunk: _Chunk, exc: RayActorError) -> list[tuple[int, GenerationResult]]:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        model = self._model_id
        return [
            (pos, GenerationResult(key=req.key(model), text="", model=model, error=f"ray_actor_died: {msg}"))
            for pos, req in chunk.items
        ]
