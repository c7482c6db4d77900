"""Two routers in one consumer group share the partitions; when one stops, the other
takes its partitions over and nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.app import Router
from router.config import Config
from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    produce,
    webhook,
)

pytestmark = pytest.mark.kafka


async def test_two_replicas_share_partitions_and_survive_one_leaving(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic(partitions=6)
    first, second = list(generate(3000, seed=61)), list(generate(3000, seed=62))
    async with WebhookSink(delay_s=0.01) as sink:
        cfg = Config.model_validate(config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"), "batch": {"max_events": 100,
                                                               "max_wait_ms": 20}}]))
        a, b = Router(cfg), Router(cfg)
        await a.start()
        run_a = asyncio.create_task(a.run(install_signals=False))
        await b.start()
        run_b = asyncio.create_task(b.run(install_signals=False))
        try:
            await eventually(lambda: a.source is not None and b.source is not None
                             and len(a.source.consumer.assignment()) == 3
                             and len(b.source.consumer.assignment()) == 3, 30)
            await produce(kafka_bootstrap, topic, first)
            await sink.wait_for(lambda: len(set(sink.ids)) >= 1000, 30)
            assert a.stats.received > 0 and b.stats.received > 0  # both took a share
            b.stop()  # one replica leaves mid-stream: drains, commits, hands over
            await asyncio.wait_for(run_b, 60)
            await eventually(lambda: a.source is not None
                             and len(a.source.consumer.assignment()) == 6, 30)
            await produce(kafka_bootstrap, topic, second)
            want = {e["messageId"] for e in first + second}
            await sink.wait_for(lambda: set(sink.ids) >= want, 60)
            ends = await end_offsets(kafka_bootstrap, topic)

            async def all_committed() -> bool:
                got = await committed(kafka_bootstrap, cfg.kafka.group_id, topic)
                return got == ends

            await eventually(all_committed, 30)
        finally:
            a.stop()
            b.stop()
            await asyncio.wait_for(asyncio.gather(run_a, run_b, return_exceptions=True), 60)
    assert set(sink.ids) == want
