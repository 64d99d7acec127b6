"""JSON-schema constrained decoding for a custom decode loop, on xgrammar.

xgrammar compiles a JSON schema into a grammar and gives, per step, a bitmask of the tokens that keep the output a
valid prefix; it works at the byte level, so any tokenizer (byte-level BPE included) is fine, and the mask is cheap
(microseconds for small vocabularies). That alone only guarantees a valid *prefix*: a model that never closes its
strings (random weights do exactly that) runs out of tokens mid-object. So each constrained row also watches its
budget: it keeps a "closing plan", the short string that completes the JSON from where the row is, and once the
remaining budget is barely enough for that plan the row stops sampling and writes the plan. Output then validates
whenever max_tokens leaves room for the schema's smallest instance.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Sequence
from typing import Any

import torch

# Tried in order when the grammar forces nothing. Outside strings, closers come first (they always make progress),
# then ',' (required keys or minItems still owed), then the shortest way to start a value: "" or a one-digit number.
_PREFS_OUTSIDE = ("}", "]", ",", '"', *"0123456789", "-", ".", "t", "f", "n", "[", "{", ":")
_PREFS_IN_STRING = ('"', "a", "0", " ")
_PREFS_ESCAPED = ("n", '"', "\\")
# Last resort (enums with several values, patterns): any printable ASCII character the grammar accepts.
_PREFS_ANY = tuple(c for c in string.printable if c not in "\t\n\r\x0b\x0c")
_MAX_PLAN_CHARS = 4096


class SchemaGuide:
    """Per-model state for constrained decoding: tokenizer info and a cache of compiled schemas."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._decoded: list[bytes] = list(self.info.decoded_vocab)
        # Raw control characters are never valid JSON here: not in strings (xgrammar's maxLength string rule lets
        # them through), and not between tokens (compact separators). So tokens holding one are masked for good.
        stops = set(stop_token_ids)
        clean = torch.tensor(
            [i in stops or not any(b < 0x20 for b in tok) for i, tok in enumerate(self._decoded)]
            + [False] * max(0, vocab_size - len(self._decoded)),
            dtype=torch.bool,
        )
        self.clean_words = _pack_bits(clean[:vocab_size])
        self._char_token: dict[bytes, int] = {}
        for i, b in enumerate(self._decoded):
            if len(b) == 1 and b not in self._char_token:
                self._char_token[b] = i

    def compile(self, schema: dict[str, Any]) -> Any:
        """Compile (and cache) a schema. Compact separators: a random model must not spend its budget on spaces."""
        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = self._compiler.compile_json_schema(
                    schema, any_whitespace=False, separators=(",", ":"), strict_mode=True
                )
            return self._compiled[key]

    def row(self, schema: dict[str, Any]) -> JsonRow:
        return JsonRow(self, self._xgr.GrammarMatcher(self.compile(schema)))

    def allocate_bitmask(self, batch: int) -> torch.Tensor:
        return self._xgr.allocate_token_bitmask(batch, self.vocab_size)

    def apply_bitmask(self, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
        """Mask disallowed tokens to -inf in place, only in `rows` of `logits` (float32, on any device)."""
        self._xgr.apply_token_bitmask_inplace(
            logits, bitmask.to(logits.device), vocab_size=self.vocab_size, indices=rows
        )

    def token_bytes(self, token_id: int) -> bytes:
        return self._decoded[token_id] if 0 <= token_id < len(self._decoded) else b""

    def plan_tokens(self, plan: str) -> list[int]:
        """Tokens that write `plan`; plain encoding when it round-trips, else one token per character."""
        ids = self.tokenizer.encode(plan, add_special_tokens=False)
        if b"".join(self.token_bytes(i) for i in ids) == plan.encode():
            return ids
        out = []
        for ch in plan.encode():
            tid = self._char_token.get(bytes([ch]))
            if tid is None:
                return ids
            out.append(tid)
        return out


class JsonRow:
    """The grammar state of one generated sequence, plus the bit of JSON lexing the closing plan needs."""

    def __init__(self, guide: SchemaGuide, matcher: Any) -> None:
        self.guide = guide
        self.matcher = matcher
        self.in_string = False
        self.escaped = False
        self.closing = False

    @property
    def terminated(self) -> bool:
        return bool(self.matcher.is_terminated())

    def fill_bitmask(self, bitmask: torch.Tensor, index: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, index)
        bitmask[index] &= self.guide.clean_words

    def allowed(self, bitmask: torch.Tensor, index: int, token_id: int) -> bool:
        word = int(bitmask[index, token_id // 32])
        return bool((word >> (token_id % 32)) & 1)

    def accept(self, token_id: int) -> bool:
        ok = bool(self.matcher.accept_token(token_id))
        if ok:
            self.in_string, self.escaped = _lex(
                self.guide.token_bytes(token_id), self.in_string, self.escaped
            )
        return ok

    def closing_plan(self) -> str | None:
        """The string this row would write to finish the JSON as fast as it can; None when no way is found."""
        m = self.matcher.fork()
        in_str, esc = self.in_string, self.escaped
        out: list[str] = []
        size = 0
        while not m.is_completed():
            if size > _MAX_PLAN_CHARS:
                return None
            forced = m.find_jump_forward_string()
            if forced and m.accept_string(forced):
                piece = forced
            else:
                prefs = (_PREFS_ESCAPED if esc else _PREFS_IN_STRING) if in_str else _PREFS_OUTSIDE
                piece = next((c for c in (*prefs, *_PREFS_ANY) if m.accept_string(c)), None)
                if piece is None:
                    return None
            in_str, esc = _lex(piece.encode(), in_str, esc)
            out.append(piece)
            size += len(piece)
        return "".join(out)


def _pack_bits(allowed: torch.Tensor) -> torch.Tensor:
    """A bool vector as xgrammar's bitmask row: int32 words, token i at bit i % 32 of word i // 32."""
    words = (allowed.numel() + 31) // 32
    padded = torch.zeros(words * 32, dtype=torch.int64)
    padded[: allowed.numel()] = allowed.to(torch.int64)
    weights = torch.tensor([1 << b for b in range(32)], dtype=torch.int64)
    packed = (padded.view(words, 32) * weights).sum(dim=1)
    # Reinterpret the low 32 bits as signed int32, the dtype xgrammar uses.
    return torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)


def _lex(data: bytes, in_string: bool, escaped: bool) -> tuple[bool, bool]:
    """Advance the string/escape state over grammar-valid JSON bytes."""
    for b in data:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_string = False
        elif b == 0x22:
            in_string = True
    return in_string, escaped
