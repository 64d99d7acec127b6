"""Dagster entry point: every pipeline spec in assets/ with the resource profile named by SYNTHFLOW_PROFILE.

dagster dev -f definitions.py          (or: synthflow ui)
"""

from pathlib import Path

from synthflow.dagster import load_project_defs

defs = load_project_defs(Path(__file__).parent)
