"""Google Analytics 4 (Measurement Protocol): mapping, local validation, and delivery
against the contract fake (which, like GA4, answers 204 to everything and records what
the real server would drop in ``.invalid``)."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
import yaml
from pydantic import ValidationError

from destinations.base import Request, Response, classify_http
from destinations.ga4 import CONNECTOR, Settings, encode
from router.delivery.outcome import DELIVERED, Delivered, Rejected, Retry
from router.events import iso
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.ga4 import GA4Fake

NOW = datetime.now(UTC)


def recent(events: list[dict[str, Any]], minutes_ago: int = 60) -> list[dict[str, Any]]:
    """The samples, re-dated to the last hour (GA4 refuses events older than 72 h)."""
    out = copy.deepcopy(events)
    for i, event in enumerate(out):
        event["timestamp"] = iso(NOW - timedelta(minutes=minutes_ago - i))
    return out


def settings(**overrides: Any) -> Settings:
    return Settings(measurement_id="G-TEST12345", api_secret="test-secret", **overrides)


def track(name: str, properties: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "anonymousId": "anon-1", "userId": "user-1",
            "messageId": f"m-{name}", "timestamp": iso(NOW - timedelta(minutes=5)),
            "properties": properties or {}, **extra}


def bodies(events: list[dict[str, Any]], s: Settings | None = None
           ) -> tuple[list[dict[str, Any]], dict[int, str], list[list[int]]]:
    encoded = encode(events, s or settings())
    return ([orjson.loads(r.body) for r in encoded.requests], encoded.rejected,
            [r.events for r in encoded.requests])


def micros(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1_000_000)


# --- encode: identity and mapping ---------------------------------------------------------

def test_minimal_events_default_identity() -> None:
    events = recent(MINIMAL)
    payloads, rejected, positions = bodies(events)
    assert set(rejected) == {0, 1}
    assert "no client_id at anonymousId" in rejected[0]  # only a userId: no client id
    assert "no client_id at anonymousId" in rejected[1]
    assert positions == [[2]]
    assert payloads == [{
        "client_id": "anon-0000001", "timestamp_micros": micros(events[2]),
        "events": [{"name": "page_view", "params": {"engagement_time_msec": 1},
                    "timestamp_micros": micros(events[2])}]}]


def test_user_id_as_a_configured_client_id_fallback() -> None:
    events = recent(MINIMAL)
    payloads, rejected, _ = bodies(events, settings(client_id_paths=["anonymousId", "userId"]))
    assert set(rejected) == {1}
    first = payloads[0]
    assert (first["client_id"], first["user_id"]) == ("user-00001", "user-00001")
    assert first["events"][0]["name"] == "button_clicked"


def test_client_id_path_from_context_traits_wins() -> None:
    event = track("Clicked", context={"traits": {"ga_client_id": "123.456"}})
    payloads, _, _ = bodies([event], settings(
        client_id_paths=["context.traits.ga_client_id", "anonymousId"]))
    assert payloads[0]["client_id"] == "123.456"


def test_full_order_completed_becomes_purchase() -> None:
    events = recent(FULL)
    payloads, _, positions = bodies(events)
    assert positions[0] == [0, 3]  # same client, user and consent: one request
    body = payloads[0]
    assert (body["client_id"], body["user_id"]) == ("anon-4242424", "user-00042")
    assert "consent" not in body  # no consent mapping configured
    purchase = body["events"][0]
    assert purchase["name"] == "purchase"
    assert purchase["timestamp_micros"] == micros(events[0])
    assert purchase["params"] == {
        "transaction_id": "ord-1001", "value": 63.5, "currency": "EUR", "tax": 3.5,
        "shipping": 5.0, "coupon": "SPRING", "engagement_time_msec": 1,
        "items": [
            {"item_id": "sku-1", "item_name": "Mug", "price": 12.5, "quantity": 2,
             "item_category": "Kitchen"},
            {"item_id": "sku-2", "item_name": "Teapot", "price": 30.0, "quantity": 1,
             "item_category": "Kitchen"}]}


def test_full_page_becomes_page_view() -> None:
    events = recent(FULL)
    payloads, _, _ = bodies(events)
    page = payloads[0]["events"][1]
    assert page["name"] == "page_view"
    assert page["timestamp_micros"] == micros(events[3])
    assert page["params"] == {
        "page_location": "https://shop.example.com/cart?x=1", "page_title": "Cart",
        "page_referrer": "https://www.example.org/", "path": "/cart",
        "engagement_time_msec": 1}


def test_page_falls_back_to_context_page_and_name() -> None:
    event = {"type": "page", "anonymousId": "a", "name": "Home", "messageId": "p",
             "timestamp": iso(NOW), "context": {"page": {"url": "https://x.example/"}}}
    payloads, _, _ = bodies([event])
    assert payloads[0]["events"][0]["params"] == {
        "page_location": "https://x.example/", "page_title": "Home", "engagement_time_msec": 1}


@pytest.mark.parametrize(("segment", "properties", "name", "params"), [
    ("Products Searched", {"query": "blue mug"}, "search", {"search_term": "blue mug"}),
    ("Product Viewed", {"product_id": "p1", "name": "Mug", "price": 5, "quantity": 2},
     "view_item", {"currency": "USD", "value": 10,
                   "items": [{"item_id": "p1", "item_name": "Mug", "price": 5, "quantity": 2}]}),
    ("Product Added", {"sku": "S1", "price": 3.5, "currency": "EUR"}, "add_to_cart",
     {"currency": "EUR", "value": 3.5, "items": [{"item_id": "S1", "price": 3.5}]}),
    ("Product Removed", {"name": "Mug"}, "remove_from_cart", {"items": [{"item_name": "Mug"}]}),
    ("Checkout Started", {"order_id": "o1", "value": 20, "products": [{"product_id": "p"}]},
     "begin_checkout", {"currency": "USD", "value": 20, "items": [{"item_id": "p"}]}),
    ("Signed Up", {"method": "google"}, "sign_up", {"method": "google"}),
    ("Logged In", {"method": "email", "plan": "pro"}, "login", {"method": "email", "plan": "pro"}),
])
def test_ecommerce_spec_maps_to_recommended_events(
        segment: str, properties: dict[str, Any], name: str, params: dict[str, Any]) -> None:
    payloads, rejected, _ = bodies([track(segment, properties)])
    assert rejected == {}
    assert payloads[0]["events"][0]["name"] == name
    assert payloads[0]["events"][0]["params"] == {**params, "engagement_time_msec": 1}


def test_custom_event_name_and_flattened_params() -> None:
    video = recent(FULL)[1] | {"anonymousId": "anon-7"}
    payloads, rejected, _ = bodies([video], settings(engagement_time_msec=0))
    assert rejected == {}
    assert payloads[0]["events"][0]["name"] == "video_played"
    assert payloads[0]["events"][0]["params"] == {
        "video_id": "v-77", "position_s": 12, "muted": "false", "player_name": "hls",
        "player_quality": "1080p", "tags": "a,b"}


def test_identify_sends_user_properties_without_pii() -> None:
    events = recent(FULL)
    payloads, rejected, positions = bodies(events, settings(identify_event="identify"))
    assert 2 not in rejected
    body = payloads[positions.index([2])]
    assert body["user_properties"] == {
        "plan": {"value": "pro"}, "company_name": {"value": "Analytical Engines"},
        "company_id": {"value": "co-9"}, "createdAt": {"value": "2024-01-15T09:00:00Z"},
        "logins": {"value": 17}}
    assert body["timestamp_micros"] == micros(events[2])
    assert [e["name"] for e in body["events"]] == ["identify"]


def test_identify_with_only_pii_traits_is_rejected() -> None:
    event = {"type": "identify", "anonymousId": "a", "messageId": "i", "timestamp": iso(NOW),
             "traits": {"email": "x@example.com"}}
    _, rejected, _ = bodies([event], settings(identify_event="identify"))
    assert "no traits" in rejected[0]


def test_group_screen_alias() -> None:
    base = {"anonymousId": "a", "messageId": "x", "timestamp": iso(NOW)}
    events = [{"type": "group", "groupId": "co-9", **base}, {"type": "screen", **base},
              {"type": "alias", "previousId": "old", **base},
              {"type": "identify", "traits": {"plan": "pro"}, **base}]
    payloads, rejected, _ = bodies(events)
    assert payloads[0]["events"][0]["name"] == "join_group"
    assert payloads[0]["events"][0]["params"]["group_id"] == "co-9"
    assert "no screen call" in rejected[1] and "no alias call" in rejected[2]
    assert rejected[3] == "GA4 has no identify call (see identify_event)"
    # a group call without groupId never reaches a connector: decode dead-letters it


# --- encode: local validation (GA4 itself answers 2xx and drops silently) -----------------

@pytest.mark.parametrize(("event", "reason"), [
    (track("123 Start"), "breaks GA4's rules"),
    (track("Session Start"), "'session_start' is reserved"),
    (track("first_visit"), "reserved"),
    (track("Firebase Sync"), "'firebase_sync' is reserved"),
    (track("ga custom"), "reserved"),
    (track("x" * 41), "at most 40 characters"),
    (track("Big", {f"p{i}": i for i in range(26)}), "26 params"),
    (track("Long", {"note": "n" * 101}), "101 characters; GA4's limit is 100"),
    (track("Prefixed", {"google_id": "1"}), "'google_id' is reserved"),
    (track("Digit", {"9lives": "1"}), "breaks GA4's rules"),
    (track("Nested", {"rows": [{"a": 1}]}), "list of objects"),
    (track("Order Completed", {"products": [{"price": 1}]}), "product without"),
    (track("Order Completed", {"products": [{"name": "n" * 101}]}), "over 100 characters"),
    (track("Ok", userId="u" * 257), "userId is over 256"),
    (track("Old", timestamp=iso(NOW - timedelta(hours=73))), "over 72 h old"),
    ({"type": "page", "anonymousId": "a", "messageId": "p", "timestamp": iso(NOW),
      "properties": {"url": "https://x/" + "a" * 1000}}, "GA4's limit is 1000"),
])
def test_local_rejections(event: dict[str, Any], reason: str) -> None:
    _, rejected, _ = bodies([event])
    assert reason in rejected.get(0, "")


def test_limits_at_the_boundary_are_accepted() -> None:
    events = [track("x" * 40, {f"p{i}": "v" * 100 for i in range(24)}),
              {"type": "page", "anonymousId": "a", "messageId": "p", "timestamp": iso(NOW),
               "properties": {"url": "https://x/" + "a" * 990}},
              track("Recent", timestamp=iso(NOW - timedelta(hours=71)))]
    _, rejected, _ = bodies(events)
    assert rejected == {}


def test_twenty_five_properties_fit_without_our_engagement_time() -> None:
    """GA4 keeps 25 params; the engagement_time_msec we add must not push an event to 26."""
    payloads, rejected, _ = bodies([track("Full", {f"p{i}": i for i in range(25)})])
    assert rejected == {}
    params = payloads[0]["events"][0]["params"]
    assert len(params) == 25 and "engagement_time_msec" not in params
    payloads, _, _ = bodies([track("Room", {f"p{i}": i for i in range(24)})])
    assert payloads[0]["events"][0]["params"]["engagement_time_msec"] == 1


def test_a_body_of_exactly_130_000_bytes_is_too_big() -> None:
    """The post body "must be smaller than 130kB": 129,999 bytes go, 130,000 do not."""
    s = settings(engagement_time_msec=0)

    def event(count: int, pad: int) -> dict[str, Any]:
        products = [{"product_id": f"p{j:04}", "name": "n" * 100} for j in range(count)]
        return track("Sized", {"pad_a": "a" * min(pad, 100), "pad_b": "b" * max(pad - 100, 0),
                               "products": products})

    def size(e: dict[str, Any]) -> int:  # the body's length, sent or (from the reason) not
        encoded = encode([e], s)
        return len(encoded.requests[0].body) if encoded.requests else int(
            encoded.rejected[0].split("-byte")[0])

    def sized(target: int) -> dict[str, Any]:
        per_product = size(event(2, 0)) - size(event(1, 0))  # < 200: two pads fill any gap
        count = (target - size(event(0, 0))) // per_product
        while size(event(count, 0)) > target:
            count -= 1
        exact = event(count, target - size(event(count, 0)))
        assert size(exact) == target
        return exact

    assert encode([sized(129_999)], s).rejected == {}
    assert "130 kB" in encode([sized(130_000)], s).rejected[0]


@pytest.mark.parametrize(("traits", "reason"), [
    ({"plan": "p" * 37}, "GA4's limit is 36"),
    ({"a_very_long_trait_name_xx": 1}, "at most 24 characters"),
    ({"first_open_time": 1}, "reserved"),
    ({f"t{i}": i for i in range(26)}, "26 user propertys"),
])
def test_user_property_limits(traits: dict[str, Any], reason: str) -> None:
    event = {"type": "identify", "anonymousId": "a", "messageId": "i", "timestamp": iso(NOW),
             "traits": traits}
    _, rejected, _ = bodies([event], settings(identify_event="identify"))
    assert reason in rejected[0]


def test_settings_cannot_raise_the_age_limit_and_forbid_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        settings(max_event_age_h=100)
    with pytest.raises(ValidationError):
        settings(api_key="x")
    assert "test-secret" not in repr(settings())


# --- encode: requests ----------------------------------------------------------------------

def test_url_carries_measurement_id_and_secret_and_endpoint_is_overridable() -> None:
    eu = "https://region1.google-analytics.com/mp/collect"
    for endpoint in (None, eu):
        s = settings(endpoint=endpoint) if endpoint else settings()
        request = encode([track("A")], s).requests[0]
        url = urlsplit(request.url)
        assert f"{url.scheme}://{url.netloc}{url.path}" == (
            endpoint or "https://www.google-analytics.com/mp/collect")
        assert parse_qs(url.query) == {"measurement_id": ["G-TEST12345"],
                                       "api_secret": ["test-secret"]}
        assert request.headers["Content-Type"] == "application/json"


def test_batch_is_grouped_per_client_and_chunked_by_25() -> None:
    events = []
    for i in range(33):
        client = "b" if i % 11 == 0 else "a"
        events.append(track(f"E{i}") | {"anonymousId": client, "messageId": f"m{i}"})
    payloads, rejected, positions = bodies(events)
    assert rejected == {}
    by_client = [(p["client_id"], len(p["events"])) for p in payloads]
    assert by_client == [("b", 3), ("a", 25), ("a", 5)]
    assert positions[0] == [0, 11, 22]
    assert sorted(p for ps in positions for p in ps) == list(range(33))
    for payload, pos in zip(payloads, positions, strict=True):
        assert [e["name"] for e in payload["events"]] == [f"e{i}" for i in pos]


def test_different_users_of_one_client_go_in_separate_requests() -> None:
    events = [track("A"), track("B", userId="user-2"), track("C")]
    payloads, _, positions = bodies(events)
    assert positions == [[0, 2], [1]]
    assert [p["user_id"] for p in payloads] == ["user-1", "user-2"]


def test_consent_mapping() -> None:
    s = settings(ad_user_data_category="Advertising", ad_personalization_category="Analytics")
    events = [
        track("A", context={"consent": {"categoryPreferences": {"Advertising": True,
                                                               "Analytics": False}}}),
        track("B", context={"consent": {"categoryPreferences": {}}}),
        track("C"),
        track("D", context={"consent": {"categoryPreferences": {"Advertising": True,
                                                               "Analytics": False}}}),
    ]
    payloads, _, positions = bodies(events, s)
    assert positions == [[0, 3], [1], [2]]
    assert payloads[0]["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}
    assert payloads[1]["consent"] == {"ad_user_data": "DENIED", "ad_personalization": "DENIED"}
    assert "consent" not in payloads[2]


def test_requests_stay_under_130_kb() -> None:
    products = [{"product_id": f"p{j}", "name": "n" * 100, "category": "c" * 100}
                for j in range(20)]
    events = [track("Order Completed", {"order_id": f"o{i}", "products": products,
                                        **{f"x{k}": "v" * 100 for k in range(15)}})
              for i in range(25)]
    encoded = encode(events, settings())
    assert encoded.rejected == {}
    assert len(encoded.requests) > 1
    assert all(len(r.body) < 130_000 for r in encoded.requests)
    assert sorted(p for r in encoded.requests for p in r.events) == list(range(25))
    huge = track("Order Completed", {"products": [{"product_id": f"p{j}", "name": "n" * 100}
                                                  for j in range(1000)]})
    assert "130 kB" in encode([huge], settings()).rejected[0]


def test_classify_uses_the_default_http_rules() -> None:
    assert CONNECTOR.classify is None  # GA4 reports no errors; 2xx is all it ever says
    request = Request("u", b"", [0])

    def outcome(status: int, headers: dict[str, str] | None = None) -> Any:
        return classify_http(Response(status, headers or {}, b""), request)

    assert outcome(204) == DELIVERED
    assert outcome(429, {"Retry-After": "3"}) == Retry("HTTP 429", 3.0)
    assert isinstance(outcome(503), Retry)
    assert isinstance(outcome(400), Rejected)


# --- end to end against the contract fake -------------------------------------------------

@pytest.fixture
async def fake() -> Any:
    async with GA4Fake() as server:
        yield server


def fake_settings(fake: GA4Fake, **overrides: Any) -> Settings:
    return settings(endpoint=f"{fake.url}/mp/collect", **overrides)


async def send(s: Settings, events: list[dict[str, Any]]) -> list[Any]:
    return await send_once(CONNECTOR, s, events)


async def test_end_to_end_valid_payloads_only(fake: GA4Fake) -> None:
    events = recent(MINIMAL + FULL)
    s = fake_settings(fake, client_id_paths=["anonymousId", "userId"], identify_event="identify",
                      ad_user_data_category="Advertising")
    outcomes = await send(s, events)
    assert fake.invalid == []
    assert isinstance(outcomes[1], Rejected)  # MINIMAL identify: no traits to send
    delivered = [i for i, o in enumerate(outcomes) if isinstance(o, Delivered)]
    assert delivered == [0, 2, 3, 4, 5, 6, 7]
    assert sorted(r["name"] for r in fake.received) == sorted([
        "button_clicked", "page_view", "purchase", "page_view", "video_played", "identify",
        "join_group"])
    purchase = next(r for r in fake.received if r["name"] == "purchase")
    assert purchase["user_id"] == "user-00042"
    assert purchase["consent"] == {"ad_user_data": "DENIED"}


async def test_end_to_end_many_clients(fake: GA4Fake) -> None:
    events = [track(f"E{i}") | {"anonymousId": f"c{i % 3}"} for i in range(60)]
    outcomes = await send(fake_settings(fake), events)
    assert all(o == DELIVERED for o in outcomes)
    assert fake.invalid == []
    assert len(fake.received) == 60
    assert len(fake.requests) == 3  # 20 events for each of 3 clients


async def test_end_to_end_outage_and_rate_limit_retry(fake: GA4Fake) -> None:
    fake.fail_next(503, "backend error")
    outcomes = await send(fake_settings(fake), [track("A"), track("B")])
    assert all(isinstance(o, Retry) for o in outcomes)
    fake.fail_next(429, headers={"Retry-After": "7"})
    outcomes = await send(fake_settings(fake), [track("A")])
    assert outcomes == [Retry("HTTP 429", 7.0)]
    assert fake.received == []


async def test_fake_answers_204_but_records_what_ga4_would_drop(fake: GA4Fake) -> None:
    bad = {"client_id": "", "user_properties": {"ga_x": {"value": "v"}},
           "events": [{"name": "session_start", "params": {"flag": True, "x": "y" * 101}}] * 26}
    wrong_key = f"{fake.url}/mp/collect?measurement_id=G-TEST12345&api_secret=nope"
    ok = {"client_id": "c", "events": [{"name": "ok", "params": {}}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(wrong_key, data=orjson.dumps(bad)) as resp:
            assert (resp.status, await resp.read()) == (204, b"")
        async with session.post(wrong_key, data=orjson.dumps(ok)) as resp:
            assert resp.status == 204
        async with session.post(f"{fake.url}/debug/mp/collect", data=orjson.dumps(bad)) as resp:
            codes = {m["validationCode"] for m in (await resp.json())["validationMessages"]}
    assert fake.received == []
    assert len(fake.invalid) == 2
    assert codes == {"VALUE_REQUIRED", "EXCEEDED_MAX_ENTITIES", "NAME_RESERVED",
                     "VALUE_INVALID", "VALUE_OUT_OF_BOUNDS"}
    assert any(m["fieldPath"] == "api_secret" for m in fake.invalid[1][1])


async def test_fake_catches_a_payload_that_skipped_encode(fake: GA4Fake) -> None:
    """If encode ever let a bad event through, the fake would notice (the test can fail)."""
    s = fake_settings(fake)
    request = encode([track("A")], s).requests[0]
    body = orjson.loads(request.body)
    body["events"][0]["params"]["page_title"] = "t" * 301
    request.body = orjson.dumps(body)
    async with aiohttp.ClientSession() as session, session.post(
            request.url, data=request.body) as resp:
        assert resp.status == 204
    assert fake.received == []
    assert fake.invalid[0][1][0]["fieldPath"] == "events[0].params.page_title"


def test_example_config_is_valid_for_this_connector() -> None:
    text = (Path(__file__).parents[2] / "config/examples/ga4.yaml").read_text()
    config = yaml.safe_load(re.sub(r"\$\{\w+(?::-([^}]*))?\}", lambda m: m[1] or "", text))
    web, app = config["destinations"]  # a web data stream, and an app (Firebase) stream
    for destination in (web, app):
        assert destination["type"] == CONNECTOR.name
        example = Settings(**destination["settings"])
        assert example.identify_event == "user_properties_updated"
        assert destination["batch"]["max_events"] <= CONNECTOR.limits.max_events
        assert destination["batch"]["max_bytes"] <= CONNECTOR.limits.max_bytes
    assert "measurement_id" in web["settings"] and "firebase_app_id" in app["settings"]
