"""Real-vs-synthetic distance: the unbiased MMD^2 between two sets of embeddings (Gretton et al., JMLR 2012).

Kernel: RBF on unit-normalized rows, k(x, y) = exp(-||x - y||^2 / (2 h^2)), with the bandwidth h^2 set by the
median heuristic on the reference (seed/real) sample alone. Why not the cosine kernel: on unit rows it is linear,
so its MMD^2 is ||mean(x) - mean(y)||^2 and a set collapsed onto the seed's mean direction scores 0; the RBF
kernel is characteristic (MMD = 0 only for equal distributions), so it sees a narrowed set too. Why the reference
alone for the bandwidth: the pooled median would move with the synthetic rows, so the same figure would mean a
different distance each round; fixed by the seed, `max_mmd` means the same thing in every round.

Cost: both sides are subsampled (seeded) to at most `max_rows` rows, so one figure is O(max_rows^2 d).
"""

from __future__ import annotations

import numpy as np


def sample_positions(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of `size` of `n` rows drawn without replacement (all of them when size >= n)."""
    return np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)


def subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most `max_rows` rows of `x`, drawn without replacement (all of them, in order, when there are fewer)."""
    return np.asarray(x)[sample_positions(len(x), max_rows, rng)]


def _unit64(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (the samples are small; float32 rounding would show in the kernel sums)."""
    v = np.array(x, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    return np.clip(aa + bb - 2.0 * (a @ b.T), 0.0, None)


def median_bandwidth(reference: np.ndarray) -> float:
    """h^2 = median / 2 of the squared distances between distinct reference rows (the median heuristic).

    Half the median, so that k = exp(-d^2 / median) at the typical distance; 1.0 when the rows are all equal.
    """
    x = np.asarray(reference, dtype=np.float64)
    if len(x) < 2:
        return 1.0
    d2 = _sq_dists(x, x)[np.triu_indices(len(x), k=1)]
    med = float(np.median(d2))
    return med / 2.0 if med > 0 else 1.0


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None, normalize: bool = True
) -> float:
    """Unbiased MMD^2 between rows `x` (synthetic) and `y` (reference) under the RBF kernel.

    `bandwidth` is h^2 (default: the median heuristic on `y`). Unbiased: the diagonal terms are left out, so the
    figure is 0 in expectation for equal distributions and can be slightly negative. Needs 2 rows a side.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"MMD needs at least 2 rows a side, got {len(x)} and {len(y)}")
    a, b = (_unit64(v) if normalize else np.asarray(v, dtype=np.float64) for v in (x, y))
    h2 = median_bandwidth(b) if bandwidth is None else float(bandwidth)
    m, n = len(a), len(b)
    kxx = np.exp(-_sq_dists(a, a) / (2 * h2))
    kyy = np.exp(-_sq_dists(b, b) / (2 * h2))
    kxy = np.exp(-_sq_dists(a, b) / (2 * h2))
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())
