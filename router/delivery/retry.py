"""The retry driver: re-drives one destination's parked events from its retry topic.

It consumes ``<retry_topic_prefix>.<destination>`` in its own consumer group. A record
that is not yet due (header ``not_before``) is not waited for in place: the driver seeks
back to it, pauses that partition and resumes it when due, so polling (and the group
heartbeat) never stops. The same happens while the destination's circuit is open, an
operator paused it or it is backlogged: re-driving then would only park them again.

A due record is decoded, routed through the destination's stages again and submitted
to the same worker with its attempt history; the worker delivers it, re-parks it with a
longer backoff, or dead-letters it after ``max_retry_age_s``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from router.events import Invalid, decode
from router.offsets import Envelope, Tracker
from router.telemetry import DestinationStats, logger

log = logger("router.retry")

ORIGIN_HEADERS = ("source_topic", "source_partition", "source_offset", "source_timestamp")


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def number(headers: dict[str, str], name: str, default: float) -> float:
    """A numeric header, or ``default`` when it is missing or unreadable: a record put in
    a retry topic by hand must not stop the retry driver (and with it the router)."""
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return default


def first_append(headers: dict[str, str], appended: int) -> int:
    """When the event was first appended (epoch ms, ``source_timestamp``), from which its
    end-to-end latency counts and a missing ``timestamp`` is inferred as it was the first
    time; the retry record's own time if the header is missing (parked by an older
    version) or unreadable."""
    return int(number(headers, "source_timestamp", appended))


class RetryDriver:
    def __init__(self, destination: Any, tracker: Tracker, stats: DestinationStats,
                 max_event_bytes: int) -> None:
        self.destination = destination  # pipeline.Destination (route + worker)
        self.tracker = tracker
        self.stats = stats
        self.max_event_bytes = max_event_bytes
        self.resume_at: dict[TopicPartition, asyncio.TimerHandle] = {}

    def intake(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Any]) -> None:
        worker = self.destination.worker
        hold_s = max(worker.circuit.wait_s(),
                     1.0 if worker.paused or worker.backlogged() else 0.0)
        if hold_s > 0:  # it would only be parked again: leave it in the topic for now
            self._wait(consumer, tp, records[0].offset, hold_s)
            return
        now = time.time()
        due = []
        for record in records:
            headers = headers_of(record)
            not_before = number(headers, "not_before", 0.0)  # unreadable: due now
            if not_before > now:
                self._wait(consumer, tp, record.offset, not_before - now)
                break
            due.append((record, headers))
        if not due:
            return
        chunk = self.tracker.add(tp, due[0][0].offset, due[-1][0].offset, len(due))
        dest = self.destination
        for record, headers in due:
            appended = first_append(headers, record.timestamp)
            env = Envelope(record.value, tp.topic, tp.partition, record.offset,
                           appended, record.key, chunk, self.tracker)
            env.attempts = int(number(headers, "attempts", 0))
            env.first_failure_at = number(headers, "first_failure_at", 0.0) or now
            env.origin = [(k, headers[k].encode()) for k in ORIGIN_HEADERS if k in headers]
            env.pending = 1
            try:
                event = decode(record.value, appended, self.max_event_bytes)
                if isinstance(event, Invalid):
                    self._dead_letter(env, f"{event.reason}: {event.detail}")
                    continue
                routed = dest.route(event)
                if type(routed) is str:
                    self.stats.filtered[routed] += 1
                    env.settle()
                    continue
                worker.submit(env, routed)
            except Exception as exc:  # a bug must not stop the retry topic's partition
                log.exception("A parked event made the router fail; it is dead-lettered "
                              "(internal_error). Please report this.",
                              destination=dest.cfg.name)
                self._dead_letter(env, f"internal_error: {exc!r}")

    def _dead_letter(self, env: Envelope, reason: str) -> None:
        self._spawn(self.destination.worker.outbox.dead_letter(
            [(env, reason)], self.destination.cfg.name))
        self.stats.dead_lettered += 1  # counted as every dead letter is

    def _wait(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int,
              delay_s: float) -> None:
        consumer.seek(tp, offset)
        consumer.pause(tp)
        if tp in self.resume_at:
            self.resume_at[tp].cancel()

        def resume() -> None:
            self.resume_at.pop(tp, None)
            if tp in consumer.assignment():
                consumer.resume(tp)

        self.resume_at[tp] = asyncio.get_running_loop().call_later(delay_s, resume)

    def _spawn(self, coro: Any) -> None:
        self.destination.worker._spawn(coro)
