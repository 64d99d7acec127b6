"""The asset factory: one pipeline spec -> p/seed, p/real, p/seed_map, the p/round multi-asset, their checks.

Assets write through the store resource and return MaterializeResult with a content-hash data_version; the
round reads its inputs from the store rather than through IO managers, so the definitions drop into any code
location without claiming its `io_manager` key.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from synthflow.dagster import metadata as md
from synthflow.dagster.execution import GPU_POOL, automation_conditions, gpu_k8s_tags
from synthflow.dagster.resources import (
    STORE_KEY,
    EmbedderResource,
    GeneratorResource,
    embedder_key,
    generator_key,
)
from synthflow.progress import reporter
from synthflow.spec import PipelineSpec
from synthflow.stages import seed_map as seed_map_stage
from synthflow.stages.accumulate import real_rows, schema_problems
from synthflow.stages.cache import ResultCache
from synthflow.stages.generate import CachingGenerator
from synthflow.stages.round import RoundInputs, run_round
from synthflow.stages.round_plots import coverage_history, rounds_plot, verdicts_plot
from synthflow.stages.schema import column_failures, failures_frame, storable
from synthflow.stages.seed import SeedLoadError, load_seed, load_table, with_ids_and_text
from synthflow.store import Store

ROUND_OUTPUTS = ("candidates", "verified", "coverage", "training_set")


@dataclass(frozen=True)
class PipelineKeys:
    """Asset keys of one pipeline, under an optional prefix."""

    spec: PipelineSpec
    prefix: tuple[str, ...]

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, self.spec.name, name])

    @property
    def store_name(self) -> str:
        return "__".join([*self.prefix, self.spec.name])


def round_partitions(spec: PipelineSpec) -> dg.TimeWindowPartitionsDefinition:
    fmt = (
        "%Y-%m-%d-%H:%M"
        if spec.rounds.cron.split()[1] != "0" or spec.rounds.cron.split()[0] != "0"
        else "%Y-%m-%d"
    )
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=spec.rounds.cron, start=spec.rounds.start, fmt=fmt, timezone=spec.rounds.timezone
    )


def round_index(partitions_def: dg.TimeWindowPartitionsDefinition, partition_key: str) -> int:
    """1-based position of a round partition: the round number users see."""
    first = partitions_def.get_first_partition_key()
    return len(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, partition_key)))


def previous_partition(partitions_def: dg.TimeWindowPartitionsDefinition, partition_key: str) -> str | None:
    window = partitions_def.time_window_for_partition_key(partition_key)
    prev = partitions_def.get_prev_partition_window(window.start)
    return None if prev is None else partitions_def.get_partition_key_for_timestamp(prev.start.timestamp())


def _generator_code(spec: PipelineSpec, generator_profile: str) -> str:
    return f"{spec.section_hash('seed', 'generate')}-{generator_profile}"


def build_pipeline_assets(
    spec: PipelineSpec,
    *,
    key_prefix: tuple[str, ...] = (),
    group: str | None = None,
    generator_fingerprint: str = "",
    gpus: int = 0,
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """`gpus`: GPUs one round step needs; > 0 puts a Kubernetes GPU request on the round's op tags."""
    keys = PipelineKeys(spec, key_prefix)
    group = group or spec.name
    tags = {**spec.tags, "synthflow/pipeline": spec.name}
    owners = list(spec.owners)
    gen_key = generator_key(spec.generate.generator)
    emb_key = embedder_key(spec.diversity.embedder)
    parts = round_partitions(spec)
    store_name = keys.store_name
    automation = automation_conditions(
        spec.rounds.automation,
        seed_key=keys.key("seed"),
        seed_map_key=keys.key("seed_map"),
        candidates_key=keys.key("candidates"),
        training_set_key=keys.key("training_set"),
    )

    # -- p/seed ----------------------------------------------------------------------------------------------
    seed_check = dg.AssetCheckSpec(
        "schema",
        asset=keys.key("seed"),
        blocking=True,
        description="Every seed row matches the columns, types and constraints declared in the spec (pandera).",
    )

    @dg.asset(
        key=keys.key("seed"),
        group_name=group,
        description=f"Seed rows of `{spec.name}` loaded from {spec.seed.source}.",
        code_version=spec.section_hash("seed"),
        check_specs=[seed_check],
        required_resource_keys={STORE_KEY},
        kinds={"parquet", "pandas"},
        owners=owners,
        tags=tags,
    )
    def seed(context: dg.AssetExecutionContext):
        store: Store = context.resources.synthflow_store.get()
        try:
            df = load_seed(spec.seed, spec.base_dir)
        except SeedLoadError as e:
            raise dg.Failure(description=f"seed of {spec.name}: {e}") from e
        failures = column_failures(df, spec.seed.columns)
        rec = store.write(store_name, "seed", storable(df) if failures else df)
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(rec.version),
            metadata=md.table_metadata(df, rec, spec.seed.columns),
        )
        yield dg.AssetCheckResult(
            check_name="schema",
            passed=not failures,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "all rows valid" if not failures else md.failures_summary(spec.seed.source, failures)
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

        @dg.asset(
            key=real_key,
            group_name=group,
            description=f"Real rows of `{spec.name}` that keep arriving, from {spec.real.source}.",
            code_version=spec.section_hash("real", "seed"),
            partitions_def=real_parts,
            required_resource_keys={STORE_KEY},
            kinds={"parquet", "pandas"},
            owners=owners,
            tags=tags,
        )
        def real(context: dg.AssetExecutionContext):
            store: Store = context.resources.synthflow_store.get()
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
            if failures:
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
    @dg.asset(
        key=keys.key("seed_map"),
        group_name=group,
        deps=[keys.key("seed")],
        description="The reference distribution: seed embeddings, clusters, their sizes, shares and exemplars.",
        code_version=spec.section_hash("seed", "diversity"),
        required_resource_keys={STORE_KEY, emb_key},
        kinds={"parquet", "numpy"},
        owners=owners,
        tags=tags,
        automation_condition=automation.get("seed_map"),
    )
    def seed_map(context: dg.AssetExecutionContext):
        store: Store = context.resources.synthflow_store.get()
        embedder = seed_map_stage.embedder_or_none(getattr(context.resources, emb_key).get, spec)
        seed_df = store.read(store_name, "seed")
        tables, meta = seed_map_stage.build(seed_df, spec, embedder)
        if not tables["clusters"].empty:
            store.write(store_name, seed_map_stage.CLUSTERS_TABLE, tables["clusters"])
        rec = store.write(store_name, "seed_map", tables["assignments"])
        return dg.MaterializeResult(
            data_version=dg.DataVersion(rec.version),
            metadata={**md.table_metadata(tables["assignments"], rec), **md.as_metadata(meta)},
        )

    assets.append(seed_map)

    # -- p/round: one multi-asset per round partition ---------------------------------------------------------
    ts_key = keys.key("training_set")
    upstream = [keys.key("seed"), keys.key("seed_map")] + ([real_key] if real_key else [])
    prev_round = dg.AssetDep(
        ts_key, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
    )
    descriptions = {
        "candidates": "Raw generations of the round: prompt, sampling parameters, model, tokens, target cluster.",
        "verified": "Accepted rows of the round with every verifier's verdict (rejected rows: the `rejected` table).",
        "coverage": "Coverage of the round: counts, rejection reasons, duplicate rates, per-cluster shares, gap plan.",
        "training_set": "Real rows plus every verified synthetic row of rounds <= r, with provenance columns.",
    }
    code_versions = {
        "candidates": _generator_code(spec, generator_fingerprint),
        "verified": f"{_generator_code(spec, generator_fingerprint)}-{spec.section_hash('verify', 'diversity')}",
        "coverage": f"{_generator_code(spec, generator_fingerprint)}-{spec.section_hash('verify', 'diversity')}",
        "training_set": f"{_generator_code(spec, generator_fingerprint)}-{spec.section_hash('verify', 'diversity', 'accumulate', 'real')}",
    }
    specs = []
    for name in ROUND_OUTPUTS:
        deps: list[Any] = list(upstream)
        if name == "verified":
            deps.append(keys.key("candidates"))
        if name == "coverage":
            deps.append(keys.key("verified"))
        if name == "training_set":
            deps += [keys.key("verified"), prev_round]
        specs.append(
            dg.AssetSpec(
                keys.key(name),
                deps=deps,
                description=descriptions[name],
                group_name=group,
                code_version=code_versions[name],
                kinds={"parquet", "pandas"} | ({"vllm"} if name == "candidates" else set()),
                owners=owners,
                tags=tags,
                automation_condition=automation.get(name),
            )
        )
    ts_checks = [
        dg.AssetCheckSpec(
            "schema",
            asset=ts_key,
            description="Declared columns, provenance columns and their types are present.",
        ),
        dg.AssetCheckSpec(
            "keeps_previous_rows", asset=ts_key, description="Accumulate never loses a row of r-1."
        ),
        dg.AssetCheckSpec(
            "real_fraction", asset=ts_key, description="Real rows are at least accumulate.min_real_fraction."
        ),
        dg.AssetCheckSpec("unique_ids", asset=ts_key, description="No two rows share an id."),
    ]

    @dg.multi_asset(
        name=f"{'__'.join([*key_prefix, spec.name])}__round",
        specs=specs,
        check_specs=ts_checks + _coverage_check_specs(keys.key("coverage"), spec),
        partitions_def=parts,
        required_resource_keys={STORE_KEY, gen_key, emb_key},
        pool=GPU_POOL,
        op_tags={"synthflow/pipeline": spec.name, **gpu_k8s_tags(gpus)},
    )
    def round_(context: dg.AssetExecutionContext):
        store: Store = context.resources.synthflow_store.get()
        gen_res: GeneratorResource = getattr(context.resources, gen_key)
        emb_res: EmbedderResource = getattr(context.resources, emb_key)
        part = context.partition_key
        r = round_index(parts, part)
        prev_key = previous_partition(parts, part)
        previous = None
        if prev_key is not None and r > 1:
            previous = store.read_or_none(store_name, "training_set", prev_key)
            if previous is None:
                raise dg.Failure(
                    description=(
                        f"round {r} ({part}) of {spec.name} needs the training set of round {r - 1} ({prev_key}), "
                        "which has not been materialized. Rounds run in order: materialize the earlier round first "
                        "(a backfill over a range does this)."
                    )
                )
        seed_df = store.read(store_name, "seed")
        real_df = _real_rows_for_round(store, store_name, spec, seed_df, parts, part, r)
        pool = (
            _synthetic_pool(store, store_name, parts, part)
            if spec.accumulate.policy == "accumulate_subsample"
            else None
        )
        generator = gen_res.get(context.log)
        # One cache for the round's generator and its verifiers' judges.
        cache = ResultCache(store, store_name, chunk_size=spec.generate.store_every)
        embedder = seed_map_stage.embedder_or_none(emb_res.get, spec)
        prev_synth = previous[previous["_source"] == "synthetic"] if previous is not None else None
        planner = seed_map_stage.planner(store, store_name, spec, seed_df, embedder, prev_synth)
        context.log.info(f"round {r} ({part}): generating with {generator.label}")
        result = run_round(
            RoundInputs(
                spec=spec,
                round_index=r,
                seed=seed_df,
                real=real_df,
                previous=previous,
                generator=generator,
                cache=cache,
                generators=_LazyGenerators(context, cache),
                embedder=embedder,
                planner=planner,
                pool=pool,
                log=context.log.info,
                progress=reporter(f"round {r} generation", context.log.info),
            )
        )
        cand_rec = store.write(store_name, "candidates", result.candidates, partition=part)
        acc_rec = store.write(store_name, "verified", result.accepted.reset_index(drop=True), partition=part)
        rej_rec = store.write(store_name, "rejected", result.rejected.reset_index(drop=True), partition=part)
        extras = seed_map_stage.coverage_extras(planner, r)
        coverage = {**result.coverage, **{k: v for k, v in extras.items() if not isinstance(v, bytes)}}
        cov_df = pd.DataFrame([md.flatten(coverage)])
        cov_rec = store.write(store_name, "coverage", cov_df, partition=part)
        history = coverage_history(
            store,
            store_name,
            parts.get_partition_keys_in_range(dg.PartitionKeyRange(parts.get_first_partition_key(), part)),
        )
        if (
            result.new_synthetic is not None
        ):  # every accepted row, kept or not: the pool later subsamples draw from
            store.write(
                store_name, SYNTHETIC_POOL_TABLE, result.new_synthetic.reset_index(drop=True), partition=part
            )
        ts_rec = store.write(store_name, "training_set", result.training_set, partition=part)

        usage = md.usage_metadata(result.stats, generator, gen_res.prices, gen_res.fallback_reason)
        yield dg.MaterializeResult(
            asset_key=keys.key("candidates"),
            data_version=dg.DataVersion(cand_rec.version),
            metadata={
                **md.table_metadata(result.candidates, cand_rec),
                **usage,
                "preview": md.preview(result.candidates, ["candidate_id", "raw_text", "finish_reason"]),
            },
        )
        yield dg.MaterializeResult(
            asset_key=keys.key("verified"),
            data_version=dg.DataVersion(acc_rec.version),
            metadata={
                **md.table_metadata(result.accepted, acc_rec),
                **md.verifier_metadata(result.verified, [v.label for v in spec.verify]),
                "rejected_version": rej_rec.version,
                "rejected_rows": rej_rec.rows,
                "preview": md.preview(result.accepted, spec.output_columns),
                "verdicts_plot": md.image(
                    verdicts_plot(result.coverage["accepted"], result.coverage["rejected_by"], f"round {r}"),
                    "verdicts by reason",
                ),
            },
        )
        yield dg.MaterializeResult(
            asset_key=keys.key("coverage"),
            data_version=dg.DataVersion(cov_rec.version),
            metadata={
                **md.table_metadata(cov_df, cov_rec),
                **md.as_metadata({**coverage, **extras}),
                "preview": md.preview(
                    cov_df, [c for c in cov_df if not isinstance(cov_df[c].iloc[0], bytes)]
                ),
                "rounds_plot": md.image(rounds_plot(history), "metrics across rounds"),
            },
        )
        yield dg.MaterializeResult(
            asset_key=ts_key,
            data_version=dg.DataVersion(ts_rec.version),
            metadata={
                **md.table_metadata(result.training_set, ts_rec, spec.seed.columns),
                **md.provenance_metadata(result.training_set),
            },
        )
        yield from _training_set_checks(ts_key, spec, previous, result.training_set)
        yield from _coverage_checks(keys.key("coverage"), spec, coverage)

    assets.append(round_)
    return assets


class _LazyGenerators(dict):
    """Generators for verifiers (LLM judges), resolved from resources only when a verifier asks for one."""

    def __init__(self, context: dg.AssetExecutionContext, cache: ResultCache):
        super().__init__()
        self._context = context
        self._cache = cache

    def __missing__(self, name: str):
        res = getattr(self._context.resources, generator_key(name), None)
        if res is None:
            raise KeyError(
                f"a verifier needs the generator {name!r}, which the resource profile does not define "
                f"(add it under `generators:`)"
            )
        self[name] = CachingGenerator(res.get(self._context.log), self._cache)
        return self[name]

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default


SYNTHETIC_POOL_TABLE = "synthetic"


def _synthetic_pool(store: Store, store_name: str, parts, part: str) -> pd.DataFrame | None:
    """Every synthetic row accepted in the rounds before `part` (for accumulate_subsample)."""
    earlier = parts.get_partition_keys_in_range(dg.PartitionKeyRange(parts.get_first_partition_key(), part))[
        :-1
    ]
    frames = [
        f for k in earlier if (f := store.read_or_none(store_name, SYNTHETIC_POOL_TABLE, k)) is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def _real_rows_for_round(
    store: Store, store_name: str, spec: PipelineSpec, seed_df, parts, part: str, r: int
):
    data_columns = [c.name for c in spec.seed.columns]
    frames = [real_rows(seed_df, data_columns, 0)]
    if spec.real is not None:
        if spec.real.partitioned:
            for key in parts.get_partition_keys_in_range(
                dg.PartitionKeyRange(parts.get_first_partition_key(), part)
            ):
                df = store.read_or_none(store_name, "real", key)
                if df is not None:
                    frames.append(real_rows(df, data_columns, round_index(parts, key)))
        else:
            df = store.read_or_none(store_name, "real")
            if df is not None:
                frames.append(real_rows(df, data_columns, 0))
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates("_id", keep="first").reset_index(drop=True)


def _training_set_checks(ts_key: dg.AssetKey, spec: PipelineSpec, previous, training_set: pd.DataFrame):
    problems = schema_problems(training_set, spec)
    yield dg.AssetCheckResult(
        asset_key=ts_key,
        check_name="schema",
        passed=not problems,
        metadata={"problems": "; ".join(problems[:20]) or "none"},
    )
    if previous is not None and spec.accumulate.policy == "accumulate":
        lost = sorted(set(previous["_id"]) - set(training_set["_id"]))
        yield dg.AssetCheckResult(
            asset_key=ts_key,
            check_name="keeps_previous_rows",
            passed=not lost,
            metadata={"lost_rows": len(lost), "examples": ", ".join(lost[:10])},
        )
    else:
        yield dg.AssetCheckResult(
            asset_key=ts_key,
            check_name="keeps_previous_rows",
            passed=True,
            metadata={"note": "first round, or a policy that may drop synthetic rows by design"},
        )
    frac = float((training_set["_source"] == "real").mean()) if len(training_set) else 0.0
    yield dg.AssetCheckResult(
        asset_key=ts_key,
        check_name="real_fraction",
        passed=frac >= spec.accumulate.min_real_fraction,
        metadata={"real_fraction": round(frac, 4), "min_real_fraction": spec.accumulate.min_real_fraction},
    )
    dup = int(training_set["_id"].duplicated().sum())
    yield dg.AssetCheckResult(
        asset_key=ts_key, check_name="unique_ids", passed=dup == 0, metadata={"duplicate_ids": dup}
    )


# Diversity gates: (check name, spec field, coverage key, comparison) — defined only when the spec sets a threshold.
_COVERAGE_GATES = (
    ("min_vendi", "min_vendi", "vendi", lambda v, t: v >= t),
    ("max_kl", "max_kl", "kl_seed_vs_synthetic", lambda v, t: v <= t),
    ("max_under_covered", "max_under_covered", "under_covered_clusters", lambda v, t: v <= t),
)


def _coverage_check_specs(cov_key: dg.AssetKey, spec: PipelineSpec) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=cov_key, description=f"Cumulative {metric} against diversity.{field}.")
        for name, field, metric, _ in _COVERAGE_GATES
        if getattr(spec.diversity, field) is not None
    ]


def _coverage_checks(cov_key: dg.AssetKey, spec: PipelineSpec, coverage: dict[str, Any]):
    for name, field, metric, ok in _COVERAGE_GATES:
        threshold = getattr(spec.diversity, field)
        if threshold is None:
            continue
        value = coverage.get(metric)
        yield dg.AssetCheckResult(
            asset_key=cov_key,
            check_name=name,
            passed=value is not None and bool(ok(value, threshold)),
            metadata={
                "value": "not measured (no embedder)" if value is None else value,
                "threshold": threshold,
            },
        )
