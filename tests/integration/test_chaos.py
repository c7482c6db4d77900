"""Chaos on the real broker: the broker restarts mid-stream, a destination flaps, and a
poison message sits among good ones — every event's fate is accounted for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    produce,
    read_all,
    running,
    webhook,
)

pytestmark = pytest.mark.kafka


async def test_broker_restart_and_flapping_destination_lose_nothing(
        kafka: Any, kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic(partitions=3)
    first, second = list(generate(2000, seed=51)), list(generate(2000, seed=52))
    poison = [b"\x00\x01not json", b'{"type":"track"}']
    async with WebhookSink() as steady, WebhookSink() as flappy:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("steady", f"{steady.url}/events"),
            webhook("flappy", f"{flappy.url}/events", delivery={
                "inline_retries": 1, "backoff_base_s": 0.05, "park_backoff_s": 0.5,
                "backoff_max_s": 2, "circuit_failures": 3, "circuit_open_s": 1})])
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, [*first[:1000], *poison, *first[1000:]])
            flappy.down_until = asyncio.get_running_loop().time() + 3
            await steady.wait_for(lambda: len(set(steady.ids)) >= 1000, 30)
            await asyncio.to_thread(kafka.restart)  # the broker goes away and comes back
            await produce(kafka_bootstrap, topic, second)
            want = {e["messageId"] for e in first + second}
            await steady.wait_for(lambda: set(steady.ids) >= want, 90)
            await flappy.wait_for(lambda: set(flappy.ids) >= want, 90)
            ends = await end_offsets(kafka_bootstrap, topic)

            async def all_committed() -> bool:
                got = await committed(kafka_bootstrap, cfg["kafka"]["group_id"], topic)
                return got == ends

            await eventually(all_committed, 30)
            assert sum(router.stats.invalid.values()) == 2
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert sorted(r.value for r in dead) == sorted(poison)
    assert set(steady.ids) == want and set(flappy.ids) == want
