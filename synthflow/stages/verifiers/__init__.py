"""The verify chain: ordered verifiers, each giving every candidate a verdict (ok, score, reason)."""

from synthflow.stages.verifiers.base import Verifier, VerifyContext
from synthflow.stages.verifiers.chain import run_chain

__all__ = ["VerifyContext", "Verifier", "run_chain"]
