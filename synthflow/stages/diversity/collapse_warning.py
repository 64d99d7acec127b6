"""Collapse early warning: per-round narrowing signals of the generator's output, and the trend rule over rounds.

The model-collapse papers describe the same picture: a model trained on its own output loses the tails first and
its samples narrow round after round (Shumailov et al., Nature 2024: variance -> 0; the tails of the seed
distribution vanish). Each signal is the round's accepted rows measured against the seed/real rows, as a ratio
(1 = as varied as the seed), on equal-size samples so that size-dependent figures (Vendi, distinct-n, clusters
reached) compare like with like:

- spread: mean distance of the rows to their centroid;
- cluster_reach: seed-map clusters the rows reach / clusters the seed sample reaches (the tails);
- vendi: Vendi score (cosine kernel, stages.diversity.metrics);
- distinct_2: distinct word bigrams (texts only).

The figures are stored with the round (p/coverage, keys `collapse_<signal>`), so the trend is read back from the
last `window` rounds' records, never recomputed. `narrowing` fires for a signal when, over the last `window`
rounds, the least-squares line falls by at least `min_decline` of its starting value, the newest value is below
the window's first, and the line ends at least `min_decline` below the seed (a set still as varied as its seed is
not collapsing, whatever its trend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthflow.stages.diversity.metrics import distinct_n, vendi_score
from synthflow.stages.diversity.vectors import unit_rows

SIGNALS = ("spread", "cluster_reach", "vendi", "distinct_2")
PREFIX = "collapse_"  # p/coverage keys: collapse_spread, collapse_cluster_reach, ...
CHECK = "collapse_warning"


def key(signal: str) -> str:
    return PREFIX + signal


def spread(x: np.ndarray, normalize: bool = True) -> float:
    """Mean Euclidean distance of the rows (unit-normalized when `normalize`) to their centroid."""
    v = unit_rows(x).astype(np.float64) if normalize else np.asarray(x, dtype=np.float64)
    if len(v) == 0:
        return 0.0
    return float(np.linalg.norm(v - v.mean(axis=0), axis=1).mean())


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den > 0 else None


def round_signals(
    synthetic: np.ndarray,
    reference: np.ndarray,
    *,
    synthetic_labels: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    synthetic_texts: Sequence[str] | None = None,
    reference_texts: Sequence[str] | None = None,
    normalize: bool = True,
) -> dict[str, float | None]:
    """Every signal of one round as synthetic / reference; a signal whose inputs are missing is left out.

    Pass samples of the same size (`reference.subsample` them): Vendi, distinct-n and clusters reached grow with
    the number of rows.
    """
    out: dict[str, float | None] = {}
    if len(synthetic) < 2 or len(reference) < 2:
        return out
    out["spread"] = _ratio(spread(synthetic, normalize), spread(reference, normalize))
    if synthetic_labels is not None and reference_labels is not None:
        out["cluster_reach"] = _ratio(
            len(np.unique(synthetic_labels)), len(np.unique(reference_labels))
        )
    out["vendi"] = _ratio(vendi_score(synthetic), vendi_score(reference))
    if synthetic_texts is not None and reference_texts is not None:
        out["distinct_2"] = _ratio(distinct_n(synthetic_texts, 2), distinct_n(reference_texts, 2))
    return out


@dataclass(frozen=True)
class Trend:
    """One signal over the window: its values, the fitted slope per round and the fitted relative decline."""

    signal: str
    rounds: tuple[int, ...]
    values: tuple[float, ...]
    slope: float
    decline: float
    narrowing: bool

    def describe(self) -> str:
        vals = ", ".join(f"{v:.3f}" for v in self.values)
        return (
            f"{self.signal} {vals} (rounds {self.rounds[0]}-{self.rounds[-1]}; slope {self.slope:+.4f}/round, "
            f"fitted decline {self.decline:.1%})"
        )


def trend(signal: str, rounds: Sequence[int], values: Sequence[float], min_decline: float) -> Trend:
    t = np.asarray(rounds, dtype=float)
    y = np.asarray(values, dtype=float)
    slope, intercept = np.polyfit(t, y, 1)
    start, end = intercept + slope * t[0], intercept + slope * t[-1]
    decline = float((start - end) / start) if start > 0 else 0.0
    # The level test is on the fitted end, not the newest value: one noisy round cannot make the line end low.
    narrowing = bool(slope < 0 and decline >= min_decline and y[-1] < y[0] and end <= 1.0 - min_decline)
    return Trend(signal, tuple(int(r) for r in rounds), tuple(float(v) for v in y), float(slope), decline, narrowing)


def narrowing(
    history: Sequence[Mapping[str, Any]],
    *,
    window: int,
    min_decline: float,
    signals: Sequence[str] = SIGNALS,
) -> list[Trend]:
    """The trend of every signal measured in each of the last `window` records (oldest first; each a mapping with
    `round` and `collapse_<signal>` keys, as p/coverage stores them). Signals with a gap are left out."""
    last = list(history)[-window:]
    if len(last) < window:
        return []
    out = []
    for s in signals:
        vals = [rec.get(key(s)) for rec in last]
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in vals):
            continue
        out.append(trend(s, [int(rec["round"]) for rec in last], [float(v) for v in vals], min_decline))
    return out


def check(
    history: Sequence[Mapping[str, Any]],
    *,
    window: int,
    min_decline: float,
    signals: Sequence[str] = SIGNALS,
) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata) of the blocking check; the metadata names every narrowing signal with its figures."""
    trends = narrowing(history, window=window, min_decline=min_decline, signals=signals)
    fired = [t for t in trends if t.narrowing]
    meta: dict[str, Any] = {
        "window": window,
        "min_decline": min_decline,
        "rounds_seen": len(history),
        "narrowing": ", ".join(t.signal for t in fired) or "none",
    }
    if not trends:
        meta["note"] = f"fewer than {window} rounds with signals; nothing to judge yet"
    for t in trends:
        meta[t.signal] = t.describe()
    if fired:
        meta["reason"] = "the distribution is narrowing: " + "; ".join(t.describe() for t in fired)
    return not fired, meta
