"""A polite stop: SIGTERM / SIGINT set a flag that the training loop reads after each step."""

from __future__ import annotations

import contextlib
import signal


class StopRequest:
    """SIGTERM / SIGINT set `signum`; the loop finishes its step, saves and exits 128 + signum. A second Ctrl-C stops
    at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # ValueError: not the main thread (training called from a thread): no graceful stop there
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum > 0
