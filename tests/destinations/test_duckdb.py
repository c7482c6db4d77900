"""DuckDB warehouse: Segment's schema in an embedded file, idempotent and evolving."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from destinations.duckdb_load import DuckDBSender
from destinations.duckdb_set import RANGES, rows_within, transaction
from destinations.duckdb_users import upsert_users
from destinations.duckdb_wh import CONNECTOR, Settings
from router.config import Config
from router.delivery.outcome import DELIVERED, Rejected, Retry
from tests.destinations.samples import FULL, MINIMAL

Query = Callable[[str], list[tuple[Any, ...]]]


def track(message_id: str, name: str = "Item Viewed", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": "u-1", "messageId": message_id,
            "timestamp": "2026-11-20T10:00:00.000Z", "properties": properties}


def identify(message_id: str, timestamp: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": "u-1", "messageId": message_id,
            "timestamp": timestamp, "traits": traits}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "wh" / "events.duckdb"


@pytest.fixture
async def sender(path: Path) -> AsyncIterator[DuckDBSender]:
    sender = DuckDBSender(Settings.model_validate({"path": str(path), "schema": "shop"}))
    await sender.start()
    yield sender
    await sender.close()


@pytest.fixture
def query(sender: DuckDBSender) -> Query:
    """Read through the sender's own connection (one writer per file)."""
    def run(sql: str) -> list[tuple[Any, ...]]:
        assert sender.con is not None
        return sender.con.execute(sql).fetchall()
    return run


def columns(query: Query, table: str) -> dict[str, str]:
    return dict(query("SELECT column_name, data_type FROM information_schema.columns "
                      f"WHERE table_schema = 'shop' AND table_name = '{table}'"))


def test_connector_declaration() -> None:
    assert (CONNECTOR.name, CONNECTOR.display_name) == ("duckdb", "DuckDB")
    assert CONNECTOR.sender is not None and CONNECTOR.encode is None
    limits = CONNECTOR.limits
    assert (limits.default_events, limits.max_events, limits.max_wait_ms) == (5000, 20_000, 10_000)
    assert Settings().path == "data/events.duckdb" and Settings().schema_name == "events"


def test_batches_are_5000_events_unless_set_and_may_be_larger() -> None:
    """5,000 events a batch by default; a deployment may trade memory for the loader's
    speed up to 20,000 (docs/warehouses.md), not beyond."""
    def destination(batch: dict[str, int]) -> Any:
        return Config.model_validate({"destinations": [
            {"name": "wh", "type": "duckdb", "settings": {}, "batch": batch}]}).destinations[0]

    assert destination({}).max_events == 5000
    assert destination({"max_events": 10_000}).max_events == 10_000
    with pytest.raises(ValidationError, match="above the duckdb limit of 20000"):
        destination({"max_events": 30_000})


async def test_mixed_stream_lands_in_segment_tables(sender: DuckDBSender, query: Query) -> None:
    assert await sender.send(FULL + MINIMAL) == [DELIVERED] * 8
    counts = {t: query(f"SELECT count(*) FROM shop.{t}")[0][0] for t in (
        "tracks", "order_completed", "video_played", "button_clicked", "identifies", "users",
        "pages", "groups")}
    assert counts == {"tracks": 3, "order_completed": 1, "video_played": 1,
                      "button_clicked": 1, "identifies": 2, "users": 2, "pages": 2, "groups": 1}
    order = columns(query, "order_completed")
    assert order["id"] == "VARCHAR" and order["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert (order["total"], order["order_id"], order["products"]) == ("DOUBLE", "VARCHAR",
                                                                      "VARCHAR")
    assert order["context_consent_category_preferences_analytics"] == "BOOLEAN"
    assert "total" not in columns(query, "tracks")
    assert query("SELECT id, user_id, event, event_text, total, coupon, context_app_version, "
                 "strftime(timestamp, '%Y-%m-%dT%H:%M:%S'), json_extract(products, '$[1].name')"
                 " FROM shop.order_completed") == [
        ("msg-full-order", "user-00042", "order_completed", "Order Completed", 63.5, "SPRING",
         "3.4.1", "2026-11-20T10:05:00", '"Teapot"')]
    assert query("SELECT event, event_text FROM shop.tracks ORDER BY event") == [
        ("button_clicked", "Button Clicked"), ("order_completed", "Order Completed"),
        ("video_played", "Video Played")]
    assert query("SELECT position_s, muted, player_name, tags FROM shop.video_played") == [
        (12, False, "hls", '["a","b"]')]
    users = columns(query, "users")
    assert (users["created_at"], users["logins"]) == ("TIMESTAMP WITH TIME ZONE", "BIGINT")
    assert "anonymous_id" not in users and "context_ip" not in users
    assert query("SELECT email, company_name FROM shop.users WHERE id = 'user-00042'") == [
        ("Ada.Lovelace@example.com", "Analytical Engines")]
    assert query("SELECT name, category, title FROM shop.pages WHERE id = 'msg-full-page'") \
        == [("Cart", "Shop", "Cart")]
    assert query("SELECT group_id, employees FROM shop.groups") == [("co-9", 12)]


async def test_sending_the_same_events_again_adds_no_rows(sender: DuckDBSender,
                                                          query: Query) -> None:
    await sender.send(FULL)
    before = query("SELECT (SELECT count(*) FROM shop.tracks), "
                   "(SELECT count(*) FROM shop.order_completed), "
                   "(SELECT count(*) FROM shop.identifies), (SELECT count(*) FROM shop.users)")
    users = query("SELECT * EXCLUDE (received_at, uuid_ts, timestamp, created_at) "
                  "FROM shop.users")
    assert await sender.send(FULL + FULL) == [DELIVERED] * 10  # duplicates inside a batch too
    assert query("SELECT (SELECT count(*) FROM shop.tracks), "
                 "(SELECT count(*) FROM shop.order_completed), "
                 "(SELECT count(*) FROM shop.identifies), (SELECT count(*) FROM shop.users)") \
        == before == [(2, 1, 1, 1)]
    assert query("SELECT * EXCLUDE (received_at, uuid_ts, timestamp, created_at) "
                 "FROM shop.users") == users


async def test_redelivered_events_are_skipped_without_an_index_on_event_tables(
        sender: DuckDBSender, query: Query) -> None:
    # DuckDB holds an index wholly in memory: a primary key on an ever-growing table
    # fails every load at the memory limit. No table has one; users is MERGEd.
    old = {**track("m-old"), "timestamp": "2025-01-01T00:00:00Z"}
    no_time = {k: v for k, v in track("m-none").items() if k != "timestamp"}  # a transform's
    await sender.send([track("m1"), old, no_time])
    late = {**track("m2"), "timestamp": "2026-11-20T10:00:05+01:00"}
    # again, among new events, in batches of different time ranges
    assert await sender.send([late, track("m1"), old]) == [DELIVERED] * 3
    assert await sender.send([no_time, track("m3")]) == [DELIVERED] * 2
    assert await sender.send([track("m1")]) == [DELIVERED]
    assert query("SELECT id, count(*) FROM shop.tracks GROUP BY id ORDER BY id") == [
        ("m-none", 1), ("m-old", 1), ("m1", 1), ("m2", 1), ("m3", 1)]
    assert query("SELECT count(*) FROM shop.item_viewed") == [(5,)]
    await sender.send(FULL[:2])
    assert await sender.send(FULL) == [DELIVERED] * len(FULL)  # partly loaded before
    assert query("SELECT count(*) FROM shop.identifies") == [(1,)]
    assert query("SELECT table_name FROM duckdb_constraints() WHERE schema_name = 'shop' "
                 "AND constraint_type = 'PRIMARY KEY'") == []


def test_the_redelivery_check_reads_only_the_time_ranges_of_the_batch() -> None:
    """A late event must not widen the check to everything between it and the others."""
    def rows(*times: str | None) -> list[dict[str, Any]]:
        return [{"timestamp": t} for t in times]

    now = [f"2026-11-24T10:00:{s:02d}Z" for s in range(0, 60, 7)]
    assert rows_within(rows(*now)).count("BETWEEN") == 1
    late = rows_within(rows(*now, "2026-11-23T10:00:00Z", "2025-01-01T00:00:00+01:00"))
    assert late.count("BETWEEN") == 3 and "2026-11-23T09:59:59+00:00" in late
    assert "2024-12-31T23:00:01+00:00" in late and "IS NULL" not in late
    spread = rows_within(rows(*(f"2026-11-{d:02d}T00:00:00Z" for d in range(1, 21))))
    assert spread.count("BETWEEN") == RANGES  # the largest gaps are cut, no more
    assert rows_within(rows(*now, None)).count("IS NULL") == 1  # timeless rows load as NULL
    assert rows_within(rows(*now, "yesterday")) == ""  # DuckDB's reading of it is unknown


async def test_a_new_property_adds_a_column(sender: DuckDBSender, query: Query) -> None:
    await sender.send([track("m1", sku="a")])
    assert "color" not in columns(query, "item_viewed")
    assert await sender.send([track("m2", sku="b", color="red", **{"select": 1})]) == [
        DELIVERED]
    assert columns(query, "item_viewed")["color"] == "VARCHAR"
    assert query('SELECT id, sku, color, "select" FROM shop.item_viewed ORDER BY id') == [
        ("m1", "a", None, None), ("m2", "b", "red", 1)]


async def test_type_conflicts_widen_and_never_stop_the_load(sender: DuckDBSender,
                                                            query: Query) -> None:
    await sender.send([track("m1", qty=2, price=10, flag=True)])
    assert await sender.send([track("m2", qty="two", price=10.5, flag=False),
                              track("m3", qty=3, price=11, flag="maybe")]) == [DELIVERED] * 2
    kinds = columns(query, "item_viewed")
    assert (kinds["qty"], kinds["price"], kinds["flag"]) == ("VARCHAR", "DOUBLE", "VARCHAR")
    assert query("SELECT id, qty, price, flag FROM shop.item_viewed ORDER BY id") == [
        ("m1", "2", 10.0, "true"), ("m2", "two", 10.5, "false"), ("m3", "3", 11.0, "maybe")]


async def test_users_upsert_keeps_the_latest_traits(sender: DuckDBSender, query: Query) -> None:
    await sender.send([identify("i2", "2026-11-20T10:00:00Z", plan="pro", email="a@x")])
    await sender.send([identify("i3", "2026-11-21T10:00:00Z", plan="team")])  # newer wins
    await sender.send([identify("i1", "2026-11-19T10:00:00Z", plan="free", phone="1")])
    assert query("SELECT plan, email, phone, strftime(timestamp, '%d') FROM shop.users") == [
        ("team", "a@x", "1", "21")]  # the late, older identify only filled the gap
    assert query("SELECT count(*) FROM shop.identifies") == [(3,)]
    # several identifies of one user in one batch merge in time order
    await sender.send([identify("i5", "2026-11-23T10:00:00Z", plan="enterprise"),
                       identify("i4", "2026-11-22T10:00:00Z", plan="pro", email="b@x")])
    assert query("SELECT plan, email FROM shop.users") == [("enterprise", "b@x")]


async def test_a_users_table_made_with_a_primary_key_still_upserts(path: Path) -> None:
    """Files from before users lost its key: the upsert works on them too."""
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA shop")
        con.execute("CREATE TABLE shop.users (id VARCHAR PRIMARY KEY, received_at "
                    "TIMESTAMPTZ, timestamp TIMESTAMPTZ, uuid_ts TIMESTAMPTZ)")
    sender = DuckDBSender(Settings.model_validate({"path": str(path), "schema": "shop"}))
    try:
        await sender.send([identify("i1", "2026-11-20T10:00:00Z", plan="pro")])
        assert await sender.send([identify("i2", "2026-11-21T10:00:00Z", plan="team"),
                                  identify("i1", "2026-11-20T10:00:00Z", plan="pro")]) == [
            DELIVERED] * 2
        assert sender.con is not None
        assert sender.con.execute("SELECT id, plan FROM shop.users").fetchall() == [
            ("u-1", "team")]
    finally:
        await sender.close()


@pytest.mark.parametrize("by_sql", [True, False])
async def test_users_upsert_touches_only_the_batch_users(sender: DuckDBSender, query: Query,
                                                        by_sql: bool) -> None:
    """Stored rows are re-inserted merged (not updated in place): the users of the batch
    keep the columns it does not carry, everybody else is left as they were, and nothing
    of the upsert's own stays behind."""
    await sender.send([identify("i0", "2026-11-20T10:00:00Z", plan="pro", email="a@x",
                                phone="0", company="acme")])
    assert sender.con is not None
    sender.con.execute(  # 2,000 other users, spread around u-1, with a column of their own
        "INSERT INTO shop.users BY NAME SELECT 'other-' || i AS id, "
        "TIMESTAMPTZ '2026-11-01 00:00:00Z' AS timestamp, 'free' AS plan, "
        "'o' || i || '@x' AS email, 'c' || i AS company FROM range(2000) AS t(i)")
    stored = "SELECT id, CAST(timestamp AS VARCHAR), plan, email, company FROM shop.users "
    others = query(stored + "WHERE id <> 'u-1' ORDER BY id")
    newer = {**identify("i1", "2026-11-21T10:00:00Z", plan="team", phone="1"), "userId": "u-1"}
    new = {**identify("i2", "2026-11-21T10:00:00Z", plan="team"), "userId": "u-2"}
    older = {**identify("i3", "2026-10-01T10:00:00Z", plan="x", email="old@x", phone="9"),
             "userId": "other-7"}
    batch = [newer, new, older]
    outcomes = (await sender.send(batch) if by_sql else sender.send_sync(batch))
    assert outcomes == [DELIVERED] * 3
    if by_sql:
        assert sender.last_load == "sql"
    users = "SELECT plan, email, phone, company FROM shop.users WHERE id = "
    assert query(users + "'u-1'") == [("team", "a@x", "1", "acme")]  # newer: its values
    # win; the email it lacks stays, and so does the company no event of the batch has
    assert query(users + "'u-2'") == [("team", None, None, None)]
    assert query(users + "'other-7'") == [("free", "o7@x", "9", "c7")]  # older: fills gaps
    after = query(stored + "WHERE id NOT IN ('u-1', 'u-2', 'other-7') ORDER BY id")
    assert after == [row for row in others if row[0] != "other-7"]
    assert query("SELECT count(*), count(DISTINCT id) FROM shop.users") == [(2002, 2002)]
    assert query("SELECT table_name FROM duckdb_tables() WHERE temporary") == []


async def test_a_failed_users_upsert_keeps_the_stored_rows(sender: DuckDBSender,
                                                           query: Query) -> None:
    """The stored rows are deleted before the merged ones go in: a batch that fails after
    that rolls back with its transaction, and the users are as they were."""
    await sender.send([identify("i0", "2026-11-20T10:00:00Z", plan="pro", logins=3)])
    assert columns(query, "users")["logins"] == "BIGINT"
    before = query("SELECT COLUMNS(*)::VARCHAR FROM shop.users")
    assert sender.con is not None
    # the SQL load reads integers as HUGEINT: one over BIGINT's range fails the insert
    source = ("SELECT 'u-1' AS id, TIMESTAMPTZ '2026-11-22 00:00:00Z' AS timestamp, "
              "CAST(2 AS HUGEINT) ** 70 AS logins")
    with pytest.raises(duckdb.ConversionException), transaction(sender.con):
        upsert_users(sender.con, sender.ns, ["id", "timestamp", "logins"], source)
    assert query("SELECT COLUMNS(*)::VARCHAR FROM shop.users") == before


async def test_a_row_duckdb_refuses_rejects_only_that_event(path: Path) -> None:
    # A column a DBA narrowed to INTEGER: a value over 2^31 cannot go in.
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA shop")
        con.execute("CREATE TABLE shop.item_viewed (id VARCHAR PRIMARY KEY, qty INTEGER)")
    sender = DuckDBSender(Settings.model_validate({"path": str(path), "schema": "shop"}))
    try:
        events = [track(f"m{i}", qty=i) for i in range(7)]
        events[4]["properties"]["qty"] = 2**40
        outcomes = await sender.send(events)
        assert [type(o) for o in outcomes] == [type(DELIVERED)] * 4 + [Rejected] + [
            type(DELIVERED)] * 2
        assert "DuckDB refused the row" in outcomes[4].reason  # type: ignore[union-attr]
        assert "out of range" in outcomes[4].reason  # type: ignore[union-attr]
        assert sender.con is not None
        assert sender.con.execute("SELECT count(*) FROM shop.item_viewed").fetchall() == [(6,)]
        assert sender.con.execute("SELECT count(*) FROM shop.tracks").fetchall() == [(6,)]
    finally:
        await sender.close()


async def test_a_column_an_index_depends_on_cannot_widen_so_misfits_are_rejected(
        sender: DuckDBSender, query: Query) -> None:
    await sender.send([track("m1", qty=1)])
    query("CREATE INDEX qty_index ON shop.item_viewed (qty)")
    outcomes = await sender.send([track("m2", qty="two"), track("m3", qty=3)])
    assert isinstance(outcomes[0], Rejected) and outcomes[1] == DELIVERED
    assert "column qty is bigint, it cannot hold 'two'" in outcomes[0].reason
    assert columns(query, "item_viewed")["qty"] == "BIGINT"
    assert query("SELECT id, qty FROM shop.item_viewed ORDER BY id") == [("m1", 1), ("m3", 3)]


async def test_columns_over_the_cap_are_left_out_and_the_row_loads(path: Path) -> None:
    sender = DuckDBSender(Settings.model_validate({"path": str(path), "max_columns": 20}))
    try:
        wide = track("m1", **{f"p{i:02d}": i for i in range(15)})
        assert await sender.send([wide]) == [DELIVERED]
        assert sender.con is not None
        names = [r[0] for r in sender.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'item_viewed'").fetchall()]
        assert len(names) == 20 and "p09" in names and "p10" not in names
        assert sender.known.left_out == {"item_viewed": {f"p{i}" for i in range(10, 15)}}
    finally:
        await sender.close()


async def test_an_unusable_database_file_retries_the_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sender = DuckDBSender(Settings.model_validate({"path": str(blocker / "events.duckdb")}))
    await sender.start()  # logs, does not raise
    outcomes = await sender.send([*MINIMAL, {"type": "track", "event": "X", "userId": "u"}])
    assert all(isinstance(o, Retry) for o in outcomes[:3])
    assert isinstance(outcomes[3], Rejected)  # no messageId: rejected, not retried
    await sender.close()


async def test_five_thousand_events_in_one_batch(sender: DuckDBSender, query: Query) -> None:
    events = []
    for i in range(5000):
        event = copy.deepcopy(FULL[i % len(FULL)])
        event["messageId"] = f"bulk-{i}"
        events.append(event)
    assert await sender.send(events) == [DELIVERED] * 5000
    assert query("SELECT count(*) FROM shop.tracks") == [(2000,)]
    assert query("SELECT count(*) FROM shop.users") == [(1,)]
