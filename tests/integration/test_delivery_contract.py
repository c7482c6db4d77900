"""The delivery contract checked black-box, as an outside checker would: the router runs
as its own process (``python -m router.cli run -c CONFIG``), a local aiohttp sink answers
what each test scripts, and the test reads only what arrives at the sink and what is in
the retry and dead-letter topics (docs/operations.md, "Dead-letter and retry headers").

It covers what tests/integration/test_delivery.py, test_spine.py and test_chaos.py leave
out: 502/504/505 and more 4xx, Retry-After as an HTTP date, the ``attempts`` header of a
dead letter, ``max_retry_age_s``, tombstones and other malformed input with their keys,
isolation under default delivery settings, per-user order around one user's failure, and
the ``replay`` command itself."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    ROOT,
    committed,
    config_dict,
    end_offsets,
    eventually,
    headers,
    read_all,
    spawn,
    write_config,
)

pytestmark = pytest.mark.kafka

# (events of the request, how many requests this path had before) -> (status, headers)
Script = Callable[[list[dict[str, Any]], int], tuple[int, dict[str, str]]]


class Sink:
    """One aiohttp server; each destination posts to its own path, answered by its script
    (200 when none). Records every request: (path, monotonic time, events)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.requests: list[tuple[str, float, list[dict[str, Any]]]] = []
        self.gets: list[str] = []  # paths asked for with GET (where a redirect leads)
        self.accepted: dict[str, list[dict[str, Any]]] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def calls(self, path: str) -> list[tuple[float, list[dict[str, Any]]]]:
        return [(t, events) for p, t, events in self.requests if p == path]

    def ids(self, path: str) -> list[str]:
        return [e["messageId"] for e in self.accepted.get(path, [])]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        events = orjson.loads(await request.read())
        seen = len(self.calls(path))
        self.requests.append((path, time.monotonic(), events))
        status, hdrs = self.scripts.get(path, lambda e, n: (200, {}))(events, seen)
        if 200 <= status < 300:
            self.accepted.setdefault(path, []).extend(events)
        return web.json_response({"status": status}, status=status, headers=hdrs)

    async def landing(self, request: web.Request) -> web.Response:
        self.gets.append(request.match_info["path"])
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    async def __aenter__(self) -> Sink:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        app.router.add_get("/{path}", self.landing)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def always(status: int, hdrs: dict[str, str] | None = None) -> Script:
    return lambda events, n: (status, hdrs or {})


def hook(sink: Sink, name: str, delivery: dict[str, Any] | None = None,
         max_events: int = 100) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "settings": {"url": sink.url(name)},
            "batch": {"max_events": max_events, "max_wait_ms": 20},
            **({"delivery": delivery} if delivery else {})}


@contextlib.asynccontextmanager
async def router_process(tmp_path: Path, cfg: dict[str, Any]) -> AsyncIterator[None]:
    """``python -m router.cli run -c CONFIG``, stopped with SIGTERM (it must exit 0)."""
    log = tmp_path / "router.log"
    proc = spawn(write_config(tmp_path / "router.yaml", cfg), log)
    try:
        yield
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0, log.read_text()[-3000:]


async def send(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
               partition: int | None = None) -> None:
    """Produce (key, value) records as given: a None value is a tombstone."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def track(message_id: str, user: str = "user-1") -> tuple[bytes, bytes]:
    event = {"type": "track", "event": "Order Completed", "userId": user,
             "messageId": message_id, "timestamp": "2026-01-05T10:00:00.000Z",
             "properties": {"total": 9.5}}
    return user.encode(), orjson.dumps(event)


async def all_committed(bootstrap: str, cfg: dict[str, Any], topic: str) -> bool:
    return await committed(bootstrap, cfg["kafka"]["group_id"], topic) == \
        await end_offsets(bootstrap, topic)


FAST = {"inline_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 600,
        "park_backoff_s": 300, "circuit_failures": 100}


async def test_status_classes_retry_after_date_and_dead_letter_headers(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """One event to ten destinations, each answering one way. 502/504 are retried inline
    and parked; 505 and 404/409/410 are dead-lettered after one attempt with every
    documented header and the original bytes and key; a Retry-After HTTP date is waited
    for; a long Retry-After parks with ``not_before`` that far ahead; inline_retries 0
    parks after the first attempt."""
    topic = await make_topic()
    key, value = track("contract-1")
    async with Sink() as sink:
        def date_once(events: list[dict[str, Any]], n: int) -> tuple[int, dict[str, str]]:
            if n:  # the first answer asks for a wait until an HTTP date 2-3 s ahead
                return 200, {}
            return 429, {"Retry-After": email.utils.formatdate(time.time() + 3, usegmt=True)}

        sink.scripts = {"s502": always(502), "s504": always(504), "s505": always(505),
                        "s404": always(404), "s409": always(409), "s410": always(410),
                        "date": date_once, "long": always(503, {"Retry-After": "120"}),
                        "zero": always(500)}
        dests = [hook(sink, name, FAST) for name in sink.scripts]
        dests[-1]["delivery"] = {**FAST, "inline_retries": 0}
        cfg = config_dict(kafka_bootstrap, topic, dests)
        await send(kafka_bootstrap, topic, [(key, value)])
        async with router_process(tmp_path, cfg):
            await eventually(lambda: len(sink.calls("date")) == 2, 20)
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
        parked = {name: await read_all(kafka_bootstrap, f"{topic}.retry.{name}")
                  for name in ("s502", "s504", "long", "zero")}
    started = time.time()
    attempts = {name: len(sink.calls(name)) for name in sink.scripts}
    assert attempts == {"s502": 3, "s504": 3, "s505": 1, "s404": 1, "s409": 1, "s410": 1,
                        "date": 2, "long": 1, "zero": 1}
    (t0, _), (t1, _) = sink.calls("date")
    assert t1 - t0 >= 1.5, "Retry-After as an HTTP date was not honoured"
    assert sink.ids("date") == ["contract-1"]

    by_dest = {headers(r)["destination"]: r for r in dead}
    assert sorted(by_dest) == ["s404", "s409", "s410", "s505"] and len(dead) == 4
    for name, record in by_dest.items():
        h = headers(record)
        assert record.value == value and record.key == key  # the original bytes and key
        assert h["reason"].startswith(f"HTTP {name[1:]}"), h
        assert h["attempts"] == "1", f"{name}: one delivery attempt was made, header says {h}"
        first, last = float(h["first_failure_at"]), float(h["last_failure_at"])
        assert started - 120 < first <= last <= started
        assert (h["source_topic"], h["source_partition"], h["source_offset"]) == (topic, "0", "0")
        assert int(h["source_timestamp"]) > 0

    for name, records in parked.items():
        [record] = records
        h = headers(record)
        assert record.value == value and record.key == key
        assert h["destination"] == name and h["source_offset"] == "0"
        assert h["attempts"] == {"s502": "3", "s504": "3", "long": "1", "zero": "1"}[name]
        assert h["last_error"].startswith("HTTP 5")
    not_before = float(headers(parked["long"][0])["not_before"])
    assert abs(not_before - (float(headers(parked["long"][0])["first_failure_at"]) + 120)) < 5


async def test_rejected_after_inline_retries_counts_every_attempt(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """503, 503, then 400: three attempts were made, and the dead letter says so."""
    topic = await make_topic()
    key, value = track("contract-2")
    async with Sink() as sink:
        sink.scripts = {"hook": lambda events, n: (503 if n < 2 else 400, {})}
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "hook", FAST)])
        await send(kafka_bootstrap, topic, [(key, value)])
        async with router_process(tmp_path, cfg):
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
        [record] = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert len(sink.calls("hook")) == 3
    h = headers(record)
    assert record.value == value and h["reason"].startswith("HTTP 400")
    assert h["attempts"] == "3", h
    assert float(h["first_failure_at"]) < float(h["last_failure_at"])


async def test_max_retry_age_dead_letters_after_redrives(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """503 forever: parked in ``<prefix>.<destination>``, re-driven with backoff, and
    dead-lettered once older than max_retry_age_s with the documented reason; every
    attempt made is counted in the dead letter."""
    topic = await make_topic()
    key, value = track("contract-3")
    delivery = {"inline_retries": 1, "backoff_base_s": 0.05, "backoff_max_s": 0.6,
                "park_backoff_s": 0.3, "max_retry_age_s": 2.5, "circuit_failures": 100}
    async with Sink() as sink:
        sink.scripts = {"hook": always(503)}
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "hook", delivery)],
                          retry_topic_prefix="contract.retry")
        await send(kafka_bootstrap, topic, [(key, value)])
        async with router_process(tmp_path, cfg):

            async def dead_lettered() -> bool:
                return bool(await read_all(kafka_bootstrap, f"{topic}.dlq"))

            await eventually(dead_lettered, 20)
            await asyncio.sleep(1.0)  # nothing more may happen to it now
            [record] = await read_all(kafka_bootstrap, f"{topic}.dlq")
            parked = await read_all(kafka_bootstrap, "contract.retry.hook")
    calls = sink.calls("hook")
    h = headers(record)
    assert h["reason"].startswith("gave up after ") and h["reason"].endswith(": HTTP 503"), h
    assert h["destination"] == "hook" and record.value == value and record.key == key
    assert h["source_topic"] == topic and h["source_offset"] == "0"
    assert int(h["attempts"]) == len(calls) >= 4, (h, len(calls))
    assert float(h["last_failure_at"]) - float(h["first_failure_at"]) >= 2.5
    assert len(parked) >= 2  # re-parked after a failed re-drive
    assert [int(headers(r)["attempts"]) for r in parked] == sorted(
        int(headers(r)["attempts"]) for r in parked)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls[1:])]
    assert all(g >= 0.1 for g in gaps), gaps  # re-drives wait for not_before


MALFORMED: list[tuple[str, bytes | None]] = [
    ("empty", None),  # a tombstone
    ("invalid_json", b""),
    ("not_an_object", b'"hello"'),
    ("not_an_object", b"null"),
    ("not_an_object", b"[{\"type\": \"track\"}]"),
    ("unknown_type", b'{"event": "X", "userId": "u"}'),
    ("missing_event", b'{"type": "track", "userId": "u"}'),
    ("missing_group_id", b'{"type": "group", "userId": "u"}'),
    ("missing_previous_id", b'{"type": "alias", "userId": "u"}'),
    ("wrong_type", b'{"type": "identify", "userId": {"id": 1}}'),
]


async def test_malformed_input_and_tombstones_are_dead_lettered_and_committed(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic()
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, (_, raw) in enumerate(MALFORMED):
        records += [track(f"good-{i}"), (b"key-%d" % i, raw)]
    async with Sink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "hook")])
        await send(kafka_bootstrap, topic, records)
        async with router_process(tmp_path, cfg):
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
            dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert sorted(sink.ids("hook")) == sorted(f"good-{i}" for i in range(len(MALFORMED)))
    assert len(dead) == len(MALFORMED)
    for record in sorted(dead, key=lambda r: int(headers(r)["source_offset"])):
        h = headers(record)
        i = (int(h["source_offset"]) - 1) // 2
        code, raw = MALFORMED[i]
        assert record.value == raw and record.key == b"key-%d" % i
        assert h["reason"].startswith(f"{code}: "), (raw, h["reason"])
        assert "destination" not in h and h["source_topic"] == topic


async def test_a_destination_down_with_default_delivery_settings_does_not_delay_the_other(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """Default inline retries, backoff and circuit: the healthy destination still gets
    every event promptly, the dead one's are parked in its retry topic (each once), and
    the input is committed (parked counts as settled)."""
    topic = await make_topic(partitions=2)
    records = [track(f"iso-{i:04d}", f"user-{i % 40}") for i in range(1500)]
    async with Sink() as sink:
        sink.scripts = {"dead": always(503)}
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "live"), hook(sink, "dead")])
        await send(kafka_bootstrap, topic, records[:1])
        async with router_process(tmp_path, cfg):
            await eventually(lambda: bool(sink.calls("dead")), 20)  # running, failing
            started = time.monotonic()
            await send(kafka_bootstrap, topic, records[1:])
            await eventually(lambda: len(sink.ids("live")) >= len(records), 20)
            took = time.monotonic() - started
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
            parked = await read_all(kafka_bootstrap, f"{topic}.retry.dead")
    assert took < 8, f"the healthy destination took {took:.1f} s"
    assert sorted(sink.ids("live")) == sorted(f"iso-{i:04d}" for i in range(1500))
    ids = [orjson.loads(r.value)["messageId"] for r in parked]
    assert sorted(ids) == sorted(f"iso-{i:04d}" for i in range(1500))  # each parked once
    assert not sink.ids("dead")


async def test_per_user_order_holds_one_users_events_behind_their_failure(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """alice's 4th event fails until it is parked and re-driven (with a Retry-After), her
    7th is rejected (400): her delivered events stay in Kafka order, the rejection does
    not hold her, and bob is not held by her failure."""
    topic = await make_topic(partitions=2)
    n = 12
    records = [track(f"{user}-{i:02d}", user) for i in range(n) for user in ("alice", "bob")]
    failing = {"count": 0}

    def script(events: list[dict[str, Any]], _: int) -> tuple[int, dict[str, str]]:
        ids = {e["messageId"] for e in events}
        if "alice-07" in ids:
            return 400, {}
        if "alice-03" in ids and failing["count"] < 3:
            failing["count"] += 1
            return 503, {"Retry-After": "1"}
        return 200, {}

    async with Sink() as sink:
        sink.scripts = {"ordered": script}
        delivery = {"ordering": "per_user", "concurrency": 2, "inline_retries": 1,
                    "backoff_base_s": 0.05, "park_backoff_s": 0.5, "backoff_max_s": 1.0,
                    "circuit_failures": 100}
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "ordered", delivery, 1)])
        await send(kafka_bootstrap, topic, records)
        async with router_process(tmp_path, cfg):
            await eventually(lambda: len(sink.ids("ordered")) >= 2 * n - 1, 20)
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
            await asyncio.sleep(0.5)  # a duplicate would arrive now
        [dead] = await read_all(kafka_bootstrap, f"{topic}.dlq")
    got = sink.ids("ordered")
    alice = [m for m in got if m.startswith("alice")]
    bob = [m for m in got if m.startswith("bob")]
    assert alice == [f"alice-{i:02d}" for i in range(n) if i != 7]
    assert bob == [f"bob-{i:02d}" for i in range(n)]
    assert got.index("bob-11") < got.index("alice-03"), "bob waited for alice's retry"
    assert orjson.loads(dead.value)["messageId"] == "alice-07"


async def test_a_redirect_is_not_counted_as_delivered(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    """A 301/302/303 answer to the POST: following it would turn the request into a GET
    without the events (RFC 9110 lets clients do that, and aiohttp does), and a 200 for
    that GET would count the batch as delivered while the receiver never got it. It is
    not a 2xx: the event is dead-lettered with the status as its reason (and can be
    replayed once the URL is fixed)."""
    topic = await make_topic()
    key, value = track("contract-redirect")
    async with Sink() as sink:
        sink.scripts = {name: always(int(name[1:]), {"Location": sink.url("landing")})
                        for name in ("r301", "r302", "r303")}
        cfg = config_dict(kafka_bootstrap, topic,
                          [hook(sink, name, FAST) for name in sink.scripts])
        await send(kafka_bootstrap, topic, [(key, value)])
        async with router_process(tmp_path, cfg):
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
            dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert not sink.gets, "the POST was followed as a GET without the events"
    assert sorted(headers(r)["destination"] for r in dead) == ["r301", "r302", "r303"]
    for record in dead:
        h = headers(record)
        assert record.value == value and h["reason"].startswith(f"HTTP {h['destination'][1:]}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_replay_command_redrives_dead_letters_with_a_fresh_history(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic()
    rejected = [track(f"rej-{i}", f"user-{i}") for i in range(4)]
    records = [*rejected, (b"k", b"not json"), track("ok-1")]
    async with Sink() as sink:
        broken = {"on": True}
        sink.scripts = {"hook": lambda events, n: (
            422 if broken["on"] and events[0]["messageId"].startswith("rej") else 200, {})}
        cfg = config_dict(kafka_bootstrap, topic, [hook(sink, "hook", FAST, 1)])
        path = write_config(tmp_path / "replay.yaml", cfg)
        await send(kafka_bootstrap, topic, records)
        async with router_process(tmp_path, cfg):
            await eventually(lambda: all_committed(kafka_bootstrap, cfg, topic), 20)
            dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
            assert len(dead) == 5
            broken["on"] = False  # the destination is fixed

            dry = await asyncio.to_thread(cli, "replay", "-c", str(path), "--dry-run")
            assert dry.returncode == 0, dry.stderr
            counts = orjson.loads(dry.stdout)
            assert (counts["scanned"], counts["replayed"], counts["skipped"]) == (5, 4, 1)
            assert counts["by_destination"] == {"hook": 4} and counts["dry_run"] is True
            later = await asyncio.to_thread(cli, "replay", "-c", str(path), "--dry-run",
                                            "--since", "2999-01-01T00:00:00+00:00")
            assert orjson.loads(later.stdout)["replayed"] == 0, later.stdout
            unknown = await asyncio.to_thread(cli, "replay", "-c", str(path),
                                              "--destination", "nope")
            assert unknown.returncode != 0 and "nope" in unknown.stderr
            assert not await read_all(kafka_bootstrap, f"{topic}.retry.hook")  # dry: nothing

            done = await asyncio.to_thread(cli, "replay", "-c", str(path), "--limit", "3")
            assert done.returncode == 0, done.stderr
            assert orjson.loads(done.stdout)["replayed"] == 3
            await eventually(lambda: len(sink.ids("hook")) == 4, 20)
            await asyncio.sleep(0.5)
            retried = await read_all(kafka_bootstrap, f"{topic}.retry.hook")
        after = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert len(after) == 5  # the dead-letter topic is left as it was
    assert len(retried) == 3
    originals = {r.value: r for r in dead}
    for record in retried:
        h, source = headers(record), originals[record.value]
        assert record.key == source.key
        assert (h["attempts"], h["not_before"], h["last_error"]) == ("0", "0", "replayed")
        for name in ("source_topic", "source_partition", "source_offset", "source_timestamp"):
            assert h[name] == headers(source)[name]
    assert sorted(sink.ids("hook")) == sorted(
        ["ok-1", *(orjson.loads(r.value)["messageId"] for r in retried)])
