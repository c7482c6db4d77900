"""BigQuery connector: Segment's warehouse rows as insertAll requests, per-row errors,
service-account JWT auth — end to end against the strict fake."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict
from pydantic import ValidationError

from destinations.base import Request, Response
from destinations.bigquery import CONNECTOR, Settings, authenticate, classify, encode
from router.config import Config
from router.delivery.http import HttpSender
from router.delivery.outcome import DELIVERED, Delivered, Partial, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.bigquery import BigQueryFake

API = "https://bigquery.googleapis.com/bigquery/v2/projects/acme/datasets/segment/tables"
EMAIL = "router@acme.iam.gserviceaccount.com"


def pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


PRIVATE, PUBLIC = pem_pair()
KEY = {"type": "service_account", "project_id": "acme", "private_key_id": "kid-1",
       "private_key": PRIVATE, "client_email": EMAIL,
       "token_uri": "https://oauth2.googleapis.com/token"}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"project": "acme", "dataset": "segment",
                              "service_account_json": orjson.dumps(KEY).decode()}
    return Settings.model_validate({**values, **overrides})


def body(request: Request) -> Any:
    return orjson.loads(request.body)


def response(status: int, payload: Any = b"") -> Response:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(status, CIMultiDict(), raw)


def google_error(code: int, reason: str, message: str = "m") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": "X",
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}


# --- settings and encode -----------------------------------------------------------------

def test_connector_declaration_and_settings() -> None:
    assert (CONNECTOR.name, CONNECTOR.display_name) == ("bigquery", "Google BigQuery")
    limits = CONNECTOR.limits
    assert (limits.default_events, limits.max_events, limits.max_bytes) == (500, 50_000,
                                                                            10_000_000)
    assert CONNECTOR.authenticate is authenticate and CONNECTOR.classify is classify
    assert "PRIVATE KEY" not in repr(settings())
    with pytest.raises(ValueError, match="one of"):
        Settings.model_validate({"project": "p", "dataset": "d"})
    with pytest.raises(ValueError, match="not JSON"):
        settings(service_account_json="{nope")
    with pytest.raises(ValueError, match="client_email"):
        settings(service_account_json='{"private_key": "k"}')


def test_batches_are_500_rows_unless_set_and_may_be_larger() -> None:
    """500 rows a request is Google's recommendation, 50,000 its limit: a config may raise
    the batch above 500 (it used to be refused), not above 50,000."""
    def destination(batch: dict[str, int]) -> Any:
        return Config.model_validate({"destinations": [{
            "name": "bq", "type": "bigquery", "batch": batch, "settings": {
                "project": "acme", "dataset": "segment",
                "service_account_json": orjson.dumps(KEY).decode()}}]}).destinations[0]

    assert destination({}).max_events == 500
    assert destination({"max_events": 2000}).max_events == 2000
    with pytest.raises(ValidationError, match="above the bigquery limit of 50000"):
        destination({"max_events": 60_000})


def test_minimal_events_one_request_per_table() -> None:
    encoded = encode(MINIMAL, settings())
    assert encoded.rejected == {}
    by_table = {r.url.removeprefix(API + "/").removesuffix("/insertAll"): r
                for r in encoded.requests}
    assert sorted(by_table) == ["button_clicked", "identifies", "pages", "tracks", "users"]
    tracks = by_table["tracks"]
    assert tracks.headers == {"Content-Type": "application/json"}  # token: authenticate
    assert tracks.events == [0]
    payload = body(tracks)
    assert (payload["kind"], payload["skipInvalidRows"], payload["ignoreUnknownValues"]) == (
        "bigquery#tableDataInsertAllRequest", True, True)
    [row] = payload["rows"]
    assert row["insertId"] == "msg-min-track"
    assert {k: row["json"][k] for k in ("id", "user_id", "event", "event_text", "timestamp")} \
        == {"id": "msg-min-track", "user_id": "user-00001", "event": "button_clicked",
            "event_text": "Button Clicked", "timestamp": "2026-11-20T10:00:00.000Z"}
    assert row["json"]["received_at"] == row["json"]["uuid_ts"]  # no receivedAt: load time
    [user] = body(by_table["users"])["rows"]
    assert (user["insertId"], user["json"]["id"], by_table["users"].events) == (
        "msg-min-identify", "user-00001", [1])
    [page] = body(by_table["pages"])["rows"]
    assert (page["json"]["anonymous_id"], by_table["pages"].events) == ("anon-0000001", [2])


def test_full_track_flattens_properties_and_context() -> None:
    encoded = encode(FULL, settings(ignore_unknown_values=False))
    order = next(r for r in encoded.requests if "/order_completed/" in r.url)
    assert body(order)["ignoreUnknownValues"] is False
    [row] = body(order)["rows"]
    data = row["json"]
    assert (data["order_id"], data["total"], data["currency"]) == ("ord-1001", 63.5, "EUR")
    assert orjson.loads(data["products"])[0]["sku"] == "SKU-1"
    assert (data["context_app_version"], data["context_device_type"]) == ("3.4.1", "ios")
    assert data["sent_at"] == "2026-11-20T10:05:00.100Z"
    tracks = next(r for r in encoded.requests if r.url.endswith("/tracks/insertAll"))
    assert tracks.events == [0, 1] and "total" not in body(tracks)["rows"][0]["json"]
    assert not any("/order_completed/" in r.url
                   for r in encode(FULL, settings(event_tables=False)).requests)


def test_rows_get_loaded_at_and_times_bigquery_parses() -> None:
    """Segment's BigQuery tables have `loaded_at` (BigQuery only; its `_view` de-duplicates
    by it), and a TIMESTAMP must be BigQuery's canonical text (at most 6 decimals, `Z` or
    `+HH:MM`): valid ISO-8601 times the router accepts but BigQuery would not parse are
    rewritten in UTC, canonical ones are sent as they came."""
    event = {"type": "track", "event": "Order Completed", "userId": "u", "messageId": "m",
             "timestamp": "2026-11-20T10:00:00.123456789Z",
             "sentAt": "2026-11-20T12:00:01+0200", "originalTimestamp": "20261120T100000Z",
             "receivedAt": "2026-11-20 10:00:02.5+01:00", "properties": {"total": 1}}
    encoded = encode([event], settings())
    for request in encoded.requests:
        [row] = body(request)["rows"]
        data = row["json"]
        assert data["loaded_at"] == data["uuid_ts"]
        assert (data["timestamp"], data["sent_at"], data["original_timestamp"],
                data["received_at"]) == (
            "2026-11-20T10:00:00.123456Z", "2026-11-20T10:00:01.000000Z",
            "2026-11-20T10:00:00.000000Z", "2026-11-20 10:00:02.5+01:00")
    [identify] = body(encode([MINIMAL[1]], settings()).requests[0])["rows"]
    assert "loaded_at" in identify["json"]


def test_requests_stay_under_ten_megabytes() -> None:
    events = [{"type": "track", "event": "Blob", "userId": "u", "messageId": f"m{i}",
               "timestamp": "2026-11-20T10:00:00Z", "properties": {"data": "x" * 30_000}}
              for i in range(500)]
    events.append({**events[0], "messageId": "huge", "properties": {"data": "x" * 10_100_000}})
    encoded = encode(events, settings())
    assert "over BigQuery's 10 MB request limit" in encoded.rejected[500]
    blobs = [r for r in encoded.requests if "/blob/" in r.url]
    assert len(blobs) == 2 and all(len(r.body) <= 10_000_000 for r in blobs)
    assert [p for r in blobs for p in r.events] == list(range(500))
    assert [row["insertId"] for r in blobs for row in body(r)["rows"]] == [
        f"m{i}" for i in range(500)]


# --- classify ----------------------------------------------------------------------------

REQUEST = Request(f"{API}/tracks/insertAll", b"{}", [7, 8, 9])


@pytest.mark.parametrize(("status", "payload", "expected"), [
    (200, {"kind": "bigquery#tableDataInsertAllResponse"}, DELIVERED),
    (200, {"kind": "k", "insertErrors": [{"index": 1, "errors": [
        {"reason": "invalid", "location": "total", "message": "Cannot convert"}]}]},
     Partial(rejected={1: "invalid: Cannot convert (total)"})),
    (200, {"insertErrors": [{"index": 0, "errors": [{"reason": "stopped", "message": ""}]},
                            {"index": 2, "errors": [{"reason": "backendError", "message": "x"}]}]},
     Partial(retry={0: "stopped:", 2: "backendError: x"})),
    (401, google_error(401, "unauthorized"), Retry("HTTP 401 unauthorized: m", reauth=True)),
    (403, google_error(403, "rateLimitExceeded"), Retry("HTTP 403 rateLimitExceeded: m")),
    # quotaExceeded: "wait 10 minutes or longer before trying the operation again"
    (403, google_error(403, "quotaExceeded"), Retry("HTTP 403 quotaExceeded: m", 600.0)),
    (200, {"insertErrors": [{"index": 1, "errors": [{"reason": "quotaExceeded", "message": "q"}]},
                            {"index": 0, "errors": [{"reason": "invalid", "message": "i"},
                                                    {"reason": "stopped", "message": ""}]}]},
     Partial(rejected={0: "invalid: i; stopped:"}, retry={1: "quotaExceeded: q"})),
    (404, google_error(404, "notFound", "Not found: Table acme:segment.tracks"),
     Rejected("HTTP 404 notFound: Not found: Table acme:segment.tracks (create the table "
              "first)")),
    (413, b"Request Entity Too Large", Split("HTTP 413: Request Entity Too Large")),
])
def test_classify(status: int, payload: Any, expected: Any) -> None:
    assert classify(response(status, payload), REQUEST) == expected


def test_a_413_for_one_row_is_retried_not_dead_lettered() -> None:
    """Requests are kept under 10 MB, and Google documents a 413 from the legacy streaming
    API for its throughput quota too: a single row is retried (halving cannot help it)."""
    one = Request(f"{API}/tracks/insertAll", b"{}", [3])
    assert classify(response(413, b"Request Entity Too Large"), one) == Retry(
        "HTTP 413: Request Entity Too Large")


@pytest.mark.parametrize(("status", "kind"), [(403, Rejected), (400, Rejected),
                                              (429, Retry), (500, Retry), (503, Retry)])
def test_classify_other_statuses(status: int, kind: type) -> None:
    assert isinstance(classify(response(status, google_error(status, "accessDenied")),
                               REQUEST), kind)


# --- end to end against the fake ---------------------------------------------------------

def field(name: str, kind: str = "STRING", mode: str = "NULLABLE") -> dict[str, str]:
    return {"name": name, "type": kind, "mode": mode}


COMMON = [field("id", mode="REQUIRED"), field("anonymous_id"), field("user_id"),
          field("timestamp", "TIMESTAMP"), field("sent_at", "TIMESTAMP"),
          field("received_at", "TIMESTAMP"), field("original_timestamp", "TIMESTAMP"),
          field("uuid_ts", "TIMESTAMP"), field("loaded_at", "TIMESTAMP"), field("context_ip"),
          field("context_app_version")]
TRACKS = [*COMMON, field("event"), field("event_text")]
TABLES = {
    "tracks": TRACKS,
    "order_completed": [*TRACKS, field("order_id"), field("total", "FLOAT"),
                        field("products", "JSON"), field("quantity", "INTEGER")],
    "video_played": [*TRACKS, field("position_s", "INTEGER"), field("muted", "BOOLEAN")],
    "identifies": [*COMMON, field("email"), field("logins", "INTEGER"),
                   field("created_at", "TIMESTAMP")],
    "users": [field("id", mode="REQUIRED"), field("received_at", "TIMESTAMP"),
              field("timestamp", "TIMESTAMP"), field("uuid_ts", "TIMESTAMP"),
              field("loaded_at", "TIMESTAMP"), field("email")],
    "pages": [*COMMON, field("name"), field("category"), field("title")],
    "groups": [*COMMON, field("group_id"), field("employees", "INTEGER")],
}


@pytest.fixture
async def fake() -> AsyncIterator[BigQueryFake]:
    async with BigQueryFake(PUBLIC, EMAIL, "kid-1", "acme", "segment", TABLES) as server:
        yield server  # type: ignore[misc]


def fake_settings(fake: BigQueryFake, **overrides: Any) -> Settings:
    return settings(endpoint=fake.url + "/bigquery/v2", token_url=fake.token_url, **overrides)


async def send(fake: BigQueryFake, events: list[dict[str, Any]],
               sender: HttpSender | None = None, **overrides: Any) -> list[Any]:
    return await send_once(CONNECTOR, fake_settings(fake, **overrides), events, sender)


async def test_authenticate_signs_a_jwt_the_token_endpoint_accepts(fake: BigQueryFake) -> None:
    async with aiohttp.ClientSession() as session:
        credentials = await authenticate(session, fake_settings(fake))
    token = credentials.headers["Authorization"].removeprefix("Bearer ")
    assert token in fake.tokens and 3500 < credentials.expires_at - time.time() <= 3600
    [(header, claims)] = fake.assertions  # verified with the public key by the fake
    assert (header["alg"], header["kid"]) == ("RS256", "kid-1")
    assert (claims["iss"], claims["aud"], claims["exp"] - claims["iat"]) == (
        EMAIL, fake.token_url, 3600)
    assert claims["scope"] == "https://www.googleapis.com/auth/bigquery.insertdata"


async def test_a_key_file_works_like_inline_json(fake: BigQueryFake, tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_bytes(orjson.dumps(KEY))
    assert await send(fake, FULL[:1], service_account_json=None,
                      service_account_file=str(key_file)) == [DELIVERED]


async def test_a_key_the_account_does_not_have_fails_authentication() -> None:
    _, other_public = pem_pair()
    async with BigQueryFake(other_public, EMAIL, "kid-1", "acme", "segment", TABLES) as fake:
        outcomes = await send(fake, MINIMAL[:1])  # type: ignore[arg-type]
        assert isinstance(outcomes[0], Retry)
        assert "invalid_grant" in outcomes[0].reason or "Invalid JWT" in outcomes[0].reason
        assert fake.received == []


async def test_e2e_rows_land_in_their_tables_once(fake: BigQueryFake) -> None:
    assert await send(fake, FULL) == [DELIVERED] * 5
    assert {t: len(rows) for t, rows in fake.rows.items()} == {
        "tracks": 2, "order_completed": 1, "video_played": 1, "identifies": 1, "users": 1,
        "pages": 1, "groups": 1}
    [order] = fake.rows["order_completed"]
    assert (order["id"], order["total"], order["event"], order["context_ip"]) == (
        "msg-full-order", 63.5, "order_completed", "203.0.113.7")
    assert fake.rows["video_played"][0]["muted"] is False
    user = fake.rows["users"][0]
    assert user == {"id": "user-00042", "email": "Ada.Lovelace@example.com",
                    "received_at": user["received_at"], "timestamp": "2026-11-20T10:07:00.000Z",
                    "uuid_ts": user["uuid_ts"], "loaded_at": user["uuid_ts"]}
    assert {r["insertId"] for r in fake.received if r["table"] == "tracks"} == {
        "msg-full-order", "msg-full-video"}
    assert await send(fake, FULL) == [DELIVERED] * 5  # redelivery: insertIds de-duplicate
    assert len(fake.rows["tracks"]) == 2 and len(fake.rows["users"]) == 1


async def test_e2e_a_row_bigquery_refuses_rejects_only_its_event(fake: BigQueryFake) -> None:
    events = [{"type": "track", "event": "Order Completed", "userId": "u", "messageId": f"o{i}",
               "timestamp": "2026-11-20T10:00:00Z", "properties": {"total": 10 + i}}
              for i in range(4)]
    events[2]["properties"]["total"] = "lots"
    outcomes = await send(fake, events)
    assert [type(o) for o in outcomes] == [Delivered, Delivered, Rejected, Delivered]
    assert "Cannot convert value to float" in outcomes[2].reason
    assert "(total)" in outcomes[2].reason
    assert [r["id"] for r in fake.rows["order_completed"]] == ["o0", "o1", "o3"]


async def test_e2e_valid_iso_times_bigquery_would_not_parse_load(fake: BigQueryFake) -> None:
    """`+0000` offsets and nanoseconds pass the router's checks; BigQuery's TIMESTAMP text
    allows neither: sent as they came, the rows were refused and dead-lettered."""
    events = [{"type": "track", "event": "Order Completed", "userId": "u", "messageId": "t1",
               "timestamp": "2026-11-20T10:00:00.123456789Z",
               "sentAt": "2026-11-20T10:00:01+0000", "properties": {"total": 3}},
              {"type": "identify", "userId": "u", "messageId": "t2",
               "timestamp": "20261120T100000Z", "traits": {"email": "u@example.com"}}]
    assert await send(fake, events) == [DELIVERED, DELIVERED]
    [order] = fake.rows["order_completed"]
    assert (order["timestamp"], order["sent_at"]) == ("2026-11-20T10:00:00.123456Z",
                                                      "2026-11-20T10:00:01.000000Z")
    assert fake.rows["users"][0]["timestamp"] == "2026-11-20T10:00:00.000000Z"


async def test_e2e_unknown_columns_are_ignored_or_rejected(fake: BigQueryFake) -> None:
    event = {"type": "track", "event": "Order Completed", "userId": "u", "messageId": "x",
             "timestamp": "2026-11-20T10:00:00Z", "properties": {"brand_new": 1, "total": 2}}
    assert await send(fake, [event]) == [DELIVERED]
    assert fake.rows["order_completed"][0]["total"] == 2
    strict = await send(fake, [{**event, "messageId": "y"}], ignore_unknown_values=False)
    assert isinstance(strict[0], Rejected) and "no such field: brand_new" in strict[0].reason


async def test_e2e_a_missing_table_rejects_with_a_reason(fake: BigQueryFake) -> None:
    event = {"type": "track", "event": "Signed Up", "userId": "u", "messageId": "s",
             "timestamp": "2026-11-20T10:00:00Z"}
    [outcome] = await send(fake, [event])
    assert isinstance(outcome, Rejected)
    assert "Not found: Table acme:segment.signed_up" in outcome.reason
    assert await send(fake, [event], event_tables=False) == [DELIVERED]


async def test_e2e_quota_exceeded_waits_ten_minutes(fake: BigQueryFake) -> None:
    fake.fail_next(403, google_error(403, "quotaExceeded", "Quota exceeded: streaming"),
                   times=10, path="/bigquery/v2/projects/acme/datasets/segment/tables/tracks/"
                   "insertAll")
    [outcome] = await send(fake, MINIMAL[:1], event_tables=False)
    assert isinstance(outcome, Retry) and outcome.after_s == 600


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_e2e_rate_limits_and_server_errors_retry(fake: BigQueryFake, status: int) -> None:
    fake.fail_next(status, google_error(status, "backendError"), times=10)
    outcomes = await send(fake, MINIMAL)
    assert all(isinstance(o, Retry) for o in outcomes)
    assert all(not rows for rows in fake.rows.values())


async def test_e2e_an_expired_token_is_refreshed_once(fake: BigQueryFake) -> None:
    sender = HttpSender(CONNECTOR, fake_settings(fake))
    await sender.start()
    try:
        assert await send(fake, FULL[:1], sender) == [DELIVERED]
        fake.expire_tokens()
        assert await send(fake, [{**FULL[0], "messageId": "again"}], sender) == [DELIVERED]
        assert len(fake.rows["order_completed"]) == 2
        assert fake.token_requests == 2
    finally:
        await sender.close()
