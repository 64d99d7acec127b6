"""synthflow: synthetic LLM-training data as Dagster software-defined assets."""

from __future__ import annotations

from synthflow._version import __version__

__all__ = ["__version__", "build_pipeline_defs", "load_spec"]


def __getattr__(name: str):
    # Lazy so that `import synthflow` (and the stages) never pays for importing Dagster.
    if name == "build_pipeline_defs":
        from synthflow.dagster.definitions import build_pipeline_defs

        return build_pipeline_defs
    if name == "load_spec":
        from synthflow.spec import load_spec

        return load_spec
    raise AttributeError(name)
