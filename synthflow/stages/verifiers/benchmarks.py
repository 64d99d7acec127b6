"""Benchmark reference sets and the n-gram index the `decontaminate` verifier and training-set check share.

References are read with the seed loader (`synthflow.stages.seed.load_table`: local files next to the spec, any
fsspec URL, `hf://datasets/ID`), so a broken benchmark file is reported with its file and line like a broken seed.

Text is normalized before n-grams are taken (NFKC, case-folded, punctuation dropped, split into words and numbers):
the GPT-3 and Llama reports count overlap on such word n-grams, 13 by default. A benchmark row shorter than n
words is one n-gram of its own length, so a short question copied whole is still found.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from synthflow.spec import DataSourceSpec
from synthflow.stages.seed import load_table

_WORD = re.compile(r"\w+")
SNIPPET_CHARS = 80


class ReferenceSpec(BaseModel):
    """One benchmark: `source` (file next to the spec, fsspec URL or hf://datasets/ID) and the `column` to check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str = Field(min_length=1)
    column: str = Field(min_length=1)
    format: Literal["jsonl", "csv", "parquet"] | None = None
    split: str = "test"  # for hub datasets: benchmarks are test splits


@dataclass(frozen=True)
class Benchmark:
    name: str
    texts: list[str]  # by row position in the source (0-based), missing values as ""


def load_benchmark(ref: ReferenceSpec, base_dir: Path) -> Benchmark:
    table = load_table(DataSourceSpec(source=ref.source, format=ref.format, split=ref.split), base_dir)
    if ref.column not in table.columns:
        raise ValueError(
            f"benchmark {ref.name!r}: {ref.source} has no column {ref.column!r}; "
            f"it has {sorted(map(str, table.columns))}"
        )
    return Benchmark(ref.name, ["" if pd.isna(v) else str(v) for v in table[ref.column].tolist()])


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 3] + "..."


@dataclass(frozen=True)
class NgramMatch:
    benchmark: str
    row: int
    shared: int  # distinct n-grams the text shares with that benchmark row
    fraction: float  # shared / the benchmark row's distinct n-grams


@dataclass
class NgramIndex:
    """Every n-gram of every benchmark row, mapped to the rows that contain it."""

    n: int
    benchmarks: list[Benchmark] = field(default_factory=list)
    _rows: dict[tuple[str, ...], list[int]] = field(default_factory=dict)  # gram -> global row numbers
    _where: list[tuple[int, int]] = field(default_factory=list)  # global row -> (benchmark, row)
    _sizes: list[int] = field(default_factory=list)  # distinct grams per global row
    _short: set[int] = field(default_factory=set)  # lengths of rows shorter than n (their gram length)

    def add(self, bench: Benchmark) -> None:
        b = len(self.benchmarks)
        self.benchmarks.append(bench)
        for row, text in enumerate(bench.texts):
            grams = _grams(words(text), self.n)
            if not grams:
                continue
            g = len(self._where)
            self._where.append((b, row))
            self._sizes.append(len(grams))
            for gram in grams:
                self._rows.setdefault(gram, []).append(g)
            if len(next(iter(grams))) < self.n:
                self._short.add(len(next(iter(grams))))

    def best(self, text: str, min_overlap: int) -> NgramMatch | None:
        """The benchmark row sharing the most n-grams with `text`, when it shares at least `min_overlap`."""
        toks = words(text)
        grams = _grams(toks, self.n, pad=False)
        for length in self._short:
            grams |= {tuple(toks[i : i + length]) for i in range(len(toks) - length + 1)}
        counts: dict[int, int] = {}
        for gram in grams:
            for g in self._rows.get(gram, ()):
                counts[g] = counts.get(g, 0) + 1
        # A short row copied whole is one full match of its single gram; it must not need min_overlap of them.
        passing = {g: c for g, c in counts.items() if c >= min(min_overlap, self._sizes[g])}
        if not passing:
            return None
        g, shared = max(passing.items(), key=lambda kv: (kv[1] / self._sizes[kv[0]], kv[1]))
        b, row = self._where[g]
        return NgramMatch(self.benchmarks[b].name, row, shared, shared / self._sizes[g])

    def text_of(self, benchmark: str, row: int) -> str:
        return benchmark_text(self.benchmarks, benchmark, row)


def benchmark_text(benchmarks: Sequence[Benchmark], name: str, row: int) -> str:
    return next(b for b in benchmarks if b.name == name).texts[row]


def _grams(toks: Sequence[str], n: int, pad: bool = True) -> set[tuple[str, ...]]:
    if len(toks) < n:
        return {tuple(toks)} if pad and toks else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def build_ngram_index(benchmarks: Iterable[Benchmark], n: int) -> NgramIndex:
    index = NgramIndex(n)
    for bench in benchmarks:
        index.add(bench)
    return index


def row_texts(rows: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each row's string values of `columns` (those it has), one per line: the text checked against benchmarks."""
    present = [c for c in columns if c in rows.columns]
    if not present:
        return [""] * len(rows)
    return [
        "\n".join(v for v in values if isinstance(v, str) and v)
        for values in rows[present].itertuples(index=False, name=None)
    ]
