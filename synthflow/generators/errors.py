"""Errors every backend raises the same way, so callers can decide without importing a backend."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded here (no network, no weights, no GPU)."""

    def __init__(self, model: str, reason: str):
        self.model = model
        self.reason = reason
        super().__init__(f"cannot load the model {model!r}: {reason}")


class EndpointUnavailable(RuntimeError):
    """An inference server could not be reached after retries."""
