"""Error against round per policy, as PNG bytes (Dagster metadata shows `bytes` values of p/coverage as images)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import pandas as pd

COLORS = {"replace": "#d62728", "accumulate": "#2ca02c", "accumulate_subsample": "#1f77b4"}


def panels_png(panels: Sequence[Mapping], *, title: str = "") -> bytes:
    """One panel per mapping: {title, ylabel, history: DataFrame(round, policy, value), theory: {label: Series},
    log: bool}. Measured values are lines with markers per policy; theory curves are dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a Dagster worker
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        hist: pd.DataFrame = panel["history"]
        for policy, part in hist.groupby("policy", sort=False):
            ax.plot(
                part["round"], part["value"], marker="o", ms=3, color=COLORS.get(str(policy)), label=policy
            )
        for label, curve in panel.get("theory", {}).items():
            ax.plot(curve.index, curve.to_numpy(), ls="--", lw=1, color="grey", label=label)
        if panel.get("log"):
            ax.set_yscale("log")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("round (model fitted on that round's training set)")
        ax.set_ylabel(panel["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
