"""A serial sender (one batch at a time, the next queued in it, like DuckDB's child):
a queued send's time counts from the end of the send ahead of it."""

from __future__ import annotations

import asyncio
from typing import Any

from router.config import Config
from router.delivery.outcome import DELIVERED, Outcome
from router.delivery.worker import Worker
from router.offsets import Chunk, Envelope, Tracker
from router.telemetry import DestinationStats

LOAD_S = 0.2


class Serial:
    """Loads one batch at a time in LOAD_S; a second waits inside, as in a child's queue."""

    max_concurrency = 2

    def __init__(self, serial: bool) -> None:
        self.serial = serial
        self.lock = asyncio.Lock()

    async def send(self, events: list[Any]) -> list[Outcome]:
        async with self.lock:
            await asyncio.sleep(LOAD_S)
        return [DELIVERED] * len(events)


def items(n: int) -> list[tuple[Envelope, dict[str, Any]]]:
    tracker = Tracker()
    chunk = Chunk(n, n)
    out = []
    for i in range(n):
        env = Envelope(b"{}", "t", 0, i, 0, None, chunk, tracker)
        env.pending = 1
        out.append((env, {"messageId": str(i)}))
    return out


def worker(serial: bool) -> Worker:
    cfg = Config.model_validate({
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"], "group_id": "g"},
        "destinations": [{"name": "wh", "type": "webhook", "settings": {"url": "http://x/"},
                          "batch": {"max_events": 10}}]}).destinations[0]
    return Worker(cfg, Serial(serial), outbox=None, stats=DestinationStats())  # type: ignore[arg-type]


async def two_batches(serial: bool) -> tuple[Worker, float, float]:
    """Two batches at once: the second queues in the sender. Half a load after the first
    ended: when the worker counts the second as started, and when it was handed over.
    Returns those and the worker after both."""
    w = worker(serial)
    w.submit_many(items(20))
    await asyncio.sleep(LOAD_S * 1.5)
    assert len(w.sending) == 1  # the first ended; the second is loading
    clock, handed = w._oldest(), min(w.sending)
    await w.drain(5)
    return w, clock, handed


async def test_a_queued_send_is_timed_from_the_end_of_the_one_ahead() -> None:
    w, clock, handed = await two_batches(serial=True)
    assert clock > handed  # its stall clock started when the first ended, not at hand-over
    # its usual send time is a load's, not a load plus its wait (0.24 s: see below)
    assert w.send_s < LOAD_S * 1.15, w.send_s


async def test_otherwise_the_queued_time_counts() -> None:
    w, clock, handed = await two_batches(serial=False)  # right for parallel senders
    assert clock == handed
    assert w.send_s >= LOAD_S * 1.2, w.send_s  # 0.2 and 0.4 s, moving average: 0.24
