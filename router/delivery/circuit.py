"""A circuit breaker per destination.

closed ──(N consecutive failed batches)──► open ──(open_s elapsed)──► half-open
half-open lets one batch through as a probe: success closes, failure re-opens.
While open, new batches are parked straight away, so the main flow never waits on a
destination that is down.
"""

from __future__ import annotations

import time

from router.telemetry import DestinationStats, logger

log = logger("router.circuit")
CLOSED, HALF_OPEN, OPEN = 0, 1, 2


class Circuit:
    def __init__(self, failures: int, open_s: float, stats: DestinationStats,
                 name: str = "") -> None:
        self.threshold = failures
        self.open_s = open_s
        self.stats = stats
        self.name = name
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self.probing = False

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and time.monotonic() - self.opened_at >= self.open_s:
            self._set(HALF_OPEN)
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.open_s - (time.monotonic() - self.opened_at))

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.probing = False
            if self.state != CLOSED:
                self._set(CLOSED)
            return
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.probing = False
            self.opened_at = time.monotonic()
            if self.state != OPEN:
                self._set(OPEN)

    def _set(self, state: int) -> None:
        self.state = self.stats.circuit = state
        log.info("Circuit changed state.", destination=self.name,
                 state=("closed", "half-open", "open")[state])
