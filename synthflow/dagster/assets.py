"""The asset factory: one pipeline spec -> p/seed, p/real, p/seed_map, the p/round multi-asset, their checks.

Assets write through the store resource and return MaterializeResult with a content-hash data_version. Host assets
read them as plain inputs through the IO manager the definitions attach under the profile's own key
(`synthflow_<profile>_io`, see io_manager.py), so nothing claims the host's `io_manager`. The round's work is
`stages.session.RoundSession`; the round asset only translates its result into Dagster events.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg

from synthflow.dagster import metadata as md
from synthflow.dagster.execution import GPU_POOL, automation_conditions, gpu_k8s_tags
from synthflow.dagster.resources import EmbedderResource, GeneratorResource, ResourceKeys
from synthflow.dagster.translator import (
    STORE_NAME_META,
    TABLE_META,
    SynthflowOutputProps,
    SynthflowTranslator,
)
from synthflow.progress import reporter
from synthflow.spec import PipelineSpec
from synthflow.stages import seed_map as seed_map_stage
from synthflow.stages.budget import PIPELINE_BUDGET_CHECK
from synthflow.stages.columns.dag import SHARES_CHECK, share_gates
from synthflow.stages.round_plots import coverage_history, rounds_plot, verdicts_plot
from synthflow.stages.schema import column_failures, failures_frame, storable
from synthflow.stages.seed import SeedLoadError, load_seed, load_table, with_ids_and_text
from synthflow.stages.session import (
    COVERAGE_GATES,
    FAILED_CHECKS,
    RoundInputError,
    RoundSession,
    pipeline_needs,
)
from synthflow.stages.verifiers import decontaminate
from synthflow.store import Store

ROUND_OUTPUTS = ("candidates", "verified", "coverage", "training_set")
# Outputs a host asset may take as inputs (through the synthflow IO manager).
LOADABLE_OUTPUTS = ("seed", "real", "candidates", "verified", "coverage", "training_set")


@dataclass(frozen=True)
class PipelineKeys:
    """Asset keys of one pipeline, under an optional prefix, as the translator names them."""

    spec: PipelineSpec
    prefix: tuple[str, ...]
    translator: SynthflowTranslator = field(default_factory=SynthflowTranslator)

    def key(self, name: str) -> dg.AssetKey:
        return self.translator.get_asset_key(self.spec, name, self.prefix)

    @property
    def store_name(self) -> str:
        """Where the tables live in the store: the prefix and the pipeline name (never the translated key)."""
        return "__".join([*self.prefix, self.spec.name])


def _parse_start(start: str) -> datetime:
    """`rounds.start` as a date (2026-01-01) or a date and time (2026-01-01T06:00, 2026-01-01 06:00,
    2026-01-01-06:00), whatever format the partition keys use."""
    try:
        return datetime.fromisoformat(start)
    except ValueError:
        return datetime.strptime(start, "%Y-%m-%d-%H:%M")


def round_partitions(spec: PipelineSpec) -> dg.TimeWindowPartitionsDefinition:
    """Time windows of `rounds.cron`. Keys are dates when the cron fires at most once a day (fixed minute and
    hour), else date-hour-minute, so every window of any valid cron has its own key."""
    minute, hour = spec.rounds.cron.split()[:2]
    fmt = "%Y-%m-%d" if minute.isdigit() and hour.isdigit() else "%Y-%m-%d-%H:%M"
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=spec.rounds.cron,
        start=_parse_start(spec.rounds.start),
        fmt=fmt,
        timezone=spec.rounds.timezone,
    )


def round_index(partitions_def: dg.TimeWindowPartitionsDefinition, partition_key: str) -> int:
    """1-based position of a round partition: the round number users see."""
    first = partitions_def.get_first_partition_key()
    return len(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, partition_key)))


def partitions_up_to(partitions_def: dg.TimeWindowPartitionsDefinition, partition_key: str) -> list[str]:
    return partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange(partitions_def.get_first_partition_key(), partition_key)
    )


def previous_partition(partitions_def: dg.TimeWindowPartitionsDefinition, partition_key: str) -> str | None:
    window = partitions_def.time_window_for_partition_key(partition_key)
    prev = partitions_def.get_prev_partition_window(window.start)
    return None if prev is None else partitions_def.get_partition_key_for_timestamp(prev.start.timestamp())


def _generator_code(spec: PipelineSpec, generator_profile: str) -> str:
    return f"{spec.section_hash('seed', 'generate')}-{generator_profile}"


def translated_spec(
    keys: PipelineKeys, output: str, default: dg.AssetSpec, resource_keys: ResourceKeys | None = None
) -> dg.AssetSpec:
    """The translator's AssetSpec for one output, with the store location (and the IO manager of a loadable
    output) attached after translation, so no override can break them."""
    s = keys.translator.get_asset_spec(SynthflowOutputProps(keys.spec, output, keys.prefix, default))
    s = s.merge_attributes(metadata={STORE_NAME_META: keys.store_name, TABLE_META: output})
    if resource_keys is not None and output in LOADABLE_OUTPUTS:
        s = s.with_io_manager_key(resource_keys.io_manager)
    return s


def build_pipeline_assets(
    spec: PipelineSpec,
    *,
    resource_keys: ResourceKeys,
    key_prefix: tuple[str, ...] = (),
    group: str | None = None,
    generator_fingerprint: str = "",
    gpus: int = 0,
    translator: SynthflowTranslator | None = None,
) -> list[dg.AssetsDefinition]:
    """`gpus`: GPUs one round step needs; > 0 puts a Kubernetes GPU request on the round's op tags."""
    keys = PipelineKeys(spec, key_prefix, translator or SynthflowTranslator())
    rk = resource_keys
    group = group or spec.name
    tags = {**spec.tags, "synthflow/pipeline": spec.name}
    owners = list(spec.owners)
    needs = pipeline_needs(spec)
    gen_keys = {name: rk.generator(name) for name in needs.generators}
    emb_key = rk.embedder(needs.embedders[0]) if needs.embedders else None
    emb_keys = {emb_key} if emb_key else set()
    parts = round_partitions(spec)
    store_name = keys.store_name
    op_prefix = "__".join([*key_prefix, spec.name])
    automation = automation_conditions(
        spec.rounds.automation,
        seed_key=keys.key("seed"),
        seed_map_key=keys.key("seed_map"),
        candidates_key=keys.key("candidates"),
        training_set_key=keys.key("training_set"),
    )

    def asset_spec(name: str, description: str, code_version: str, deps=(), kinds=("parquet", "pandas")):
        return translated_spec(
            keys,
            name,
            dg.AssetSpec(
                keys.key(name),
                deps=list(deps),
                description=description,
                group_name=group,
                code_version=code_version,
                kinds=set(kinds),
                owners=owners,
                tags=tags,
                automation_condition=automation.get(name),
            ),
            rk,
        )

    def store_of(context: dg.AssetExecutionContext) -> Store:
        return getattr(context.resources, rk.store).get()

    # -- p/seed ----------------------------------------------------------------------------------------------
    seed_check = dg.AssetCheckSpec(
        "schema",
        asset=keys.key("seed"),
        blocking=True,
        description="Every seed row matches the columns, types and constraints declared in the spec (pandera).",
    )

    @dg.multi_asset(
        name=f"{op_prefix}__seed",
        specs=[
            asset_spec(
                "seed",
                f"Seed rows of `{spec.name}` loaded from {spec.seed.source}.",
                spec.section_hash("seed"),
            )
        ],
        check_specs=[seed_check],
        required_resource_keys={rk.store},
    )
    def seed(context: dg.AssetExecutionContext):
        store = store_of(context)
        try:
            df = load_seed(spec.seed, spec.base_dir)
        except SeedLoadError as e:
            raise dg.Failure(description=f"seed of {spec.name}: {e}") from e
        failures = column_failures(df, spec.seed.columns)
        # A failing seed is stored for audit, marked so that no round ever reads it (stages.session).
        rec = store.write(
            store_name,
            "seed",
            storable(df) if failures else df,
            meta={FAILED_CHECKS: ["schema"]} if failures else None,
        )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(rec.version),
            metadata=md.table_metadata(df, rec, spec.seed.columns),
        )
        yield dg.AssetCheckResult(
            check_name="schema",
            passed=not failures,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "all rows valid"
                if not failures
                else f"version {rec.version}: " + md.failures_summary(spec.seed.source, failures)
            ),
            metadata=md.failures_metadata(failures_frame(failures, row_offset=1))
            if failures
            else {"failing_rows": 0},
        )

    assets: list[Any] = [seed]

    # -- p/real (optional; defaults to the seed) --------------------------------------------------------------
    real_key = None
    if spec.real is not None:
        real_key = keys.key("real")
        real_parts = parts if spec.real.partitioned else None

        @dg.multi_asset(
            name=f"{op_prefix}__real",
            specs=[
                asset_spec(
                    "real",
                    f"Real rows of `{spec.name}` that keep arriving, from {spec.real.source}.",
                    spec.section_hash("real", "seed"),
                )
            ],
            partitions_def=real_parts,
            required_resource_keys={rk.store},
        )
        def real(context: dg.AssetExecutionContext):
            store = store_of(context)
            source = spec.real.source
            part = context.partition_key if spec.real.partitioned else None
            if part is not None:
                source = source.format(partition=part, round=round_index(parts, part))
            try:
                df = with_ids_and_text(
                    load_table(spec.real, spec.base_dir, source), spec.seed, prefix=f"real-{part or 0}"
                )
            except SeedLoadError as e:
                raise dg.Failure(description=f"real data of {spec.name}: {e}") from e
            failures = column_failures(df, spec.seed.columns)
            if failures:  # never stored: a rejected real partition cannot reach a round
                raise dg.Failure(description=md.failures_summary(source, failures))
            if part is not None:
                df["_round"] = round_index(parts, part)
            rec = store.write(store_name, "real", df, partition=part)
            return dg.MaterializeResult(
                data_version=dg.DataVersion(rec.version),
                metadata=md.table_metadata(df, rec, spec.seed.columns),
            )

        assets.append(real)

    # -- p/seed_map -------------------------------------------------------------------------------------------
    @dg.multi_asset(
        name=f"{op_prefix}__seed_map",
        specs=[
            asset_spec(
                "seed_map",
                "The reference distribution: seed embeddings, clusters, their sizes, shares and exemplars.",
                spec.section_hash("seed", "diversity"),
                deps=[keys.key("seed")],
                kinds=("parquet", "numpy"),
            )
        ],
        required_resource_keys={rk.store, *emb_keys},
    )
    def seed_map(context: dg.AssetExecutionContext):
        store = store_of(context)
        embedder = (
            seed_map_stage.embedder_or_none(getattr(context.resources, emb_key).get, spec)
            if emb_key
            else None
        )
        try:
            seed_df = RoundSession(spec, store, store_name, []).load_seed()
        except RoundInputError as e:
            raise dg.Failure(description=str(e)) from None
        tables, meta = seed_map_stage.build(seed_df, spec, embedder)
        if not tables["clusters"].empty:
            store.write(store_name, seed_map_stage.CLUSTERS_TABLE, tables["clusters"])
        rec = store.write(store_name, "seed_map", tables["assignments"])
        return dg.MaterializeResult(
            data_version=dg.DataVersion(rec.version),
            metadata={**md.table_metadata(tables["assignments"], rec), **md.as_metadata(meta)},
        )

    assets.append(seed_map)
    assets.append(
        _round_asset(
            keys, rk, parts, group, gen_keys, emb_key, generator_fingerprint, gpus, asset_spec, real_key
        )
    )
    return assets


_DESCRIPTIONS = {
    "candidates": "Raw generations of the round: prompt, sampling parameters, model, tokens, target cluster.",
    "verified": "Accepted rows of the round with every verifier's verdict (rejected rows: the `rejected` table).",
    "coverage": "Coverage of the round: counts, rejection reasons, duplicate rates, per-cluster shares, gap plan.",
    "training_set": "Real rows plus every verified synthetic row of rounds <= r, with provenance columns.",
}


def _round_asset(
    keys: PipelineKeys,
    rk: ResourceKeys,
    parts: dg.TimeWindowPartitionsDefinition,
    group: str,
    gen_keys: Mapping[str, str],
    emb_key: str | None,
    fingerprint: str,
    gpus: int,
    asset_spec,
    real_key: dg.AssetKey | None,
) -> dg.AssetsDefinition:
    """p/round: one multi-asset per round partition with four outputs and their checks."""
    spec = keys.spec
    ts_key = keys.key("training_set")
    upstream = [keys.key("seed"), keys.key("seed_map")] + ([real_key] if real_key else [])
    prev_round = dg.AssetDep(
        ts_key, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
    )
    gen = _generator_code(spec, fingerprint)
    verify = f"{gen}-{spec.section_hash('verify', 'diversity')}"
    code_versions = {
        "candidates": gen,
        "verified": verify,
        "coverage": verify,
        "training_set": f"{gen}-{spec.section_hash('verify', 'diversity', 'accumulate', 'real')}",
    }
    extra_deps = {
        "candidates": [],
        "verified": [keys.key("candidates")],
        "coverage": [keys.key("verified")],
        "training_set": [keys.key("verified"), prev_round],
    }
    specs = [
        asset_spec(
            name,
            _DESCRIPTIONS[name],
            code_versions[name],
            deps=upstream + extra_deps[name],
            kinds=("parquet", "pandas", "vllm") if name == "candidates" else ("parquet", "pandas"),
        )
        for name in ROUND_OUTPUTS
    ]
    ts_checks = [
        dg.AssetCheckSpec(
            "schema",
            asset=ts_key,
            blocking=True,
            description="Declared columns, provenance columns and their types are present.",
        ),
        dg.AssetCheckSpec(
            "keeps_previous_rows",
            asset=ts_key,
            blocking=True,
            description="Accumulate never loses a row of r-1.",
        ),
        dg.AssetCheckSpec(
            "real_fraction", asset=ts_key, description="Real rows are at least accumulate.min_real_fraction."
        ),
        dg.AssetCheckSpec("unique_ids", asset=ts_key, description="No two rows share an id."),
    ]
    if decontaminate.has_check(spec):
        ts_checks.append(
            dg.AssetCheckSpec(
                decontaminate.CHECK_NAME,
                asset=ts_key,
                blocking=True,
                description="No row added this round shares an n-gram with a benchmark of the decontaminate verifier.",
            )
        )
    if spec.diversity.collapse_warning.enabled:
        ts_checks.append(
            dg.AssetCheckSpec(
                "collapse_warning",
                asset=ts_key,
                blocking=True,
                description="The round's rows are not narrowing against the seed over the last "
                "diversity.collapse_warning.window rounds (spread, clusters reached, Vendi, distinct-2).",
            )
        )
    cov_key = keys.key("coverage")
    cov_checks = [
        dg.AssetCheckSpec(
            name, asset=cov_key, description=f"{'This round' if name == 'max_mmd' else 'Cumulative'} {metric} against diversity.{field_name}."
        )
        for name, field_name, metric, _ in COVERAGE_GATES
        if getattr(spec.diversity, field_name) is not None
    ]
    pipeline_budget = spec.generate.budget.pipeline
    if pipeline_budget.max_tokens is not None or pipeline_budget.max_usd is not None:
        cov_checks.append(
            dg.AssetCheckSpec(
                PIPELINE_BUDGET_CHECK,
                asset=cov_key,
                description="The pipeline's tokens and cost over rounds <= r within generate.budget.pipeline.",
            )
        )
    if share_gates(spec):
        cov_checks.append(
            dg.AssetCheckSpec(
                SHARES_CHECK,
                asset=cov_key,
                description="Accepted shares of category columns against their weights.",
            )
        )

    @dg.multi_asset(
        name=f"{keys.store_name}__round",
        specs=specs,
        check_specs=ts_checks + cov_checks,
        partitions_def=parts,
        required_resource_keys={rk.store, *gen_keys.values(), *([emb_key] if emb_key else [])},
        pool=GPU_POOL,
        op_tags={"synthflow/pipeline": spec.name, **gpu_k8s_tags(gpus)},
    )
    def round_(context: dg.AssetExecutionContext):
        store: Store = getattr(context.resources, rk.store).get()
        part = context.partition_key
        session = RoundSession(
            spec, store, keys.store_name, partitions_up_to(parts, part), log=context.log.info
        )
        r = session.round_index
        try:
            reads = session.load()
        except RoundInputError as e:
            raise dg.Failure(description=str(e)) from None
        main: GeneratorResource = getattr(context.resources, gen_keys[spec.generate.generator])
        emb_res: EmbedderResource | None = getattr(context.resources, emb_key) if emb_key else None
        result = session.run(
            reads,
            generators={
                name: (lambda key=key: getattr(context.resources, key).get(context.log))
                for name, key in gen_keys.items()
            },
            embedder=emb_res.get if emb_res is not None else None,
            progress=reporter(f"round {r} generation", context.log.info),
            prices={name: getattr(context.resources, key).price for name, key in gen_keys.items()},
        )
        out, recs, cov = result.output, result.records, result.coverage
        usage = md.usage_metadata(result.stats, result.generator, cov, main.fallback_reason)
        yield dg.MaterializeResult(
            asset_key=keys.key("candidates"),
            data_version=dg.DataVersion(recs["candidates"].version),
            metadata={
                **md.table_metadata(out.candidates, recs["candidates"]),
                **usage,
                "preview": md.preview(out.candidates, ["candidate_id", "raw_text", "finish_reason"]),
            },
        )
        yield dg.MaterializeResult(
            asset_key=keys.key("verified"),
            data_version=dg.DataVersion(recs["verified"].version),
            metadata={
                **md.table_metadata(out.accepted, recs["verified"]),
                **md.verifier_metadata(out.verified, [v.label for v in spec.verify]),
                "rejected_version": recs["rejected"].version,
                "rejected_rows": recs["rejected"].rows,
                "preview": md.preview(out.accepted, spec.output_columns),
                "verdicts_plot": md.image(
                    verdicts_plot(out.coverage["accepted"], out.coverage["rejected_by"], f"round {r}"),
                    "verdicts by reason",
                ),
            },
        )
        cov_df = result.coverage_frame
        history = coverage_history(store, keys.store_name, session.partitions)
        yield dg.MaterializeResult(
            asset_key=cov_key,
            data_version=dg.DataVersion(recs["coverage"].version),
            metadata={
                **md.table_metadata(cov_df, recs["coverage"]),
                **md.as_metadata(cov),
                "preview": md.preview(
                    cov_df, [c for c in cov_df if not isinstance(cov_df[c].iloc[0], bytes)]
                ),
                "rounds_plot": md.image(rounds_plot(history), "metrics across rounds"),
            },
        )
        yield dg.MaterializeResult(
            asset_key=ts_key,
            data_version=dg.DataVersion(recs["training_set"].version),
            metadata={
                # The rows held: the whole set, or only those appended to r-1's (its counts from the record).
                **md.training_set_metadata(
                    out.training_added, recs["training_set"], spec.seed.columns, out.training_set_held
                ),
            },
        )
        for c in result.checks:
            yield dg.AssetCheckResult(
                asset_key=keys.key(c.asset),
                check_name=c.name,
                passed=c.passed,
                description=None
                if c.passed or not c.blocking
                else f"version {recs[c.asset].version} is kept out of every later round and downstream read",
                metadata=c.metadata,
            )

    return round_
