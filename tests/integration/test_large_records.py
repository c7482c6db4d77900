"""Records larger than the router's own topics take, on a real broker.

A source topic may allow records larger than Kafka's default (``max.message.bytes``).
Such a record is oversized for the router (``max_event_bytes``) and is dead-lettered;
before, a dead-letter topic with the default limit refused it (MESSAGE_TOO_LARGE) and the
router retried the write forever: its partition never committed again. Now the router
creates its topics large enough, and where an existing topic is smaller, the dead letter
is kept without its value (its headers say where the original is) and a park that does
not fit is dead-lettered instead."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    eventually,
    headers,
    read_all,
    running,
    webhook,
)

pytestmark = pytest.mark.kafka
BIG = 2_000_000  # over Kafka's default 1 MB record limit


async def create(bootstrap: str, name: str, max_bytes: int | None = None) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"max.message.bytes": str(max_bytes)} if max_bytes else {}
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()
    return name


async def publish(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8_000_000)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, orjson.dumps(event))
    finally:
        await producer.stop()


def with_blob(event: dict[str, Any], size: int) -> dict[str, Any]:
    return {**event, "properties": {"blob": "x" * size}}


async def test_an_oversized_record_is_dead_lettered_whole_and_the_partition_commits(
        kafka_bootstrap: str) -> None:
    topic = await create(kafka_bootstrap, f"large-{uuid.uuid4().hex[:8]}", 5_000_000)
    events = list(generate(12, seed=61))
    big = with_blob(events[4], BIG)
    await publish(kafka_bootstrap, topic, [*events[:4], big, *events[5:]])
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")])
        async with running(cfg):
            await eventually(lambda: len(sink.ids) == 11)
            group = cfg["kafka"]["group_id"]

            async def all_committed() -> bool:
                return (await committed(kafka_bootstrap, group, topic)) == {0: 12}
            await eventually(all_committed)
    [dead] = await read_all(kafka_bootstrap, cfg["kafka"]["dead_letter_topic"])
    assert dead.value == orjson.dumps(big)  # whole: the router sized its topic for it
    assert headers(dead)["reason"].startswith("oversized")
    assert "value_omitted_bytes" not in headers(dead)


@pytest.mark.parametrize("create_topics", [True, False])
async def test_a_dead_letter_too_large_for_an_existing_topic_is_kept_without_its_value(
        kafka_bootstrap: str, create_topics: bool) -> None:
    topic = await create(kafka_bootstrap, f"large-{uuid.uuid4().hex[:8]}", 5_000_000)
    dlq = await create(kafka_bootstrap, f"{topic}.dlq")  # Kafka's default limit: ~1 MB
    if not create_topics:  # the operator made them all: the router only reads their limits
        await create(kafka_bootstrap, f"{topic}.retry.hook")
    events = list(generate(12, seed=62))
    big = with_blob(events[3], BIG)
    # after it, in the same partition: invalid input, whose dead letters must still land
    await publish(kafka_bootstrap, topic, [*events[:3], big, *events[4:8],
                                           {"type": "track"}, *events[8:]])
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")],
                          dead_letter_topic=dlq, create_topics=create_topics)
        async with running(cfg):
            await eventually(lambda: len(sink.ids) == 11)
            group = cfg["kafka"]["group_id"]

            async def all_committed() -> bool:
                return (await committed(kafka_bootstrap, group, topic)) == {0: 13}
            await eventually(all_committed)
    # the stub is written after its first write was refused: after the invalid one
    invalid, stub = sorted(await read_all(kafka_bootstrap, dlq),
                           key=lambda r: r.value is None)
    assert stub.value is None
    found = headers(stub)
    assert found["value_omitted_bytes"] == str(len(orjson.dumps(big)))
    assert found["reason"].startswith("oversized")
    assert f"larger than {dlq} takes" in found["reason"]
    assert (found["source_topic"], found["source_offset"]) == (topic, "3")
    assert invalid.value == b'{"type":"track"}'
    assert headers(invalid)["reason"].startswith("missing_identity")


async def test_a_park_too_large_for_the_retry_topic_is_dead_lettered(
        kafka_bootstrap: str) -> None:
    topic = await create(kafka_bootstrap, f"large-{uuid.uuid4().hex[:8]}")
    # smaller than the big event, and than the others together: parks in several batches
    await create(kafka_bootstrap, f"{topic}.retry.hook", 20_000)
    events = list(generate(60, seed=63))
    big = with_blob(events[2], 40_000)  # under max_event_bytes below: routed, then parked
    await publish(kafka_bootstrap, topic, [*events[:2], big, *events[3:]])
    async with WebhookSink() as sink:
        sink.down_until = float("inf")  # 503 throughout: every event is parked
        cfg = config_dict(kafka_bootstrap, topic, [webhook(
            "hook", f"{sink.url}/events", delivery={"inline_retries": 0, "backoff_base_s": 0.01})],
            max_event_bytes=100_000)
        async with running(cfg) as router:
            group = cfg["kafka"]["group_id"]

            async def all_committed() -> bool:
                return (await committed(kafka_bootstrap, group, topic)) == {0: 60}
            await eventually(all_committed)
            stats = router.stats.destination("hook")
            assert (stats.parked, stats.dead_lettered) == (59, 1)
    [dead] = await read_all(kafka_bootstrap, cfg["kafka"]["dead_letter_topic"])
    assert dead.value == orjson.dumps(big)
    assert headers(dead)["destination"] == "hook"
    assert headers(dead)["reason"].startswith(f"too large for the retry topic {topic}.retry.hook")
    parked = await read_all(kafka_bootstrap, f"{topic}.retry.hook")
    assert sorted(r.value for r in parked) == sorted(
        orjson.dumps(e) for i, e in enumerate(events) if i != 2)


async def test_replay_leaves_out_a_dead_letter_kept_without_its_value(
        kafka_bootstrap: str) -> None:
    """Its value is not there to re-drive (it would be an empty record): the operator
    fetches the original from its source coordinates instead."""
    from router.config import Config
    from router.replay import replay

    topic = await create(kafka_bootstrap, f"large-{uuid.uuid4().hex[:8]}")
    cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", "http://127.0.0.1:9/")])
    dlq = await create(kafka_bootstrap, cfg["kafka"]["dead_letter_topic"])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (None, b'{"type":"track"}'):
            await producer.send_and_wait(dlq, value, key=b"user-1", headers=[
                ("destination", b"hook"), ("last_failure_at", b"1")])
    finally:
        await producer.stop()
    counts = await replay(Config.model_validate(cfg), dry_run=True)
    assert (counts["replayed"], counts["skipped"]) == (1, 1)


async def test_the_router_creates_its_topics_to_keep_what_it_writes(
        kafka_bootstrap: str) -> None:
    """Its topics take what the source takes (plus headers), and the dead-letter topic
    keeps its records until an operator deletes them: a dead letter expiring after the
    broker's default week would be an event lost."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topic = await create(kafka_bootstrap, f"large-{uuid.uuid4().hex[:8]}", 3_000_000)
    cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", "http://127.0.0.1:9/")])
    async with running(cfg):
        pass
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = [cfg["kafka"]["dead_letter_topic"], f"{topic}.retry.hook"]
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    configs = {resource[3]: {e[0]: e[1] for e in resource[4]}
               for resource in response.resources}
    dlq, retry = (configs[n] for n in names)
    assert int(dlq["max.message.bytes"]) == int(retry["max.message.bytes"]) > 3_000_000
    assert dlq["retention.ms"] == "-1"
    assert retry["retention.ms"] != "-1"  # re-driven records need not stay for ever
