"""What the seam tests share: a second pipeline and a second profile in the test project, a quiet run helper."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from synthflow.spec import PipelineSpec, load_spec

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def copy_pipeline(project: Path, name: str) -> PipelineSpec:
    """The project's (already shrunk) math spec under another pipeline name, beside it in assets/."""
    text = (project / "assets" / "math_word_problems.yaml").read_text()
    path = project / "assets" / f"{name}.yaml"
    path.write_text(re.sub(r"^name: math_word_problems$", f"name: {name}", text, flags=re.M))
    return load_spec(path)


def copy_profile(project: Path, name: str) -> Path:
    """The smoke profile under another name, with its own store (project/store_<name>)."""
    text = (project / "resources" / "smoke.yaml").read_text()
    store = project / f"store_{name}"
    (project / "resources" / f"{name}.yaml").write_text(text.replace(str(project / "store"), str(store)))
    return store


def materialize(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    partition: str | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        partition_key=partition,
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )


def failure_text(res: dg.ExecuteInProcessResult) -> str:
    out = []
    for ev in res.all_events:
        if ev.is_step_failure and ev.step_failure_data:
            data = ev.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                out.append(data.user_failure_data.description)
            elif data.error:
                out.append(data.error.message)
    return "\n".join(out)
