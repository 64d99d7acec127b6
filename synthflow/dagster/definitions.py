"""Definitions for one pipeline or a whole project folder of specs, with the resources of a profile."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from synthflow.dagster.assets import build_pipeline_assets
from synthflow.dagster.export import export_assets
from synthflow.dagster.resources import ResourceKeys, resources_for_profile
from synthflow.dagster.schedules import schedule_defs
from synthflow.dagster.translator import SynthflowTranslator
from synthflow.profiles import DEFAULT_PROFILE, Profile, load_profile
from synthflow.spec import PipelineSpec, SpecError, load_spec
from synthflow.stages.session import pipeline_needs


def _fingerprint(profile: Profile | None, spec: PipelineSpec) -> str:
    """The generator's identity goes into code versions: a new model makes the round's outputs stale."""
    if profile is None:
        return ""
    g = profile.generators.get(spec.generate.generator)
    blob = json.dumps(g.model_dump(mode="json") if g else None, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _gpus(profile: Profile | None) -> int:
    """GPUs a round step asks Kubernetes for: only profiles that declare `gpus:` (CPU profiles don't)."""
    return profile.gpus if profile is not None and "gpus" in profile.model_fields_set else 0


def _check_profile_covers(spec: PipelineSpec, prof: Profile) -> None:
    """Every generator and embedder the spec's rounds call exists in the profile: fail at load, not mid-round."""
    needs = pipeline_needs(spec)
    missing = [f"generator {g!r}" for g in needs.generators if g not in prof.generators]
    missing += [f"embedder {e!r}" for e in needs.embedders if e not in prof.embedders]
    if missing:
        raise SpecError(
            str(spec.source_path or spec.name),
            [
                (
                    None,
                    "generate/verify",
                    f"needs {', '.join(missing)}, which resource profile {prof.name!r} lacks",
                )
            ],
        )


def build_pipeline_defs(
    spec: PipelineSpec | str | Path,
    *,
    key_prefix: str | Sequence[str] | None = None,
    group: str | None = None,
    profile: Profile | str | None = None,
    project_root: str | Path | None = None,
    include_resources: bool = True,
    translator: SynthflowTranslator | None = None,
) -> dg.Definitions:
    """Dagster definitions for one synthetic dataset, ready to merge into an existing code location.

    `key_prefix` puts the assets under a prefix (e.g. "synthetic" -> synthetic/<name>/seed); `group` sets the asset
    group (default: the pipeline name); `translator` maps each output to its AssetSpec. Resources come from the
    profile (name, Profile, or SYNTHFLOW_PROFILE) under keys named after it (`ResourceKeys`), so any number of
    pipelines, on one profile or several, merge into one code location. Pass include_resources=False to bind
    them yourself (under `ResourceKeys(profile_name)`).
    """
    if not isinstance(spec, PipelineSpec):
        spec = load_spec(spec)
    root = Path(project_root) if project_root else None
    prof = (
        profile
        if isinstance(profile, Profile)
        else load_profile(profile, root)
        if include_resources
        else None
    )
    name = (
        prof.name if prof is not None else profile or os.environ.get("SYNTHFLOW_PROFILE") or DEFAULT_PROFILE
    )
    if prof is not None:
        _check_profile_covers(spec, prof)
    prefix = (key_prefix,) if isinstance(key_prefix, str) else tuple(key_prefix or ())
    translator = translator or SynthflowTranslator()
    assets = build_pipeline_assets(
        spec,
        resource_keys=ResourceKeys(name),
        key_prefix=prefix,
        group=group,
        generator_fingerprint=_fingerprint(prof, spec),
        gpus=_gpus(prof),
        translator=translator,
    )
    assets += export_assets(spec, prefix, group, resource_keys=ResourceKeys(name), translator=translator)
    jobs, schedules = schedule_defs(
        spec, prefix, _gpus(prof), translator=translator, resource_keys=ResourceKeys(name)
    )
    resources = resources_for_profile(prof) if prof is not None and include_resources else None
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources=resources)


def load_project_defs(project_root: str | Path, profile: str | None = None) -> dg.Definitions:
    """Every spec in <project_root>/assets/*.yaml with one profile's resources."""
    root = Path(project_root)
    prof = load_profile(profile, root)
    specs = sorted((root / "assets").glob("*.yaml"))
    defs = [build_pipeline_defs(p, profile=prof, project_root=root) for p in specs]
    return dg.Definitions.merge(*defs) if defs else dg.Definitions(resources=resources_for_profile(prof))
