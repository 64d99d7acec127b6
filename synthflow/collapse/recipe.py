"""The collapse study at any parameters: its seed, the spec that matches it and a profile, written from one recipe.

The study's generator and report read d, T and M from the seed (features, real rows per run); only the noise
variance and the data seed, which the rows cannot tell, travel as generator options of the profile. So one recipe
writes all three, and they cannot disagree:

    python -m synthflow.collapse.recipe PROJECT --d 20 --T 200 --sigma2 2 --M 50 --runs 20
    synthflow run PROJECT/assets/collapse_study_d20_t200_m50.yaml --profile collapse --rounds 30

With no options it writes the example's seed (d=5, T=30, M=20, sigma^2=1, 20 runs; `assets/collapse_study.yaml`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from synthflow.collapse import data
from synthflow.collapse.study import EXPERIMENT, POLICIES, POLICY

GENERATOR = "collapse"  # the profile's generator name the spec asks for


@dataclass(frozen=True)
class StudyParams:
    runs: int = 20  # independent runs of every arm
    m: int = 20  # Gaussian rows a run
    t: int = 30  # linear-regression rows a run
    d: int = 5  # linear-regression features
    sigma2: float = 1.0  # noise variance of the linear target
    data_seed: int = 0
    request_seed: int = 7  # generate.sampling.seed

    def __post_init__(self) -> None:
        if min(self.runs, self.m, self.d) < 1:
            raise ValueError(f"runs, M and d must be at least 1, got {self.runs}, {self.m}, {self.d}")
        if self.m < 2:
            raise ValueError(f"M={self.m}: the unbiased variance needs at least 2 rows a run")
        if self.t < self.d + 2:
            raise ValueError(f"T={self.t} with d={self.d}: OLS error sigma^2 d/(T-d-1) needs T >= d + 2")
        if self.sigma2 <= 0:
            raise ValueError(f"sigma2 must be positive, got {self.sigma2}")

    @property
    def rows_per_round(self) -> int:
        """One round of every arm: 3 policies x runs x (M + T)."""
        return len(POLICIES) * self.runs * (self.m + self.t)

    @property
    def name(self) -> str:
        default = StudyParams()
        if (self.d, self.t, self.m, self.sigma2, self.runs) == (default.d, default.t, default.m, 1.0, default.runs):
            return "collapse_study"
        s2 = f"_s{self.sigma2:g}".replace(".", "p") if self.sigma2 != 1 else ""
        return f"collapse_study_d{self.d}_t{self.t}_m{self.m}{s2}_r{self.runs}"


def seed_rows(p: StudyParams) -> pd.DataFrame:
    g = data.gaussian_rows(p.runs, p.m, seed=p.data_seed)
    lin = data.linear_rows(p.runs, p.t, p.d, seed=p.data_seed, sigma=p.sigma2**0.5)
    g.insert(0, EXPERIMENT, "gaussian")
    lin.insert(0, EXPERIMENT, "linear")
    return pd.concat([g, lin], ignore_index=True)


def write_seed(path: str | Path, p: StudyParams) -> None:
    """The study's real data as JSON lines (Gaussian rows carry no x's)."""
    with open(path, "w") as f:
        for rec in seed_rows(p).to_dict("records"):
            f.write(json.dumps({k: v for k, v in rec.items() if not (isinstance(v, float) and np.isnan(v))}) + "\n")


def spec_dict(p: StudyParams, seed_source: str) -> dict[str, Any]:
    """The pipeline spec matching the seed: d feature columns, one round of every arm per round."""
    xs = data.feature_columns(p.d)
    return {
        "name": p.name,
        "description": (
            f"Model collapse study: 1-D Gaussian M={p.m}, linear regression d={p.d} T={p.t} sigma^2={p.sigma2:g}, "
            f"{p.runs} runs, under {', '.join(POLICIES)}."
        ),
        "tags": {"domain": "research"},
        "seed": {
            "source": seed_source,
            "text": EXPERIMENT,
            "columns": [
                {"name": EXPERIMENT, "type": "string", "isin": ["gaussian", "linear"]},
                {"name": data.RUN, "type": "integer", "min": 0},
                {"name": data.VALUE, "type": "float"},
                *({"name": x, "type": "float", "nullable": True} for x in xs),
            ],
        },
        "rounds": {"cron": "0 0 * * *", "start": "2026-01-01"},
        "generate": {
            "generator": GENERATOR,
            "prompt": "Refit every arm on its policy's training set of round {{ round - 1 }} and sample round {{ round }}.",
            "few_shot": 0,
            "output_schema": {
                "type": "object",
                "properties": {
                    EXPERIMENT: {"type": "string", "enum": ["gaussian", "linear"]},
                    POLICY: {"type": "string", "enum": list(POLICIES)},
                    data.RUN: {"type": "integer"},
                    data.VALUE: {"type": "number"},
                    **{x: {"type": ["number", "null"]} for x in xs},
                },
                "required": [EXPERIMENT, POLICY, data.RUN, data.VALUE],
            },
            "rows_per_round": p.rows_per_round,
            "candidate_budget": p.rows_per_round,
            "sampling": {"seed": p.request_seed},
        },
        "verify": [],
        "diversity": {"enabled": False},
        "accumulate": {"policy": "accumulate"},
    }


def profile_dict(p: StudyParams, store_root: str) -> dict[str, Any]:
    """A resource profile with the study's generator; sigma2 and data_seed are what the rows cannot tell it."""
    return {
        "description": "The collapse study's python backend (statistical models on CPU).",
        "store": {"root": store_root},
        "generators": {
            GENERATOR: {
                "backend": "python",
                "model": "synthflow.collapse.study:generate",
                "options": {
                    "group_by": [data.RUN],
                    "report": "synthflow.collapse.study:report",
                    "sigma2": p.sigma2,
                    "data_seed": p.data_seed,
                },
            }
        },
    }


def write_study(
    project: str | Path, p: StudyParams, *, profile: str = GENERATOR, store_root: str = ".synthflow/store"
) -> dict[str, Path]:
    """Seed, spec and profile under a project root (assets/, resources/); returns their paths."""
    root = Path(project)
    seed = root / "assets" / "data" / "collapse" / f"{p.name}_seed.jsonl"
    spec = root / "assets" / f"{p.name}.yaml"
    prof = root / "resources" / f"{profile}.yaml"
    for path in (seed, spec, prof):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_seed(seed, p)
    spec.write_text(yaml.safe_dump(spec_dict(p, str(seed.relative_to(spec.parent))), sort_keys=False))
    prof.write_text(yaml.safe_dump(profile_dict(p, store_root), sort_keys=False))
    return {"seed": seed, "spec": spec, "profile": prof}


def add_arguments(parser: argparse.ArgumentParser, *, d: int, t: int, m: int, sigma2: float = 1.0) -> None:
    """The study's parameters as options, with the caller's defaults (shared with `python -m bench collapse`)."""
    parser.add_argument("--d", type=int, default=d, help=f"linear regression features (default {d})")
    parser.add_argument("--T", dest="t", type=int, default=t, help=f"linear rows a run (default {t})")
    parser.add_argument("--M", dest="m", type=int, default=m, help=f"Gaussian rows a run (default {m})")
    parser.add_argument("--sigma2", type=float, default=sigma2, help=f"linear noise variance (default {sigma2:g})")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthflow.collapse.recipe", description=__doc__.split("\n\n")[0])
    ap.add_argument("project", help="project root: writes assets/<name>.yaml, its seed and resources/<profile>.yaml")
    defaults = StudyParams()
    add_arguments(ap, d=defaults.d, t=defaults.t, m=defaults.m, sigma2=defaults.sigma2)
    ap.add_argument("--runs", type=int, default=StudyParams().runs, help="independent runs of every arm")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--profile", default=GENERATOR, help="name of the profile to write (default: collapse)")
    ap.add_argument("--seed-only", action="store_true", help="write only the seed, to PROJECT (a .jsonl path)")
    args = ap.parse_args(argv)
    try:
        p = StudyParams(runs=args.runs, m=args.m, t=args.t, d=args.d, sigma2=args.sigma2, data_seed=args.data_seed)
    except ValueError as e:
        ap.error(str(e))
    if args.seed_only:
        write_seed(args.project, p)
        print(f"wrote {args.project}")
        return 0
    paths = write_study(args.project, p, profile=args.profile)
    for what, path in paths.items():
        print(f"{what}: {path}")
    print(f"run: synthflow run {paths['spec']} --profile {args.profile} --rounds 30")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
