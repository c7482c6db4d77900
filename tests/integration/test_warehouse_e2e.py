"""Warehouses end to end: events produced to the real Kafka broker, consumed by the real
router (in-process, or a subprocess for kill -9), loaded into a real PostgreSQL server
and a real DuckDB file — Segment's tables, columns and values; idempotent replays;
schema evolution; type conflicts that never stop a load; nothing lost or doubled by a
crash. Every test runs against both warehouses.

DuckDB allows one writing process per file, so its file is read only once the router
has stopped (or was killed)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import duckdb
import orjson
import pytest

from router.app import Router
from router.demo import generate
from tests.destinations.samples import FULL, MINIMAL
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    kill9,
    metrics,
    produce,
    read_all,
    running,
    spawn,
    write_config,
)

pytestmark = pytest.mark.kafka

Event = dict[str, Any]
DEST = "wh"
SMALL_BATCH = {"max_events": 200, "max_wait_ms": 100}
# information_schema data_type (PostgreSQL or DuckDB) -> the documented type names
TYPE_NAMES = {"text": "text", "varchar": "text", "character varying": "text",
              "bigint": "bigint", "double precision": "double", "double": "double",
              "boolean": "boolean", "timestamp with time zone": "timestamp"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the two warehouses behind one reading interface ---------------------------------------

class Warehouse(Protocol):
    kind: str
    schema: str

    def destination(self) -> dict[str, Any]:
        """The router's destination entry for this warehouse."""
        ...

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query that selects no timestamp column."""
        ...

    async def rows(self, table: str, where: str = "TRUE") -> list[dict[str, Any]]:
        """``SELECT *`` as dicts ordered by id; timestamps as aware UTC datetimes."""
        ...

    async def columns(self, table: str) -> dict[str, str]:
        """Column name -> documented type name (text, bigint, double, boolean, timestamp)."""
        ...

    def table(self, name: str) -> str:
        """The qualified name of a table, for SQL."""
        ...


class PostgresWarehouse:
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"t_{uuid.uuid4().hex[:10]}"
        self.conn: asyncpg.Connection | None = None

    def destination(self) -> dict[str, Any]:
        return {"name": DEST, "type": "postgres", "batch": SMALL_BATCH,
                "settings": {"dsn": self.dsn, "schema": self.schema}}

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    async def _conn(self) -> asyncpg.Connection:
        if self.conn is None:
            self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await (await self._conn()).fetch(sql)]

    async def rows(self, table: str, where: str = "TRUE") -> list[dict[str, Any]]:
        records = await (await self._conn()).fetch(
            f"SELECT * FROM {self.table(table)} WHERE {where} ORDER BY id")
        return [dict(r) for r in records]

    async def columns(self, table: str) -> dict[str, str]:
        records = await (await self._conn()).fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2", self.schema, table)
        return {r[0]: TYPE_NAMES[r[1]] for r in records}

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class DuckDBWarehouse:
    kind = "duckdb"
    schema = "events"

    def __init__(self, path: Path) -> None:
        self.path = path

    def destination(self) -> dict[str, Any]:
        return {"name": DEST, "type": "duckdb", "batch": SMALL_BATCH,
                "settings": {"path": str(self.path), "schema": self.schema}}

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def _run(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        # Read-only, and only while no router holds the file. Right after a kill -9 its
        # loader process (killed with it) may take a moment to be gone and free the lock.
        deadline = time.monotonic() + 10
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=True)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description or ()]
            return names, cursor.fetchall()
        finally:
            con.close()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self._run(sql)[1]

    async def rows(self, table: str, where: str = "TRUE") -> list[dict[str, Any]]:
        # TIMESTAMPTZ values need pytz in DuckDB's Python client: read them as epoch_us.
        kinds = await self.columns(table)
        select = ", ".join(f'epoch_us("{n}") AS "{n}"' if k == "timestamp" else f'"{n}"'
                           for n, k in kinds.items())
        names, records = self._run(
            f"SELECT {select} FROM {self.table(table)} WHERE {where} ORDER BY id")
        out = []
        for record in records:
            row = dict(zip(names, record, strict=True))
            for name, kind in kinds.items():
                if kind == "timestamp" and row[name] is not None:
                    row[name] = EPOCH + timedelta(microseconds=row[name])
            out.append(row)
        return out

    async def columns(self, table: str) -> dict[str, str]:
        _, records = self._run(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{self.schema}' AND table_name = '{table}' "
            "ORDER BY ordinal_position")
        return {name: TYPE_NAMES[kind.lower()] for name, kind in records}


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"])
async def warehouse(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(tmp_path / "wh" / "shop.duckdb")
        return
    pg = PostgresWarehouse(request.getfixturevalue("postgres_dsn"))
    try:
        yield pg
    finally:
        await pg.close()


# -- helpers --------------------------------------------------------------------------------

async def count(wh: Warehouse, table: str) -> int:
    [(n,)] = await wh.fetch(f"SELECT count(*) FROM {wh.table(table)}")
    return int(n)


async def counts(wh: Warehouse, tables: list[str]) -> dict[str, int]:
    return {t: await count(wh, t) for t in tables}


async def ids(wh: Warehouse, table: str) -> list[str]:
    return [r[0] for r in await wh.fetch(f"SELECT id FROM {wh.table(table)} ORDER BY id")]


async def existing_tables(wh: Warehouse, schema: str) -> set[str]:
    rows = await wh.fetch("SELECT table_name FROM information_schema.tables "
                          f"WHERE table_schema = '{schema}'")
    return {r[0] for r in rows}


async def settle(router: Router, n: int, timeout_s: float = 25) -> None:
    """Wait until the warehouse accepted ``n`` events in all; none may be refused."""
    stats = router.stats.destination(DEST)
    await eventually(lambda: stats.delivered >= n or stats.rejected or stats.dead_lettered,
                     timeout_s)
    assert (stats.delivered, stats.rejected, stats.dead_lettered) == (n, 0, 0)


def config(bootstrap: str, topic: str, wh: Warehouse, **extra: Any) -> dict[str, Any]:
    cfg = config_dict(bootstrap, topic, [wh.destination()])
    cfg.update(extra)
    return cfg


# -- 1. a mixed stream lands in Segment's tables -------------------------------------------

SCREEN: Event = {
    "type": "screen", "userId": "user-00042", "name": "Home", "category": "App",
    "messageId": "msg-screen", "timestamp": "2026-11-20T10:10:00.000Z",
    "context": {"app": {"version": "3.4.2"}, "os": {"name": "iOS"}},
    "properties": {"variant": "b", "load_ms": 120},
}
ALIAS: Event = {
    "type": "alias", "userId": "user-00042", "previousId": "anon-4242424",
    "messageId": "msg-alias", "timestamp": "2026-11-20T10:11:00.000Z",
}
LATER_IDENTIFY: Event = {  # newer than FULL's identify: its traits win in `users`
    "type": "identify", "userId": "user-00042", "messageId": "msg-identify-later",
    "timestamp": "2026-11-21T08:00:00.000Z", "traits": {"plan": "team", "logins": 18},
}
NO_MESSAGE_ID: Event = {  # decode derives `derived-<sha1 of the bytes>`
    "type": "track", "event": "Order Completed", "anonymousId": "anon-77",
    "timestamp": "2026-11-20T11:00:00.000Z", "properties": {"total": 5, "currency": "EUR"},
}


def mixed_stream() -> list[Event]:
    return copy.deepcopy([*FULL, *MINIMAL, SCREEN, ALIAS, LATER_IDENTIFY, NO_MESSAGE_ID])


TABLES = ["tracks", "order_completed", "video_played", "button_clicked", "identifies",
          "users", "pages", "screens", "groups", "aliases"]
MIXED_COUNTS = {"tracks": 4, "order_completed": 2, "video_played": 1, "button_clicked": 1,
                "identifies": 3, "users": 2, "pages": 2, "screens": 1, "groups": 1,
                "aliases": 1}


@pytest.fixture
async def topic(make_topic: Any) -> str:
    return str(await make_topic(partitions=2))


async def test_a_mixed_stream_lands_in_the_right_tables_columns_and_values(
        kafka_bootstrap: str, topic: str, warehouse: Warehouse) -> None:
    wh = warehouse
    events = mixed_stream()
    started = datetime.now(UTC)
    await produce(kafka_bootstrap, topic, events)
    async with running(config(kafka_bootstrap, topic, wh)) as router:
        await settle(router, len(events))

    assert await counts(wh, TABLES) == MIXED_COUNTS

    # Order Completed: the per-event table holds properties; tracks does not.
    [order] = await wh.rows("order_completed", "id = 'msg-full-order'")
    assert {k: order[k] for k in (
        "id", "user_id", "anonymous_id", "event", "event_text", "order_id", "total",
        "revenue", "currency", "coupon", "context_ip", "context_page_path",
        "context_app_version", "context_library_name", "context_device_model",
        "context_location_city", "context_user_agent",
        "context_consent_category_preferences_analytics",
        "context_consent_category_preferences_advertising")} == {
        "id": "msg-full-order", "user_id": "user-00042", "anonymous_id": "anon-4242424",
        "event": "order_completed", "event_text": "Order Completed", "order_id": "ord-1001",
        "total": 63.5, "revenue": 55.0, "currency": "EUR", "coupon": "SPRING",
        "context_ip": "203.0.113.7", "context_page_path": "/cart",
        "context_app_version": "3.4.1", "context_library_name": "analytics.js",
        "context_device_model": "iPhone15,2", "context_location_city": "London",
        "context_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
        "context_consent_category_preferences_analytics": True,
        "context_consent_category_preferences_advertising": False}
    assert (order["timestamp"], order["sent_at"], order["received_at"],
            order["original_timestamp"]) == (
        ts("2026-11-20T10:05:00+00:00"), ts("2026-11-20T10:05:00.100+00:00"),
        ts("2026-11-20T10:05:00.300+00:00"), ts("2026-11-20T10:04:59.800+00:00"))
    assert order["uuid_ts"] >= started - timedelta(seconds=5)
    assert orjson.loads(order["products"]) == FULL[0]["properties"]["products"]
    order_cols = await wh.columns("order_completed")
    assert (order_cols["total"], order_cols["products"], order_cols["timestamp"],
            order_cols["context_consent_category_preferences_analytics"]) == (
        "double", "text", "timestamp", "boolean")
    tracks_cols = await wh.columns("tracks")
    assert "total" not in tracks_cols and "products" not in tracks_cols
    assert "context_page_path" in tracks_cols
    [track_row] = await wh.rows("tracks", "id = 'msg-full-order'")
    assert (track_row["event"], track_row["event_text"]) == ("order_completed",
                                                             "Order Completed")

    # A track without messageId: id derived from the bytes, stable across redelivery.
    derived = "derived-" + hashlib.sha1(orjson.dumps(NO_MESSAGE_ID)).hexdigest()
    [anon_order] = await wh.rows("order_completed", f"id = '{derived}'")
    assert (anon_order["anonymous_id"], anon_order["user_id"], anon_order["total"]) == (
        "anon-77", None, 5.0)  # 5 then 63.5 in one column: double
    assert anon_order["received_at"] >= started - timedelta(seconds=5)  # no receivedAt

    [video] = await wh.rows("video_played")
    assert (video["id"], video["position_s"], video["muted"], video["player_name"],
            video["player_quality"], orjson.loads(video["tags"])) == (
        "msg-full-video", 12, False, "hls", "1080p", ["a", "b"])
    assert (await wh.columns("video_played"))["position_s"] == "bigint"
    assert [r["id"] for r in await wh.rows("button_clicked")] == ["msg-min-track"]

    # identifies: one row per call, traits flattened; users: the latest traits.
    identify = (await wh.rows("identifies", "id = 'msg-full-identify'"))[0]
    assert {k: identify[k] for k in ("user_id", "email", "first_name", "last_name",
                                     "company_name", "company_id", "logins", "created_at",
                                     "context_os_name")} == {
        "user_id": "user-00042", "email": "Ada.Lovelace@example.com", "first_name": "Ada",
        "last_name": "Lovelace", "company_name": "Analytical Engines", "company_id": "co-9",
        "logins": 17, "created_at": ts("2024-01-15T09:00:00+00:00"),
        "context_os_name": "iOS"}
    users = {r["id"]: r for r in await wh.rows("users")}
    assert set(users) == {"user-00042", "user-00001"}
    ada = users["user-00042"]
    assert {k: ada[k] for k in ("plan", "logins", "email", "first_name", "company_name",
                                "timestamp")} == {
        "plan": "team", "logins": 18, "email": "Ada.Lovelace@example.com",
        "first_name": "Ada", "company_name": "Analytical Engines",
        "timestamp": ts("2026-11-21T08:00:00+00:00")}
    user_cols = await wh.columns("users")
    assert "anonymous_id" not in user_cols and not any(c.startswith("context_")
                                                       for c in user_cols)
    assert users["user-00001"]["plan"] is None

    pages = {r["id"]: r for r in await wh.rows("pages")}
    assert {k: pages["msg-full-page"][k] for k in ("name", "category", "title", "url",
                                                   "user_id")} == {
        "name": "Cart", "category": "Shop", "title": "Cart",
        "url": "https://shop.example.com/cart?x=1", "user_id": "user-00042"}
    assert (pages["msg-min-page"]["anonymous_id"], pages["msg-min-page"]["user_id"],
            pages["msg-min-page"]["name"]) == ("anon-0000001", None, None)
    [screen] = await wh.rows("screens")
    assert {k: screen[k] for k in ("id", "name", "category", "variant", "load_ms",
                                   "context_app_version", "timestamp")} == {
        "id": "msg-screen", "name": "Home", "category": "App", "variant": "b",
        "load_ms": 120, "context_app_version": "3.4.2",
        "timestamp": ts("2026-11-20T10:10:00+00:00")}
    [group] = await wh.rows("groups")
    assert {k: group[k] for k in ("id", "group_id", "name", "industry", "employees",
                                  "website")} == {
        "id": "msg-full-group", "group_id": "co-9", "name": "Analytical Engines",
        "industry": "Computing", "employees": 12, "website": "https://engines.example.com"}
    [alias] = await wh.rows("aliases")
    assert (alias["id"], alias["user_id"], alias["previous_id"]) == (
        "msg-alias", "user-00042", "anon-4242424")


# -- 2. replaying the same events adds no rows ---------------------------------------------

async def test_replaying_the_same_events_adds_no_rows(
        kafka_bootstrap: str, topic: str, warehouse: Warehouse) -> None:
    wh = warehouse
    events = [*mixed_stream(), *generate(600, seed=11)]
    await produce(kafka_bootstrap, topic, events)
    async with running(config(kafka_bootstrap, topic, wh)) as router:
        await settle(router, len(events))
    tables = sorted(await existing_tables(wh, wh.schema))
    before = await counts(wh, tables)
    users_before = await wh.rows("users")
    assert before["tracks"] + before["identifies"] + before["pages"] + before["screens"] + \
        before["groups"] + before["aliases"] == len(events)

    # The same events again, and a new consumer group that reads both copies from the
    # start, with dedupe off: the warehouse itself must absorb all 2 x N redeliveries.
    await produce(kafka_bootstrap, topic, events)
    cfg = config(kafka_bootstrap, topic, wh, pipeline={"dedupe": None})
    async with running(cfg) as router:
        await settle(router, 2 * len(events))
        loads = {labels: value for (name, labels), value in metrics(router).items()
                 if name == "router_warehouse_batches_total"}
    if wh.kind == "duckdb":  # shapes it has seen: the database builds the rows
        assert loads.get((("destination", DEST), ("load", "sql")), 0) > 0
    assert await counts(wh, tables) == before
    assert sorted(await existing_tables(wh, wh.schema)) == tables
    assert await wh.rows("users") == users_before  # not even uuid_ts moved


# -- 3. a new property mid-stream adds a column --------------------------------------------

def item(message_id: str, **properties: Any) -> Event:
    return {"type": "track", "event": "Item Viewed", "userId": f"u-{message_id}",
            "messageId": message_id, "timestamp": "2026-11-20T10:00:00.000Z",
            "properties": properties}


async def test_a_new_property_mid_stream_adds_a_column(
        kafka_bootstrap: str, topic: str, warehouse: Warehouse) -> None:
    wh = warehouse
    first = [item(f"a{i:03d}", sku=f"sku-{i}", price=i) for i in range(50)]
    second = [item(f"b{i:03d}", sku=f"sku-{i}", price=i, color="red", dims={"w": i})
              for i in range(50)]
    for event in second:
        event["context"] = {"campaign": {"name": "autumn"}}
    async with running(config(kafka_bootstrap, topic, wh)) as router:
        await produce(kafka_bootstrap, topic, first)
        await settle(router, len(first))
        await produce(kafka_bootstrap, topic, second)
        await settle(router, len(first) + len(second))

    cols = await wh.columns("item_viewed")
    assert (cols["sku"], cols["price"], cols["color"], cols["dims_w"],
            cols["context_campaign_name"]) == ("text", "bigint", "text", "bigint", "text")
    tracks_cols = await wh.columns("tracks")
    assert "context_campaign_name" in tracks_cols and "color" not in tracks_cols
    rows = await wh.rows("item_viewed")
    assert len(rows) == 100
    assert [(r["id"], r["color"], r["dims_w"], r["context_campaign_name"]) for r in rows] == [
        *((f"a{i:03d}", None, None, None) for i in range(50)),
        *((f"b{i:03d}", "red", i, "autumn") for i in range(50))]
    assert [(r["sku"], r["price"]) for r in rows] == [(f"sku-{i}", i) for i in range(50)] * 2
    assert await count(wh, "tracks") == 100


# -- 4. a type conflict does not stop the load ---------------------------------------------

async def test_a_type_conflict_across_batches_does_not_stop_the_load(
        kafka_bootstrap: str, topic: str, warehouse: Warehouse) -> None:
    wh = warehouse
    first = [item(f"a{i:03d}", qty=i, price=10, flag=True, seen="2026-11-20T09:00:00Z")
             for i in range(40)]
    second = [item(f"b{i:03d}", qty="two", price=10.5, flag="maybe", seen="not a time")
              for i in range(40)]
    third = [item(f"c{i:03d}", qty=i, price=1.5 if i % 2 else 2, flag=False, seen=7)
             for i in range(40)]
    async with running(config(kafka_bootstrap, topic, wh)) as router:
        done = 0
        for batch in (first, second, third):
            await produce(kafka_bootstrap, topic, batch)
            done += len(batch)
            await settle(router, done)
        dlq = await read_all(kafka_bootstrap, f"{topic}.dlq", timeout_s=2)
    assert dlq == []

    cols = await wh.columns("item_viewed")
    assert (cols["qty"], cols["price"], cols["flag"], cols["seen"]) == (
        "text", "double", "text", "text")
    rows = {r["id"]: r for r in await wh.rows("item_viewed")}
    assert len(rows) == 120 and await count(wh, "tracks") == 120
    assert (rows["a007"]["qty"], rows["a007"]["price"], rows["a007"]["flag"]) == (
        "7", 10.0, "true")
    assert (rows["b007"]["qty"], rows["b007"]["price"], rows["b007"]["flag"],
            rows["b007"]["seen"]) == ("two", 10.5, "maybe", "not a time")
    assert (rows["c007"]["qty"], rows["c007"]["price"], rows["c007"]["flag"],
            rows["c007"]["seen"]) == ("7", 1.5, "false", "7")
    assert rows["c008"]["price"] == 2.0
    assert rows["a007"]["seen"].startswith("2026-11-20")  # the old timestamp, as text


# -- 5. kill -9 mid-load: nothing lost, nothing doubled -------------------------------------

async def test_kill_9_mid_load_loses_nothing_and_doubles_nothing(
        kafka_bootstrap: str, make_topic: Any, warehouse: Warehouse, tmp_path: Path) -> None:
    wh = warehouse
    topic = await make_topic(partitions=3)
    events = list(generate(8000, seed=5))
    cfg = config(kafka_bootstrap, topic, wh)
    path = write_config(tmp_path / "router.yaml", cfg)
    log = tmp_path / "router.log"
    group = cfg["kafka"]["group_id"]

    async def committed_total() -> int:
        return sum(o or 0 for o in (await committed(kafka_bootstrap, group, topic)).values())

    proc = spawn(path, log)
    try:
        await produce(kafka_bootstrap, topic, events)
        await eventually(lambda: _at_least(committed_total(), 1000), 30)
        kill9(proc)
        loaded = await _loaded(wh)
        assert 0 < loaded < len(events), f"killed too late to prove anything: {loaded}"
        proc = spawn(path, log)
        ends = await end_offsets(kafka_bootstrap, topic)
        await eventually(lambda: _at_least(committed_total(), sum(ends.values())), 35)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, log.read_text()[-3000:]

    by_table: dict[str, set[str]] = {}
    for event in events:
        table = {"track": "tracks", "identify": "identifies", "page": "pages",
                 "screen": "screens"}[event["type"]]
        by_table.setdefault(table, set()).add(event["messageId"])
    for table, expected in by_table.items():
        [(n, distinct)] = await wh.fetch(
            f"SELECT count(*), count(DISTINCT id) FROM {wh.table(table)}")
        assert (n, distinct) == (len(expected), len(expected)), table
        assert set(await ids(wh, table)) == expected, table
    orders = {e["messageId"] for e in events if e.get("event") == "Order Completed"}
    assert set(await ids(wh, "order_completed")) == orders
    assert await count(wh, "order_completed") == len(orders)
    users = {e["userId"] for e in events if e["type"] == "identify"}
    assert set(await ids(wh, "users")) == users


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def _loaded(wh: Warehouse) -> int:
    tables = await existing_tables(wh, wh.schema) & {"tracks", "identifies", "pages",
                                                       "screens"}
    return sum([await count(wh, t) for t in tables])
