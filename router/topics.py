"""Topic administration: creating the router's own topics, listing partitions, and the
partition a key goes to."""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default rule for a keyed record (murmur2, as the Java client and aiokafka)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def reach(options: dict[str, Any]) -> None:
    """Bootstrap once and let go: raises ``KafkaConnectionError`` while no broker answers."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await admin.start()
    finally:
        with contextlib.suppress(Exception):  # closing a client that never started
            await admin.close()


async def ensure(options: dict[str, Any], names: list[str], partitions: int,
                 replication: int) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Raises
    ``KafkaConnectionError`` while no broker answers (as ``reach``)."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won
                await admin.create_topics([NewTopic(n, partitions, replication)
                                           for n in missing])
        return missing
    finally:
        with contextlib.suppress(Exception):  # closing a client that never started
            await admin.close()


async def partitions(options: dict[str, Any], topic: str) -> list[int]:
    """The topic's partition ids; [] when it does not exist."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["error_code"] == 0
                  for p in t["partitions"])
