"""Small text helpers shared by stages."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

_WS = re.compile(r"\s+")


def normalize_text(text: object) -> str:
    """Case-, width- and whitespace-insensitive form used for exact duplicate detection."""
    s = unicodedata.normalize("NFKC", "" if text is None else str(text)).casefold()
    return _WS.sub(" ", s).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)", re.DOTALL)


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a completion that starts with `<think>...</think>` (an unclosed block is all
    reasoning: the model ran out of tokens while thinking); (None, text) when there is none."""
    m = _THINK.match(text or "")
    if m is None:
        return None, text
    return m.group(1).strip(), text[m.end() :].strip()


def load_generated_json(text: str) -> Any:
    """Generated JSON as Python values. Raw control characters (U+0000-U+001F) inside strings are read as the
    characters they are: RFC 8259 says they must be escaped, but a grammar-constrained server (vLLM's xgrammar
    guided JSON) emits them unescaped, and in a string they are unambiguous. Everything else JSON forbids (trailing
    text, a second value, a cut-off object) still raises."""
    return json.loads(text, strict=False)
