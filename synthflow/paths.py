"""Where synthflow keeps local state. A leaf module: backends, profiles and the CLI all ask it, and it imports
nothing of synthflow."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The project's local state folder: store, smoke model, Dagster instance (SYNTHFLOW_HOME, default .synthflow)."""
    return Path(os.environ.get("SYNTHFLOW_HOME", ".synthflow")).resolve()
