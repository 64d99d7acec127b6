"""Training layouts of an export: the columns TRL's trainers read, from a training set's columns.

- `messages` (SFTTrainer, conversational): `messages`, a list of {role, content}: a conversation column as it is,
  or a user turn (`prompt`) and an assistant turn (`response`), after an optional system message.
- `dpo` (DPOTrainer, standard preference): `prompt`, `chosen`, `rejected` strings, from a preference column.
- `alpaca`: `instruction`, `input` (empty), `output`.
- `raw` (and the plain hf / parquet formats): every column, provenance included.

Rows without the columns a layout needs (real rows of a seed with other columns, rows of another shape) are left
out. Columns the layout reads are inferred from generate.columns when the export does not name them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthflow.spec import ExportSpec, PipelineSpec
from synthflow.stages.export import ExportError


class LayoutError(ExportError):
    """The spec does not say (and its columns do not show) which columns a layout reads."""


def _columns_of(spec: PipelineSpec, type_name: str) -> list[Any]:
    from synthflow.stages.columns.dag import column_params

    return [p for p in column_params(spec) if p.type == type_name] if spec.generate.columns else []


def _text_column(p: Any) -> str:
    fields = p.fields()
    return f"{p.name}.{fields[0]}" if fields else p.name


def _pick(export: ExportSpec, spec: PipelineSpec) -> dict[str, str | None]:
    llms = _columns_of(spec, "llm")
    convs = _columns_of(spec, "conversation")
    prefs = _columns_of(spec, "preference")
    evolved = _columns_of(spec, "evolve")
    prompt = export.prompt or (
        evolved[0].name if evolved else _text_column(llms[0]) if len(llms) >= 2 else None
    )
    response = export.response or (
        _text_column(llms[-1]) if llms and _text_column(llms[-1]) != prompt else None
    )
    return {
        "prompt": prompt,
        "response": response,
        "messages": export.messages or (convs[0].name if convs else None),
        "preference": export.preference or (prefs[0].name if prefs else None),
    }


def _need(table: pd.DataFrame, columns: list[str], layout: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LayoutError(f"export format {layout}: the training set has no column {missing[0]!r}")
    return table[table[columns].notna().all(axis=1)]


def _strings(values: Any) -> pd.Series:
    """Python strings in an object column: `datasets` makes them Value("string"), the type TRL's examples use
    (pandas 3's own str dtype would arrive as large_string)."""
    return pd.Series([str(v) for v in values], dtype=object)


def _plain_messages(value: Any) -> list[dict[str, str]]:
    """A dialogue as plain dicts (Parquet gives numpy arrays of dicts back)."""
    items = list(value) if isinstance(value, list | tuple | np.ndarray) else []
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in items]


def training_layout(table: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    export = spec.export or ExportSpec()
    layout = export.layout
    if layout == "raw":
        return table
    cols = _pick(export, spec)
    if layout == "dpo":
        if not cols["preference"]:
            raise LayoutError("export format dpo needs a preference column (export.preference)")
        p = cols["preference"]
        rows = _need(table, [f"{p}.prompt", f"{p}.chosen", f"{p}.rejected"], layout)
        return pd.DataFrame(
            {
                "prompt": _strings(rows[f"{p}.prompt"]),
                "chosen": _strings(rows[f"{p}.chosen"]),
                "rejected": _strings(rows[f"{p}.rejected"]),
            }
        )
    # A dialogue column unless the export names the turns: prompt/response win over an inferred conversation.
    if (
        layout == "messages"
        and cols["messages"]
        and (export.messages or not (export.prompt or export.response))
    ):
        rows = _need(table, [cols["messages"]], layout)
        system = [{"role": "system", "content": export.system}] if export.system else []
        return pd.DataFrame({"messages": [system + _plain_messages(v) for v in rows[cols["messages"]]]})
    if not cols["prompt"] or not cols["response"]:
        raise LayoutError(
            f"export format {layout} needs export.prompt and export.response (the columns of the user turn and "
            "the answer)"
        )
    rows = _need(table, [cols["prompt"], cols["response"]], layout)
    prompts, answers = _strings(rows[cols["prompt"]]), _strings(rows[cols["response"]])
    if layout == "alpaca":
        return pd.DataFrame({"instruction": prompts, "input": _strings([""] * len(rows)), "output": answers})
    system = [{"role": "system", "content": export.system}] if export.system else []
    return pd.DataFrame(
        {
            "messages": [
                [*system, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
                for q, a in zip(prompts, answers, strict=True)
            ]
        }
    )
