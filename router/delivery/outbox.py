"""Durable hand-offs to Kafka: parking in a destination's retry topic, and dead letters.

An event handed here is settled only after the broker acknowledged the write (the
producer uses acks=all). A failed write is retried with backoff until it succeeds or
the router stops; an unsettled event is simply not committed, so nothing is lost.

Headers (all UTF-8 strings):
- retry topic: destination, attempts, first_failure_at, last_error, not_before
  (epoch seconds), source_topic, source_partition, source_offset, source_timestamp
  (the first append, epoch ms)
- dead-letter topic: reason, destination (absent for invalid input), attempts,
  first_failure_at, last_failure_at, source_topic, source_partition, source_offset,
  source_timestamp; and value_omitted_bytes on a record written without its value

Records larger than a topic takes (a source topic allowing larger records than the
router's topics do): its write would fail forever (MESSAGE_TOO_LARGE) and its partition
would never commit again. Topics the router creates are sized to take what their
sources take (``topics.ensure``); for the others, the outbox knows each topic's
``max.message.bytes`` (read at start, Kafka's default when it cannot be) and never sends
a record or batch over it. A park that is too large is dead-lettered instead; a dead
letter that is too large is written without its value, its reason saying so, and its
headers still saying where the original is (source topic, partition and offset).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from router.offsets import Envelope
from router.redact import redact
from router.telemetry import Stats, logger
from router.topics import DEFAULT_RECORD_BYTES, partition_of

log = logger("router.outbox")
Headers = list[tuple[str, bytes]]
Write = tuple[Envelope, str, Headers, bytes | None]  # (event, topic, headers, value)
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # the broker enforces each topic's own limit
BATCH_OVERHEAD = 61  # a record batch's header (magic v2)
RECORD_OVERHEAD = 32  # a record's length, attributes, deltas and counts, at their widest


def outbox_producer(options: dict[str, Any], max_event_bytes: int) -> AIOKafkaProducer:
    """Acknowledged by every in-sync replica, idempotent (a retried write is not doubled),
    and with record batches of up to 256 KB: at the default 16 KB, a park of 10,000
    events waited for ~80 round trips to the broker (0.4-0.6 s here, 0.12 s now)."""
    return AIOKafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=5,
                            max_batch_size=256 * 1024,
                            max_request_size=max(MAX_REQUEST_BYTES, max_event_bytes * 4))


def source_headers(env: Envelope) -> Headers:
    """Where the event first came from, and when it was appended there (epoch ms); a
    re-driven record keeps its original origin. The time goes in a header, not as the
    record's own timestamp: a retry topic's retention would count from it, and a backlog
    parked days after it was published could be deleted before its retry."""
    headers = [("source_topic", env.topic.encode()),
               ("source_partition", b"%d" % env.partition),
               ("source_offset", b"%d" % env.offset)]
    if env.append_ms is not None and env.append_ms >= 0:
        headers.append(("source_timestamp", b"%d" % env.append_ms))
    return headers


class Outbox:
    def __init__(self, producer: AIOKafkaProducer, dead_letter_topic: str,
                 retry_topic_prefix: str, stats: Stats,
                 limits: dict[str, int] | None = None) -> None:
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.retry_topic_prefix = retry_topic_prefix
        self.stats = stats
        # topic -> max.message.bytes, where known (router/topics.py): a record batch is
        # kept under it, and a record that cannot be is never sent. A refused batch would
        # do harm beyond itself: the idempotent producer has already counted its records
        # in the partition's sequence, so every later write there fails out of order.
        self.limits = limits if limits is not None else {}

    def retry_topic(self, destination: str) -> str:
        return f"{self.retry_topic_prefix}.{destination}"

    async def dead_letter(self, items: Iterable[tuple[Envelope, str]],
                          destination: str | None = None) -> None:
        now = time.time()
        writes: list[Write] = []
        reasons: dict[str, bytes] = {}  # a batch's events mostly share their reason
        last_failure_at = repr(now).encode()
        for env, reason in items:
            if (redacted := reasons.get(reason)) is None:
                redacted = reasons[reason] = redact(reason).encode()
            headers: Headers = [("reason", redacted)]
            if destination:
                headers.append(("destination", destination.encode()))
            headers += [("attempts", b"%d" % env.attempts),
                        ("first_failure_at", repr(env.first_failure_at or now).encode()),
                        ("last_failure_at", last_failure_at), *self.origin(env)]
            writes.append((env, self.dead_letter_topic, headers, env.raw))
        _, too_large = await self._write(writes)
        if too_large:  # written again without the value, which the topic cannot take
            await self._write([_without_value(writes[i]) for i in too_large])
        self.stats.dead_lettered += len(writes)

    async def park(self, envs: Iterable[Envelope], destination: str, error: str,
                   not_before: float) -> list[int]:
        """Park in the retry topic; returns each record's offset there, or -1 for one too
        large for it, which is dead-lettered instead (settled either way)."""
        topic = self.retry_topic(destination)
        writes: list[Write] = []
        name, last_error = destination.encode(), redact(error).encode()
        due = repr(not_before).encode()
        for env in envs:
            headers: Headers = [
                ("destination", name), ("attempts", b"%d" % env.attempts),
                ("first_failure_at", repr(env.first_failure_at).encode()),
                ("last_error", last_error), ("not_before", due), *self.origin(env)]
            writes.append((env, topic, headers, env.raw))
        offsets, too_large = await self._write(writes)
        if too_large:
            log.error("An event is larger than its retry topic takes: dead-lettered.",
                      topic=topic, records=len(too_large))
            await self.dead_letter(
                [(writes[i][0], f"too large for the retry topic {topic} "
                                f"({len(writes[i][0].raw or b'')} bytes): {error}")
                 for i in too_large], destination)
        return offsets

    def origin(self, env: Envelope) -> Headers:
        """A record from a retry topic keeps the headers of its first source."""
        return env.origin or source_headers(env)

    async def _write(self, writes: list[Write]) -> tuple[list[int], list[int]]:
        """Write every record, retrying failures, then settle each one once acked.
        Returns the offsets written, in order (-1: not written), and which records the
        topic refused as too large: those are neither retried nor settled here.

        Records are appended to one record batch per partition, not sent one by one:
        ``producer.send`` costs ~25 µs of Python per record, and a park is often
        thousands of them at once (a dead or stalled destination)."""
        offsets = [-1] * len(writes)
        sizes = [_size(write) for write in writes]
        pending = list(range(len(writes)))
        too_large: list[int] = []
        delay = 0.2
        while pending:
            sent: list[tuple[list[int], asyncio.Future[Any]]] = []
            try:  # the topics' metadata (partition counts) first
                groups = await self._by_partition(writes, pending)
            except KafkaError as exc:
                groups = {}
                sent.append((pending, _failed(exc)))
            for (topic, partition), indices in groups.items():
                # unknown (no DescribeConfigs rights): Kafka's default, which a topic
                # allowing larger records was most likely not created with
                room = self.limits.get(topic, DEFAULT_RECORD_BYTES) - BATCH_OVERHEAD
                fits = [i for i in indices if sizes[i] <= room]
                too_large += [i for i in indices if sizes[i] > room]
                indices = fits
                while indices:
                    batch = self.producer.create_batch()
                    taken = used = 0
                    for i in indices:
                        env, _, headers, value = writes[i]
                        used += sizes[i]
                        if (taken and used > room) or batch.append(
                                timestamp=None, key=env.key, value=value,
                                headers=headers) is None:
                            break
                        taken += 1
                    assert taken, "a record batch takes at least one record"
                    try:
                        future = await self.producer.send_batch(batch, topic,
                                                                partition=partition)
                    except KafkaError as exc:
                        future = _failed(exc)
                    sent.append((indices[:taken], future))
                    indices = indices[taken:]
                    await asyncio.sleep(0)  # a large park must not hold up the event loop
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            failed: list[int] = []
            error: BaseException | None = None
            for (indices, _), result in zip(sent, results, strict=True):
                if isinstance(result, TOO_LARGE) and len(indices) == 1:
                    # under a limit read wrong (or lowered since): not retried for ever.
                    # The idempotent producer's sequence for that partition is broken by
                    # now; later writes there fail and are retried, logged, until restart.
                    too_large += indices
                    continue
                if isinstance(result, BaseException):
                    failed += indices
                    error = result
                    continue
                for n, i in enumerate(indices):  # a batch's records are consecutive
                    offsets[i] = result.offset + n
                    writes[i][0].settle()
            if error is not None:
                log.warning("Writing to Kafka failed; retrying so no event is lost.",
                            topic=writes[failed[0]][1], records=len(failed),
                            error=repr(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            pending = sorted(failed)
        return offsets, sorted(too_large)

    async def _by_partition(self, writes: list[Write],
                            indices: list[int]) -> dict[tuple[str, int], list[int]]:
        """Each record's partition, as the producer's default partitioner would choose it
        (murmur2 of the key; keyless records spread at random), grouped in order."""
        groups: dict[tuple[str, int], list[int]] = {}
        counts: dict[str, int] = {}
        known: dict[tuple[bytes, int], int] = {}  # keys repeat (one per user)
        for i in indices:
            env, topic, _, _ = writes[i]
            count = counts.get(topic)
            if count is None:
                count = counts[topic] = len(await self.producer.partitions_for(topic))
            key = env.key
            if key is None:
                partition = random.randrange(count)
            elif (partition := known.get((key, count), -1)) < 0:
                partition = known[(key, count)] = partition_of(key, count)
            groups.setdefault((topic, partition), []).append(i)
        return groups


def _size(write: Write) -> int:
    """A record's size in a record batch, from above (varints counted at their widest)."""
    env, _, headers, value = write
    return (RECORD_OVERHEAD + len(value or b"") + len(env.key or b"") + 10 * len(headers)
            + sum([len(k) + len(v) for k, v in headers]))


def _without_value(write: Write) -> Write:
    """A dead letter whose value its topic refused as too large: the same headers, the
    reason saying so, and no value (its source headers say where the original is)."""
    env, topic, headers, value = write
    size = len(value or b"")
    note = (f"; the record ({size} bytes) is larger than {topic} takes, so its value is "
            "left out: read it at source_topic / source_partition / source_offset").encode()
    return (env, topic, [(k, v + note if k == "reason" else v) for k, v in headers]
            + [("value_omitted_bytes", b"%d" % size)], None)


def _failed(exc: BaseException) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
