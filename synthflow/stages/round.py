"""One round: generate -> verify -> (embed -> assign -> re-plan) until the round has its rows or spent its budget.

This is plain Python over tables; the Dagster multi-asset p/round is a thin wrapper that loads the inputs,
calls `run_round` and writes the four outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from synthflow.generators.base import Generator
from synthflow.generators.tables import table_candidates
from synthflow.spec import PipelineSpec
from synthflow.stages.accumulate import build_training_set, synthetic_rows
from synthflow.stages.budget import BudgetMeter
from synthflow.stages.cache import ResultCache
from synthflow.stages.columns import dag as columns_dag
from synthflow.stages.coverage import round_counts
from synthflow.stages.generate import GenerationStats, prefetch_uncached, run_generation
from synthflow.stages.overlap import BatchRunner, Job, Wrap, prepare_verifiers
from synthflow.stages.parse import candidates_frame, parse_outputs
from synthflow.stages.previous import BASE_NOT_HELD, PreviousSet, add_counts, append_unread, counts_of
from synthflow.stages.prompts import build_request, prompt_hash
from synthflow.stages.verifiers import VerifyContext, run_chain
from synthflow.stages.verifiers.registry import build as build_verifier

TARGET_REACHED = "target reached"
BUDGET_EXHAUSTED = "budget exhausted"


class PromptPlanner(Protocol):
    """Decides, for each new prompt, which seed cluster it aims at and which exemplars it shows."""

    def plan(self, n: int, rng: np.random.Generator) -> list[tuple[int, pd.DataFrame]]: ...

    def observe(self, accepted: pd.DataFrame) -> None: ...

    def report(self) -> dict[str, Any]: ...


class UniformPlanner:
    """Exemplars drawn uniformly from the seed; no cluster targets. The gap-filling planner replaces this when the
    spec has a diversity section with an embedder available."""

    def __init__(self, seed: pd.DataFrame, few_shot: int):
        self.seed = seed
        self.few_shot = min(few_shot, len(seed))

    def plan(self, n: int, rng: np.random.Generator) -> list[tuple[int, pd.DataFrame]]:
        k = self.few_shot
        picks = [np.sort(rng.choice(len(self.seed), k, replace=False)) for _ in range(n)]
        if not picks:
            return []
        # One take for the batch, sliced per prompt: a take per prompt cost ~0.45 ms each on the round's thread.
        block = self.seed.iloc[np.concatenate(picks)]
        return [(-1, block.iloc[i * k : (i + 1) * k]) for i in range(n)]

    def observe(self, accepted: pd.DataFrame) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {"planner": "uniform"}


@dataclass
class RoundInputs:
    spec: PipelineSpec
    round_index: int  # 1-based position of the round partition
    seed: pd.DataFrame  # seed rows with _id and _text
    real: pd.DataFrame  # every real row known at this round, with provenance columns
    # Training set of round r-1: a frame, or a PreviousSet whose rows are read only if a consumer needs them.
    previous: pd.DataFrame | PreviousSet | None
    generator: Generator
    cache: ResultCache
    generators: Mapping[str, Generator] = field(default_factory=dict)
    embedder: Any | None = None
    planner: PromptPlanner | None = None
    log: Callable[[str], None] = lambda msg: None
    progress: Callable[[int, int], None] | None = None
    # Every synthetic row accepted in rounds < r (kept or not): accumulate_subsample draws from it when given.
    pool: pd.DataFrame | None = None
    # Verifier state describing the earlier rounds' accepted rows (persistent indexes, stages/earlier.py); when
    # given, verifiers never read `previous`.
    earlier: Mapping[str, Any] | None = None

    @property
    def previous_frame(self) -> pd.DataFrame | None:
        p = self.previous
        return p.frame if isinstance(p, PreviousSet) else p
    # The round's spend against generate.budget (stages/budget.py); None: a meter at zero prices (tokens still count).
    meter: BudgetMeter | None = None


@dataclass
class RoundOutput:
    candidates: pd.DataFrame
    verified: (
        pd.DataFrame
    )  # every candidate with every verdict; `accepted` says which reached the training set
    coverage: dict[str, Any]
    # The training set, or (attrs BASE_NOT_HELD) only the rows appended to r-1's, which `base` can read.
    _training_set: pd.DataFrame
    stop_reason: str
    stats: GenerationStats
    new_synthetic: pd.DataFrame | None = None  # this round's accepted rows with provenance, kept or not
    base: PreviousSet | None = None

    @property
    def training_set_held(self) -> bool:
        """Whether the whole training set is in memory (else only the appended rows, `training_added`)."""
        return not self._training_set.attrs.get(BASE_NOT_HELD)

    @property
    def training_added(self) -> pd.DataFrame:
        """The rows held: the whole set, or the rows appended to r-1's."""
        return self._training_set

    @property
    def training_set(self) -> pd.DataFrame:
        """The whole training set; when only the appended rows are held, r-1's rows are read now (once)."""
        if not self.training_set_held:
            added = self._training_set
            full = pd.concat([self.base.frame, added], ignore_index=True)
            full.attrs.update({k: v for k, v in added.attrs.items() if k != BASE_NOT_HELD})
            self._training_set = full
        return self._training_set

    @property
    def accepted(self) -> pd.DataFrame:
        return self.verified[self.verified["accepted"]]

    @property
    def rejected(self) -> pd.DataFrame:
        return self.verified[~self.verified["accepted"]]


def _next_batch_size(spec: PipelineSpec, wanted: int, accepted: int, generated: int, pending: int = 0) -> int:
    """Candidates to ask for next, from the verified batches (`accepted` of `generated`) and the `pending` ones
    planned but not yet verified; 0: nothing until those are verified."""
    remaining_budget = spec.generate.candidate_limit - generated - pending
    needed = wanted - accepted
    rate = max(accepted / generated if generated else 1.0, 0.05)
    # Ask for what the acceptance rate so far says is needed, plus two binomial standard deviations of its rejects,
    # less what is already on its way, but never more than a batch. A flat margin on the whole remainder (it was
    # 20%) generated a tail of rows past the quota at high acceptance rates: work thrown away.
    expected_rejects_sd = math.sqrt(needed * (1 - rate)) / rate if needed > 0 else 0.0
    estimate = math.ceil(needed / rate + 2 * expected_rejects_sd) - pending
    return max(0, min(spec.generate.batch_size, remaining_budget, estimate))


def run_round(inp: RoundInputs) -> RoundOutput:
    spec = inp.spec
    wanted = spec.generate.rows_per_round
    budget = spec.generate.candidate_limit
    meter = inp.meter or BudgetMeter(spec)
    verifiers = [build_verifier(v) for v in spec.verify]
    planner = inp.planner or UniformPlanner(inp.seed, spec.generate.few_shot)
    # Only verifiers read the earlier synthetic rows; filtering a pool of millions of rows is not free, and with
    # the persistent indexes (inp.earlier) they are not read at all.
    previous = inp.previous_frame if inp.previous is not None and verifiers and inp.earlier is None else None
    prev_synth = previous[previous["_source"] == "synthetic"] if previous is not None else pd.DataFrame()
    ctx = VerifyContext(
        spec=spec,
        reference=inp.real,
        accepted=prev_synth[["_id", "_text"]] if len(prev_synth) else pd.DataFrame(columns=["_id", "_text"]),
        generators=inp.generators,
        embedder=inp.embedder,
        log=inp.log,
        state=dict(inp.earlier or {}),
    )
    # Generators that fit on the data (the python backend) see the previous round before anything is asked.
    if hasattr(inp.generator, "prepare_round"):
        inp.generator.prepare_round(inp.previous_frame, inp.real, inp.round_index)
    table_rows = getattr(inp.generator, "table_rows", False)
    dag = _ColumnRun(inp) if spec.generate.columns else None
    stats = GenerationStats()
    # Issue 14: while batch k is verified, batch k+1 generates (stages/overlap.py). Batch k+1 is planned from what
    # the batches before k gave (a one-batch lag) in both modes, so overlap changes when generations run, never
    # what is asked. A table generator answers with a round's rows in one request: nothing to plan ahead of it.
    runner = BatchRunner(overlap=spec.generate.overlap and not table_rows)
    ctx.generators = runner.guard(ctx.generators)
    batches = _Batches(inp, planner, dag, runner)
    lookahead = 0 if table_rows else 1
    queue: deque[_Batch] = deque()
    round_start = time.perf_counter()
    cand_frames: list[pd.DataFrame] = []
    verified_frames: list[pd.DataFrame] = []
    accepted = generated = 0
    try:
        while True:
            while len(queue) <= lookahead and meter.stop_reason() is None:
                ahead = batches.plan(accepted, generated, sum(b.job.size for b in queue))
                if ahead is None:
                    break
                queue.append(ahead)
            if not queue:
                break
            batch = queue.popleft()
            if batch.index == 0:  # with overlap, while the first batch generates
                prepare_verifiers(verifiers, ctx)
            cands, parsed, batch_stats, column_stats = batch.collect()
            stats.merge(batch_stats)
            meter.charge_batch(cands, column_stats)
            verified = run_chain(parsed, verifiers, ctx)
            # Rows past the round's quota are valid but not wanted: keep them for audit, out of the training set.
            over = verified.index[verified["accepted"]][max(0, wanted - accepted) :]
            verified.loc[over, ["accepted", "rejected_by", "reject_reason"]] = [
                False,
                "quota",
                f"round already has {wanted} accepted rows",
            ]
            newly = verified[verified["accepted"]]
            planner.observe(newly)
            ctx.accepted = pd.concat(
                [ctx.accepted, newly[["candidate_id", "_text"]].rename(columns={"candidate_id": "_id"})],
                ignore_index=True,
            )
            accepted += len(newly)
            generated += len(cands)
            cand_frames.append(cands)
            verified_frames.append(verified)
            inp.log(
                f"round {inp.round_index} batch {batch.index + 1}: {len(cands)} candidates "
                f"({batch_stats.from_cache} from cache), {len(newly)} accepted; {accepted}/{wanted} accepted, "
                f"{generated}/{budget} of the candidate budget spent; {meter.progress_text()}"
            )
            meter.announce(inp.progress)
            if accepted >= wanted or generated >= budget or meter.stop_reason() is not None:
                break  # the batch planned past the stop (at most one) is cancelled by runner.close()
    finally:
        runner.close()
    stop_reason = TARGET_REACHED if accepted >= wanted else (meter.stop_reason() or BUDGET_EXHAUSTED)
    if stop_reason not in (TARGET_REACHED, BUDGET_EXHAUSTED):
        inp.log(f"round {inp.round_index}: stopped with {accepted}/{wanted} rows: {meter.stop_detail(stop_reason)}")
    if stop_reason == BUDGET_EXHAUSTED:
        inp.log(
            f"round {inp.round_index}: candidate budget of {budget} spent with {accepted}/{wanted} rows accepted"
        )
    candidates = pd.concat(cand_frames, ignore_index=True) if cand_frames else pd.DataFrame()
    verified_all = (
        pd.concat(verified_frames, ignore_index=True).drop(columns=["_output"])
        if verified_frames
        else pd.DataFrame()
    )
    data_columns = _data_columns(spec)
    model_version = getattr(inp.generator, "model_version", None)
    new_synth = (
        synthetic_rows(verified_all, data_columns, [v.name for v in verifiers], model_version)
        if len(verified_all)
        else None
    )
    if new_synth is None:
        new_synth = inp.real.iloc[0:0]
    base = inp.previous if isinstance(inp.previous, PreviousSet) else None
    training_set = append_unread(
        spec.accumulate.policy, spec.accumulate.min_real_fraction, base, inp.real, new_synth
    )
    if training_set is None:
        training_set = build_training_set(
            spec.accumulate,
            real=inp.real,
            previous=inp.previous_frame,
            new_synthetic=new_synth,
            round_index=inp.round_index,
            seed=spec.generate.sampling.seed,
            group_by=getattr(inp.generator, "group_by", ()),
            pool=inp.pool,
        )
    # Rows by source from r-1's record plus the new rows when r-1's rows are not held.
    held = not training_set.attrs.get(BASE_NOT_HELD)
    counts = counts_of(training_set) if held else add_counts(base.counts() or {}, counts_of(training_set))
    round_s = time.perf_counter() - round_start
    coverage = {
        "round": inp.round_index,
        "stop_reason": stop_reason,
        "rows_wanted": wanted,
        "candidate_budget": budget,
        **meter.report(),
        **round_counts(verified_all if len(verified_all) else _empty_verified()),
        **planner.report(),
        "generator_idle_fraction": round(max(0.0, 1 - runner.busy_s / round_s), 4) if round_s > 0 else 0.0,
        "training_rows": sum(counts.values()),
        "training_real_rows": sum(n for (src, _), n in counts.items() if src == "real"),
        "training_synthetic_rows": sum(n for (src, _), n in counts.items() if src == "synthetic"),
    }
    if ctx.state.get("verifier_stats"):  # what verifiers counted over the round (pii types, code_tests isolation)
        coverage["verifier_stats"] = ctx.state["verifier_stats"]
    if dag is not None:
        coverage.update(dag.report(verified_all))
    out = RoundOutput(candidates, verified_all, coverage, training_set, stop_reason, stats, new_synth, base)
    if hasattr(inp.generator, "report"):
        coverage.update(inp.generator.report(out.training_set, inp.real, inp.round_index))
    return out


class _ColumnRun:
    """The column DAG of one round: prompt rows numbered across batches, per-column figures summed."""

    def __init__(self, inp: RoundInputs):
        if getattr(inp.generator, "table_rows", False):
            raise ValueError("generate.columns cannot use a generator that answers with tables (python backend)")
        self.inp = inp
        self.params = columns_dag.column_params(inp.spec)
        self.fanout = columns_dag.fanout(self.params)
        self.prompts = 0
        self.stats: dict[str, Any] = {}  # updated by the batch generating now (the worker's, with overlap)
        self.verified_stats: dict[str, Any] = {}  # as they were after the last batch the round verified
        self.memo: dict[str, Any] = {}

    def generator_for(self, name: str) -> Generator:
        if name == self.inp.spec.generate.generator:
            return self.inp.generator
        try:
            gen = self.inp.generators[name]
        except KeyError:
            raise ValueError(f"an llm column needs the generator {name!r}, which the profile does not have") from None
        return getattr(gen, "inner", gen)  # unwrapped: run_generation puts the cache in front itself

    def batch(
        self, plan: list[tuple[int, pd.DataFrame]], wrap: Wrap
    ) -> tuple[pd.DataFrame, GenerationStats, dict[str, Any]]:
        """The batch's rows and stats, and the per-column figures as they stand after it (a copy: with overlap the
        next batch keeps adding to them while this one is verified)."""
        parsed, stats = columns_dag.run_column_batch(
            self.inp.spec,
            plan,
            round_index=self.inp.round_index,
            first_index=self.prompts,
            cache=self.inp.cache,
            generator_for=lambda name: wrap(self.generator_for(name)),
            stats=self.stats,
            log=self.inp.log,
            memo=self.memo,
        )
        self.prompts += len(plan)
        return parsed, stats, {name: copy.copy(st) for name, st in self.stats.items()}

    def report(self, verified: pd.DataFrame) -> dict[str, Any]:
        accepted = verified[verified["accepted"]] if len(verified) else verified
        return {
            "columns": {name: st.as_dict() for name, st in self.verified_stats.items()},
            "sampler_shares": columns_dag.sampler_shares(self.params, accepted),
        }


Collected = tuple[pd.DataFrame, pd.DataFrame, GenerationStats, dict[str, Any] | None]


@dataclass
class _Batch:
    """A planned batch: its generation (queued, running or done) and what turns its results into tables."""

    index: int
    job: Job[Any]
    finish: Callable[[Any], Collected]

    def collect(self) -> Collected:
        """(candidates, parsed candidates, generation stats, per-column figures after it or None)."""
        return self.finish(self.job.result())


class _Batches:
    """Plans a round's batches in order (cluster targets, exemplars, candidate numbers) and hands each one's
    generation to the runner. Parsing stays out of the job, on the round's thread: the worker only generates."""

    def __init__(self, inp: RoundInputs, planner: PromptPlanner, dag: _ColumnRun | None, runner: BatchRunner):
        self.inp, self.planner, self.dag, self.runner = inp, planner, dag, runner
        self.table_rows = getattr(inp.generator, "table_rows", False)
        self.planned = 0  # batches planned so far: the next one's index, which seeds its rng

    def plan(self, accepted: int, generated: int, pending: int) -> _Batch | None:
        """The next batch from the verified batches' figures and the `pending` candidates planned ahead of it;
        None when none is needed before those are verified (or the round has what it wants)."""
        inp, spec, dag, index = self.inp, self.inp.spec, self.dag, self.planned
        wanted, budget = spec.generate.rows_per_round, spec.generate.candidate_limit
        if self.table_rows:
            n = min(wanted, budget - generated)
            if accepted >= wanted or n <= 0:
                return None
            job = self.runner.submit(lambda wrap: _table_batch(inp, n, index, generated, wrap), n)
            finish: Callable[[Any], Collected] = lambda out: (out[0].drop(columns=["_output"]), out[0], out[1], None)  # noqa: E731
        else:
            n = _next_batch_size(spec, wanted, accepted, generated, pending)
            if n == 0:
                return None
            rng = np.random.default_rng([spec.generate.sampling.seed, inp.round_index, index])
            if dag is not None:
                prompts = self.planner.plan(max(1, n // dag.fanout), rng)
                job = self.runner.submit(lambda wrap: dag.batch(prompts, wrap), len(prompts) * dag.fanout)

                def finish(out: Any) -> Collected:
                    dag.verified_stats = out[2]
                    return out[0].drop(columns=["_output"]), out[0], out[1], out[2]

            else:
                first = generated + pending
                requests = [
                    build_request(spec, ex, round_index=inp.round_index, candidate_index=first + i, target_cluster=t)
                    for i, (t, ex) in enumerate(self.planner.plan(n, rng))
                ]
                progress = _offset(inp.progress, first, budget)
                # With overlap this batch is planned while the one before it generates: its requests queue behind
                # that one's on a backend that can take them early (openai), so the server never drains between
                # the two batches; the job below then takes their results, and drops them if cancelled.
                drop = prefetch_uncached(requests, inp.generator, inp.cache) if self.runner.overlap else None
                job = self.runner.submit(
                    lambda wrap: run_generation(requests, wrap(inp.generator), inp.cache, progress=progress),
                    n,
                    on_done=drop,
                )

                def finish(out: Any) -> Collected:
                    cands = candidates_frame(requests, out[0], round_index=inp.round_index)
                    return cands, parse_outputs(cands, spec), out[1], None

        self.planned += 1
        return _Batch(index, job, finish)


def _table_batch(
    inp: RoundInputs, n: int, batch_index: int, generated: int, wrap: Wrap = lambda gen: gen
) -> tuple[pd.DataFrame, GenerationStats]:
    """One request for a block of `n` rows from a generator that answers with tables (the python backend).

    The row count is in the messages, so it is part of the cache key; the request's seed depends on the round and
    the block only, so a resumed round asks for, and gets, the same rows.
    """
    spec = inp.spec
    base = build_request(spec, inp.seed.iloc[0:0], round_index=inp.round_index, candidate_index=batch_index)
    messages = (*base.messages, ("user", f"rows: {n}"))
    request = dataclasses.replace(
        base,
        messages=messages,
        sample_index=batch_index,
        meta={**base.meta, "rows": n, "prompt_hash": prompt_hash(messages)},
    )
    results, stats = run_generation([request], wrap(inp.generator), inp.cache, progress=inp.progress)
    parsed = table_candidates(
        request,
        results[0],
        round_index=inp.round_index,
        first_index=generated,
        output_schema=spec.generate.output_schema,
        text_columns=spec.seed.text_columns,
        for_verifiers=bool(spec.verify),
    )
    return parsed, stats


def _offset(
    progress: Callable[[int, int], None] | None, start: int, total: int
) -> Callable[[int, int], None] | None:
    """Batch progress as progress through the round's whole candidate budget."""
    if progress is None:
        return None
    return lambda done, _batch_total: progress(start + done, total)


def _data_columns(spec: PipelineSpec) -> list[str]:
    cols = [c.name for c in spec.seed.columns]
    return cols + [c for c in spec.output_columns if c not in cols]


def _empty_verified() -> pd.DataFrame:
    return pd.DataFrame(
        {"accepted": pd.Series(dtype=bool), "rejected_by": [], "reject_reason": [], "parse_error": []}
    )
