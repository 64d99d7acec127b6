"""The table wire format: how a generator that samples rows (the python backend) answers a request with a table,
and how a round turns that answer into candidate rows.

It sits apart from the python backend because both sides use it: the backend writes tables (`encode_rows`), the
round's stages read them (`table_candidates`), and the stages import no concrete backend.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from synthflow.generators.base import GenerationRequest, GenerationResult
from synthflow.text import text_hash

TABLE_FORMAT = "synthflow.table/1"


class PythonGeneratorError(ValueError):
    """A python generator (or the table it returned) that cannot be used."""


def encode_rows(frame: pd.DataFrame) -> str:
    """A table as JSON. Numeric columns travel as base64 of their little-endian bytes: every bit survives and
    encoding costs nanoseconds a value (JSON float text costs a microsecond); other columns are JSON lists."""
    columns: dict[str, Any] = {}
    for c in frame.columns:
        col = frame[c]
        if (pd.api.types.is_float_dtype(col) or pd.api.types.is_integer_dtype(col)) and not isinstance(
            col.dtype, pd.api.extensions.ExtensionDtype
        ):
            arr = np.ascontiguousarray(col.to_numpy()).astype(col.dtype.newbyteorder("<"), copy=False)
            if arr.dtype.kind == "f":
                arr = np.where(np.isfinite(arr), arr, np.nan)  # infinities are no valid value: null them
            columns[str(c)] = {"dtype": arr.dtype.str, "base64": base64.b64encode(arr.tobytes()).decode()}
        else:
            columns[str(c)] = [_plain(v) for v in col.tolist()]
    return json.dumps({"format": TABLE_FORMAT, "rows": len(frame), "columns": columns}, allow_nan=False)


def decode_rows(text: str) -> pd.DataFrame:
    obj = json.loads(text)
    if not isinstance(obj, dict) or obj.get("format") != TABLE_FORMAT:
        raise PythonGeneratorError("not a table written by the python backend")
    columns = {
        k: np.frombuffer(base64.b64decode(v["base64"]), dtype=np.dtype(v["dtype"]))
        if isinstance(v, dict)
        else v
        for k, v in obj["columns"].items()
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(obj["rows"]))


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def table_candidates(
    request: GenerationRequest,
    result: GenerationResult,
    *,
    round_index: int,
    first_index: int,
    output_schema: dict[str, Any],
    text_columns: Sequence[str],
    for_verifiers: bool,
) -> pd.DataFrame:
    """One candidate row per table row, already parsed: the columns `parse_outputs` gives for text candidates.

    Types are checked column-wise (not row by row) because statistical generators return thousands of rows a
    request; a value that does not fit its declared type is a parse error on its row, as for text candidates.
    """
    props = output_schema["properties"]
    required = set(output_schema.get("required", ()))
    if result.error:
        rows = pd.DataFrame({f: [None] for f in props})
        errors = np.array([f"generation failed: {result.error}"], dtype=object)
    else:
        rows = decode_rows(result.text)
        unknown = sorted(set(rows.columns) - set(props))
        if unknown:
            raise PythonGeneratorError(
                f"{result.model}: returned columns {unknown} that the spec's output_schema does not declare"
            )
        errors = np.full(len(rows), None, dtype=object)
    n = len(rows)
    out = pd.DataFrame(
        {
            "candidate_id": [f"{result.key[:20]}-{i}" for i in range(n)],
            "round": round_index,
            "candidate_index": np.arange(first_index, first_index + n),
            "target_cluster": -1,
            "exemplar_ids": "[]",
            "prompt_hash": request.meta.get("prompt_hash"),
            "messages": json.dumps([list(m) for m in request.messages], ensure_ascii=False),
            "sampling": json.dumps(request.sampling.as_dict(), sort_keys=True),
            "seed": request.seed,
            "sample_index": request.sample_index,
            "model": result.model,
            "raw_text": None,
            "finish_reason": result.finish_reason,
            "error": result.error,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
    )
    for f, schema in props.items():
        raw = rows[f] if f in rows.columns else pd.Series([None] * n, dtype=object)
        values, bad = _typed(raw, schema.get("type"))
        missing = pd.isna(values) if f in required else np.zeros(n, bool)
        for mask, why in ((bad, f"{f}: not a valid {schema.get('type')}"), (missing, f"{f}: missing")):
            hit = np.asarray(mask) & (errors == None)  # noqa: E711 (element-wise on an object array)
            errors[hit] = why
        out[f] = values
    # What only verifiers read (the parsed object, the text hash) is left empty when the spec has none: building
    # them costs more than the whole fit-and-sample step of a statistical generator.
    out["_output"] = out[list(props)].to_dict("records") if for_verifiers else None
    out["parse_error"] = errors
    text = None
    for c in text_columns:
        col = out[c].astype(object).where(out[c].notna(), "").astype(str) if c in out.columns else ""
        text = col if text is None else text + "\n" + col
    out["_text"] = text if text is not None else ""
    out["_text_hash"] = [text_hash(t) for t in out["_text"]] if for_verifiers else None
    return out


def _typed(col: pd.Series, kind: Any) -> tuple[Any, np.ndarray]:
    """The column in its declared JSON type and a mask of the values that do not fit it."""
    if isinstance(kind, list):  # ["number", "null"]: nullable; `required` says whether a value must be there
        kind = next((k for k in kind if k != "null"), None)
    present = col.notna().to_numpy()
    if kind in ("number", "integer"):
        is_bool = col.map(lambda v: isinstance(v, bool)).to_numpy() if col.dtype == object else False
        num = pd.to_numeric(col.where(~is_bool) if col.dtype == object else col, errors="coerce")
        bad = present & (num.isna().to_numpy() | is_bool)
        if kind == "integer":
            frac = num.notna() & (num % 1 != 0)
            bad |= frac.to_numpy()
            num = num.where(~frac)
            return (
                num.astype("int64") if not num.isna().any() else num.astype(object).where(num.notna(), None)
            ), bad
        return num.astype(float), bad
    if kind == "boolean":
        ok = col.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy()
        return col.where(ok, None), present & ~ok
    if kind == "string":
        ok = col.map(lambda v: isinstance(v, str)).to_numpy()
        return col.where(ok, None), present & ~ok
    return col.map(lambda v: None if v is None else json.dumps(v, sort_keys=True)), np.zeros(len(col), bool)
