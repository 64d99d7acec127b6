"""The coverage plot: where the synthetic rows fall among the seed rows, and per-cluster target vs synthetic shares."""

from __future__ import annotations

import io

import numpy as np


def pca_2d(fit_on: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Project `fit_on` and `others` on the top two principal axes of `fit_on` (numpy SVD, no sklearn)."""
    x = np.asarray(fit_on, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    return [(np.asarray(a, dtype=np.float64) - mean) @ axes for a in (fit_on, *others)]


def _sample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, cap, replace=False)) if n > cap else np.arange(n)


def coverage_plot(
    seed_embeddings: np.ndarray,
    seed_labels: np.ndarray,
    synthetic_embeddings: np.ndarray,
    synthetic_labels: np.ndarray,
    target: np.ndarray,
    synthetic_shares: np.ndarray | None = None,
    *,
    names: list[str] | None = None,
    title: str | None = None,
    max_points: int = 4000,
    seed: int = 0,
) -> bytes:
    """PNG bytes: left, a PCA projection of seed (colored by cluster) and synthetic points; right, bars of target
    vs synthetic share per cluster, under-covered clusters (ratio < 0.5) marked."""
    import matplotlib
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    target = np.asarray(target, dtype=float)
    k = len(target)
    seed_labels = np.asarray(seed_labels, dtype=np.int64)
    synthetic_labels = np.asarray(synthetic_labels, dtype=np.int64)
    if synthetic_shares is None:
        n = len(synthetic_labels)
        synthetic_shares = np.bincount(synthetic_labels, minlength=k)[:k] / n if n else np.zeros(k)
    names = names or [str(i) for i in range(k)]

    si = _sample(len(seed_embeddings), max_points, rng)
    yi = _sample(len(synthetic_embeddings), max_points, rng)
    seed_xy, synth_xy = pca_2d(np.asarray(seed_embeddings)[si], np.asarray(synthetic_embeddings)[yi].reshape(-1, np.shape(seed_embeddings)[1]))

    # Figure, not pyplot: no global backend or state, so it renders with Agg in threads and in a Dagster process.
    fig = Figure(figsize=(13, 5.2), dpi=100)
    ax_map, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    cmap = matplotlib.colormaps["tab20"]
    ax_map.scatter(seed_xy[:, 0], seed_xy[:, 1], s=6, c=[cmap(c % 20) for c in seed_labels[si]], alpha=0.35,
                   linewidths=0, label=f"seed ({len(seed_embeddings)})")
    if len(synth_xy):
        ax_map.scatter(synth_xy[:, 0], synth_xy[:, 1], s=10, c="black", marker="x", linewidths=0.7, alpha=0.6,
                       label=f"synthetic ({len(synthetic_embeddings)})")
    ax_map.set_title("seed vs synthetic (PCA of embeddings)")
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    ax_map.legend(loc="best", fontsize=8, markerscale=2)

    pos = np.arange(k)
    ratio = np.where(target > 0, synthetic_shares / np.where(target > 0, target, 1), np.inf)
    ax_bar.bar(pos - 0.2, target, width=0.4, color="0.65", label="target")
    ax_bar.bar(pos + 0.2, synthetic_shares, width=0.4, color=["tab:red" if r < 0.5 else "tab:blue" for r in ratio],
               label="synthetic (red: under 0.5 of target)")
    ax_bar.set_xticks(pos)
    ax_bar.set_xticklabels(names, rotation=90 if k > 12 else 0, fontsize=7 if k > 20 else 9)
    ax_bar.set_xlabel("seed cluster")
    ax_bar.set_ylabel("share")
    ax_bar.set_title(f"per-cluster share ({int(np.sum(ratio < 0.5))} of {k} under-covered)")
    ax_bar.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
