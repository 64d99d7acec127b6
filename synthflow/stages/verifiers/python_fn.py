"""The `python` verifier: any user function `module:function` over the candidate table.

The function takes the candidates (a pandas DataFrame, one row per candidate, output fields as columns) and,
when it declares a second parameter or one named `ctx`, the VerifyContext. It returns either a DataFrame with a
boolean `ok` column (optionally `score`, `reason` and any extra columns) or a boolean Series / list / array with
one value per row. Modules are imported normally; a module next to the spec file is found too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from pydantic import field_validator

from synthflow.stages.verifiers.base import VERDICT_COLUMNS, VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.user_code import load_callable

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


class PythonParams(VerifierParams):
    function: str  # "package.module:function"
    kwargs: dict[str, Any] = {}  # passed to the function as keyword arguments

    @field_validator("function")
    @classmethod
    def _is_target(cls, v: str) -> str:
        if not _TARGET.match(v):
            raise ValueError(f"{v!r} is not of the form 'module:function'")
        return v


@register("python", PythonParams)
def python_verifier(name: str, params: PythonParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        fn = load_function(params.function, ctx.spec.base_dir if ctx.spec is not None else None)
        args: tuple[Any, ...] = (rows, ctx) if _wants_ctx(fn, params.kwargs) else (rows,)
        returned = fn(*args, **params.kwargs)
        return to_verdicts(returned, rows.index, params.function)

    verify.name = name
    return verify


def load_function(target: str, base_dir: Any = None) -> Callable[..., Any]:
    # User check modules usually sit beside the pipeline spec.
    return load_callable(target, what="python verifier", search=[base_dir] if base_dir is not None else [])


def _wants_ctx(fn: Callable[..., Any], kwargs: dict[str, Any]) -> bool:
    """Pass ctx when the function names a `ctx` parameter or has a second required positional one."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = list(sig.parameters.values())
    if any(p.name == "ctx" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        second = positional[1]
        return second.default is inspect.Parameter.empty and second.name not in kwargs
    return any(p.kind == p.VAR_POSITIONAL for p in params)


def to_verdicts(returned: Any, index: pd.Index, target: str) -> pd.DataFrame:
    """Check what a user function returned and turn it into a verdict frame aligned with `index`."""
    where = f"python verifier {target}"
    n = len(index)
    if isinstance(returned, pd.DataFrame):
        if "ok" not in returned.columns:
            raise ValueError(
                f"{where} returned a DataFrame without an 'ok' column (columns: {list(returned.columns)})"
            )
        frame = _align(returned, index, where)
        ok = _bools(frame["ok"], where)
        reason = frame["reason"] if "reason" in frame else pd.Series(None, index=index, dtype=object)
        reason = reason.where(ok | reason.notna(), f"rejected by {target}")
        out = verdicts(index, ok, reason, score=frame["score"] if "score" in frame else float("nan"))
        for col in frame.columns:
            if col not in VERDICT_COLUMNS:
                out[col] = frame[col]
        return out
    if isinstance(returned, pd.Series):
        series = _align(returned, index, where)
    elif isinstance(returned, list | tuple | np.ndarray):
        if len(returned) != n:
            raise ValueError(f"{where} returned {len(returned)} verdicts for {n} rows")
        series = pd.Series(list(returned), index=index)
    else:
        raise ValueError(
            f"{where} returned {type(returned).__name__}; expected a DataFrame with an 'ok' column or a boolean "
            "Series/list with one value per row"
        )
    ok = _bools(series, where)
    return verdicts(index, ok, pd.Series(f"rejected by {target}", index=index, dtype=object))


def _align(obj: pd.DataFrame | pd.Series, index: pd.Index, where: str) -> Any:
    if len(obj) != len(index):
        raise ValueError(f"{where} returned {len(obj)} verdicts for {len(index)} rows")
    if obj.index.equals(index):
        return obj
    if set(obj.index) == set(index) and obj.index.is_unique:
        return obj.reindex(index)
    # A fresh 0..n-1 index (e.g. built from lists) is taken in row order.
    return obj.set_axis(index)


def _bools(values: pd.Series, where: str) -> pd.Series:
    if values.isna().any():
        raise ValueError(f"{where} returned missing values in 'ok'")
    if not all(isinstance(v, bool | np.bool_) for v in values):
        bad = next(v for v in values if not isinstance(v, bool | np.bool_))
        raise ValueError(f"{where} returned a non-boolean ok value {bad!r} ({type(bad).__name__})")
    return values.astype(bool)
