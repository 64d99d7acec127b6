"""The request cache: every result fsynced to a log as it arrives, so a SIGKILLed writer loses nothing it put();
logs of dead writers are read and compacted; object stores fall back to chunks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from synthflow.generators.base import GenerationResult
from synthflow.stages.cache import ResultCache, stored_results
from synthflow.store import Store

_WRITER = """
import sys, time
from synthflow.generators.base import GenerationResult
from synthflow.stages.cache import ResultCache
from synthflow.store import Store
cache = ResultCache(Store(sys.argv[1]), "p", chunk_size=1000)
for i in range(10_000):
    cache.put(GenerationResult(key=f"k{i}", text=f"text {i}\\nwith a newline", model="m", completion_tokens=i))
    print(i, flush=True)
    time.sleep(0.01)
"""


def _files(store: Store) -> list[str]:
    d = store.path("p", "_cache", "generations")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_sigkilled_writer_loses_nothing_it_put(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    done = -1
    while done < 24:
        done = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(str(root))
    # Every put() that returned is stored, far below the chunk size of 1000 (at most the one after it too).
    assert stored_results(store, "p") in (done + 1, done + 2)
    assert any(f.endswith(".log.jsonl") for f in _files(store))
    cache = ResultCache(store, "p")
    assert len(cache) >= done + 1
    hit = cache.get("k7")
    assert hit is not None and hit.text == "text 7\nwith a newline" and hit.completion_tokens == 7
    # The dead writer's log was compacted into a Parquet chunk by the reader and removed.
    assert [f for f in _files(store) if f.endswith(".log.jsonl")] == []
    assert len(ResultCache(store, "p")) == len(cache)


def test_torn_last_line_is_skipped_and_flush_compacts_the_own_log(tmp_path):
    store = Store(str(tmp_path / "store"))
    cache = ResultCache(store, "p")
    for i in range(3):
        cache.put(GenerationResult(key=f"k{i}", text="t", model="m"))
    cache.put(GenerationResult(key="bad", text="", model="m", error="timeout: x"))  # failures are not cached
    (log,) = [f for f in _files(store) if f.endswith(".log.jsonl")]
    with open(os.path.join(store.path("p", "_cache", "generations"), log), "ab") as f:
        f.write(b'{"key": "k9", "te')  # a writer killed mid-line
    assert len(ResultCache(store, "p")) == 3  # our own (live) log is read, not compacted
    cache.flush()
    assert [f for f in _files(store) if not f.endswith(".parquet")] == []
    fresh = ResultCache(store, "p")
    assert len(fresh) == 3 and "bad" not in fresh


def test_object_store_writes_chunks():
    store = Store(f"memory://cache-{uuid.uuid4().hex}")
    cache = ResultCache(store, "p", chunk_size=2)
    for i in range(3):
        cache.put(GenerationResult(key=f"k{i}", text="t", model="m"))
    assert stored_results(store, "p") == 2  # one full chunk; the third waits for flush()
    cache.flush()
    assert len(ResultCache(store, "p")) == 3
