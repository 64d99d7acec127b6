"""G3: kill a round mid-generation (SIGKILL to the `synthflow run` process), run it again, and measure.

Criterion (shared/BENCHMARKS.md): requests re-sent <= one chunk (`generate.store_every`), and the final rows are
identical to an uninterrupted run with the same seeds. Requests are counted by the vLLM server itself
(`vllm:request_success_total` on its /metrics), so nothing in synthflow's own bookkeeping is trusted.

The same driver backs tests/test_resume.py.
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
    options: {{max_concurrency: 1, max_retries: 1}}
embedders:
  embedder:
    model: all-MiniLM-L6-v2
"""


@dataclass
class ResumeResult:
    total: int  # candidates in the round
    chunk: int  # results per stored chunk
    sent_before_kill: int  # requests the server received before the kill
    stored_before_kill: int  # results that reached the cache before the kill
    sent_after: int  # requests the server received from the resumed run
    resent: int  # requests sent twice
    identical: bool | None  # final rows equal to the uninterrupted run (None when not compared)


def server_requests(base_url: str) -> int:
    """Finished requests the server has counted (every finish reason, aborts included)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return int(sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)))


def make_project(root: Path, store: Path, model: str, rows: int, chunk: int) -> Path:
    (root / "assets" / "data").mkdir(parents=True, exist_ok=True)
    (root / "resources").mkdir(exist_ok=True)
    shutil.copy(REPO / "assets" / "data" / "math_word_problems.jsonl", root / "assets" / "data")
    (root / "assets" / "resume_probe.yaml").write_text(SPEC.format(rows=rows, chunk=chunk))
    (root / "resources" / "probe.yaml").write_text(PROFILE.format(store=store, model=model))
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
    import pyarrow.parquet as pq

    d = store / "resume_probe" / "_cache" / "generations"
    return sum(pq.read_metadata(p).num_rows for p in d.glob("*.parquet")) if d.exists() else 0


def run_once(project: Path, base_url: str, api_key: str | None, timeout: float = 900) -> None:
    out = subprocess.run(_cmd(), cwd=project, env=_env(project, base_url, api_key), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"synthflow run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def run_killed(project: Path, store: Path, base_url: str, api_key: str | None, kill_after: int,
               timeout: float = 900) -> None:
    """Start a round and SIGKILL it once `kill_after` results are stored."""
    proc = subprocess.Popen(_cmd(), cwd=project, env=_env(project, base_url, api_key), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while cached_results(store) < kill_after:
            if proc.poll() is not None:
                raise RuntimeError(f"the round ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("no results stored in time")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def final_rows(store: Path, partition: str) -> pd.DataFrame:
    from synthflow.store import Store

    df = Store(str(store)).read("resume_probe", "candidates", partition)
    return df[["candidate_id", "raw_text"]].sort_values("candidate_id").reset_index(drop=True)


def measure(base_url: str, api_key: str | None, model: str, *, rows: int = 24, chunk: int = 4,
            compare: bool = True) -> ResumeResult:
    """Kill after two chunks, resume; optionally compare against an uninterrupted run in another store."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        identical = None
        if compare:
            clean = make_project(tmp / "clean", tmp / "clean_store", model, rows, chunk)
            run_once(clean, base_url, api_key)
        store = tmp / "store"
        project = make_project(tmp / "killed", store, model, rows, chunk)
        before = server_requests(base_url)
        run_killed(project, store, base_url, api_key, kill_after=2 * chunk)
        time.sleep(1.0)  # let the server finish or abort what was in flight, so it is counted before the rerun
        stored = cached_results(store)
        mid = server_requests(base_url)
        run_once(project, base_url, api_key)
        after = server_requests(base_url)
        sent_before, sent_after = mid - before, after - mid
        if compare:
            identical = final_rows(store, "2026-01-01").equals(final_rows(tmp / "clean_store", "2026-01-01"))
        return ResumeResult(rows, chunk, sent_before, stored, sent_after, sent_before + sent_after - rows, identical)


def main() -> int:
    sys.path.insert(0, str(REPO))
    from synthflow.generators.smoke_model import build_smoke_model
    from tests.fixtures.vllm_server import VLLMServer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_smoke_model(Path(tmp) / "model")
        server = VLLMServer(model_dir, Path(tmp) / "server.log")
        server.start()
        try:
            r = measure(server.base_url, server.api_key, server.served_model_name)
        finally:
            server.stop()
    ok = r.resent <= r.chunk and bool(r.identical)
    print(f"{'id':<4} {'task':<44} {'criterion':<40} {'ours':<44} pass")
    print(f"{'G3':<4} {'kill a round mid-generation, rerun':<44} {'re-sent <= one chunk; rows identical':<40} "
          f"{f're-sent {r.resent} (chunk {r.chunk}); identical={r.identical}':<44} {'yes' if ok else 'NO'}")
    print(f"     sent before kill {r.sent_before_kill}, stored {r.stored_before_kill}, sent on resume {r.sent_after}, "
          f"total {r.total}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
