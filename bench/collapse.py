"""Model-collapse benchmarks C1-C6 of BENCHMARKS.md, run through the pipeline's round machinery.

Every round of every arm is a light-mode `RoundSession` (the driver p/round uses in Dagster; reads carried in
memory, nothing stored, no checks) around `run_round` with the `python` generator backend (a model refitted on the
previous round's training set and sampled) and the arm's accumulation policy; the request cache is used and
dropped each round. Many independent runs travel as a `run`
column through one pipeline per arm, so one round advances all of them and the fits are vectorized.

C1  linear regression, d=10, T=100, sigma^2=1, accumulate: test error / (sigma^2 d/(T-d-1)) -> sum_{i<=n} 1/i^2
    <= pi^2/6 (Gerstgrasser et al., COLM 2024). Checked at n=50: within 10% of sum_{i<=50} 1/i^2 = 1.625.
C2  same, replace: the ratio grows like n. Checked at n=50 (within 10% of 50) and the slope of ratio(n) (1 +- 10%).
C3  same, accumulate_subsample (T rows a round, stratified by source and round): plateaus above accumulate
    (Kazdan et al., ICML 2025; ~3.2 at n=200). Checked: ratio(200) > 1.5 x C1, ratio(200) < 1.3 x ratio(100).
C4  1-D Gaussian, M=100 rows a round, unbiased refit, replace: median variance ~= exp(-n/(M-1)) -> 0 (Shumailov
    et al., Nature 2024). Checked at n=100: within a factor 1.33 (the median of hundreds of log-normal-ish runs).
C5  same, accumulate: E[mu^2] = sum_{i<=n} 1/i^2 / M <= pi^2/(6M) and the variance stays ~1. Checked at n=30:
    E[mu^2] within 15% of the sum, mean variance within 5% of 1.
C6  same, replace with 10% fresh real data each round: E[mu^2] -> 1/(M g(2-g)), g=0.1. Checked on the average
    over n=31..60 (stationary by then): within 20% (refitting the variance inflates it by ~9%, as in the plain
    numpy reproduction of BENCHMARKS.md: 0.057 vs 0.053).

"paper/theory" is the closed form; "ours" is mean +- standard error over the runs. Exit status 1 when a criterion
fails. `--scale 0.25` runs a quarter of the runs (quick look; the margins are sized for --scale 1).

    python -m bench.collapse
    python -m bench.collapse --only C4,C6 --scale 0.5
    python -m bench collapse --d 20 --T 200 --sigma2 2 --M 50 --rounds 30 --scale 0.25

The parameters above are the defaults; --d, --T, --sigma2 (linear), --M (Gaussian), --fresh (C6's g) and
--rounds (generations of every arm, instead of each criterion's own) run the same criteria at others.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from bench.table import print_cells, verdict
from synthflow.collapse import theory
from synthflow.collapse.loop import LoopConfig, run_loop
from synthflow.collapse.recipe import StudyParams, add_arguments


@dataclass(frozen=True)
class Params:
    """The study's parameters (BENCHMARKS.md's defaults); `python -m bench collapse --d 20 --T 200 ...`."""

    d: int = 10  # linear regression features
    t: int = 100  # linear rows a run (real, and each round)
    m: int = 100  # Gaussian rows a run
    sigma2: float = 1.0  # linear noise variance
    g: float = 0.1  # fresh real fraction for C6
    rounds: int | None = None  # generations of every arm (default: each criterion's own)


def arms_for(p: Params) -> dict[str, LoopConfig]:
    """Every arm at these parameters; the run counts and generations of BENCHMARKS.md unless `rounds` is set."""
    lin = dict(rows=p.t, d=p.d, sigma=p.sigma2**0.5)

    def n(default: int) -> int:
        return p.rounds if p.rounds is not None else default

    return {
        "lin_acc": LoopConfig("linear", "accumulate", runs=200, generations=n(50), **lin),
        "lin_rep": LoopConfig("linear", "replace", runs=200, generations=n(50), **lin),
        "lin_sub": LoopConfig("linear", "accumulate_subsample", runs=40, generations=n(200), **lin),
        "gauss_rep": LoopConfig("gaussian", "replace", runs=400, rows=p.m, generations=n(100)),
        "gauss_acc": LoopConfig("gaussian", "accumulate", runs=800, rows=p.m, generations=n(30)),
        "gauss_fresh": LoopConfig("gaussian", "replace", runs=400, rows=p.m, generations=n(60), fresh_real=p.g),
    }


NEEDS = {
    "C1": ["lin_acc"],
    "C2": ["lin_rep"],
    "C3": ["lin_sub", "lin_acc"],
    "C4": ["gauss_rep"],
    "C5": ["gauss_acc"],
    "C6": ["gauss_fresh"],
}


@dataclass
class Row:
    id: str
    setting: str
    criterion: str
    paper: str
    ours: str
    passed: bool


Results = dict[str, dict[int, dict[str, np.ndarray]]]
Arms = dict[str, LoopConfig]


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def _fmt(x: np.ndarray, digits: int = 3) -> str:
    m, se = _mean_se(x)
    return f"{m:.{digits}g} ± {se:.2g} ({len(x)} runs)"


def c1(res: Results, arms: Arms, p: Params) -> Row:
    n = arms["lin_acc"].generations
    x = res["lin_acc"][n]["error_ratio"]
    want = theory.accumulate_ratio(n)
    ok = abs(x.mean() / want - 1) <= 0.10 and x.mean() - 2 * _mean_se(x)[1] <= theory.ACCUMULATE_BOUND
    return Row(
        "C1",
        f"linear d={p.d} T={p.t} sigma^2={p.sigma2:g}, accumulate, n={n}",
        "ratio -> sum 1/i^2 <= pi^2/6 (10%)",
        f"{want:.3f} (bound {theory.ACCUMULATE_BOUND:.3f})",
        _fmt(x),
        ok,
    )


def c2(res: Results, arms: Arms, p: Params) -> Row:
    arm = res["lin_rep"]
    n = arms["lin_rep"].generations
    x = arm[n]["error_ratio"]
    ns = np.array(sorted(arm))
    means = np.array([arm[k]["error_ratio"].mean() for k in ns])
    slope = float((ns * means).sum() / (ns * ns).sum())  # least squares through the origin
    ok = abs(x.mean() / n - 1) <= 0.10 and abs(slope - 1) <= 0.10
    return Row(
        "C2",
        f"linear d={p.d} T={p.t} sigma^2={p.sigma2:g}, replace, n={n}",
        "ratio ~= n, grows linearly (10%)",
        f"{theory.replace_ratio(n):.0f} (slope 1)",
        f"{_fmt(x)}; slope {slope:.3f}",
        ok,
    )


def c3(res: Results, arms: Arms, p: Params) -> Row:
    arm = res["lin_sub"]
    n = arms["lin_sub"].generations
    x, half = arm[n]["error_ratio"], arm[n // 2]["error_ratio"]
    acc = res["lin_acc"][arms["lin_acc"].generations]["error_ratio"].mean()
    ok = x.mean() > 1.5 * acc and x.mean() < 1.3 * half.mean() and x.mean() < 0.1 * n
    return Row(
        "C3",
        f"linear d={p.d} T={p.t} sigma^2={p.sigma2:g}, accumulate_subsample {p.t}/round, n={n}",
        f"plateau above accumulate: >1.5x C1, <1.3x n={n // 2}",
        "~3.2 (Kazdan et al.)",
        f"{_fmt(x)}; n={n // 2}: {half.mean():.3g}",
        bool(ok),
    )


def c4(res: Results, arms: Arms, p: Params) -> Row:
    n = arms["gauss_rep"].generations
    var = res["gauss_rep"][n]["var"]
    want = theory.gaussian_replace_median_variance(n, p.m)
    med = float(np.median(var))
    # Standard error of a median: 1.2533 sd / sqrt(n), here on the log scale where the runs are near normal.
    se_log = 1.2533 * float(np.log(var).std(ddof=1)) / math.sqrt(len(var))
    ok = abs(math.log(med / want)) <= math.log(1.33)
    return Row(
        "C4",
        f"Gaussian M={p.m}, replace, n={n}",
        "median var ~= exp(-n/(M-1)) -> 0 (x/÷1.33)",
        f"{want:.3f}",
        f"median {med:.3f} (×/÷ {math.exp(se_log):.3f}, {len(var)} runs)",
        ok,
    )


def c5(res: Results, arms: Arms, p: Params) -> Row:
    n = arms["gauss_acc"].generations
    last = res["gauss_acc"][n]
    mu2, var = last["mean_sq"], last["var"]
    want = theory.gaussian_accumulate_mean_sq(n, p.m)
    bound = math.pi**2 / (6 * p.m)
    ok = abs(mu2.mean() / want - 1) <= 0.15 and abs(var.mean() - 1) <= 0.05
    return Row(
        "C5",
        f"Gaussian M={p.m}, accumulate, n={n}",
        "E[mu^2] -> sum 1/i^2 / M <= pi^2/(6M) (15%); var ~= 1 (5%)",
        f"{want:.4f} (bound {bound:.4f}); var 1",
        f"{_fmt(mu2)}; var {var.mean():.3f}",
        ok,
    )


def c6(res: Results, arms: Arms, p: Params) -> Row:
    arm = res["gauss_fresh"]
    n = arms["gauss_fresh"].generations
    window = [k for k in arm if k > n // 2]
    per_run = np.mean([arm[k]["mean_sq"] for k in window], axis=0)
    want = theory.gaussian_fresh_mean_sq(p.m, p.g)
    ok = abs(per_run.mean() / want - 1) <= 0.20
    return Row(
        "C6",
        f"Gaussian M={p.m}, replace + {p.g:.0%} fresh real, n={min(window)}..{n}",
        "E[mu^2] bounded ~= 1/(M g(2-g)) (20%)",
        f"{want:.4f}",
        _fmt(per_run),
        ok,
    )


CHECKS: dict[str, Callable[[Results, Arms, Params], Row]] = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6}


def _run_arm(item: tuple[str, LoopConfig]) -> tuple[str, dict[int, dict[str, np.ndarray]], float]:
    name, cfg = item
    start = time.process_time()
    return name, run_loop(cfg), time.process_time() - start


def print_table(rows: Sequence[Row]) -> None:
    header = ["id", "setting", "criterion", "paper/theory", "ours (mean ± SE)", "pass"]
    print_cells(header, [[r.id, r.setting, r.criterion, r.paper, r.ours, verdict(r.passed)] for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.collapse", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="C1,C2,C3,C4,C5,C6", help="comma-separated criteria")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every arm's number of runs")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="arms run in parallel")
    default = Params()
    add_arguments(ap, d=default.d, t=default.t, m=default.m, sigma2=default.sigma2)
    ap.add_argument("--fresh", type=float, default=default.g, help="C6's fresh real fraction g (default 0.1)")
    ap.add_argument("--rounds", type=int, default=None, help="generations of every arm (default: C1-C6's own)")
    args = ap.parse_args([] if argv is None else argv)  # bench/__main__ passes the options after the names
    try:
        params = Params(d=args.d, t=args.t, m=args.m, sigma2=args.sigma2, g=args.fresh, rounds=args.rounds)
        StudyParams(d=params.d, t=params.t, m=params.m, sigma2=params.sigma2)  # the same validation as the recipe
        if params.rounds is not None and params.rounds < 2:
            raise ValueError(f"--rounds {params.rounds}: at least 2 generations")
    except ValueError as e:
        ap.error(str(e))
    only = [c.strip().upper() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        ap.error(f"unknown criteria {unknown}; known: {sorted(CHECKS)}")
    all_arms = arms_for(params)
    names = sorted({a for c in only for a in NEEDS[c]}, key=list(all_arms).index)
    arms = [(n, replace(all_arms[n], runs=max(4, round(all_arms[n].runs * args.scale)))) for n in names]
    # Longest arms first, so two workers finish together.
    arms.sort(
        key=lambda a: -a[1].runs * a[1].rows * a[1].generations * (3 if a[1].policy != "replace" else 1)
    )
    print(
        f"model collapse through RoundSession (light mode): {len(arms)} arms, {args.workers} worker(s); "
        f"d={params.d} T={params.t} sigma^2={params.sigma2:g} M={params.m}"
    )
    start = time.perf_counter()
    results: Results = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name, res, cpu in pool.map(_run_arm, arms) if args.workers > 1 else map(_run_arm, arms):
            cfg = dict(arms)[name]
            print(f"  {name}: {cfg.runs} runs x {cfg.generations} generations, {cpu:.1f} s CPU", flush=True)
            results[name] = res
    used = dict(arms)
    rows = [CHECKS[c](results, used, params) for c in only]
    print()
    print_table(rows)
    print(f"\n{time.perf_counter() - start:.0f} s wall")
    return 0 if all(r.passed for r in rows) else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
