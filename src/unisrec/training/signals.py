"""Stopping long work cleanly on SIGTERM / Ctrl-C (no torch here: `benchmark run`'s parent uses it too)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopOnSignal:
    """While active, the first SIGTERM or SIGINT only records itself (:attr:`signum`) for the code to
    act on at a safe point: the training loop ends after the step in progress, writes the resume state
    and raises :class:`~unisrec.errors.Stopped`; `benchmark run` passes it to its workers and waits.

    A later SIGTERM is ignored (the run is already stopping: `benchmark run`'s workers send themselves
    one when their parent ends, which a Ctrl-C of the parent does); a second Ctrl-C stops at once
    (KeyboardInterrupt), as before. Outside the main thread, where Python cannot install handlers,
    nothing changes. The previous handlers are restored on exit, except that after a stop SIGTERM stays
    ignored (the process is ending)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, doing: str = "stopping after this step, once the resume state is written") -> None:
        self.doing = doing  # what the first signal's message says happens next
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            # once stopping, this process is ending: a late SIGTERM (a parent passing the signal on, a
            # worker's own when its parent ended) must not kill it while it reports how it stopped
            signal.signal(s, signal.SIG_IGN if s == signal.SIGTERM and self.signum is not None else handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"{signal.Signals(signum).name}: {self.doing}"
                  + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""), file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
