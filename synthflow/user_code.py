"""Loading a user's `module:function` (python generators, python verifiers), with errors that name it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def load_callable(
    target: str, *, what: str, search: Sequence[Path | str] = (), error: type[Exception] = ValueError
) -> Callable[..., Any]:
    """Import `module:function` (dotted attributes allowed); modules in the `search` folders (the spec's folder)
    are found too. Failures raise `error` with a message starting `{what} {target}: `."""
    module_name, _, attr = target.partition(":")
    added = [str(p) for p in search if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{what} {target}: cannot import {module_name!r}: {e}") from e
    finally:
        for p in added:
            sys.path.remove(p)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise error(f"{what} {target}: {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise error(f"{what} {target}: {attr!r} is not callable")
    return obj
