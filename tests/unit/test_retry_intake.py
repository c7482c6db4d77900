"""The retry driver's intake: an event it fails on is dead-lettered, not a crash of the
retry topic's consumer (which would stop the router, and again at every start)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition

from router.delivery.retry import RetryDriver
from router.offsets import Tracker
from router.telemetry import DestinationStats

Record = namedtuple("Record", "value offset timestamp key headers")


class Worker:
    def __init__(self) -> None:
        self.circuit = SimpleNamespace(wait_s=lambda: 0.0)
        self.paused = False
        self.submitted: list[str] = []
        self.dead: list[tuple[str | None, str]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.outbox = self

    def backlogged(self) -> bool:
        return False

    def submit(self, env: Any, event: dict[str, Any]) -> None:
        self.submitted.append(event["messageId"])
        env.settle()

    async def dead_letter(self, items: list[tuple[Any, str]],
                          destination: str | None = None) -> None:
        for env, reason in items:
            self.dead.append((destination, reason))
            env.settle()

    def _spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))


async def test_a_parked_event_the_engine_fails_on_is_dead_lettered() -> None:
    def route(event: dict[str, Any]) -> Any:
        if event["messageId"] == "poison":
            raise KeyError("a bug")
        return event

    worker = Worker()
    dest = SimpleNamespace(worker=worker, route=route, cfg=SimpleNamespace(name="hook"))
    tracker = Tracker()
    driver = RetryDriver(dest, tracker, DestinationStats(), 32 * 1024)
    tp = TopicPartition("events.retry.hook", 0)
    records = [Record(orjson.dumps({"type": "track", "event": "E", "userId": "u",
                                    "messageId": m}), i, 0, b"u",
                      [("destination", b"hook"), ("not_before", b"0")])
               for i, m in enumerate(["a", "poison", "b"])]
    driver.intake(None, tp, records)  # type: ignore[arg-type]
    await asyncio.gather(*worker.tasks)
    assert worker.submitted == ["a", "b"]
    assert worker.dead == [("hook", "internal_error: KeyError('a bug')")]
    assert tracker.committable() == {tp: 3}
