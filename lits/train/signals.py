"""A polite stop: SIGTERM / SIGINT set a flag that the training loop reads after each step.

Outside the loop (setup, data preparation, waiting for a cache lock, evaluate_after) the same signals stop at once by
raising `Stopped` (exit 128 + signal); so does a second signal inside the loop.
"""

from __future__ import annotations

import contextlib
import signal

from lits.core.errors import Stopped


class StopRequest:
    """SIGTERM / SIGINT: inside the loop (`deferred`), set `signum`; the loop finishes its step, saves and exits
    128 + signum. Outside it, or at a second signal, raise `Stopped` at once."""

    def __init__(self):
        self.signum = 0
        self.deferred = False  # True while the training loop runs (it polls `requested` after each step)
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # ValueError: not the main thread (training called from a thread): no graceful stop there
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.deferred and not self.signum:
            self.signum = signum
            return
        self.signum = signum
        note = "a second time: stopped at once (last.pt is the last save)" if self.deferred else "before training"
        raise Stopped(signum, note)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum > 0
