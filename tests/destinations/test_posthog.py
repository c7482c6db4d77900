"""PostHog (capture `/batch/`): mapping, deterministic uuids, classification, and delivery
against the contract fake."""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from pydantic import ValidationError

from destinations.base import Request, Response
from destinations.posthog import CONNECTOR, NAMESPACE, Settings, classify, encode
from router.delivery.outcome import DELIVERED, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.posthog import PostHogFake

KEY = "phc_test_project_key"
NO_GEOIP = {"$geoip_disable": True}  # set when the event carries no IP
CONTEXT_PROPS = {
    "$ip": "203.0.113.7", "$raw_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
    "$locale": "en-GB", "$timezone": "Europe/London", "$lib": "analytics.js",
    "$lib_version": "5.2.0", "$app_name": "Shop", "$app_version": "3.4.1", "$app_build": "341",
    "$device_id": "dev-8a6c5f", "$device_manufacturer": "Apple", "$device_model": "iPhone15,2",
    "$os": "iOS", "$os_version": "17.5", "$current_url": "https://shop.example.com/cart?x=1",
    "$pathname": "/cart", "$referrer": "https://www.example.org/", "utm_source": "newsletter",
    "utm_medium": "email", "utm_campaign": "spring"}


def settings(**overrides: Any) -> Settings:
    return Settings(api_key=KEY, **overrides)


def batch(events: list[dict[str, Any]], s: Settings | None = None) -> list[dict[str, Any]]:
    encoded = encode(events, s or settings())
    assert encoded.rejected == {}
    return orjson.loads(encoded.requests[0].body)["batch"]


def uid(message_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, message_id))


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": "u1", "messageId": f"m-{kind}",
            "timestamp": "2026-11-20T10:00:00.000Z", **fields}


# --- encode --------------------------------------------------------------------------------

def test_minimal_events() -> None:
    assert batch(MINIMAL) == [
        {"event": "Button Clicked", "distinct_id": "user-00001", "properties": NO_GEOIP,
         "timestamp": "2026-11-20T10:00:00.000Z", "uuid": uid("msg-min-track")},
        {"event": "$identify", "distinct_id": "user-00001",
         "properties": {"$set": {}, **NO_GEOIP},
         "timestamp": "2026-11-20T10:00:01.000Z", "uuid": uid("msg-min-identify")},
        {"event": "$pageview", "distinct_id": "anon-0000001", "properties": NO_GEOIP,
         "timestamp": "2026-11-20T10:00:02.000Z", "uuid": uid("msg-min-page")},
    ]


def test_request_shape_and_settings() -> None:
    request = encode(MINIMAL, settings()).requests[0]
    assert request.url == "https://us.i.posthog.com/batch/"
    assert request.headers == {"Content-Type": "application/json"}
    assert request.events == [0, 1, 2]
    body = orjson.loads(request.body)
    assert (body["api_key"], body["historical_migration"]) == (KEY, False)
    eu = encode(MINIMAL, settings(host="https://eu.i.posthog.com/", historical_migration=True))
    assert eu.requests[0].url == "https://eu.i.posthog.com/batch/"
    assert orjson.loads(eu.requests[0].body)["historical_migration"] is True
    self_hosted = encode(MINIMAL, settings(host="http://posthog.internal:8000"))
    assert self_hosted.requests[0].url == "http://posthog.internal:8000/batch/"
    with pytest.raises(ValidationError):
        Settings(api_key=KEY, project_id=1)
    assert KEY not in repr(settings())


def test_uuid_is_uuid5_of_message_id_and_stable() -> None:
    first, second = batch(MINIMAL), batch(copy.deepcopy(MINIMAL))
    assert [i["uuid"] for i in first] == [i["uuid"] for i in second]
    assert len({i["uuid"] for i in first}) == 3
    # pinned: changing the namespace would stop retries of in-flight events deduplicating
    assert first[0]["uuid"] == "154914a0-51cd-57e2-b0f0-b7f29e8a1719"
    assert uuid.UUID(first[0]["uuid"]).version == 5


def test_full_track_carries_context_and_properties() -> None:
    order = batch(FULL)[0]
    assert order["event"] == "Order Completed"
    assert order["distinct_id"] == "user-00042"
    assert order["timestamp"] == "2026-11-20T10:05:00.000Z"
    assert order["uuid"] == uid("msg-full-order")
    assert order["properties"] == {**CONTEXT_PROPS, **FULL[0]["properties"]}


def test_full_identify() -> None:
    identify = batch(FULL)[2]
    assert identify["event"] == "$identify"
    assert identify["distinct_id"] == "user-00042"
    assert identify["properties"]["$set"] == FULL[2]["traits"]
    assert identify["properties"]["$anon_distinct_id"] == "anon-4242424"


def test_identify_without_both_ids_has_no_anon_distinct_id() -> None:
    anonymous = {k: v for k, v in event("identify", traits={"plan": "x"}).items()
                 if k != "userId"} | {"anonymousId": "a1"}
    items = batch([event("identify"), anonymous])
    assert "$anon_distinct_id" not in items[0]["properties"]
    assert items[1]["distinct_id"] == "a1"
    assert items[1]["properties"] == {"$set": {"plan": "x"}, **NO_GEOIP}
    assert items[1]["event"] == "$set"  # nobody to identify: traits only


def test_full_page() -> None:
    page = batch(FULL)[3]
    assert page["event"] == "$pageview"
    props = page["properties"]
    assert (props["$current_url"], props["$pathname"], props["$referrer"], props["title"],
            props["$host"]) == ("https://shop.example.com/cart?x=1", "/cart",
                                "https://www.example.org/", "Cart", "shop.example.com")


def test_page_from_properties_and_name() -> None:
    page = event("page", name="Pricing", properties={"url": "https://a.example/p?q=1"},
                 context={"page": {"url": "https://stale.example/", "path": "/p"}})
    props = batch([page])[0]["properties"]
    assert props["$current_url"] == "https://a.example/p?q=1"
    assert props["$pathname"] == "/p"
    assert props["title"] == "Pricing"
    assert props["$host"] == "a.example"


def test_full_group_and_group_type_setting() -> None:
    group = batch(FULL)[4]
    assert group["event"] == "$groupidentify"
    assert group["distinct_id"] == "user-00042"
    props = group["properties"]
    assert (props["$group_type"], props["$group_key"]) == ("company", "co-9")
    assert props["$group_set"] == FULL[4]["traits"]
    other = batch([FULL[4]], settings(group_type="organization"))[0]
    assert other["properties"]["$group_type"] == "organization"


def test_a_call_with_context_group_id_counts_for_its_group() -> None:
    """PostHog attributes an event to a group only through `$groups`; Segment's spec
    carries the account a call belongs to in `context.groupId`."""
    track = event("track", event="Clicked", context={"groupId": "co-9"})
    [item] = batch([track], settings(group_type="organization"))
    assert item["properties"]["$groups"] == {"organization": "co-9"}
    [plain] = batch([event("track", event="Clicked")])
    assert "$groups" not in plain["properties"]
    [own] = batch([event("track", event="Clicked", context={"groupId": "co-9"},
                         properties={"$groups": {"team": "t1"}})])
    assert own["properties"]["$groups"] == {"team": "t1"}  # the event's own wins


def test_screen_and_alias() -> None:
    screen, alias = batch([event("screen", name="Checkout"),
                           event("alias", previousId="anon-9", userId="user-9")])
    assert (screen["event"], screen["properties"]) == ("$screen",
                                                       {"$screen_name": "Checkout", **NO_GEOIP})
    assert alias["event"] == "$create_alias"
    # PostHog merges `alias` into `distinct_id` (the person kept) and refuses when the alias's
    # person is identified: so the new id (userId) is kept and the old one (previousId) merged.
    assert (alias["distinct_id"], alias["properties"]) == ("user-9",
                                                           {"alias": "anon-9", **NO_GEOIP})


def test_event_properties_win_over_context() -> None:
    item = batch([event("track", event="E", properties={"$current_url": "https://mine/"},
                        context={"page": {"url": "https://ctx/"}, "ip": "10.0.0.1"})])[0]
    assert item["properties"] == {"$current_url": "https://mine/", "$ip": "10.0.0.1"}


def test_events_without_an_ip_disable_geoip() -> None:
    """PostHog locates an event without `$ip` at the sender's address, i.e. this router's
    data centre, and stores that on the person (posthog.com/docs/cdp/geoip-enrichment), so
    an event with no IP says `$geoip_disable`, as PostHog's server SDKs do."""
    track = event("track", event="E")
    dropped = event("track", event="E", context={"ip": None})  # e.g. `drop_fields` made it so
    with_ip = event("track", event="E", context={"ip": "203.0.113.7"})
    own = event("track", event="E", properties={"$ip": "198.51.100.1"})
    items = batch([track, dropped, with_ip, own])
    assert [i["properties"].get("$geoip_disable") for i in items] == [True, True, None, None]
    assert items[2]["properties"]["$ip"] == "203.0.113.7"


def test_an_event_over_1_mb_is_rejected_locally() -> None:
    """PostHog discards events over 1 MB after answering 200 (docs/data/ingestion-warnings)."""
    big = event("track", event="Big", properties={"blob": "x" * 1_000_000})
    encoded = encode([big, event("track", event="Small")], settings())
    assert "over 1 MB" in encoded.rejected[0]
    assert encoded.requests[0].events == [1]


def test_local_rejections() -> None:
    # (a group call without groupId never reaches a connector: decode dead-letters it)
    events = [event("track", event=""), {**event("track", event="E"), "userId": ""},
              event("track", event="Fine")]
    encoded = encode(events, settings())
    assert "no event name" in encoded.rejected[0]
    assert "distinct_id" in encoded.rejected[1]
    assert encoded.requests[0].events == [2]


# --- classify ------------------------------------------------------------------------------

REQUEST = Request("https://us.i.posthog.com/batch/", b"{}", [0, 1])


@pytest.mark.parametrize(("status", "body", "headers", "expected"), [
    (200, b'{"status": 1}', {}, DELIVERED),
    (413, b"Payload Too Large", {}, Split),
    (429, b"rate limited", {"Retry-After": "30"}, Retry("HTTP 429", 30.0)),
    (503, b"transient error, please retry", {}, Retry("HTTP 503", None)),
    (500, b"", {}, Retry("HTTP 500", None)),
    (400, b'{"type": "validation_error", "code": "invalid_project"}', {}, Rejected),
    (401, b'{"type": "authentication_error", "code": "invalid_api_key"}', {}, Rejected),
])
def test_classify(status: int, body: bytes, headers: dict[str, str], expected: Any) -> None:
    outcome = classify(Response(status, headers, body), REQUEST)
    if isinstance(expected, type):
        assert isinstance(outcome, expected)
    else:
        assert outcome == expected
    if status == 401:
        assert "invalid_api_key" in outcome.reason


# --- end to end against the contract fake -------------------------------------------------

@pytest.fixture
async def fake() -> Any:
    async with PostHogFake(api_key=KEY) as server:
        yield server


async def send(s: Settings, events: list[dict[str, Any]]) -> list[Any]:
    return await send_once(CONNECTOR, s, events)


async def test_end_to_end_delivers_native_payload(fake: PostHogFake) -> None:
    events = MINIMAL + FULL
    outcomes = await send(settings(host=fake.url), events)
    assert outcomes == [DELIVERED] * len(events)
    assert fake.invalid == []
    assert [i["event"] for i in fake.received] == [
        "Button Clicked", "$identify", "$pageview", "Order Completed", "Video Played",
        "$identify", "$pageview", "$groupidentify"]
    assert [i["uuid"] for i in fake.received] == [uid(e["messageId"]) for e in events]
    assert fake.batches == [{"api_key": KEY, "historical_migration": False}]


async def test_end_to_end_no_event_is_located_at_the_router(fake: PostHogFake) -> None:
    assert await send(settings(host=fake.url), MINIMAL + FULL) == [DELIVERED] * 8
    assert fake.located_at_sender == []  # MINIMAL carries no context.ip


async def test_end_to_end_an_oversized_event_is_not_lost_silently(fake: PostHogFake) -> None:
    big = event("track", event="Big", messageId="big", properties={"blob": "x" * 1_000_000})
    outcomes = await send(settings(host=fake.url), [big, *MINIMAL])
    assert isinstance(outcomes[0], Rejected) and "1 MB" in outcomes[0].reason
    assert outcomes[1:] == [DELIVERED] * 3
    assert fake.invalid == [] and len(fake.received) == 3


async def test_end_to_end_retry_keeps_uuids(fake: PostHogFake) -> None:
    fake.fail_next(503, "transient error, please retry")
    first = await send(settings(host=fake.url), FULL)
    assert all(isinstance(o, Retry) for o in first)
    assert await send(settings(host=fake.url), FULL) == [DELIVERED] * len(FULL)
    sent = [orjson.loads(body)["batch"] for _, body in fake.requests]
    assert [i["uuid"] for i in sent[0]] == [i["uuid"] for i in sent[1]]


async def test_end_to_end_wrong_api_key_is_rejected(fake: PostHogFake) -> None:
    outcomes = await send(Settings(api_key="phc_wrong", host=fake.url), MINIMAL)
    assert all(isinstance(o, Rejected) and "HTTP 401" in o.reason for o in outcomes)
    assert fake.received == []


async def test_end_to_end_rate_limit(fake: PostHogFake) -> None:
    fake.fail_next(429, "rate limited", headers={"Retry-After": "12"})
    assert await send(settings(host=fake.url), MINIMAL) == [Retry("HTTP 429", 12.0)] * 3


async def test_end_to_end_413_splits_the_batch(fake: PostHogFake) -> None:
    events = [event("track", event="Big", messageId=f"m{i}", properties={"blob": "x" * 4000})
              for i in range(8)]
    fake.max_bytes = len(encode(events, settings()).requests[0].body) // 3
    outcomes = await send(settings(host=fake.url), events)
    assert outcomes == [DELIVERED] * 8
    assert sorted(i["uuid"] for i in fake.received) == sorted(uid(f"m{i}") for i in range(8))
    assert len(fake.requests) == 1 + 2 + 4  # 413, 413 on both halves, 4 quarters accepted
    fake.max_bytes = 1000
    single = await send(settings(host=fake.url), events[:1])
    assert isinstance(single[0], Rejected) and "a single event" in single[0].reason


async def test_fake_enforces_the_documented_contract(fake: PostHogFake) -> None:
    ok_item = {"event": "e", "distinct_id": "d"}

    async def post(body: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.post(
                f"{fake.url}/batch/", data=orjson.dumps(body)) as resp:
            return resp.status, await resp.json(content_type=None)

    assert (await post({"batch": [ok_item]}))[0] == 401
    assert (await post({"api_key": "phc_other", "batch": [ok_item]}))[1]["code"] == (
        "invalid_api_key")
    assert (await post({"api_key": KEY, "batch": []}))[0] == 400
    assert (await post({"api_key": KEY, "batch": [{**ok_item, "uuid": "nope"}]}))[0] == 400
    assert (await post({"api_key": KEY, "batch": [{**ok_item, "properties": []}]}))[0] == 400
    assert fake.received == []
    status, answer = await post({"api_key": KEY, "batch": [
        ok_item, {"event": "e"}, {"event": "", "distinct_id": "d"},
        {**ok_item, "distinct_id": ""}, {**ok_item, "timestamp": "yesterday"},
        {"event": "e", "properties": {"distinct_id": "in-props"}},
        {**ok_item, "properties": {"blob": "x" * 1_000_000}}]})
    assert (status, answer) == (200, {"status": 1})  # 200 even though five are dropped
    assert [i.get("distinct_id", "in-props") for i in fake.received] == ["d", "in-props"]
    assert [reason for _, reason in fake.invalid] == [
        "event has no distinct_id", "event has no name", "event has no distinct_id",
        "timestamp 'yesterday' is not ISO 8601", "event exceeds the 1MB limit"]
    assert len(fake.located_at_sender) == 2  # neither `$ip` nor `$geoip_disable`


def test_example_config_is_valid_for_this_connector() -> None:
    text = (Path(__file__).parents[2] / "config/examples/posthog.yaml").read_text()
    config = yaml.safe_load(re.sub(r"\$\{\w+(?::-([^}]*))?\}", lambda m: m[1] or "", text))
    (destination,) = config["destinations"]
    assert destination["type"] == CONNECTOR.name
    example = Settings(**destination["settings"])
    assert example.host == "https://us.i.posthog.com"
    assert destination["batch"]["max_events"] <= CONNECTOR.limits.max_events
    assert destination["batch"]["max_bytes"] <= CONNECTOR.limits.max_bytes
