"""S1: rounds at scale. 40 rounds x 25,000 new rows (1M accumulated) under the `accumulate` policy with exact dedup:
real rounds through `RoundSession` on the Delta store and, as the baseline in the same run, the store as it was
before issue 14 (bench/legacy_store.py: every round reads r-1 whole and rewrites the whole training set as one
Parquet file).

The rows come from an instant table generator (25,000 rows a round in the python backend's wire format, 1% of them
exact copies of rows accepted in the round before). What each run does a round:

- session (the default measured run): `RoundSession(...).load()` then `.run()`, the code a Dagster round runs:
  the exact_dedup verifier through the persistent hash index (synthflow.stages.text_index), the `accumulate`
  policy appending to r-1's Delta version without reading it, the training-set checks on the new rows and r-1's
  record, and every table of the round written (candidates, verified, rejected, coverage, synthetic, training set,
  index chunks). Each round reports whether r-1's rows were read (they must not be).
- baseline (rewrite): read round r-1's training set whole, dedup against every earlier synthetic row held in
  memory, build the training set with `build_training_set`, hash it and write it whole.
- delta (optional, `--kinds session,delta,rewrite`): the store path alone, without a round around it.

Each run is its own child process (its peak RSS is its own); per round we measure wall time (median of the round and
its two neighbours, to ride out a busy shared machine), peak RSS (VmHWM, reset before each round through
/proc/self/clear_refs), and bytes written: for the session run, the bytes the training-set table and the indexes
grew by (what accumulates; the criterion), and beside it every table the round wrote (per-round tables of the
round's own candidates, each O(new rows)).

Criteria (session run): wall(40) / wall(2) <= 1.3; peak RSS(40) / peak RSS(2) <= 1.3; training-set + index bytes
written in each reported round <= 1.5 x the Parquet (zstd) size of that round's new rows. The 100M-row
extrapolation is a linear fit of each measure against the accumulated rows.

    python -m bench scale [--rounds 40] [--rows 25000] [--kinds session,rewrite] [--out /tmp/s1_table.txt]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
REPORT_ROUNDS = (2, 10, 20, 40)
PIPELINE = "s1"
REAL_ROWS = 1000
_VOCABULARY = (
    "how many apples does a farmer sell when each basket holds twelve and three baskets are left over the "
    "train leaves at noon travelling sixty miles per hour what is the total cost of five pencils if one costs "
    "sum product ratio percent area perimeter triangle square circle radius"
)
WORDS = np.array(_VOCABULARY.split())


def _texts(round_index: int, n: int) -> list[str]:
    rng = np.random.default_rng([14, round_index])
    words = WORDS[rng.integers(0, len(WORDS), size=(n, 24))]
    return [f"q{round_index}-{i}: " + " ".join(w) for i, w in enumerate(words)]


def _candidates(round_index: int, n: int):
    """What the instant generator answers for round r: parsed candidate rows, 1% copies of round r-1's rows."""
    import pandas as pd

    texts = _texts(round_index, n)
    if round_index > 1:
        dup = max(1, n // 100)
        texts[:dup] = _texts(round_index - 1, 2 * dup)[dup:]  # rows r-1 accepted (its first dup were copies)
    ids = [f"r{round_index}-{i:07d}" for i in range(n)]
    return pd.DataFrame(
        {
            "candidate_id": ids,
            "round": round_index,
            "model": "instant-table",
            "prompt_hash": "p" * 16,
            "exemplar_ids": "[]",
            "question": texts,
            "answer": np.arange(n, dtype=float),
            "_text": texts,
            "parse_error": pd.Series([None] * n, dtype=object),
        }
    )


def _real():
    import pandas as pd

    from synthflow.stages.accumulate import real_rows

    texts = [f"real question {i}: what is {i} plus {i}?" for i in range(REAL_ROWS)]
    seed = pd.DataFrame({"id": [f"s{i}" for i in range(REAL_ROWS)], "question": texts,
                         "answer": np.arange(REAL_ROWS, dtype=float)})  # fmt: skip
    seed["_id"], seed["_text"] = seed["id"], seed["question"]
    return real_rows(seed, ["id", "question", "answer"], 0)


def _store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, root: Path, rounds: int, rows: int) -> None:
    """Run every round against one store; print one JSON line per round."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthflow.spec import AccumulateSpec
    from synthflow.stages.accumulate import build_training_set, synthetic_rows
    from synthflow.stages.text_index import TextIndex, text_hashes
    from synthflow.stages.verifiers import VerifyContext, run_chain
    from synthflow.stages.verifiers.builtin import ACCEPTED_TEXT_INDEX, ExactDedupParams, exact_dedup_verifier

    sys.path.insert(0, str(REPO))
    from bench.legacy_store import LegacyStore
    from synthflow.store import Store

    store = Store(str(root)) if kind == "delta" else LegacyStore(str(root))
    policy = AccumulateSpec(policy="accumulate")
    dedup = exact_dedup_verifier("exact_dedup", ExactDedupParams())
    data_columns = ["id", "question", "answer"]
    parts = [f"2026-01-{i:02d}" if i <= 31 else f"2026-02-{i - 31:02d}" for i in range(1, rounds + 1)]
    empty = pd.DataFrame(columns=["_id", "_text"])
    for r, part in enumerate(parts, start=1):
        gc.collect()
        pa.default_memory_pool().release_unused()
        before = _store_bytes(root)
        _reset_peak()
        start = time.perf_counter()
        real = _real()  # the seed's rows: small and the same every round
        cands = _candidates(r, rows)
        if kind == "delta":
            index = TextIndex(store, PIPELINE).load(parts[: r - 1])
            ctx = VerifyContext(spec=None, reference=real, accepted=empty, state={ACCEPTED_TEXT_INDEX: index})  # type: ignore[arg-type]
            verified = run_chain(cands, [dedup], ctx)
            new = synthetic_rows(verified, data_columns, ["exact_dedup"])
            if r == 1:
                rec = store.write(PIPELINE, "training_set", pd.concat([real, new], ignore_index=True),
                                  partition=part, meta={"real_rows": len(real)})  # fmt: skip
            else:
                base = store.latest(PIPELINE, "training_set", parts[r - 2])
                # The checks on new rows only: ids unique among themselves (earlier ids carry their round), the
                # real fraction from the records' counts.
                assert new["_id"].is_unique
                real_fraction = base.meta["real_rows"] / (base.rows + len(new))
                rec = store.append(PIPELINE, "training_set", new, base=base, partition=part,
                                   meta={"real_rows": base.meta["real_rows"], "real_fraction": real_fraction})  # fmt: skip
            index.write(part, text_hashes(new["_text"]))
            total = rec.rows
        else:
            previous = store.read(PIPELINE, "training_set", parts[r - 2]) if r > 1 else None
            prev_synth = previous[previous["_source"] == "synthetic"] if previous is not None else empty
            ctx = VerifyContext(spec=None, reference=real, accepted=prev_synth[["_id", "_text"]])  # type: ignore[arg-type]
            verified = run_chain(cands, [dedup], ctx)
            new = synthetic_rows(verified, data_columns, ["exact_dedup"])
            ts = build_training_set(policy, real=real, previous=previous, new_synthetic=new, round_index=r)
            assert ts["_id"].is_unique  # the unique_ids check, on the whole set
            store.write(PIPELINE, "training_set", ts, partition=part)
            total = len(ts)
        wall = time.perf_counter() - start
        peak = _peak_mib()
        written = _store_bytes(root) - before
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(new, preserve_index=False), buf, compression="zstd")
        print(json.dumps({"round": r, "wall": wall, "peak_mib": peak, "bytes": written,
                          "new_parquet": len(buf.getvalue()), "new_rows": len(new),
                          "rejected": int((~verified["accepted"]).sum()), "rows": total}), flush=True)  # fmt: skip


SESSION_SPEC = """
name: s1
seed:
  source: seed.jsonl
  id_column: id
  text: question
  columns:
    - {name: id, type: string}
    - {name: question, type: string}
    - {name: answer, type: float}
rounds: {cron: "0 0 * * *", start: "2026-01-01"}
generate:
  generator: generator
  prompt: "Rows like the seed."
  output_schema:
    type: object
    properties: {question: {type: string}, answer: {type: number}}
    required: [question, answer]
  rows_per_round: ROWS
  candidate_budget: ROWS
verify:
  - type: exact_dedup
diversity: {enabled: false}
accumulate: {policy: accumulate}
"""


class InstantTable:
    """The instant table generator behind RoundSession: a round's block of rows in one answer (the python
    backend's wire format), 1% of them copies of round r-1's rows. No `prepare_round`: it fits on nothing, so the
    round never needs r-1's rows for it."""

    table_rows = True

    def __init__(self, base_seed: int) -> None:
        from synthflow.stages.prompts import request_seed

        self._round = {request_seed(base_seed, r, b): r for r in range(1, 400) for b in range(4)}

    model_id = label = "instant-table"

    def generate(self, requests, progress=None):
        from synthflow.generators.base import GenerationResult
        from synthflow.generators.tables import encode_rows

        for req in requests:
            c = _candidates(self._round[req.seed], int(req.meta["rows"]))
            text = encode_rows(c[["question", "answer"]])
            yield req, GenerationResult(key=req.key(self.model_id), text=text, model=self.model_id)

    def close(self) -> None:
        pass


def _dir_bytes(path: Path) -> int:
    return _store_bytes(path) if path.exists() else 0


def session_child(root: Path, rounds: int, rows: int) -> None:
    """Real rounds through RoundSession (load, run_round, checks, every table and index written); one JSON line
    per round, with the bytes of the training-set table + indexes (what accumulates) and of every table."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthflow.spec import load_spec
    from synthflow.stages.previous import PreviousSet
    from synthflow.stages.session import RoundSession
    from synthflow.store import Store

    project = root.parent / "session_project"
    project.mkdir(parents=True, exist_ok=True)
    real = _real()
    seed = pd.DataFrame({"id": real["_id"], "question": real["question"], "answer": real["answer"]})
    seed.to_json(project / "seed.jsonl", orient="records", lines=True)
    (project / "s1.yaml").write_text(SESSION_SPEC.replace("ROWS", str(rows)))
    spec = load_spec(project / "s1.yaml")
    store = Store(str(root))
    seed["_id"], seed["_text"] = seed["id"], seed["question"]
    store.write(spec.name, "seed", seed)
    gen = InstantTable(spec.generate.sampling.seed)
    generators = {spec.generate.generator: lambda: gen}
    parts = [f"2026-01-{i:02d}" if i <= 31 else f"2026-02-{i - 31:02d}" for i in range(1, rounds + 1)]
    table_dir = root / spec.name / "training_set"
    index_dir = root / spec.name / "_index"
    for r in range(1, rounds + 1):
        gc.collect()
        pa.default_memory_pool().release_unused()
        before, ts_before = _store_bytes(root), _dir_bytes(table_dir) + _dir_bytes(index_dir)
        reads_before = PreviousSet.reads
        _reset_peak()
        start = time.perf_counter()
        session = RoundSession(spec, store, spec.name, parts[:r], plots=False, keep_cache=False)
        result = session.run(session.load(), generators=generators)
        wall = time.perf_counter() - start
        peak = _peak_mib()
        assert not result.blocking_failures, [c.name for c in result.blocking_failures]
        out = result.output
        new = out.training_added if not out.training_set_held else out.training_set[out.training_set["_round"] == r]
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(new.reset_index(drop=True), preserve_index=False), buf, compression="zstd")
        print(json.dumps({"round": r, "wall": wall, "peak_mib": peak,
                          "bytes": _dir_bytes(table_dir) + _dir_bytes(index_dir) - ts_before,
                          "all_bytes": _store_bytes(root) - before, "new_parquet": len(buf.getvalue()),
                          "new_rows": len(new), "rejected": int((~out.verified["accepted"]).sum()),
                          "rows": result.records["training_set"].rows,
                          "previous_read": PreviousSet.reads > reads_before}), flush=True)  # fmt: skip


def _run_child(kind: str, root: Path, rounds: int, rows: int) -> list[dict]:
    cmd = [sys.executable, "-m", "bench.scale", "--child", kind, "--root", str(root),
           "--rounds", str(rounds), "--rows", str(rows)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} store run failed:\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _smoothed(per_round: list[dict], key: str, r: int) -> float:
    """The median of rounds r-1, r, r+1 (within 2..last): one slow round on a shared machine is not a trend."""
    last = len(per_round)
    window = [x for x in (r - 1, r, r + 1) if 2 <= x <= last]
    if r == 2:
        window = [x for x in (2, 3, 4) if x <= last]
    if r == last:
        window = [x for x in (last - 2, last - 1, last) if x >= 2]
    return float(np.median([per_round[x - 1][key] for x in window]))


def _line(per_round: list[dict], key: str) -> tuple[float, float]:
    """Least squares of `key` against accumulated rows over rounds 2..n, the slope held >= 0 (a cost that does
    not grow is flat, whatever the noise says)."""
    xs = np.array([p["rows"] for p in per_round[1:]], dtype=float)
    ys = np.array([p[key] for p in per_round[1:]], dtype=float)
    slope = max(0.0, float(np.polyfit(xs, ys, 1)[0])) if len(xs) > 1 else 0.0
    return slope, float(ys.mean() - slope * xs.mean())


def _fit(per_round: list[dict], key: str, at_rows: float | np.ndarray) -> float | np.ndarray:
    slope, intercept = _line(per_round, key)
    return intercept + slope * at_rows


LABELS = {"session": "RoundSession", "delta": "Delta store path", "rewrite": "rewrite (baseline)"}


def report(results: dict[str, list[dict]], rounds: int, rows: int, load: tuple[float, ...]) -> tuple[str, bool]:
    main = "session" if "session" in results else "delta"
    lines = []
    shown = [r for r in REPORT_ROUNDS if r <= rounds] or [rounds]
    if shown[-1] != rounds:
        shown.append(rounds)
    lines.append(f"S1 scale: {rounds} rounds x {rows:,} new rows, accumulate + exact_dedup; load average "
                 f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, {os.cpu_count()} CPUs")  # fmt: skip
    if main == "session":
        lines.append("RoundSession: real rounds (load, run_round with exact_dedup, checks, every table and index "
                     "written); 'MB written' = training-set table + indexes, 'all MB' = every table of the round")  # fmt: skip
    head = f"{'round':>5} {'rows':>10} | {main + ' wall s':>14} {'peak MiB':>9} {'MB written':>10} {'all MB':>7} " \
           f"{'new pq MB':>9} {'r-1 read':>8} | {'rewrite wall s':>14} {'peak MiB':>9} {'MB written':>10}"  # fmt: skip
    lines.append(head)
    lines.append("-" * len(head))
    d, b = results[main], results["rewrite"]
    for r in shown:
        dr, br = d[r - 1], b[r - 1]
        lines.append(
            f"{r:>5} {dr['rows']:>10,} | {_smoothed(d, 'wall', r):>14.3f} {dr['peak_mib']:>9.0f} "
            f"{dr['bytes'] / 1e6:>10.2f} {dr.get('all_bytes', dr['bytes']) / 1e6:>7.2f} "
            f"{dr['new_parquet'] / 1e6:>9.2f} {'yes' if dr.get('previous_read') else 'no':>8} | "
            f"{_smoothed(b, 'wall', r):>14.3f} {br['peak_mib']:>9.0f} {br['bytes'] / 1e6:>10.2f}"
        )
    if "delta" in results and main != "delta":
        x = results["delta"]
        lines.append(f"store path alone (no round): wall round {shown[-1]} {_smoothed(x, 'wall', shown[-1]):.3f} s, "
                     f"peak {x[shown[-1] - 1]['peak_mib']:.0f} MiB")  # fmt: skip
    first, last = shown[0], shown[-1]
    wall_ratio = _smoothed(d, "wall", last) / _smoothed(d, "wall", first)
    rss_ratio = d[last - 1]["peak_mib"] / d[first - 1]["peak_mib"]
    bytes_ratio = max(d[r - 1]["bytes"] / d[r - 1]["new_parquet"] for r in shown)
    checks = [
        (f"wall round {last} / round {first}", "<= 1.3", wall_ratio, wall_ratio <= 1.3),
        (f"peak RSS round {last} / round {first}", "<= 1.3", rss_ratio, rss_ratio <= 1.3),
        ("bytes written / new rows' Parquet (worst round)", "<= 1.5", bytes_ratio, bytes_ratio <= 1.5),
    ]
    base_wall = _smoothed(b, "wall", last) / _smoothed(b, "wall", first)
    base_rss = b[last - 1]["peak_mib"] / b[first - 1]["peak_mib"]
    base_bytes = max(b[r - 1]["bytes"] / b[r - 1]["new_parquet"] for r in shown)
    lines.append("")
    lines.append(f"{'id':<4} {'criterion (' + LABELS[main] + ')':<50} {'target':<8} {main:>8} {'rewrite':>8} pass")
    for (name, target, value, ok), base in zip(checks, (base_wall, base_rss, base_bytes), strict=True):
        lines.append(f"{'S1':<4} {name:<50} {target:<8} {value:>8.2f} {base:>8.2f} {'yes' if ok else 'NO'}")
    target_rows = 100_000_000
    n_rounds = target_rows // rows
    lines.append("")
    lines.append(f"extrapolated to {target_rows:,} accumulated rows ({n_rounds:,} rounds of {rows:,}; linear fit of "
                 f"rounds 2..{rounds} against accumulated rows):")  # fmt: skip
    for kind, per in ((main, d), ("rewrite", b)):
        wall = _fit(per, "wall", target_rows)
        rss = _fit(per, "peak_mib", target_rows)
        mb = _fit(per, "bytes", target_rows) / 1e6
        # Total: the sum of the fitted per-round cost over every round up to the target.
        acc = np.arange(1, n_rounds + 1, dtype=float) * rows + REAL_ROWS
        total_wall = float(np.sum(_fit(per, "wall", acc)))
        total_tb = float(np.sum(_fit(per, "bytes", acc))) / 1e12
        lines.append(f"  {kind:<8} a round at 100M rows: {wall:8.1f} s, peak {rss / 1024:7.2f} GiB, writes "
                     f"{mb:9.1f} MB; all {n_rounds:,} rounds: {total_wall / 3600:8.1f} h, {total_tb:8.3f} TB written")  # fmt: skip
    lines.append(f"  {main}'s exact-dedup hash set at 100M rows: {8 * target_rows / 2**20:.0f} MiB (8 bytes a row, "
                 "one sorted chunk a round); the rows themselves are never loaded")  # fmt: skip
    return "\n".join(lines), all(ok for *_, ok in checks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench scale")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--rows", type=int, default=25_000)
    ap.add_argument("--out", default="/tmp/s1_table.txt", help="also write the printed table here")
    ap.add_argument("--kinds", default="session,rewrite",
                    help="which runs, in order: session (RoundSession rounds), delta (the store path alone), rewrite "
                         "(the baseline); rewrite is required")  # fmt: skip
    ap.add_argument("--child", choices=("session", "delta", "rewrite"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "session":
        session_child(Path(args.root), args.rounds, args.rows)
        return 0
    if args.child:
        child(args.child, Path(args.root), args.rounds, args.rows)
        return 0
    load = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="synthflow-s1-") as tmp:
        for kind in args.kinds.split(","):
            t0 = time.perf_counter()
            results[kind] = _run_child(kind, Path(tmp) / kind, args.rounds, args.rows)
            print(f"{kind} store: {args.rounds} rounds in {time.perf_counter() - t0:.0f} s", flush=True)
    table, ok = report(results, args.rounds, args.rows, load)
    end = os.getloadavg()
    table += f"\nload average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}"
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
