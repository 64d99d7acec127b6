"""Gap filling: how far the synthetic rows are from the target share per seed cluster, and where the next prompts go.

Used in a loop inside a round:

    target = target_shares(seed_map, spec.diversity.target)
    while want_more:
        d = deficits(target, labels_so_far, seed_map.k, n_new=batch)
        clusters = allocate(batch, d, spec.diversity.exploration, rng, target=target)
        ... generate one prompt per entry of `clusters` (exemplars from that cluster), verify, embed ...
        labels_so_far = np.concatenate([labels_so_far, seed_map.assign(accepted_vectors)])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from synthflow.stages.diversity.seedmap import SeedMap

Target = str | Mapping[int | str, float]


def target_shares(seed_map: SeedMap, target: Target = "seed") -> np.ndarray:
    """Target share per cluster, summing to 1.

    "seed" matches the seed's cluster shares; "uniform" spreads evenly over the non-empty clusters; a mapping gives
    relative weights by cluster id or name, where the key "*" sets the weight of clusters not named (default 0).
    """
    sizes = seed_map.sizes.astype(float)
    if isinstance(target, str):
        if target == "seed":
            w = sizes
        elif target == "uniform":
            # An empty cluster has no exemplars to prompt with, so it cannot be a target.
            w = (sizes > 0).astype(float)
        else:
            raise ValueError(f"target must be 'seed', 'uniform' or a mapping of weights, got {target!r}")
    else:
        default = float(target.get("*", 0.0))
        w = np.full(seed_map.k, default)
        for key, weight in target.items():
            if key == "*":
                continue
            if weight < 0:
                raise ValueError(f"target weight for cluster {key!r} is negative: {weight}")
            w[seed_map.cluster_index(key)] = float(weight)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("target weights sum to zero")
    return w / total


def deficits(
    target: np.ndarray, synthetic_labels: np.ndarray, k: int | None = None, *, n_new: int = 0
) -> np.ndarray:
    """Per-cluster share deficit: target share minus synthetic share (positive = under-covered).

    With `n_new`, the shares are taken over the rows there will be after `n_new` more: the deficit then also
    asks for each cluster's fair part of the coming rows, which stops a cluster that is exactly on target from
    falling behind as the pool grows. The positive parts sum to at least n_new / (N + n_new).
    """
    target = np.asarray(target, dtype=float)
    k = len(target) if k is None else k
    if len(target) != k:
        raise ValueError(f"target has {len(target)} clusters, expected {k}")
    labels = np.asarray(synthetic_labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=k)[:k].astype(float) if len(labels) else np.zeros(k)
    denom = len(labels) + n_new
    if denom == 0:
        return target.copy()
    return target - counts / denom


def _apportion(n: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split n into integer counts proportional to weights (largest remainder; ties broken at random)."""
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    if n <= 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    quota = n * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    rest = n - int(counts.sum())
    if rest:
        remainder = quota - counts
        # Random jitter below any real difference of remainders, so ties do not always favour low ids.
        order = np.lexsort((rng.random(len(w)), -remainder))
        counts[order[:rest]] += 1
    return counts


def allocate(
    n_prompts: int,
    deficits: np.ndarray,
    exploration: float = 0.1,
    rng: np.random.Generator | None = None,
    *,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Target cluster for each of `n_prompts` prompts, shuffled.

    A fraction `exploration` is spread by `target` (uniformly when None) so no cluster is starved; the rest goes
    to clusters in proportion to their positive deficit, or by target when nothing is under-covered.
    """
    if not 0 <= exploration <= 1:
        raise ValueError(f"exploration must be in [0, 1], got {exploration}")
    rng = rng if rng is not None else np.random.default_rng()
    d = np.asarray(deficits, dtype=float)
    k = len(d)
    spread = np.ones(k) if target is None else np.asarray(target, dtype=float)
    if len(spread) != k:
        raise ValueError(f"target has {len(spread)} clusters, deficits {k}")
    n_explore = int(rng.binomial(n_prompts, exploration)) if 0 < exploration < 1 else round(n_prompts * exploration)
    gap = np.clip(d, 0, None)
    steer = gap if gap.sum() > 1e-12 else spread
    counts = _apportion(n_prompts - n_explore, steer, rng) + _apportion(n_explore, spread, rng)
    out = np.repeat(np.arange(k, dtype=np.int64), counts)
    rng.shuffle(out)
    return out
