"""Resume: SIGKILL `synthflow run` mid-round, run it again, and count what the vLLM server received."""

from __future__ import annotations

import pytest

from bench.resume import measure


@pytest.mark.vllm
@pytest.mark.slow
def test_killed_round_resends_at_most_one_chunk_and_ends_identical(live_vllm_server):
    server = live_vllm_server
    r = measure(server.base_url, server.api_key, server.served_model_name, rows=24, chunk=4, compare=True)
    assert r.stored_before_kill >= 8, r
    # The resumed run sends exactly the requests that had no stored result ...
    assert r.sent_after == r.total - r.stored_before_kill, r
    # ... so what is sent twice is what was in flight or unstored at the kill: at most one chunk.
    assert 0 <= r.resent <= r.chunk, r
    assert r.identical, "the resumed round must end with the rows of an uninterrupted run"
