"""The real Kafka and PostgreSQL that the integration tests stand on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from scripts.kafka import Broker

MakeTopic = Callable[..., Awaitable[str]]


@pytest.mark.kafka
async def test_kafka_produce_consume_commit(kafka_bootstrap: str, make_topic: MakeTopic) -> None:
    topic = await make_topic(partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(100):
            await producer.send(topic, f"value-{i}".encode(), key=f"key-{i % 10}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[ConsumerRecord[bytes, bytes]] = []
        while len(got) < 100:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no records after {len(got)} of 100"
            for records in batches.values():
                got.extend(records)
        await consumer.commit()

        assert sorted(r.value for r in got if r.value) == sorted(
            f"value-{i}".encode() for i in range(100)
        )
        by_key: dict[bytes | None, set[int]] = {}
        for r in got:
            by_key.setdefault(r.key, set()).add(r.partition)
        assert all(len(parts) == 1 for parts in by_key.values()), "a key spans partitions"

        tps = [TopicPartition(topic, p) for p in range(3)]
        ends = await consumer.end_offsets(tps)
        assert sum(ends.values()) == 100
        assert {tp: await consumer.committed(tp) for tp in tps} == ends
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_kafka_restart_keeps_port_and_data(kafka: Broker, make_topic: MakeTopic) -> None:
    topic = await make_topic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before")
        before = kafka.bootstrap
        # In a thread, so the event loop (and any client on it) keeps running meanwhile.
        assert await asyncio.to_thread(kafka.restart) == before
        await producer.send_and_wait(topic, b"after")  # reconnects to the same address
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        values = [(await consumer.getone()).value for _ in range(2)]
    finally:
        await consumer.stop()
    assert values == [b"before", b"after"]


@pytest.mark.postgres
async def test_postgres_round_trip(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "router_test"
        await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, body jsonb)")
        await conn.execute("INSERT INTO t VALUES ($1, $2)", 1, '{"event": "page"}')
        assert await conn.fetchval("SELECT body->>'event' FROM t WHERE id = 1") == "page"
    finally:
        await conn.close()


def test_free_port_is_bindable(free_port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
