"""Small PNG plots of a round for the Dagster UI: verdicts by reason, and metrics across rounds.

Figure objects rather than pyplot: no global backend or state, so rendering works with Agg in any thread or
process. Plots stay small (a few tens of KB) because they travel inside event metadata.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import pandas as pd

from synthflow.store import Store

# Coverage columns that are bookkeeping, not metrics worth a line.
_NOT_METRICS = {"round", "rows_wanted", "candidate_budget", "candidates", "rejected", "training_rows"}
_SIZES = ("training_real_rows", "training_synthetic_rows", "accepted")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def verdicts_plot(accepted: int, rejected_by: Mapping[str, int], title: str = "") -> bytes:
    """Horizontal bars: accepted rows, then rejected rows per reason (the verifier that refused them)."""
    from matplotlib.figure import Figure

    reasons = sorted(rejected_by.items(), key=lambda kv: -kv[1])
    labels = ["accepted", *(f"rejected: {k}" for k, _ in reasons)]
    values = [accepted, *(v for _, v in reasons)]
    fig = Figure(figsize=(6, 0.45 * len(labels) + 1.2), dpi=80)
    ax = fig.subplots()
    bars = ax.barh(labels[::-1], values[::-1], color=["tab:red"] * len(reasons) + ["tab:green"])
    ax.bar_label(bars, padding=2)
    ax.set_xlabel("candidates")
    ax.set_title(title or "verdicts by reason")
    ax.margins(x=0.15)
    return _png(fig)


def metric_columns(history: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(rates in [0, 1], other numeric metrics) among the coverage columns."""
    rates, others = [], []
    for col in history.columns:
        if col in _NOT_METRICS or col in _SIZES or not pd.api.types.is_numeric_dtype(history[col]):
            continue
        if pd.api.types.is_bool_dtype(history[col]):
            continue
        values = history[col].dropna()
        (rates if len(values) and values.between(0, 1).all() else others).append(col)
    return rates, others


def rounds_plot(history: pd.DataFrame) -> bytes:
    """Lines over rounds: training-set sizes, rates (acceptance, duplicates, ...), and any other numeric
    metric of the coverage tables (diversity metrics when the diversity stages report them).

    `history` has one row per round and a `round` column, as the stored coverage tables do.
    """
    from matplotlib.figure import Figure

    history = history.sort_values("round")
    rates, others = metric_columns(history)
    sizes = [c for c in _SIZES if c in history.columns]
    panels = [("rows", sizes), ("rates", rates)] + ([("metrics", others)] if others else [])
    # Panels stacked: the UI shows metadata images in a dialog about 550 px wide.
    fig = Figure(figsize=(6, 2.4 * len(panels) + 0.6), dpi=80)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    x = history["round"].astype(int)
    for ax, (title, cols) in zip(axes, panels, strict=True):
        for col in cols:
            ax.plot(x, history[col], marker="o", label=col)
        ax.set_ylabel(title)
        ax.set_xticks(list(x))
        if cols:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[-1].set_xlabel("round")
    fig.suptitle("metrics across rounds")
    fig.tight_layout()
    return _png(fig)


def coverage_history(store: Store, pipeline: str, partitions: Sequence[str]) -> pd.DataFrame:
    """The stored coverage tables (latest version each) of the given round partitions, one row per round."""
    frames = [store.read_or_none(pipeline, "coverage", p) for p in partitions]
    frames = [f.assign(partition=p) for f, p in zip(frames, partitions, strict=True) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
