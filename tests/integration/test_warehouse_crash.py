"""Crash consistency of the warehouses, black box: the router runs as its own process
(``python -m router.cli run``) loading 20,000 demo events in batches of 5,000 into a real
DuckDB file or PostgreSQL schema, and is crashed mid-load — ``kill -9`` then a restart,
or the broker restarting under it. Afterwards every produced ``messageId`` is in the
warehouse exactly once: Segment's promise of nothing lost, and its warehouses' dedupe by
``id``.

The kill is timed by the router's own operator surface (``/api/stats`` and ``/metrics``
on ``server.listen``): at least one batch loaded, a batch in progress, and events loaded
but not yet committed, so that the restart must deliver loaded events again and the
warehouse must absorb them. DuckDB's file is locked by the running router, so it is read
only after a kill or a stop."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.demo import generate
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    kill9,
    produce,
    read_all,
    spawn,
    write_config,
)

pytestmark = pytest.mark.kafka

Event = dict[str, Any]
DEST = "wh"
N = 20_000
BATCH = 5_000
# Short max_wait: after a restart the redelivered remainder need not fill a batch.
BATCH_CFG = {"max_events": BATCH, "max_wait_ms": 300}
BASE_TABLES = {"track": "tracks", "identify": "identifies", "page": "pages",
               "screen": "screens"}


# -- the two warehouses, read from outside the router ----------------------------------

class Warehouse:
    """Where the router loads, and a reader of it: ``fetch`` runs SQL (no timestamp
    columns selected) and ``table`` qualifies a name."""

    schema: str

    def destination(self) -> dict[str, Any]:
        raise NotImplementedError

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    async def tables(self) -> set[str]:
        rows = await self.fetch("SELECT table_name FROM information_schema.tables "
                                f"WHERE table_schema = '{self.schema}'")
        return {r[0] for r in rows}

    async def loaded(self) -> int:
        """Events in the base tables (each event has one row in exactly one)."""
        present = await self.tables() & set(BASE_TABLES.values())
        total = 0
        for name in present:
            [(n,)] = await self.fetch(f"SELECT count(*) FROM {self.table(name)}")
            total += int(n)
        return total


class DuckDBWarehouse(Warehouse):
    schema = "events"

    def __init__(self, path: Path) -> None:
        self.path = path

    def destination(self) -> dict[str, Any]:
        return {"name": DEST, "type": "duckdb", "batch": BATCH_CFG,
                "settings": {"path": str(self.path), "schema": self.schema}}

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._fetch, sql)

    def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        # Read-only, only while no router runs. Just after a kill -9 its loader child
        # (killed with it) may hold the file's lock a moment longer.
        deadline = time.monotonic() + 15
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=True)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


class PostgresWarehouse(Warehouse):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"crash_{uuid.uuid4().hex[:10]}"  # fresh per test

    def destination(self) -> dict[str, Any]:
        return {"name": DEST, "type": "postgres", "batch": BATCH_CFG,
                "settings": {"dsn": self.dsn, "schema": self.schema}}

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"])
async def warehouse(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(tmp_path / "wh" / "warehouse.duckdb")
        return
    pg = PostgresWarehouse(request.getfixturevalue("postgres_dsn"))
    try:
        yield pg
    finally:
        await pg.drop()


# -- the router's operator surface -------------------------------------------------------

class Probe:
    """``/api/stats`` and ``/metrics`` of the router on ``port``; None while it is not
    answering (starting, or killed)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def stats(self) -> dict[str, Any] | None:
        try:
            async with self.session.get(f"{self.base}/api/stats") as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def dest(self) -> dict[str, Any] | None:
        stats = await self.stats()
        if stats is None or stats["state"] != "running":
            return None
        [row] = [d for d in stats["destinations"] if d["name"] == DEST]
        return {**row, "router_in_flight": stats["in_flight"]}

    async def committed(self) -> int:
        """The offsets this process committed, summed over partitions (0 before any)."""
        try:
            async with self.session.get(f"{self.base}/metrics") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0
        return int(sum(s.value for f in text_string_to_metric_families(text)
                       for s in f.samples if s.name == "router_committed_offset"))

    async def close(self) -> None:
        await self.session.close()


async def until_mid_load(probe: Probe, batches: int, timeout_s: float = 45) -> None:
    """Wait for the moment to crash: ``batches`` batches in the warehouse, another in
    progress, not every event delivered, and some delivered events not committed yet."""
    async def ripe() -> bool:
        dest = await probe.dest()
        if dest is None:
            return False
        assert (dest["rejected"], dest["dead_lettered"]) == (0, 0), dest
        delivered = dest["delivered"]
        return (batches * BATCH <= delivered < N and dest["in_flight"] > 0
                and await probe.committed() < delivered)

    await eventually(ripe, timeout_s, interval_s=0.02)


async def until_settled(probe: Probe, bootstrap: str, group: str, topic: str,
                        must_deliver: int, timeout_s: float = 45) -> dict[str, Any]:
    """Wait until every input offset is committed and the destination holds nothing
    (nothing in flight, nothing parked in its retry topic), having delivered at least
    ``must_deliver`` events; the destination's last stats."""
    ends = await end_offsets(bootstrap, topic)
    last: dict[str, Any] = {}

    async def settled() -> bool:
        dest = await probe.dest()
        if dest is None:
            return False
        last.update(dest)
        quiet = (dest["delivered"] >= must_deliver and dest["in_flight"] == 0
                 and dest["router_in_flight"] == 0 and dest["retry_backlog"] == 0)
        return quiet and await committed(bootstrap, group, topic) == ends

    await eventually(settled, timeout_s, interval_s=0.25)
    return last


async def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.terminate()
    await asyncio.to_thread(proc.wait, 40)
    assert proc.returncode == 0, log.read_text()[-3000:]


# -- the checks ------------------------------------------------------------------------

def table_of_track(name: str) -> str:
    """The per-event table of the demo's track names ("Order Completed" ->
    "order_completed"), as Segment names it."""
    return name.lower().replace(" ", "_")


async def assert_exactly_once(wh: Warehouse, events: list[Event]) -> None:
    """Every event in its tables exactly once, and nothing else anywhere."""
    expected: dict[str, set[str]] = {}
    for event in events:
        expected.setdefault(BASE_TABLES[event["type"]], set()).add(event["messageId"])
        if event["type"] == "track":
            expected.setdefault(table_of_track(event["event"]), set()).add(
                event["messageId"])
    tables = await wh.tables()
    assert set(expected) <= tables, sorted(set(expected) - tables)
    for name in sorted(tables - {"users"}):
        [(n, distinct)] = await wh.fetch(
            f"SELECT count(*), count(DISTINCT id) FROM {wh.table(name)}")
        want = expected.get(name, set())
        assert (n, distinct) == (len(want), len(want)), f"{name}: {n} rows, {distinct} ids"
        got = {r[0] for r in await wh.fetch(f"SELECT id FROM {wh.table(name)}")}
        assert got == want, (f"{name}: {len(want - got)} lost, "
                             f"{len(got - want)} unexpected")
    union = set().union(*(expected[t] for t in BASE_TABLES.values() if t in expected))
    assert union == {e["messageId"] for e in events}

    # The rows are the events' own, not a mix-up of a half-loaded batch.
    names = {e["messageId"]: e["event"] for e in events if e["type"] == "track"}
    rows = await wh.fetch(f"SELECT id, event_text FROM {wh.table('tracks')}")
    assert dict(rows) == names

    # users: one row per userId that identified (upserted, never doubled).
    users = {e["userId"] for e in events if e["type"] == "identify"}
    [(n, distinct)] = await wh.fetch(
        f"SELECT count(*), count(DISTINCT id) FROM {wh.table('users')}")
    assert (n, distinct) == (len(users), len(users))
    assert {r[0] for r in await wh.fetch(f"SELECT id FROM {wh.table('users')}")} == users


# -- the scenarios -----------------------------------------------------------------------

Setup = tuple[list[Event], str, dict[str, Any], Path, Path]


async def prepare(bootstrap: str, make_topic: Callable[..., Awaitable[str]],
                  wh: Warehouse, tmp_path: Path, port: int, seed: int) -> Setup:
    """The events (produced), the topic, the config (written) and the log's path."""
    topic = await make_topic(partitions=3)
    events = list(generate(N, seed=seed))
    assert len({e["messageId"] for e in events}) == N
    await produce(bootstrap, topic, events)
    cfg = config_dict(bootstrap, topic, [wh.destination()], commit_interval_ms=1000)
    cfg["server"] = {"listen": f"127.0.0.1:{port}"}
    path = write_config(tmp_path / "router.yaml", cfg)
    return events, topic, cfg, path, tmp_path / "router.log"


async def test_kill_9_mid_load_then_restart_loses_and_doubles_nothing(
        kafka_bootstrap: str, make_topic: Any, warehouse: Warehouse, tmp_path: Path,
        free_port: int) -> None:
    wh = warehouse
    events, topic, cfg, path, log = await prepare(kafka_bootstrap, make_topic, wh,
                                                  tmp_path, free_port, seed=61)
    group = cfg["kafka"]["group_id"]
    probe = Probe(free_port)
    proc = spawn(path, log)
    try:
        await until_mid_load(probe, batches=3)  # late enough that some offsets are committed
        kill9(proc)
        offsets = await committed(kafka_bootstrap, group, topic)
        done = sum(o or 0 for o in offsets.values())
        loaded = await wh.loaded()
        # Killed mid-load, with loaded events beyond the committed offsets: the restart
        # must deliver those again, and the warehouse must not double them.
        assert done < loaded < N, (done, loaded)

        proc = spawn(path, log)
        last = await until_settled(probe, kafka_bootstrap, group, topic, N - done)
        assert (last["rejected"], last["dead_lettered"]) == (0, 0), last
        await stop(proc, log)
    finally:
        if proc.poll() is None:
            kill9(proc)
        await probe.close()
    assert await read_all(kafka_bootstrap, cfg["kafka"]["dead_letter_topic"], 2) == []
    await assert_exactly_once(wh, events)


async def test_broker_restart_mid_load_loses_and_doubles_nothing(
        kafka: Any, kafka_bootstrap: str, make_topic: Any, warehouse: Warehouse,
        tmp_path: Path, free_port: int) -> None:
    wh = warehouse
    events, topic, cfg, path, log = await prepare(kafka_bootstrap, make_topic, wh,
                                                  tmp_path, free_port, seed=62)
    group = cfg["kafka"]["group_id"]
    probe = Probe(free_port)
    proc = spawn(path, log)
    try:
        await until_mid_load(probe, batches=1)
        await asyncio.to_thread(kafka.restart)  # same port, same data
        last = await until_settled(probe, kafka_bootstrap, group, topic, N, timeout_s=90)
        assert (last["rejected"], last["dead_lettered"]) == (0, 0), last
        await stop(proc, log)
    finally:
        if proc.poll() is None:
            kill9(proc)
        await probe.close()
    assert await read_all(kafka_bootstrap, cfg["kafka"]["dead_letter_topic"], 2) == []
    await assert_exactly_once(wh, events)
