"""How rounds execute: the GPU concurrency pool, Kubernetes GPU requests, declarative automation conditions.

No asset definitions here (assets.py imports this module), only the pieces they attach.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

GPU_POOL = "gpu"

# Run config `loggers:` for runs the CLI starts: nothing of Dagster's on the console (a failed step would print its
# stack trace there), because synthflow reports the outcome in one line; the instance's event log keeps everything.
QUIET_CONSOLE: dict[str, Any] = {"console": {"config": {"log_level": "CRITICAL"}}}


def gpu_k8s_tags(gpus: int) -> dict[str, Any]:
    """The `dagster-k8s/config` tag asking Kubernetes for `gpus` GPUs (empty when no GPU is needed).

    dagster-k8s reads it from op tags (k8s_job_executor: one pod per step) and from job/run tags
    (K8sRunLauncher: one pod per run); limits alone suffice for extended resources such as nvidia.com/gpu.
    """
    if gpus <= 0:
        return {}
    return {
        "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}}
    }


def automation_conditions(
    mode: str,
    *,
    seed_key: dg.AssetKey,
    seed_map_key: dg.AssetKey,
    candidates_key: dg.AssetKey,
    training_set_key: dg.AssetKey,
) -> Mapping[str, dg.AutomationCondition | None]:
    """Conditions per asset name (`seed_map`, `candidates`, `export`) for `rounds.automation`.

    on_seed_change: the seed map follows the seed (eager); the next round starts once the seed's data version
    has changed and the seed map has been rebuilt after that change; the export follows every finished round.
    """
    if mode == "none":
        return {}
    AC = dg.AutomationCondition
    seed, seed_map = dg.AssetSelection.assets(seed_key), dg.AssetSelection.assets(seed_map_key)
    ts = dg.AssetSelection.assets(training_set_key)
    seed_changed = AC.any_deps_match(AC.data_version_changed()).allow(seed)
    # The round's condition sits on `candidates`, the multi-asset's root, and reaches round r-1 through
    # training_set's self-dependency. Not on training_set itself: Dagster maps a requested training_set
    # partition onto its own siblings through that self-dependency and would re-request round r-1 too
    # (Dagster 1.13.27).
    previous_round_done = AC.asset_matches(training_set_key, ~AC.any_deps_missing().allow(ts))
    previous_round_requested = AC.asset_matches(
        training_set_key, AC.any_deps_match(AC.asset_matches(candidates_key, AC.newly_requested())).allow(ts)
    )
    # Requesting round r also clears the flag of round r+1: one seed change gives ONE new round, not a chain
    # through every missing partition.
    handled = AC.newly_requested() | AC.newly_updated() | previous_round_requested
    # The seed map has other partitions, so `will_be_requested` cannot see it coming: wait until it was
    # updated after the seed (in one run, the later materialization wins).
    map_is_fresh = (
        AC.any_deps_match(AC.newly_updated())
        .allow(seed_map)
        .since(AC.any_deps_match(AC.newly_updated()).allow(seed))
    )
    # The next round: not materialized yet, while everything it reads (seed, seed map, round r-1) exists.
    next_round = AC.missing() & previous_round_done & ~AC.any_deps_missing()
    round_condition = (
        next_round
        & seed_changed.since(handled)
        & map_is_fresh
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    ).with_label("next round after a seed change")
    export_condition = (
        AC.any_deps_updated().since_last_handled() & ~AC.any_deps_in_progress() & ~AC.in_progress()
    ).with_label("after each round")
    return {
        "seed_map": AC.eager() & AC.all_deps_blocking_checks_passed(),
        "candidates": round_condition,
        "export": export_condition,
    }
