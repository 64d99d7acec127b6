"""Retry policy for remote generation: which failures are worth retrying, and how long to wait between tries.

Kept apart from the HTTP code so the policy can be read (and tested) on its own, and reused by any backend that
talks to a server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# Failure kinds: the text before the first ":" of GenerationResult.error, counted in Usage.failures.
CONNECTION = "connection"  # refused, reset, dropped mid-response: the server is (maybe briefly) gone
TIMEOUT = "timeout"
RATE_LIMIT = "rate_limit"  # HTTP 429
SERVER = "server_error"  # HTTP 5xx
CLIENT = "bad_request"  # HTTP 4xx other than 408/429: retrying cannot help
INVALID_RESPONSE = "invalid_response"  # 200 with a body we cannot read

RETRYABLE = frozenset({CONNECTION, TIMEOUT, RATE_LIMIT, SERVER})
# Kinds that mean "nobody answered"; when every request ends in one of these the endpoint is down, not the sample.
TRANSPORT = frozenset({CONNECTION, TIMEOUT})


def kind_for_status(status: int) -> str:
    if status == 429:
        return RATE_LIMIT
    if status == 408:
        return TIMEOUT
    if status >= 500:
        return SERVER
    return CLIENT


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff and Jitter", 2015).

    Full jitter spreads the retries of many concurrent requests over the whole window, so a server that comes back
    is not hit by all of them at the same instant.
    """

    base_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based). A server's Retry-After wins, capped at max_s."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_s)
        cap = min(self.max_s, self.base_s * (2 ** (attempt - 1)))
        return rng.uniform(0.0, cap)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from inference servers and ignored)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL without user:password, query or fragment: safe to put in an error message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
