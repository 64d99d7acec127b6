"""The one table layout every benchmark prints: padded columns, a rule under the header, a pass column."""

from __future__ import annotations

from collections.abc import Sequence


def verdict(passed: bool | None, unjudged: str = "reported") -> str:
    """The pass column: `unjudged` for a row that has no criterion (or was not run)."""
    return unjudged if passed is None else "yes" if passed else "NO"


def print_cells(header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)), flush=True)
