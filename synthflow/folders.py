"""Model folders built once and published atomically (the smoke model, converted GGUF models, static embedders)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def publish_folder(out: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """Build into a temporary sibling of `out` and rename it into place; reuse `out` when it is complete.

    Safe from several processes at once: a loser of the race discards its copy. A killed build never leaves a half
    folder at `out`; an incomplete `out` from an older build is moved aside and replaced.
    """
    if complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, out)
        except OSError:
            if complete(out):  # another process just finished: keep theirs
                return out
            stale = Path(tempfile.mkdtemp(prefix=f".{out.name}.stale-", dir=out.parent))
            os.rename(out, stale / out.name)
            os.rename(tmp, out)
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
