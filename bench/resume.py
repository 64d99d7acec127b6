"""G3: kill a round mid-generation (SIGKILL to the `synthflow run` process), run it again, and measure.

Criterion: requests re-sent <= the requests sent and not stored at the kill: at most `max_concurrency` in flight plus
the backend's `result_buffer` (default `max_concurrency`) of results waiting for the round, and every result the round
takes is fsynced to the request cache's log as it arrives, so nothing the round took is lost; and the
final rows are identical to an uninterrupted run with the same seeds. It runs at concurrency 1 and 32. The kill
comes once the server has finished `kill_after` requests, a point that does not depend on how synthflow stores
them. Requests are counted by the vLLM server itself (`vllm:request_success_total` on its /metrics), so nothing in
synthflow's own bookkeeping is trusted.

The same driver backs tests/test_resume.py, which also checks that the killed run does not stay STARTED.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from synthflow.stages.cache import stored_results
from synthflow.store import Store

REPO = Path(__file__).resolve().parent.parent

SPEC = """\
name: resume_probe
description: A tiny pipeline for the resume benchmark.
seed:
  source: data/math_word_problems.jsonl
  id_column: id
  text: question
  columns:
    - {{name: id, type: string}}
    - {{name: question, type: string}}
generate:
  prompt: "Write a short question like: {{{{ exemplars[0].question }}}}"
  few_shot: 1
  output_schema:
    type: object
    properties:
      question: {{type: string, maxLength: 40}}
    required: [question]
  rows_per_round: {rows}
  candidate_budget: {rows}
  batch_size: {rows}
  store_every: {chunk}
  sampling: {{temperature: 1.0, max_tokens: 40, seed: 11}}
verify:
  - type: schema
"""

PROFILE = """\
store:
  root: {store}
generators:
  generator:
    backend: openai
    model: {model}
    options: {{max_concurrency: {concurrency}, max_retries: 1}}
embedders:
  embedder:
    model: all-MiniLM-L6-v2
"""


@dataclass
class ResumeResult:
    total: int  # candidates in the round
    chunk: int  # generate.store_every (Parquet chunk size; only object stores write results in chunks)
    concurrency: int  # the openai backend's max_concurrency: the bound on re-sent requests
    sent_before_kill: int  # requests the server received before the kill
    stored_before_kill: int  # results that reached the cache before the kill
    sent_after: int  # requests the server received from the resumed run
    resent: int  # requests sent twice
    identical: bool | None  # final rows equal to the uninterrupted run (None when not compared)
    run_statuses: list[str]  # Dagster statuses of the killed and the resumed run, oldest first

    @property
    def in_flight(self) -> int:
        """Requests the server received before the kill whose results were not stored."""
        return self.sent_before_kill - self.stored_before_kill

    @property
    def bound(self) -> int:
        """Requests a killed round may re-send: the openai backend's `max_concurrency` in flight plus its
        `result_buffer` (default `max_concurrency`) of results waiting for the round to store them."""
        from synthflow.generators.openai_backend import OpenAIGenerator

        return self.concurrency + OpenAIGenerator("probe", max_concurrency=self.concurrency).result_buffer

    @property
    def ok(self) -> bool:
        return 0 <= self.resent <= self.bound and self.identical is not False


def server_requests(base_url: str) -> int:
    """Finished requests the server has counted (every finish reason, aborts included)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return int(sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)))


def make_project(root: Path, store: Path, model: str, rows: int, chunk: int, concurrency: int = 1) -> Path:
    (root / "assets" / "data").mkdir(parents=True, exist_ok=True)
    (root / "resources").mkdir(exist_ok=True)
    shutil.copy(REPO / "assets" / "data" / "math_word_problems.jsonl", root / "assets" / "data")
    (root / "assets" / "resume_probe.yaml").write_text(SPEC.format(rows=rows, chunk=chunk))
    (root / "resources" / "probe.yaml").write_text(PROFILE.format(store=store, model=model, concurrency=concurrency))
    return root


def _env(project: Path, base_url: str, api_key: str | None) -> dict[str, str]:
    env = {**os.environ, "SYNTHFLOW_HOME": str(project / ".synthflow"), "OPENAI_BASE_URL": base_url,
           "HF_HUB_OFFLINE": "1"}
    env.pop("DAGSTER_HOME", None)
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    return env


def _cmd() -> list[str]:
    return [sys.executable, "-m", "synthflow.cli", "run", "assets/resume_probe.yaml", "--rounds", "1", "-p", "probe"]


def cached_results(store: Path) -> int:
    return stored_results(Store(str(store)), "resume_probe")


def run_once(project: Path, base_url: str, api_key: str | None, timeout: float = 900) -> None:
    out = subprocess.run(_cmd(), cwd=project, env=_env(project, base_url, api_key), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"synthflow run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def run_killed(project: Path, base_url: str, api_key: str | None, kill_after: int, timeout: float = 900) -> None:
    """Start a round and SIGKILL it once the server has finished `kill_after` of its requests."""
    start = server_requests(base_url)
    proc = subprocess.Popen(_cmd(), cwd=project, env=_env(project, base_url, api_key), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while server_requests(base_url) - start < kill_after:
            if proc.poll() is not None:
                raise RuntimeError(f"the round ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("no results stored in time")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_STATUSES = """
import dagster as dg
with dg.DagsterInstance.get() as i:
    print(" ".join(r.dagster_run.status.value for r in reversed(i.get_run_records())))
"""


def run_statuses(project: Path) -> list[str]:
    """Statuses of the project's Dagster runs, oldest first (read in a child: DAGSTER_HOME is per process)."""
    env = {**os.environ, "DAGSTER_HOME": str(project / ".synthflow" / "dagster")}
    out = subprocess.run([sys.executable, "-c", _STATUSES], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.split()


def final_rows(store: Path, partition: str) -> pd.DataFrame:
    df = Store(str(store)).read("resume_probe", "candidates", partition)
    return df[["candidate_id", "raw_text"]].sort_values("candidate_id").reset_index(drop=True)


def measure(base_url: str, api_key: str | None, model: str, *, rows: int = 24, chunk: int = 4,
            concurrency: int = 1, kill_after: int | None = None, compare: bool = True) -> ResumeResult:
    """Kill once the server finished `kill_after` requests (default: two chunks), resume; optionally compare
    against an uninterrupted run in another store."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        identical = None
        if compare:
            clean = make_project(tmp / "clean", tmp / "clean_store", model, rows, chunk, concurrency)
            run_once(clean, base_url, api_key)
        store = tmp / "store"
        project = make_project(tmp / "killed", store, model, rows, chunk, concurrency)
        before = server_requests(base_url)
        run_killed(project, base_url, api_key, kill_after=kill_after or 2 * chunk)
        time.sleep(1.0)  # let the server finish or abort what was in flight, so it is counted before the rerun
        stored = cached_results(store)
        mid = server_requests(base_url)
        run_once(project, base_url, api_key)
        after = server_requests(base_url)
        sent_before, sent_after = mid - before, after - mid
        if compare:
            identical = final_rows(store, "2026-01-01").equals(final_rows(tmp / "clean_store", "2026-01-01"))
        return ResumeResult(rows, chunk, concurrency, sent_before, stored, sent_after, sent_before + sent_after - rows,
                            identical, run_statuses(project))


def main() -> int:
    sys.path.insert(0, str(REPO))
    from synthflow.generators.smoke_model import build_smoke_model
    from tests.fixtures.vllm_server import VLLMServer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_smoke_model(Path(tmp) / "model")
        server = VLLMServer(model_dir, Path(tmp) / "server.log")
        server.start()
        try:
            results = [
                measure(server.base_url, server.api_key, server.served_model_name, **kw) for kw in SETTINGS
            ]
        finally:
            server.stop()
    print(f"{'id':<4} {'task':<44} {'criterion':<44} {'ours':<40} pass")
    for r in results:
        task = f"kill a round mid-generation (concurrency {r.concurrency})"
        ours = f"re-sent {r.resent} (in flight {r.in_flight}); identical={r.identical}"
        print(f"{'G3':<4} {task:<44} {f're-sent <= {r.bound} sent, unstored; rows identical':<44} {ours:<40} "
              f"{'yes' if r.ok else 'NO'}")
        print(f"     sent before kill {r.sent_before_kill}, stored {r.stored_before_kill}, sent on resume "
              f"{r.sent_after}, total {r.total}, store_every {r.chunk}; runs {' -> '.join(r.run_statuses)}")
    return 0 if all(r.ok for r in results) else 1


# Concurrency 1 (one request in flight) and 32 (the backend's default); at 32 the kill comes mid-round, with
# 32 requests in flight and store_every far above what a chunked cache would have written by then.
SETTINGS = (
    {"rows": 24, "chunk": 4, "concurrency": 1, "kill_after": 8},
    {"rows": 128, "chunk": 64, "concurrency": 32, "kill_after": 48},
)


if __name__ == "__main__":
    sys.exit(main())
