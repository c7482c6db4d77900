"""A destination's send slots: first come, first served, and able to turn waiters away.

Like ``asyncio.Semaphore``, except that ``turn_away()`` answers every batch still waiting
for a slot with False at once: a stalled destination parks those batches instead of
holding them (and the router's in-flight budget) until the stall ends. A sender that
queues a batch of its own (``ProcessSender`` stages the next batch in its child) offers
``withdraw()``, whose sends then raise ``Withdrawn``: parked the same way.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Withdrawn(Exception):
    """A batch handed to a sender was taken back before it was sent (``withdraw()``)."""


class Gate:
    def __init__(self, slots: int) -> None:
        self.free = slots
        self.waiters: deque[asyncio.Future[bool]] = deque()

    async def acquire(self) -> bool:
        """True: a slot is taken (``release`` it); False: turned away, no slot taken."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1

    def turn_away(self) -> int:
        """Answer every waiter False; how many there were."""
        count = 0
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
                count += 1
        return count
