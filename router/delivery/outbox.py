"""Durable hand-offs to Kafka: parking in a destination's retry topic, and dead letters.

An event handed here is settled only after the broker acknowledged the write (the
producer uses acks=all). A failed write is retried with backoff until it succeeds or
the router stops; an unsettled event is simply not committed, so nothing is lost.

Headers (all UTF-8 strings):
- retry topic: destination, attempts, first_failure_at, last_error, not_before
  (epoch seconds), source_topic, source_partition, source_offset
- dead-letter topic: reason, destination (absent for invalid input), attempts,
  first_failure_at, last_failure_at, source_topic, source_partition, source_offset
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from router.offsets import Envelope
from router.redact import redact
from router.telemetry import Stats, logger

log = logger("router.outbox")
Headers = list[tuple[str, bytes]]


def source_headers(env: Envelope) -> Headers:
    """Where the event first came from; a re-driven record keeps its original origin."""
    return [("source_topic", env.topic.encode()), ("source_partition", b"%d" % env.partition),
            ("source_offset", b"%d" % env.offset)]


class Outbox:
    def __init__(self, producer: AIOKafkaProducer, dead_letter_topic: str,
                 retry_topic_prefix: str, stats: Stats) -> None:
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.retry_topic_prefix = retry_topic_prefix
        self.stats = stats

    def retry_topic(self, destination: str) -> str:
        return f"{self.retry_topic_prefix}.{destination}"

    async def dead_letter(self, items: Iterable[tuple[Envelope, str]],
                          destination: str | None = None) -> None:
        now = time.time()
        writes = []
        for env, reason in items:
            headers: Headers = [("reason", redact(reason).encode())]
            if destination:
                headers.append(("destination", destination.encode()))
            headers += [("attempts", b"%d" % env.attempts),
                        ("first_failure_at", repr(env.first_failure_at or now).encode()),
                        ("last_failure_at", repr(now).encode()), *self.origin(env)]
            writes.append((env, self.dead_letter_topic, headers))
        await self._write(writes)
        self.stats.dead_lettered += len(writes)

    async def park(self, envs: Iterable[Envelope], destination: str, error: str,
                   not_before: float) -> list[int]:
        """Park in the retry topic; returns each record's offset there."""
        topic = self.retry_topic(destination)
        writes = []
        for env in envs:
            headers: Headers = [
                ("destination", destination.encode()), ("attempts", b"%d" % env.attempts),
                ("first_failure_at", repr(env.first_failure_at).encode()),
                ("last_error", redact(error).encode()),
                ("not_before", repr(not_before).encode()), *self.origin(env)]
            writes.append((env, topic, headers))
        return await self._write(writes)

    def origin(self, env: Envelope) -> Headers:
        """A record from a retry topic keeps the headers of its first source."""
        return env.origin or source_headers(env)

    async def _write(self, writes: list[tuple[Envelope, str, Headers]]) -> list[int]:
        """Write every record, retrying failures, then settle each one once acked.
        Returns the offsets written, in order."""
        offsets = {id(w): -1 for w in writes}
        pending = writes
        delay = 0.2
        while pending:
            futures = []
            for env, topic, headers in pending:
                try:
                    futures.append(await self.producer.send(
                        topic, env.raw, key=env.key, headers=headers))
                except KafkaError as exc:
                    futures.append(_failed(exc))
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = []
            for write, result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(write)
                else:
                    offsets[id(write)] = result.offset
                    write[0].settle()
            if failed:
                log.warning("Writing to Kafka failed; retrying so no event is lost.",
                            topic=failed[0][1], records=len(failed),
                            error=repr(results[pending.index(failed[0])]))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            pending = failed
        return [offsets[id(w)] for w in writes]


def _failed(exc: BaseException) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
