"""Progress of long work, reported to the Dagster log and, when the CLI runs in-process, to a progress bar.

Assets call `report`; the CLI installs a listener with `listening(...)`. Without a listener only the log sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]  # (label, done, total)
_listeners: list[Listener] = []
# The latest note of each label (a round's running cost, stages/budget.py), shown beside its bar and in the log.
_notes: dict[str, str] = {}


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def note_of(label: str) -> str:
    return _notes.get(label, "")


class Reporter:
    """A (done, total) callback that logs every `every_pct` percent and feeds any listener on each call; `note`
    sets a short text (the running cost) that follows the count in the log and on the bar."""

    def __init__(self, label: str, log: Callable[[str], None], every_pct: int = 10):
        self.label, self.log, self.every_pct = label, log, every_pct
        self.last_pct = -every_pct
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        for listener in list(_listeners):
            listener(self.label, done, total)
        pct = int(100 * done / max(total, 1))
        if pct >= self.last_pct + self.every_pct or done == total:
            self.last_pct = pct
            note = note_of(self.label)
            self.log(f"{self.label}: {done}/{total} ({pct}%)" + (f", {note}" if note else ""))

    def note(self, text: str) -> None:
        _notes[self.label] = text
        for listener in list(_listeners) if self.total else ():
            listener(self.label, self.done, self.total)


def reporter(label: str, log: Callable[[str], None], every_pct: int = 10) -> Reporter:
    _notes.pop(label, None)  # a new round's bar starts without the last one's cost
    return Reporter(label, log, every_pct)


@contextmanager
def tqdm_bars() -> Iterator[None]:
    """One tqdm bar per label, for terminals."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def listener(label: str, done: int, total: int) -> None:
        bar = bars.get(label)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = bars[label] = tqdm(total=total, desc=label, unit="req", leave=False, disable=None)
        bar.n = done
        note = note_of(label)
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.refresh()

    with listening(listener):
        try:
            yield
        finally:
            for bar in bars.values():
                bar.close()
