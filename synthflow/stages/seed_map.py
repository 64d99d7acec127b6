"""The seed map stage: the reference distribution the rounds steer towards, and the planner built from it.

With an embedder, the seed is embedded and clustered (stages.diversity) and rounds fill coverage gaps; without
one (the embeddings extra not installed) the map records the seed rows only and rounds draw exemplars uniformly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from synthflow.spec import PipelineSpec
from synthflow.stages.round import PromptPlanner, UniformPlanner
from synthflow.store import Store


def embedder_or_none(factory: Callable[[], Any]) -> Any | None:
    try:
        return factory()
    except ImportError:
        return None


def build(
    seed: pd.DataFrame, spec: PipelineSpec, embedder: Any | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A table with one row per seed row (id, text hash, cluster) plus metadata about the map."""
    table = pd.DataFrame({"_id": seed["_id"], "_text_hash": seed["_text_hash"], "cluster": -1})
    return table, {"clusters": 0, "embedder": "none (uniform exemplars)", "seed_rows": len(seed)}


def planner(
    store: Store, store_name: str, spec: PipelineSpec, seed: pd.DataFrame, embedder: Any | None
) -> PromptPlanner:
    return UniformPlanner(seed, spec.generate.few_shot)
