"""Dagster resources: the store, generators and embedders named in a resource profile.

Each generator resource creates its backend once per resource lifetime (per run/step process), never per call:
a vLLM engine or a loaded model is expensive.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from synthflow.generators import Generator, make_generator
from synthflow.profiles import EmbedderProfile, GeneratorProfile, Profile
from synthflow.spec import Price
from synthflow.store import Store


@dataclass(frozen=True)
class ResourceKeys:
    """Resource keys of one profile: `synthflow_<profile>_store`, `..._gen_<name>`, `..._embed_<name>`, `..._io`.

    The profile's name is in every key, so pipelines on different profiles sit side by side in one code location,
    and nothing claims a host's own keys (`io_manager` above all).
    """

    profile: str

    @property
    def _ns(self) -> str:
        return "synthflow_" + re.sub(r"[^A-Za-z0-9_]", "_", self.profile)

    @property
    def store(self) -> str:
        return f"{self._ns}_store"

    @property
    def io_manager(self) -> str:
        return f"{self._ns}_io"

    def generator(self, name: str) -> str:
        return f"{self._ns}_gen_{name}"

    def embedder(self, name: str) -> str:
        return f"{self._ns}_embed_{name}"


class StoreResource(dg.ConfigurableResource):
    """The versioned Parquet store (any fsspec URL)."""

    root: str

    def get(self) -> Store:
        return Store(self.root)


class GeneratorResource(dg.ConfigurableResource):
    """A generation backend from a profile entry. `fallback: smoke` runs on the smoke model when `model` can't load."""

    backend: str
    model: str
    fallback: str | None = None
    options_json: str = "{}"
    price_json: str = "{}"  # the profile's `price` (USD per million tokens)

    _generator: Generator | None = PrivateAttr(default=None)
    _fallback_reason: str | None = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, p: GeneratorProfile) -> GeneratorResource:
        return cls(
            backend=p.backend,
            model=p.model,
            fallback=p.fallback,
            options_json=json.dumps(p.options, sort_keys=True),
            price_json=p.price.model_dump_json(),
        )

    @property
    def price(self) -> Price:
        return Price.model_validate_json(self.price_json)

    @property
    def fallback_reason(self) -> str | None:
        """Set when the configured model could not be loaded and the smoke model runs instead."""
        return self._fallback_reason

    def get(self, log: Any | None = None) -> Generator:
        if self._generator is None:
            self._generator = self._create(log)
        return self._generator

    def _create(self, log: Any | None) -> Generator:
        from synthflow.generators.errors import ModelUnavailable

        options = json.loads(self.options_json)
        try:
            return make_generator(self.backend, self.model, **options)
        except ModelUnavailable as e:
            if self.fallback != "smoke":
                raise
            self._fallback_reason = (
                f"The model {self.model!r} could not be loaded ({e.reason}), so this run uses the smoke model "
                "(random weights: it tests the plumbing, not quality)."
            )
            if log is not None:
                log.warning(self._fallback_reason)
            return make_generator("smoke", "smoke")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None


class EmbedderResource(dg.ConfigurableResource):
    """A sentence-transformers embedder with a text-hash cache in the store."""

    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    device: str = "auto"
    cache_url: str | None = None

    _embedder: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, p: EmbedderProfile, cache_url: str | None) -> EmbedderResource:
        return cls(model=p.model, batch_size=p.batch_size, device=p.device, cache_url=cache_url)

    def get(self) -> Any:
        if self._embedder is None:
            from synthflow.embedding import Embedder

            self._embedder = Embedder(
                self.model, batch_size=self.batch_size, device=self.device, cache_url=self.cache_url
            )
        return self._embedder


# One set of resource objects per profile content: Definitions.merge accepts a key twice only for the very same
# object, so every pipeline built on a profile must share them.
_BY_PROFILE: dict[str, dict[str, Any]] = {}


def resources_for_profile(profile: Profile) -> dict[str, Any]:
    """Store, IO manager, generators and embedders of a profile under its `ResourceKeys`."""
    from synthflow.dagster.io_manager import SynthflowIOManager

    root = profile.store_root()
    ident = hashlib.sha256(
        json.dumps([profile.model_dump(mode="json"), root], sort_keys=True).encode()
    ).hexdigest()
    if ident in _BY_PROFILE:
        return dict(_BY_PROFILE[ident])
    keys = ResourceKeys(profile.name)
    res: dict[str, Any] = {
        keys.store: StoreResource(root=root),
        keys.io_manager: SynthflowIOManager(root=root),
    }
    for name, g in profile.generators.items():
        res[keys.generator(name)] = GeneratorResource.from_profile(g)
    for name, e in profile.embedders.items():
        res[keys.embedder(name)] = EmbedderResource.from_profile(
            e, cache_url=f"{root.rstrip('/')}/_cache/embeddings"
        )
    _BY_PROFILE[ident] = res
    return dict(res)
