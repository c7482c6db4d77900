"""HubSpot connector: identity by email, mapping, partial errors, against the contract fake."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from destinations.base import Request, Response
from destinations.hubspot import CONNECTOR, Settings, classify, encode
from router.delivery.outcome import DELIVERED, Partial, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.hubspot import HubSpotFake

ORDER = "pe123_order_completed"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"access_token": "pat-test",
                              "event_map": {"Order Completed": ORDER}}
    return Settings(**{**values, **overrides})


def identify(email: str | None, **traits: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify", "userId": "u1", "messageId": f"m-{email}",
                             "timestamp": "2026-11-20T10:00:00.000Z", "traits": dict(traits)}
    if email is not None:
        event["traits"]["email"] = email
    return event


def order(email: str | None = "ada@example.com", **properties: Any) -> dict[str, Any]:
    event = copy.deepcopy(FULL[0])
    event["context"]["traits"] = {"email": email} if email else {}
    if properties:
        event["properties"] = properties
    return event


def body(request: Request) -> Any:
    return orjson.loads(request.body)


def response(status: int, payload: Any = b"", **headers: str) -> Response:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(status, CIMultiDict(headers), raw)


# --- encode ------------------------------------------------------------------------------


def test_minimal_events_are_rejected_with_reasons() -> None:
    encoded = encode(MINIMAL, settings())
    assert encoded.requests == []
    assert "not in settings.event_map" in encoded.rejected[0]
    assert encoded.rejected[1] == ("identify without an email: HubSpot contacts are keyed "
                                   "by email")
    assert "not page" in encoded.rejected[2]


def test_full_identify_upserts_contact_by_lowercased_email() -> None:
    encoded = encode([FULL[2]], settings(user_id_property="user_id"))
    [request] = encoded.requests
    assert request.url == "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
    assert request.headers == {"Authorization": "Bearer pat-test",
                               "Content-Type": "application/json"}
    assert request.events == [0]
    assert body(request) == {"inputs": [{
        "idProperty": "email", "id": "ada.lovelace@example.com", "objectWriteTraceId": "0",
        "properties": {"firstname": "Ada", "lastname": "Lovelace",
                       "phone": "+44 20 7946 0000", "company": "Analytical Engines",
                       "user_id": "user-00042"}}]}


def test_identify_email_from_context_traits_and_custom_map() -> None:
    event = identify(None, plan="pro", logins=17, vip=True, nested={"a": 1})
    event["context"] = {"traits": {"email": " Bob@Example.com "}}
    encoded = encode([event], settings(property_map={"plan": "plan_tier", "logins": "logins",
                                                     "vip": "vip", "nested": "nested"}))
    [item] = body(encoded.requests[0])["inputs"]
    assert item["id"] == "bob@example.com"
    assert item["properties"] == {"plan_tier": "pro", "logins": "17", "vip": "true"}


def test_invalid_email_is_rejected_locally() -> None:
    encoded = encode([identify("not-an-email")], settings())
    assert encoded.requests == [] and "INVALID_EMAIL" in encoded.rejected[0]


def test_identifies_for_one_email_merge_into_one_input() -> None:
    events = [identify("a@x.io", firstName="Old", lastName="L"), identify("b@x.io"),
              identify("A@X.io", firstName="New")]
    [request] = encode(events, settings()).requests
    assert request.events == [0, 2, 1]
    inputs = body(request)["inputs"]
    assert [(i["id"], i["objectWriteTraceId"]) for i in inputs] == [("a@x.io", "0,1"),
                                                                    ("b@x.io", "2")]
    assert inputs[0]["properties"] == {"firstname": "New", "lastname": "L"}


def test_upserts_are_chunked_at_100_inputs() -> None:
    encoded = encode([identify(f"u{i}@x.io") for i in range(150)], settings())
    assert [len(r.events) for r in encoded.requests] == [100, 50]
    assert body(encoded.requests[1])["inputs"][0]["objectWriteTraceId"] == "0"
    assert encoded.requests[1].events[0] == 100


def test_track_becomes_a_custom_event_occurrence() -> None:
    encoded = encode([order()], settings())
    [request] = encoded.requests
    assert request.url == "https://api.hubapi.com/events/v3/send/batch"
    [occurrence] = body(request)["inputs"]
    assert occurrence == {
        "eventName": ORDER, "email": "ada@example.com",
        "occurredAt": "2026-11-20T10:05:00.000Z",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "msg-full-order")),
        "properties": {"order_id": "ord-1001", "total": "63.5", "revenue": "55.0",
                       "shipping": "5.0", "tax": "3.5", "currency": "EUR",
                       "coupon": "SPRING"}}  # products (a list) is not sent


def test_track_object_id_from_user_id() -> None:
    encoded = encode([order(email=None)], settings(user_id_is_object_id=True))
    [occurrence] = body(encoded.requests[0])["inputs"]
    assert occurrence["objectId"] == "user-00042" and "email" not in occurrence


@pytest.mark.parametrize(("event", "reason"), [
    (order(email=None), "track without an email"),
    (order(email="bad@"), "INVALID_EMAIL"),
    (order(**{"Order Id": "x"}), "HubSpot event property names"),
    (order(**{f"p{i}": i for i in range(51)}), "at most 50"),
])
def test_track_rejections(event: dict[str, Any], reason: str) -> None:
    encoded = encode([event], settings())
    assert encoded.requests == [] and reason in encoded.rejected[0]


def test_group_upserts_company_by_configured_property() -> None:
    group = copy.deepcopy(FULL[4])
    assert encode([group], settings(companies=True)).rejected[0].startswith(
        "group without a domain")
    group["traits"]["domain"] = "engines.example.com"
    [request] = encode([group], settings(companies=True)).requests
    assert request.url.endswith("/crm/v3/objects/companies/batch/upsert")
    assert body(request)["inputs"] == [{
        "idProperty": "domain", "id": "engines.example.com", "objectWriteTraceId": "0",
        "properties": {"name": "Analytical Engines", "industry": "Computing",
                       "numberofemployees": "12", "website": "https://engines.example.com"}}]
    [request] = encode([FULL[4]], settings(companies=True,
                                           company_id_property="group_id")).requests
    assert body(request)["inputs"][0]["id"] == "co-9"
    assert "not group" in encode([group], settings()).rejected[0]


@pytest.mark.parametrize(("value", "day"), [
    ("2026-03-04T15:20:00Z", "2026-03-04"),  # HubSpot refuses a time on a date property
    ("2026-03-04T15:20:00.250+00:00", "2026-03-04"),
    ("2026-03-04T01:00:00+05:00", "2026-03-03"),  # the UTC day
    ("2026-03-04", "2026-03-04"),
    (1772637600000, "2026-03-04"),  # epoch ms, HubSpot's unit
    ("1772637600000", "2026-03-04"),
    ("", ""),  # an empty string clears the property
])
def test_date_properties_are_sent_as_the_utc_day(value: Any, day: str) -> None:
    """developers.hubspot.com/docs/guides/api/crm/properties: *date* values are ISO 8601 or
    epoch ms at midnight UTC; a time of day is refused (INVALID_DATE). *datetime* ones
    take ISO 8601 with a time, so they are sent as they are."""
    event = identify("a@x.io", renewalDate=value, lastSeen="2026-03-04T15:20:00Z")
    encoded = encode([event], settings(
        property_map={"renewalDate": "renewal_date", "lastSeen": "last_seen"},
        date_properties=["renewal_date"]))
    [item] = body(encoded.requests[0])["inputs"]
    assert item["properties"] == {"renewal_date": day, "last_seen": "2026-03-04T15:20:00Z"}


@pytest.mark.parametrize("value", ["soon", "2026-02-30", True, "1e400"])
def test_unusable_date_value_rejects_only_its_event(value: Any) -> None:
    events = [identify("a@x.io", renewalDate=value), identify("b@x.io", renewalDate="2026-03-04")]
    encoded = encode(events, settings(property_map={"renewalDate": "renewal_date"},
                                      date_properties=["renewal_date"]))
    assert encoded.rejected[0] == (
        f"trait renewalDate={value!r}: HubSpot date property 'renewal_date' takes an "
        "ISO-8601 date/time or epoch milliseconds")
    [item] = body(encoded.requests[0])["inputs"]
    assert (item["id"], item["properties"]) == ("b@x.io", {"renewal_date": "2026-03-04"})


def test_a_date_property_no_map_fills_is_a_config_error() -> None:
    """A typo there would convert nothing, and HubSpot would refuse the contacts' dates."""
    with pytest.raises(ValidationError, match=r"\['renewal_dat'\] are not properties"):
        settings(property_map={"renewalDate": "renewal_date"}, date_properties=["renewal_dat"])


def test_group_date_properties_are_converted_too() -> None:
    group = copy.deepcopy(FULL[4])
    group["traits"].update(domain="engines.example.com", renewal="2026-03-04T15:20:00Z")
    mapping = {"renewal": "contract_renewal", "name": "name"}
    encoded = encode([group], settings(companies=True, company_property_map=mapping,
                                       date_properties=["contract_renewal"]))
    assert body(encoded.requests[0])["inputs"][0]["properties"] == {
        "contract_renewal": "2026-03-04", "name": "Analytical Engines"}
    group["traits"]["renewal"] = "next year"
    encoded = encode([group], settings(companies=True, company_property_map=mapping,
                                       date_properties=["contract_renewal"]))
    assert encoded.requests == [] and "'contract_renewal'" in encoded.rejected[0]


# --- classify ----------------------------------------------------------------------------


def upsert_request(n: int) -> Request:
    return Request("u", b"{}", list(range(n)))


def test_classify_success_and_multi_status() -> None:
    assert classify(response(200, {"status": "COMPLETE"}), upsert_request(2)) is DELIVERED
    assert classify(response(204), upsert_request(2)) is DELIVERED
    multi = {"status": "COMPLETE",
             "results": [{"id": "1", "objectWriteTraceId": "0"}],
             "errors": [{"status": "error", "message": "Property values were not valid",
                         "context": {"objectWriteTraceId": ["1,2"]},
                         "errors": [{"code": "PROPERTY_DOESNT_EXIST"}]}]}
    outcome = classify(response(207, multi), upsert_request(4))
    assert isinstance(outcome, Partial)
    assert set(outcome.rejected) == {1, 2}
    assert "PROPERTY_DOESNT_EXIST" in outcome.rejected[1]
    assert set(outcome.retry) == {3}  # neither in results nor in errors


@pytest.mark.parametrize(("status", "payload", "headers", "expected"), [
    (400, {"message": "Duplicate IDs"}, {}, Split),
    (401, {"category": "INVALID_AUTHENTICATION"}, {}, Rejected),
    (403, {"message": "missing scopes"}, {}, Rejected),
    (500, b"oops", {}, Retry),
    (502, b"", {}, Retry),
    (501, b"", {}, Rejected),
])
def test_classify_statuses(status: int, payload: Any, headers: dict[str, str],
                           expected: type) -> None:
    assert isinstance(classify(response(status, payload, **headers), upsert_request(2)),
                      expected)


def test_classify_400_on_one_event_and_401_reason() -> None:
    outcome = classify(response(400, {"message": "Event does not exist"}), upsert_request(1))
    assert isinstance(outcome, Rejected) and "Event does not exist" in outcome.reason
    assert classify(response(401, {}), upsert_request(1)) == Rejected(
        "HubSpot rejected the access token (401): check settings.access_token")


@pytest.mark.parametrize(("payload", "headers", "after_s"), [
    ({"policyName": "TEN_SECONDLY_ROLLING"},
     {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 10.0),
    ({}, {"Retry-After": "3", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 3.0),
    ({"policyName": "DAILY"}, {"X-HubSpot-RateLimit-Daily-Remaining": "0"}, 3600.0),
    ({}, {}, None),
])
def test_classify_429_honours_rate_limit_headers(payload: Any, headers: dict[str, str],
                                                 after_s: float | None) -> None:
    outcome = classify(response(429, payload, **headers), upsert_request(1))
    assert isinstance(outcome, Retry) and outcome.after_s == after_s


@pytest.mark.parametrize(("status", "headers", "after_s"), [
    (423, {}, 2.0),  # "Locks will last for 2 seconds": wait at least that
    (423, {"Retry-After": "5"}, 5.0),
    (477, {"Retry-After": "3600"}, 3600.0),  # migration in progress: its Retry-After
])
def test_classify_locked_and_migrating_are_retried(status: int, headers: dict[str, str],
                                                   after_s: float) -> None:
    """developers.hubspot.com/docs/api-reference/error-handling: 423 and 477 are
    transient; they used to be dead-lettered as 4xx."""
    outcome = classify(response(status, {"status": "error"}, **headers), upsert_request(2))
    assert isinstance(outcome, Retry) and outcome.after_s == after_s


# --- end to end against the fake ---------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[HubSpotFake]:
    async with HubSpotFake() as server:
        yield server  # type: ignore[misc]


async def send(fake: HubSpotFake, events: list[dict[str, Any]], **overrides: Any) -> list[Any]:
    return await send_once(CONNECTOR, settings(base_url=fake.url, **overrides), events)


async def test_e2e_contacts_and_events_are_accepted(fake: HubSpotFake) -> None:
    events = [identify("a@x.io", firstName="Ann"), order(), identify("A@x.io", lastName="Z")]
    assert await send(fake, events) == [DELIVERED] * 3
    assert fake.store["contacts"] == {"a@x.io": {"firstname": "Ann", "lastname": "Z"}}
    assert [item[0] for item in fake.received] == ["contact", "event"]
    assert fake.received[1][1]["eventName"] == ORDER


async def test_e2e_207_rejects_only_the_named_inputs(fake: HubSpotFake) -> None:
    events = [identify("a@x.io", plan="pro"), identify("b@x.io", firstName="B"),
              identify("c@x.io", plan="free")]
    outcomes = await send(fake, events, property_map={"plan": "plan_tier",
                                                      "firstName": "firstname"})
    assert outcomes[1] is DELIVERED
    for i in (0, 2):
        assert isinstance(outcomes[i], Rejected) and "PROPERTY_DOESNT_EXIST" in outcomes[i].reason
    assert list(fake.store["contacts"]) == ["b@x.io"]
    assert len(fake.requests) == 1  # one 207, no splitting


async def test_e2e_400_is_split_until_the_bad_event_is_isolated(fake: HubSpotFake) -> None:
    events = [order(), order(email="b@x.io"), order(email="c@x.io"), order(email="d@x.io")]
    events[2]["event"] = "Order Refunded"
    outcomes = await send(fake, events, event_map={"Order Completed": ORDER,
                                                   "Order Refunded": "pe123_refunded"})
    assert [o is DELIVERED for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2], Rejected) and "does not exist" in outcomes[2].reason
    assert sorted(e["email"] for _, e in fake.received) == ["ada@example.com", "b@x.io",
                                                             "d@x.io"]
    assert len(fake.requests) == 5  # 4 events -> halves (2 + 2) -> the bad half's two singles


async def test_e2e_date_property_gets_the_utc_day() -> None:
    """Without the conversion HubSpot refuses the contact (INVALID_DATE, not midnight)."""
    async with HubSpotFake(date_properties={"renewal_date"},
                           datetime_properties={"last_seen"}) as fake:
        events = [identify("a@x.io", renewalDate="2026-03-04T15:20:00Z",
                           lastSeen="2026-03-04T15:20:00Z"),
                  identify("b@x.io", renewalDate=1772637600000)]
        outcomes = await send(fake, events, date_properties=["renewal_date"], property_map={
            "renewalDate": "renewal_date", "lastSeen": "last_seen"})
        assert outcomes == [DELIVERED, DELIVERED]
        assert fake.store["contacts"] == {
            "a@x.io": {"renewal_date": "2026-03-04", "last_seen": "2026-03-04T15:20:00Z"},
            "b@x.io": {"renewal_date": "2026-03-04"}}


async def test_e2e_unlisted_date_property_is_refused_per_input() -> None:
    """A date property missing from date_properties: HubSpot refuses that input only."""
    async with HubSpotFake(date_properties={"renewal_date"}) as fake:
        events = [identify("a@x.io", renewalDate="2026-03-04T15:20:00Z"), identify("b@x.io")]
        outcomes = await send(fake, events, property_map={"renewalDate": "renewal_date"})
        assert outcomes[1] is DELIVERED and isinstance(outcomes[0], Rejected)
        assert "not midnight" in outcomes[0].reason and "INVALID_DATE" in outcomes[0].reason


def test_classify_documented_invalid_date_400() -> None:
    """The whole-batch 400 HubSpot answers without objectWriteTraceId (body as quoted in
    HubSpot/hubspot-api-php#74): split, then the lone bad event is rejected with the why."""
    payload = {"status": "error", "category": "VALIDATION_ERROR",
               "correlationId": "d05f36c6-2052-453c-bd83-7813a009c43d",
               "message": 'Property values were not valid: [{"isValid":false,"message":'
                          '"1635535865 is at 22:18:55.865 UTC, not midnight!","error":'
                          '"INVALID_DATE","name":"closedate"}]'}
    assert isinstance(classify(response(400, payload), upsert_request(3)), Split)
    outcome = classify(response(400, payload), upsert_request(1))
    assert isinstance(outcome, Rejected) and "not midnight!" in outcome.reason


async def test_e2e_wrong_token_is_rejected_with_a_clear_reason(fake: HubSpotFake) -> None:
    outcomes = await send(fake, [identify("a@x.io")], access_token="wrong")
    assert outcomes == [Rejected("HubSpot rejected the access token (401): check "
                                 "settings.access_token")]
    assert fake.received == []


async def test_e2e_429_and_5xx_are_retried(fake: HubSpotFake) -> None:
    fake.fail_next(429, {"status": "error", "errorType": "RATE_LIMIT",
                         "policyName": "TEN_SECONDLY_ROLLING"},
                   headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                            "X-HubSpot-RateLimit-Remaining": "0"})
    [outcome] = await send(fake, [identify("a@x.io")])
    assert isinstance(outcome, Retry) and outcome.after_s == 10.0
    fake.fail_next(503, "unavailable")
    [outcome] = await send(fake, [order()])
    assert isinstance(outcome, Retry)
    assert await send(fake, [order()]) == [DELIVERED]
