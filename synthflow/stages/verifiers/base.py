"""What a verifier is: a callable over a table of candidates returning one verdict per row."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from synthflow.spec import PipelineSpec

VERDICT_COLUMNS = ("ok", "score", "reason")


@dataclass(frozen=True)
class Needs:
    """What a verifier calls besides the rows: generators of the resource profile by name, and whether it embeds
    (through the spec's `diversity.embedder`). A verifier's parameter model declares it with `requires()`, so the
    Dagster layer can give the round step exactly those resources."""

    generators: tuple[str, ...] = ()
    embedder: bool = False


@dataclass
class VerifyContext:
    """What verifiers may look at besides the candidates.

    `reference` holds seed and real rows, `accepted` the synthetic rows accepted earlier (previous rounds and
    earlier batches of this round); both carry the output columns and `_text`, the text used for dedup.
    """

    spec: PipelineSpec
    reference: pd.DataFrame
    accepted: pd.DataFrame
    generators: Mapping[str, Any] = field(default_factory=dict)
    embedder: Any | None = None
    log: Callable[[str], None] = lambda msg: None
    state: dict[str, Any] = field(default_factory=dict)  # per-round scratch space shared by verifiers


class Verifier(Protocol):
    name: str

    def __call__(self, rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        """Return a frame with the index of `rows` and columns ok (bool), score (float, NaN when none), reason."""
        ...


def verdicts(index: pd.Index, ok: Any, reason: Any = None, score: Any = float("nan")) -> pd.DataFrame:
    """Build a verdict frame; `reason` is dropped where ok is True."""
    out = pd.DataFrame({"ok": ok, "score": score, "reason": reason}, index=index)
    out["ok"] = out["ok"].astype(bool)
    out["score"] = pd.to_numeric(out["score"], errors="coerce").astype(float)
    out["reason"] = out["reason"].where(~out["ok"], None).astype(object)
    return out
