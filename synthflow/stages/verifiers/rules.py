"""The `rules` verifier: cheap programmatic checks on the generated text.

Length bounds, required and forbidden regexes per column, the language of the text and stop phrases (refusals and
assistant boilerplate that should never reach a training set). Every failing check adds its own reason, so a
rejected row says all that is wrong with it, not only the first thing.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthflow.stages.verifiers.base import VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register

DEFAULT_STOP_PHRASES = (
    "as an ai",
    "as a language model",
    "as an ai language model",
    "as a large language model",
    "i'm just an ai",
    "i am an ai",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable to",
    "i am unable to",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize",
    "i'm not able to",
    "my knowledge cutoff",
    "my training data",
    "i don't have personal",
    "openai",
    "cannot fulfill",
    "against my guidelines",
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The most frequent short words of each language, chosen to overlap little between languages. Enough to tell
# these languages apart on a sentence or two; a full identifier would be overkill for rejecting off-language rows.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and of to is in that it was for with as his on be at by this had not are but from have they you "
        "she which were her all their what there been one would so if will when who how many much each more "
        "he has its than then them these does did an"
    ),
    "de": _words(
        "der die und das ist nicht den von zu mit sich des auf für im dem ein eine einen auch es an als wie "
        "bei wird sind noch nach werden aus aber hat oder wenn so einer um ich sie er wir viele wieviel"
    ),
    "fr": _words(
        "le la les et des est une un du que qui dans pour pas sur au avec il elle ce sont par plus ne se "
        "mais ou leur nous vous aux cette été être ont fait combien chaque"
    ),
    "es": _words(
        "el la los las y que del se en un una es por con para no su al lo como más pero sus le ha este "
        "esta son entre cuando muy sin sobre también fue hay cuántos cuántas cada"
    ),
    "it": _words(
        "il di che è e la per un una non sono del della le gli nel alla anche ma come più questo ha dei "
        "delle quanti quante ogni"
    ),
    "pt": _words(
        "o de que e do da em um uma para com não os no na se por mais as dos como mas ao ele das à seu "
        "sua ou quando muito nos já também quantos quantas cada"
    ),
    "nl": _words(
        "de het een en van is dat niet in op te zijn voor met die er aan ook als bij door maar om hij ze "
        "wordt nog naar heeft hoeveel elke"
    ),
}
LATIN = "latin"  # any text written mostly in the Latin script
KNOWN_LANGUAGES = (*STOPWORDS, LATIN)

_WORDS = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_LETTER = re.compile(r"[^\W\d_]")


class LengthBound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=1)


class RulesParams(VerifierParams):
    lengths: dict[str, LengthBound] = {}  # column -> bounds; `_text` is the dedup text
    require: dict[str, list[str]] = {}  # column -> regexes that must each match somewhere (re.search)
    forbid: dict[str, list[str]] = {}  # column -> regexes that must not match
    language: list[str] | None = (
        None  # allowed languages: en de fr es it pt nl, or `latin` for the script only
    )
    language_columns: list[str] = ["_text"]
    min_language_words: int = Field(default=4, ge=1)  # shorter texts are not judged (too few words to tell)
    stop_phrases: list[str] | None = None  # None: DEFAULT_STOP_PHRASES; [] turns the check off
    extra_stop_phrases: list[str] = []  # added to the defaults
    stop_phrase_columns: list[str] | None = None  # None: every string field of the output

    @field_validator("require", "forbid")
    @classmethod
    def _regexes_compile(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for col, patterns in v.items():
            for p in patterns:
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"{col}: {p!r} is not a valid regular expression: {e}") from e
        return v

    @field_validator("language", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _languages_known(self) -> RulesParams:
        for lang in self.language or []:
            if lang not in KNOWN_LANGUAGES:
                raise ValueError(
                    f"language {lang!r} is not supported; use one of {', '.join(KNOWN_LANGUAGES)}"
                )
        return self

    @property
    def phrases(self) -> list[str]:
        base = DEFAULT_STOP_PHRASES if self.stop_phrases is None else self.stop_phrases
        return [*base, *self.extra_stop_phrases]


def column_values(rows: pd.DataFrame, column: str, verifier: str) -> pd.Series:
    """A column of the candidate table (every output_schema property is one), or an error naming the verifier."""
    if column in rows.columns:
        return rows[column]
    raise ValueError(f"verifier {verifier!r}: column {column!r} is not in the generated rows")


@register("rules", RulesParams)
def rules_verifier(name: str, params: RulesParams):
    required = {c: [re.compile(p) for p in ps] for c, ps in params.require.items()}
    forbidden = {c: [re.compile(p) for p in ps] for c, ps in params.forbid.items()}
    phrases = [(p, _normalize(p)) for p in params.phrases if p.strip()]

    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        failures: list[list[str]] = [[] for _ in range(len(rows))]

        def add(pos: int, reason: str) -> None:
            failures[pos].append(reason)

        for col, bound in params.lengths.items():
            for pos, value in enumerate(column_values(rows, col, name)):
                for reason in _length_failures(col, _text(value), bound):
                    add(pos, reason)
        for col, patterns in required.items():
            for pos, value in enumerate(column_values(rows, col, name)):
                if value is None or value is pd.NA or (isinstance(value, float) and value != value):
                    add(pos, f"{col} is missing")
                    continue
                for p in patterns:
                    if not p.search(_text(value)):
                        add(pos, f"{col} does not match required pattern {p.pattern!r}")
        for col, patterns in forbidden.items():
            for pos, value in enumerate(column_values(rows, col, name)):
                for p in patterns:
                    m = p.search(_text(value))
                    if m:
                        add(pos, f"{col} matches forbidden pattern {p.pattern!r} at {m.group(0)[:40]!r}")
        if params.language:
            for col in params.language_columns:
                for pos, value in enumerate(column_values(rows, col, name)):
                    reason = _language_failure(col, _text(value), params.language, params.min_language_words)
                    if reason:
                        add(pos, reason)
        if phrases:
            for pos, (_, row) in enumerate(rows.iterrows()):
                for col, text in _phrase_fields(row, params.stop_phrase_columns, name):
                    norm = _normalize(text)
                    hit = next((p for p, n in phrases if n in norm), None)
                    if hit is not None:
                        add(pos, f"{col} contains stop phrase {hit!r}")
        reason = pd.Series(["; ".join(f) if f else None for f in failures], index=rows.index, dtype=object)
        return verdicts(rows.index, reason.isna(), reason)

    verify.name = name
    return verify


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _normalize(text: str) -> str:
    """Case, apostrophe and whitespace variants of a phrase compare equal ("I can’t" vs "i  can't")."""
    return re.sub(r"\s+", " ", text.replace("’", "'").replace("‘", "'")).casefold().strip()


def _length_failures(col: str, text: str, b: LengthBound) -> list[str]:
    out = []
    chars, words = len(text), len(text.split())
    if b.min_chars is not None and chars < b.min_chars:
        out.append(f"{col} has {chars} characters, fewer than {b.min_chars}")
    if b.max_chars is not None and chars > b.max_chars:
        out.append(f"{col} has {chars} characters, more than {b.max_chars}")
    if b.min_words is not None and words < b.min_words:
        out.append(f"{col} has {words} words, fewer than {b.min_words}")
    if b.max_words is not None and words > b.max_words:
        out.append(f"{col} has {words} words, more than {b.max_words}")
    return out


def _phrase_fields(row: pd.Series, columns: list[str] | None, verifier: str) -> list[tuple[str, str]]:
    if columns is None:
        output = row.get("_output")
        if isinstance(output, dict):
            return [(k, v) for k, v in output.items() if isinstance(v, str)]
        return [("_text", _text(row.get("_text")))]
    missing = [c for c in columns if c not in row.index]
    if missing:
        raise ValueError(f"verifier {verifier!r}: column {missing[0]!r} is not in the generated rows")
    return [(c, _text(row[c])) for c in columns]


def detect_language(text: str) -> tuple[str | None, dict[str, float], float]:
    """(best language or None, stopword share per language, share of letters in the Latin script).

    None when no stopword of any known language occurs.
    """
    letters = _LETTER.findall(text)
    latin = sum(1 for ch in letters if _is_latin(ch)) / len(letters) if letters else 0.0
    words = [w.casefold().replace("’", "'") for w in _WORDS.findall(text)]
    if not words:
        return None, {}, latin
    counts = Counter(words)
    shares = {
        lang: sum(n for w, n in counts.items() if w in sw) / len(words) for lang, sw in STOPWORDS.items()
    }
    best = max(shares, key=lambda k: shares[k])
    return (best if shares[best] > 0 else None), shares, latin


def _is_latin(ch: str) -> bool:
    # Basic Latin, Latin-1 Supplement, Latin Extended-A/B and Additional: what these languages are written in.
    cp = ord(ch)
    return cp < 0x250 or 0x1E00 <= cp <= 0x1EFF


def _language_failure(col: str, text: str, allowed: list[str], min_words: int) -> str | None:
    if len(_WORDS.findall(text)) < min_words:
        return None
    best, shares, latin = detect_language(text)
    if LATIN in allowed and latin >= 0.9:
        return None
    languages = [lang for lang in allowed if lang != LATIN]
    if not languages:
        return f"{col} is not written in the Latin script ({latin:.0%} Latin letters)"
    if latin < 0.8:
        return f"{col} is not in {'/'.join(languages)}: only {latin:.0%} of its letters are Latin script"
    if best is None:
        return f"{col} is not in {'/'.join(languages)}: none of its words is a common word of those languages"
    top = max(shares.values())
    if any(shares[lang] >= top for lang in languages):
        return None
    ours = max(languages, key=lambda k: shares[k])
    return f"{col} looks like {best} ({shares[best]:.0%} stopwords), not {ours} ({shares[ours]:.0%})"
