"""RayGenerator on a real local Ray cluster (2 CPUs, started here) with the smoke model in every actor.

The transformers backend is per-request deterministic on CPU (see transformers_backend.py), so the Ray run must give
exactly the texts of a plain TransformersGenerator on the same requests, however the requests are chunked.
Ray starts in ~10-20 s on two busy cores and each actor imports torch and loads the model (~10 s), so the module
shares one cluster and one 2-actor generator; the tests that need a fresh generator say why.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

from synthflow.generators import make_generator  # noqa: E402
from synthflow.generators.base import GenerationRequest, SamplingParams  # noqa: E402
from synthflow.generators.errors import ModelUnavailable  # noqa: E402
from synthflow.generators.ray_backend import RayGenerator  # noqa: E402
from synthflow.profiles import load_profile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CPUS = 2


def _requests(n: int, *, offset: int = 0) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=(("system", "You write math problems."), ("user", f"Problem number {offset + i}.")),
            sampling=SamplingParams(temperature=0.9, max_tokens=12 + (i % 5)),
            seed=7,
            sample_index=i % 3,
        )
        for i in range(n)
    ]


def _texts(pairs: Any, model_id: str) -> dict[str, str]:
    return {req.key(model_id): res.text for req, res in pairs}


def _free_cpus_back(timeout: float = 20.0) -> bool:
    """Ray releases a killed actor's CPU asynchronously: wait until all CPUs are free again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= CPUS:
            return True
        time.sleep(0.2)
    return False


def test_own_ray_started_and_shut_down_model_unavailable(tmp_path: Path) -> None:
    # Runs first, before the module's cluster exists. With no Ray in the process the generator starts one, sized
    # for its actors; the actor cannot load the model, which must reach the driver as ModelUnavailable (Ray cannot
    # pickle that exception by itself, and the profile's `fallback: smoke` depends on it); and the generator must
    # shut down the Ray it started on that failure path too. Built through the registry, as a profile would be.
    assert not ray.is_initialized()
    with pytest.raises(ModelUnavailable, match="no such directory"):
        make_generator("ray", str(tmp_path / "no-model-here"), engine="transformers", num_actors=1)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_cluster(smoke_model_dir: Path) -> Iterator[None]:
    # The smoke model is built before any actor starts, so the actors load it instead of racing to build it.
    ray.init(num_cpus=CPUS, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_gen(ray_cluster: None) -> Iterator[RayGenerator]:
    gen = RayGenerator("smoke", backend="transformers", num_actors=2, backend_options={"batch_size": 8})
    yield gen
    gen.close()


def test_same_texts_as_plain_transformers(ray_gen: RayGenerator, smoke_generator: Any) -> None:
    reqs = _requests(24)
    seen: list[tuple[int, int]] = []
    out = list(ray_gen.generate(reqs, progress=lambda done, total: seen.append((done, total))))

    assert sorted(id(req) for req, _ in out) == sorted(id(r) for r in reqs)  # every request, each once
    assert all(res.error is None and res.completion_tokens > 0 for _, res in out)
    assert seen[-1] == (24, 24)
    # Same model id as the plain backend: a Ray run and a local run share cache keys.
    assert ray_gen.model_id == smoke_generator.model_id
    assert all(res.key == req.key(ray_gen.model_id) for req, res in out)
    assert _texts(out, ray_gen.model_id) == _texts(smoke_generator.generate(reqs), smoke_generator.model_id)
    assert ray_gen.label == "ray x 2 actors: smoke model (random weights)"
    assert ray_gen.usage.requests >= 24 and ray_gen.usage.completion_tokens > 0


def test_streams_chunk_by_chunk(ray_gen: RayGenerator) -> None:
    # 40 requests over 2 actors: 8 automatic chunks of 5, at most 2 in flight per actor. When the first result
    # reaches the caller only the first 4 chunks were ever sent: results stream, they are not collected first.
    chunks = lambda: sum(i["chunks"] for i in ray_gen.actor_info())  # noqa: E731
    before = chunks()
    stream = ray_gen.generate(_requests(40, offset=500))
    first = next(stream)
    assert first[1].error is None
    assert chunks() - before == 4
    assert len([first, *stream]) == 40
    assert chunks() - before == 8


def test_actors_and_engines_created_once(ray_gen: RayGenerator) -> None:
    before = {i["pid"]: i for i in ray_gen.actor_info()}
    assert len(before) == 2
    for offset in (100, 200):
        out = list(ray_gen.generate(_requests(8, offset=offset)))
        assert len(out) == 8 and all(res.error is None for _, res in out)
    after = {i["pid"]: i for i in ray_gen.actor_info()}
    assert after.keys() == before.keys()  # same processes ...
    for pid, info in after.items():
        assert info["engine"] == before[pid]["engine"]  # ... holding the same engine object
    assert sum(i["chunks"] for i in after.values()) > sum(i["chunks"] for i in before.values())


def test_dead_actor_chunks_go_to_the_live_one(ray_gen: RayGenerator, smoke_generator: Any) -> None:
    # A killed actor (as after an OOM) loses its chunks; they run again on the other actor, texts unchanged.
    ray.kill(ray_gen._actors[0])
    reqs = _requests(12, offset=300)
    out = list(ray_gen.generate(reqs))
    assert len(out) == 12 and all(res.error is None for _, res in out)
    assert _texts(out, ray_gen.model_id) == _texts(smoke_generator.generate(reqs), smoke_generator.model_id)
    assert len(ray_gen.actor_info()) == 1  # the dead one is dropped for later rounds


def test_close_leaves_no_actors(ray_gen: RayGenerator) -> None:
    handles = list(ray_gen._actors)
    ray_gen.close()
    for handle in handles:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(handle.describe.remote(), timeout=30)
    assert _free_cpus_back()
    assert ray.is_initialized()  # the test started Ray, so the generator leaves it running
    assert ray_gen.usage.requests > 0
    with pytest.raises(RuntimeError, match="closed"):
        list(ray_gen.generate(_requests(1)))


def test_ray_profile_options_fit_the_constructor() -> None:
    # The shipped profile needs a GPU cluster; here only check that its options are ones RayGenerator takes.
    profile = load_profile("ray", REPO)
    sig = inspect.signature(RayGenerator)
    for name in ("generator", "judge"):
        entry = profile.generators[name]
        assert entry.backend == "ray"
        options = dict(entry.options)
        engine = options.pop("engine")
        sig.bind(entry.model, backend=engine, **options)


def test_ray_data_embeddings_match_local(ray_cluster: None, minilm: Any) -> None:
    # Runs after the generator's actors are gone (its CPUs are free). Same vectors as the local embedder, and the
    # text-hash cache in front: texts already embedded never reach Ray again (no second Ray Data job).
    from synthflow.ray_embedding import ray_embedder

    texts = [f"A word problem about {thing} number {i}." for i, thing in enumerate(["apples", "trains"] * 10)]
    emb = ray_embedder("all-MiniLM-L6-v2", num_actors=2, device="cpu")
    assert emb.model_id == minilm.model_id  # same cache keys as a local run
    vectors = emb.encode(texts)
    assert vectors.shape == (20, 384) and emb.stats.embedded == 20
    assert np.allclose(vectors, minilm.encode(texts), atol=1e-5)
    emb.encode(texts[:5])
    assert emb.stats.embedded == 20
