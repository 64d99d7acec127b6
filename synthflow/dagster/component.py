"""A Dagster Component for `dg` projects: one synthflow pipeline per component instance.

# defs/math/defs.yaml
type: synthflow.dagster.SynthflowPipelineComponent
attributes:
  spec: math_word_problems.yaml     # relative to this defs.yaml
  profile: local                    # resources/<profile>.yaml under project_root
  project_root: ../../..            # where resources/ lives (default: the dg project root)
  key_prefix: synthetic
  translation:                      # optional AssetSpec attributes: for every output, then per output
    tags: {team: ml-data}
    outputs:
      training_set: {owners: ["team:ml-platform"]}

`dg scaffold defs synthflow.dagster.SynthflowPipelineComponent NAME` writes a starter (see scaffold.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from synthflow.dagster.definitions import build_pipeline_defs
from synthflow.dagster.scaffold import SynthflowPipelineScaffolder
from synthflow.dagster.translator import AttributeTranslator

# AssetSpec attributes the YAML may set (automation conditions are Python objects: use a translator class).
TRANSLATABLE = {
    "key_prefix",
    "group_name",
    "tags",
    "owners",
    "kinds",
    "code_version",
    "description",
    "metadata",
}


class Translation(dg.Model, dg.Resolvable):
    """Attributes applied to every output's AssetSpec, and per output (`outputs: {training_set: {...}}`)."""

    key_prefix: str | list[str] | None = None
    group_name: str | None = None
    tags: dict[str, str] | None = None
    owners: list[str] | None = None
    kinds: list[str] | None = None
    code_version: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def translator(self) -> AttributeTranslator:
        base = {k: v for k, v in self.model_dump(exclude={"outputs"}).items() if v is not None}
        for output, attrs in self.outputs.items():
            unknown = set(attrs) - TRANSLATABLE
            if unknown:
                raise ValueError(
                    f"translation.outputs.{output}: unknown attribute(s) {sorted(unknown)}; "
                    f"known: {sorted(TRANSLATABLE)}"
                )
        return AttributeTranslator(base=base, outputs=self.outputs)


@dg.scaffold_with(SynthflowPipelineScaffolder)
class SynthflowPipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """Synthetic-data pipeline assets (seed, seed_map, round outputs) from one synthflow spec file."""

    spec: str
    profile: str | None = None
    project_root: str | None = None
    key_prefix: str | None = None
    group: str | None = None
    translation: Translation | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        spec_path = Path(self.spec)
        if not spec_path.is_absolute():
            spec_path = context.path / spec_path
        if self.project_root:
            root = Path(self.project_root)
            root = root if root.is_absolute() else (context.path / root).resolve()
        else:
            root = context.project_root
        return build_pipeline_defs(
            spec_path,
            key_prefix=self.key_prefix,
            group=self.group,
            profile=self.profile,
            project_root=root,
            translator=self.translation.translator() if self.translation else None,
        )
