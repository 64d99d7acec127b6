"""One round of one pipeline against its store: what round r reads, `run_round`, what it writes, its checks.

This is the single round driver. The Dagster multi-asset p/round translates a `RoundResult` into events; the CLI
runner goes through that asset. Partition arithmetic stays with the caller: a session gets the keys of every round
partition up to and including its own, in order, so it never needs to know how rounds are scheduled.

Light mode, for callers that run hundreds of rounds in one process (the collapse study, the benchmarks): the caller
keeps the reads in memory (`RoundReads` for round 1, then `RoundSession.carry`, which accumulates exactly as `load`
would read back what `run` stored), sets `persist=False` (nothing is written, so a memory:// store will do),
`checks=` the checks it wants (none: `()`), `plots=False` and `keep_cache=False`. Inputs, `run_round` and
accumulation are the same code either way; only the writes, the checks and the plots are left out.

Blocking checks hold across runs through the store: a version whose blocking check failed is written with its
failed check names in the version record (`failed_checks`), and no later round reads it (see `RoundInputError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from synthflow.generators.base import Generator
from synthflow.registry import policies
from synthflow.spec import PipelineSpec, Price
from synthflow.stages import seed_map as seed_map_stage
from synthflow.stages.accumulate import appended_rows, real_rows, schema_problems
from synthflow.stages.budget import (
    PIPELINE_BUDGET_CHECK,
    SPEND_META,
    BudgetMeter,
    Spend,
    pipeline_budget_check,
    recorded_spend,
    round_spend,
)
from synthflow.stages.cache import ResultCache
from synthflow.stages.columns import dag as columns_dag
from synthflow.stages.diversity import reference as distance
from synthflow.stages.earlier import open_indexes, write_chunks
from synthflow.stages.generate import CachingGenerator, GenerationStats
from synthflow.stages.previous import LazyFrame, PreviousSet, previous_set_of, training_set_meta
from synthflow.stages.round import PromptPlanner, RoundInputs, RoundOutput, run_round
from synthflow.stages.verifiers import decontaminate
from synthflow.stages.verifiers.base import Needs
from synthflow.stages.verifiers.registry import validate_params
from synthflow.store import Store, VersionRecord

SYNTHETIC_POOL_TABLE = "synthetic"
FAILED_CHECKS = "failed_checks"  # version-record meta: names of the blocking checks this version failed
FAILED_REASONS = "failed_check_reasons"  # version-record meta: {check: why}, for checks that say (collapse_warning)
# The training-set checks whose failure keeps a version out of every later round and downstream read.
BLOCKING_TRAINING_SET_CHECKS = ("schema", "keeps_previous_rows", decontaminate.CHECK_NAME)


class RoundInputError(RuntimeError):
    """Round r cannot run on what the store holds; the message says what to materialize or fix."""


@dataclass(frozen=True)
class CheckOutcome:
    """One check on one output of the round (`asset`: training_set or coverage)."""

    asset: str
    name: str
    passed: bool
    blocking: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class PipelineNeeds:
    """Every generator and embedder of the resource profile that a pipeline's rounds call."""

    generators: tuple[str, ...]
    embedders: tuple[str, ...]


def pipeline_needs(spec: PipelineSpec) -> PipelineNeeds:
    """The `generate` generator(s), the diversity embedder (when diversity is on), and what each verifier's
    parameters `requires()`."""
    generators = list(spec.generate.generators_used)
    for v in spec.verify:
        params = validate_params(v)
        needs: Needs = params.requires() if hasattr(params, "requires") else Needs()
        generators += [g for g in needs.generators if g not in generators]
    # With diversity off no stage embeds (embedder_or_none), so the profile need not have the embedder.
    return PipelineNeeds(tuple(generators), (spec.diversity.embedder,) if spec.diversity.enabled else ())


def failed_checks(rec: VersionRecord | None) -> list[str]:
    return list(rec.meta.get(FAILED_CHECKS, ())) if rec is not None else []


def latest_passing_partition(store: Store, store_name: str, partitions: Sequence[str]) -> str | None:
    """The newest of `partitions` whose latest training set passed its blocking checks: "the latest round"."""
    for part in reversed(partitions):
        rec = store.latest(store_name, "training_set", part)
        if rec is not None and not failed_checks(rec):
            return part
    return None


def passing_record(
    store: Store, store_name: str, asset: str, partition: str | None, what: str
) -> VersionRecord:
    """The latest version record of a table; refused, naming the check and version, if it failed a blocking check."""
    rec = store.latest(store_name, asset, partition)
    if rec is None:
        raise RoundInputError(f"{what} has not been materialized")
    failed = failed_checks(rec)
    if failed:
        reasons = rec.meta.get(FAILED_REASONS) or {}
        why = "".join(f" ({c}: {reasons[c]})" for c in failed if c in reasons)
        raise RoundInputError(
            f"{what} (version {rec.version}) failed its blocking check {', '.join(repr(c) for c in failed)}{why}; "
            "no round reads it: fix the input and materialize it again"
        )
    return rec


def read_passing(store: Store, store_name: str, asset: str, partition: str | None, what: str) -> pd.DataFrame:
    rec = passing_record(store, store_name, asset, partition, what)
    return store.read(store_name, asset, partition, version=rec.version)


@dataclass
class RoundReads:
    """What round r reads: the seed, every real row known at r, round r-1's training set, the pool."""

    seed: pd.DataFrame
    real: pd.DataFrame
    previous: pd.DataFrame | None
    pool: pd.DataFrame | None
    # The version record `previous` was read from: the base a training set that only adds rows is appended to.
    previous_record: VersionRecord | None = None
    spent: Spend = field(default_factory=Spend)  # what rounds 1..r-1 recorded (generate.budget.pipeline)

    @property
    def previous_set(self) -> PreviousSet | None:
        """Round r-1's training set without reading its rows (`load` reads them only when a consumer asks)."""
        return previous_set_of(self, "previous", self.previous_record)


# `previous` may hold a PreviousSet: reading the attribute reads its rows (once); see stages/previous.py.
LazyFrame().install(RoundReads, "previous")


@dataclass
class RoundResult:
    output: RoundOutput
    previous: pd.DataFrame | None
    coverage: dict[str, Any]  # the round's coverage with the planner's extras (plots as bytes included)
    coverage_frame: pd.DataFrame
    records: dict[str, VersionRecord]  # candidates, verified, rejected, coverage, training_set (+ synthetic)
    checks: list[CheckOutcome]
    generator: Generator

    @property
    def stats(self) -> GenerationStats:
        return self.output.stats

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]


LazyFrame().install(RoundResult, "previous")


class _LazyGenerators(Mapping[str, Generator]):
    """Generators the verifiers call (LLM judges), created only when a verifier asks, behind the round's cache."""

    def __init__(
        self, factories: Mapping[str, Callable[[], Generator]], cache: ResultCache, meter: BudgetMeter | None = None
    ):
        self._factories = factories
        self._cache = cache
        self._meter = meter
        self._made: dict[str, Generator] = {}

    def __getitem__(self, name: str) -> Generator:
        if name not in self._made:
            if name not in self._factories:
                raise KeyError(name)
            gen: Generator = CachingGenerator(self._factories[name](), self._cache)
            self._made[name] = self._meter.metered(name, gen) if self._meter is not None else gen
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)


@dataclass
class RoundSession:
    """Round `len(partitions)` of a pipeline; `partitions` are the round partition keys up to it, in order."""

    spec: PipelineSpec
    store: Store
    store_name: str
    partitions: Sequence[str]
    log: Callable[[str], None] = field(default=lambda msg: None)
    # Light mode (see the module docstring). Checks not asked for are not evaluated, so they cannot block.
    persist: bool = True  # False: no table is written and `records` is empty
    checks: Collection[str] | None = None  # names of the checks to evaluate; None: all of them
    plots: bool = True  # the coverage plot (rendering it costs more than the rest of a small round)
    keep_cache: bool = True  # False: the round's request cache is dropped after it (nothing asks it again)

    @property
    def round_index(self) -> int:
        return len(self.partitions)

    @property
    def partition(self) -> str:
        return self.partitions[-1]

    def _what(self, asset: str, partition: str | None = None) -> str:
        where = f" of round {self.partitions.index(partition) + 1} ({partition})" if partition else ""
        return f"the {asset}{where} of {self.store_name}"

    def load_seed(self) -> pd.DataFrame:
        return read_passing(self.store, self.store_name, "seed", None, f"the seed of {self.store_name}")

    def load(self) -> RoundReads:
        """Read round r's inputs, refusing any that failed a blocking check (fail at once, never fall back)."""
        r, name = self.round_index, self.store_name
        seed = self.load_seed()
        previous = previous_record = None
        if r > 1:
            prev = self.partitions[-2]
            if self.store.latest(name, "training_set", prev) is None:
                raise RoundInputError(
                    f"round {r} ({self.partition}) of {name} needs the training set of round {r - 1} ({prev}), "
                    "which has not been materialized. Rounds run in order: materialize the earlier round first "
                    "(a backfill over a range does this)."
                )
            try:
                previous_record = passing_record(
                    self.store, name, "training_set", prev, self._what("training set", prev)
                )
            except RoundInputError as e:
                raise RoundInputError(f"round {r} ({self.partition}) cannot run: {e}") from None
            record = previous_record
            # Read only when a consumer needs the rows (stages/previous.py): the common round does not.
            previous = PreviousSet(record, lambda: self.store.read_record(record))
        pool = self._pool() if self.spec.accumulate.policy == "accumulate_subsample" else None
        spent = recorded_spend(self.store, name, self.partitions[:-1])
        return RoundReads(seed, self._real(seed), previous, pool, previous_record, spent)

    def _real(self, seed: pd.DataFrame) -> pd.DataFrame:
        spec, name = self.spec, self.store_name
        data_columns = [c.name for c in spec.seed.columns]
        frames = [real_rows(seed, data_columns, 0)]
        if spec.real is not None:
            if spec.real.partitioned:
                for i, key in enumerate(self.partitions, start=1):
                    if self.store.latest(name, "real", key) is not None:
                        df = read_passing(self.store, name, "real", key, self._what("real data", key))
                        frames.append(real_rows(df, data_columns, i))
            elif self.store.latest(name, "real") is not None:
                df = read_passing(self.store, name, "real", None, f"the real data of {name}")
                frames.append(real_rows(df, data_columns, 0))
        out = pd.concat(frames, ignore_index=True)
        return out.drop_duplicates("_id", keep="first").reset_index(drop=True)

    def _pool(self) -> pd.DataFrame | None:
        """Every synthetic row accepted in the rounds before r (for accumulate_subsample)."""
        frames = [
            f
            for k in self.partitions[:-1]
            if (f := self.store.read_or_none(self.store_name, SYNTHETIC_POOL_TABLE, k)) is not None
        ]
        return pd.concat(frames, ignore_index=True) if frames else None

    def carry(
        self, reads: RoundReads, result: RoundResult, *, real: pd.DataFrame | None = None
    ) -> RoundReads:
        """The next round's reads in memory: what `load` reads back once `run` stored `result` (its training set
        as the previous one, its synthetic rows added to the pool); `real`: every real row known then."""
        pool = reads.pool
        new = result.output.new_synthetic
        if self.spec.accumulate.policy == "accumulate_subsample" and new is not None:
            pool = pd.concat([p for p in (pool, new) if p is not None], ignore_index=True)
        return RoundReads(
            reads.seed,
            reads.real if real is None else real,
            result.output.training_set,
            pool,
            result.records.get("training_set"),
            reads.spent + round_spend(result.coverage),
        )

    def run(
        self,
        reads: RoundReads,
        *,
        generators: Mapping[str, Callable[[], Generator]],
        embedder: Callable[[], Any] | None = None,
        progress: Callable[[int, int], None] | None = None,
        planner: PromptPlanner | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> RoundResult:
        """Run the round on `reads` and store every table. `generators`: factories by profile name; `planner`:
        the caller's own (default: the GapPlanner over the stored seed map, or uniform sampling); `prices`: the
        profile generators' prices (default 0), which generate.budget's USD limits are counted at.

        Holds the store's lock of (pipeline, partition) throughout: a second run of the same round on the same
        store raises synthflow.store.LockHeld naming the holder instead of generating the round twice. A round
        that writes nothing (`persist=False`) has nothing to guard and takes no lock.
        """
        guard = self.store.lock(self.store_name, self.partition) if self.persist else contextlib.nullcontext()
        with guard:
            spec, store, name = self.spec, self.store, self.store_name
            generator = generators[spec.generate.generator]()
            if hasattr(generator, "prepare_report"):  # python backend: its report carries figures forward
                generator.prepare_report(next(iter(self.earlier_coverage(1)), None))
            # One cache for the round's generator and its verifiers' judges. A cache dropped after the round is
            # never read again, so its results need not go out in chunks while the round runs.
            cache = ResultCache(store, name, chunk_size=spec.generate.store_every if self.keep_cache else 1 << 30)
            emb = seed_map_stage.embedder_or_none(embedder, spec) if embedder is not None else None
            # Earlier rounds' accepted rows through the persistent indexes, when every round wrote its chunks:
            # then neither the verifiers nor the planner read round r-1's set (stages/earlier.py).
            base = reads.previous_set
            indexes = (
                open_indexes(store, name, spec, self.partitions, emb)
                if self.persist and base is not None and not base.loaded
                else None
            )
            if planner is None:
                earlier_rows = indexes.planner_rows() if indexes is not None and emb is not None else None
                if earlier_rows is not None:
                    planner = seed_map_stage.planner(store, name, spec, reads.seed, emb, *earlier_rows)
                else:
                    prev_synth = (
                        reads.previous[reads.previous["_source"] == "synthetic"]
                        if base is not None and emb is not None
                        else None
                    )
                    planner = seed_map_stage.planner(store, name, spec, reads.seed, emb, prev_synth)
            try:
                meter = BudgetMeter(spec, prices, reads.spent)
                out = self._generate(
                    reads, generator, generators, cache, emb, planner, progress, meter,
                    earlier=indexes.state() if indexes is not None else None,
                )  # fmt: skip
            finally:
                if not self.keep_cache and store.fs.exists(cache.dir):
                    store.fs.rm(cache.dir, recursive=True)
            return self._finish(reads, out, planner, generator, emb)

    def _generate(
        self,
        reads: RoundReads,
        generator: Generator,
        generators: Mapping[str, Callable[[], Generator]],
        cache: ResultCache,
        emb: Any | None,
        planner: PromptPlanner,
        progress: Callable[[int, int], None] | None,
        meter: BudgetMeter | None = None,
        earlier: Mapping[str, Any] | None = None,
    ) -> RoundOutput:
        spec, r = self.spec, self.round_index
        self.log(f"round {r} ({self.partition}): generating with {generator.label}")
        return run_round(
            RoundInputs(
                spec=spec,
                round_index=r,
                seed=reads.seed,
                real=reads.real,
                previous=reads.previous_set,
                generator=generator,
                cache=cache,
                generators=_LazyGenerators(generators, cache, meter),
                embedder=emb,
                planner=planner,
                pool=reads.pool,
                log=self.log,
                progress=progress,
                meter=meter,
                earlier=earlier,
            )
        )

    def earlier_coverage(self, n: int) -> list[dict[str, Any]]:
        """The stored coverage rows of the last `n` rounds before this one, oldest first (none in light mode):
        per-round figures later rounds read back instead of recomputing them."""
        parts = self.partitions[:-1][-n:] if self.persist and n > 0 else []
        frames = [self.store.read_or_none(self.store_name, "coverage", p) for p in parts]
        return [f.iloc[0].to_dict() for f in frames if f is not None and len(f)]

    def _collapse_check(self, coverage: Mapping[str, Any]) -> list[CheckOutcome]:
        """The blocking collapse_warning on the training set (when the spec turns it on), its trend read from the
        stored coverage of the last window - 1 rounds (a light-mode round has none stored: too few to judge)."""
        cfg = self.spec.diversity.collapse_warning
        if not cfg.enabled or (self.checks is not None and distance.COLLAPSE_CHECK not in self.checks):
            return []
        outcome = distance.collapse_check(self.spec, coverage, self.earlier_coverage(cfg.window - 1))
        if outcome is None:
            return []
        passed, metadata = outcome
        return [CheckOutcome("training_set", distance.COLLAPSE_CHECK, passed, True, metadata)]

    def _finish(
        self, reads: RoundReads, out: RoundOutput, planner: PromptPlanner, generator: Generator,
        emb: Any | None = None,
    ) -> RoundResult:  # fmt: skip
        spec, store, name, part, r = self.spec, self.store, self.store_name, self.partition, self.round_index
        # Synthetic values arrive from parsed JSON as Python objects; concatenated with typed real rows they leave
        # an object column that Parquet stores typed anyway. Check the table as it is stored, not that artefact.
        # When only the rows appended to r-1's are held (accumulate's common case), everything below reads those
        # rows and r-1's record, never r-1's rows.
        base = reads.previous_set
        out = dataclasses.replace(out, _training_set=out.training_added.infer_objects())
        held = out.training_set_held
        extras = seed_map_stage.coverage_extras(planner, r, plot=self.plots)
        coverage = {**out.coverage, **extras, **distance.round_figures(planner, spec, r)}
        cov_frame = pd.DataFrame([flatten({k: v for k, v in coverage.items() if not isinstance(v, bytes)})])
        checks = training_set_checks(
            spec, base, out.training_added, only=self.checks, appended_to=None if held else base
        ) + [
            c for c in coverage_checks(spec, coverage) if self.checks is None or c.name in self.checks
        ] + self._collapse_check(coverage)
        if not self.persist:
            return RoundResult(out, base, coverage, cov_frame, {}, checks, generator)
        failed = [c.name for c in checks if c.asset == "training_set" and c.blocking and not c.passed]
        records = {
            "candidates": store.write(name, "candidates", out.candidates, partition=part),
            "verified": store.write(name, "verified", out.accepted.reset_index(drop=True), partition=part),
            "rejected": store.write(name, "rejected", out.rejected.reset_index(drop=True), partition=part),
            # The round's spend in the record's meta: what later rounds add up for the pipeline budget.
            "coverage": store.write(
                name, "coverage", cov_frame, partition=part, meta={SPEND_META: round_spend(coverage).as_meta()}
            ),
        }
        if (
            out.new_synthetic is not None
        ):  # every accepted row, kept or not: the pool later subsamples draw from
            records[SYNTHETIC_POOL_TABLE] = store.write(
                name, SYNTHETIC_POOL_TABLE, out.new_synthetic.reset_index(drop=True), partition=part
            )
        # Written even when a blocking check failed (for audit); the record's failed_checks keeps it out of reads.
        # A set the policy built in memory as r-1's plus new rows had r-1 read already (base.loaded).
        prev_rows = base.frame if base is not None and base.loaded else None
        added = out.training_added if not held else appended_rows(prev_rows, out.training_set)
        new_rows = added if added is not None else out.training_set[out.training_set["_round"] == r]
        ts_meta = {
            **training_set_meta(out.training_added, None if held else base),
            # The round's additions in the persistent indexes before the record that says so (stages/earlier.py).
            **write_chunks(store, name, part, new_rows, emb),
            **({FAILED_CHECKS: failed} if failed else {}),
            **_failure_reasons(checks),
        }
        if added is not None and reads.previous_record is not None:
            # Issue 14: a training set that is r-1's plus new rows is stored by appending only those rows to r-1's
            # Delta version (same data version as a full write of the same table).
            records["training_set"] = store.append(
                name, "training_set", added, base=reads.previous_record, partition=part, meta=ts_meta
            )
        else:
            records["training_set"] = store.write(
                name, "training_set", out.training_set, partition=part, meta=ts_meta
            )
        return RoundResult(out, base, coverage, cov_frame, records, checks, generator)


def _failure_reasons(checks: Sequence[CheckOutcome]) -> dict[str, Any]:
    reasons = {
        c.name: c.metadata["reason"]
        for c in checks
        if c.asset == "training_set" and c.blocking and not c.passed and "reason" in c.metadata
    }
    return {FAILED_REASONS: reasons} if reasons else {}


def flatten(d: Mapping[str, Any]) -> dict[str, Any]:
    """Nested values as JSON strings, so a dict of metrics is one flat Parquet row."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = json.dumps(v, sort_keys=True, default=str)
        elif isinstance(v, list | tuple):
            out[k] = json.dumps(list(v), default=str)
        else:
            out[k] = v
    return out


def training_set_checks(
    spec: PipelineSpec,
    previous: pd.DataFrame | PreviousSet | None,
    training_set: pd.DataFrame,
    only: Collection[str] | None = None,
    appended_to: PreviousSet | None = None,
) -> list[CheckOutcome]:
    """The training set's checks; `only`: the names to evaluate (the others are not computed), None: all.

    `appended_to`: `training_set` holds only the rows appended to that previous set, whose rows are not read: the
    checks then read those rows and the previous version record's statistics (stages/set_checks.py)."""

    def wanted(name: str) -> bool:
        return only is None or name in only

    def outcome(name: str, passed: bool, metadata: dict[str, Any]) -> CheckOutcome:
        return CheckOutcome("training_set", name, passed, name in BLOCKING_TRAINING_SET_CHECKS, metadata)

    if appended_to is not None:
        from synthflow.stages.set_checks import appended_checks

        out = [outcome(n, ok, md) for n, ok, md in appended_checks(spec, appended_to, training_set, only)]
        return out + _added_rows_checks(spec, None, training_set, wanted, outcome)  # the rows added: all held
    if isinstance(previous, PreviousSet):
        previous = previous.frame if policies.get(spec.accumulate.policy).keeps_previous_rows else None
    out = []
    if wanted("schema"):
        problems = schema_problems(training_set, spec)
        out.append(outcome("schema", not problems, {"problems": "; ".join(problems[:20]) or "none"}))
    keeps = previous is not None and policies.get(spec.accumulate.policy).keeps_previous_rows
    if wanted("keeps_previous_rows") and keeps:
        lost = sorted(set(previous["_id"]) - set(training_set["_id"]))
        out.append(
            outcome(
                "keeps_previous_rows", not lost, {"lost_rows": len(lost), "examples": ", ".join(lost[:10])}
            )
        )
    elif wanted("keeps_previous_rows"):
        note = "first round, or a policy that does not promise to keep every row of r-1"
        out.append(outcome("keeps_previous_rows", True, {"note": note}))
    if wanted("real_fraction"):
        frac = float((training_set["_source"] == "real").mean()) if len(training_set) else 0.0
        out.append(
            outcome(
                "real_fraction",
                frac >= spec.accumulate.min_real_fraction,
                {"real_fraction": round(frac, 4), "min_real_fraction": spec.accumulate.min_real_fraction},
            )
        )
    if wanted("unique_ids"):
        dup = int(training_set["_id"].duplicated().sum())
        out.append(outcome("unique_ids", dup == 0, {"duplicate_ids": dup}))
    return out + _added_rows_checks(spec, previous, training_set, wanted, outcome)


def _added_rows_checks(
    spec: PipelineSpec,
    previous: pd.DataFrame | None,
    training_set: pd.DataFrame,
    wanted: Callable[[str], bool],
    outcome: Callable[..., CheckOutcome],
) -> list[CheckOutcome]:
    """The checks of the rows the round adds (those of `training_set` not in `previous`)."""
    out = []
    # Only where a decontaminate entry asks for it (the Dagster check exists then too: decontaminate.has_check).
    contamination = decontaminate.training_set_check(spec, previous, training_set) if wanted(
        decontaminate.CHECK_NAME
    ) else None
    if contamination is not None:
        out.append(outcome(decontaminate.CHECK_NAME, *contamination))
    return out


# Diversity gates: (check name, spec field, coverage key, comparison) — defined only when the spec sets a threshold.
COVERAGE_GATES = (
    ("min_vendi", "min_vendi", "vendi", lambda v, t: v >= t),
    ("max_kl", "max_kl", "kl_seed_vs_synthetic", lambda v, t: v <= t),
    ("max_under_covered", "max_under_covered", "under_covered_clusters", lambda v, t: v <= t),
    ("max_mmd", "max_mmd", distance.MMD, lambda v, t: v <= t),  # this round's rows vs the seed
)


def coverage_checks(spec: PipelineSpec, coverage: Mapping[str, Any]) -> list[CheckOutcome]:
    out = []
    for name, field_name, metric, ok in COVERAGE_GATES:
        threshold = getattr(spec.diversity, field_name)
        if threshold is None:
            continue
        value = coverage.get(metric)
        out.append(
            CheckOutcome(
                "coverage",
                name,
                value is not None and bool(ok(value, threshold)),
                False,
                {"value": "not measured (no embedder)" if value is None else value, "threshold": threshold},
            )
        )
    spend = pipeline_budget_check(spec, coverage)  # generate.budget.pipeline
    if spend is not None:
        out.append(CheckOutcome("coverage", PIPELINE_BUDGET_CHECK, spend[0], False, spend[1]))
    shares = columns_dag.share_check(spec, dict(coverage))  # category columns with max_share_deviation
    if shares is not None:
        out.append(CheckOutcome("coverage", columns_dag.SHARES_CHECK, shares[0], False, shares[1]))
    return out
