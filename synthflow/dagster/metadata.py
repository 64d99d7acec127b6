"""Dagster metadata built from stage outputs: column schemas, previews, usage, verdict counts, failing rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from synthflow.generators.base import Generator
from synthflow.spec import ColumnSpec
from synthflow.stages.generate import GenerationStats
from synthflow.store import VersionRecord

_TYPES = {"string": "string", "integer": "int", "float": "float", "boolean": "bool"}


def store_metadata(rec: VersionRecord) -> dict[str, Any]:
    return {"rows": dg.MetadataValue.int(rec.rows), "store_version": rec.version, "partition": rec.partition}


def column_schema(df: pd.DataFrame, declared: Sequence[ColumnSpec] = ()) -> dg.TableSchema:
    by_name = {c.name: c for c in declared}
    cols = []
    for name, dtype in df.dtypes.items():
        c = by_name.get(str(name))
        cols.append(
            dg.TableColumn(
                str(name),
                _TYPES[c.type] if c else str(dtype),
                description=(c.description if c else None),
                constraints=dg.TableColumnConstraints(nullable=c.nullable) if c else None,
            )
        )
    return dg.TableSchema(columns=cols)


def preview(df: pd.DataFrame, columns: Sequence[str] | None = None, n: int = 5) -> dg.MetadataValue:
    # Binary columns (PNG plots) are shown as images elsewhere; as text they are noise or undecodable.
    cols = [c for c in (columns or df.columns) if c in df.columns and not _is_binary(df[c])]
    head = df[cols].head(n).astype(str).apply(lambda s: s.str.slice(0, 120))
    return dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "_no rows_")


def _is_binary(col: pd.Series) -> bool:
    return len(col) > 0 and isinstance(col.iloc[0], bytes | bytearray)


def table_metadata(
    df: pd.DataFrame, rec: VersionRecord, declared: Sequence[ColumnSpec] = ()
) -> dict[str, Any]:
    visible = [c for c in df.columns if not str(c).startswith("_")] + [
        c for c in ("_id", "_source", "_round") if c in df.columns
    ]
    return {
        **store_metadata(rec),
        "dagster/column_schema": column_schema(df, declared),
        "dagster/row_count": dg.MetadataValue.int(len(df)),
        "preview": preview(df, visible),
    }


def failures_summary(source: str, failures: list[tuple[int | None, str, str]]) -> str:
    first = failures[0]
    where = f"row {first[0] + 1}" if first[0] is not None else "all rows"
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{source}: {where}, column {first[1]!r}: {first[2]}{more}"


def failures_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "failing_rows": dg.MetadataValue.int(int(frame["row"].nunique(dropna=False))),
        "failures": dg.MetadataValue.md(frame.head(200).to_markdown(index=False)),
    }


def usage_metadata(
    stats: GenerationStats, generator: Generator, coverage: Mapping[str, Any], fallback_reason: str | None
) -> dict[str, Any]:
    """`coverage`: the round's, whose spend (stages/budget.py) is shown beside the generator's own counts."""
    u = stats.usage
    out: dict[str, Any] = {
        "generator": generator.label,
        "model": generator.model_id,
        "requests": stats.requested,
        "requests_sent": stats.sent,
        "requests_from_cache": stats.from_cache,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "tokens_per_second": round(u.completion_tokens / u.wall_seconds, 2) if u.wall_seconds > 0 else 0.0,
        "retries": u.retries,
        "failures": json.dumps(u.failures, sort_keys=True),
        "wall_seconds": round(u.wall_seconds, 3),
    }
    for k in ("round_tokens", "round_cost_usd", "pipeline_tokens", "pipeline_cost_usd"):
        if k in coverage:
            out[k] = coverage[k]
    if fallback_reason:
        out["smoke_model_fallback"] = fallback_reason
    return out


def verifier_metadata(verified: pd.DataFrame, names: Sequence[str]) -> dict[str, Any]:
    rows = []
    for name in ["parse", *names]:
        if name == "parse":
            seen, passed = len(verified), int(verified["parse_error"].isna().sum()) if len(verified) else 0
        else:
            col = f"{name}_ok"
            if col not in verified.columns:
                continue
            s = verified[col].dropna()
            seen, passed = len(s), int(s.astype(bool).sum())
        row = {
            "verifier": name,
            "seen": seen,
            "passed": passed,
            "pass_rate": round(passed / seen, 3) if seen else None,
        }
        # Verifiers that run model-written code (code_tests) record the isolation that held, per row.
        isolation = verified.get(f"{name}_isolation")
        if isolation is not None:
            row["isolation"] = ", ".join(sorted({str(v) for v in isolation.dropna()})) or "-"
        rows.append(row)
    by_reason = (
        verified.loc[~verified["accepted"], "rejected_by"].value_counts().to_dict() if len(verified) else {}
    )
    return {
        "verifiers": dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False)),
        "rejected_by": json.dumps({str(k): int(v) for k, v in by_reason.items()}, sort_keys=True),
        "candidates": len(verified),
        "accepted": int(verified["accepted"].sum()) if len(verified) else 0,
    }


def as_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """Stage outputs as Dagster metadata: PNG bytes as images, tables as markdown, containers as JSON."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, bytes):
            out[k] = image(v, k)
        elif isinstance(v, pd.DataFrame):
            out[k] = dg.MetadataValue.md(v.to_markdown(index=False))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[k] = v if v is not None else "none"
        else:
            out[k] = json.dumps(v, sort_keys=True, default=str)
    return out


def image(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """A PNG the Dagster UI shows: markdown with a data: URI renders as a picture under [Show Markdown]
    (checked in a real webserver by tests/test_ui.py); path and url metadata only render as text or links."""
    import base64

    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def training_set_metadata(
    held: pd.DataFrame, rec: VersionRecord, declared: Sequence[ColumnSpec], whole: bool
) -> dict[str, Any]:
    """A training set's metadata; when only the rows appended to r-1's are held (`whole` False), the row counts
    come from its version record (stages/previous.py) and the preview shows the new rows."""
    if whole:
        return {**table_metadata(held, rec, declared), **provenance_metadata(held)}
    from synthflow.stages.previous import COUNTS

    counts = {tuple(k.split("|")): n for k, n in rec.meta.get(COUNTS, {}).items()}
    by = pd.DataFrame([(s, int(r), n) for (s, r), n in counts.items()], columns=["_source", "_round", "rows"])
    return {
        **table_metadata(held, rec, declared),
        "dagster/row_count": dg.MetadataValue.int(rec.rows),
        "real_rows": int(by.loc[by["_source"] == "real", "rows"].sum()),
        "synthetic_rows": int(by.loc[by["_source"] == "synthetic", "rows"].sum()),
        "rows_by_source_and_round": dg.MetadataValue.md(by.to_markdown(index=False)),
    }


def provenance_metadata(training_set: pd.DataFrame) -> dict[str, Any]:
    by = training_set.groupby(["_source", "_round"]).size().reset_index(name="rows")
    return {
        "real_rows": int((training_set["_source"] == "real").sum()),
        "synthetic_rows": int((training_set["_source"] == "synthetic").sum()),
        "rows_by_source_and_round": dg.MetadataValue.md(by.to_markdown(index=False)),
    }
