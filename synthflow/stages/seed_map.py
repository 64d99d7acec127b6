"""The seed map stage: the reference distribution the rounds steer towards, and the planner built from it.

With an embedder, the seed is embedded and clustered (stages.diversity) and rounds fill coverage gaps with the
GapPlanner; without one (the embeddings extra not installed) the map records the seed rows only and rounds draw
exemplars uniformly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from synthflow.spec import PipelineSpec
from synthflow.stages.round import PromptPlanner, UniformPlanner
from synthflow.store import Store

CLUSTERS_TABLE = "seed_map_clusters"  # stored beside p/seed_map (which holds the per-row assignments)


def embedder_or_none(factory: Callable[[], Any], spec: PipelineSpec) -> Any | None:
    """The embedder, or None when the spec turns diversity off or the embeddings extra is not installed."""
    if not spec.diversity.enabled:
        return None
    try:
        return factory()
    except ImportError:
        return None


def build(seed: pd.DataFrame, spec: PipelineSpec, embedder: Any | None) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Tables {"assignments", "clusters"} and metadata about the map."""
    if embedder is None:
        assignments = pd.DataFrame({"id": seed["_id"], "cluster": -1, "similarity": float("nan"), "rank": -1})
        return {"assignments": assignments, "clusters": pd.DataFrame()}, {
            "clusters": 0, "embedder": "none (uniform exemplars; install the embeddings extra for gap filling)",
        }
    from synthflow.stages.diversity import coverage_plot, seed_map_from_frame

    sm, vectors = seed_map_from_frame(
        seed, embedder, k=spec.diversity.clusters, random_seed=spec.generate.sampling.seed
    )
    tables = sm.to_tables()
    texts = seed.set_index(seed["_id"].astype(str))["_text"]
    summary = pd.DataFrame(
        {
            "cluster": range(sm.k),
            "size": sm.sizes,
            "share": sm.shares.round(4),
            "exemplar": [str(texts.get(str(sm.exemplars(c, 1)[0]), ""))[:90] for c in range(sm.k)],
        }
    )
    meta = {
        "clusters": sm.k,
        "embedder": getattr(embedder, "model_id", str(embedder)),
        "dimensions": sm.dim,
        "cluster_summary": summary,
        "seed_map_plot": coverage_plot(vectors, sm.labels, vectors[:0], sm.labels[:0], sm.shares, names=sm.names,
                                       title="seed clusters"),
    }
    return tables, meta


def planner(
    store: Store,
    store_name: str,
    spec: PipelineSpec,
    seed: pd.DataFrame,
    embedder: Any | None,
    synthetic: pd.DataFrame | None,
    synthetic_vectors: Any | None = None,
) -> PromptPlanner:
    """The GapPlanner over the stored seed map (synthetic rows of earlier rounds count towards the shares;
    `synthetic_vectors`: their cached embeddings, when the round has them)."""
    clusters = store.read_or_none(store_name, CLUSTERS_TABLE)
    if embedder is None or clusters is None or clusters.empty:
        return UniformPlanner(seed, spec.generate.few_shot)
    from synthflow.stages.diversity import GapPlanner, SeedMap

    sm = SeedMap.from_tables({"clusters": clusters, "assignments": store.read(store_name, "seed_map")})
    d = spec.diversity
    return GapPlanner(
        seed,
        sm,
        embedder,
        target=d.target,
        exploration=d.exploration,
        few_shot=spec.generate.few_shot,
        synthetic=synthetic,
        near_duplicate_threshold=d.near_duplicate_threshold,
        synthetic_vectors=synthetic_vectors,
    )


def coverage_extras(planner: PromptPlanner, round_index: int, plot: bool = True) -> dict[str, Any]:
    """Headline numbers and (with `plot`) the coverage plot for p/coverage (empty for the uniform planner)."""
    if not hasattr(planner, "plot"):
        return {}
    report = planner.report()
    cum = report.get("cumulative_coverage", {})
    rnd = report.get("round_coverage", {})
    out = {
        "vendi": cum.get("vendi"),
        "kl_seed_vs_synthetic": cum.get("kl_seed"),
        "under_covered_clusters": cum.get("n_under_covered"),
        "near_duplicate_rate": cum.get("near_duplicate_rate"),
        "round_vendi": rnd.get("vendi"),
        "round_under_covered_clusters": rnd.get("n_under_covered"),
    }
    if plot and cum.get("n_rows"):
        out["coverage_plot"] = planner.plot(title=f"round {round_index}: seed vs accumulated synthetic")
    return out
