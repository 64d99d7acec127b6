"""Loading weights without transformers' per-load progress bars ("Loading weights: 100% 272/272").

They say nothing a user of `synthflow run` can act on and push the round table off the screen; our own progress
bars (synthflow.progress) cover the long parts. The previous setting comes back afterwards, so a host process that
wants the bars keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_load_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
