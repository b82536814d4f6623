"""Writing cases in the background: gzip releases the GIL, so one case's NIfTI files are compressed on a second core
while the next case is generated (writing is about 40% of a data set's generation time)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundWriter:
    """Runs one write at a time in a thread, at most one behind the caller: `submit` first waits for the previous
    write (and re-raises its error). Leaving the ``with`` block waits for the last one, so nothing is still being
    written once the block is left, whether it ended normally or by an exception."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic-writer")
        self._pending: Future | None = None

    def submit(self, fn, *args) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # wait, but let the original exception propagate
        finally:
            self._pool.shutdown(wait=True)
