"""Round r-1's training set as a round sees it: what its version record says, its rows read only on first use.

The common round (accumulate + exact and semantic dedup + the gap-filling planner) needs none of r-1's rows: the
verifiers search the persistent indexes (stages/earlier.py), the planner reads the cached embeddings, `accumulate`
appends the new rows to r-1's table version and the checks read the new rows and the record's counts. Consumers
that do need the rows (a python backend's `prepare_round`, `accumulate_subsample`, `min_real_fraction`, a policy
plugin) ask for `frame`, which reads them once; `loaded` tells whether anyone did.

The record's meta carries what the cheap path needs (written by `summary_meta` with every training set):
`real_prefix` (how many real rows the set starts with, followed by synthetic rows only), `real_ids` (a hash of
those rows' ids in order) and `counts` (rows by source and round).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from synthflow.store import VersionRecord

REAL_PREFIX = "real_prefix"
REAL_IDS = "real_ids"
COUNTS = "counts"  # {"<source>|<round>": rows}
# DataFrame.attrs key on a training set holding only the rows appended to r-1's (r-1's own rows not in memory).
BASE_NOT_HELD = "synthflow.base_not_held"


class PreviousSet:
    """Round r-1's training set; `frame` reads it (once), the other properties come from its version record."""

    reads = 0  # how many previous sets this process read from the store (what a test of the cheap path watches)

    def __init__(self, record: VersionRecord, load: Callable[[], pd.DataFrame]):
        self.record = record
        self._load = load
        self._frame: pd.DataFrame | None = None

    @classmethod
    def held(cls, frame: pd.DataFrame, record: VersionRecord | None = None) -> PreviousSet:
        """A previous set already in memory (light mode)."""
        out = cls(record, lambda: frame)  # type: ignore[arg-type]
        out._frame = frame
        return out

    @property
    def loaded(self) -> bool:
        return self._frame is not None

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            PreviousSet.reads += 1
            self._frame = self._load()
        return self._frame

    @property
    def rows(self) -> int:
        return len(self._frame) if self._frame is not None else self.record.rows

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.record.meta if self.record is not None else {}

    def counts(self) -> dict[tuple[str, int], int] | None:
        """Rows by (source, round), from the record when it has them, else from the rows if they are held."""
        raw = self.meta.get(COUNTS)
        if raw is not None:
            return {(k.split("|")[0], int(k.split("|")[1])): int(v) for k, v in raw.items()}
        return counts_of(self._frame) if self._frame is not None else None


def ids_hash(ids: pd.Series | np.ndarray) -> str:
    values = np.asarray(ids, dtype=object).astype(str)
    return hashlib.sha256("\0".join(values).encode()).hexdigest()[:32]


def counts_of(frame: pd.DataFrame) -> dict[tuple[str, int], int]:
    if not len(frame):
        return {}
    by = frame.groupby(["_source", "_round"], dropna=False).size()
    return {(str(s), int(r)): int(n) for (s, r), n in by.items()}


def add_counts(*parts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def summary_meta(
    counts: Mapping[tuple[str, int], int], real_prefix: int | None, real_ids: str | None
) -> dict[str, Any]:
    """What a training set's version record carries so the next round need not read it."""
    out: dict[str, Any] = {COUNTS: {f"{s}|{r}": n for (s, r), n in sorted(counts.items())}}
    if real_prefix is not None and real_ids is not None:
        out.update({REAL_PREFIX: real_prefix, REAL_IDS: real_ids})
    return out


def real_prefix_of(frame: pd.DataFrame) -> int | None:
    """How many real rows `frame` starts with when every row after them is synthetic, else None."""
    is_real = (frame["_source"] == "real").to_numpy()
    n = int(np.argmin(is_real)) if not is_real.all() else len(is_real)
    return None if is_real[n:].any() else n


def append_unread(
    policy_name: str, min_real_fraction: float, previous: PreviousSet | None, real: pd.DataFrame,
    new_synthetic: pd.DataFrame,
) -> pd.DataFrame | None:  # fmt: skip
    """`accumulate`'s common case without reading r-1: when r-1 is exactly these real rows followed by synthetic
    rows (its record says so) and no real fraction is enforced, round r's set is r-1's plus the new rows. Returns
    the new rows alone, marked (attrs) as appended to r-1's `rows`, or None when the rows must be read."""
    if policy_name != "accumulate" or min_real_fraction > 0 or previous is None or previous.loaded:
        return None
    meta = previous.meta
    if meta.get(REAL_PREFIX) != len(real) or meta.get(REAL_IDS) != ids_hash(real["_id"]):
        return None
    from synthflow.stages.accumulate import APPENDED_TO, _unique

    # Earlier synthetic ids cannot recur (a row's id is its request's key, which includes the round), so only the
    # new ids are checked, against each other and the real rows (as the in-memory path does).
    _unique(pd.concat([real["_id"], new_synthetic["_id"]], ignore_index=True))
    out = new_synthetic.reset_index(drop=True)
    out.attrs[APPENDED_TO] = previous.rows
    out.attrs[BASE_NOT_HELD] = True
    return out


class LazyFrame:
    """A dataclass attribute that may hold a PreviousSet and reads as its frame (its rows read on first access).

    Installed on the class after @dataclass, so the generated __init__ and `dataclasses.replace` go through it
    and every reader of `reads.previous` keeps getting a DataFrame, while code that only needs the record asks
    `previous_set_of(obj, name)`.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_lazy_{name}"

    def install(self, owner: type, name: str) -> None:
        self.__set_name__(owner, name)
        setattr(owner, name, self)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self.slot)
        return value.frame if isinstance(value, PreviousSet) else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


def previous_set_of(obj: Any, name: str, record: VersionRecord | None = None) -> PreviousSet | None:
    """The PreviousSet behind `obj.<name>` (a held one for a plain frame), without reading any rows."""
    value = obj.__dict__.get(f"_lazy_{name}")
    if value is None or isinstance(value, PreviousSet):
        return value
    return PreviousSet.held(value, record)


COLUMNS = "columns"


def training_set_meta(held: pd.DataFrame, appended_to: PreviousSet | None) -> dict[str, Any]:
    """What a training set's version record carries so the next round need not read it: rows by source and round,
    its real prefix (count and ids' hash) and its columns. `held`: the whole set, or with `appended_to` only the
    rows appended to that set (whose record then supplies the rest)."""
    if appended_to is None:
        n = real_prefix_of(held) if len(held) else 0
        meta = summary_meta(counts_of(held), n, ids_hash(held["_id"].iloc[:n]) if n is not None else None)
        return {**meta, COLUMNS: [str(c) for c in held.columns]}
    base = appended_to.meta
    n = base.get(REAL_PREFIX)
    new_real = bool(len(held)) and bool((held["_source"] == "real").any())
    meta = summary_meta(
        add_counts(appended_to.counts() or {}, counts_of(held)),
        None if new_real else n,
        None if new_real else base.get(REAL_IDS),
    )
    columns = list(dict.fromkeys([*base.get(COLUMNS, []), *(str(c) for c in held.columns)]))
    return {**meta, COLUMNS: columns}
