"""The outbox against a real broker: parking writes record batches per partition, so the
partition and offset of every record are its own business, not aiokafka's: check both."""

from __future__ import annotations

import time
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from router.delivery.outbox import Outbox, outbox_producer
from router.offsets import Envelope
from router.telemetry import Stats
from tests.integration.harness import read_all


class Counted(Envelope):
    __slots__ = ()
    settled = 0

    def settle(self) -> None:
        Counted.settled += 1


def envelopes(count: int) -> list[Envelope]:
    envs: list[Envelope] = []
    for i in range(count):
        key = None if i % 10 == 0 else f"user-{i % 37}".encode()
        raw = b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 3000))  # some fill a batch fast
        env = Counted(raw, "input", i % 3, 1000 + i, 0, key, None, None)  # type: ignore[arg-type]
        env.attempts, env.first_failure_at = 3, 1_700_000_000.5
        envs.append(env)
    return envs


async def test_a_large_park_keeps_each_records_partition_offset_and_headers(
        kafka_bootstrap: str, make_topic: Any) -> None:
    await make_topic(partitions=4, name="events.retry.outbox-test")
    producer = outbox_producer({"bootstrap_servers": kafka_bootstrap}, 32 * 1024)
    await producer.start()
    try:
        outbox = Outbox(producer, "unused.dlq", "events.retry", Stats())
        first, second = envelopes(1500), envelopes(1500)[:40]  # two parks, one partitioning
        Counted.settled = 0
        due = time.time() + 30
        offsets = await outbox.park(first, "outbox-test", "HTTP 503", due)
        offsets += await outbox.park(second, "outbox-test", "HTTP 503", due)
    finally:
        await producer.stop()
    assert Counted.settled == len(first) + len(second)  # each settled once, after its ack
    records = await read_all(kafka_bootstrap, "events.retry.outbox-test")
    assert len(records) == len(offsets)
    by_place = {(r.partition, r.offset): r for r in records}
    partitions = list(range(4))
    for env, offset in zip(first + second, offsets, strict=True):
        keyed = [(p, offset) for p in partitions if (p, offset) in by_place
                 and by_place[(p, offset)].value == env.raw]
        assert len(keyed) == 1, "the returned offset is not where the record is"
        partition = keyed[0][0]
        if env.key is not None:  # what producer.send would have chosen: one user, one partition
            assert partition == DefaultPartitioner()(env.key, partitions, partitions)
        record = by_place[keyed[0]]
        assert record.key == env.key
        headers = {k: v.decode() for k, v in record.headers}
        assert headers == {"destination": "outbox-test", "attempts": "3",
                           "first_failure_at": "1700000000.5", "last_error": "HTTP 503",
                           "not_before": repr(due), "source_topic": "input",
                           "source_partition": str(env.partition),
                           "source_offset": str(env.offset), "source_timestamp": "0"}
    # order within a partition is the park's order
    for p in partitions:
        placed = [o for env, o in zip(first, offsets[:len(first)], strict=True)
                  if env.key is not None and DefaultPartitioner()(env.key, partitions,
                                                                  partitions) == p]
        assert placed == sorted(placed)
