"""The `python` backend: a user function `module:function` that fits a model on the training set and samples rows.

This is how the self-consuming loop and statistical or tabular generators plug in. A profile entry:

    generators:
      collapse:
        backend: python
        model: synthflow.collapse.study:generate      # module:function (a module beside the spec is found too)
        options:
          group_by: [run]                             # independent loops carried as a column (optional)
          report: synthflow.collapse.study:report     # numbers and plots for p/coverage (optional)
          runs: 20                                    # anything else reaches the function as ctx.params

Protocol: before a round the loop calls `prepare_round(previous, real, round_index)`. A request then asks for a
block of rows (`meta["rows"]`; the count is also in the messages, so it is part of the cache key) and gets them as
one result whose text is a table (`encode_rows` / `decode_rows`). The function receives a `PythonContext` and
returns a DataFrame or a list of dicts with exactly `ctx.n` rows in the spec's output schema, sampled with
`ctx.rng`, so the rows depend only on (the fit data, the round, the request's seed). RoundSession also calls
`prepare_report(previous_coverage)` with round r-1's stored coverage row, which the report function reads as
`ctx.previous_coverage` to carry its figures forward instead of recomputing earlier rounds.

Why the fit data's hash is in `model_id`: the request cache keys results by model_id, so rows sampled from a fit
on another training set (a re-run upstream round, new real rows) are a different model's output and can never be
served from the cache for this one. `model_version` hashes the function's module source and parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthflow.generators.base import GenerationRequest, GenerationResult, ProgressCallback
from synthflow.generators.tables import PythonGeneratorError, encode_rows
from synthflow.user_code import load_callable

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class PythonContext:
    """What the user function gets.

    previous: the training set of round r-1 (None in round 1); real: every real row known at round r;
    training_set: what to fit on (previous, or the real rows in round 1); n: rows to return; seed / rng: the
    request's randomness; block: which block of the round this is (0 unless verifiers rejected rows);
    params: the profile's options; group_by: the columns naming independent loops (e.g. `run`).
    """

    previous: pd.DataFrame | None
    real: pd.DataFrame
    round_index: int
    n: int
    seed: int
    block: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()

    @property
    def training_set(self) -> pd.DataFrame:
        return self.previous if self.previous is not None else self.real

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass(frozen=True)
class ReportContext:
    """What the optional report function gets after the round: the round's new training set, and round r-1's
    stored coverage row (`previous_coverage`; None in round 1 or when nothing is stored), so a report can carry
    its figures forward instead of recomputing every earlier round."""

    training_set: pd.DataFrame
    real: pd.DataFrame
    round_index: int
    params: dict[str, Any] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    previous_coverage: dict[str, Any] | None = None


def load_target(target: str, search: Sequence[Path] = ()) -> Callable[..., Any]:
    """Import `module:function`; modules in the `search` folders (the spec's folder) are found too."""
    if not _TARGET.match(target):
        raise PythonGeneratorError(f"python generator {target!r}: expected 'module:function'")
    return load_callable(target, what="python generator", search=search, error=PythonGeneratorError)


def code_version(functions: Sequence[Callable[..., Any]], params: dict[str, Any]) -> str:
    """Hash of the functions' module sources and the parameters: a changed generator is a new model version."""
    sources = []
    for fn in functions:
        module = inspect.getmodule(fn)
        try:
            sources.append(inspect.getsource(module) if module is not None else repr(fn))
        except (OSError, TypeError):
            sources.append(getattr(fn, "__qualname__", repr(fn)))
    blob = json.dumps({"sources": sources, "params": params}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def fit_hash(*frames: pd.DataFrame | None) -> str:
    """Hash of what a fit can see: every data column (names not starting with `_`), the source and the round.

    Provenance strings (ids, hashes, model names) are left out on purpose: they do not change a fit, and hashing
    millions of them every round would cost more than the fit.
    """
    h = hashlib.sha256()
    for df in frames:
        if df is None:
            h.update(b"-")
            continue
        cols = sorted(str(c) for c in df.columns if not str(c).startswith("_"))
        h.update(json.dumps([cols, len(df)]).encode())
        if not len(df):
            continue
        arrays = [df[c] for c in cols]
        if "_source" in df.columns:
            arrays.append(pd.Series((df["_source"] == "real").to_numpy()))
        if "_round" in df.columns:
            arrays.append(df["_round"])
        for col in arrays:
            if col.dtype.kind in "biuf" and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
                h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
            else:
                h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


_RESERVED = ("group_by", "report", "search_path")


class PythonGenerator:
    """Generator protocol over a user function; see the module docstring for the contract."""

    table_rows = True  # one request is answered with a table of rows (the round loop asks in blocks)

    def __init__(
        self,
        model: str,
        *,
        group_by: Sequence[str] = (),
        report: str | None = None,
        search_path: Sequence[str] = (),
        **params: Any,
    ):
        search = [Path(p) for p in search_path]
        self.target = model
        self.params = params
        self.group_by = tuple(group_by)
        self._fn = load_target(model, search)
        self._report_target = report
        self._report = load_target(report, search) if report else None
        self.model_version = code_version([f for f in (self._fn, self._report) if f], params)
        self._prepared: dict[str, Any] | None = None
        self._fit_hash = "unfit"
        self._previous_coverage: dict[str, Any] | None = None

    @property
    def model_id(self) -> str:
        return f"python:{self.target}@{self.model_version}/fit-{self._fit_hash}"

    @property
    def label(self) -> str:
        return f"python:{self.target}"

    def prepare_round(self, previous: pd.DataFrame | None, real: pd.DataFrame, round_index: int) -> None:
        self._prepared = {"previous": previous, "real": real, "round_index": round_index}
        self._fit_hash = f"{fit_hash(previous, real)}-r{round_index}"

    def prepare_report(self, previous_coverage: dict[str, Any] | None) -> None:
        """Round r-1's stored coverage row, handed to the report function (RoundSession calls this)."""
        self._previous_coverage = previous_coverage

    def generate(
        self, requests: Iterable[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        reqs = list(requests)
        if reqs and self._prepared is None:
            raise PythonGeneratorError(
                f"python generator {self.target}: prepare_round() was not called; the python backend fits on the "
                "previous training set, so it runs inside a round"
            )
        model = self.model_id
        for done, req in enumerate(reqs, start=1):
            n = int(req.meta.get("rows", 1))
            ctx = PythonContext(
                **self._prepared,
                n=n,
                seed=req.seed,
                block=req.sample_index,
                params=dict(self.params),
                group_by=self.group_by,
            )
            # A failing user function fails the round loudly: unlike a flaky sample, retrying cannot fix it.
            text = encode_rows(_as_frame(self._fn(ctx), n, self.target))
            yield req, GenerationResult(key="", text=text, model=model, finish_reason="stop")
            if progress is not None:
                progress(done, len(reqs))

    def report(self, training_set: pd.DataFrame, real: pd.DataFrame, round_index: int) -> dict[str, Any]:
        if self._report is None:
            return {}
        ctx = ReportContext(
            training_set, real, round_index, dict(self.params), self.group_by, self._previous_coverage
        )
        out = self._report(ctx)
        if not isinstance(out, dict):
            raise PythonGeneratorError(
                f"report function {self._report_target} returned {type(out).__name__}; expected a dict"
            )
        return out

    def close(self) -> None:
        self._prepared = None


def _as_frame(returned: Any, n: int, target: str) -> pd.DataFrame:
    if isinstance(returned, list):
        returned = pd.DataFrame.from_records(returned)
    if not isinstance(returned, pd.DataFrame):
        raise PythonGeneratorError(
            f"{target} returned {type(returned).__name__}; expected a DataFrame or a list of dicts"
        )
    if len(returned) != n:
        raise PythonGeneratorError(f"{target} returned {len(returned)} rows; {n} were asked for")
    return returned.reset_index(drop=True)
