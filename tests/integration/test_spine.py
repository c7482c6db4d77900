"""The at-least-once spine against the real broker: everything delivered, offsets
committed only when settled, bad input dead-lettered with a reason, kill -9 loses
nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    headers,
    kill9,
    produce,
    read_all,
    running,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka


async def test_ten_thousand_events_all_delivered_and_committed(kafka_bootstrap: str,
                                                                make_topic: Any) -> None:
    topic = await make_topic(partitions=6)
    events = list(generate(10_000, seed=1))
    await produce(kafka_bootstrap, topic, events)
    async with WebhookSink(secret="s3cret") as sink:
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"),
             "settings": {"url": f"{sink.url}/events", "secret": "s3cret"}}])
        async with running(cfg) as router:
            await sink.wait_for(lambda: len(set(sink.ids)) >= 10_000, 60)
            ends = await end_offsets(kafka_bootstrap, topic)

            async def all_committed() -> bool:
                got = await committed(kafka_bootstrap, cfg["kafka"]["group_id"], topic)
                return got == ends

            await eventually(all_committed, 20)
            assert router.stats.destinations["hook"].delivered == 10_000
    assert set(sink.ids) == {e["messageId"] for e in events}
    assert all(e.get("context", {}).get("library") for e in sink.received)


MALFORMED_KINDS = {
    "invalid_json": b'{"type": "track", ',
    "invalid_utf8": b'{"type": "track", "event": "\xff\xfe", "userId": "u"}',
    "missing_identity": orjson.dumps({"type": "track", "event": "X", "messageId": "m"}),
    "unknown_type": orjson.dumps({"type": "purchase", "userId": "u", "messageId": "m"}),
    "oversized": orjson.dumps({"type": "track", "event": "X", "userId": "u",
                               "properties": {"blob": "x" * 40_000}}),
    "wrong_type": orjson.dumps({"type": "track", "event": "X", "userId": "u",
                                "properties": ["not", "an", "object"]}),
    "not_an_object": b'["track"]',
    "bad_timestamp": orjson.dumps({"type": "track", "event": "X", "userId": "u",
                                   "timestamp": "yesterday"}),
}


async def test_malformed_events_are_dead_lettered_with_reasons(kafka_bootstrap: str,
                                                               make_topic: Any) -> None:
    topic = await make_topic(partitions=2)
    good = list(generate(400, seed=2))
    kinds = list(MALFORMED_KINDS.items())
    values: list[Any] = []
    expected_reasons: list[str] = []
    for i in range(100):
        reason, raw = kinds[i % len(kinds)]
        values.extend(good[i * 4:(i + 1) * 4])
        values.append(raw)
        expected_reasons.append(reason)
    await produce(kafka_bootstrap, topic, values, partition=0)
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")])
        async with running(cfg) as router:
            await sink.wait_for(lambda: len(set(sink.ids)) >= len(good), 30)
            dlq_topic = cfg["kafka"]["dead_letter_topic"]

            async def all_dead_lettered() -> bool:
                return len(await read_all(kafka_bootstrap, dlq_topic)) >= 100

            await eventually(all_dead_lettered, 20)
            assert not router.stopping.is_set()  # the router never exits on bad input
        dead = await read_all(kafka_bootstrap, dlq_topic)
    assert len(dead) == 100
    reasons = sorted(headers(r)["reason"].split(":")[0] for r in dead)
    assert reasons == sorted(expected_reasons)
    raw_values = {bytes(v) for v in values if isinstance(v, bytes)}
    for record in dead:
        h = headers(record)
        assert record.value in raw_values  # the original bytes, untouched
        assert h["source_topic"] == topic and h["source_partition"] == "0"
        assert int(h["source_offset"]) >= 0
    assert set(sink.ids) == {e["messageId"] for e in good}


async def test_kill_9_mid_stream_loses_nothing(kafka_bootstrap: str, make_topic: Any,
                                               tmp_path: Path) -> None:
    topic = await make_topic(partitions=3)
    events = list(generate(6000, seed=3))
    async with WebhookSink(delay_s=0.02) as sink:
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"), "batch": {"max_events": 100,
                                                               "max_wait_ms": 20}}])
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        try:
            await produce(kafka_bootstrap, topic, events)
            await sink.wait_for(lambda: len(sink.received) >= 1500, 60)
            kill9(proc)
            before = len(set(sink.ids))
            assert before < len(events), "killed too late to prove anything"
            proc = spawn(path, log)
            await sink.wait_for(lambda: len(set(sink.ids)) >= len(events), 90)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert set(sink.ids) == {e["messageId"] for e in events}
