"""Session-wide real infrastructure: one Kafka broker and (on demand) one PostgreSQL."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.kafka import Broker  # noqa: E402
from scripts.postgres import Postgres  # noqa: E402


class MakeTopic(Protocol):
    def __call__(self, partitions: int = 1, name: str | None = None) -> Awaitable[str]: ...


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's Kafka node; ``kafka.restart()`` keeps its port and data."""
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: Broker) -> str:
    return kafka.bootstrap


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def make_topic(kafka: Broker) -> AsyncIterator[MakeTopic]:
    """``await make_topic(partitions=1, name=None)`` -> a new topic whose leaders are ready."""
    probe = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await probe.start()

    async def make(partitions: int = 1, name: str | None = None) -> str:
        topic = name or f"test-{uuid.uuid4().hex[:12]}"
        # A fresh admin client each time: one kept across kafka.restart() fails its
        # first request on the dead connection (aiokafka's admin does not retry).
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        errors = [e for e in resp.topic_errors if e[1] != 0]
        assert not errors, f"create_topics({topic!r}) failed: {errors}"
        # Metadata shows the leader a moment before the partition accepts requests;
        # ListOffsets (retried on NOT_LEADER) succeeds only once every one is ready.
        await probe.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return topic

    yield make
    await probe.stop()


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the session's PostgreSQL (database ``router_test``), started on first use."""
    pg = Postgres(tmp_path_factory.mktemp("postgres"))
    dsn = pg.start()
    yield dsn
    pg.stop(remove=True)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
