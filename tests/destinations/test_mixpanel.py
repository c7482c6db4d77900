"""Mixpanel connector: import/engage encoding, $insert_id derivation, local rejections,
classification, and the HTTP path end to end against the contract fake."""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from destinations.base import Request, Response
from destinations.mixpanel import CONNECTOR, Settings, classify, encode, insert_id
from destinations.mixpanel_map import browser
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.mixpanel import MixpanelFake

ACCOUNT = {"service_account_username": "sa.router", "service_account_secret": "sa-secret",
           "project_id": "4242"}
TOKEN = "project-token"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp() * 1000)


def settings(**kw: Any) -> Settings:
    return Settings(**{**ACCOUNT, "project_token": TOKEN, **kw})


def body_of(request: Request) -> Any:
    raw = request.body
    if request.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    return orjson.loads(raw)


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Tested", "userId": "user-12345", "messageId": "m-1",
            "timestamp": "2026-11-20T10:00:00.000Z", **fields}


def imported(events: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    encoded = encode(events, settings(**kw))
    (request,) = [r for r in encoded.requests if "/import" in r.url]
    return body_of(request)


# --- encode -------------------------------------------------------------------------------


def test_minimal_events_split_into_import_and_engage() -> None:
    encoded = encode(MINIMAL, settings())
    assert encoded.rejected == {}
    imp, eng = encoded.requests
    assert imp.url == "https://api.mixpanel.com/import?strict=1&project_id=4242"
    assert imp.events == [0, 2]
    assert imp.headers["Authorization"] == "Basic " + base64.b64encode(
        b"sa.router:sa-secret").decode()
    assert imp.headers["Content-Encoding"] == "gzip"
    assert body_of(imp) == [
        {"event": "Button Clicked", "properties": {
            "$user_id": "user-00001", "time": ms("2026-11-20T10:00:00.000Z"),
            "distinct_id": "user-00001", "ip": "0", "$insert_id": "msg-min-track"}},
        {"event": "Loaded a Page", "properties": {
            "$device_id": "anon-0000001", "time": ms("2026-11-20T10:00:02.000Z"),
            "distinct_id": "anon-0000001", "ip": "0", "$insert_id": "msg-min-page"}},
    ]
    assert eng.url == "https://api.mixpanel.com/engage?verbose=1"
    assert eng.events == [1]
    assert "Authorization" not in eng.headers
    assert body_of(eng) == [{"$token": TOKEN, "$distinct_id": "user-00001", "$ip": "0",
                             "$set": {}}]


def test_full_track_carries_identity_context_and_properties() -> None:
    order, video, page = imported(FULL)
    props = order["properties"]
    assert order["event"] == "Order Completed"
    assert (props["distinct_id"], props["$user_id"], props["$device_id"]) == (
        "user-00042", "user-00042", "anon-4242424")
    assert props["time"] == ms("2026-11-20T10:05:00.000Z")
    assert props["$insert_id"] == "msg-full-order"
    assert props["ip"] == "203.0.113.7"
    assert props["revenue"] == 55.0 and props["products"][0]["sku"] == "SKU-1"
    assert {k: props[k] for k in ("$os", "$os_version", "$manufacturer", "$model",
                                  "$app_version_string", "$current_url", "$referrer",
                                  "utm_source", "utm_medium", "utm_campaign")} == {
        "$os": "iOS", "$os_version": "17.5", "$manufacturer": "Apple", "$model": "iPhone15,2",
        "$app_version_string": "3.4.1", "$current_url": "https://shop.example.com/cart?x=1",
        "$referrer": "https://www.example.org/", "utm_source": "newsletter",
        "utm_medium": "email", "utm_campaign": "spring"}
    assert "$device_id" not in video["properties"]  # no anonymousId on that event
    assert page["event"] == "Viewed Cart"
    assert (page["properties"]["name"], page["properties"]["category"]) == ("Cart", "Shop")


def test_context_becomes_default_properties_as_segment_maps_them() -> None:
    """Segment's Mixpanel (Actions) Track Event fields: context → Mixpanel defaults."""
    (order,) = imported(FULL[:1])
    props = order["properties"]
    assert {k: props.get(k) for k in (
        "$browser", "$browser_version", "$app_name", "$app_build_number", "$device_type",
        "$locale", "$lib_version", "mp_lib", "mp_country_code")} == {
        "$browser": "Chrome", "$browser_version": "126.0", "$app_name": "Shop",
        "$app_build_number": "341", "$device_type": "ios", "$locale": "en-GB",
        "$lib_version": "5.2.0", "mp_lib": "Segment: analytics.js",
        "mp_country_code": "United Kingdom"}
    ctx = {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148",
           "device": {"manufacturer": "Apple", "name": "Ada's phone",
                      "advertisingId": "ad-1"},
           "network": {"carrier": "O2", "wifi": True, "cellular": False},
           "screen": {"width": 390, "height": 844, "density": 3}, "groupId": "co-9",
           "campaign": {"term": "mugs", "content": "banner"}}
    (event,) = imported([track(context=ctx)])
    props = event["properties"]
    assert {k: props.get(k) for k in (
        "$browser", "$browser_version", "$device", "$device_name", "$ios_ifa", "$carrier",
        "$wifi_enabled", "$cellular_enabled", "$screen_width", "$screen_height",
        "$screen_density", "$group_id", "utm_term", "utm_content")} == {
        "$browser": "Mobile Safari", "$browser_version": "17.5", "$device": "Ada's phone",
        "$device_name": "Ada's phone", "$ios_ifa": "ad-1", "$carrier": "O2",
        "$wifi_enabled": True, "$cellular_enabled": False, "$screen_width": 390,
        "$screen_height": 844, "$screen_density": 3, "$group_id": "co-9",
        "utm_term": "mugs", "utm_content": "banner"}


@pytest.mark.parametrize(("user_agent", "vendor", "expected"), [
    ("Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36 "
     "Edg/126.0.2592.68", "", ("Microsoft Edge", "126.0")),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", "",
     ("Firefox", "127.0")),
    ("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15", "Apple",
     ("Safari", "17.4")),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "", ("Mobile Safari", "17.5")),
    ("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
     "Safari/605.1.15", "", ("Safari", "17.4")),
    ("Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile OPR/82.0",
     "", ("Opera", "82.0")),
    ("curl/8.5.0", "", (None, None)),
])
def test_browser_from_user_agent(user_agent: str, vendor: str,
                                 expected: tuple[str | None, str | None]) -> None:
    assert browser(user_agent, vendor) == expected


def test_full_identify_becomes_engage_set_and_group_a_groups_set() -> None:
    encoded = encode(FULL, settings(group_key="company_id"))
    eng, grp = (r for r in encoded.requests if "/import" not in r.url)
    assert (eng.url, eng.events) == ("https://api.mixpanel.com/engage?verbose=1", [2])
    (identify,) = body_of(eng)
    assert identify["$distinct_id"] == "user-00042" and identify["$ip"] == "203.0.113.7"
    assert identify["$set"] == {
        "$email": "Ada.Lovelace@example.com", "$first_name": "Ada", "$last_name": "Lovelace",
        "$phone": "+44 20 7946 0000", "plan": "pro",
        "company": {"name": "Analytical Engines", "id": "co-9"},
        "$created": "2024-01-15T09:00:00Z", "logins": 17}
    # Segment's Group Identify User: the group profile, not the user's, gets the traits
    assert (grp.url, grp.events) == ("https://api.mixpanel.com/groups?verbose=1", [4])
    assert "Content-Encoding" not in grp.headers and "Authorization" not in grp.headers
    assert body_of(grp) == [{"$token": TOKEN, "$group_key": "company_id", "$group_id": "co-9",
                             "$set": {"$name": "Analytical Engines", "industry": "Computing",
                                      "employees": 12,
                                      "website": "https://engines.example.com"}}]


def test_group_key_defaults_to_segments_and_a_trait_of_that_name_wins() -> None:
    group = {**FULL[4], "traits": {"$group_id": "legacy-7", "plan": "pro"}}
    (update,) = body_of(encode([group], settings()).requests[0])
    assert (update["$group_key"], update["$group_id"]) == ("$group_id", "legacy-7")
    (update,) = body_of(encode([FULL[4]], settings()).requests[0])
    assert (update["$group_key"], update["$group_id"]) == ("$group_id", "co-9")


def test_identify_traits_map_to_reserved_profile_properties_as_segment_does() -> None:
    identify = {**MINIMAL[1], "traits": {"username": "ada", "created": "2024-01-15",
                                         "name": "Ada L", "abc": 1}}
    (update,) = body_of(encode([identify], settings()).requests[0])
    assert update["$set"] == {"$username": "ada", "$created": "2024-01-15",
                              "$name": "Ada L", "abc": 1}


def test_oversized_profile_update_is_rejected_locally() -> None:
    big = {**MINIMAL[1], "traits": {"bio": "x" * 1_000_000}}
    encoded = encode([big, MINIMAL[1]], settings())
    assert "1 MB" in encoded.rejected[0] and [r.events for r in encoded.requests] == [[1]]


def test_screen_and_alias() -> None:
    screen = {**MINIMAL[2], "type": "screen", "name": "Home"}
    alias = {"type": "alias", "userId": "user-00042", "previousId": "anon-4242424",
             "messageId": "msg-alias", "timestamp": "2026-11-20T10:10:00.000Z"}
    unnamed = {**MINIMAL[2], "type": "screen", "messageId": "m-s2"}
    anonymous = {**alias, "userId": None, "anonymousId": "anon-9", "messageId": "m-a2"}
    s, a, u, b = imported([screen, alias, unnamed, anonymous])
    assert s["event"] == "Viewed Home" and s["properties"]["name"] == "Home"
    assert u["event"] == "Loaded a Screen"  # no name for Segment's "Viewed {name}"
    assert a["event"] == "$create_alias"
    assert (a["properties"]["distinct_id"], a["properties"]["alias"]) == (
        "anon-4242424", "user-00042")
    assert a["properties"]["token"] == TOKEN  # Mixpanel's $create_alias requires it
    assert (b["properties"]["distinct_id"], b["properties"]["alias"]) == (
        "anon-4242424", "anon-9")  # Segment: userId, else anonymousId


def test_insert_id_is_message_id_or_a_deterministic_uuid5() -> None:
    assert insert_id("msg-min-track") == "msg-min-track"
    assert insert_id("29fc2962-6d9c-455d-95ad-95b84f09b9e4") == (
        "29fc2962-6d9c-455d-95ad-95b84f09b9e4")
    derived = "derived-" + "a" * 40  # what decode() makes when messageId is missing
    for unfit in (derived, "has_underscore", "x" * 37, "null", "dots.and:colons"):
        value = insert_id(unfit)
        assert value != unfit and len(value) == 36 and uuid.UUID(value).version == 5
        assert value == insert_id(unfit)  # stable across re-sends
    assert insert_id("a_b") != insert_id("a-b_")
    (e,) = imported([track(messageId=derived)])
    assert e["properties"]["$insert_id"] == insert_id(derived)


def test_auth_modes_and_hosts() -> None:
    secret = encode(MINIMAL[:1], Settings(api_secret="s3cret")).requests[0]
    assert secret.url == "https://api.mixpanel.com/import?strict=1"
    assert secret.headers["Authorization"] == "Basic " + base64.b64encode(b"s3cret:").decode()
    token = encode(MINIMAL[:1], Settings(project_token="tok", region="eu")).requests[0]
    assert token.url == "https://api-eu.mixpanel.com/import?strict=1"
    assert token.headers["Authorization"] == "Basic " + base64.b64encode(b"tok:").decode()
    assert encode(MINIMAL[:1], settings(region="in")).requests[0].url.startswith(
        "https://api-in.mixpanel.com/import?")
    assert encode(MINIMAL[:1], settings(api_host="http://h:1/")).requests[0].url.startswith(
        "http://h:1/import?strict=1")
    plain = encode(MINIMAL[:1], settings(gzip=False)).requests[0]
    assert "Content-Encoding" not in plain.headers and orjson.loads(plain.body)[0]["event"]
    with pytest.raises(ValidationError, match="service account needs"):
        Settings(service_account_username="sa", project_token="t")
    with pytest.raises(ValidationError, match="set a service account"):
        Settings()


def test_local_rejections_have_reasons() -> None:
    events = [track(userId="null"), track(timestamp="1970-06-01T00:00:00.000Z"),
              track(properties={f"p{i}": i for i in range(250)}), track(),
              {**MINIMAL[1]}, {**FULL[4]}]
    encoded = encode(events, settings(project_token=None))
    assert set(encoded.rejected) == {0, 1, 2, 4, 5}
    assert "distinct_id 'null'" in encoded.rejected[0]
    assert "1971" in encoded.rejected[1]
    assert "fewer than 255" in encoded.rejected[2]
    assert "project_token" in encoded.rejected[4]
    assert "project_token" in encoded.rejected[5]
    assert [r.events for r in encoded.requests] == [[3]]


# --- classify -----------------------------------------------------------------------------


FIVE = [track(messageId=f"m-{i}") for i in range(5)]
IMPORT = encode(FIVE, settings()).requests[0]
ENGAGE = encode([MINIMAL[1]] * 3, settings()).requests[0]
ENGAGE_ONE = encode([MINIMAL[1]], settings()).requests[0]
GROUPS = encode([FULL[4]] * 2, settings(group_key="company_id")).requests[0]


def response(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(status, CIMultiDict(headers or {}), raw)


@pytest.mark.parametrize(("request_", "resp", "expected"), [
    (IMPORT, response(200, {"code": 200, "num_records_imported": 5, "status": "OK"}),
     DELIVERED),
    (IMPORT, response(413, {"code": 413, "error": "request exceeds max limit of 10485760 "
                            "bytes", "status": "Request Entity Too Large"}), Split),
    (IMPORT, response(429, b"", {"Retry-After": "3"}), Retry("HTTP 429", 3.0)),
    (IMPORT, response(429), Retry("HTTP 429", None)),
    (IMPORT, response(502), Retry("HTTP 502", None)),
    (IMPORT, response(401, {"error": "Invalid credentials"}), Rejected),
    (IMPORT, response(400, {"code": 400, "error": "bad json", "status": "Bad Request"}),
     Rejected),
    (ENGAGE, response(200, {"status": 1, "error": None}), DELIVERED),
    (ENGAGE, response(200, b"1"), DELIVERED),
    # "one or more" updates are bad, which is not said: halve to find them
    (ENGAGE, response(200, {"status": 0, "error": "$token, invalid or missing"}), Split),
    (ENGAGE, response(200, b"0"), Split),
    (ENGAGE_ONE, response(200, b"0"), Rejected),
    (GROUPS, response(200, {"status": 0, "error": "$group_key, missing or empty"}), Split),
    (GROUPS, response(200, {"status": 1, "error": None}), DELIVERED),
    (ENGAGE, response(429), Retry("HTTP 429", None)),
])
def test_classify_table(request_: Request, resp: Response, expected: Outcome | type) -> None:
    outcome = classify(resp, request_)
    if isinstance(expected, type):
        assert isinstance(outcome, expected), outcome
    else:
        assert outcome == expected


def test_classify_400_rejects_exactly_the_failed_records() -> None:
    body = {"code": 400, "error": "some data points in the request failed validation",
            "failed_records": [
                {"index": 1, "$insert_id": "m-1", "field": "properties.time",
                 "message": "'properties.time' is invalid"},
                {"index": 4, "insert_id": "m-4", "field": "properties.utm_source",
                 "message": "string should be valid utf8"},
                {"index": 9, "field": "x", "message": "outside the request"}],
            "num_records_imported": 3, "status": "Bad Request"}
    outcome = classify(response(400, body), IMPORT)
    assert isinstance(outcome, Partial)
    assert set(outcome.rejected) == {1, 4} and outcome.retry == {}
    assert "properties.time" in outcome.rejected[1]
    assert "valid utf8" in outcome.rejected[4]


# --- end to end against the fake ----------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[MixpanelFake]:
    async with MixpanelFake(token=TOKEN) as server:
        assert isinstance(server, MixpanelFake)
        yield server


async def send(fake: MixpanelFake, events: list[dict[str, Any]], **kw: Any) -> list[Outcome]:
    auth = {} if kw.pop("no_account", False) else ACCOUNT
    config = {**auth, "project_token": TOKEN, "api_host": fake.url, **kw}
    return await send_once(CONNECTOR, Settings(**config), events)


async def test_e2e_delivers_minimal_and_full(fake: MixpanelFake) -> None:
    outcomes = await send(fake, [*MINIMAL, *FULL], group_key="company_id")
    assert outcomes == [DELIVERED] * 8
    assert [e["properties"]["$insert_id"] for e in fake.received] == [
        "msg-min-track", "msg-min-page", "msg-full-order", "msg-full-video", "msg-full-page"]
    assert [p["$distinct_id"] for p in fake.profiles] == ["user-00001", "user-00042"]
    assert [(g["$group_key"], g["$group_id"]) for g in fake.groups] == [("company_id", "co-9")]
    assert fake.encodings == ["gzip"]


async def test_e2e_engage_status_0_is_split_not_the_whole_batch_rejected(
        fake: MixpanelFake) -> None:
    identifies = [{**MINIMAL[1], "userId": f"user-{i}", "messageId": f"m-{i}"}
                  for i in range(3)]
    fake.fail_next(200, {"status": 0, "error": "one bad update"}, path="/engage")
    assert await send(fake, identifies) == [DELIVERED] * 3
    assert sorted(p["$distinct_id"] for p in fake.profiles) == ["user-0", "user-1", "user-2"]


@pytest.mark.parametrize("auth", [{"api_secret": "project-secret"},
                                  {"project_token": TOKEN}, {"gzip": False}])
async def test_e2e_other_auth_modes_and_plain_bodies(fake: MixpanelFake,
                                                     auth: dict[str, Any]) -> None:
    no_account = "gzip" not in auth
    assert await send(fake, MINIMAL[:1], no_account=no_account, **auth) == [DELIVERED]
    assert len(fake.received) == 1
    assert fake.encodings == ["identity" if "gzip" in auth else "gzip"]


async def test_e2e_wrong_credentials_are_rejected(fake: MixpanelFake) -> None:
    outcomes = await send(fake, MINIMAL[:1], service_account_secret="wrong")
    assert isinstance(outcomes[0], Rejected) and "401" in outcomes[0].reason
    assert fake.received == []


async def test_e2e_partial_400_rejects_only_failed_records(fake: MixpanelFake) -> None:
    events = [track(messageId=f"m-{i}") for i in range(4)]
    events[2]["properties"] = {"blob": "x" * 1_100_000}  # Mixpanel: an event must be < 1 MB
    outcomes = await send(fake, events)
    assert outcomes[0] == outcomes[1] == outcomes[3] == DELIVERED
    assert isinstance(outcomes[2], Rejected) and "1MB" in outcomes[2].reason
    assert [e["properties"]["$insert_id"] for e in fake.received] == ["m-0", "m-1", "m-3"]


async def test_e2e_413_splits_until_requests_fit(fake: MixpanelFake) -> None:
    blob = "y" * 900_000
    events = [track(messageId=f"m-{i}", properties={"blob": blob}) for i in range(12)]
    outcomes = await send(fake, events)
    assert outcomes == [DELIVERED] * 12
    assert len(fake.received) == 12
    assert len(fake.requests) == 3  # 10.8 MB refused, then two halves


async def test_e2e_more_than_2000_events_split(fake: MixpanelFake) -> None:
    events = [track(messageId=f"m-{i}") for i in range(2001)]
    assert await send(fake, events) == [DELIVERED] * 2001
    assert len(fake.received) == 2001 and len(fake.requests) == 3


@pytest.mark.parametrize(("status", "body"), [
    (429, {"code": 429, "error": "too many requests", "status": "Too Many Requests"}),
    (503, b"unavailable")])
async def test_e2e_import_outage_retries_while_engage_delivers(
        fake: MixpanelFake, status: int, body: Any) -> None:
    fake.fail_next(status, body, path="/import")
    outcomes = await send(fake, MINIMAL)
    assert isinstance(outcomes[0], Retry) and isinstance(outcomes[2], Retry)
    assert outcomes[1] == DELIVERED  # identify went through /engage
    assert fake.received == [] and len(fake.profiles) == 1
    assert await send(fake, [MINIMAL[0], MINIMAL[2]]) == [DELIVERED] * 2


async def test_e2e_engage_refusal_rejects_identifies_only(fake: MixpanelFake) -> None:
    outcomes = await send(fake, MINIMAL, project_token="not-the-token")
    assert outcomes[0] == outcomes[2] == DELIVERED  # import authenticates with the account
    assert isinstance(outcomes[1], Rejected) and "$token" in outcomes[1].reason
    assert fake.profiles == []


async def test_fake_refuses_what_mixpanel_refuses(fake: MixpanelFake) -> None:
    good = {"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "u",
                                         "$insert_id": "abc-1"}}
    bad = [{"event": "e", "properties": {"distinct_id": "u", "$insert_id": "a"}},
           {"event": "e", "properties": {"time": 1, "distinct_id": "u", "$insert_id": "a"}},
           {"event": "e", "properties": {"time": 1_700_000_000, "$insert_id": "a"}},
           {"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "undefined",
                                         "$insert_id": "a"}},
           {"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "u",
                                         "$insert_id": "has_underscore"}},
           {"properties": {"time": 1_700_000_000, "distinct_id": "u", "$insert_id": "a"}},
           {"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "u",
                                         "$insert_id": "a", "cart": {"items": list(range(255))}}},
           {"event": "e", "properties": {"time": 1_700_000_000, "distinct_id": "u",
                                         "$insert_id": "a", "o": {str(i): i for i in range(255)}}}]
    basic = "Basic " + base64.b64encode(b"sa.router:sa-secret").decode()
    async with aiohttp.ClientSession() as session:
        async def post(query: str, body: Any, auth: str = basic) -> tuple[int, Any]:
            async with session.post(f"{fake.url}/import?{query}", data=orjson.dumps(body),
                                    headers={"Authorization": auth,
                                             "Content-Type": "application/json"}) as resp:
                return resp.status, await resp.json(content_type=None)

        status, body = await post("strict=1&project_id=4242", [good, *bad])
        assert status == 400 and body["num_records_imported"] == 1
        assert [r["index"] for r in body["failed_records"]] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert [r["field"] for r in body["failed_records"]] == [
            "properties.time", "properties.time", "properties.distinct_id",
            "properties.distinct_id", "properties.$insert_id", "event", "properties",
            "properties"]
        assert (await post("strict=0&project_id=4242", [good]))[0] == 400
        assert (await post("strict=1&project_id=999", [good]))[0] == 401
        assert (await post("strict=1", [good], "Basic " + base64.b64encode(
            b"project-secret:").decode()))[0] == 200
        assert (await post("strict=1&project_id=4242", {"event": "e"}))[0] == 400

        async def update(path: str, body: Any) -> Any:
            async with session.post(f"{fake.url}/{path}?verbose=1", data=orjson.dumps(body),
                                    headers={"Content-Type": "application/json"}) as resp:
                return (await resp.json(content_type=None))["status"]

        group = {"$token": TOKEN, "$group_key": "company_id", "$group_id": "co-9", "$set": {}}
        assert await update("groups", [group]) == 1
        assert await update("groups", [{**group, "$group_key": ""}]) == 0
        assert await update("groups", [{**group, "$group_id": 9}]) == 0
        assert await update("engage", [{"$token": TOKEN, "$distinct_id": "u",
                                        "$set": {"bio": "x" * 1_100_000}}]) == 0
    assert len(fake.received) == 2 and len(fake.groups) == 1 and fake.profiles == []
