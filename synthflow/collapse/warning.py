"""The collapse early warning on the study's own rows: the signals of stages.diversity.collapse_warning, per run.

The study's rows are numbers, not texts, so there is no sentence embedding. Each 1-D Gaussian row is embedded by
random Fourier features (Rahimi & Recht, 2007) whose inner products approximate the RBF kernel at the run's real
standard deviation; the rows are then vectors like any embedding, and the same signal functions (spread, clusters
of a seed map built from the run's real rows, Vendi) and the same trend rule apply. distinct-n needs texts and is
left out. Each round's figure is the median over the runs of that run's ratio to its real rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synthflow.collapse import data
from synthflow.collapse.loop import LoopConfig, real_data, run_loop
from synthflow.stages.diversity import collapse_warning as cw
from synthflow.stages.diversity.seedmap import assign, build_seed_map

NUMERIC_SIGNALS = ("spread", "cluster_reach", "vendi")


def value_embedding(values: np.ndarray, scale: float, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Random Fourier features of scalars: phi(y) . phi(y') ~= exp(-(y - y')^2 / (2 scale^2)); rows ~unit norm."""
    rng = np.random.default_rng([seed, 5])
    omega = rng.standard_normal(dim) / scale
    phase = rng.uniform(0, 2 * np.pi, dim)
    return np.sqrt(2.0 / dim) * np.cos(np.asarray(values, dtype=float)[:, None] * omega + phase)


@dataclass
class RunReference:
    """One run's real rows as the reference: their embedding, seed map and labels."""

    vectors: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    scale: float


def references(real: pd.DataFrame, clusters: int = 4, seed: int = 0) -> dict[int, RunReference]:
    out = {}
    for run, part in real.groupby(data.RUN, sort=True):
        y = part[data.VALUE].to_numpy(dtype=float)
        scale = float(y.std(ddof=1)) or 1.0
        vec = value_embedding(y, scale, seed=seed)
        sm = build_seed_map(vec, np.arange(len(vec)), k=clusters, seed=seed, restarts=1)
        out[int(run)] = RunReference(vec, sm.labels, sm.centroids, scale)
    return out


def round_record(
    refs: dict[int, RunReference], synthetic: pd.DataFrame, round_index: int, seed: int = 0
) -> dict[str, float | int]:
    """The round's figures as p/coverage would store them: `round` and `collapse_<signal>` (median over runs)."""
    per_run: dict[str, list[float]] = {s: [] for s in NUMERIC_SIGNALS}
    for run, part in synthetic.groupby(data.RUN, sort=True):
        ref = refs[int(run)]
        vec = value_embedding(part[data.VALUE].to_numpy(dtype=float), ref.scale, seed=seed)
        sig = cw.round_signals(
            vec, ref.vectors, synthetic_labels=assign(vec, ref.centroids), reference_labels=ref.labels
        )
        for s in NUMERIC_SIGNALS:
            if sig.get(s) is not None:
                per_run[s].append(float(sig[s]))
    rec: dict[str, float | int] = {"round": round_index}
    rec.update({cw.key(s): float(np.median(v)) for s, v in per_run.items() if v})
    return rec


@dataclass
class Watch:
    """Every round's record and the check's verdict after it; `fired_at`: the first round whose check failed."""

    records: list[dict] = field(default_factory=list)
    verdicts: list[tuple[bool, dict]] = field(default_factory=list)

    @property
    def fired_at(self) -> int | None:
        for rec, (passed, _) in zip(self.records, self.verdicts, strict=True):
            if not passed:
                return int(rec["round"])
        return None


def watch_loop(
    cfg: LoopConfig,
    *,
    window: int = 5,
    min_decline: float = 0.15,
    signals: Sequence[str] = NUMERIC_SIGNALS,
    on_round: Callable[[int, bool], None] | None = None,
) -> Watch:
    """Run a Gaussian arm of the study through `run_loop` and apply the check after every round, reading the trend
    from the stored records of the last `window` rounds (as p/round does), not recomputing them."""
    if cfg.model != "gaussian":
        raise ValueError("the early warning watches the Gaussian arm (narrowing); the linear arm drifts instead")
    refs = references(real_data(cfg, 0, cfg.rows), seed=cfg.seed)
    out = Watch()

    def observe(r: int, training_set: pd.DataFrame) -> None:
        synth = training_set[(training_set["_source"] == "synthetic") & (training_set["_round"] == r)]
        out.records.append(round_record(refs, synth, r, seed=cfg.seed))
        out.verdicts.append(cw.check(out.records[-window:], window=window, min_decline=min_decline, signals=signals))
        if on_round is not None:
            on_round(r, out.verdicts[-1][0])

    run_loop(cfg, observe=observe)
    return out
