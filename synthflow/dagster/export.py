"""p/export: the latest (or a chosen) round's training set as a Hugging Face dataset or Parquet, with a card.

Unpartitioned on purpose: an export is "the dataset as of now", so it reads the newest materialized round from
the store rather than asking Dagster for one partition of the training set.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from synthflow.dagster import metadata as md
from synthflow.dagster.assets import (
    PipelineKeys,
    partitions_up_to,
    round_index,
    round_partitions,
    translated_spec,
)
from synthflow.dagster.execution import QUIET_CONSOLE, automation_conditions
from synthflow.dagster.resources import ResourceKeys, StoreResource
from synthflow.dagster.translator import SynthflowTranslator
from synthflow.profiles import load_profile
from synthflow.spec import ExportSpec, PipelineSpec
from synthflow.stages.dataset_card import dataset_card
from synthflow.stages.export import ExportError, ExportTarget, export_table
from synthflow.stages.layouts import training_layout
from synthflow.stages.round_plots import coverage_history
from synthflow.stages.session import RoundInputError, latest_passing_partition, passing_record
from synthflow.store import Store


class ExportConfig(dg.Config):
    partition: str | None = Field(
        default=None, description="Round partition to export (default: the latest materialized round)."
    )
    to: str | None = Field(default=None, description="fsspec URL that overrides export.url for this run.")


def export_op_name(keys: PipelineKeys) -> str:
    """The op behind p/export (Dagster derives it from the asset key): where run config goes."""
    return f"{keys.store_name}__export"


def latest_round(
    store: Store, pipeline: str, partitions_def: dg.TimeWindowPartitionsDefinition
) -> str | None:
    """The newest round whose training set passed its blocking checks."""
    stored = set(store.partitions(pipeline, "training_set"))
    return latest_passing_partition(
        store, pipeline, [k for k in partitions_def.get_partition_keys() if k in stored]
    )


def _local_to_absolute(url: str, base: Path) -> str:
    return url if "://" in url or Path(url).is_absolute() else str((base / url).resolve())


def target_for(export: ExportSpec, to: str | None, base_dir: Path) -> ExportTarget:
    """A URL given at run time replaces both the spec's URL and its hub repo (and one ending in .parquet asks
    for Parquet). A relative local export.url is relative to the spec file, like the seed's source."""
    if to:
        fmt = "parquet" if to.endswith(".parquet") else export.storage
        return ExportTarget(format=fmt, url=to, hub_repo=None, private=export.private)
    url = _local_to_absolute(export.url, base_dir) if export.url else None
    return ExportTarget(format=export.storage, url=url, hub_repo=export.hub_repo, private=export.private)


def build_export_asset(
    spec: PipelineSpec,
    *,
    resource_keys: ResourceKeys,
    key_prefix: Sequence[str] = (),
    group: str | None = None,
    translator: SynthflowTranslator | None = None,
) -> dg.AssetsDefinition:
    """The p/export asset of a spec that has `export:`."""
    if spec.export is None:
        raise ValueError(f"{spec.name} has no `export:` section")
    export = spec.export
    keys = PipelineKeys(spec, tuple(key_prefix), translator or SynthflowTranslator())
    parts = round_partitions(spec)
    condition = automation_conditions(
        spec.rounds.automation,
        seed_key=keys.key("seed"),
        seed_map_key=keys.key("seed_map"),
        candidates_key=keys.key("candidates"),
        training_set_key=keys.key("training_set"),
    ).get("export")
    where = export.url or (
        f"hf://datasets/{export.hub_repo}" if export.hub_repo else "the URL given at run time"
    )
    what = "a Hugging Face dataset" if export.storage == "hf" else "Parquet"
    if export.layout != "raw":
        what += f" in TRL's {export.layout} layout"

    asset_spec = translated_spec(
        keys,
        "export",
        dg.AssetSpec(
            keys.key("export"),
            deps=[keys.key("training_set")],
            group_name=group or spec.name,
            description=(
                f"The latest training set of `{spec.name}` as {what} at {where}, with a dataset card "
                "(README.md): spec, models, rounds, counts, provenance, metrics and the accumulation policy."
            ),
            code_version=spec.section_hash("export", "accumulate"),
            kinds={"huggingface" if export.storage == "hf" else "parquet"},
            owners=list(spec.owners),
            tags={**spec.tags, "synthflow/pipeline": spec.name},
            automation_condition=condition,
        ),
    )

    @dg.multi_asset(
        name=export_op_name(keys), specs=[asset_spec], required_resource_keys={resource_keys.store}
    )
    def _export(context: dg.AssetExecutionContext, config: ExportConfig) -> dg.MaterializeResult:
        store: Store = getattr(context.resources, resource_keys.store).get()
        part = config.partition or latest_round(store, keys.store_name, parts)
        if part is None:
            raise dg.Failure(
                description=f"no round of {spec.name} has a training set that passed its checks: run a round first"
            )
        try:
            rec = passing_record(
                store, keys.store_name, "training_set", part, f"round {part!r} of {spec.name}"
            )
        except RoundInputError as e:
            raise dg.Failure(description=str(e)) from None
        table = store.read(keys.store_name, "training_set", part, version=rec.version)
        r = round_index(parts, part)
        history = coverage_history(store, keys.store_name, partitions_up_to(parts, part))
        card = dataset_card(spec, table, history, round_index=r, partition=part, version=rec.version)
        try:
            table = training_layout(table, spec)
            result = export_table(table, card, target_for(export, config.to, spec.base_dir))
        except ExportError as e:
            raise dg.Failure(description=f"export of {spec.name}: {e}") from e
        context.log.info(f"exported round {r} ({part}): {result.rows} rows to {result.location}")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(rec.version),
            metadata={
                "dagster/uri": result.location,
                "dagster/row_count": dg.MetadataValue.int(result.rows),
                "dagster/column_schema": md.column_schema(table, spec.seed.columns),
                "format": export.format,
                "round": r,
                "partition": part,
                "training_set_version": rec.version,
                "card_location": result.card_location,
                "card": dg.MetadataValue.md(card),
                "preview": md.preview(table, [c for c in table.columns if c != "_text"]),
            },
        )

    return _export


def export_assets(
    spec: PipelineSpec,
    key_prefix: Sequence[str] = (),
    group: str | None = None,
    *,
    resource_keys: ResourceKeys,
    translator: SynthflowTranslator | None = None,
) -> list[dg.AssetsDefinition]:
    """[p/export] when the spec has `export:`, else nothing."""
    if spec.export is None:
        return []
    return [
        build_export_asset(
            spec, resource_keys=resource_keys, key_prefix=key_prefix, group=group, translator=translator
        )
    ]


@dataclass
class ExportSummary:
    location: str
    round: int
    partition: str
    rows: int
    card_location: str


def run_export(
    spec: PipelineSpec,
    *,
    to: str | None = None,
    partition: str | None = None,
    profile: str | None = None,
    project_root: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    key_prefix: Sequence[str] = (),
) -> ExportSummary:
    """Materialize p/export through a Dagster instance (what `synthflow export` does).

    A spec without `export:` can still be exported with `to` (format from the suffix: .parquet or a dataset
    folder).
    """
    to = _local_to_absolute(to, Path.cwd()) if to else None
    if spec.export is None:
        if not to:
            raise ExportError(f"{spec.name} has no `export:` section; pass a target URL (--to)")
        fmt = "parquet" if to.endswith(".parquet") else "hf"
        spec = spec.model_copy(update={"export": ExportSpec(format=fmt, url=to)})
    keys = PipelineKeys(spec, tuple(key_prefix))
    prof = load_profile(profile, project_root)
    rk = ResourceKeys(prof.name)
    defs = dg.Definitions(
        assets=[build_export_asset(spec, resource_keys=rk, key_prefix=keys.prefix)],
        resources={rk.store: StoreResource(root=prof.store_root())},
    )
    res = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance or dg.DagsterInstance.get(),
        run_config=dg.RunConfig(
            ops={export_op_name(keys): ExportConfig(to=to, partition=partition)}, loggers=QUIET_CONSOLE
        ),
        raise_on_error=False,
    )
    if not res.success:
        raise ExportError(_failure(res))
    mat = res.asset_materializations_for_node(export_op_name(keys))[0]
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return ExportSummary(
        location=str(meta["dagster/uri"]),
        round=int(meta["round"]),
        partition=str(meta["partition"]),
        rows=int(meta["dagster/row_count"]),
        card_location=str(meta["card_location"]),
    )


def _failure(res: dg.ExecuteInProcessResult) -> str:
    for ev in res.all_events:
        if ev.is_step_failure and ev.step_failure_data:
            data = ev.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            err = data.error
            while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
                err = err.cause
            return err.message.strip() if err else "the export failed"
    return "the export failed (see the Dagster UI for the logs)"
