"""Re-driving dead-lettered events: read the dead-letter topic from the start (no
consumer group, so nothing there changes), pick the records that match, and write each
to the retry topic of its destination with a fresh attempt history. A running router's
retry driver then delivers them.

Each event goes back to the destination it was dead-lettered from; ``destination``
restricts the replay to that one. Invalid input (no destination) is never replayed:
it would fail decoding again; nor is a record written without its value (too large for
the dead-letter topic: its headers say where the original is).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router import topics
from router.config import Config
from router.delivery.retry import ORIGIN_HEADERS, headers_of, number


async def replay(config: Config, *, destination: str | None = None, since: str | None = None,
                 limit: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    from router.app import kafka_options

    k = config.kafka
    known = {d.name for d in config.destinations}
    if destination is not None and destination not in known:
        raise ValueError(f"no destination named {destination!r} in the config")
    try:
        since_s = datetime.fromisoformat(since).timestamp() if since else 0.0
    except ValueError as exc:
        raise ValueError(f"since {since!r} is not an ISO-8601 time") from exc
    consumer = AIOKafkaConsumer(**kafka_options(config), group_id=None,
                                enable_auto_commit=False)
    # a dry run writes nothing: no producer (an unstarted one warns as it is collected)
    producer = None if dry_run else AIOKafkaProducer(**kafka_options(config), acks="all")
    counts: dict[str, Any] = {"scanned": 0, "replayed": 0, "skipped": 0, "by_destination": {}}
    try:  # both clients stopped even when one fails to start (they hold connections)
        await consumer.start()
        await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
        tps = [TopicPartition(k.dead_letter_topic, p)
               for p in await topics.partitions(kafka_options(config), k.dead_letter_topic)]
        if not tps:
            return counts
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if producer is not None:
            await producer.start()
        futures = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining and (limit is None or counts["replayed"] < limit):
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp] - 1:
                        remaining.discard(tp)
                    if record.offset >= ends[tp]:
                        continue
                    counts["scanned"] += 1
                    headers = headers_of(record)
                    failed_at = number(headers, "last_failure_at", 0.0)
                    target = headers.get("destination")  # invalid input has none
                    if (target not in known or failed_at < since_s
                            or record.value is None  # left out: too large (outbox.py)
                            or (limit is not None and counts["replayed"] >= limit)
                            or (destination is not None and target != destination)):
                        counts["skipped"] += 1
                        continue
                    counts["replayed"] += 1
                    by = counts["by_destination"]
                    by[target] = by.get(target, 0) + 1
                    if producer is not None:
                        origin = [(h, headers[h].encode()) for h in ORIGIN_HEADERS
                                  if h in headers]
                        futures.append(await producer.send(
                            f"{k.retry_topic_prefix}.{target}", record.value, key=record.key,
                            headers=[("destination", target.encode()), ("attempts", b"0"),
                                     ("first_failure_at", repr(time.time()).encode()),
                                     ("last_error", b"replayed"), ("not_before", b"0"),
                                     *origin]))
            if not batch and not remaining:
                break
        for future in futures:
            await future
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    counts["dry_run"] = dry_run
    return counts
