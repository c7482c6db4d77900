"""The shared warehouse schema: Segment's names, flattening, tables, types and SQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from router import warehouse as ws
from router.warehouse import BIGINT, BOOLEAN, DOUBLE, TEXT, TIMESTAMP
from tests.destinations.samples import FULL, MINIMAL

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def rows_of(event: dict[str, Any], **kw: Any) -> dict[str, dict[str, Any]]:
    return dict(ws.event_rows(event, NOW, **kw))


# --- names -------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "snake"), [
    # go-snakecase's own test table
    ("sample text", "sample_text"), ("sample-text", "sample_text"),
    ("sample_text", "sample_text"), ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"), ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"), ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"), ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"), ("something.com", "something_com"),
    ("$something%", "something"), ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    # the Segment docs' examples
    ("orderId", "order_id"), ("Order Completed", "order_completed"),
    ("accountType", "account_type"), ("firstName", "first_name"),
    # a digit then a capital after a kept "_" starts a word (its loop's "idx--")
    ("sample_2Text", "sample__2text"),
])
def test_snake_case_matches_go_snakecase(raw: str, snake: str) -> None:
    assert ws.snake_case(raw) == snake


def test_identifiers_are_safe_sql_names() -> None:
    assert ws.identifier("2fa enabled") == "_2fa_enabled"
    assert re.fullmatch(r"_[0-9a-f]{8}", ws.identifier("価格"))
    assert ws.identifier("価格") != ws.identifier("数量")
    long_a, long_b = "a" * 70 + "X", "a" * 70 + "Y"
    assert len(ws.identifier(long_a)) == 63 and ws.identifier(long_a) != ws.identifier(long_b)
    assert ws.event_table("Users") == "_users"  # never one of the standard tables
    assert ws.event_table("Signed Up") == "signed_up"


def test_a_property_with_nothing_ascii_is_named_as_an_event_would_be() -> None:
    # "名前" hashes to d54d12f9: a bare hex name once, unlike the docs' "_" + 8 hex digits
    out: dict[str, Any] = {}
    ws.flatten({"名前": "x", "価格": 1, "meta": {"名前": "y"}}, "", out, reserved=ws.COMMON)
    assert out == {ws.identifier("名前"): "x", ws.identifier("価格"): 1, "meta_d54d12f9": "y"}
    assert all(re.fullmatch(r"_[0-9a-f]{8}", name) for name in list(out)[:2])
    assert ws.column_name("", "名前") == ws.event_table("名前") == "_d54d12f9"


@pytest.mark.parametrize("key", ["sample_2Text", "a_1B", "orderId", "2fa", "SAMPLE 2 TEXT"])
def test_a_property_is_snake_cased_once_as_go_snakecase_does(key: str) -> None:
    # go-snakecase keeps "sample_" and starts a word at "2T": "sample__2text"; cased a
    # second time it would become "sample_2text", unlike the event "sample_2Text"'s table
    out: dict[str, Any] = {}
    ws.flatten({key: 1}, "", out, reserved=ws.COMMON)
    assert list(out) == [ws.identifier(key)] == [ws.event_table(key)]


@given(st.text(max_size=80))
def test_any_key_becomes_a_valid_name(raw: str) -> None:
    assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", ws.identifier(raw))


def test_flatten_nests_with_underscores_arrays_as_json_and_drops_reserved() -> None:
    out: dict[str, Any] = {}
    ws.flatten({"userId": "x", "player": {"Name": "hls", "qualityLevel": {"max": 4}},
                "tags": ["a", {"b": 1}], "gone": None, "empty": {}, "context_x": 1,
                "orderId": "o-1"}, "", out, reserved=ws.COMMON)
    assert out == {"player_name": "hls", "player_quality_level_max": 4,
                   "tags": '["a",{"b":1}]', "order_id": "o-1"}


# --- rows --------------------------------------------------------------------------------

def test_track_goes_to_tracks_and_its_event_table() -> None:
    rows = rows_of(FULL[0])
    assert list(rows) == ["tracks", "order_completed"]
    tracks, order = rows["tracks"], rows["order_completed"]
    assert {k: tracks[k] for k in ("id", "user_id", "anonymous_id", "event", "event_text",
                                   "timestamp", "sent_at", "received_at",
                                   "original_timestamp", "uuid_ts")} == {
        "id": "msg-full-order", "user_id": "user-00042", "anonymous_id": "anon-4242424",
        "event": "order_completed", "event_text": "Order Completed",
        "timestamp": "2026-11-20T10:05:00.000Z", "sent_at": "2026-11-20T10:05:00.100Z",
        "received_at": "2026-11-20T10:05:00.300Z",
        "original_timestamp": "2026-11-20T10:04:59.800Z", "uuid_ts": NOW}
    assert tracks["context_app_version"] == "3.4.1"
    assert tracks["context_user_agent"].startswith("Mozilla/5.0")
    assert tracks["context_consent_category_preferences_analytics"] is True
    assert "total" not in tracks  # properties only in the event table
    assert order == {**tracks, "order_id": "ord-1001", "total": 63.5, "revenue": 55.0,
                     "shipping": 5.0, "tax": 3.5, "currency": "EUR", "coupon": "SPRING",
                     "products": orjson.dumps(FULL[0]["properties"]["products"]).decode()}
    assert list(rows_of(FULL[0], event_tables=False)) == ["tracks"]


def test_properties_named_like_standard_columns_are_dropped() -> None:
    event = {**MINIMAL[0], "properties": {"user_id": "spoof", "event": "x", "id": 1,
                                          "contextIp": "1.2.3.4", "plan": "pro"}}
    row = rows_of(event)["button_clicked"]
    assert (row["user_id"], row["event"], row["id"], row["plan"]) == (
        "user-00001", "button_clicked", "msg-min-track", "pro")
    assert "context_ip" not in row


def test_identify_writes_identifies_and_users() -> None:
    rows = rows_of(FULL[2])
    identify, user = rows["identifies"], rows["users"]
    assert identify["email"] == "Ada.Lovelace@example.com"
    assert identify["company_name"] == "Analytical Engines" and identify["logins"] == 17
    assert identify["context_ip"] == "203.0.113.7"
    assert user == {"id": "user-00042", "received_at": NOW,
                    "timestamp": "2026-11-20T10:07:00.000Z", "uuid_ts": NOW,
                    "email": "Ada.Lovelace@example.com", "first_name": "Ada",
                    "last_name": "Lovelace", "phone": "+44 20 7946 0000", "plan": "pro",
                    "company_name": "Analytical Engines", "company_id": "co-9",
                    "created_at": "2024-01-15T09:00:00Z", "logins": 17}
    anonymous = {"type": "identify", "anonymousId": "a-1", "messageId": "m",
                 "timestamp": "2026-11-20T10:00:00Z", "traits": {"plan": "free"}}
    assert list(rows_of(anonymous)) == ["identifies"]  # no userId: no users row


def test_page_screen_group_alias_rows() -> None:
    page = rows_of(FULL[3])["pages"]
    assert (page["name"], page["category"], page["title"], page["url"]) == (
        "Cart", "Shop", "Cart", "https://shop.example.com/cart?x=1")
    minimal_page = rows_of(MINIMAL[2])["pages"]
    assert (minimal_page["anonymous_id"], minimal_page["user_id"]) == ("anon-0000001", None)
    screen = rows_of({"type": "screen", "userId": 7, "name": "Home", "messageId": "s",
                      "timestamp": "2026-11-20T10:00:00Z", "properties": {"tab": 2}})
    assert screen["screens"]["user_id"] == "7" and screen["screens"]["tab"] == 2
    group = rows_of(FULL[4])["groups"]
    assert (group["group_id"], group["employees"], group["name"]) == ("co-9", 12,
                                                                      "Analytical Engines")
    alias = rows_of({"type": "alias", "userId": "new", "previousId": "old", "messageId": "a",
                     "timestamp": "2026-11-20T10:00:00Z"})
    assert alias["aliases"]["previous_id"] == "old"


def test_batch_rows_groups_by_table_and_rejects_events_without_a_key() -> None:
    tables, rejected = ws.batch_rows([*FULL, {"type": "track", "event": "X", "userId": "u"}],
                                     NOW)
    assert {t: [p for p, _ in rows] for t, rows in tables.items()} == {
        "tracks": [0, 1], "order_completed": [0], "video_played": [1], "identifies": [2],
        "users": [2], "pages": [3], "groups": [4]}
    assert rejected == {5: "no messageId: the warehouse primary key `id` needs one"}


def test_preview_shows_the_rows_each_event_writes_in_event_order() -> None:
    """For dry-run: the tables and columns, not the event as it came."""
    identify = {"type": "identify", "messageId": "m-1", "userId": "u-1",
                "timestamp": "2026-11-20T10:00:00Z", "traits": {"firstName": "Ada", "x": None}}
    track = {"type": "track", "event": "Order Completed", "messageId": "m-2",
             "properties": {"orderId": "o-1"}}
    shown = ws.preview([track, {"type": "page"}, identify], None)
    assert [entry.get("table") for entry in shown] == [
        "tracks", "order_completed", None, "identifies", "users"]
    assert shown[2] == {"rejected": "no messageId: the warehouse primary key `id` needs one"}
    assert shown[1]["row"]["order_id"] == "o-1" and shown[1]["row"]["event"] == "order_completed"
    user = shown[4]["row"]
    assert {k: user[k] for k in ("id", "timestamp", "first_name")} == {
        "id": "u-1", "timestamp": "2026-11-20T10:00:00Z", "first_name": "Ada"}
    assert "x" not in user and "anonymous_id" not in shown[3]["row"]  # nulls fill nothing
    assert isinstance(user["uuid_ts"], str)  # JSON-ready
    settings = type("S", (), {"event_tables": False})()
    assert [e["table"] for e in ws.preview([track], settings)] == ["tracks"]


def test_merge_users_keeps_the_latest_non_null_traits() -> None:
    rows = [{"id": "u", "timestamp": "2026-01-03T00:00:00Z", "plan": "pro"},
            {"id": "u", "timestamp": "2026-01-01T00:00:00Z", "plan": "free", "email": "e"},
            {"id": "v", "timestamp": "2026-01-02T00:00:00Z", "plan": "team"}]
    merged = {r["id"]: r for r in ws.merge_users(rows)}
    assert merged["u"] == {"id": "u", "timestamp": "2026-01-03T00:00:00Z", "plan": "pro",
                           "email": "e"}
    assert merged["v"]["plan"] == "team"


# --- types -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kind"), [
    (True, BOOLEAN), (3, BIGINT), (2**63, TEXT), (2.5, DOUBLE), ("x", TEXT),
    ("2024-01-15T09:00:00Z", TIMESTAMP), ("2024-01-15 09:00:00.123+01:00", TIMESTAMP),
    ("2024-13-45T09:00:00Z", TEXT), ("2024-01-15", TEXT), ('["a"]', TEXT),
])
def test_value_type(value: Any, kind: ws.ColumnType) -> None:
    assert ws.value_type(value) is kind


def test_widening_rules() -> None:
    assert ws.widen(BIGINT, DOUBLE) is DOUBLE and ws.widen(DOUBLE, BIGINT) is DOUBLE
    for other in (BOOLEAN, TIMESTAMP, TEXT):
        assert ws.widen(BIGINT, other) is TEXT
    assert ws.widen(BOOLEAN, TIMESTAMP) is TEXT
    assert ws.fits(3, DOUBLE) and ws.fits(3.0, BIGINT) and not ws.fits(3.5, BIGINT)
    assert not ws.fits(True, BIGINT) and not ws.fits("1", BIGINT) and ws.fits(1, TEXT)


def test_plan_for_a_new_table_has_standard_and_inferred_columns() -> None:
    rows = [r for _, r in ws.batch_rows([FULL[0]], NOW)[0]["order_completed"]]
    change = ws.plan("order_completed", rows, {}, 1000)
    assert list(change.add)[:10] == list(ws.TRACK_COLUMNS)
    assert (change.add["total"], change.add["currency"], change.add["products"]) == (
        DOUBLE, TEXT, TEXT)
    assert change.add["context_consent_category_preferences_analytics"] is BOOLEAN
    assert change.add["timestamp"] is TIMESTAMP and not change.widen and not change.left_out


def test_plan_widens_conflicts_and_never_standard_columns() -> None:
    known = {**ws.TRACK_COLUMNS, "qty": BIGINT, "ok": BOOLEAN, "at": TIMESTAMP, "n": BIGINT,
             "price": DOUBLE}
    rows = [{"qty": 2.5, "ok": "yes", "at": "soon", "n": 4.0, "price": 3, "new": 1,
             "timestamp": "not a time", "user_id": 5}]
    change = ws.plan("clicked", rows, known, 1000)
    assert change.widen == {"qty": DOUBLE, "ok": TEXT, "at": TEXT}
    assert change.add == {"new": BIGINT}
    # a batch mixing types for a new column gets their join
    assert ws.plan("t", [{"a": 1}, {"a": 1.5}, {"b": 1}, {"b": "x"}], {}, 1000).add["a"] \
        is DOUBLE
    assert ws.plan("t", [{"b": 1}, {"b": "x"}], {}, 1000).add["b"] is TEXT


def test_plan_leaves_out_columns_over_the_cap_by_name() -> None:
    known = dict(ws.TRACK_COLUMNS)  # 10 columns
    change = ws.plan("clicked", [{"d": 1, "b": 1, "c": 1, "a": 1}], known, 12)
    assert change.add == {"a": BIGINT, "b": BIGINT} and change.left_out == ["c", "d"]


def test_columnar_converts_to_the_column_types() -> None:
    rows = [{"a": 1, "b": True, "t": "2026-01-01T00:00:00Z", "f": 2, "s": 1.5},
            {"a": 2.0, "s": False, "x": "ignored"}]
    names, values = ws.columnar(rows, {"a": BIGINT, "b": BOOLEAN, "t": TIMESTAMP, "f": DOUBLE,
                                       "s": TEXT, "missing": TEXT})
    assert names == ["a", "b", "t", "f", "s"]
    assert values == [[1, 2], [True, None], [datetime(2026, 1, 1, tzinfo=UTC), None],
                      [2.0, None], ["1.5", "false"]]
    assert type(values[0][1]) is int and type(values[3][0]) is float


# --- SQL ---------------------------------------------------------------------------------

def test_sql_quotes_every_identifier() -> None:
    types = {k: k.value for k in ws.ColumnType}
    assert ws.namespace("my db", 'we"ird') == '"my db"."we""ird"'
    assert ws.create_table_sql('"ev"', "order", {"id": TEXT, "select": BIGINT}, types) == (
        'CREATE TABLE IF NOT EXISTS "ev"."order" ("id" text PRIMARY KEY, "select" bigint)')
    assert ws.add_column_sql('"ev"', "t", "from", DOUBLE, types) == (
        'ALTER TABLE "ev"."t" ADD COLUMN IF NOT EXISTS "from" double')
    assert ws.widen_sql('"ev"', "t", "n", TEXT, types) == (
        'ALTER TABLE "ev"."t" ALTER COLUMN "n" TYPE text USING CAST("n" AS text)')
    assert ws.insert_sql('"ev"', "tracks", ["id", "event"], "SELECT 1, 2") == (
        'INSERT INTO "ev"."tracks" ("id", "event") SELECT 1, 2 ON CONFLICT (id) DO NOTHING')
    assert ws.insert_sql('"ev"', "tracks", ["id"], "SELECT 1", on_conflict=False) == (
        'INSERT INTO "ev"."tracks" ("id") SELECT 1')


def test_users_insert_is_an_upsert_by_timestamp() -> None:
    sql = ws.insert_sql('"ev"', "users", ["id", "timestamp", "plan"], "SELECT 1")
    assert 'ON CONFLICT (id) DO UPDATE SET "timestamp" = GREATEST(' in sql
    assert ('"plan" = CASE WHEN excluded."timestamp" > "users"."timestamp" THEN '
            'COALESCE(excluded."plan", "users"."plan") ELSE '
            'COALESCE("users"."plan", excluded."plan") END') in sql
    # DuckDB's upsert (no index there: destinations.duckdb_set) selects the same values
    assert ws.user_values(["id", "timestamp", "plan"], "o", "n") == [
        ("timestamp", 'GREATEST(o."timestamp", n."timestamp")'),
        ("plan", 'CASE WHEN n."timestamp" > o."timestamp" THEN COALESCE(n."plan", o."plan") '
                 'ELSE COALESCE(o."plan", n."plan") END')]


@pytest.mark.parametrize(("data_type", "kind"), [
    ("bigint", BIGINT), ("INTEGER", BIGINT), ("smallint", BIGINT), ("double precision", DOUBLE),
    ("DOUBLE", DOUBLE), ("numeric", DOUBLE), ("DECIMAL(18,3)", DOUBLE), ("boolean", BOOLEAN),
    ("timestamp with time zone", TIMESTAMP), ("TIMESTAMP WITH TIME ZONE", TIMESTAMP),
    ("text", TEXT), ("VARCHAR", TEXT), ("jsonb", TEXT), ("interval", TEXT),
])
def test_catalog_types(data_type: str, kind: ws.ColumnType) -> None:
    assert ws.catalog_type(data_type) is kind


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.just(2**63),
                   st.floats(-3, 3, allow_nan=False), st.sampled_from([1.0, 2.5]),
                   st.sampled_from(["x", "", "2026-11-20T10:00:00Z", "2026-11-20"]))
ROWS = st.lists(st.dictionaries(st.sampled_from(["id", "a", "b", "c", "timestamp"]), VALUES,
                                max_size=5), min_size=1, max_size=6)  # no table without rows


@example([[{"a": 1}], [{"a": 2}], [{"a": 2**63}]], 13)  # a value that overflows bigint
@example([[{"b": "2026-11-20T10:00:00Z"}], [{"b": "2026-11-21T10:00:00Z"}], [{"b": "x"}]], 13)
@example([[{"c": 1}], [{"c": 2.5}], [{"c": 3}], [{"c": True}]], 13)
@settings(max_examples=300, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=6), st.integers(11, 13))
def test_known_tables_plan_as_if_every_row_were_planned(
        batches: list[list[dict[str, Any]]], max_columns: int) -> None:
    """Known.changes skips planning a table when nothing can change; the changes must be
    those of planning every row, batch after batch, as a loader applies them."""
    known = ws.Known(max_columns)
    known.columns = {}
    left_out: set[str] = set()
    for batch in [*batches, *batches]:
        got = [(t, e, c) for t, e, c, _ in known.changes({"tracks": list(enumerate(batch))})]
        columns = known.columns.get("tracks", {})
        change = ws.plan("tracks", batch, columns, max_columns)
        new_left_out = set(change.left_out) - left_out
        left_out |= new_left_out
        assert got == ([("tracks", bool(columns), change)]
                       if change.add or change.widen or new_left_out else [])
        if got:  # the loader applies the change and reads the table again
            known.columns = {"tracks": {**columns, **change.add, **change.widen}}
