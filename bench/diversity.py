"""Diversity benchmarks D1-D3 and G4 of BENCHMARKS.md.

D1  Vendi score (cosine kernel) of 1,000,000 x 384 unit vectors from the d x d matrix: equal to the exact n x n
    definition on a 4,000-row subset to 1e-6 relative, and the full size in <= 15 s.
D2  Gap filling on a toy: seed = Zipf-weighted mixture of 30 Gaussian clusters, generator biased to the head
    (p ~ w^2). One unsteered round, then 3 rounds steered by GapPlanner; under-covered clusters (share ratio < 0.5)
    must be cut by >= 90% and KL(seed || synthetic) must end <= 0.15. Each round runs through the pipeline's
    round driver (`pipeline_run_round` -> a light-mode stages.session.RoundSession) with the toy world as the
    generator.
D3  Semantic dedup + clustering of 1,000,000 x 384 vectors (with planted near-duplicates): time and peak memory,
    side by side with semhash on the same vectors and threshold when semhash can be run. semhash builds a usearch
    HNSW index and queries every row (~2 minutes for 100,000 rows on 2 cores), so the side-by-side runs on a
    `--semhash-rows` set with its own planted pairs, both sides on the same file.
G4  Embedder vs plain SentenceTransformer.encode on the same texts, in paired trials in a fresh process: median
    throughput ratio >= 0.95; repeated texts are served from the cache (none reaches the model again).

Each D3 side runs in its own process so its peak memory (VmHWM) is its own. semhash is looked for in
$SEMHASH_PYTHON, --semhash-python, or this interpreter; without it D3 prints "semhash not installed" and is not
counted as failed.

    python -m bench.diversity                      # all
    python -m bench.diversity --only D1,D2 --rows 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.table import print_cells, verdict

REPO = Path(__file__).resolve().parent.parent
DIM = 384
THRESHOLD = 0.9  # semhash's default; the same for both sides


@dataclass
class Row:
    id: str
    task: str
    baseline: str
    ours: str
    ratio: str
    criterion: str
    passed: bool | None  # None: not run


def print_table(rows: Sequence[Row]) -> None:
    header = ["id", "task", "baseline", "ours", "ratio", "criterion", "pass"]
    print_cells(header, [[r.id, r.task, r.baseline, r.ours, r.ratio, r.criterion, verdict(r.passed, "not run")] for r in rows])


# -- synthetic vectors ------------------------------------------------------------------------------------------


def clustered_vectors(n: int, d: int = DIM, topics: int = 2000, dup_fraction: float = 0.05, seed: int = 0):
    """Unit vectors around `topics` directions (intra-topic cosine ~0.45, like sentence embeddings of one topic)
    with `dup_fraction` of the rows replaced by near-copies (cosine ~0.97) of other rows.

    Returns (vectors, planted pairs as (original, copy) positions). Noise is one 100,000-row block reused with a
    different column rotation per block: drawing 384 million normals costs more than everything measured here.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, d)).astype(np.float32)
    block = min(n, 100_000)
    noise = rng.standard_normal((block, d), dtype=np.float32)
    labels = rng.integers(0, topics, n)
    x = np.empty((n, d), dtype=np.float32)
    for b, start in enumerate(range(0, n, block)):
        stop = min(n, start + block)
        part = x[start:stop]
        part[:] = np.roll(noise[: stop - start], 37 * b, axis=1)
        part += centres[labels[start:stop]]
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    n_dup = int(n * dup_fraction)
    copies = np.sort(rng.choice(n, n_dup, replace=False))
    originals = rng.integers(0, n, n_dup)
    keep = ~np.isin(originals, copies)
    originals, copies = originals[keep], copies[keep]
    jitter = rng.standard_normal((len(copies), d), dtype=np.float32)
    jitter /= np.linalg.norm(jitter, axis=1, keepdims=True)
    y = x[originals] + 0.25 * jitter
    x[copies] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return x, np.stack([originals, copies], axis=1)


# -- D1 -----------------------------------------------------------------------------------------------------------


def bench_vendi(x: np.ndarray, subset: int = 4000) -> Row:
    from synthflow.stages.diversity.metrics import vendi_score, vendi_score_exact

    sub = x[np.random.default_rng(1).choice(len(x), min(subset, len(x)), replace=False)]
    exact = vendi_score_exact(sub)
    fast = vendi_score(sub)
    rel = abs(fast - exact) / exact
    times = []
    for _ in range(3):  # best of three: the machine is shared, and the best run is the least disturbed one
        start = time.perf_counter()
        full = vendi_score(x)
        times.append(time.perf_counter() - start)
    t = min(times)
    return Row(
        "D1",
        f"Vendi {len(x):,} x {x.shape[1]} (cosine)",
        f"exact n x n on {len(sub)}: {exact:.6f}",
        f"d x d on {len(sub)}: {fast:.6f}; {len(x):,} rows: {full:.3f} in {t:.1f} s (runs {', '.join(f'{v:.1f}' for v in times)})",
        f"rel err {rel:.1e}",
        "rel err <= 1e-6, full <= 15 s",
        rel <= 1e-6 and t <= 15,
    )


# -- D2 -----------------------------------------------------------------------------------------------------------


class ToyWorld:
    """The D2 toy: 30 Gaussian clusters with Zipf weights, and a generator that drifts to the head.

    Rows are texts "toy-<n>" whose embedding the world remembers, so they flow through GapPlanner (and through
    the pipeline's round machinery) like real generations; `embedder` looks them up.
    """

    def __init__(self, clusters: int = 30, d: int = 64, spread: float = 0.6, follow: float = 0.75, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        centres = self.rng.standard_normal((clusters, d))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.weights = 1.0 / np.arange(1, clusters + 1)
        self.weights /= self.weights.sum()
        self.head_bias = self.weights**2 / np.sum(self.weights**2)
        self.spread, self.follow, self.d = spread, follow, d
        self.vectors: list[np.ndarray] = []
        self.truth: list[int] = []
        self.embedder = _ToyEmbedder(self)

    def sample(self, clusters: np.ndarray) -> list[str]:
        noise = self.spread * self.rng.standard_normal((len(clusters), self.d)) / np.sqrt(self.d)
        v = self.centres[clusters] + noise
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        texts = [f"toy-{len(self.vectors) + i}" for i in range(len(clusters))]
        self.vectors.extend(v.astype(np.float32))
        self.truth.extend(int(c) for c in clusters)
        return texts

    def seed(self, n: int) -> pd.DataFrame:
        texts = self.sample(self.rng.choice(len(self.weights), n, p=self.weights))
        self.seed_texts = texts
        return pd.DataFrame({"_id": texts, "_text": texts})

    def generate(self, exemplars: Sequence[pd.DataFrame] | None, n: int) -> list[str]:
        """`n` generations. Shown exemplars (one frame of seed rows per prompt), the generator writes about their
        topic with probability `follow` and otherwise about what it likes (p ~ w^2); without exemplars it always
        writes what it likes."""
        liked = self.rng.choice(len(self.weights), n, p=self.head_bias)
        if exemplars is None:
            return self.sample(liked)
        shown = np.array([np.bincount([self.truth[int(t.split("-")[1])] for t in ex["_text"]]).argmax()
                          for ex in exemplars])
        follows = self.rng.random(n) < self.follow
        return self.sample(np.where(follows, shown, liked))


class _ToyEmbedder:
    def __init__(self, world: ToyWorld):
        self.world = world
        self.dim = world.d

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.world.vectors[int(t.split("-")[1])] for t in texts]) if len(texts) else np.empty((0, self.dim), np.float32)


RunRound = Callable[[int, Any, ToyWorld, int], pd.DataFrame]


def toy_run_round(round_index: int, planner: Any, world: ToyWorld, rows: int, batch: int = 50) -> pd.DataFrame:
    """The plain loop a round runs: plan -> generate -> verify -> observe (embed, assign, new deficits).

    `planner` None means an unsteered round. Verification here drops 10% of the candidates at random, standing in
    for a verify chain; the pipeline's machinery can replace this whole function (same signature).
    """
    rng = np.random.default_rng([round_index, 17])
    accepted: list[str] = []
    while len(accepted) < rows:
        n = min(batch, rows - len(accepted))
        if planner is None:
            texts = world.generate(None, n)
        else:
            texts = world.generate([ex for _, ex in planner.plan(n, rng)], n)
        texts = [t for t in texts if rng.random() >= 0.1]
        if planner is not None:
            planner.observe(pd.DataFrame({"_text": texts}))
        accepted.extend(texts)
    return pd.DataFrame({"_text": accepted})


_TOY_SPEC = """
name: toy
seed: {{source: unused.jsonl, text: text, columns: [{{name: text}}]}}
generate:
  prompt: "Write about the topic of {{{{ exemplars | length }}}} examples."
  few_shot: 3
  output_schema: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}
  rows_per_round: {rows}
  candidate_budget: {budget}
  batch_size: 100
verify: [{{type: schema}}]
"""


class _ToyGenerator:
    """The toy world behind synthflow's Generator protocol: it reads the exemplars a request shows (their ids are
    the seed rows' texts) and answers with JSON, like an LLM backend would."""

    model_id = label = "toy-world"

    def __init__(self, world: ToyWorld, steered: bool):
        self.world, self.steered = world, steered

    def generate(self, requests, progress=None):
        import json

        from synthflow.generators.base import GenerationResult

        requests = list(requests)
        shown = [pd.DataFrame({"_text": r.meta["exemplar_ids"]}) for r in requests] if self.steered else None
        for req, text in zip(requests, self.world.generate(shown, len(requests)), strict=True):
            yield req, GenerationResult(key="", text=json.dumps({"text": text}), model=self.model_id)

    def close(self) -> None:
        pass


def pipeline_run_round(round_index: int, planner: Any, world: ToyWorld, rows: int) -> pd.DataFrame:
    """One round through synthflow's round driver (a light-mode RoundSession around stages.round.run_round:
    planning, requests, the request cache, parsing, the verify chain, planner observation), with the toy world as
    the generator."""
    import uuid

    from synthflow.spec import parse_spec
    from synthflow.stages.accumulate import real_rows
    from synthflow.stages.seed import with_ids_and_text
    from synthflow.stages.session import RoundReads, RoundSession
    from synthflow.store import Store

    spec = parse_spec(_TOY_SPEC.format(rows=rows, budget=2 * rows))
    seed = with_ids_and_text(pd.DataFrame({"text": world.seed_texts}), spec.seed)
    seed["_id"] = seed["_text"]  # exemplar ids are the texts, which the toy world can look up
    # Each toy round stands alone (the caller accumulates the synthetic rows for its planner), so: no previous.
    keys = [f"r{i}" for i in range(round_index + 1)]
    session = RoundSession(spec, Store(f"memory://toy-{uuid.uuid4().hex}"), "toy", keys, persist=False, checks=(),
                           plots=False, keep_cache=False)
    result = session.run(
        RoundReads(seed=seed, real=real_rows(seed, ["text"], 0), previous=None, pool=None),
        generators={spec.generate.generator: lambda: _ToyGenerator(world, steered=planner is not None)},
        planner=planner,
    )
    return result.output.accepted[["_text"]].reset_index(drop=True)


def gap_filling_toy(
    run_round: RunRound = toy_run_round,
    rounds: int = 3,
    rows_per_round: int = 1000,
    seed_rows: int = 6000,
    exploration: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Round 0 unsteered, then `rounds` steered rounds; coverage of the accumulated synthetic rows before and after."""
    from synthflow.stages.diversity import GapPlanner, build_seed_map

    world = ToyWorld(seed=seed)
    seed_table = world.seed(seed_rows)
    seed_map = build_seed_map(world.embedder.encode(seed_table["_text"].tolist()), seed_table["_id"],
                              k=len(world.weights), seed=seed)
    synthetic = run_round(0, None, world, rows_per_round)
    history = []
    for r in range(1, rounds + 1):
        planner = GapPlanner(seed_table, seed_map, world.embedder, target="seed", exploration=exploration,
                             synthetic=synthetic)
        if r == 1:
            history.append(planner.report()["cumulative_coverage"])
        new = run_round(r, planner, world, rows_per_round)
        synthetic = pd.concat([synthetic, new], ignore_index=True)
        history.append(planner.report()["cumulative_coverage"])
    return {"before": history[0], "after": history[-1], "history": history}


def bench_gap_filling(run_round: RunRound = pipeline_run_round) -> Row:
    res = gap_filling_toy(run_round)
    b, a = res["before"], res["after"]
    cut = 1 - a["n_under_covered"] / max(b["n_under_covered"], 1)
    return Row(
        "D2",
        "gap filling, Zipf 30 clusters, 3 rounds",
        f"unsteered: {b['n_under_covered']}/30 under, KL {b['kl']:.2f}",
        f"{a['n_under_covered']}/30 under, KL {a['kl']:.3f}",
        f"cut {cut:.0%}",
        "cut >= 90%, KL <= 0.15",
        cut >= 0.9 and a["kl"] <= 0.15,
    )


# -- D3 -----------------------------------------------------------------------------------------------------------

# Peak memory is VmHWM (the high-water mark of this process's own address space): ru_maxrss would carry the
# parent's size across fork + exec.
_PEAK = """
def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
"""

_OURS_WORKER = _PEAK + """
import json, sys, time
import numpy as np
from synthflow.stages.diversity import build_seed_map, semantic_dedup
x = np.load(sys.argv[1]); threshold = float(sys.argv[2])
loaded = peak_kb()
t = time.perf_counter()
res = semantic_dedup(x, threshold)
t_dedup = time.perf_counter() - t
seed_map = build_seed_map(x, np.arange(len(x)))
total = time.perf_counter() - t
print(json.dumps({"seconds": total, "dedup_seconds": t_dedup, "removed": [int(i) for i in np.flatnonzero(~res.keep)],
                  "clusters": seed_map.k, "loaded_kb": loaded, "peak_kb": peak_kb()}))
"""

# Runs in whichever interpreter has semhash; needs only numpy and semhash. The records are the row numbers as
# strings; the encoder is never called, since from_embeddings and self_deduplicate use the given vectors.
_SEMHASH_WORKER = _PEAK + """
import json, sys, time
import numpy as np
from semhash import SemHash
class Unused:
    def encode(self, sentences, **kwargs):
        raise RuntimeError("vectors are given")
x = np.load(sys.argv[1]); threshold = float(sys.argv[2])
loaded = peak_kb()
t = time.perf_counter()
sh = SemHash.from_embeddings(x, [str(i) for i in range(len(x))], model=Unused())
res = sh.self_deduplicate(threshold=threshold)
total = time.perf_counter() - t
removed = [int(d.record) if isinstance(d.record, str) else int(next(iter(d.record.values()))) for d in res.filtered]
print(json.dumps({"seconds": total, "removed": removed, "loaded_kb": loaded, "peak_kb": peak_kb()}))
"""


def _run_worker(python: str, code: str, path: Path, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([python, "-c", code, str(path), str(THRESHOLD)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def find_semhash_python(explicit: str | None) -> str | None:
    for cand in (explicit, os.environ.get("SEMHASH_PYTHON"), sys.executable):
        if cand and subprocess.run([cand, "-c", "import semhash"], capture_output=True).returncode == 0:
            return cand
    return None


def _recall(removed: Sequence[int], pairs: np.ndarray) -> float:
    """Share of planted pairs of which at least one row was dropped."""
    if len(pairs) == 0:
        return 1.0
    gone = np.zeros(int(pairs.max()) + 1, dtype=bool)
    removed = np.asarray(removed, dtype=np.int64)
    gone[removed[removed <= pairs.max()]] = True
    return float(np.mean(gone[pairs[:, 0]] | gone[pairs[:, 1]]))


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def bench_dedup(x: np.ndarray, pairs: np.ndarray, semhash_rows: int, semhash_python: str | None) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-d3-") as tmp:
        full = Path(tmp) / "full.npy"
        np.save(full, x)
        ours = _run_worker(sys.executable, _OURS_WORKER, full, timeout=1200)
        recall = _recall(ours["removed"], pairs)
        rows.append(Row(
            "D3",
            f"dedup + clustering {len(x):,} x {x.shape[1]}",
            "semhash: see next row",
            f"{ours['seconds']:.1f} s (dedup {ours['dedup_seconds']:.1f} s, k-means k={ours['clusters']}), peak {_mb(ours['peak_kb'])} "
            f"(+{_mb(ours['peak_kb'] - ours['loaded_kb'])} over the vectors), {len(ours['removed']):,} dropped, "
            f"recall {recall:.4f}",
            "-",
            "report; recall >= 0.99",
            recall >= 0.99,
        ))
        python = find_semhash_python(semhash_python)
        if python is None:
            print("semhash not installed: D3 has no baseline (pip install semhash into this or another venv and "
                  "pass --semhash-python / SEMHASH_PYTHON)", flush=True)
            rows.append(Row("D3", "semhash baseline", "semhash not installed", "-", "-", "faster than semhash", None))
            return rows
        # A set of its own, so its planted pairs lie inside it (a prefix of the big set would hold few).
        sub, sub_pairs = clustered_vectors(semhash_rows, seed=1)
        n = len(sub)
        part = Path(tmp) / "part.npy"
        np.save(part, sub)
        del sub
        ours_n = _run_worker(sys.executable, _OURS_WORKER, part, timeout=1200)
        theirs = _run_worker(python, _SEMHASH_WORKER, part, timeout=3600)
        speedup = theirs["seconds"] / ours_n["seconds"]
        rows.append(Row(
            "D3",
            f"dedup {n:,} x {x.shape[1]} vs semhash, cos {THRESHOLD}",
            f"semhash {theirs['seconds']:.1f} s, peak {_mb(theirs['peak_kb'])}, {len(theirs['removed']):,} dropped, "
            f"recall {_recall(theirs['removed'], sub_pairs):.4f}",
            f"{ours_n['seconds']:.1f} s, peak {_mb(ours_n['peak_kb'])}, {len(ours_n['removed']):,} dropped, "
            f"recall {_recall(ours_n['removed'], sub_pairs):.4f}",
            f"{speedup:.1f}x faster",
            "faster than semhash",
            speedup > 1,
        ))
    return rows


# -- G4 -----------------------------------------------------------------------------------------------------------


def _bench_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    subjects = ["A farmer", "The library", "A cyclist", "Our team", "The bakery", "A student", "The city council",
                "An engineer", "The museum", "A nurse", "The orchestra", "A startup"]
    verbs = ["bought", "repaired", "counted", "painted", "shipped", "measured", "planned", "sold", "built", "tested"]
    objects = ["apples", "bridges", "chairs", "engines", "lanterns", "maps", "notebooks", "pianos", "rockets", "tents"]
    tails = ["before noon", "in the rain", "for the festival", "after a long week", "with two friends",
             "despite the delay", "at half price", "on the coast"]
    out, seen = [], set()
    while len(out) < n:
        words = int(rng.integers(0, 12))
        extra = " ".join(rng.choice(tails, size=words // 4 + 1))
        t = (f"{rng.choice(subjects)} {rng.choice(verbs)} {int(rng.integers(2, 999))} {rng.choice(objects)} "
             f"{extra}.")
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def bench_embedder(n: int = 1200, trials: int = 12) -> list[Row]:
    """Paired trials: each encodes a fresh slice of texts with both sides, in alternating order; the criterion is
    the median of the per-trial throughput ratios, which a shared machine's load swings disturb far less than a
    comparison of two long runs."""
    from synthflow.embedding import Embedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = _bench_texts(n + 64)
    warm, texts = texts[:64], texts[64:]
    per = len(texts) // trials
    shared = Embedder("all-MiniLM-L6-v2")
    model = shared.model
    ratios, plain_t, ours_t, diffs = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-g4-") as tmp:
        emb = Embedder("all-MiniLM-L6-v2", batch_size=64, cache_url=f"{tmp}/cache")
        emb.use_model(model)
        # Warm-up, untimed: lazy initialisation in torch, and pyarrow/fsspec imports on the first cache write.
        model.encode(warm, batch_size=64)
        emb.encode(warm)
        for i in range(trials):
            chunk = texts[i * per : (i + 1) * per]
            times = {}
            for side in (("plain", "ours") if i % 2 == 0 else ("ours", "plain")):
                start = time.perf_counter()
                if side == "plain":
                    plain = model.encode(chunk, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
                else:
                    ours = emb.encode(chunk)
                times[side] = time.perf_counter() - start
            plain_t.append(times["plain"])
            ours_t.append(times["ours"])
            ratios.append(times["plain"] / times["ours"])
            diffs.append(float(np.abs(ours - plain).max()))
        seen = texts[: trials * per]
        embedded = emb.stats.embedded
        start = time.perf_counter()
        again = emb.encode(seen + seen[: len(seen) // 2])
        cached_t = time.perf_counter() - start
        reembedded = emb.stats.embedded - embedded
        fresh = Embedder("all-MiniLM-L6-v2", cache_url=f"{tmp}/cache")
        fresh.use_model(model)
        fresh.encode(seen)
    ratio = float(np.median(ratios))
    total = trials * per
    return [
        Row("G4", f"embed {total} texts in {trials} paired trials, MiniLM, CPU",
            f"plain encode {total / sum(plain_t):.0f} texts/s",
            f"Embedder {total / sum(ours_t):.0f} texts/s (max |diff| {max(diffs):.1e}); trial ratios "
            f"{min(ratios):.2f}..{max(ratios):.2f}", f"{ratio:.3f}", "median ratio >= 0.95",
            ratio >= 0.95 and max(diffs) < 1e-5),
        Row("G4", f"repeat {len(again)} texts (all seen)", "-",
            f"{reembedded} re-embedded, {cached_t * 1000:.0f} ms; new process on the same cache: "
            f"{fresh.stats.embedded} embedded", "-", "0 re-embedded", reembedded == 0 and fresh.stats.embedded == 0),
    ]


def bench_embedder_isolated(n: int) -> list[Row]:
    """G4 in a fresh process: threads and memory left behind by D1-D3 in this one skewed the timings."""
    out = subprocess.run([sys.executable, "-m", "bench.diversity", "--g4-worker", "--texts", str(n)],
                         capture_output=True, text=True, cwd=REPO, timeout=1800,
                         env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if out.returncode != 0:
        raise RuntimeError(f"G4 worker failed ({out.returncode}): {out.stderr[-2000:]}")
    return [Row(**r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


# -- main ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.diversity", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="D1,D2,D3,G4", help="comma-separated ids")
    p.add_argument("--rows", type=int, default=1_000_000, help="vectors for D1 and D3")
    p.add_argument("--semhash-rows", type=int, default=50_000, help="rows both sides dedup for the semhash ratio")
    p.add_argument("--semhash-python", default=None, help="an interpreter that can import semhash")
    p.add_argument("--texts", type=int, default=1200, help="texts for G4 (split into 12 paired trials)")
    p.add_argument("--g4-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(list(argv or []))
    if args.g4_worker:
        print(json.dumps([asdict(r) for r in bench_embedder(args.texts)]))
        return 0
    only = {s.strip().upper() for s in args.only.split(",")}
    rows: list[Row] = []
    if only & {"D1", "D3"}:
        start = time.perf_counter()
        x, pairs = clustered_vectors(args.rows)
        print(f"{len(x):,} x {x.shape[1]} vectors with {len(pairs):,} planted near-duplicates in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        if "D1" in only:
            rows.append(bench_vendi(x))
            print_table(rows[-1:])
        if "D3" in only:
            rows.extend(bench_dedup(x, pairs, args.semhash_rows, args.semhash_python))
            print_table(rows[-2:])
        del x
    if "D2" in only:
        rows.append(bench_gap_filling())
        print_table(rows[-1:])
    if "G4" in only:
        rows.extend(bench_embedder_isolated(args.texts))
        print_table(rows[-2:])
    print()
    print_table(rows)
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
