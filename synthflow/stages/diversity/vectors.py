"""Unit-row float32 matrices without needless copies: a million 384-d rows is 1.5 GB."""

from __future__ import annotations

import os

import numpy as np


def unit_rows(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """`x` as C-contiguous float32 with unit rows (zero rows stay zero); `x` itself when it already is."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    if x.dtype == np.float32 and x.flags.c_contiguous and all(
        np.allclose(np.einsum("ij,ij->i", x[s : s + chunk], x[s : s + chunk]), 1.0, atol=1e-4)
        for s in range(0, len(x), chunk)
    ):
        return x
    x = np.array(x, dtype=np.float32, order="C")
    for s in range(0, len(x), chunk):
        part = x[s : s + chunk]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        part /= np.where(norms > 0, norms, 1.0)
    return x


def count_distinct(x: np.ndarray, limit: int) -> int:
    """Distinct rows of `x`, counted exactly only when there are at most `limit` rows (else len(x))."""
    if len(x) > limit:
        return len(x)
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    return len(np.unique(rows))


_faiss_ready = False


def load_faiss():
    """faiss, with its OpenMP team sized for the machine.

    faiss-cpu ships an OpenMP build of OpenBLAS whose idle workers spin; on a 2-core machine shared with other
    work, one thread was both faster (2.3 s vs 3.7 s for 200,000 x 1,000 nearest centroids) and cheaper (1.7 vs
    2.4 CPU-seconds) than two. SYNTHFLOW_FAISS_THREADS overrides; bigger machines keep faiss's default.
    """
    global _faiss_ready
    import faiss

    if not _faiss_ready:
        _faiss_ready = True
        wanted = os.environ.get("SYNTHFLOW_FAISS_THREADS")
        if wanted:
            faiss.omp_set_num_threads(max(1, int(wanted)))
        elif (os.cpu_count() or 1) <= 2:
            faiss.omp_set_num_threads(1)
    return faiss
