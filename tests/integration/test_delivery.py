"""The delivery engine on the real broker: classification, retry topic, dead letters,
isolation, backpressure, partial failures, per-user ordering, drain and replay."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import orjson
import pytest
from aiohttp import web

from router.config import Config
from router.demo import generate
from router.replay import replay
from router.server import describe
from tests.fakes.base import FakeServer, respond
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    headers,
    produce,
    read_all,
    running,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka
FAST = {"inline_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 600,
        "park_backoff_s": 300, "circuit_failures": 100}


class Scripted(FakeServer):
    """Answers every request with one fixed status (and headers); counts requests."""

    def __init__(self, status: int, hdrs: dict[str, str] | None = None,
                 reset: bool = False) -> None:
        self.status, self.hdrs, self.reset = status, hdrs or {}, reset
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/events", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.reset:
            assert request.transport is not None
            request.transport.abort()  # connection reset mid-request
            return web.Response()
        return respond(self.status, {"status": self.status}, self.hdrs)


@pytest.mark.parametrize(("status", "hdrs", "attempts", "fate"), [
    (200, {}, 1, "delivered"),
    (400, {}, 1, "dead"),
    (401, {}, 1, "dead"),
    (403, {}, 1, "dead"),
    (408, {}, 3, "parked"),
    (413, {}, 1, "dead"),
    (422, {}, 1, "dead"),
    (429, {}, 3, "parked"),
    (429, {"Retry-After": "1"}, 3, "parked"),
    (429, {"Retry-After": "120"}, 1, "parked"),  # longer than worth waiting inline
    (500, {}, 3, "parked"),
    (501, {}, 1, "dead"),
    (503, {}, 3, "parked"),
    (0, {}, 3, "parked"),  # connection reset
])
async def test_classification_attempts_and_fate(kafka_bootstrap: str, make_topic: Any,
                                                status: int, hdrs: dict[str, str],
                                                attempts: int, fate: str) -> None:
    topic = await make_topic()
    event = next(generate(1, seed=status))
    await produce(kafka_bootstrap, topic, [event])
    async with Scripted(status, hdrs, reset=status == 0) as server:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("hook", f"{server.url}/events", delivery=FAST)])
        started = time.monotonic()
        async with running(cfg) as router:
            stats = router.stats.destinations["hook"]
            await eventually(lambda: stats.delivered + stats.dead_lettered + stats.parked, 20)
            ends = await end_offsets(kafka_bootstrap, topic)

            async def settled() -> bool:
                got = await committed(kafka_bootstrap, cfg["kafka"]["group_id"], topic)
                return got == ends

            await eventually(settled, 20)
        took = time.monotonic() - started
    assert len(server.requests) == attempts
    dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    parked = await read_all(kafka_bootstrap, f"{topic}.retry.hook")
    assert {"delivered": (0, 0), "dead": (1, 0), "parked": (0, 1)}[fate] == (
        len(dead), len(parked))
    if fate == "dead":
        h = headers(dead[0])
        assert h["destination"] == "hook" and f"HTTP {status}" in h["reason"]
        assert h["source_topic"] == topic and h["source_offset"] == "0"
    if fate == "parked":
        h = headers(parked[0])
        assert int(h["attempts"]) == attempts and float(h["not_before"]) > time.time() - 60
        assert h["last_error"] and float(h["first_failure_at"]) > 0
    if hdrs.get("Retry-After") == "1":
        assert took >= 2.0  # waited as told, twice


async def test_rejected_event_is_dead_lettered_before_the_commit_passes_it(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic()
    events = list(generate(20, seed=11))
    bad = events[9]["messageId"]
    async with WebhookSink() as sink:
        sink.reject_ids.add(bad)
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"), "batch": {"max_events": 1,
                                                               "max_wait_ms": 0}}])
        async with running(cfg):
            await produce(kafka_bootstrap, topic, events)
            group = cfg["kafka"]["group_id"]
            seen_commit = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                offset = (await committed(kafka_bootstrap, group, topic)).get(0)
                if offset is not None and offset > 9:
                    dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
                    assert [r.offset for r in dead] == [0]
                    assert bad in dead[0].value.decode()
                    seen_commit = True
                    break
                await asyncio.sleep(0.02)
            assert seen_commit
    assert sorted(sink.ids) == sorted(e["messageId"] for e in events if e["messageId"] != bad)


async def test_partial_batch_rejects_exactly_the_named_events(kafka_bootstrap: str,
                                                              make_topic: Any) -> None:
    topic = await make_topic()
    events = list(generate(10, seed=12))
    rejected = {events[2]["messageId"], events[7]["messageId"]}
    async with WebhookSink() as sink:
        sink.reject_ids |= rejected
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"), "batch": {"max_events": 10,
                                                               "max_wait_ms": 2000}}])
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            stats = router.stats.destinations["hook"]
            await eventually(lambda: stats.delivered == 8 and stats.dead_lettered == 2, 20)
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert len(sink.requests) == 1  # one batch of ten
    assert sorted(sink.ids) == sorted(e["messageId"] for e in events
                                      if e["messageId"] not in rejected)
    assert {orjson.loads(r.value)["messageId"] for r in dead} == rejected
    assert all(headers(r)["reason"] == "rejected by test" for r in dead)


async def test_one_dead_destination_does_not_stall_the_others(kafka_bootstrap: str,
                                                              make_topic: Any) -> None:
    topic = await make_topic(partitions=3)
    events = list(generate(3000, seed=13))
    async with WebhookSink() as a, WebhookSink() as b, WebhookSink() as c:
        outage_s = 60.0
        c.down_until = asyncio.get_running_loop().time() + outage_s
        fast = {"inline_retries": 1, "backoff_base_s": 0.05, "backoff_max_s": 4.0,
                "park_backoff_s": 1.0, "circuit_failures": 3, "circuit_open_s": 2.0}
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("a", f"{a.url}/events"), webhook("b", f"{b.url}/events"),
            webhook("c", f"{c.url}/events", delivery=fast)],
            max_in_flight_events=2000, fetch_max_records=500)
        async with running(cfg) as router:
            started = time.monotonic()
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, router.tracker.in_flight)
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            await produce(kafka_bootstrap, topic, events)
            want = {e["messageId"] for e in events}
            await a.wait_for(lambda: set(a.ids) >= want, 30)
            await b.wait_for(lambda: set(b.ids) >= want, 30)
            healthy_done = time.monotonic() - started
            assert healthy_done < outage_s / 2, "the healthy destinations waited on the dead one"
            assert router.stats.destinations["c"].parked > 0
            await c.wait_for(lambda: set(c.ids) >= want, outage_s + 60)
            watcher.cancel()
        assert peak <= 2000 + 500  # the cap plus at most one fetch
    assert set(c.ids) == want and len(c.received) >= len(want)


def fast_and_one(bootstrap: str, topic: str, fast: WebhookSink, name: str,
                 other: WebhookSink, delivery: dict[str, Any]) -> dict[str, Any]:
    """A fast webhook, and one more in small batches under a 400-event budget."""
    return config_dict(bootstrap, topic, [
        webhook("fast", f"{fast.url}/events"),
        {**webhook(name, f"{other.url}/events", delivery=delivery),
         "batch": {"max_events": 50, "max_wait_ms": 10}}],
        max_in_flight_events=400, fetch_max_records=100)


async def test_a_slow_destination_spills_to_its_retry_topic_instead_of_stalling_the_others(
        kafka_bootstrap: str, make_topic: Any) -> None:
    """A destination that accepts everything, but slower than the stream: without
    spilling it would hold the whole in-flight budget and backpressure would pace the
    fast one to its speed. The fast one must finish while the slow one has had less than
    half, and the slow one must still get every event (once parked, re-driven)."""
    topic = await make_topic(partitions=2)
    events = list(generate(2000, seed=15))
    want = {e["messageId"] for e in events}
    async with WebhookSink() as fast, WebhookSink(delay_s=0.5) as slow:
        cfg = fast_and_one(kafka_bootstrap, topic, fast, "slow", slow,
                           {"concurrency": 1, "spill_after_s": 0.5})
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            await fast.wait_for(lambda: set(fast.ids) >= want, 30)
            assert len(set(slow.ids)) < len(want) / 2, "the fast destination was paced"
            stats = router.stats.destinations["slow"]
            assert stats.spilled > 0 and stats.parked >= stats.spilled
            assert router.stats.destinations["fast"].parked == 0  # bursts are not a backlog
            assert describe(router, router.destinations["slow"])["spilled"] == stats.spilled
            await slow.wait_for(lambda: set(slow.ids) >= want, 90)
            assert stats.dead_lettered == 0
            assert describe(router, router.destinations["slow"])["spilling"] is False  # caught up
            await eventually(lambda: router.tracker.in_flight == 0, 10)
    assert len(fast.received) == len(want)  # once each
    assert set(slow.ids) == want


async def test_a_stalled_destination_spills_instead_of_pausing_the_others(
        kafka_bootstrap: str, make_topic: Any) -> None:
    """A destination that was fast stops answering for a while (a warehouse checkpoint, a
    hung vendor). Its measured speed is from before, so only the stall rule can tell: the
    other destination must go on at full speed, and the stalled one must get every event
    once it answers again (the held batch, then the spilled ones, re-driven)."""
    topic = await make_topic(partitions=2)
    warmup, events = list(generate(300, seed=16)), list(generate(2000, seed=17))
    async with WebhookSink() as fast, WebhookSink() as stalling:
        cfg = fast_and_one(kafka_bootstrap, topic, fast, "stalling", stalling,
                           {"concurrency": 1, "stall_s": 0.5})
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, warmup)
            await stalling.wait_for(lambda: len(set(stalling.ids)) == len(warmup), 30)
            stalling.answering.clear()  # held until the fast one has had everything
            await produce(kafka_bootstrap, topic, events)
            want = {e["messageId"] for e in warmup + events}
            await fast.wait_for(lambda: set(fast.ids) >= want, 30)
            stats = router.stats.destinations["stalling"]
            assert stats.spilled > 0 and len(set(stalling.ids)) == len(warmup)
            stalling.answering.set()
            await stalling.wait_for(lambda: set(stalling.ids) >= want, 90)
            assert stats.dead_lettered == 0
            await eventually(lambda: router.tracker.in_flight == 0, 10)
    assert len(stalling.received) == len(want)  # once each: the held batch was not re-sent


def steps(n: int, first: int) -> list[dict[str, Any]]:
    return [{"type": "track", "event": "Step", "userId": f"user-{i % 50}",
             "messageId": f"m-{i:05d}", "properties": {"i": i}}
            for i in range(first, first + n)]


async def test_a_stopped_duckdb_loader_does_not_pause_the_other_destinations(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """DuckDB's loader child stops (SIGSTOP, as a checkpoint of several seconds holds it)
    with two batches handed to it: it takes one at a time and the next is staged in its
    queue, out of reach of the engine's gate. Two batches are the whole budget here, so
    unless the stall withdraws the staged ones (parked, re-driven later) the consumer
    pauses and the other destination waits for the loader."""
    topic = await make_topic(partitions=2)
    warmup, events = steps(300, 0), steps(2000, 300)
    path = tmp_path / "wh.duckdb"
    async with WebhookSink() as fast:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("fast", f"{fast.url}/events"),
            {"name": "wh", "type": "duckdb", "batch": {"max_events": 200, "max_wait_ms": 20},
             "delivery": {"concurrency": 4, "stall_s": 0.5},
             "settings": {"path": str(path), "schema": "s"}}],
            max_in_flight_events=400, fetch_max_records=100)
        async with running(cfg) as router:
            stats = router.stats.destinations["wh"]
            await produce(kafka_bootstrap, topic, warmup)
            await eventually(lambda: stats.delivered >= len(warmup), 30)
            [loader] = router.destinations["wh"].worker.sender.pool._processes
            os.kill(loader, signal.SIGSTOP)
            try:
                await produce(kafka_bootstrap, topic, events)
                want = {e["messageId"] for e in warmup + events}
                await fast.wait_for(lambda: set(fast.ids) >= want, 30)
                assert stats.spilled > 0
            finally:
                os.kill(loader, signal.SIGCONT)
            await eventually(lambda: stats.delivered >= len(want), 90)
            assert stats.dead_lettered == 0
            await eventually(lambda: router.tracker.in_flight == 0, 10)
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute('SELECT count(*), count(DISTINCT id) FROM "s".tracks'
                           ).fetchone() == (len(want), len(want))  # each once
    finally:
        con.close()


async def test_a_locked_warehouse_table_does_not_pause_the_other_destinations(
        kafka_bootstrap: str, make_topic: Any, postgres_dsn: str) -> None:
    """Someone's long transaction locks the warehouse's table. The PostgreSQL sender loads
    one batch at a time (``max_concurrency = 1``), so with ``concurrency: 4`` the engine
    must hold the other batches itself, where a stall can turn them away: queued inside
    the sender they would hold the whole in-flight budget until the lock is released."""
    topic = await make_topic(partitions=2)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    tracks = f'"{schema}".tracks'

    warmup, events = steps(300, 0), steps(2000, 300)
    async with WebhookSink() as fast:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("fast", f"{fast.url}/events"),
            {"name": "wh", "type": "postgres", "batch": {"max_events": 100, "max_wait_ms": 20},
             "delivery": {"concurrency": 4, "stall_s": 0.5},
             "settings": {"dsn": postgres_dsn, "schema": schema}}],
            max_in_flight_events=400, fetch_max_records=100)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with running(cfg) as router:
                count = "SELECT count(DISTINCT id) FROM " + tracks
                await produce(kafka_bootstrap, topic, warmup)
                await eventually(lambda: fast.received and len(fast.received) >= 300, 30)

                async def loaded(n: int) -> bool:
                    try:
                        return bool(await conn.fetchval(count) == n)
                    except asyncpg.UndefinedTableError:  # before the first load
                        return False

                await eventually(lambda: loaded(len(warmup)), 30)
                lock = conn.transaction()  # held until the fast one has had everything
                await lock.start()
                await conn.execute(f"LOCK TABLE {tracks} IN ACCESS EXCLUSIVE MODE")
                await produce(kafka_bootstrap, topic, events)
                want = {e["messageId"] for e in warmup + events}
                await fast.wait_for(lambda: set(fast.ids) >= want, 30)
                stats = router.stats.destinations["wh"]
                assert stats.spilled > 0
                await lock.rollback()
                await eventually(lambda: loaded(len(want)), 90)
                assert stats.dead_lettered == 0
                await eventually(lambda: router.tracker.in_flight == 0, 10)
        finally:
            await conn.close()


async def test_backpressure_pauses_and_resumes_without_losing_the_group(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic(partitions=2)
    events = list(generate(1500, seed=14))
    async with WebhookSink(delay_s=0.2) as slow:
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("slow", f"{slow.url}/events", delivery={"concurrency": 1}),
             "batch": {"max_events": 50, "max_wait_ms": 10}}],
            max_in_flight_events=200, fetch_max_records=100)
        async with running(cfg) as router:
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, router.tracker.in_flight)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            await produce(kafka_bootstrap, topic, events)
            await slow.wait_for(lambda: len(set(slow.ids)) >= len(events), 60)
            watcher.cancel()
            assert router.source is not None
            pauses = router.source.pause_count
            assert not router.source.backpressured or router.tracker.in_flight > 0
    assert pauses >= 2, "never paused"
    assert peak <= 200 + 100, peak
    assert len(slow.received) == len(events)  # once each: no rebalance re-delivered anything


async def test_per_user_order_survives_a_transient_failure(kafka_bootstrap: str,
                                                           make_topic: Any) -> None:
    topic = await make_topic(partitions=2)
    events = []
    for i in range(40):
        for user in ("alice", "bob", "carol"):
            events.append({"type": "track", "event": f"Step {i}", "userId": user,
                           "messageId": f"{user}-{i:03d}"})
    async with WebhookSink() as sink:
        sink.down_until = asyncio.get_running_loop().time() + 3.0
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("ordered", f"{sink.url}/events"),
             "batch": {"max_events": 5, "max_wait_ms": 10},
             "delivery": {"ordering": "per_user", "concurrency": 3, "inline_retries": 1,
                          "backoff_base_s": 0.2, "backoff_max_s": 1.0,
                          "park_backoff_s": 0.5, "circuit_open_s": 1.0}}])
        async with running(cfg):
            await produce(kafka_bootstrap, topic, events)
            await sink.wait_for(lambda: len(set(sink.ids)) >= len(events), 60)
    for user in ("alice", "bob", "carol"):
        got = [e["messageId"] for e in sink.received if e["userId"] == user]
        assert got == sorted(got), f"{user}'s events arrived out of order: {got}"


async def test_a_redriven_event_keeps_its_first_append_time(kafka_bootstrap: str,
                                                            make_topic: Any) -> None:
    """An event with no time field gets its ``timestamp`` from its record's append time;
    parked and re-driven, it still does (``source_timestamp``), not from the park's, and
    its end-to-end latency counts from the first append."""
    topic = await make_topic()
    event = {"type": "track", "event": "Timeless", "userId": "user-1", "messageId": "t-1"}
    await produce(kafka_bootstrap, topic, [event])
    [source] = await read_all(kafka_bootstrap, topic)
    await asyncio.sleep(1.5)  # the park happens well after the append
    async with WebhookSink() as sink:
        sink.down_until = asyncio.get_running_loop().time() + 2.0
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"),
             "delivery": {"inline_retries": 0, "park_backoff_s": 0.5, "backoff_max_s": 1.0,
                          "circuit_failures": 100}}])
        async with running(cfg) as router:
            await sink.wait_for(lambda: sink.ids == ["t-1"], 30)
            stats = router.stats.destinations["hook"]
            assert stats.parked >= 1 and stats.delivered == 1
            ages = stats.end_to_end
    parked = await read_all(kafka_bootstrap, f"{topic}.retry.hook")
    assert len(parked) == stats.parked  # parked again while the sink was down: same origin
    assert {headers(r)["source_timestamp"] for r in parked} == {str(source.timestamp)}
    assert parked[0].timestamp >= source.timestamp + 1500  # the park's own record is later
    [delivered] = sink.received
    first = datetime.fromtimestamp(source.timestamp / 1000, UTC)
    assert delivered["timestamp"] == first.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    assert ages.count == 1 and ages.total >= 1.5  # from the first append, not the park


async def test_a_retry_record_with_unreadable_headers_is_delivered_not_fatal(
        kafka_bootstrap: str, make_topic: Any) -> None:
    """A record put in a retry topic by hand, with headers that are not numbers: the
    retry driver reads them as defaults (due now, no attempts yet) and delivers it; the
    router keeps running (a crash there used to stop it)."""
    from aiokafka import AIOKafkaProducer

    topic = await make_topic()
    event = {"type": "track", "event": "Handmade", "userId": "user-1", "messageId": "h-1",
             "timestamp": "2026-11-25T04:00:00Z"}
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")])
        async with running(cfg) as router:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(
                    f"{topic}.retry.hook", orjson.dumps(event), key=b"user-1",
                    headers=[("attempts", b"many"), ("not_before", b"soon"),
                             ("first_failure_at", b"?"), ("source_timestamp", b"x")])
                # and one that is not an event at all: dead-lettered, and counted so
                await producer.send_and_wait(f"{topic}.retry.hook", b"not json")
            finally:
                await producer.stop()
            await sink.wait_for(lambda: sink.ids == ["h-1"], 30)
            stats = router.stats.destinations["hook"]
            await eventually(lambda: stats.dead_lettered == 1, 10)
            await asyncio.sleep(0.5)
            assert not router.stopping.is_set()
            assert not [n for n, t in router.tasks.items() if t.done()]


async def test_per_user_order_survives_spilling(kafka_bootstrap: str,
                                                make_topic: Any) -> None:
    topic = await make_topic(partitions=2)
    events = [{"type": "track", "event": f"Step {i}", "userId": user,
               "messageId": f"{user}-{i:03d}"}
              for i in range(150) for user in ("alice", "bob", "carol", "dan")]
    async with WebhookSink() as fast, WebhookSink(delay_s=0.3) as slow:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("fast", f"{fast.url}/events"),
            {**webhook("slow", f"{slow.url}/events"),
             "batch": {"max_events": 20, "max_wait_ms": 10},
             "delivery": {"ordering": "per_user", "concurrency": 2, "spill_after_s": 0.2,
                          "park_backoff_s": 0.5}}],
            max_in_flight_events=200, fetch_max_records=50)
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            await slow.wait_for(lambda: len(set(slow.ids)) >= len(events), 90)
            assert router.stats.destinations["slow"].spilled > 0
    for user in ("alice", "bob", "carol", "dan"):
        got = [e["messageId"] for e in slow.received if e["userId"] == user]
        assert got == sorted(got), f"{user}'s events arrived out of order: {got}"


async def test_sigterm_mid_batch_then_restart_delivers_all_without_duplicates(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic(partitions=2)
    events = list(generate(3000, seed=15))
    async with WebhookSink(delay_s=0.05) as sink:
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("hook", f"{sink.url}/events"),
             "batch": {"max_events": 100, "max_wait_ms": 20}}],
            max_in_flight_events=300, fetch_max_records=100)
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        await produce(kafka_bootstrap, topic, events)
        await sink.wait_for(lambda: len(sink.received) >= 500, 60)
        proc.terminate()  # SIGTERM: drain, commit, exit 0
        assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()[-2000:]
        assert len(sink.received) < len(events)
        proc = spawn(path, log)
        try:
            await sink.wait_for(lambda: len(set(sink.ids)) >= len(events), 60)
            await asyncio.sleep(1.0)  # anything re-delivered would arrive now
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 60)
    assert sorted(sink.ids) == sorted(e["messageId"] for e in events)  # no duplicates


async def test_replay_redrives_dead_letters_once_the_destination_is_healthy(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic()
    events = list(generate(30, seed=16))
    async with WebhookSink() as sink:
        sink.reject_ids |= {e["messageId"] for e in events[:10]}
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")])
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            stats = router.stats.destinations["hook"]
            await eventually(lambda: stats.dead_lettered == 10 and stats.delivered == 20, 20)
            sink.reject_ids.clear()  # the destination is fixed
            config = Config.model_validate(cfg)
            preview = await replay(config, destination="hook", dry_run=True)
            assert preview["replayed"] == 10 and preview["dry_run"]
            counts = await replay(config, destination="hook")
            assert counts["replayed"] == 10 and counts["by_destination"] == {"hook": 10}
            await sink.wait_for(lambda: len(set(sink.ids)) == 30, 30)
        assert len(await read_all(kafka_bootstrap, f"{topic}.dlq")) == 10  # left as it was
    assert sorted(sink.ids) == sorted(e["messageId"] for e in events)
