"""Putting events into Kafka for the benchmark: a fast preload, and a paced live stream.

Events come from ``router.demo.generate`` (track with e-commerce, identify, page, screen;
~600 bytes; keyed by user) and are partitioned by key with Kafka's own murmur2 rule, as a
collector publishing keyed records would.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.demo import generate, key_of
from router.topics import partition_of

MAX_BATCH_BYTES = 512 * 1024


@dataclass
class Events:
    values: list[bytes]
    keys: list[bytes]
    analytics_consented: int  # events whose consent lets an `Analytics` destination have them

    @property
    def mean_bytes(self) -> float:
        return sum(map(len, self.values)) / max(1, len(self.values))


def consents(event: dict[str, Any], category: str = "Analytics") -> bool:
    prefs = ((event.get("context") or {}).get("consent") or {}).get("categoryPreferences")
    return prefs is None or prefs.get(category) is True


def make_events(n: int, seed: int = 7) -> Events:
    values, keys, consented = [], [], 0
    for event in generate(n, seed=seed):
        values.append(orjson.dumps(event))
        keys.append(key_of(event) or b"")  # the demo's events all carry an id
        consented += consents(event)
    return Events(values, keys, consented)


async def create_topic(bootstrap: str, name: str, partitions: int,
                       configs: dict[str, str] | None = None) -> str:
    """Create the topic and wait until every partition's leader answers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()
    errors = [e for e in resp.topic_errors if e[1] != 0]
    if errors:
        raise RuntimeError(f"create_topics({name!r}) failed: {errors}")
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
        await probe.end_offsets([TopicPartition(name, p) for p in range(partitions)])
    finally:
        await probe.stop()
    return name


async def preload(bootstrap: str, topic: str, events: Events, partitions: int) -> float:
    """Publish every event in ~512 KB record batches; return the seconds it took."""
    started = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=MAX_BATCH_BYTES,
                                max_request_size=4 * MAX_BATCH_BYTES)
    await producer.start()
    try:
        batches: list[Any] = [producer.create_batch() for _ in range(partitions)]
        futures = []
        now_ms = int(time.time() * 1000)
        for key, value in zip(events.keys, events.values, strict=True):
            p = partition_of(key, partitions)
            if batches[p].append(key=key, value=value, timestamp=now_ms) is None:
                futures.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=now_ms)
        for p, batch in enumerate(batches):
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def stamp(event: dict[str, Any], now: float) -> bytes:
    """The event, timed as sent now (what a client would observe as its send time)."""
    iso = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    event["timestamp"] = event["sentAt"] = iso.replace("+00:00", "Z")
    return orjson.dumps(event)


async def produce_paced(bootstrap: str, topic: str, partitions: int, rate: int, seconds: float,
                        seed: int = 11) -> dict[str, Any]:
    """Publish ``rate`` events/s for ``seconds``: every 10 ms, one record batch per
    partition. Returns counts and ``append_ms``, each messageId's Kafka append time
    (the topic uses LogAppendTime, so the broker stamps it)."""
    tick_s = 0.01
    per_tick = max(1, round(rate * tick_s))
    ticks = max(1, round(seconds / tick_s))
    events = list(generate(per_tick * ticks, seed=seed))
    consented = sum(consents(e) for e in events)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=MAX_BATCH_BYTES,
                                max_request_size=4 * MAX_BATCH_BYTES)
    await producer.start()
    sent: list[tuple[Any, list[str], float]] = []  # (future, messageIds, send time)
    late = 0
    # The pre-built events (and the bench's earlier phases) are ~1M long-lived objects: a
    # full collection of them mid-stream stalled this producer for up to ~0.4 s, which then
    # sent the missed ticks as one burst and the router's p99 measured the burst, not a
    # fixed rate. Frozen, the collector leaves them alone while the stream runs.
    gc.collect()
    gc.freeze()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        wall_start = time.time()
        for tick in range(ticks):
            delay = start + tick * tick_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -tick_s:
                late += 1
            now = time.time()
            batches: dict[int, tuple[Any, list[str]]] = {}
            for event in events[tick * per_tick:(tick + 1) * per_tick]:
                key = key_of(event) or b""
                p = partition_of(key, partitions)
                if p not in batches:
                    batches[p] = (producer.create_batch(), [])
                batch, ids = batches[p]
                value = stamp(event, now)
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    sent.append((await producer.send_batch(batch, topic, partition=p), ids, now))
                    batch, ids = batches[p] = (producer.create_batch(), [])
                    batch.append(key=key, value=value, timestamp=None)
                ids.append(event["messageId"])
            for p, (batch, ids) in batches.items():
                sent.append((await producer.send_batch(batch, topic, partition=p), ids, now))
        metadata = await asyncio.gather(*(future for future, _, _ in sent))
        elapsed = time.time() - wall_start
    finally:
        gc.unfreeze()
        await producer.stop()
    append_ms: dict[str, float] = {}
    produce_ms: list[float] = []
    for meta, (_, ids, at) in zip(metadata, sent, strict=True):
        append_ms.update(dict.fromkeys(ids, float(meta.timestamp)))
        produce_ms.append(meta.timestamp - at * 1000)
    return {"produced": len(events), "analytics_consented": consented,
            "seconds": round(elapsed, 2), "achieved_rate": round(len(events) / elapsed),
            "late_ticks": late, "append_ms": append_ms, "producer_ms": produce_ms}
