"""A Kafka consumer loop that commits only settled offsets.

Used twice: for the input topics (records → ``Pipeline.intake``) and, per destination,
for its retry topic (records → ``RetryDriver.intake``). Each has its own ``Tracker``.

- fetch with ``getmany`` (batches, never a task per record);
- commit the settled watermark every ``commit_interval_ms``, on revoke and at stop;
- backpressure: above ``max_in_flight`` pause every assigned partition, resume below
  three quarters of it (docs/architecture.md); keep polling meanwhile (heartbeats, no
  max-poll-interval violation); re-apply the pause after a rebalance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from router.offsets import Tracker
from router.telemetry import logger

log = logger("router.source")
Handler = Callable[[AIOKafkaConsumer, TopicPartition, list[Any]], None]


class Source(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, topics: list[str], handler: Handler,
                 tracker: Tracker, *, max_in_flight: int, commit_interval_ms: int,
                 max_records: int, name: str = "input",
                 on_commit: Callable[[dict[TopicPartition, int]], None] | None = None,
                 on_revoke: Callable[[Any], None] | None = None) -> None:
        self.consumer = consumer
        self.topics = topics
        self.handler = handler
        self.tracker = tracker
        self.max_in_flight = max_in_flight
        self.low_water = max_in_flight * 3 // 4  # not half: see docs/architecture.md
        self.commit_interval_s = commit_interval_ms / 1000
        self.max_records = max_records
        self.name = name
        self.on_commit = on_commit
        self.on_revoke = on_revoke
        self.backpressured = False
        self.pause_count = 0
        self.stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self.last_commit = 0.0
        self.fetched: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=self)

    async def run(self) -> None:
        consumer = self.consumer
        while not self.stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=self.max_records)
            except KafkaError as exc:
                log.warning("Fetching from Kafka failed; retrying.", source=self.name,
                            error=repr(exc))
                await asyncio.sleep(1)
                continue
            for tp, records in batch.items():
                if records:
                    self.fetched[tp] = records[-1].offset + 1
                    self.handler(consumer, tp, records)
            self._backpressure()
            if time.monotonic() - self.last_commit >= self.commit_interval_s:
                await self.commit()
            if not batch:
                await asyncio.sleep(0)

    def _backpressure(self) -> None:
        in_flight = self.tracker.in_flight
        if not self.backpressured and in_flight >= self.max_in_flight:
            self.backpressured = True
            self.pause_count += 1
            self.consumer.pause(*self.consumer.assignment())
            log.info("Pausing consumption: too many events in flight.", source=self.name,
                     in_flight=in_flight)
        elif self.backpressured and in_flight <= self.low_water:
            self.backpressured = False
            self.consumer.resume(*self.consumer.assignment())
            log.info("Resuming consumption.", source=self.name, in_flight=in_flight)

    async def commit(self, tps: Any = None) -> None:
        self.last_commit = time.monotonic()
        offsets = self.tracker.committable(tps)
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            log.warning("Commit failed; the records will be re-delivered (at-least-once).",
                        source=self.name, error=repr(exc))
            return
        if self.on_commit:
            self.on_commit(offsets)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            await self.commit(revoked)
            self.tracker.forget(revoked)
            for tp in revoked:
                self.fetched.pop(tp, None)
            if self.on_revoke:
                self.on_revoke(revoked)
            log.info("Partitions revoked.", source=self.name,
                     partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.backpressured and assigned:
            self.consumer.pause(*assigned)
        self.assigned.set()
        log.info("Partitions assigned.", source=self.name,
                 partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    async def drain_and_stop(self, grace_s: float, workers: list[Any]) -> None:
        """Stop fetching, finish in-flight work within the grace period, commit, close."""
        self.stopping.set()
        deadline = time.monotonic() + grace_s
        while not self.tracker.drained() and time.monotonic() < deadline:
            for worker in workers:
                worker.flush_all()
            await asyncio.sleep(0.05)
            await self.commit()
        await self.commit()
        await self.consumer.stop()

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind each assigned partition's high watermark (as of the last fetch)."""
        out = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self.fetched.get(tp, high))
        return out
