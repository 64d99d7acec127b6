"""Progress of long work, reported to the Dagster log and, when the CLI runs in-process, to a progress bar.

Assets call `report`; the CLI installs a listener with `listening(...)`. Without a listener only the log sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]  # (label, done, total)
_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def reporter(label: str, log: Callable[[str], None], every_pct: int = 10) -> Callable[[int, int], None]:
    """A (done, total) callback that logs every `every_pct` percent and feeds any listener on each call."""
    last = {"pct": -every_pct}

    def report(done: int, total: int) -> None:
        for listener in list(_listeners):
            listener(label, done, total)
        pct = int(100 * done / max(total, 1))
        if pct >= last["pct"] + every_pct or done == total:
            last["pct"] = pct
            log(f"{label}: {done}/{total} ({pct}%)")

    return report


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
        bar.refresh()

    with listening(listener):
        try:
            yield
        finally:
            for bar in bars.values():
                bar.close()
