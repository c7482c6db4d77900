"""Amplitude connector: encode mapping, local rejections, classification, and the HTTP
path end to end against the contract fake."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from destinations.amplitude import CONNECTOR, Settings, classify, encode
from destinations.base import Request, Response
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.amplitude import AmplitudeFake

KEY = "amp-test-key"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp() * 1000)


def settings(**kw: Any) -> Settings:
    return Settings(api_key=KEY, **kw)


def native(events: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    encoded = encode(events, settings(**kw))
    assert len(encoded.requests) == 1
    return orjson.loads(encoded.requests[0].body)["events"]


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Tested", "userId": "user-12345", "messageId": "m-1",
            "timestamp": "2026-11-20T10:00:00.000Z", **fields}


# --- encode -------------------------------------------------------------------------------


def test_minimal_events_map_to_exact_native_events() -> None:
    encoded = encode(MINIMAL, settings())
    assert encoded.rejected == {}
    (request,) = encoded.requests
    assert request.url == "https://api2.amplitude.com/2/httpapi"
    assert request.headers["Content-Type"] == "application/json"
    assert request.events == [0, 1, 2]
    body = orjson.loads(request.body)
    assert body["api_key"] == KEY
    assert "options" not in body
    assert body["events"] == [
        {"event_type": "Button Clicked", "user_id": "user-00001",
         "time": ms("2026-11-20T10:00:00.000Z"), "insert_id": "msg-min-track",
         "event_properties": {}},
        {"event_type": "$identify", "user_id": "user-00001",
         "time": ms("2026-11-20T10:00:01.000Z"), "insert_id": "msg-min-identify",
         "user_properties": {"$set": {}}},
        {"event_type": "Loaded a Page", "device_id": "anon-0000001",
         "time": ms("2026-11-20T10:00:02.000Z"), "insert_id": "msg-min-page",
         "event_properties": {}},
    ]


def test_full_order_completed_carries_identity_context_and_revenue() -> None:
    order = native(FULL)[0]
    assert order["event_type"] == "Order Completed"
    assert order["user_id"] == "user-00042"
    assert order["device_id"] == "dev-8a6c5f"  # context.device.id wins over anonymousId
    assert order["time"] == ms("2026-11-20T10:05:00.000Z")  # timestamp, not originalTimestamp
    assert order["insert_id"] == "msg-full-order"
    assert order["revenue"] == 55.0
    assert order["revenueType"] == "Purchase"
    assert "price" not in order and "quantity" not in order
    assert order["event_properties"]["products"][1]["name"] == "Teapot"
    assert order["event_properties"]["order_id"] == "ord-1001"
    assert {k: order[k] for k in ("ip", "platform", "os_name", "os_version", "device_model",
                                  "device_manufacturer", "app_version", "library", "language",
                                  "country", "city")} == {
        "ip": "203.0.113.7", "platform": "Web", "os_name": "iOS", "os_version": "17.5",
        "device_model": "iPhone15,2", "device_manufacturer": "Apple", "app_version": "3.4.1",
        "library": "analytics.js/5.2.0", "language": "en-GB", "country": "United Kingdom",
        "city": "London"}


def test_full_identify_page_and_group() -> None:
    events = native(FULL)
    identify, page, group = events[2], events[3], events[4]
    assert identify["event_type"] == "$identify"
    assert identify["user_properties"] == {"$set": FULL[2]["traits"]}
    assert "event_properties" not in identify
    assert page["event_type"] == "Viewed Shop Cart Page"
    assert page["event_properties"]["name"] == "Cart"
    assert page["event_properties"]["url"] == "https://shop.example.com/cart?x=1"
    assert group["event_type"] == "$identify"
    assert group["groups"] == {"[Segment] Group": "co-9"}
    assert [e["insert_id"] for e in events] == [e["messageId"] for e in FULL]


def test_page_and_screen_names() -> None:
    screen = {**MINIMAL[2], "type": "screen", "name": "Home"}
    page = {**MINIMAL[2], "name": "Pricing"}
    assert [e["event_type"] for e in native([screen, page, MINIMAL[2]])] == [
        "Viewed Home Screen", "Viewed Pricing Page", "Loaded a Page"]
    generic = native([screen, page], track_named_pages=False)
    assert [e["event_type"] for e in generic] == ["Loaded a Screen", "Loaded a Page"]


def test_revenue_fields_from_properties() -> None:
    (e,) = native([track(properties={"price": 9.5, "quantity": 3, "product_id": "p-1",
                                     "revenueType": "Refund", "revenue": -28.5})])
    assert (e["price"], e["quantity"], e["productId"], e["revenueType"], e["revenue"]) == (
        9.5, 3, "p-1", "Refund", -28.5)
    (order,) = native([track(event="Order Completed", properties={"total": 20})])
    assert order["revenue"] == 20 and order["revenueType"] == "Purchase"
    (plain,) = native([track(properties={"total": 20, "revenue": "12"})])
    assert "revenue" not in plain  # a string is not a number; not an Order Completed


def test_settings_region_endpoint_options_and_device_preference() -> None:
    assert encode(MINIMAL, settings(region="eu")).requests[0].url == (
        "https://api.eu.amplitude.com/2/httpapi")
    assert encode(MINIMAL, settings(endpoint="http://x/2/httpapi")).requests[0].url == (
        "http://x/2/httpapi")
    body = orjson.loads(encode(MINIMAL, settings(min_id_length=3)).requests[0].body)
    assert body["options"] == {"min_id_length": 3}
    (e,) = native([FULL[0]], prefer_anonymous_id_for_device_id=True)
    assert e["device_id"] == "anon-4242424"


def test_local_rejections_have_reasons() -> None:
    events = [track(userId="42", anonymousId=None), track(),
              {"type": "alias", "userId": "user-12345", "previousId": "anon-12345",
               "messageId": "m-3", "timestamp": "2026-11-20T10:00:00.000Z"},
              track(userId=None, anonymousId="anon-12345", context={"device": {"id": "d1"}})]
    encoded = encode(events, settings())
    assert set(encoded.rejected) == {0, 2, 3}
    assert "user_id '42' is shorter than 5" in encoded.rejected[0]
    assert "alias" in encoded.rejected[2]
    assert "device_id 'd1'" in encoded.rejected[3]
    assert encoded.requests[0].events == [1]
    relaxed = encode(events[:1], settings(min_id_length=2))
    assert relaxed.rejected == {} and orjson.loads(relaxed.requests[0].body)["events"][0][
        "user_id"] == "42"


def test_all_zero_device_id_is_not_sent() -> None:
    # Amplitude (HTTP V2, "All-zero device IDs") drops an all-zero device_id and fails the
    # request: anonymousId stands in for it, or the event goes with its user_id alone.
    zeros = {"device": {"id": "00000000-0000-0000-0000-000000000000"}}
    with_anon, user_only = native([track(anonymousId="anon-12345", context=zeros),
                                   track(context=zeros)])
    assert with_anon["device_id"] == "anon-12345"
    assert "device_id" not in user_only and user_only["user_id"] == "user-12345"
    rejected = encode([track(userId=None, anonymousId="0000-0000", context=zeros)], settings())
    assert "device_id" in rejected.rejected[0]


def test_platform_uses_segment_spelling() -> None:
    # Segment's Amplitude destination writes device types as Amplitude's platforms.
    events = [track(context={"device": {"type": kind}}) for kind in ("ios", "Android", "tv")]
    assert [e["platform"] for e in native(events)] == ["iOS", "Android", "tv"]


def test_all_rejected_means_no_request() -> None:
    encoded = encode([track(userId="1")], settings())
    assert encoded.requests == [] and list(encoded.rejected) == [0]


# --- classify -----------------------------------------------------------------------------


def request_for(events: list[dict[str, Any]]) -> Request:
    return encode(events, settings()).requests[0]


def response(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(status, CIMultiDict(headers or {}), raw)


FIVE = [track(messageId=f"m-{i}", userId=f"user-{i:05}") for i in range(5)]


@pytest.mark.parametrize(("resp", "expected"), [
    (response(200, {"code": 200, "events_ingested": 5}), DELIVERED),
    (response(413, {"code": 413, "error": "Payload too large"}), Split),
    (response(429, {"code": 429, "throttled_users": {"user-00001": 31}}),
     Retry("HTTP 429: Amplitude throttled a user or device", 30.0)),
    (response(429, b"", {"Retry-After": "7"}),
     Retry("HTTP 429: Amplitude throttled a user or device", 7.0)),
    (response(500), Retry("HTTP 500", None)),
    (response(503), Retry("HTTP 503", None)),
    (response(501), Rejected),
    (response(401), Rejected),
    (response(400, {"code": 400, "error": "Invalid API key: nope"}), Rejected),
    (response(400, {"code": 400, "error": "x", "events_with_invalid_fields": {"time": [99]}}),
     Rejected),  # an index outside the request names no event: the whole request is bad
])
def test_classify_table(resp: Response, expected: Outcome | type) -> None:
    outcome = classify(resp, request_for(FIVE))
    if isinstance(expected, type):
        assert isinstance(outcome, expected), outcome
    else:
        assert outcome == expected


def test_classify_400_rejects_named_and_retries_the_rest() -> None:
    body = {"code": 400, "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"time": [3]},
            "events_with_missing_fields": {"event_type": [0]},
            "events_with_invalid_id_lengths": {"user_id": [3]},
            "silenced_events": [1]}
    outcome = classify(response(400, body), request_for(FIVE))
    assert isinstance(outcome, Partial)
    assert set(outcome.rejected) == {0, 1, 3}
    assert "missing field `event_type`" in outcome.rejected[0]
    assert "silenced" in outcome.rejected[1]
    assert "invalid field `time`" in outcome.rejected[3]
    assert set(outcome.retry) == {2, 4}
    assert "not ingested" in outcome.retry[2]


def test_classify_429_rejects_users_over_daily_quota() -> None:
    body = {"code": 429, "error": "Too many requests for some devices and users",
            "exceeded_daily_quota_users": {"user-00002": 500200}, "throttled_events": [0]}
    outcome = classify(response(429, body), request_for(FIVE))
    assert isinstance(outcome, Partial)
    assert list(outcome.rejected) == [2] and "daily" in outcome.rejected[2]
    assert set(outcome.retry) == {0, 1, 3, 4} and outcome.after_s == 30.0


# --- end to end against the fake ----------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[AmplitudeFake]:
    async with AmplitudeFake(KEY) as server:
        assert isinstance(server, AmplitudeFake)
        yield server


async def send(fake: AmplitudeFake, events: list[dict[str, Any]], **kw: Any) -> list[Outcome]:
    settings = Settings(api_key=kw.pop("api_key", KEY), endpoint=fake.endpoint, **kw)
    return await send_once(CONNECTOR, settings, events)


ALIAS = {"type": "alias", "userId": "user-00042", "previousId": "anon-4242424",
         "messageId": "msg-alias", "timestamp": "2026-11-20T10:10:00.000Z"}


async def test_e2e_delivers_minimal_and_full(fake: AmplitudeFake) -> None:
    outcomes = await send(fake, [*MINIMAL, *FULL, ALIAS])
    assert outcomes[:8] == [DELIVERED] * 8
    assert isinstance(outcomes[8], Rejected) and "alias" in outcomes[8].reason
    assert [e["insert_id"] for e in fake.received] == [
        e["messageId"] for e in [*MINIMAL, *FULL]]
    assert fake.received[3]["revenue"] == 55.0


async def test_e2e_short_ids_pass_with_min_id_length(fake: AmplitudeFake) -> None:
    outcomes = await send(fake, [track(userId="u42")], min_id_length=3)
    assert outcomes == [DELIVERED]
    assert fake.received[0]["user_id"] == "u42"


async def test_e2e_partial_400_rejects_named_and_resends_the_rest(fake: AmplitudeFake) -> None:
    events = [track(messageId=f"m-{i}", userId=f"user-{i:05}",
                    context={"device": {"id": f"device-{i}"}}) for i in range(4)]
    fake.silence("device-2")
    outcomes = await send(fake, events)
    assert isinstance(outcomes[2], Rejected) and "silenced" in outcomes[2].reason
    assert all(isinstance(outcomes[i], Retry) for i in (0, 1, 3))
    assert fake.received == []  # Amplitude ingests nothing from a 400 request
    retried = [events[i] for i in (0, 1, 3)]
    assert await send(fake, retried) == [DELIVERED] * 3
    assert [e["insert_id"] for e in fake.received] == ["m-0", "m-1", "m-3"]


async def test_e2e_413_splits_until_requests_fit(fake: AmplitudeFake) -> None:
    fake.fail_next(413, {"code": 413, "error": "Payload too large"})
    events = [track(messageId=f"m-{i}") for i in range(12)]
    outcomes = await send(fake, events)
    assert outcomes == [DELIVERED] * 12
    assert len(fake.received) == 12
    assert len(fake.requests) == 3  # refused whole, then the two halves


async def test_e2e_oversized_batch_is_split_before_sending(fake: AmplitudeFake) -> None:
    big = "x" * 100_000
    events = [track(messageId=f"m-{i}", properties={"blob": big}) for i in range(12)]
    outcomes = await send(fake, events)
    assert outcomes == [DELIVERED] * 12
    assert len(fake.received) == 12
    assert all(len(body) < 1_000_000 for _, body in fake.requests)  # never sent too large


async def test_e2e_more_than_2000_events_split(fake: AmplitudeFake) -> None:
    events = [track(messageId=f"m-{i}") for i in range(2001)]
    outcomes = await send(fake, events)
    assert outcomes == [DELIVERED] * 2001
    assert len(fake.received) == 2001 and len(fake.requests) == 3


async def test_e2e_single_event_over_1mb_is_rejected(fake: AmplitudeFake) -> None:
    outcomes = await send(fake, [track(properties={"blob": "x" * 1_100_000})])
    assert isinstance(outcomes[0], Rejected) and "single event" in outcomes[0].reason


@pytest.mark.parametrize(("status", "body"), [
    (429, {"code": 429, "error": "Too many requests for some devices and users",
           "throttled_users": {"user-00001": 40}}),
    (503, b"unavailable"), (500, b"")])
async def test_e2e_throttling_and_outages_retry(fake: AmplitudeFake, status: int,
                                                body: Any) -> None:
    fake.fail_next(status, body)
    outcomes = await send(fake, copy.deepcopy(MINIMAL))
    assert all(isinstance(o, Retry) for o in outcomes), outcomes
    if status == 429:
        assert {o.after_s for o in outcomes if isinstance(o, Retry)} == {30.0}
    assert fake.received == []
    assert await send(fake, MINIMAL) == [DELIVERED] * 3


async def test_e2e_wrong_api_key_is_rejected(fake: AmplitudeFake) -> None:
    outcomes = await send(fake, MINIMAL, api_key="not-the-key")
    assert all(isinstance(o, Rejected) and "Invalid API key" in o.reason for o in outcomes)
    assert fake.received == []


async def test_fake_refuses_what_amplitude_refuses(fake: AmplitudeFake) -> None:
    """The fake is strict: unvalidated payloads are refused with Amplitude's bodies."""
    async with aiohttp.ClientSession() as session:
        async def post(body: Any, content_type: str = "application/json") -> tuple[int, Any]:
            async with session.post(fake.endpoint, data=orjson.dumps(body),
                                    headers={"Content-Type": content_type}) as resp:
                return resp.status, await resp.json(content_type=None)

        status, body = await post({"api_key": KEY, "events": [
            {"event_type": "a", "user_id": "abc"}, {"user_id": "user-1"},
            {"event_type": "b", "device_id": "device-1", "time": "soon"}]})
        assert status == 400
        assert body["events_with_invalid_id_lengths"] == {"user_id": [0]}
        assert body["events_with_missing_fields"] == {"event_type": [1]}
        assert body["events_with_invalid_fields"] == {"time": [2]}
        status, body = await post({"api_key": KEY, "events": []})
        assert (status, body["missing_field"]) == (400, "events")
        status, _ = await post({"api_key": KEY, "events": [{"event_type": "a",
                                                            "user_id": "user-1"}]}, "text/plain")
        assert status == 400
        status, body = await post({"api_key": KEY, "events": [
            {"event_type": "a", "user_id": "user-1"}]})
        assert (status, body["events_ingested"]) == (200, 1)
    assert len(fake.received) == 1
