"""Is the engine still working? What the watchdog in server.py checks.

mlx-lm #1672: the HTTP side can stay up while generation is dead or hung,
so a service manager never learns it should restart the server. Three checks:

* dead: the generation thread has exited (upstream's `generation_available`);
* failed: a generation failed and the engine no longer computes (Engine.recover);
* stalled: a request has been waiting on the engine for longer than
  `watchdog_stall_timeout` and no request at all got anything from the
  engine in that time.

"Anything" is a token or a prefill progress report; mlx-lm sends one of
those for every `prefill_step_size` prompt tokens, so a long prefill keeps
the engine visibly alive, and a request queued behind a long generation is
not stalled either, because the one in front keeps producing tokens. Time a
handler spends writing to a slow client does not count: it is not waiting
on the engine then (and writes time out after `request_timeout`); nor does
a request that was cancelled (its client left): mlx-lm's batch path drops
it without a last word, so its handler may wait on it forever.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator

EXIT_ENGINE_DIED = 3
EXIT_ENGINE_STALLED = 4
EXIT_ENGINE_FAILED = 5  # a failed generation left the engine unable to compute


class EngineActivity:
    """Who waits on the engine since when, and when it last answered anyone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, Callable[[], bool] | None]] = {}
        self._ids = itertools.count()
        self.last_event = clock()

    @contextlib.contextmanager
    def waiting(self, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Around a blocking call into the engine; its return (or its error,
        which the engine also sent) counts as an answer. Once `cancelled()`
        is true the wait no longer counts."""
        key = next(self._ids)
        with self._lock:
            self._waiting[key] = (self._clock(), cancelled)
        try:
            yield
        finally:
            with self._lock:
                del self._waiting[key]
                self.last_event = self._clock()

    def event(self) -> None:
        with self._lock:
            self.last_event = self._clock()

    def progress(self, callback: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
        """Wrap a prefill progress callback so each report counts as an answer."""

        def report(processed: int, total: int) -> None:
            self.event()
            if callback is not None:
                callback(processed, total)

        return report

    def track(self, responses: Iterable, cancelled: Callable[[], bool] | None = None) -> Iterator:
        """Iterate `responses`, counting the time blocked in next() as waiting."""
        it = iter(responses)
        while True:
            with self.waiting(cancelled):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def _live_waits(self) -> list[float]:
        with self._lock:
            waits = list(self._waiting.values())
        return [start for start, cancelled in waits if cancelled is None or not cancelled()]

    @property
    def waiters(self) -> int:
        return len(self._live_waits())

    def stalled_for(self) -> float:
        """Seconds someone has waited with no answer to anyone; 0 when nobody waits."""
        waits = self._live_waits()
        if not waits:
            return 0.0
        return max(0.0, self._clock() - max(min(waits), self.last_event))


def verdict(
    alive: bool, activity: EngineActivity, stall_timeout: float, healthy: bool = True
) -> tuple[int, str] | None:
    """None while the engine is fine, else (exit code, why) for the log."""
    if not alive:
        return EXIT_ENGINE_DIED, (
            "the generation engine has stopped (see the error "
            "above); exiting so the service manager restarts the server"
        )
    if not healthy:
        return EXIT_ENGINE_FAILED, (
            "a failed generation left the engine unable to compute "
            "(see the error above); exiting so the service manager "
            "restarts the server"
        )
    if stall_timeout > 0:
        stalled = activity.stalled_for()
        if stalled > stall_timeout:
            return EXIT_ENGINE_STALLED, (
                f"the generation engine made no progress for {stalled:.1f}s while "
                f"{activity.waiters} request(s) waited (watchdog_stall_timeout = "
                f"{stall_timeout:g}s); exiting so the service manager restarts the server"
            )
    return None
