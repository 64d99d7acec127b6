"""Materializing the next N rounds of a pipeline in a Dagster instance (what `synthflow run` does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from synthflow.dagster.assets import ROUND_OUTPUTS, PipelineKeys, round_partitions
from synthflow.dagster.definitions import build_pipeline_defs
from synthflow.dagster.execution import QUIET_CONSOLE
from synthflow.profiles import load_profile
from synthflow.progress import tqdm_bars
from synthflow.spec import PipelineSpec
from synthflow.store import Store

# The CLI prints its own summary and errors; Dagster's logs stay in the instance (the UI has everything).
_QUIET = {"loggers": QUIET_CONSOLE}


class SeedRejected(RuntimeError):
    """The seed failed to load or failed its blocking schema check; no round ran."""


class RoundFailed(RuntimeError):
    pass


@dataclass
class RoundSummary:
    round: int
    partition: str
    real_rows: int
    synthetic_rows: int
    candidates: int
    accepted: int
    rejected_by: dict[str, int]
    stop_reason: str
    versions: dict[str, str]
    generator: str
    notes: list[str] = field(default_factory=list)


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    msgs = []
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data and ev.step_failure_data.user_failure_data:
            msgs.append(ev.step_failure_data.user_failure_data.description or "")
        elif ev.is_step_failure and ev.step_failure_data:
            err = ev.step_failure_data.error
            while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
                err = err.cause
            msgs.append(err.message.strip() if err else "step failed")
    return "; ".join(m for m in msgs if m) or "the run failed (see the Dagster UI for the logs)"


def run_rounds(
    spec: PipelineSpec,
    n_rounds: int,
    *,
    profile: str | None = None,
    project_root: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    echo: Callable[[str], None] = print,
) -> list[RoundSummary]:
    prof = load_profile(profile, project_root)
    instance = instance or dg.DagsterInstance.get()
    keys = PipelineKeys(spec, ())
    defs = build_pipeline_defs(spec, profile=prof, project_root=project_root)
    store = Store(prof.store_root())

    upstream = [keys.key("seed"), keys.key("seed_map")]
    if spec.real is not None and not spec.real.partitioned:
        upstream.append(keys.key("real"))
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        instance=instance, asset_selection=upstream, raise_on_error=False, run_config=_QUIET
    )
    checks = [e for e in res.get_asset_check_evaluations() if e.check_name == "schema"]
    if checks and not checks[0].passed:
        raise SeedRejected(f"the seed failed its schema check: {checks[0].description}")
    if not res.success:
        raise SeedRejected(_failure_text(res))

    parts = round_partitions(spec)
    ts_key = keys.key("training_set")
    done = instance.get_materialized_partitions(ts_key)
    all_keys = parts.get_partition_keys()
    last_done = max((i for i, k in enumerate(all_keys) if k in done), default=-1)
    todo = all_keys[last_done + 1 : last_done + 1 + n_rounds]
    if len(todo) < n_rounds:
        raise RoundFailed(
            f"only {len(todo)} more round partition(s) exist up to now for cron {spec.rounds.cron!r} from "
            f"{spec.rounds.start}; move rounds.start earlier or wait for the next tick"
        )
    round_keys = [keys.key(n) for n in ROUND_OUTPUTS]
    out = []
    for part in todo:
        r = all_keys.index(part) + 1
        echo(f"round {r} ({part}): running ...")
        with tqdm_bars():
            res = job.execute_in_process(
                instance=instance,
                asset_selection=round_keys,
                partition_key=part,
                raise_on_error=False,
                run_config=_QUIET,
            )
        if not res.success:
            raise RoundFailed(f"round {r} ({part}) failed: {_failure_text(res)}")
        out.append(_summary(res, store, keys, part, r))
    return out


def _summary(
    res: dg.ExecuteInProcessResult, store: Store, keys: PipelineKeys, part: str, r: int
) -> RoundSummary:
    mats = {e.asset_key: e.materialization for e in res.get_asset_materialization_events()}
    meta = {k: {mk: getattr(mv, "value", mv) for mk, mv in m.metadata.items()} for k, m in mats.items()}
    cand = meta[keys.key("candidates")]
    ver = meta[keys.key("verified")]
    cov = meta[keys.key("coverage")]
    ts = meta[keys.key("training_set")]
    notes = [cand["smoke_model_fallback"]] if "smoke_model_fallback" in cand else []
    return RoundSummary(
        round=r,
        partition=part,
        real_rows=int(ts["real_rows"]),
        synthetic_rows=int(ts["synthetic_rows"]),
        candidates=int(ver["candidates"]),
        accepted=int(ver["accepted"]),
        rejected_by=json.loads(ver["rejected_by"]),
        stop_reason=str(cov["stop_reason"]),
        versions={
            n: str(meta[keys.key(n)]["store_version"]) for n in ("candidates", "verified", "training_set")
        },
        generator=str(cand["generator"]),
        notes=notes,
    )


def format_summary(rows: list[RoundSummary]) -> str:
    header = [
        "round",
        "partition",
        "real",
        "synthetic",
        "candidates",
        "accepted",
        "rejected by reason",
        "stopped",
        "training_set version",
    ]
    table = [
        [
            str(s.round),
            s.partition,
            str(s.real_rows),
            str(s.synthetic_rows),
            str(s.candidates),
            str(s.accepted),
            ", ".join(f"{k}: {v}" for k, v in s.rejected_by.items()) or "-",
            s.stop_reason,
            s.versions["training_set"],
        ]
        for s in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    generators = sorted({s.generator for s in rows})
    lines.append("")
    lines.append(f"generator: {', '.join(generators)}")
    for note in sorted({n for s in rows for n in s.notes}):
        lines.append(f"note: {note}")
    return "\n".join(lines)
