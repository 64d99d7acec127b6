"""A Dagster Component for `dg` projects: one synthflow pipeline per component instance.

# defs/math/defs.yaml
type: synthflow.dagster.SynthflowPipelineComponent
attributes:
  spec: math_word_problems.yaml     # relative to this defs.yaml
  profile: local                    # resources/<profile>.yaml under project_root
  project_root: ../../..            # where resources/ lives (default: the dg project root)
  key_prefix: synthetic
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from synthflow.dagster.definitions import build_pipeline_defs


class SynthflowPipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """Synthetic-data pipeline assets (seed, seed_map, round outputs) from one synthflow spec file."""

    spec: str
    profile: str | None = None
    project_root: str | None = None
    key_prefix: str | None = None
    group: str | None = None

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
            spec_path, key_prefix=self.key_prefix, group=self.group, profile=self.profile, project_root=root
        )
