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


def test_only_events_that_are_still_their_records_bytes_are_passed_on_raw() -> None:
    """A raw-taking worker gets ``(env, None)`` for an event that is exactly its record's
    bytes, so the router does not keep the dict while the batch waits; a filled-in
    messageId or timestamp makes the bytes stale, and other workers get the dict."""
    config = Config.model_validate({"destinations": [
        {"name": name, "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}}
        for name in ("raw", "dicts")]})
    stats = Stats()
    got: dict[str, list[tuple[Any, dict[str, Any] | None]]] = {"raw": [], "dicts": []}
    dests = []
    for cfg in config.destinations:
        worker = Collect()
        worker.raw_only = cfg.name == "raw"  # type: ignore[attr-defined]
        worker.submit_many = got[cfg.name].extend  # type: ignore[method-assign]
        dests.append(Destination(cfg, build_route(cfg), worker, stats.destination(cfg.name)))  # type: ignore[arg-type]
    pipe = Pipeline(config, dests, None, stats, Tracker())  # type: ignore[arg-type]
    complete = {"type": "track", "event": "E", "userId": "u", "messageId": "m1",
                "timestamp": "2026-11-24T07:00:00Z"}
    no_time = {"type": "track", "event": "E", "userId": "u", "messageId": "m2"}
    no_id = {"type": "track", "event": "E", "userId": "u", "timestamp": "2026-11-24T07:00:00Z"}
    pipe.intake(TopicPartition("t", 0), [Record(orjson.dumps(e), i, 1_700_000_000_000, b"u")
                                         for i, e in enumerate([complete, no_time, no_id])])
    (env1, ev1), (env2, ev2), (env3, ev3) = got["raw"]
    assert ev1 is None and orjson.loads(env1.raw) == complete
    assert ev2 is not None and "timestamp" in ev2
    assert ev3 is not None and ev3["messageId"].startswith("derived-")
    assert got["dicts"][0][1] == complete
    assert [env for env, _ in got["dicts"]] == [env1, env2, env3]


class DeadLetters:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def dead_letter(self, items: list[tuple[Any, str]],
                          destination: str | None = None) -> None:
        for env, reason in items:
            self.reasons.append(reason)
            env.settle()


async def test_an_event_the_engine_fails_on_is_dead_lettered_not_a_crash() -> None:
    """A bug that raises on one event (here: the second destination's route) must not
    stop the partition, or crash-loop the router on that record at every start: the
    event is dead-lettered (internal_error) besides what it was already handed to, and
    every other event goes on."""
    import asyncio

    config = Config.model_validate({"destinations": [
        {"name": name, "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}}
        for name in ("first", "second")]})
    stats, tracker, outbox = Stats(), Tracker(), DeadLetters()
    sinks = {cfg.name: Collect() for cfg in config.destinations}
    dests = [Destination(cfg, build_route(cfg), sinks[cfg.name], stats.destination(cfg.name))  # type: ignore[arg-type]
             for cfg in config.destinations]
    route = dests[1].route

    def failing(event: dict[str, Any]) -> Any:
        if event["messageId"] == "poison":
            raise KeyError("a bug")
        return route(event)

    dests[1].route = failing
    pipe = Pipeline(config, dests, outbox, stats, tracker)  # type: ignore[arg-type]
    tp = TopicPartition("t", 0)
    pipe.intake(tp, records(["a", "poison", "b"], 0))
    await asyncio.gather(*pipe.background)
    assert sinks["first"].ids == ["a", "poison", "b"] and sinks["second"].ids == ["a", "b"]
    assert outbox.reasons == ["internal_error: KeyError('a bug')"]
    assert stats.invalid["internal_error"] == 1
    assert tracker.committable() == {tp: 3}  # every record settled: the partition commits
