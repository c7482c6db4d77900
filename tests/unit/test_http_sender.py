"""HttpSender against a local receiver: size limits split, outcomes per event."""

from __future__ import annotations

import orjson

from destinations import webhook
from router.delivery.http import HttpSender
from router.delivery.outcome import Delivered, Rejected, Retry
from tests.fakes.webhook import WebhookSink


def events(n: int, pad: int = 100) -> list[dict[str, object]]:
    return [{"type": "track", "event": "E", "userId": "u", "messageId": f"m{i}",
             "properties": {"pad": "x" * pad}} for i in range(n)]


async def test_a_request_over_the_byte_limit_is_split_and_a_lone_giant_rejected() -> None:
    async with WebhookSink() as sink:
        settings = webhook.Settings(url=f"{sink.url}/events")
        sender = HttpSender(webhook.CONNECTOR, settings, max_bytes=2000)
        await sender.start()
        try:
            batch = [*events(12), *events(1, pad=5000)]
            batch[-1]["messageId"] = "giant"
            outcomes = await sender.send(batch)
        finally:
            await sender.close()
    assert all(isinstance(o, Delivered) for o in outcomes[:12])
    assert isinstance(outcomes[12], Rejected) and "2000-byte limit" in outcomes[12].reason
    assert sorted(sink.ids) == sorted(f"m{i}" for i in range(12))
    assert len(sink.requests) > 1 and all(len(body) <= 2000 for _, body in sink.requests)


async def test_connection_refused_is_a_retry() -> None:
    settings = webhook.Settings(url="http://127.0.0.1:9/events")
    sender = HttpSender(webhook.CONNECTOR, settings)
    await sender.start()
    try:
        outcomes = await sender.send(events(2))
    finally:
        await sender.close()
    assert all(isinstance(o, Retry) and "connection" in o.reason for o in outcomes)


async def test_events_known_as_json_are_sent_as_those_bytes_and_signed() -> None:
    raw = b'{"type": "track", "event": "E", "userId": "u", "messageId": "m0"}'  # spaced
    async with WebhookSink(secret="s3cret") as sink:
        settings = webhook.Settings(url=f"{sink.url}/events", secret="s3cret")
        sender = HttpSender(webhook.CONNECTOR, settings)
        await sender.start()
        try:
            batch = events(2)
            outcomes = await sender.send(batch, [raw, None])
        finally:
            await sender.close()
    assert all(isinstance(o, Delivered) for o in outcomes)  # the sink checked the signature
    [(_, body)] = sink.requests
    assert body.startswith(b"[" + raw + b",") and sorted(sink.ids) == ["m0", "m1"]


async def test_a_batch_of_raw_only_events_splits_from_those_bytes() -> None:
    """The pipeline gives a raw-taking sender None for an event that is exactly its
    record's bytes; a split after an over-limit request must still find every event."""
    batch = events(12)
    raws = [orjson.dumps(event) for event in batch]
    async with WebhookSink() as sink:
        settings = webhook.Settings(url=f"{sink.url}/events")
        sender = HttpSender(webhook.CONNECTOR, settings, max_bytes=800)
        await sender.start()
        try:
            outcomes = await sender.send([None] * 12, raws)  # type: ignore[list-item]
        finally:
            await sender.close()
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert sorted(sink.ids) == sorted(f"m{i}" for i in range(12)) and len(sink.requests) > 1
