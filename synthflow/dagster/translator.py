"""Spec output -> AssetSpec, in one overridable object (the pattern of dagster-dbt's DagsterDbtTranslator).

Subclass `SynthflowTranslator` and override `get_asset_spec` (or just `get_asset_key`), then pass an instance to
`build_pipeline_defs(..., translator=...)`; the Component takes the same overrides from YAML (`translation:`).
Whatever key the translator gives an output, every dependency, check, job, schedule and the IO manager follow it:
the store location travels in the spec's metadata, not in the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from synthflow.spec import PipelineSpec

STORE_NAME_META = "synthflow/store_name"
TABLE_META = "synthflow/table"


@dataclass(frozen=True)
class SynthflowOutputProps:
    """One output of a pipeline as the factory sees it, before translation."""

    spec: PipelineSpec
    output: str  # seed | real | seed_map | candidates | verified | coverage | training_set | export
    key_prefix: tuple[str, ...]
    default_spec: dg.AssetSpec


class SynthflowTranslator:
    """The default mapping: key [*prefix, pipeline, output], group = pipeline (or the group given), the spec's
    owners and tags, kinds by table type, code versions from the spec sections each output depends on."""

    def get_asset_key(self, spec: PipelineSpec, output: str, key_prefix: Sequence[str]) -> dg.AssetKey:
        return dg.AssetKey([*key_prefix, spec.name, output])

    def get_asset_spec(self, props: SynthflowOutputProps) -> dg.AssetSpec:
        return props.default_spec


@dataclass
class AttributeTranslator(SynthflowTranslator):
    """A translator from plain data (the Component's `translation:` YAML): attributes for every output, then
    per-output ones (`outputs: {training_set: {...}}`). Keys: key_prefix (extra, before the default key),
    group_name, tags, owners, kinds, code_version, description, metadata, automation_condition (an
    AutomationCondition object)."""

    base: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    parent: SynthflowTranslator = field(default_factory=SynthflowTranslator)

    def _attrs(self, output: str) -> dict[str, Any]:
        return {**self.base, **self.outputs.get(output, {})}

    def get_asset_key(self, spec: PipelineSpec, output: str, key_prefix: Sequence[str]) -> dg.AssetKey:
        key = self.parent.get_asset_key(spec, output, key_prefix)
        extra = self._attrs(output).get("key_prefix")
        if extra:
            key = key.with_prefix([extra] if isinstance(extra, str) else list(extra))
        return key

    def get_asset_spec(self, props: SynthflowOutputProps) -> dg.AssetSpec:
        s = self.parent.get_asset_spec(props)
        attrs = {k: v for k, v in self._attrs(props.output).items() if k != "key_prefix"}
        merge = {k: attrs.pop(k) for k in ("tags", "metadata") if k in attrs}
        tags = dict(s.tags)
        # AssetSpec keeps kinds as `dagster/kind/*` tags: replacing the kinds means dropping those tags.
        if "kinds" in attrs:
            tags = {k: v for k, v in tags.items() if not k.startswith("dagster/kind/")}
        if "tags" in merge or "kinds" in attrs:
            attrs["tags"] = {**tags, **merge.get("tags", {})}
        if "metadata" in merge:
            attrs["metadata"] = {**s.metadata, **merge["metadata"]}
        if "kinds" in attrs:
            attrs["kinds"] = set(attrs["kinds"])
        return s.replace_attributes(**attrs) if attrs else s
