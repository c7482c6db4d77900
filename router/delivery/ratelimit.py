"""A token-bucket rate limit: ``await acquire()`` waits for the next slot."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Token bucket; ``acquire()`` waits for the next slot. 0 = unlimited."""

    def __init__(self, per_s: float) -> None:
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self.next_at = 0.0

    async def acquire(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)
