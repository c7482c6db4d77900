"""Braze connector: external_id / user_alias identity, purchases, per-object errors."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from destinations.base import Request, Response
from destinations.braze import CONNECTOR, Settings, classify, encode
from router.delivery.outcome import DELIVERED, Partial, Rejected, Retry, Split
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL, MINIMAL
from tests.fakes.braze import BrazeFake

T = "2026-11-20T10:00:00.000Z"


def settings(**overrides: Any) -> Settings:
    return Settings(**{"api_key": "braze-key", **overrides})


def track(user: str | None = "u1", name: str = "Clicked", anon: str | None = None,
          **properties: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "event": name, "messageId": f"m-{name}",
                             "timestamp": T, "properties": properties}
    if user:
        event["userId"] = user
    if anon:
        event["anonymousId"] = anon
    return event


def order(user: str = "u1", order_id: str = "o1", **product: Any) -> dict[str, Any]:
    item = {"product_id": "p1", "price": 10, "quantity": 1, **product}
    return track(user, "Order Completed", order_id=order_id, currency="eur", products=[item])


def body(request: Request) -> Any:
    return orjson.loads(request.body)


def response(status: int, payload: Any = b"", **headers: str) -> Response:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(status, CIMultiDict(headers), raw)


# --- encode ------------------------------------------------------------------------------


def test_minimal_events() -> None:
    encoded = encode(MINIMAL, settings())
    [request] = encoded.requests
    assert request.url == "https://rest.iad-01.braze.com/users/track"
    assert request.headers == {"Authorization": "Bearer braze-key",
                               "Content-Type": "application/json"}
    assert request.events == [1, 0]  # attributes first, then events
    assert body(request) == {
        "attributes": [{"external_id": "user-00001"}],
        "events": [{"external_id": "user-00001", "name": "Button Clicked",
                    "time": "2026-11-20T10:00:00.000Z", "properties": {}}]}
    # the page call has only an anonymousId and Braze takes no page calls
    assert encoded.rejected[2].startswith("no userId")


def test_full_events_map_to_attributes_events_and_purchases() -> None:
    encoded = encode(FULL, settings())
    [request] = encoded.requests
    assert request.events == [2, 1, 0]
    sent = body(request)
    assert sent["attributes"] == [{
        "external_id": "user-00042", "first_name": "Ada", "last_name": "Lovelace",
        "email": "Ada.Lovelace@example.com", "phone": "+44 20 7946 0000", "plan": "pro",
        "company": {"name": "Analytical Engines", "id": "co-9"},
        "createdAt": "2024-01-15T09:00:00Z", "logins": 17}]
    assert sent["events"] == [{"external_id": "user-00042", "name": "Video Played",
                               "time": "2026-11-20T10:06:00.000Z",
                               "properties": FULL[1]["properties"]}]
    order = {k: v for k, v in FULL[0]["properties"].items() if k != "products"}
    assert sent["purchases"] == [
        {"external_id": "user-00042", "product_id": "sku-1", "currency": "EUR", "price": 12.5,
         "quantity": 2, "time": "2026-11-20T10:05:00.000Z",
         "properties": {"sku": "SKU-1", "name": "Mug", "category": "Kitchen", **order}},
        {"external_id": "user-00042", "product_id": "sku-2", "currency": "EUR", "price": 30.0,
         "quantity": 1, "time": "2026-11-20T10:05:00.000Z",
         "properties": {"sku": "SKU-2", "name": "Teapot", "category": "Kitchen", **order}}]
    assert "not page" in encoded.rejected[3] and "not group" in encoded.rejected[4]


def test_birthday_becomes_dob_and_custom_attributes_can_be_off() -> None:
    event = {**MINIMAL[1], "traits": {"birthday": "1990-05-01T00:00:00Z", "plan": "pro",
                                      "firstName": "Ada"}}
    [attrs] = body(encode([event], settings(custom_attributes=False)).requests[0])["attributes"]
    assert attrs == {"external_id": "user-00001", "first_name": "Ada", "dob": "1990-05-01"}


@pytest.mark.parametrize(("birthday", "dob"), [
    ("1990-05-01", "1990-05-01"), ("1990-05-01T23:30:00-05:00", "1990-05-01"),
    ("May 1, 1990", None), ("1990-13-01", None), ("", None), (19900501, None)])
def test_dob_only_from_an_iso_date(birthday: Any, dob: str | None) -> None:
    """Braze's dob takes YYYY-MM-DD: a date as written (a birthday is a day, not an
    instant), and nothing rather than the first ten characters of something else."""
    event = {**MINIMAL[1], "traits": {"birthday": birthday}}
    [attrs] = body(encode([event], settings(custom_attributes=False)).requests[0])["attributes"]
    assert attrs.get("dob") == dob


def test_traits_never_set_the_identity() -> None:
    """A trait named like a Braze identifier must not redirect the update to another user
    (external_id) or give the object a second identifier (braze_id, user_alias)."""
    traits = {"external_id": "someone-else", "braze_id": "b-1", "user_alias": {
        "alias_name": "x", "alias_label": "y"}, "_update_existing_only": True, "plan": "pro"}
    event = {**MINIMAL[1], "userId": "u1", "traits": traits}
    [attrs] = body(encode([event], settings()).requests[0])["attributes"]
    assert attrs == {"external_id": "u1", "plan": "pro"}
    anonymous = {**event, "userId": None, "anonymousId": "anon-1"}
    [attrs] = body(encode([anonymous], settings(alias_label="anon")).requests[0])["attributes"]
    assert attrs == {"user_alias": {"alias_name": "anon-1", "alias_label": "anon"},
                     "_update_existing_only": False, "plan": "pro"}


@pytest.mark.parametrize(("gender", "braze"), [
    ("male", "M"), ("Female", "F"), ("w", "F"), ("other", "O"), ("not applicable", "N"),
    ("Prefer not to say", "P"), ("M", "M"), ("nonbinary", "nonbinary"),
])
def test_gender_takes_brazes_codes(gender: str, braze: str) -> None:
    """Braze's `gender` is one of M, F, O, N, P; Segment's trait is usually spelt out."""
    event = {**MINIMAL[1], "traits": {"gender": gender}}
    [attrs] = body(encode([event], settings()).requests[0])["attributes"]
    assert attrs["gender"] == braze


def test_reserved_property_keys_are_removed() -> None:
    """`time` and `event_name` are reserved event property keys (Braze answers an error);
    Segment's Braze destination drops them and sends the rest."""
    event = track("u1", "Clicked", time="2026-01-01", event_name="x", plan="pro")
    [sent] = body(encode([event], settings()).requests[0])["events"]
    assert sent["properties"] == {"plan": "pro"} and sent["time"] == T
    [purchase] = body(encode([order(time="x", event_name="y", color="red")], settings(
        )).requests[0])["purchases"]
    assert purchase["properties"] == {"color": "red", "order_id": "o1", "currency": "eur"}


def test_property_keys_braze_refuses_are_removed() -> None:
    """Braze refuses an event or purchase whose property names are empty, over 255
    characters or start with `$` (braze.com/docs custom event properties): such keys are
    dropped, like the reserved ones, so the event is not lost."""
    bad = {"$revenue": 1, "": 2, "k" * 256: 3}
    ok = {"k" * 255: "ok"}
    [sent] = body(encode([track("u1", **bad, **ok, plan="pro")], settings()).requests[0])[
        "events"]
    assert sent["properties"] == {**ok, "plan": "pro"}
    event = order(**{"$margin": 0.4, "color": "red"})
    event["properties"]["$source"] = "web"
    [purchase] = body(encode([event], settings()).requests[0])["purchases"]
    assert purchase["properties"] == {"color": "red", "order_id": "o1", "currency": "eur"}


def test_purchases_carry_the_order_properties() -> None:
    """Segment's Braze "Track Purchase" sends, per product, the product's other fields and
    the event's properties (but `products`); the product's own currency comes first."""
    event = order(color="red", currency="gbp")
    event["properties"].update(total=12.5, coupon="SPRING", note=None)
    [purchase] = body(encode([event], settings()).requests[0])["purchases"]
    assert purchase["currency"] == "GBP"
    assert purchase["properties"] == {"color": "red", "order_id": "o1", "currency": "eur",
                                      "total": 12.5, "coupon": "SPRING"}


def test_a_product_that_is_not_an_object_rejects_the_order() -> None:
    event = order()
    event["properties"]["products"].append("sku-9")
    encoded = encode([event, track("u2")], settings())
    assert "product 1 is not an object" in encoded.rejected[0]
    assert encoded.requests[0].events == [1]


def test_anonymous_users_need_an_alias_label() -> None:
    event = track(None, anon="anon-1")
    assert encode([event], settings()).rejected[0] == (
        "no userId: Braze identifies users by external_id; set settings.alias_label to send "
        "anonymous users as user aliases")
    [sent] = body(encode([event], settings(alias_label="segment_anonymous_id")).requests[0])[
        "events"]
    assert sent["user_alias"] == {"alias_name": "anon-1", "alias_label": "segment_anonymous_id"}
    assert sent["_update_existing_only"] is False and "external_id" not in sent
    both = track("u9", anon="anon-1")  # an identified user: external_id only
    [sent] = body(encode([both], settings(alias_label="x")).requests[0])["events"]
    assert sent["external_id"] == "u9" and "user_alias" not in sent


@pytest.mark.parametrize(("product", "reason"), [
    ({"price": None}, "numeric price"),
    ({"product_id": None, "sku": None}, "no product_id"),
    ({"quantity": 0}, "from 1 to 100"),
    ({"quantity": 101}, "from 1 to 100"),
])
def test_bad_products_reject_the_order(product: dict[str, Any], reason: str) -> None:
    encoded = encode([order(**product)], settings())
    assert encoded.requests == [] and reason in encoded.rejected[0]


def test_an_order_without_order_id_sends_no_null_property() -> None:
    event = order()
    del event["properties"]["order_id"]
    [request] = encode([event], settings()).requests
    [purchase] = body(request)["purchases"]
    assert purchase["properties"] == {"currency": "eur"}
    [null_id] = body(encode([order(order_id=None)], settings()).requests[0])["purchases"]
    assert null_id["properties"] == {"currency": "eur"}  # Braze's values are never null
    [with_id] = body(encode([order(order_id="o9")], settings()).requests[0])["purchases"]
    assert with_id["properties"] == {"order_id": "o9", "currency": "eur"}


def test_order_without_products_is_a_custom_event() -> None:
    event = track("u1", "Order Completed", order_id="o1", total=5)
    [request] = encode([event], settings()).requests
    assert list(body(request)) == ["events"]


def test_requests_hold_at_most_75_objects() -> None:
    encoded = encode([track(f"u{i}") for i in range(80)], settings())
    assert [len(r.events) for r in encoded.requests] == [75, 5]
    big = copy.deepcopy(order())
    big["properties"]["products"] = [{"product_id": f"p{i}", "price": 1} for i in range(76)]
    assert "76 purchases" in encode([big], settings()).rejected[0]
    ten = copy.deepcopy(big)
    ten["properties"]["products"] = ten["properties"]["products"][:10]
    encoded = encode([*(track(f"u{i}") for i in range(70)), ten], settings())
    assert [len(r.events) for r in encoded.requests] == [70, 1]


def test_adjacent_orders_that_look_alike_go_to_separate_requests() -> None:
    same = encode([order("u1", "o1"), order("u1", "o1")], settings())
    assert [r.events for r in same.requests] == [[0], [1]]
    different = encode([order("u1", "o1"), order("u1", "o2")], settings())
    assert [r.events for r in different.requests] == [[0, 1]]


# --- classify ----------------------------------------------------------------------------


def test_classify_success_and_partial_errors() -> None:
    events = [{**MINIMAL[1], "userId": "a"}, track("b"), order("c", "o1"),
              order("d", "o2", quantity=2)]
    events[3]["properties"]["products"].append({"product_id": "p2", "price": 3})
    [request] = encode(events, settings()).requests
    assert request.events == [0, 1, 2, 3]
    assert classify(response(201, {"message": "success"}), request) is DELIVERED
    assert classify(response(202, {"message": "queued"}), request) is DELIVERED
    errors = {"message": "success", "errors": [
        {"type": "Invalid currency", "input_array": "purchases", "index": 2},
        {"type": "Event name is required", "input_array": "events", "index": 0}]}
    assert classify(response(201, errors), request) == Partial(rejected={
        3: "Braze: Invalid currency", 1: "Braze: Event name is required"})
    fatal = {"message": "Valid data must be provided", "errors": errors["errors"][:1]}
    outcome = classify(response(400, fatal), request)
    assert isinstance(outcome, Partial) and set(outcome.rejected) == {3}
    assert set(outcome.retry) == {0, 1, 2}


def test_a_400_whose_errors_name_no_object_is_not_resent_whole() -> None:
    """Resending the same request would get the same 400: split it, or reject one event."""
    unnamed = {"message": "Max Input Length Exceeded", "errors": [{"type": "too many"}]}
    two = encode([track("a"), track("b")], settings()).requests[0]
    assert isinstance(classify(response(400, unnamed), two), Split)
    one = encode([track("a")], settings()).requests[0]
    assert isinstance(classify(response(400, unnamed), one), Rejected)


@pytest.mark.parametrize(("status", "events", "expected"), [
    (400, 2, Split), (400, 1, Rejected), (413, 2, Split), (403, 2, Rejected),
    (500, 2, Retry), (503, 1, Retry),
])
def test_classify_statuses(status: int, events: int, expected: type) -> None:
    request = Request("u", b"{}", list(range(events)))
    assert isinstance(classify(response(status, {"message": "x"}), request), expected)


def test_classify_401_and_429() -> None:
    request = Request("u", b"{}", [0])
    assert classify(response(401, {"message": "Invalid API key"}), request) == Rejected(
        "Braze rejected the API key (401): check settings.api_key")
    reset = str(int(time.time()) + 30)
    outcome = classify(response(429, b"", **{"X-RateLimit-Reset": reset}), request)
    assert isinstance(outcome, Retry) and outcome.after_s is not None
    assert 28 <= outcome.after_s <= 31
    outcome = classify(response(429, b"", **{"Retry-After": "7"}), request)
    assert isinstance(outcome, Retry) and outcome.after_s == 7.0


# --- end to end against the fake ---------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[BrazeFake]:
    async with BrazeFake() as server:
        yield server  # type: ignore[misc]


async def send(fake: BrazeFake, events: list[dict[str, Any]], **overrides: Any) -> list[Any]:
    return await send_once(CONNECTOR, settings(rest_endpoint=fake.url, **overrides), events)


async def test_e2e_full_events_are_recorded(fake: BrazeFake) -> None:
    outcomes = await send(fake, FULL[:3])
    assert outcomes == [DELIVERED] * 3
    assert [a for a, _ in fake.received] == ["attributes", "events", "purchases", "purchases"]


async def test_e2e_invalid_objects_reject_only_their_events(fake: BrazeFake) -> None:
    bad = order("u2", "o2")
    bad["properties"]["currency"] = "euro"  # Braze wants ISO 4217
    events = [order("u1", "o1"), bad, track("u3"), {**MINIMAL[1], "userId": "u4"}]
    outcomes = await send(fake, events)
    assert outcomes[0] is DELIVERED and outcomes[2] is DELIVERED and outcomes[3] is DELIVERED
    assert isinstance(outcomes[1], Rejected) and "currency" in outcomes[1].reason
    assert sorted(i.get("external_id") for _, i in fake.received) == ["u1", "u3", "u4"]


async def test_e2e_all_invalid_is_a_400_naming_every_object(fake: BrazeFake) -> None:
    bad = order("u2", "o2")
    bad["properties"]["currency"] = "euro"
    outcomes = await send(fake, [bad])
    assert isinstance(outcomes[0], Rejected) and "Invalid currency" in outcomes[0].reason


async def test_e2e_reserved_property_keys_do_not_cost_the_event(fake: BrazeFake) -> None:
    outcomes = await send(fake, [track("u1", time="t", event_name="n", plan="pro")])
    assert outcomes == [DELIVERED]
    assert fake.received[0][1]["properties"] == {"plan": "pro"}


async def test_e2e_dollar_property_keys_do_not_cost_the_event(fake: BrazeFake) -> None:
    event = order("u2", "o2")
    event["properties"]["$source"] = "web"
    outcomes = await send(fake, [track("u1", **{"$revenue": 5}, plan="pro"), event])
    assert outcomes == [DELIVERED, DELIVERED]
    assert [sorted(i["properties"]) for _, i in fake.received] == [
        ["plan"], ["currency", "order_id"]]


async def test_e2e_anonymous_users_are_created_as_aliases(fake: BrazeFake) -> None:
    outcomes = await send(fake, [track(None, anon="anon-7")], alias_label="anon")
    assert outcomes == [DELIVERED]
    assert fake.ignored == [] and fake.received[0][1]["user_alias"]["alias_name"] == "anon-7"


async def test_e2e_wrong_key_429_and_5xx(fake: BrazeFake) -> None:
    assert await send(fake, [track()], api_key="nope") == [
        Rejected("Braze rejected the API key (401): check settings.api_key")]
    fake.fail_next(429, {"message": "rate limited"},
                   headers={"X-RateLimit-Reset": str(int(time.time()) + 5)})
    [outcome] = await send(fake, [track()])
    assert isinstance(outcome, Retry) and outcome.after_s is not None and outcome.after_s <= 5
    fake.fail_next(500, "boom")
    [outcome] = await send(fake, [track()])
    assert isinstance(outcome, Retry)
    assert fake.received == []
