"""Prepared events: a connector with ``prepare`` has each event turned into its vendor
JSON as it is routed, and the batch is sent from those bytes (``send_prepared``).

Checked against Amplitude's contract fake, through the real pipeline, worker and HTTP
sender: what arrives is what ``encode`` would have sent; the pipeline hands the worker
bytes, not the decoded event; a re-driven event (``Worker.submit``) is prepared too; a
split after an over-limit request and a connector that fails on one event keep every
other event; per-user ordering keeps the events (it needs them for the user)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import orjson
from aiokafka import TopicPartition

from destinations import amplitude
from destinations.base import array_body, array_head, compact_json
from router.config import Config
from router.delivery.http import HttpSender
from router.delivery.outcome import Delivered, Rejected
from router.delivery.worker import Worker
from router.offsets import Chunk, Envelope, Tracker
from router.pipeline import Destination, Pipeline, build_route
from router.telemetry import DestinationStats, Stats
from tests.fakes.amplitude import AmplitudeFake

Record = namedtuple("Record", "value offset timestamp key")
TIME = "2026-11-24T07:00:00.000Z"


def track(i: int, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", "userId": f"user-{i:04d}",
            "messageId": f"m{i}", "timestamp": TIME, "properties": {"n": i}, **fields}


def destination(fake: AmplitudeFake, **extra: Any) -> Any:
    return Config.model_validate({"destinations": [{
        "name": "amp", "type": "amplitude", "batch": {"max_wait_ms": 20},
        "settings": {"api_key": fake.api_key, "endpoint": fake.endpoint}, **extra}]}
    ).destinations[0]


class Outbox:
    """Records dead letters and parks (the worker's only other way out)."""

    def __init__(self) -> None:
        self.dead: list[tuple[bytes, str]] = []

    async def dead_letter(self, items: list[tuple[Envelope, str]], destination: str = "") -> None:
        for env, reason in items:
            self.dead.append((env.raw, reason))
            env.settle()

    async def park(self, envs: list[Envelope], *args: Any) -> list[int]:
        raise AssertionError(f"nothing should be parked here: {args}")


async def test_the_pipeline_hands_over_vendor_json_and_the_vendor_gets_what_encode_sends() -> None:
    async with AmplitudeFake() as fake:
        cfg = destination(fake)
        sender = HttpSender(cfg.connector, cfg.settings)
        await sender.start()
        outbox, stats = Outbox(), Stats()
        worker = Worker(cfg, sender, outbox, stats.destination("amp"))  # type: ignore[arg-type]
        handed: list[Any] = []
        submit_many = worker.submit_many

        def spy(items: list[Any]) -> None:
            handed.extend(payload for _, payload in items)
            submit_many(items)

        worker.submit_many = spy  # type: ignore[method-assign]
        tracker = Tracker()
        dest = Destination(cfg, build_route(cfg), worker, stats.destination("amp"))
        pipe = Pipeline(Config.model_validate({"destinations": []}), [dest],
                        outbox, stats, tracker)  # type: ignore[arg-type]
        events = [track(i) for i in range(5)] + [
            {"type": "alias", "userId": "user-0001", "previousId": "anon-0001",
             "messageId": "alias-1", "timestamp": TIME}]
        pipe.intake(TopicPartition("t", 0),
                    [Record(orjson.dumps(e), i, 0, b"u") for i, e in enumerate(events)])
        try:
            await worker.drain(5)
        finally:
            await sender.close()
    assert [type(p) for p in handed] == [bytes] * 5 + [str]  # no decoded event is kept
    assert "usermap" in handed[5]
    expected = amplitude.encode(events, cfg.settings)
    assert fake.requests == [("/2/httpapi", expected.requests[0].body)]
    assert [e["insert_id"] for e in fake.received] == [f"m{i}" for i in range(5)]
    assert [(raw, reason) for raw, reason in outbox.dead] == [
        (orjson.dumps(events[5]), expected.rejected[5])]
    assert tracker.drained() and tracker.committable() == {TopicPartition("t", 0): 6}


async def test_a_redriven_event_is_prepared_by_submit() -> None:
    """The retry driver hands the worker a routed dict (``submit``), not prepared bytes."""
    async with AmplitudeFake() as fake:
        cfg = destination(fake)
        sender = HttpSender(cfg.connector, cfg.settings)
        await sender.start()
        worker = Worker(cfg, sender, Outbox(), DestinationStats())  # type: ignore[arg-type]
        chunk, tracker = Chunk(2, 2), Tracker()
        tracker.in_flight = 2
        for i in range(2):
            env = Envelope(orjson.dumps(track(i)), "t", 0, i, 0, None, chunk, tracker)
            env.pending = 1
            worker.submit(env, track(i))
        assert [type(p) for _, p in worker.lanes[0].buffer] == [bytes, bytes]
        try:
            await worker.drain(5)
        finally:
            await sender.close()
    assert sorted(e["insert_id"] for e in fake.received) == ["m0", "m1"]
    assert tracker.drained()


async def test_a_prepared_batch_over_the_byte_limit_splits_and_keeps_every_event() -> None:
    events = [track(i, properties={"pad": "x" * 300}) for i in range(12)]
    async with AmplitudeFake() as fake:
        settings = amplitude.Settings(api_key=fake.api_key, endpoint=fake.endpoint)
        sender = HttpSender(amplitude.CONNECTOR, settings, max_bytes=2000)
        await sender.start()
        try:
            outcomes = await sender.send_prepared([sender.prepare(e) for e in events])
        finally:
            await sender.close()
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert sorted(e["insert_id"] for e in fake.received) == sorted(f"m{i}" for i in range(12))
    assert len(fake.requests) > 1 and all(len(body) <= 2000 for _, body in fake.requests)


async def test_a_connector_failing_on_one_event_rejects_that_event_only() -> None:
    async with AmplitudeFake() as fake:
        settings = amplitude.Settings(api_key=fake.api_key, endpoint=fake.endpoint)
        sender = HttpSender(amplitude.CONNECTOR, settings)
        events: list[Any] = [track(0), track(1)]
        events[1]["context"] = "web"  # convert raises on it (the decoder never lets this by)
        await sender.start()
        try:
            prepared = [sender.prepare(e) for e in events]
            outcomes = await sender.send_prepared(prepared)
        finally:
            await sender.close()
    assert isinstance(outcomes[0], Delivered)
    assert isinstance(outcomes[1], Rejected) and outcomes[1].reason.startswith("encode failed")
    assert [e["insert_id"] for e in fake.received] == ["m0"]


def test_per_user_ordering_keeps_the_decoded_event() -> None:
    fake = AmplitudeFake()  # not started: only its key and endpoint are read
    for ordering, prepares in (("per_user", False), ("none", True)):
        cfg = destination(fake, delivery={"ordering": ordering})
        worker = Worker(cfg, HttpSender(cfg.connector, cfg.settings), Outbox(),  # type: ignore[arg-type]
                        DestinationStats())
        assert (worker.prepare is not None) is prepares


def test_compact_json_is_orjson_dumps_and_array_head_opens_the_array() -> None:
    value = {"event_type": "Clicked", "props": {"a": [1, 2.5, None, "é"]}}
    out = compact_json(value)
    assert type(out) is bytes and out == orjson.dumps(value)
    items = [compact_json({"n": 1}), compact_json({"n": 2})]
    for fields in ({}, {"api_key": "k", "options": {"x": 1}}):
        body = array_body(array_head(fields, "events"), items)
        assert orjson.loads(body) == {**fields, "events": [{"n": 1}, {"n": 2}]}
