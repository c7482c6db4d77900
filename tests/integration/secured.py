"""Helpers for the tests against secured brokers (SASL, TLS): the CLI as a process, and
reading a topic or a group's commits with a client's own security options."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from router import topics
from tests.integration.harness import ROOT


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def read_all(options: dict[str, Any], topic: str) -> list[Any]:
    """Every record in ``topic``, read as the client ``options`` describe."""
    tps = [TopicPartition(topic, p) for p in await topics.partitions(options, topic)]
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        while len(out) < sum(ends.values()):
            batch = await consumer.getmany(timeout_ms=500)
            out += [r for records in batch.values() for r in records]
        return out
    finally:
        await consumer.stop()


async def all_committed(options: dict[str, Any], group: str, topic: str) -> bool:
    """The group's committed offsets have reached the end of every partition."""
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        tps = [TopicPartition(topic, p) for p in await topics.partitions(options, topic)]
        ends = await consumer.end_offsets(tps)
        # a partition that never had a record has nothing committed (None): its end is 0
        return all([(await consumer.committed(tp) or 0) == ends[tp] for tp in tps])
    finally:
        await consumer.stop()


def track(message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Secured", "userId": f"u-{message_id}",
            "messageId": message_id}
