"""Embedding-space diversity: the seed map, gap filling, semantic dedup, coverage metrics and the coverage plot.

Plain numpy/pandas; no Dagster. See docs/diversity.md for how a round uses these.
"""

from synthflow.stages.diversity.dedup import DedupResult, semantic_dedup
from synthflow.stages.diversity.gaps import allocate, deficits, target_shares
from synthflow.stages.diversity.index import Nearest, SimilarityIndex, within_batch
from synthflow.stages.diversity.metrics import (
    cluster_shares,
    coverage_metrics,
    distinct_n,
    kl_divergence,
    near_duplicate_rate,
    share_ratio,
    under_covered,
    vendi_score,
    vendi_score_exact,
)
from synthflow.stages.diversity.planner import GapPlanner, seed_map_from_frame
from synthflow.stages.diversity.seedmap import SeedMap, assign, build_seed_map, choose_k

__all__ = [
    "DedupResult",
    "GapPlanner",
    "Nearest",
    "SeedMap",
    "SimilarityIndex",
    "allocate",
    "assign",
    "build_seed_map",
    "choose_k",
    "cluster_shares",
    "coverage_metrics",
    "coverage_plot",
    "deficits",
    "distinct_n",
    "kl_divergence",
    "near_duplicate_rate",
    "seed_map_from_frame",
    "semantic_dedup",
    "share_ratio",
    "target_shares",
    "under_covered",
    "vendi_score",
    "vendi_score_exact",
    "within_batch",
]


def __getattr__(name: str):
    # matplotlib is slow to import; only the coverage asset needs it.
    if name == "coverage_plot":
        from synthflow.stages.diversity.plots import coverage_plot

        return coverage_plot
    raise AttributeError(name)
