"""The ceiling: what one Python process on this machine can take out of Kafka at all.

    python -m bench.ceiling --bootstrap 127.0.0.1:9092 --topic T --events N

An aiokafka consumer, set up as the router's (a consumer group, uvloop, ``getmany`` of
up to 2,000 records, 1 MiB per partition fetch), reads the topic from the beginning and
``orjson.loads`` every value — no routing, no delivery, no commits. It prints one JSON
line: events, the seconds from the first record to the last, and the CPU seconds this
process spent in that interval.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

FETCH_MAX_RECORDS = 2000  # the router's kafka.fetch_max_records default


async def consume(bootstrap: str, topic: str, events: int, timeout_s: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=1_048_576)
    await consumer.start()
    seen = decoded_bytes = 0
    first = last = 0.0
    cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + timeout_s
    loads = orjson.loads
    try:
        while seen < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100, max_records=FETCH_MAX_RECORDS)
            for records in batch.values():
                if not first and records:
                    first, cpu_first = time.time(), time.process_time()
                for record in records:
                    loads(record.value)
                    decoded_bytes += len(record.value)
                seen += len(records)
            if batch:
                last, cpu_last = time.time(), time.process_time()
    finally:
        await consumer.stop()
    seconds = max(1e-9, last - first)
    return {"events": seen, "complete": seen >= events, "first": first, "last": last,
            "seconds": round(seconds, 3), "events_per_s": round(seen / seconds),
            "mb_per_s": round(decoded_bytes / seconds / 1e6, 1),
            "cpu_s": round(cpu_last - cpu_first, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - optional
        pass
    result = asyncio.run(consume(args.bootstrap, args.topic, args.events, args.timeout_s))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
