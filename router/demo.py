"""Demo traffic: realistic Segment-spec events, and publishing them to Kafka.

``generate(n, seed)`` makes a deterministic mix of track (with e-commerce), identify,
page and screen events of about 600 bytes, keyed by user; used by ``make dev``,
``event-router produce --demo N`` and the benchmark.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from router.config import Config

PRODUCTS = [("sku-1", "Mug", 12.5, "Kitchen"), ("sku-2", "Teapot", 30.0, "Kitchen"),
            ("sku-3", "Notebook", 4.2, "Office"), ("sku-4", "Lamp", 45.0, "Home")]
EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed",
          "Signed Up", "Video Played", "Button Clicked"]


def generate(n: int, seed: int = 7, users: int = 500) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    start = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(n):
        user = rnd.randrange(users)
        anonymous = rnd.random() < 0.2
        ts = start + timedelta(milliseconds=i)
        event: dict[str, Any] = {
            "messageId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sentAt": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "anonymousId": f"anon-{user:06d}",
            "context": {
                "ip": f"198.51.100.{user % 250}", "locale": "en-GB",
                "library": {"name": "analytics.js", "version": "5.2.0"},
                "page": {"path": "/shop", "url": "https://shop.example.com/shop"},
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
                "consent": {"categoryPreferences": {"Analytics": rnd.random() < 0.9,
                                                    "Advertising": rnd.random() < 0.5}},
            },
        }
        if not anonymous:
            event["userId"] = f"user-{user:06d}"
        roll = rnd.random()
        if roll < 0.7:
            name = rnd.choice(EVENTS)
            sku, title, price, category = rnd.choice(PRODUCTS)
            props: dict[str, Any] = {"product_id": sku, "name": title, "price": price,
                                     "category": category, "currency": "EUR"}
            if name == "Order Completed":
                qty = rnd.randint(1, 3)
                props = {"order_id": f"ord-{i}", "total": price * qty, "revenue": price * qty,
                         "currency": "EUR", "products": [
                             {"product_id": sku, "name": title, "price": price,
                              "quantity": qty, "category": category}]}
            event.update(type="track", event=name, properties=props)
        elif roll < 0.85:
            event.update(type="page", name="Shop", properties={
                "path": "/shop", "url": "https://shop.example.com/shop", "title": "Shop"})
        elif roll < 0.95 and not anonymous:
            event.update(type="identify", traits={
                "email": f"user{user}@example.com", "firstName": "Test", "lastName": f"U{user}",
                "plan": rnd.choice(["free", "pro", "team"])})
        else:
            event.update(type="screen", name="Home", properties={"variant": "b"})
        yield event


def key_of(event: dict[str, Any]) -> bytes | None:
    """The record key collectors use: the user's id (so one user's events stay in order
    on one partition); none for an event without ids, which the producer then spreads
    over the partitions rather than hashing every such event to one."""
    ident = event.get("userId") or event.get("anonymousId")
    return None if ident is None or ident == "" else str(ident).encode()


async def produce(config: Config, topic: str, lines: list[bytes], demo: int = 0,
                  seed: int | None = None) -> int:
    """Publish NDJSON lines as they are, then ``demo`` generated events (a fresh random
    seed unless given, so repeated demo runs are not dropped as duplicates)."""
    from router.app import kafka_options

    producer = AIOKafkaProducer(**kafka_options(config), acks="all", linger_ms=10)
    sent = 0
    try:  # stopped even when it fails to start (it holds its connections)
        await producer.start()
        futures = []
        for line in lines:
            if line.strip():
                try:
                    parsed = orjson.loads(line)
                except orjson.JSONDecodeError:
                    parsed = None
                # anything but an object is published as-is, keyless: the router
                # dead-letters it with a reason
                key = key_of(parsed) if isinstance(parsed, dict) else None
                futures.append(await producer.send(topic, line.strip(), key=key))
        for event in generate(demo, seed=random.randrange(2**32) if seed is None else seed):
            futures.append(await producer.send(topic, orjson.dumps(event), key=key_of(event)))
        for future in futures:
            await future
            sent += 1
    finally:
        await producer.stop()
    return sent
