"""A failing destination says so in the log, at most every WARN_EVERY_S per kind of
failure, with how many events failed since its last line and the latest reason."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from router.config import Config
from router.delivery.outcome import Outcome, Rejected
from router.delivery.worker import WARN_EVERY_S, Worker
from router.offsets import Chunk, Envelope, Tracker
from router.telemetry import DestinationStats


class Refusing:
    async def send(self, events: list[Any]) -> list[Outcome]:
        return [Rejected("HTTP 401: bad api key")] * len(events)


class Outbox:
    async def dead_letter(self, items: Any, destination: str | None = None) -> None:
        for env, _ in items:
            env.settle()


def items(n: int) -> list[tuple[Envelope, dict[str, Any]]]:
    tracker, chunk = Tracker(), Chunk(n, n)
    out = []
    for i in range(n):
        env = Envelope(b"{}", "t", 0, i, 0, None, chunk, tracker)
        env.pending = 1
        out.append((env, {"messageId": str(i)}))
    return out


async def test_refusals_are_logged_once_per_interval_with_their_count() -> None:
    cfg = Config.model_validate({
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"], "group_id": "g"},
        "destinations": [{"name": "hook", "type": "webhook", "settings": {"url": "http://x/"},
                          "batch": {"max_events": 10}}]}).destinations[0]
    worker = Worker(cfg, Refusing(), Outbox(), DestinationStats())  # type: ignore[arg-type]
    with capture_logs() as logs:
        for _ in range(3):
            worker.submit_many(items(10))
            await asyncio.sleep(0.05)
        kind = next(iter(worker.failures))
        worker.failures[kind][2] -= WARN_EVERY_S  # the interval has passed
        worker.submit_many(items(10))
        await asyncio.sleep(0.05)
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["destination"], e["events"]) for e in warned] == [("hook", 10), ("hook", 30)]
    assert warned[0]["event"] == "Delivery refused by the destination: dead-lettered."
    assert warned[1]["reason"] == "HTTP 401: bad api key"
