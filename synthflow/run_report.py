"""What `synthflow run` prints after its round table: a few accepted rows, where the full table lies, how to see it."""

from __future__ import annotations

import textwrap

from synthflow.spec import PipelineSpec
from synthflow.store import Store, VersionNotFound

_WIDTH = 110


def accepted_rows_report(
    store: Store, store_name: str, spec: PipelineSpec, partition: str, *, n: int = 3
) -> str:
    """`n` synthetic rows of the round's training set, the file that holds it, and the UI command."""
    try:
        rec = store.record(store_name, "training_set", partition)
        table = store.read_record(rec)
        path = store.location(rec)
    except VersionNotFound:
        return f"no training set stored for round {partition} in {store.root}"
    synthetic = table[table["_source"] == "synthetic"] if "_source" in table.columns else table.iloc[:0]
    columns = [c for c in spec.output_columns if c in synthetic.columns]
    lines = []
    if synthetic.empty:
        lines.append(f"round {partition} accepted no synthetic rows (see the rejected-by column above)")
    else:
        lines.append(f"{min(n, len(synthetic))} of the {len(synthetic)} synthetic rows in the training set of {partition}:")
        for i, (_, row) in enumerate(synthetic.head(n).iterrows(), start=1):
            for j, col in enumerate(columns):
                prefix = f"  {i}. {col}: " if j == 0 else f"     {col}: "
                lines.append(
                    textwrap.fill(
                        str(row[col]), _WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix)
                    )
                )
    if rec.delta_version is not None:
        lines.append(f"full table ({len(table)} rows, Delta Lake table, version {rec.delta_version}): {path}")
    else:
        lines.append(f"full table ({len(table)} rows, Parquet): {path}")
    lines.append(
        "open it in the Dagster UI: .venv/bin/synthflow ui, then http://127.0.0.1:3000 -> Assets -> "
        f"{spec.name}/training_set (Partitions, then a round's Preview and metadata)"
    )
    return "\n".join(lines)
