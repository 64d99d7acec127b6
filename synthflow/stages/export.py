"""Export a training set: a Hugging Face `datasets` dataset (any fsspec URL, or the hub) or Parquet at a URL.

Every column travels, provenance columns (`_source`, `_round`, `_model`, ...) included, and a dataset card
(README.md, from `dataset_card.py`) goes beside the data. The hub token comes only from the
environment (HF_TOKEN) and never appears in a result, a log line or the card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import fsspec
import pandas as pd

TOKEN_ENV = "HF_TOKEN"


class ExportError(RuntimeError):
    """The export target cannot be written (missing token, no target, bad URL)."""


@dataclass(frozen=True)
class ExportTarget:
    format: Literal["hf", "parquet"] = "hf"
    url: str | None = None  # fsspec URL: a folder for `hf`, a folder or a .parquet file for `parquet`
    hub_repo: str | None = None  # dataset repo id for push_to_hub (format `hf` only)
    private: bool = True

    @property
    def location(self) -> str:
        """Where the data lands, as shown to users (never carries a token)."""
        return f"hf://datasets/{self.hub_repo}" if self.hub_repo and not self.url else str(self.url)


@dataclass(frozen=True)
class ExportResult:
    location: str
    rows: int
    columns: list[str]
    card_location: str


def export_table(
    table: pd.DataFrame, card: str, target: ExportTarget, storage_options: dict | None = None
) -> ExportResult:
    """Write `table` and its card to `target`; a URL wins over a hub repo when both are set."""
    if target.url:
        if target.format == "parquet":
            card_at = _write_parquet(table, card, target.url, storage_options or {})
        else:
            card_at = _save_to_disk(table, card, target.url, storage_options or {})
    elif target.hub_repo:
        if target.format != "hf":
            raise ExportError("export to the hub needs format: hf")
        card_at = _push_to_hub(table, card, target.hub_repo, target.private)
    else:
        raise ExportError("nothing to export to: set export.url or export.hub_repo (or pass --to URL)")
    return ExportResult(target.location, len(table), [str(c) for c in table.columns], card_at)


def to_dataset(table: pd.DataFrame):
    import datasets

    return datasets.Dataset.from_pandas(table.reset_index(drop=True), preserve_index=False)


def _save_to_disk(table: pd.DataFrame, card: str, url: str, storage_options: dict) -> str:
    to_dataset(table).save_to_disk(url, storage_options=storage_options)
    return _write_text(f"{url.rstrip('/')}/README.md", card, storage_options)


def _write_parquet(table: pd.DataFrame, card: str, url: str, storage_options: dict) -> str:
    """A URL ending in .parquet is the file itself (card beside it as <stem>.README.md); otherwise a folder in
    the hub's layout: data/train-00000-of-00001.parquet and README.md."""
    if url.endswith(".parquet"):
        data_url, card_url = url, url[: -len(".parquet")] + ".README.md"
    else:
        base = url.rstrip("/")
        data_url, card_url = f"{base}/data/train-00000-of-00001.parquet", f"{base}/README.md"
    fs, path = fsspec.core.url_to_fs(data_url, **storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        table.reset_index(drop=True).to_parquet(f, index=False)
    return _write_text(card_url, card, storage_options)


def _write_text(url: str, text: str, storage_options: dict) -> str:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return url


def hub_token() -> str:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ExportError(
            f"export to the Hugging Face hub needs a token in the {TOKEN_ENV} environment variable"
        )
    return token


def _push_to_hub(table: pd.DataFrame, card: str, repo: str, private: bool) -> str:
    """Data first (datasets writes the card's dataset_info/configs header), then our card text under that
    header, so the hub's viewer keeps working and the card says how the data was made."""
    from huggingface_hub import DatasetCard

    token = hub_token()
    to_dataset(table).push_to_hub(repo, private=private, token=token)
    ours = DatasetCard(card)
    theirs = DatasetCard.load(repo, token=token, repo_type="dataset")
    merged = DatasetCard(f"---\n{_merged_yaml(theirs.data.to_dict(), ours.data.to_dict())}---\n{ours.text}")
    merged.push_to_hub(repo, token=token, repo_type="dataset")
    return f"hf://datasets/{repo}/README.md"


def _merged_yaml(base: dict, extra: dict) -> str:
    import yaml

    return yaml.safe_dump({**base, **extra}, sort_keys=False)
