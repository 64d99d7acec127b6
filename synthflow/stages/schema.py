"""The spec's column declarations as a pandera schema, and the failing rows it finds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from synthflow.spec import ColumnSpec

_DTYPES = {"string": str, "integer": int, "float": float, "boolean": bool}


def pandera_schema(columns: Sequence[ColumnSpec], *, strict: bool = False) -> pa.DataFrameSchema:
    cols = {}
    for c in columns:
        checks = []
        if c.min is not None:
            checks.append(pa.Check.ge(c.min))
        if c.max is not None:
            checks.append(pa.Check.le(c.max))
        if c.min_length is not None or c.max_length is not None:
            checks.append(pa.Check.str_length(c.min_length, c.max_length))
        if c.regex is not None:
            checks.append(pa.Check.str_matches(c.regex))
        if c.isin is not None:
            checks.append(pa.Check.isin(c.isin))
        # Integers may arrive as floats from CSV/JSON with missing values; coerce, and let failures name the row.
        cols[c.name] = pa.Column(
            _DTYPES[c.type], checks=checks, nullable=c.nullable, coerce=True, description=c.description
        )
    return pa.DataFrameSchema(cols, strict=strict, coerce=True)


def column_failures(df: pd.DataFrame, columns: Sequence[ColumnSpec]) -> list[tuple[int | None, str, str]]:
    """(row position or None for the whole column, column, failed check) for every violation, in row order."""
    if not columns:
        return []
    try:
        pandera_schema(columns).validate(df.reset_index(drop=True), lazy=True)
        return []
    except SchemaErrors as e:
        fc = e.failure_cases
    out: list[tuple[int | None, str, str]] = []
    for rec in fc.to_dict("records"):
        idx = rec.get("index")
        row = None if idx is None or pd.isna(idx) else int(idx)
        column = rec.get("column") or ""
        check = str(rec.get("check"))
        failure = rec.get("failure_case")
        if check == "column_in_dataframe":
            check = "column is missing"
            column = str(failure)
        elif check == "not_nullable" and row is not None:
            check = "missing (no value for this column in the row)"  # an absent key and a null read alike
        elif row is not None:
            check = f"{check} (value: {str(failure)[:80]!r})"
        out.append((row, str(column), check))
    out.sort(key=lambda t: (-1 if t[0] is None else t[0], t[1]))
    return out


def describe_failure(failure: tuple[int | None, str, str]) -> str:
    """One failure as `row N, column 'c': check`, rows numbered from 1 like a file's data rows."""
    row, column, check = failure
    where = f"row {row + 1}" if row is not None else "all rows"
    return f"{where}, column {column!r}: {check}"


def failures_frame(failures: list[tuple[int | None, str, str]], row_offset: int = 0) -> pd.DataFrame:
    """The failures as a table for asset-check metadata; rows are numbered from 1 like a file's data rows."""
    return pd.DataFrame(
        [{"row": None if r is None else r + row_offset, "column": c, "check": k} for r, c, k in failures],
        columns=["row", "column", "check"],
    )


def storable(df: pd.DataFrame) -> pd.DataFrame:
    """The table with mixed-type object columns as text, so rows that fail the schema can still be stored and shown."""
    out = df
    for col in df.columns:
        if df[col].dtype != object:
            continue
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds) > 1 or (kinds and not kinds <= {str}):
            if out is df:
                out = df.copy()
            out[col] = [
                None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in df[col]
            ]
    return out
