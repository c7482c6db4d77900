"""PostgreSQL warehouse against a real server: Segment's schema, idempotent COPY loads,
schema evolution, users upsert, and per-row rejection of values PostgreSQL refuses."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from destinations.postgres import CONNECTOR, PostgresSender, Settings
from router.delivery.outcome import DELIVERED, Delivered, Rejected, Retry
from tests.destinations.samples import FULL, MINIMAL


def track(message_id: str, name: str = "Item Viewed", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": "u-1", "messageId": message_id,
            "timestamp": "2026-11-20T10:00:00.000Z", "properties": properties}


def identify(message_id: str, timestamp: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": "u-1", "messageId": message_id,
            "timestamp": timestamp, "traits": traits}


def test_connector_declaration() -> None:
    assert (CONNECTOR.name, CONNECTOR.display_name) == ("postgres", "PostgreSQL")
    assert CONNECTOR.sender is not None and CONNECTOR.encode is None
    assert (CONNECTOR.limits.max_events, CONNECTOR.limits.max_wait_ms) == (5000, 10_000)
    settings = Settings.model_validate({"dsn": "postgresql://u:secret@db/x"})
    assert settings.schema_name == "events" and settings.max_columns == 1000
    assert "secret" not in repr(settings)
    with pytest.raises(ValueError):
        Settings.model_validate({"dsn": "postgresql://db/x", "max_columns": 1601})


def test_a_schema_name_postgresql_cannot_hold_is_a_config_error() -> None:
    """PostgreSQL refuses names over 63 bytes; at run time every batch would retry until
    dead-lettered, so the config is refused instead."""
    assert Settings.model_validate({"dsn": "postgresql://db/x", "schema": "s" * 63})
    for name in ("s" * 64, "é" * 32, ""):
        with pytest.raises(ValueError, match="schema"):
            Settings.model_validate({"dsn": "postgresql://db/x", "schema": name})


async def test_an_unreachable_server_retries_the_whole_batch(free_port: int) -> None:
    sender = PostgresSender(Settings.model_validate(
        {"dsn": f"postgresql://postgres@127.0.0.1:{free_port}/none"}))
    await sender.start()  # logs, does not raise: a down warehouse must not stop the router
    outcomes = await sender.send([*MINIMAL, {"type": "track", "event": "X", "userId": "u"}])
    assert all(isinstance(o, Retry) for o in outcomes[:3])
    assert "PostgreSQL" in outcomes[0].reason  # type: ignore[union-attr]
    assert isinstance(outcomes[3], Rejected)  # no messageId: rejected, not retried
    await sender.close()


needs_postgres = pytest.mark.postgres


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def db(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def sender(postgres_dsn: str, schema: str) -> AsyncIterator[PostgresSender]:
    sender = PostgresSender(Settings.model_validate({"dsn": postgres_dsn, "schema": schema}))
    await sender.start()
    yield sender
    await sender.close()


async def columns(db: asyncpg.Connection, schema: str, table: str) -> dict[str, str]:
    return dict(await db.fetch("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = $1 AND table_name = $2", schema, table))


@needs_postgres
async def test_mixed_stream_lands_in_segment_tables(sender: PostgresSender,
                                                    db: asyncpg.Connection, schema: str) -> None:
    assert await sender.send(FULL + MINIMAL) == [DELIVERED] * 8
    counts = {t: await db.fetchval(f"SELECT count(*) FROM {schema}.{t}") for t in (
        "tracks", "order_completed", "video_played", "button_clicked", "identifies", "users",
        "pages", "groups")}
    assert counts == {"tracks": 3, "order_completed": 1, "video_played": 1,
                      "button_clicked": 1, "identifies": 2, "users": 2, "pages": 2, "groups": 1}
    order = await columns(db, schema, "order_completed")
    assert (order["id"], order["timestamp"], order["total"], order["products"]) == (
        "text", "timestamp with time zone", "double precision", "text")
    assert order["context_consent_category_preferences_analytics"] == "boolean"
    assert "total" not in await columns(db, schema, "tracks")
    row = await db.fetchrow(f"SELECT * FROM {schema}.order_completed")
    assert (row["id"], row["user_id"], row["anonymous_id"], row["event"], row["event_text"],
            row["total"], row["coupon"], row["context_page_path"]) == (
        "msg-full-order", "user-00042", "anon-4242424", "order_completed", "Order Completed",
        63.5, "SPRING", "/cart")
    assert row["timestamp"].isoformat() == "2026-11-20T10:05:00+00:00"
    assert row["original_timestamp"].isoformat() == "2026-11-20T10:04:59.800000+00:00"
    assert row["uuid_ts"] is not None
    assert await db.fetchval(f"SELECT products::json->1->>'name' FROM {schema}.order_completed"
                             ) == "Teapot"
    assert await db.fetch(f"SELECT position_s, muted, player_name, tags "
                          f"FROM {schema}.video_played") == [(12, False, "hls", '["a","b"]')]
    users = await columns(db, schema, "users")
    assert (users["created_at"], users["logins"]) == ("timestamp with time zone", "bigint")
    assert "anonymous_id" not in users and "context_ip" not in users
    assert await db.fetchrow(f"SELECT email, company_name FROM {schema}.users "
                             "WHERE id = 'user-00042'") == ("Ada.Lovelace@example.com",
                                                            "Analytical Engines")
    assert await db.fetchrow(f"SELECT name, category, title FROM {schema}.pages "
                             "WHERE id = 'msg-full-page'") == ("Cart", "Shop", "Cart")
    assert await db.fetchrow(f"SELECT group_id, employees FROM {schema}.groups") == ("co-9", 12)


@needs_postgres
async def test_events_given_as_their_records_bytes_load_as_the_events_do(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    """The engine hands a raw-taking sender None and the record's bytes for an event
    that is exactly those bytes (``takes_raw``); they are decoded in the flattening
    thread. Mixed with dicts in one batch, every event lands as in the test above."""
    assert sender.takes_raw
    events = FULL + MINIMAL
    given = [None if i % 2 else event for i, event in enumerate(events)]
    raws = [orjson.dumps(event) if i % 2 else None for i, event in enumerate(events)]
    assert await sender.send(given, raws) == [DELIVERED] * 8
    counts = {t: await db.fetchval(f"SELECT count(*) FROM {schema}.{t}") for t in (
        "tracks", "order_completed", "video_played", "button_clicked", "identifies", "users",
        "pages", "groups")}
    assert counts == {"tracks": 3, "order_completed": 1, "video_played": 1,
                      "button_clicked": 1, "identifies": 2, "users": 2, "pages": 2, "groups": 1}
    ids = {r[0] for t in ("tracks", "identifies", "pages", "groups")
           for r in await db.fetch(f"SELECT id FROM {schema}.{t}")}
    assert ids == {e["messageId"] for e in events}


@needs_postgres
async def test_sending_the_same_events_again_adds_no_rows(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    count = (f"SELECT (SELECT count(*) FROM {schema}.tracks), (SELECT count(*) FROM "
             f"{schema}.order_completed), (SELECT count(*) FROM {schema}.identifies), "
             f"(SELECT count(*) FROM {schema}.users)")
    await sender.send(FULL)
    before = await db.fetchrow(count)
    user = await db.fetchrow(f"SELECT * FROM {schema}.users")
    assert await sender.send(FULL + FULL) == [DELIVERED] * 10  # duplicates inside a batch too
    assert await db.fetchrow(count) == before == (2, 1, 1, 1)
    assert await db.fetchrow(f"SELECT * FROM {schema}.users") == user  # not even uuid_ts


@needs_postgres
async def test_a_new_property_adds_a_column(sender: PostgresSender, db: asyncpg.Connection,
                                            schema: str) -> None:
    await sender.send([track("m1", sku="a")])
    assert "color" not in await columns(db, schema, "item_viewed")
    assert await sender.send([track("m2", sku="b", color="red", **{"select": 1})]) == [
        DELIVERED]
    assert (await columns(db, schema, "item_viewed"))["color"] == "text"
    assert await db.fetch(f'SELECT id, sku, color, "select" FROM {schema}.item_viewed '
                          "ORDER BY id") == [("m1", "a", None, None), ("m2", "b", "red", 1)]


@needs_postgres
async def test_odd_keys_are_named_as_go_snakecase_and_the_docs_say(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    props = {"sample_2Text": 1, "名前": "x", "meta": {"名前": "y"}}
    assert await sender.send([track("m1", "sample_2Text", **props)]) == [DELIVERED]
    assert await db.fetch("SELECT sample__2text, _d54d12f9, meta_d54d12f9 "
                          f"FROM {schema}.sample__2text") == [(1, "x", "y")]


@needs_postgres
async def test_type_conflicts_widen_and_never_stop_the_load(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    await sender.send([track("m1", qty=2, price=10, flag=True)])
    assert await sender.send([track("m2", qty="two", price=10.5, flag=False),
                              track("m3", qty=3, price=11, flag="maybe")]) == [DELIVERED] * 2
    kinds = await columns(db, schema, "item_viewed")
    assert (kinds["qty"], kinds["price"], kinds["flag"]) == ("text", "double precision",
                                                             "text")
    assert await db.fetch(f"SELECT id, qty, price, flag FROM {schema}.item_viewed "
                          "ORDER BY id") == [("m1", "2", 10.0, "true"), ("m2", "two", 10.5,
                                                                         "false"),
                                             ("m3", "3", 11.0, "maybe")]


@needs_postgres
async def test_users_upsert_keeps_the_latest_traits(sender: PostgresSender,
                                                    db: asyncpg.Connection, schema: str) -> None:
    await sender.send([identify("i2", "2026-11-20T10:00:00Z", plan="pro", email="a@x")])
    await sender.send([identify("i3", "2026-11-21T10:00:00Z", plan="team")])  # newer wins
    await sender.send([identify("i1", "2026-11-19T10:00:00Z", plan="free", phone="1")])
    row = await db.fetchrow(f"SELECT plan, email, phone, timestamp FROM {schema}.users")
    assert tuple(row)[:3] == ("team", "a@x", "1")  # the late, older identify filled the gap
    assert row["timestamp"].day == 21
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.identifies") == 3
    await sender.send([identify("i5", "2026-11-23T10:00:00Z", plan="enterprise"),
                       identify("i4", "2026-11-22T10:00:00Z", plan="pro", email="b@x")])
    assert await db.fetchrow(f"SELECT plan, email FROM {schema}.users") == ("enterprise", "b@x")


@needs_postgres
async def test_rows_postgres_refuses_reject_only_those_events(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    # NUL is not allowed in PostgreSQL text; a DBA-narrowed INTEGER column overflows.
    await db.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.item_viewed "
                     "(id text PRIMARY KEY, qty integer)")
    events = [track(f"m{i}", qty=i, note="ok") for i in range(9)]
    events[2]["properties"]["note"] = "nul \x00 inside"
    events[6]["properties"]["qty"] = 2**40
    outcomes = await sender.send(events)
    assert [type(o) for o in outcomes] == [Delivered] * 2 + [Rejected] + [Delivered] * 3 + [
        Rejected] + [Delivered] * 2
    assert "0x00" in outcomes[2].reason  # type: ignore[union-attr]
    assert "out of range" in outcomes[6].reason  # type: ignore[union-attr]
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.item_viewed") == 7
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.tracks") == 7  # whole events
    assert await sender.send([events[0], events[1]]) == [DELIVERED] * 2  # still idempotent
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.item_viewed") == 7


@needs_postgres
async def test_a_column_a_view_depends_on_cannot_widen_so_misfits_are_rejected(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    await sender.send([track("m1", qty=1)])
    await db.execute(f"CREATE VIEW {schema}.qty_view AS SELECT qty FROM {schema}.item_viewed")
    outcomes = await sender.send([track("m2", qty="two"), track("m3", qty=3, color="red")])
    assert isinstance(outcomes[0], Rejected) and outcomes[1] == DELIVERED
    assert "column qty is bigint, it cannot hold 'two'" in outcomes[0].reason
    assert (await columns(db, schema, "item_viewed"))["qty"] == "bigint"  # the view still works
    assert await db.fetch(f"SELECT qty FROM {schema}.qty_view ORDER BY qty") == [(1,), (3,)]
    assert sender.known.frozen == {("item_viewed", "qty")}


@needs_postgres
async def test_columns_over_the_cap_are_left_out_and_the_row_loads(
        postgres_dsn: str, db: asyncpg.Connection, schema: str) -> None:
    sender = PostgresSender(Settings.model_validate(
        {"dsn": postgres_dsn, "schema": schema, "max_columns": 20}))
    try:
        assert await sender.send([track("m1", **{f"p{i:02d}": i for i in range(15)})]) == [
            DELIVERED]
        names = await columns(db, schema, "item_viewed")
        assert len(names) == 20 and "p09" in names and "p10" not in names
        assert sender.known.left_out == {"item_viewed": {f"p{i}" for i in range(10, 15)}}
        assert await db.fetchval(f"SELECT p09 FROM {schema}.item_viewed") == 9
    finally:
        await sender.close()


@needs_postgres
async def test_a_dropped_table_is_recreated_after_one_retry(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    await sender.send([track("m1", sku="a")])
    await db.execute(f"DROP TABLE {schema}.item_viewed")  # the cache is now stale
    first = await sender.send([track("m2", sku="b")])
    assert isinstance(first[0], Retry)
    assert await sender.send([track("m2", sku="b")]) == [DELIVERED]
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.item_viewed") == 1


@needs_postgres
async def test_five_thousand_events_in_one_batch(sender: PostgresSender,
                                                 db: asyncpg.Connection, schema: str) -> None:
    events = []
    for i in range(5000):
        event = copy.deepcopy(FULL[i % len(FULL)])
        event["messageId"] = f"bulk-{i}"
        events.append(event)
    assert await sender.send(events) == [DELIVERED] * 5000
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.tracks") == 2000
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.users") == 1


@needs_postgres
async def test_a_value_too_big_for_an_index_rejects_only_its_event(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    """Segment's PostgreSQL page invites users to add indexes. A value over a B-tree
    entry's limit (~2.7 kB, after compression) is refused as a program limit (class 54),
    as data that never fits, not as a server error: only its event is rejected, the
    rest of the batch loads (it used to retry whole until dead-lettered)."""
    await sender.send([track("m0", note="short")])
    await db.execute(f"CREATE INDEX ON {schema}.item_viewed (note)")
    events = [track(f"m{i}", note="ok") for i in range(1, 5)]
    noise = "".join(uuid.uuid4().hex for _ in range(200))  # 6.4 kB that do not compress
    events[2]["properties"]["note"] = noise
    events.append(track("x" + noise, note="a key too long to index"))
    outcomes = await sender.send(events)
    assert [type(o) for o in outcomes] == [Delivered] * 2 + [Rejected] + [Delivered] + [
        Rejected]
    assert "index row size" in outcomes[2].reason  # type: ignore[union-attr]
    assert await db.fetchval(f"SELECT count(*) FROM {schema}.tracks") == 4


@needs_postgres
async def test_times_at_the_edge_of_pythons_range_load_as_the_times_they_are(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    """.NET's DateTimeOffset.MinValue with a local offset is a real-world value; in UTC it
    is a day before Python's first (PostgreSQL holds it). asyncpg converts to UTC and
    raised OverflowError, which crashed the whole batch's send."""
    events = [track("m1", at="2024-01-15T09:00:00Z"),
              track("m2", at="0001-01-01T00:00:00+02:00"),
              track("m3", at="9999-12-31T23:30:00-01:00")]
    events[1]["originalTimestamp"] = "0001-01-01T00:00:00+02:00"
    assert await sender.send(events) == [DELIVERED] * 3
    assert (await columns(db, schema, "item_viewed"))["at"] == "timestamp with time zone"
    assert await db.fetch(f"SELECT id, at::text, original_timestamp::text FROM "
                          f"{schema}.item_viewed ORDER BY id") == [
        ("m1", "2024-01-15 09:00:00+00", None),
        ("m2", "0001-12-31 22:00:00+00 BC", "0001-12-31 22:00:00+00 BC"),
        ("m3", "10000-01-01 00:30:00+00", None)]


@needs_postgres
async def test_a_table_or_column_another_router_just_made_is_planned_again(
        sender: PostgresSender, db: asyncpg.Connection, schema: str) -> None:
    """Routers of one group share the warehouse. When another made the table first
    (``CREATE TABLE IF NOT EXISTS`` is then a no-op) without this batch's columns, or
    made a column with a type this batch's values do not fit, the batch plans again on
    the catalogue it re-read; it used to load without those values, or reject them."""
    await sender.send([track("m0", name="Other")])  # the sender's catalogue is now read
    await db.execute(  # as another router, between this one's reads
        f"CREATE TABLE {schema}.item_viewed (id text PRIMARY KEY, qty bigint)")
    assert await sender.send([track("m1", sku="a", qty="two")]) == [DELIVERED]
    assert await db.fetch(f"SELECT id, sku, qty FROM {schema}.item_viewed") == [
        ("m1", "a", "two")]
