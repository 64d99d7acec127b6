"""The round job and the schedule of `rounds.cron`: each tick materializes the next round.

Rounds must run in order (round r reads the training set of r-1), so a tick targets the NEXT round — the first
round partition after the last materialized training set — not simply the newest time window: a pipeline whose
`rounds.start` lies in the past catches up one round per tick instead of failing on a missing predecessor.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys, previous_partition, round_partitions
from synthflow.dagster.execution import gpu_k8s_tags
from synthflow.dagster.resources import ResourceKeys
from synthflow.dagster.translator import SynthflowTranslator
from synthflow.spec import PipelineSpec
from synthflow.stages.session import RoundInputError, passing_record

# Runs that are still going: a second round request would only fail on its unfinished predecessor.
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def round_job_name(keys: PipelineKeys) -> str:
    return f"{keys.store_name}__rounds"


def round_schedule_name(keys: PipelineKeys) -> str:
    return f"{keys.store_name}__next_round"


def next_round_partition(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    materialized: set[str],
    current_time: datetime | None = None,
) -> str | None:
    """The partition after the last materialized round, among the windows closed by `current_time`."""
    keys = partitions_def.get_partition_keys(current_time=current_time)
    last_done = max((i for i, k in enumerate(keys) if k in materialized), default=-1)
    return keys[last_done + 1] if last_done + 1 < len(keys) else None


def round_job(keys: PipelineKeys, gpus: int = 0) -> dg.UnresolvedAssetJobDefinition:
    """The four outputs of one round partition; run tags ask Kubernetes for the round's GPUs."""
    return dg.define_asset_job(
        name=round_job_name(keys),
        selection=dg.AssetSelection.assets(*(keys.key(n) for n in ROUND_OUTPUTS)),
        partitions_def=round_partitions(keys.spec),
        tags=gpu_k8s_tags(gpus),
        description=f"One round of `{keys.spec.name}`: candidates, verified, coverage and training set.",
    )


def round_schedule(
    keys: PipelineKeys, job: dg.UnresolvedAssetJobDefinition, resource_keys: ResourceKeys
) -> dg.ScheduleDefinition:
    """Each tick of `rounds.cron` requests the next round, or says why it skips: also when the seed or the
    previous round's training set failed a blocking check (read from the store, like the round itself does).

    Stopped by default: turning a schedule on is a deployment decision (UI, `dagster schedule start`), not a
    side effect of loading a code location.
    """
    spec = keys.spec
    parts = round_partitions(spec)
    seed_key, ts_key = keys.key("seed"), keys.key("training_set")

    @dg.schedule(
        name=round_schedule_name(keys),
        cron_schedule=spec.rounds.cron,
        execution_timezone=spec.rounds.timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Materializes the next round of `{spec.name}` on every tick of rounds.cron.",
        required_resource_keys={resource_keys.store},
    )
    def _next_round(context: dg.ScheduleEvaluationContext):
        instance = context.instance
        if instance.get_latest_materialization_event(seed_key) is None:
            return dg.SkipReason(f"{seed_key.to_user_string()} was never materialized; materialize it first")
        busy = instance.get_run_records(dg.RunsFilter(job_name=job.name, statuses=_IN_FLIGHT), limit=1)
        if busy:
            return dg.SkipReason(f"run {busy[0].dagster_run.run_id} of {job.name} is still going")
        done = instance.get_materialized_partitions(ts_key)
        part = next_round_partition(parts, done, context.scheduled_execution_time)
        if part is None:
            return dg.SkipReason("every round up to this tick is materialized")
        store = getattr(context.resources, resource_keys.store).get()
        prev = previous_partition(parts, part)
        try:
            passing_record(store, keys.store_name, "seed", None, f"the seed of {spec.name}")
            if prev is not None:
                passing_record(store, keys.store_name, "training_set", prev, f"the training set of {prev}")
        except RoundInputError as e:
            return dg.SkipReason(f"round {part} cannot run: {e}")
        return dg.RunRequest(partition_key=part, tags={"synthflow/pipeline": spec.name})

    return _next_round


def schedule_defs(
    spec: PipelineSpec,
    key_prefix: Sequence[str] = (),
    gpus: int = 0,
    translator: SynthflowTranslator | None = None,
    *,
    resource_keys: ResourceKeys,
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """The round job and its schedule for one pipeline."""
    keys = PipelineKeys(spec, tuple(key_prefix), translator or SynthflowTranslator())
    job = round_job(keys, gpus)
    return [job], [round_schedule(keys, job, resource_keys)]
