"""Keep the tail of what this process and its children write to fd 2, while still passing it through.

vLLM's engine core is a child process: when it dies at start-up, the exception that says why is printed by the
child, and the parent raises only "Engine core initialization failed. See root cause above". To name the cause in
our own error we put a pipe under fd 2 while the engine starts; a thread copies everything to the real stderr and
keeps the last lines. Children inherit the pipe, so their later output still reaches the terminal through the
thread; the thread ends when the last child closes its end.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from types import TracebackType


class StderrTail:
    def __init__(self, max_lines: int = 400) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def text(self) -> str:
        return "\n".join(self._lines)

    def __enter__(self) -> StderrTail:
        try:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self._saved = os.dup(2)
            out = os.dup(2)  # the pump's own copy: it outlives this block for as long as children write
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except OSError:  # no fd 2 to speak of (some embedded runtimes): run without the tail
            self._saved = None
            return self
        self._thread = threading.Thread(target=self._pump, args=(read_fd, out), daemon=True)
        self._thread.start()
        return self

    def _pump(self, read_fd: int, out_fd: int) -> None:
        partial = b""
        with os.fdopen(read_fd, "rb", buffering=0) as src, os.fdopen(out_fd, "wb", buffering=0):
            while chunk := src.read(65536):
                with contextlib.suppress(OSError):
                    os.write(out_fd, chunk)
                partial += chunk
                *done, partial = partial.split(b"\n")
                self._lines.extend(line.decode(errors="replace") for line in done)
        if partial:
            self._lines.append(partial.decode(errors="replace"))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        # Our own fd 2 goes back to the terminal; children keep the pipe, so the pump lives on for them. On failure
        # the children are gone: wait briefly so their last words are in the tail before we read it.
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        if exc_type is not None and self._thread is not None:
            self._thread.join(timeout=3)
