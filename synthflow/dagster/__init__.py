"""The thin Dagster layer: asset factory, resources, checks, Component. The only place that imports Dagster."""

from synthflow.dagster.component import SynthflowPipelineComponent
from synthflow.dagster.definitions import build_pipeline_defs, load_project_defs
from synthflow.dagster.translator import SynthflowOutputProps, SynthflowTranslator

__all__ = [
    "SynthflowOutputProps",
    "SynthflowPipelineComponent",
    "SynthflowTranslator",
    "build_pipeline_defs",
    "load_project_defs",
]
