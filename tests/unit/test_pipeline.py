"""The hot path without Kafka: dedupe must not swallow our own re-deliveries."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import orjson
from aiokafka import TopicPartition

from router.config import Config
from router.offsets import Tracker
from router.pipeline import Destination, Pipeline, build_route
from router.telemetry import Stats

Record = namedtuple("Record", "value offset timestamp key")


class Collect:
    """A worker stand-in that records what it is given and settles at once."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def submit_many(self, items: list[tuple[Any, dict[str, Any]]]) -> None:
        for env, event in items:
            self.ids.append(event["messageId"])
            env.settle()


def pipeline() -> tuple[Pipeline, Collect, Stats]:
    config = Config.model_validate({"destinations": [
        {"name": "hook", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}}]})
    stats, tracker, sink = Stats(), Tracker(), Collect()
    dest_cfg = config.destinations[0]
    dest = Destination(dest_cfg, build_route(dest_cfg), sink, stats.destination("hook"))  # type: ignore[arg-type]
    return Pipeline(config, [dest], None, stats, tracker), sink, stats  # type: ignore[arg-type]


def records(ids: list[str], first: int) -> list[Record]:
    return [Record(orjson.dumps({"type": "track", "event": "E", "userId": "u",
                                 "messageId": m}), first + i, 0, b"u")
            for i, m in enumerate(ids)]


def test_refetched_offsets_bypass_dedupe_but_upstream_duplicates_do_not() -> None:
    pipe, sink, stats = pipeline()
    tp = TopicPartition("t", 0)
    pipe.intake(tp, records(["a", "b"], 0))
    pipe.intake(tp, records(["a", "b"], 0))  # the same offsets again: a re-delivery to us
    assert sink.ids == ["a", "b", "a", "b"]
    pipe.intake(tp, records(["a"], 2))  # a new record carrying a seen id: a true duplicate
    assert sink.ids == ["a", "b", "a", "b"] and stats.dropped["duplicate"] == 1
    assert stats.destinations["hook"].filtered["duplicate"] == 1
    assert pipe.tracker.committable() == {tp: 3}


def test_only_events_that_are_still_their_records_bytes_may_be_passed_on_raw() -> None:
    """``env.event`` is set when decode filled in nothing, so senders may send ``env.raw``
    as the event's JSON; a filled-in messageId or timestamp makes the bytes stale."""
    pipe, _, _ = pipeline()
    seen: list[tuple[Any, dict[str, Any]]] = []
    pipe.destinations[0].worker.submit_many = seen.extend  # type: ignore[method-assign]
    complete = {"type": "track", "event": "E", "userId": "u", "messageId": "m1",
                "timestamp": "2026-11-24T07:00:00Z"}
    no_time = {"type": "track", "event": "E", "userId": "u", "messageId": "m2"}
    no_id = {"type": "track", "event": "E", "userId": "u", "timestamp": "2026-11-24T07:00:00Z"}
    pipe.intake(TopicPartition("t", 0), [Record(orjson.dumps(e), i, 1_700_000_000_000, b"u")
                                         for i, e in enumerate([complete, no_time, no_id])])
    (env1, ev1), (env2, ev2), (env3, ev3) = seen
    assert env1.event is ev1 and orjson.loads(env1.raw) == ev1
    assert env2.event is None and "timestamp" in ev2
    assert env3.event is None and ev3["messageId"].startswith("derived-")
