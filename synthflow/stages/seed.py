"""Loading seed and real rows: local files, any fsspec URL, or a Hugging Face dataset id.

Local and fsspec files are read here (not through `datasets`) so that a broken row is reported with its file and
line; hub datasets (`hf://datasets/ID` or a bare `org/name` that is not a path) go through `datasets.load_dataset`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import fsspec
import pandas as pd

from synthflow.spec import DataSourceSpec, SeedSpec
from synthflow.text import text_hash


class SeedLoadError(ValueError):
    """A seed or real source that cannot be read; the message names the file and, where known, the line."""


def resolve_source(source: str, base_dir: Path) -> str:
    if "://" in source:
        return source
    p = Path(source)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _infer_format(url: str, declared: str | None) -> str:
    if declared:
        return declared
    name = url.split("?")[0].lower()
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    raise SeedLoadError(
        f"{url}: cannot tell the format from the file name; set `format:` (jsonl, csv or parquet)"
    )


def _decode(url: str, data: bytes, first_line: int = 1) -> str:
    """UTF-8 text; a bad byte is reported by its line and column, which a user can find in an editor."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SeedLoadError(
            f"{url}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); save the file as UTF-8"
        ) from None


def _json_problem(e: json.JSONDecodeError, line: str) -> str:
    if e.pos >= len(line) or e.msg.startswith("Unterminated string"):
        return "the JSON object is cut off (the line ends before it is closed)"
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


def _read_jsonl(url: str) -> pd.DataFrame:
    rows = []
    with fsspec.open(url, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(url, raw, lineno).rstrip("\r\n")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SeedLoadError(f"{url}:{lineno}: not valid JSON: {_json_problem(e, line)}") from None
            if not isinstance(obj, dict):
                raise SeedLoadError(
                    f"{url}:{lineno}: expected a JSON object per line, got {type(obj).__name__}"
                )
            rows.append(obj)
    return pd.DataFrame(rows)


def _is_hub_id(source: str, base_dir: Path) -> bool:
    if source.startswith("hf://datasets/"):
        return True
    return (
        "://" not in source
        and source.count("/") == 1
        and not (base_dir / source).exists()
        and not Path(source).suffix
    )


def load_table(src: DataSourceSpec, base_dir: Path, source: str | None = None) -> pd.DataFrame:
    source = source or src.source
    if _is_hub_id(source, base_dir):
        import datasets

        name = source.removeprefix("hf://datasets/")
        try:
            return datasets.load_dataset(name, split=src.split).to_pandas()
        except Exception as e:  # datasets raises many types; all mean "could not load"
            raise SeedLoadError(
                f"{source}: cannot load the Hugging Face dataset ({type(e).__name__}: {e})"
            ) from e
    url = resolve_source(source, base_dir)
    fmt = _infer_format(url, src.format)
    try:
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            raise SeedLoadError(f"{url}: file not found")
        if fs.size(path) == 0:
            raise SeedLoadError(f"{url}: the file is empty")
        if fmt == "jsonl":
            df = _read_jsonl(url)
        elif fmt == "csv":
            with fsspec.open(url, "rb") as f:
                df = pd.read_csv(io.StringIO(_decode(url, f.read())))
        else:
            with fsspec.open(url, "rb") as f:
                df = pd.read_parquet(f)
    except SeedLoadError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as e:
        raise SeedLoadError(f"{url}: cannot read as {fmt}: {e}") from e
    if df.empty:
        raise SeedLoadError(f"{url}: no rows")
    return df


def load_seed(spec: SeedSpec, base_dir: Path) -> pd.DataFrame:
    """Seed rows with `_id` (stable row id) and `_text` (the text used for embedding and dedup)."""
    df = load_table(spec, base_dir)
    return with_ids_and_text(df, spec)


def with_ids_and_text(df: pd.DataFrame, spec: SeedSpec, prefix: str = "seed") -> pd.DataFrame:
    df = df.reset_index(drop=True).copy()
    missing = [c for c in spec.text_columns if c not in df.columns]
    if spec.id_column and spec.id_column in df.columns:
        df["_id"] = df[spec.id_column].astype(str)
    else:
        df["_id"] = [f"{prefix}-{i + 1}" for i in range(len(df))]
    if missing:
        df["_text"] = ""
    else:
        df["_text"] = df[spec.text_columns].astype(str).agg("\n".join, axis=1)
    df["_text_hash"] = [text_hash(t) for t in df["_text"]]
    return df
