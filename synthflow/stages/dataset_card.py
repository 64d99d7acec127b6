"""The dataset card (README.md) of an exported training set: how the data was made, from what, by which model.

Built only from the spec, the exported table and the stored coverage tables, so the same export always gets
the same card.
"""

from __future__ import annotations

import pandas as pd
import yaml

from synthflow.registry import policies
from synthflow.spec import PipelineSpec
from synthflow.stages.round_plots import metric_columns

_PROVENANCE = {
    "_source": "`real` (seed or real data) or `synthetic`",
    "_round": "round that produced the row (0: seed)",
    "_model": "model that generated the row",
    "_model_version": "version (revision or weights hash) of that model",
    "_prompt_hash": "hash of the prompt the row was generated from",
    "_exemplar_ids": "ids of the seed rows shown as few-shot exemplars",
    "_scores": "verifier scores of the row (JSON)",
    "_id": "stable row id",
    "_text": "the text that was embedded and deduplicated",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if len(df) else "_none_"


def dataset_card(
    spec: PipelineSpec,
    table: pd.DataFrame,
    history: pd.DataFrame,
    *,
    round_index: int,
    partition: str,
    version: str,
) -> str:
    """README.md text with a YAML header the Hugging Face hub understands."""
    header = {
        "pretty_name": spec.name,
        "tags": ["synthetic", "synthflow", *sorted(set(spec.tags.values()))],
        "size_categories": [_size_category(len(table))],
    }
    source = table["_source"] if "_source" in table else pd.Series(["real"] * len(table))
    parts = [
        f"---\n{yaml.safe_dump(header, sort_keys=False)}---",
        f"# {spec.name}",
        spec.description or "",
        (
            f"Training set of round {round_index} (partition `{partition}`, store version `{version}`), made "
            "with synthflow: real rows plus verified synthetic rows accumulated across rounds."
        ),
        "## Counts",
        f"{len(table)} rows: {int((source == 'real').sum())} real, "
        f"{int((source == 'synthetic').sum())} synthetic.",
        _md(_by_source_and_round(table)),
        "## Models",
        _md(_models(table)),
        "## Rounds",
        _md(_rounds(history)),
        "## Quality and diversity metrics",
        _metrics_section(history),
        "## Provenance",
        _provenance(table, spec),
        "## Accumulation policy",
        (
            f"`{spec.accumulate.policy}`, min_real_fraction {spec.accumulate.min_real_fraction}. "
            f"{policies.get(spec.accumulate.policy).description}"
        ),
        "## Spec",
        "```yaml\n" + _spec_text(spec).rstrip() + "\n```",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _spec_text(spec: PipelineSpec) -> str:
    """The YAML as its author wrote it (comments and all); a dump of the model when there is no file."""
    if spec.source_path:
        try:
            with open(spec.source_path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            pass
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _by_source_and_round(table: pd.DataFrame) -> pd.DataFrame:
    if not {"_source", "_round"} <= set(table.columns):
        return pd.DataFrame()
    return table.groupby(["_source", "_round"]).size().reset_index(name="rows")


def _models(table: pd.DataFrame) -> pd.DataFrame:
    if "_model" not in table:
        return pd.DataFrame()
    synthetic = table[table["_source"] == "synthetic"] if "_source" in table else table
    return (
        synthetic.groupby("_model")
        .size()
        .reset_index(name="synthetic rows")
        .rename(columns={"_model": "model"})
    )


def _rounds(history: pd.DataFrame) -> pd.DataFrame:
    cols = [
        c
        for c in (
            "round",
            "partition",
            "candidates",
            "accepted",
            "rejected",
            "acceptance_rate",
            "stop_reason",
        )
        if c in history.columns
    ]
    return history[cols].sort_values("round") if cols else pd.DataFrame()


def _metrics_section(history: pd.DataFrame) -> str:
    if history.empty:
        return "_no coverage tables recorded_"
    rates, others = metric_columns(history)
    return _md(history[["round", *rates, *others]].sort_values("round"))


def _provenance(table: pd.DataFrame, spec: PipelineSpec) -> str:
    cols = [c for c in table.columns if str(c).startswith("_")]
    rows = [{"column": c, "meaning": _PROVENANCE.get(str(c), "")} for c in cols]
    verifiers = ", ".join(f"`{v.label}`" for v in spec.verify) or "none"
    return f"Every row carries its provenance:\n\n{_md(pd.DataFrame(rows))}\n\nVerifier chain: {verifiers}."
