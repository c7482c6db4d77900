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


async def two_batches(serial: bool) -> tuple[Worker, float]:
    """Two batches at once: the second queues in the sender. Returns the worker after
    both, and how long it counted the second as sending, half a load after the first."""
    w = worker(serial)
    w.submit_many(items(20))
    await asyncio.sleep(LOAD_S * 1.5)
    second = w.stalled_s()
    await w.drain(5)
    return w, second


async def test_a_queued_send_is_timed_from_the_end_of_the_one_ahead() -> None:
    w, second = await two_batches(serial=True)
    assert abs(w.send_s - LOAD_S) < 0.05, w.send_s  # each load, not its wait
    assert abs(second - LOAD_S / 2) < 0.05, second  # a stall would be seen on time


async def test_otherwise_the_queued_time_counts() -> None:
    w, second = await two_batches(serial=False)  # right for senders that work in parallel
    assert w.send_s > LOAD_S * 1.1, w.send_s  # 0.2 and 0.4 s averaged
    assert second > LOAD_S * 1.4, second
